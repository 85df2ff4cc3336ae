"""Markdown tables from run folders: every number read from a ``summary.json``.

    python experiments/train_report.py runs/adding-* runs/copy-* > results/training.md

One row per run: task, cell, size, the held-out metrics (mean ± std over seeds, and
each seed), the baseline, steps, wall time, and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import common

METRIC_ORDER = ("mse", "accuracy", "bpc", "loss")


def command_line(config: dict, script: str = "experiments/train.py", config_cls=None) -> str:
    """The shortest command that reproduces ``config``: flags that differ from the
    defaults of ``config_cls`` (the script's ``Config``; default: train.py's)."""
    if config_cls is None:
        from train import Config as config_cls

    defaults = dataclasses.asdict(config_cls())
    parts = [f"python {script}"]
    for key, value in config.items():
        if key in ("out", "progress", "resume") or defaults.get(key) == value:
            continue
        if isinstance(value, bool):
            parts.append(f"--{key}" if value else f"--no-{key}")
        else:
            parts.append(f"--{key} {value}")
    return " ".join(parts)


def row(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    cfg = summary["config"]
    final = summary.get("final") or {}
    metrics = [m for m in METRIC_ORDER if m in final]
    if "bpc" in metrics or "mse" in metrics:
        metrics = [m for m in metrics if m != "loss"]
    cells = []
    for m in metrics:
        stats = final[m]
        seeds = ", ".join(f"{v:.4g}" for v in stats["per_seed"])
        cells.append(f"{m} {common.fmt_mean_std(stats, 3)} ({seeds})")
    return {
        "task": cfg["task"] + (" (permuted)" if cfg.get("permuted") else ""),
        "T": sequence_length(run, cfg),
        "cell": cfg["cell"],
        "H": cfg["hidden_size"],
        "params": summary["params_per_seed"],
        "held-out (mean ± std; per seed)": "; ".join(cells) or summary["status"],
        "baseline loss": f"{summary['baseline']:.4g}"
        if summary.get("baseline") is not None
        else "",
        "steps": summary["steps"],
        "seeds": len(summary["seeds"]),
        # ">=": a resumed run whose earlier segments' times are not all known.
        "wall": f"{'>=' if summary.get('wall_s_complete') is False else ''}"
        f"{summary['wall_s'] / 60:.1f} min",
        "command": f"`{command_line(cfg)}`",
    }


def sequence_length(run: Path, cfg: dict):
    """T as the run's task used it: ``--seq_len`` where the task takes it, else what the
    task recorded in ``config.json`` (digits 64, hello 4)."""
    if cfg["task"] in ("adding", "copy", "charlm"):
        return cfg["seq_len"]
    path = run / "config.json"
    info = json.loads(path.read_text()).get("task", {}) if path.exists() else {}
    if "seq_len" in info:
        return info["seq_len"]
    return len(info["inputs"]) if "inputs" in info else ""


def table(runs: list[Path]) -> str:
    rows = [row(r) for r in runs if (r / "summary.json").exists()]
    if not rows:
        return "(no runs)\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    envs = [
        json.loads((r / "summary.json").read_text())["environment"]
        for r in runs
        if (r / "summary.json").exists()
    ]
    env = envs[0]
    commits = sorted({str(e["git_commit"])[:10] for e in envs})
    foot = (
        f"\nMachine: {env['cpu']} ({env['cpu_count']} cores), backend {env['backend']}, "
        f"jax {env['versions']['jax']}; code at commit{'s' if len(commits) > 1 else ''} "
        f"{', '.join(commits)}. Wall times are as measured, on a machine that may have been "
        "running other jobs.\n"
    )
    return "\n".join(lines) + "\n" + foot


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (each with a summary.json)")
    runs = [Path(p) for p in parser.parse_args(argv).runs]
    if not any((r / "summary.json").exists() for r in runs):
        raise SystemExit("no finished runs (a summary.json) among the paths given.")
    print(table(sorted(runs)), end="")


if __name__ == "__main__":
    main()
