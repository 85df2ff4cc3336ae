"""Each catalogue cell held against its paper: what the laboratory's run measured beside
the number the paper (or the authors' logs) reports for the nearest task.

    python experiments/paper_rows.py                      # results/vanishing_gradients
    python experiments/paper_rows.py runs/vanishing_gradients --out results/papers.md

Reads a study's ``summary.json`` (``experiments/vanishing_gradients.py``) and writes one
row per cell studied: the published number with its source (``../shared/CELLS.md`` and
``REFERENCE.md``, which say what was verified against the paper or the authors' code),
our nearest measurement (the adding problem at the longest T trained, test MSE over the
seeds), and a sentence on how far our setting is from the paper's. Only numbers marked
verified there are quoted; a cell without one says so instead of borrowing a number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rnnjax import stats

ROOT = Path(__file__).resolve().parents[1]

# task: "adding" rows are compared with our adding runs; any other task is one the
# laboratory does not run (sequential MNIST is 784 steps over 60,000 images).
PUBLISHED: dict[str, dict] = {
    "rnn_tanh": dict(
        task="adding",
        T=200,
        number="100% of runs solved up to T=200 (50 units, clipping and their regulariser)",
        source="Pascanu et al. 2013, sec. 4.1.2 (REFERENCE.md 3)",
    ),
    "lstm": dict(
        task="adding",
        T=100,
        number="solved after 74k training sequences at T=100 (209k at 500, 853k at 1000)",
        source="Hochreiter & Schmidhuber 1997, Table 7 (REFERENCE.md 3)",
        sequences=74_000,
    ),
    "gru": dict(
        task="adding",
        T=600,
        number="test MSE 5.3e-5 at T=600 (~70K params)",
        source="Bai et al. 2018 (TCN), Table 1 (REFERENCE.md 3)",
    ),
    "indrnn": dict(
        task="adding",
        T=100,
        number="MSE converges far below the 0.167 baseline at T=100, 500, 1000, 5000 "
        "(a figure; no table)",
        source="Li et al. 2018, CVPR Fig. 2 (CELLS.md 1)",
    ),
    "lem": dict(
        task="adding",
        T=2000,
        number="last logged test MSE 5.3e-5 at T=2000 (4.9e-5 at 5000), one run each, "
        "30,000 iterations, N=128",
        source="authors' logs, src/adding/results/adding_log_seqlength_2000.txt (CELLS.md 6)",
    ),
    "cornn": dict(
        task="sMNIST",
        number="sMNIST test accuracy 99.4% (psMNIST 97.34%), N=256",
        source="authors' README and logs (CELLS.md 5); adding: a paper figure, unverified",
    ),
}
# Cells whose sources gave no verified number (CELLS.md's "published numbers verified
# here": no), with what was looked at.
NONE_VERIFIED = {
    "rnn_relu": "the IRNN's sMNIST 97.0% is quoted second-hand (Le et al. 2015 via Cooijmans)",
    "mgu": "the paper's tables were not read (CELLS.md 2)",
    "ln_lstm": "no adding, copy or sMNIST number in the sources read (CELLS.md 3)",
    "ln_gru": "no adding, copy or sMNIST number in the sources read (CELLS.md 3)",
    "exprnn": "the paper's copy and sMNIST tables were not readable here (CELLS.md 4)",
    "antisymmetric": "no official code; the paper's MNIST numbers unverified (CELLS.md 7)",
    "antisymmetric_gated": "no official code; the paper's MNIST numbers unverified (CELLS.md 7)",
    "lru": "the LRA and sCIFAR tables unverified (CELLS.md 8)",
    "rg_lru": "language-modelling results only, not read (CELLS.md 9)",
    "min_gru": "no adding or sMNIST number in the official code (CELLS.md 10)",
    "min_lstm": "no adding or sMNIST number in the official code (CELLS.md 10)",
}


def _num(x: float) -> str:
    return f"{x:.3g}"


def ours(summary: dict, name: str) -> tuple[int, dict]:
    """The longest trained T and its test-MSE statistics for ``name``."""
    T = max(summary["config"]["train_lengths"])
    return T, summary["train"][f"{name}/T{T}"]["mse"]


def verdict(summary: dict, name: str, pub: dict) -> str:
    cfg = summary["config"]
    T, mse = ours(summary, name)
    solved = mse["mean"] < cfg["solve_mse"]
    seen = cfg["train_steps"] * cfg["train_batch"]
    if pub["task"] != "adding":
        return (
            f"not comparable: the paper's task ({pub['task']}) is not run here; "
            f"on the adding problem at T={T} ours {'solved' if solved else 'did not solve'} it."
        )
    gap = []
    if pub["T"] > T:
        gap.append(f"the paper's T is {pub['T'] / T:.0f}x ours")
    if "sequences" in pub:
        gap.append(f"ours saw {seen:,} sequences, {seen / pub['sequences']:.2f}x the paper's")
    else:
        gap.append(f"ours trained {cfg['train_steps']} steps of {cfg['train_batch']}")
    outcome = "solved" if solved else "did not solve"
    return (
        f"ours {outcome} it at T={T} (rule: mean MSE < {cfg['solve_mse']}); " + "; ".join(gap) + "."
    )


def table(summary: dict) -> str:
    cfg, env = summary["config"], summary["environment"]
    T = max(cfg["train_lengths"])
    lines = [
        "# The catalogue against its papers",
        "",
        f"Ours: `{summary['command']}` at commit {env['git_commit'][:10]} "
        f"({env['date_utc']}; {env['cpu']}, {env['cpu_count']} cores, {env['backend']}; "
        f"jax {env['versions']['jax']}): one layer of H={cfg['hidden_size']}, "
        f"{cfg['train_steps']} Adam steps of {cfg['train_batch']} sequences, "
        f"lr {cfg['learning_rate']}, clip {cfg['clip_norm']}, {cfg['seeds']} seeds; "
        f"test MSE on {cfg['eval_size']} held-out sequences at T={T}, "
        "mean [95% bootstrap interval] over the n seeds (min-max). Written by `python "
        "experiments/paper_rows.py`.",
        "",
        "The papers train for tens of thousands of steps at T in the thousands, on a GPU; "
        "the laboratory's default run is sized for 8 minutes on a 2-core CPU, so no row "
        "reaches the paper's setting. What a row can say: whether the cell solves the "
        "shortest version of the paper's task in our budget.",
        "",
        "| cell | paper's number | source | ours: adding, test MSE | how they compare |",
        "|---|---|---|---|---|",
    ]
    for name in cfg["cells"]:
        _, mse = ours(summary, name)
        # The interval from the seeds' values: a summary of any schema version has them.
        s = stats.summarize(summary["train"][f"{name}/T{T}"]["mse_per_seed"])
        measured = (
            f"T={T}: {_num(s['mean'])} [{_num(s['ci_low'])}, {_num(s['ci_high'])}] "
            f"({_num(s['min'])}-{_num(s['max'])}, n={s['n']})"
        )
        if name in PUBLISHED:
            pub = PUBLISHED[name]
            row = [name, pub["number"], pub["source"], measured, verdict(summary, name, pub)]
        else:
            why = NONE_VERIFIED.get(name, "not in CELLS.md or REFERENCE.md")
            row = [name, "none verified", why, measured, "no published number to hold it against."]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "run",
        nargs="?",
        default=str(ROOT / "results" / "vanishing_gradients"),
        help="a study's folder (with summary.json); default results/vanishing_gradients",
    )
    p.add_argument(
        "--out",
        default=str(ROOT / "results" / "papers.md"),
        help="the Markdown file to write; default results/papers.md",
    )
    args = p.parse_args(argv)
    path = Path(args.run) / "summary.json"
    if not path.is_file():
        p.error(f"run: expected a study folder with summary.json; got {args.run!r} (no {path}).")
    summary = json.loads(path.read_text())
    missing = [
        n for n in summary["config"]["cells"] if n not in PUBLISHED and n not in NONE_VERIFIED
    ]
    text = table(summary)
    Path(args.out).write_text(text)
    print(text)
    if missing:
        print(
            f"note: no entry for {missing}; add one to PUBLISHED or NONE_VERIFIED.", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
