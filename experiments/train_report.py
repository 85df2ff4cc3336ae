"""Markdown tables from run folders: every number read from a ``summary.json``.

    python experiments/train_report.py runs/adding-* runs/copy-* > results/training.md

One row per run: task, cell, size, the held-out metrics (the mean over seeds with its
95% bootstrap interval, and each seed; an accuracy on a test set of ``N`` examples also
its Wilson interval over those examples), ``n`` (the seeds), the baseline, steps, wall
time, and the command that reproduces it. The intervals are computed here from the
per-seed values, so a summary.json of any schema version gives the same table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

from rnnjax import stats

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
    test_size = task_info(run).get("test")
    cells = []
    for m in metrics:
        per_seed = final[m]["per_seed"]
        summary_m = stats.summarize(per_seed)
        seeds = ", ".join(f"{v:.4g}" for v in per_seed)
        cell = f"{m} {stats.fmt_ci(summary_m, 3)}"
        if m == "accuracy" and test_size and math.isfinite(summary_m["mean"]):
            low, high = stats.wilson_interval(summary_m["mean"], int(test_size))
            cell += f" (test set [{low:.3g}, {high:.3g}], N = {test_size})"
        cells.append(f"{cell} ({seeds})")
    return {
        "task": cfg["task"] + (" (permuted)" if cfg.get("permuted") else ""),
        "T": sequence_length(run, cfg),
        "cell": cfg["cell"],
        "H": cfg["hidden_size"],
        "params": summary["params_per_seed"],
        "held-out: mean [95% CI over seeds] (per seed)": "; ".join(cells) or summary["status"],
        "baseline loss": f"{summary['baseline']:.4g}"
        if summary.get("baseline") is not None
        else "",
        "steps": summary["steps"],
        "n (seeds)": len(summary["seeds"]),
        # ">=": a resumed run whose earlier segments' times are not all known.
        "wall": f"{'>=' if summary.get('wall_s_complete') is False else ''}"
        f"{summary['wall_s'] / 60:.1f} min",
        "command": f"`{command_line(cfg)}`",
    }


def task_info(run: Path) -> dict:
    """What the task recorded about itself in the run's ``config.json`` ({} if none)."""
    path = run / "config.json"
    return json.loads(path.read_text()).get("task", {}) if path.exists() else {}


def sequence_length(run: Path, cfg: dict):
    """T as the run's task used it: ``--seq_len`` where the task takes it, else what the
    task recorded in ``config.json`` (digits 64, hello 4)."""
    if cfg["task"] in ("adding", "copy", "charlm"):
        return cfg["seq_len"]
    info = task_info(run)
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
        f"{', '.join(commits)}. Intervals: the percentile bootstrap of the mean over the n "
        "seeds (rnnjax.stats; with n = 3-5 it under-covers: read it as the seeds' spread); "
        "the test-set interval is Wilson's for the mean accuracy on the N test examples. "
        "Wall times are as measured, on a machine that may have been running other jobs.\n"
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
