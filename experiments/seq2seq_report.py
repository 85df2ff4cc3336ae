"""Markdown tables and the reversal-length figure from Seq2Seq run folders.

    python experiments/seq2seq_report.py runs/seq2seq/* --out results/seq2seq

Every number is read from a run's ``summary.json``. Writes ``<out>/README.md`` (one
row per run, greedy and beam exact match, the command that reproduces the run, and the
reversal-by-length table) and ``<out>/reversal_vs_length.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import common
from seq2seq import Config
from train_report import command_line

from rnnjax import stats


def _load(runs):
    out = []
    for run in runs:
        f = Path(run) / "summary.json"
        if f.exists():
            summary = json.loads(f.read_text())
            if summary.get("final"):
                out.append((Path(run), summary))
    return out


def _size(cfg: dict) -> str:
    if cfg["task"] == "addition":
        return f"{cfg['digits']} digits"
    if cfg["task"] == "reversal":
        lo = cfg["min_len"] or cfg["seq_len"]
        return f"T={cfg['seq_len']}" if lo == cfg["seq_len"] else f"T={lo}..{cfg['seq_len']}"
    return "10 formats"


def _exact(summary: dict, key: str) -> str:
    """The mean over seeds, its 95% bootstrap interval, and each seed (computed here
    from the per-seed values: a summary of any schema version gives the same cell)."""
    per_seed = summary["final"][key]["per_seed"]
    s = stats.summarize(per_seed)
    if s["n"] == 1:
        return f"{s['mean']:.3f}"
    low, high = s["ci_low"], s["ci_high"]
    seeds = ", ".join(f"{v:.3f}" for v in per_seed)
    return f"{s['mean']:.3f} [{low:.3f}, {high:.3f}] ({seeds})"


def main_table(loaded) -> str:
    head = [
        "task", "size", "cell", "attention", "params", "steps", "n (seeds)",
        "held-out exact, greedy: mean [95% CI over seeds] (per seed)",
        "held-out exact, beam", "wall", "command",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, s in loaded:
        cfg = s["config"]
        beam_key = f"exact_beam{cfg['beam_width']}"
        row = [
            cfg["task"],
            _size(cfg),
            cfg["cell"] + (" (bi)" if cfg["bidirectional"] else ""),
            cfg["attention"],
            f"{s['params_per_seed']:,}",
            s["steps"],
            len(s["seeds"]),
            _exact(s, "exact_greedy"),
            f"k={cfg['beam_width']}: {_exact(s, beam_key)}",
            f"{s['wall_s'] / 60:.1f} min",
            f"`{command_line(cfg, 'experiments/seq2seq.py', Config)}`",
        ]
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines) + "\n"


def sample_decodes(loaded, per_task: int = 4) -> str:
    """A few held-out sources with target and greedy output, one block per task
    (from the first run of each task other than reversal)."""
    lines, seen = [], set()
    for _, s in loaded:
        task = s["config"]["task"]
        if task in seen or task == "reversal" or not s.get("samples"):
            continue
        seen.add(task)
        for x in s["samples"][:per_task]:
            mark = "ok" if x["greedy"] == x["target"] else "wrong"
            lines.append(
                f"{x['source']!r:32} -> {x['greedy']!r:14} ({mark}; target {x['target']!r})"
            )
    return "```\n" + "\n".join(lines) + "\n```\n" if lines else ""


def reversal_rows(loaded):
    """``{model: {T: mean greedy exact}}`` for fixed-length reversal runs; a model is
    named by its attention, and by its cell too where the runs use several. Two runs of
    one model and T are an error (one would hide the other)."""
    runs = [
        (run, s)
        for run, s in loaded
        if s["config"]["task"] == "reversal"
        and s["config"]["min_len"] in (0, s["config"]["seq_len"])
    ]
    several_cells = len({s["config"]["cell"] for _, s in runs}) > 1
    rows: dict[str, dict[int, float]] = {}
    seen: dict[tuple, Path] = {}
    for run, s in runs:
        cfg = s["config"]
        att = cfg["attention"]
        model = "fixed context vector" if att == "none" else f"attention ({att})"
        if several_cells:
            model += f", {cfg['cell']}"
        key = (model, cfg["seq_len"])
        if key in seen:
            raise SystemExit(
                f"two reversal runs of {model} at T={cfg['seq_len']}: {seen[key]} and {run}; "
                "pass one of them."
            )
        seen[key] = run
        rows.setdefault(model, {})[cfg["seq_len"]] = s["final"]["exact_greedy"]["mean"]
    return rows


def _model_order(model: str):
    return (not model.startswith("fixed"), model)


def reversal_table(rows) -> str:
    if not rows:
        return ""
    lengths = sorted({t for r in rows.values() for t in r})
    lines = [
        "| model | " + " | ".join(f"T={t}" for t in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    for model in sorted(rows, key=_model_order):
        cells = [f"{rows[model][t]:.3f}" if t in rows[model] else "" for t in lengths]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def reversal_plot(rows, path: Path) -> None:
    plt = common.pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for model in sorted(rows, key=_model_order):
        ts = sorted(rows[model])
        ax.plot(ts, [rows[model][t] for t in ts], marker="o", label=model)
    ax.set(
        xlabel="sequence length T",
        ylabel="held-out exact match (greedy)",
        ylim=(-0.02, 1.02),
        title="Reversal: the single-vector bottleneck",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", default="results/seq2seq")
    args = parser.parse_args(argv)
    loaded = _load(sorted(args.runs))
    if not loaded:
        raise SystemExit("no finished runs (summary.json with final metrics) among the paths.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = loaded[0][1]["environment"]
    commits = sorted(
        {
            str(s["environment"]["git_commit"])[:10]
            + (" (with uncommitted edits)" if s["environment"].get("git_dirty") else "")
            for _, s in loaded
        }
    )
    rows = reversal_rows(loaded)
    text = [
        "# Seq2Seq results",
        "",
        "Generated by `python experiments/seq2seq_report.py` from the runs' `summary.json`;",
        "the commands are in `experiments/reproduce_seq2seq.sh`. Exact match is over "
        f"{loaded[0][1]['eval_size']} distinct held-out examples that never occur in training.",
        "",
        main_table(loaded),
    ]
    samples = sample_decodes(loaded)
    if samples:
        text += ["## Sample held-out decodes (seed 0, greedy)", "", samples]
    if rows:
        reversal_plot(rows, out / "reversal_vs_length.png")
        text += [
            "## Reversal: held-out exact match (greedy) against length",
            "",
            reversal_table(rows),
            "![reversal vs length](reversal_vs_length.png)",
            "",
        ]
    maps = []
    for run, s in loaded:  # one attention map per task: the longest-input attention run
        if s["config"]["attention"] != "none" and (run / "attention.png").exists():
            maps.append((s["config"]["task"], s["config"]["seq_len"], run))
    chosen = {}
    for task, _, run in sorted(maps, key=lambda m: m[1]):
        chosen[task] = run
    if chosen:
        text += ["## Attention maps (seed 0, held-out examples, teacher-forced)", ""]
        for task, run in sorted(chosen.items()):
            name = f"attention_{run.name}.png"
            shutil.copyfile(run / "attention.png", out / name)
            text += [f"![{task}]({name})", ""]
    text.append(
        f"Machine: {env['cpu']} ({env['cpu_count']} cores), backend {env['backend']}, jax "
        f"{env['versions']['jax']}; code at commit{'s' if len(commits) > 1 else ''} "
        f"{', '.join(commits)}. Wall times include held-out evaluation during training.\n"
    )
    (out / "README.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
