"""Two runs of ``run.py`` side by side: each backend's median in both, and the ratio.

    python benchmarks/compare.py A/benchmark.json B/benchmark.json [--out compare.md]
    python benchmarks/compare.py A1.json,A2.json B1.json,B2.json --rename rnn=rnn_tanh

For the same backend, configuration, cell and mode, ``A / B`` is run A's median time
over run B's: above 1, B was faster. The two runs are separate processes, so the ratio
is of medians, not per round as within one run; on a shared machine it carries that
run-to-run spread. Several runs per side (comma-separated; run them alternately, A B A
B) count as the mean of their medians. ``--rename old=new`` renames a cell of A (runs
before the catalogue called the Elman tanh RNN ``rnn``). Use it for what differs
between the runs (an allocator setting, a commit), and a single run for rnnjax against
its peers.
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


def merge(records: list[dict], rename: dict[str, str] | None = None) -> dict:
    """One record from several runs of the same benchmark: each (config, cell, mode,
    backend) timed in every run, its ``median_s`` the mean of the runs' medians; cells
    renamed by ``rename``; the first run's command and environment, the others' listed
    under ``merged``."""
    rename = rename or {}
    keyed = []
    for rec in records:
        rows = {}
        for r in rec["rows"]:
            cell = rename.get(r["cell"], r["cell"])
            rows[(r["config"], cell, r["mode"])] = {**r, "cell": cell}
        keyed.append(rows)
    out_rows = []
    for key, row in keyed[0].items():
        if not all(key in k for k in keyed):
            continue
        times = {}
        for name in row["times"]:
            medians = [k[key]["times"].get(name, {}).get("median_s") for k in keyed]
            if all(m is not None for m in medians):
                times[name] = {"median_s": sum(medians) / len(medians), "runs_s": medians}
        out_rows.append({**row, "times": times})
    first = records[0]
    return {
        **first,
        "rows": out_rows,
        "merged": [f"{r['command']} ({r['environment'].get('date_utc')})" for r in records],
    }


def unpaired(a: dict, b: dict) -> tuple[list[str], list[str]]:
    """The ``config cell mode`` rows timed in only A, and in only B. Cells are paired by
    the name each run recorded (runs before the cell catalogue named the Elman tanh RNN
    ``rnn``, later ones ``rnn_tanh``), so such rows are listed, not dropped silently."""
    keys = [[(r["config"], r["cell"], r["mode"]) for r in x["rows"]] for x in (a, b)]
    only = [[k for k in mine if k not in set(other)] for mine, other in (keys, keys[::-1])]
    return tuple([" ".join(k) for k in ks] for ks in only)


def _describe(label: str, record: dict) -> str:
    if len(record.get("merged", ())) > 1:
        env = record["environment"]
        return (
            f"- {label}: the mean of {len(record['merged'])} runs' medians: "
            + "; ".join(f"`{m}`" for m in record["merged"])
            + f"; commit {str(env.get('git_commit'))[:10]}."
        )
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
    parser.add_argument("a", help="run A's benchmark.json (several: comma-separated)")
    parser.add_argument("b", help="run B's benchmark.json (several: comma-separated)")
    parser.add_argument(
        "--rename", default="", help="cells of A to rename, old=new[,old=new] (e.g. rnn=rnn_tanh)"
    )
    parser.add_argument("--labels", default="A,B", help="two names for the runs, A,B")
    parser.add_argument("--out", type=Path, help="write the markdown here (else print it)")
    args = parser.parse_args(argv)
    labels = args.labels.split(",")
    if len(labels) != 2 or not all(labels):
        parser.error(
            f"--labels must be two non-empty names separated by a comma; got {args.labels!r}"
        )
    try:
        rename = dict(pair.split("=") for pair in args.rename.split(",") if pair)
    except ValueError:
        parser.error(f"--rename takes old=new pairs separated by commas; got {args.rename!r}")
    records = []
    for side, paths in (("a", args.a), ("b", args.b)):
        runs = []
        for path in filter(None, paths.split(",")):
            try:
                runs.append(json.loads(Path(path).read_text()))
            except FileNotFoundError:
                parser.error(f"no such benchmark.json: {path}")
        if not runs:
            parser.error(f"{side}: give at least one benchmark.json")
        records.append(merge(runs, rename if side == "a" else None))
    text = markdown(*records, *labels)
    if args.out:
        args.out.write_text(text)
        print(f"Wrote {args.out}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
