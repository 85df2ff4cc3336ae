"""The MNIST-1D table (issue 24) from run folders: every number read from their files.

    python experiments/mnist1d_report.py runs/mnist1d --peer runs/mnist1d_peer --copy results/mnist1d > results/mnist1d/README.md
    python experiments/mnist1d_report.py results/mnist1d/runs --peer results/mnist1d/peer   # the same page

Rows: the published GRU's setting first (bidirectional, a readout on all 40 outputs),
on the data and on its shuffled variant, beside the paper's number; then every cell in
the harder setting (one direction, read from the last state), best first. Each gives
the test accuracy's mean over seeds with its 95% bootstrap interval, ``n``, the Wilson
interval over the 1,000 test examples, every seed's value, and the command.
``--peer`` adds the PyTorch reference runs of ``experiments/mnist1d_peer.py``.
``--copy DEST`` also copies each run's small files (config.json, summary.json,
final.csv, eval.jsonl; no checkpoints, no per-update log) to ``DEST/runs/<run>/`` (and
``DEST/peer/<run>/``), the committed outputs this page regenerates from
(tests/test_mnist1d.py checks it does).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from train_report import command_line

from rnnjax import stats

KEPT_FILES = ("config.json", "summary.json", "final.csv", "eval.jsonl")

# The MNIST-1D README's table (greydanus/mnist1d at 7878d96), GRU column: a
# bidirectional GRU of 6 units read out from all 40 outputs (notebooks/models.py).
PUBLISHED = {"mnist1d": 91.0, "mnist1d_shuffled": 57.0}
SOURCE = (
    "Greydanus 2020, MNIST-1D README table (greydanus/mnist1d 7878d96): GRU 91%, "
    "shuffled 57%; its notebook's GRU: bidirectional, H = 6, a linear readout on all 40 "
    "outputs (5,134 parameters), Adam 1e-2, batch 100, 6,000 steps, one seed"
)


def load(run: Path) -> dict | None:
    path = run / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    config = json.loads((run / "config.json").read_text())
    return {"path": run, "summary": summary, "task": config.get("task", {})}


def is_paper_setting(cfg: dict) -> bool:
    return cfg["cell"] == "gru" and cfg["bidirectional"] and cfg.get("readout") == "all"


def best_during_training(path: Path) -> str:
    """Each seed's highest test accuracy over the run's evaluations (``eval.jsonl``),
    the mean with its interval and the steps: the number a single run would report if
    read at its best, which on the shuffled data is well before the end."""
    evals = [json.loads(line) for line in (path / "eval.jsonl").read_text().splitlines() if line]
    per_seed = list(zip(*[e["accuracy"] for e in evals], strict=True))
    best = [max(range(len(evals)), key=lambda i, s=s: s[i]) for s in per_seed]
    s = stats.summarize([100 * per_seed[k][i] for k, i in enumerate(best)])
    return f"{stats.fmt_ci(s, 3)} ({', '.join(str(evals[i]['step']) for i in best)})"


def row(run: dict) -> dict:
    summary, cfg = run["summary"], run["summary"]["config"]
    data = "MNIST-1D"
    if cfg.get("shuffle_seq"):
        data = "shuffled" + (
            " (notebook's order)" if cfg.get("shuffle_order") == "notebook" else ""
        )
    task_name = "mnist1d_shuffled" if cfg.get("shuffle_seq") else "mnist1d"
    acc = summary["final"]["accuracy"]["per_seed"] if summary.get("final") else []
    n_test = int(run["task"]["test"])
    if acc:
        s = stats.summarize([100 * a for a in acc])
        low, high = stats.wilson_interval(s["mean"] / 100, n_test)
        accuracy = stats.fmt_ci(s, 3)
        test_set = f"[{100 * low:.3g}, {100 * high:.3g}]"
        seeds = ", ".join(f"{100 * a:.1f}" for a in acc)
    else:
        accuracy, test_set, seeds, s = summary["status"], "", "", {"n": 0, "mean": -1.0}
    paper = is_paper_setting(cfg)
    best = ""
    if paper and acc:
        best = best_during_training(run["path"])
    return {
        "data": data,
        "cell": cfg["cell"],
        "setting": ("both directions" if cfg["bidirectional"] else "one direction")
        + (", all 40 outputs" if cfg.get("readout") == "all" else ", last state"),
        "H": cfg["hidden_size"],
        "params": summary["params_per_seed"],
        "test accuracy %: mean [95% CI over seeds]": accuracy,
        "n": s["n"],
        f"test-set 95% interval (N = {n_test})": test_set,
        "per seed": seeds,
        "best during training % (steps)": best,
        "paper": f"{PUBLISHED[task_name]:g}" if paper else "",
        "steps": summary["steps"],
        "wall": f"{summary['wall_s'] / 60:.1f} min",
        "command": f"`{command_line(cfg)}`",
        "_order": (not paper, data != "MNIST-1D", -s["mean"]),
    }


def markdown(rows: list[dict]) -> list[str]:
    """A markdown table of ``rows`` (dicts with the same keys; ``_``-keys left out)."""
    head = [h for h in rows[0] if not h.startswith("_")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]


def table(runs: list[dict]) -> str:
    rows = sorted((row(r) for r in runs), key=lambda r: r["_order"])
    lines = [
        "# MNIST-1D: every cell, 5 seeds",
        "",
        "Test accuracy on the 1,000 test sequences of MNIST-1D (40 steps, 10 classes; the "
        "`mnist1d` package's generator, seed 42), after training on its 4,000. The first "
        "rows are the published GRU's setting beside its number; the rest is the harder "
        "setting in which a cell reads the sequence once and classifies from its last "
        "state, every cell with the same budget (not tuned per cell), best first.",
        "",
        *markdown(rows),
    ]
    envs = [r["summary"]["environment"] for r in runs]
    env = envs[0]
    commits = sorted({str(e["git_commit"])[:10] for e in envs})
    dirty = any(e.get("git_dirty") for e in envs)
    wall = sum(r["summary"]["wall_s"] for r in runs)
    cells = sorted({r["summary"]["config"]["cell"] for r in runs})
    foot = [
        "",
        f"{len(runs)} runs, {len(cells)} cells, {wall / 60:.0f} min of training in all. "
        f"Machine: {env['cpu']} ({env['cpu_count']} cores), backend {env['backend']}, "
        f"jax {env['versions']['jax']}; code at commit{'s' if len(commits) > 1 else ''} "
        f"{', '.join(commits)}{' (with uncommitted changes)' if dirty else ''}; "
        f"recorded {min(e['date_utc'] for e in envs)} to {max(e['date_utc'] for e in envs)}.",
        "",
        f"Paper: {SOURCE}.",
        "",
        "Intervals: over seeds, the percentile bootstrap of the mean (rnnjax.stats; with "
        "n = 5 it under-covers: read it as the seeds' spread); over the test set, Wilson's "
        "interval for the mean accuracy on its N examples (every seed sees the same N). "
        "Per-seed values: each run's final.csv. Regenerate: `python "
        "experiments/mnist1d_report.py results/mnist1d/runs --peer results/mnist1d/peer`.",
    ]
    return "\n".join(lines) + "\n" + "\n".join(foot) + "\n"


def peer_row(run: Path) -> dict:
    """A row of the PyTorch reference (experiments/mnist1d_peer.py)."""
    summary = json.loads((run / "summary.json").read_text())
    cfg = summary["config"]
    final = stats.summarize([100 * a for a in summary["final"]["final"]["per_seed"]])
    best = stats.summarize([100 * a for a in summary["final"]["best"]["per_seed"]])
    steps = summary["final"]["best_step"]["per_seed"]
    order = cfg["shuffle_order"]
    data = "MNIST-1D" if order == "none" else f"shuffled ({order}'s order)"
    published = PUBLISHED["mnist1d" if order == "none" else "mnist1d_shuffled"]
    flags = [f"--shuffle_order {order}"] if order != "none" else []
    flags += [
        f"--{k} {cfg[k]}" for k in ("seeds", "steps") if cfg[k] != {"seeds": 5, "steps": 6000}[k]
    ]
    return {
        "data": data,
        "model": f"torch {summary['torch']} nn.GRU, both directions, all 40 outputs",
        "params": summary["params_per_seed"],
        "final test accuracy %: mean [95% CI]": stats.fmt_ci(final, 3),
        "n": final["n"],
        "best during training % (steps)": f"{stats.fmt_ci(best, 3)} ({', '.join(str(int(v)) for v in steps)})",
        "paper": f"{published:g}",
        "wall": f"{summary['wall_s'] / 60:.1f} min",
        "command": "`python experiments/mnist1d_peer.py" + "".join(f" {f}" for f in flags) + "`",
        "_env": summary["environment"],
        "_order": ("none", "package", "notebook").index(order),
    }


def peer_table(peers: list[Path]) -> list[str]:
    rows = sorted((peer_row(p) for p in peers), key=lambda r: r["_order"])
    envs = [r["_env"] for r in rows]
    commits = sorted({str(e["git_commit"])[:10] for e in envs})
    return [
        "",
        "### The paper's model in PyTorch, on the same data",
        "",
        "The reference route for the first rows: `nn.GRU(1, 6, bidirectional=True)` with "
        "PyTorch's own initialisation and a `Linear` on all 40 outputs, trained as the "
        "paper's notebook trains it (Adam 1e-2, batches of 100 taken in order through "
        "the training set, 6,000 steps; `experiments/mnist1d_peer.py`). The data are "
        "the ones above; 'best during training' is the highest test accuracy over the "
        "evaluations every 250 steps, which a reported number may reflect where the "
        "test accuracy peaks and falls.",
        "",
        *markdown(rows),
        "",
        f"Machine: {envs[0]['cpu']} ({envs[0]['cpu_count']} cores); code at commit"
        f"{'s' if len(commits) > 1 else ''} {', '.join(commits)}"
        f"{' (with uncommitted changes)' if any(e.get('git_dirty') for e in envs) else ''}; recorded "
        f"{min(e['date_utc'] for e in envs)} to {max(e['date_utc'] for e in envs)}.",
    ]


def _runs(folder: Path) -> list[dict]:
    runs = [r for r in (load(p) for p in sorted(folder.iterdir()) if p.is_dir()) if r]
    return [r for r in runs if r["summary"]["config"]["task"] == "mnist1d"]


def _peers(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if (p / "summary.json").exists()]


def report(folder: Path, peer_folder: Path | None = None) -> str:
    """The whole page: the table of :func:`table`, then the PyTorch reference rows."""
    text = table(_runs(folder))
    peers = _peers(peer_folder)
    return text + ("\n".join(peer_table(peers)) + "\n" if peers else "")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "folder", help="a folder of MNIST-1D run folders (each with a summary.json)"
    )
    parser.add_argument(
        "--peer", default="", help="a folder of mnist1d_peer.py runs (the PyTorch reference)"
    )
    parser.add_argument(
        "--copy", default="", help="also copy the runs' small files to <copy>/runs, <copy>/peer"
    )
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        raise SystemExit(f"folder must be a folder of run folders; {folder} is not one.")
    runs = _runs(folder)
    if not runs:
        raise SystemExit(f"no finished MNIST-1D runs (a summary.json) in {folder}.")
    peer_folder = Path(args.peer) if args.peer else None
    if args.copy:
        for part, paths in (("runs", [r["path"] for r in runs]), ("peer", _peers(peer_folder))):
            for path in paths:
                dest = Path(args.copy) / part / path.name
                dest.mkdir(parents=True, exist_ok=True)
                for name in KEPT_FILES:
                    if (path / name).exists():
                        shutil.copy2(path / name, dest / name)
    print(report(folder, peer_folder), end="")


if __name__ == "__main__":
    main()
