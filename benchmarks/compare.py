"""Two runs of ``run.py`` side by side: each backend's median in both, and the ratio.

    python benchmarks/compare.py A/benchmark.json B/benchmark.json [--out compare.md]

For the same backend, configuration, cell and mode, ``A / B`` is run A's median time
over run B's: above 1, B was faster. The two runs are separate processes, so the ratio
is of medians, not per round as within one run; on a shared machine it carries that
run-to-run spread. Use it for what differs between the runs (an allocator setting, a
commit), and a single run for rnnjax against its peers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from report import allocator_text


def compare(a: dict, b: dict) -> list[dict]:
    """One entry per (config, cell, mode, backend) timed in both runs, in A's order."""
    rows_b = {(r["config"], r["cell"], r["mode"]): r for r in b["rows"]}
    out = []
    for ra in a["rows"]:
        rb = rows_b.get((ra["config"], ra["cell"], ra["mode"]))
        if rb is None:
            continue
        for name, ta in ra["times"].items():
            tb = rb["times"].get(name)
            if tb is None:
                continue
            out.append(
                {
                    "config": ra["config"],
                    "cell": ra["cell"],
                    "mode": ra["mode"],
                    "backend": name,
                    "a_ms": ta["median_s"] * 1e3,
                    "b_ms": tb["median_s"] * 1e3,
                    "a_over_b": ta["median_s"] / tb["median_s"],
                }
            )
    return out


def unpaired(a: dict, b: dict) -> tuple[list[str], list[str]]:
    """The ``config cell mode`` rows timed in only A, and in only B. Cells are paired by
    the name each run recorded (runs before the cell catalogue named the Elman tanh RNN
    ``rnn``, later ones ``rnn_tanh``), so such rows are listed, not dropped silently."""
    keys = [[(r["config"], r["cell"], r["mode"]) for r in x["rows"]] for x in (a, b)]
    only = [[k for k in mine if k not in set(other)] for mine, other in (keys, keys[::-1])]
    return tuple([" ".join(k) for k in ks] for ks in only)


def _describe(label: str, record: dict) -> str:
    env = record["environment"]
    alloc = env.get("allocator")
    alloc_text = "allocator not recorded" if alloc is None else f"allocator {allocator_text(alloc)}"
    dirty = " (with uncommitted edits)" if env.get("git_dirty") else ""
    return (
        f"- {label}: `{record['command']}`, {env.get('date_utc')}, commit "
        f"{str(env.get('git_commit'))[:10]}{dirty}; {alloc_text}."
    )


def markdown(a: dict, b: dict, label_a: str = "A", label_b: str = "B") -> str:
    lines = [
        f"# Two benchmark runs: {label_a} against {label_b}",
        "",
        _describe(label_a, a),
        _describe(label_b, b),
        "",
        f"`{label_a} / {label_b}`: {label_a}'s median time over {label_b}'s for the same "
        f"backend (above 1: {label_b} faster). Medians of two separate runs, not paired "
        "per round.",
        "",
        f"| config | cell | mode | backend | {label_a} ms | {label_b} ms | {label_a} / {label_b} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in compare(a, b):
        lines.append(
            f"| {r['config']} | {r['cell']} | {r['mode']} | {r['backend']} | "
            f"{r['a_ms']:.2f} | {r['b_ms']:.2f} | {r['a_over_b']:.2f} |"
        )
    for label, rows in zip((label_a, label_b), unpaired(a, b)):
        if rows:
            lines += ["", f"Timed only in {label} (not compared): {', '.join(rows)}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="run A's benchmark.json")
    parser.add_argument("b", type=Path, help="run B's benchmark.json")
    parser.add_argument("--labels", default="A,B", help="two names for the runs, A,B")
    parser.add_argument("--out", type=Path, help="write the markdown here (else print it)")
    args = parser.parse_args(argv)
    labels = args.labels.split(",")
    if len(labels) != 2 or not all(labels):
        parser.error(
            f"--labels must be two non-empty names separated by a comma; got {args.labels!r}"
        )
    records = []
    for path in (args.a, args.b):
        try:
            records.append(json.loads(path.read_text()))
        except FileNotFoundError:
            parser.error(f"no such benchmark.json: {path}")
    text = markdown(*records, *labels)
    if args.out:
        args.out.write_text(text)
        print(f"Wrote {args.out}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
