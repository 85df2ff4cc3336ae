"""Markdown tables from run folders: every number read from a ``summary.json``.

    python experiments/train_report.py runs/adding-* runs/copy-* > results/training.md

One row per run: task, cell, size, the held-out metrics (mean ± std over seeds, and
each seed), the baseline, steps, wall time, and the command that reproduces it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

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
        "T": cfg["seq_len"] if cfg["task"] in ("adding", "copy", "charlm") else "64",
        "cell": cfg["cell"],
        "H": cfg["hidden_size"],
        "params": summary["params_per_seed"],
        "held-out (mean ± std; per seed)": "; ".join(cells) or summary["status"],
        "baseline loss": f"{summary['baseline']:.4g}"
        if summary.get("baseline") is not None
        else "",
        "steps": summary["steps"],
        "seeds": len(summary["seeds"]),
        "wall": f"{summary['wall_s'] / 60:.1f} min",
        "command": f"`{command_line(cfg)}`",
    }


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
    runs = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    print(table(sorted(runs)), end="")


if __name__ == "__main__":
    main()
