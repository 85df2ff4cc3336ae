"""``results/README.md``: every published table, with the command, commit, machine and
wall time behind it, and how to cite it; generated from the tables themselves.

    python experiments/results_index.py > results/README.md

Each table already records its own provenance (a ``Machine:`` line, the commit, a wall
column or a wall time): this script reads those, so the index cannot drift from the
tables (tests/test_results_index.py regenerates it and compares). The citation is made
from ``CITATION.cff``, the one source.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (table, what it shows, the command that regenerates it, what its numbers are).
TABLES = [
    ("results/mnist1d/README.md", "MNIST-1D: every catalogue cell, and the published GRU's setting against its 91% / 57%",
     "bash experiments/reproduce_training.sh mnist1d", "seeds"),
    ("results/vanishing_gradients/report.md", "The vanishing-gradient study (the main job): gradient flow at init, trained outcomes, memory horizon, regularisers",
     "make run", "seeds"),
    ("results/papers.md", "The catalogue against its papers' tasks (from the study's summary)",
     "python experiments/paper_rows.py", "seeds"),
    ("results/training.md", "Elman / LSTM / GRU on adding, copy, digits and character LM",
     "bash experiments/reproduce_training.sh seed", "seeds"),
    ("results/training_linear.md", "The linear recurrences on adding T=200 and copy T=50",
     "bash experiments/reproduce_training.sh linear", "seeds"),
    ("results/training_families.md", "Issue 20's nonlinear families on adding T=200",
     "bash experiments/reproduce_training.sh families", "seeds"),
    ("results/seq2seq/README.md", "Seq2Seq with and without attention: addition, reversal, dates",
     "bash experiments/reproduce_seq2seq.sh", "seeds"),
    ("results/benchmarks/summary.md", "Speed and memory against Flax, Equinox and PyTorch (CPU)",
     "python benchmarks/run.py", "timings"),
    ("results/scaling/scaling.md", "Throughput on 1, 2, 4 and 8 (host) devices",
     "python benchmarks/scaling.py", "timings"),
    ("results/lengths/lengths.md", "The cost of variable lengths and padding",
     "python benchmarks/lengths.py --out results/lengths", "timings"),
    ("results/gpu-h200/README.md", "One NVIDIA H200 against cuDNN (stale: predates the current backward; issue 22)",
     "bash benchmarks/gpu.sh", "timings"),
]  # fmt: skip

# "commit abc1234" / "commits a, b (with edits), c": the clause after the word, to the
# end of its sentence.
COMMIT = re.compile(r"\bcommits? (.*?)(?:\.\s|\.$|;|\n|$)")
WALL_COLUMN = re.compile(r"\|\s*(>=)?(\d+(?:\.\d+)?) min\s*\|")


def machine(text: str) -> str:
    """The table's ``Machine:`` line up to its first ``;`` (or a run's ``(date UTC;
    machine; ...)``), without a commit it repeats."""
    m = re.search(r"Machine: ([^;\n]*)", text) or re.search(r"UTC; ([^;\n]*);", text)
    if not m:
        return "not stated in the table"
    return re.sub(r",? commit `?[0-9a-f]+`?", "", m.group(1)).strip().rstrip(".,")


def commits(text: str) -> list[str]:
    found: list[str] = []
    for m in COMMIT.finditer(text):
        for c in re.findall(r"\b[0-9a-f]{7,40}\b", m.group(1)):
            if c[:10] not in found:
                found.append(c[:10])
    return found


def wall(text: str) -> str:
    minutes = [float(m.group(2)) for m in WALL_COLUMN.finditer(text)]
    at_least = any(m.group(1) for m in WALL_COLUMN.finditer(text))
    if minutes:
        return f"{'>= ' if at_least else ''}{sum(minutes):.0f} min ({len(minutes)} runs)"
    m = re.search(r"wall time (\d+(?:\.\d+)?) min", text) or re.search(
        r"(\d+) min of training in all", text
    )
    return f"{m.group(1)} min" if m else "not recorded"


def intervals(text: str, kind: str) -> str:
    if kind == "timings":
        return "timings: medians over rounds (no seeds)"
    if "95%" in text:
        return "yes, and n"
    return "not yet: written before the intervals (issue 24); rerun the command"


def cff() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def bibtex(meta: dict) -> str:
    authors = " and ".join(
        "{" + a["name"] + "}" if "name" in a else f"{a['family-names']}, {a['given-names']}"
        for a in meta["authors"]
    )
    fields = [
        ("title", "{" + meta["title"] + "}"),
        ("author", "{" + authors + "}"),
        ("version", "{" + str(meta["version"]) + "}"),
        ("note", "{Give the commit and machine of the table you cite (listed above)}"),
    ]
    if "url" in meta or "repository-code" in meta:
        fields.append(("url", "{" + meta.get("repository-code", meta.get("url")) + "}"))
    body = ",\n".join(f"  {k} = {v}" for k, v in fields)
    return f"@software{{rnnjax,\n{body}\n}}"


MNIST1D_BIB = """@inproceedings{greydanus2024scaling,
  title = {Scaling Down Deep Learning with {MNIST-1D}},
  author = {Greydanus, Sam and Kobak, Dmitry},
  booktitle = {International Conference on Machine Learning (ICML)},
  year = {2024}
}"""


def index() -> str:
    lines = [
        "# Results",
        "",
        "Every table the README and the docs quote, generated from run outputs by the "
        "command beside it; each table's own header or footer holds its full provenance "
        "(versions, dates, every seed). This page is generated too: `python "
        "experiments/results_index.py > results/README.md`.",
        "",
        "| table | what | command | commit | machine | wall time | intervals |",
        "|---|---|---|---|---|---|---|",
    ]
    for path, what, command, kind in TABLES:
        text = (ROOT / path).read_text()
        name = path.removeprefix("results/")
        lines.append(
            f"| [{name}]({name}) | {what} | `{command}` | {', '.join(commits(text)) or 'not stated'} "
            f"| {machine(text)} | {wall(text)} | {intervals(text, kind)} |"
        )
    meta = cff()
    lines += [
        "",
        "Raw per-seed numbers: each run folder's `final.csv` (train.py, seq2seq.py; the "
        "run outputs behind `mnist1d/README.md`, `training.md` and `training_linear.md` are "
        "committed in `mnist1d/runs/`, `training/runs/` and `training_linear/runs/`, and "
        "regenerate those tables) and the study's `trained.csv`; "
        "every JSON in a run folder carries `schema_version`.",
        "",
        "## Citing",
        "",
        f"{meta['message'].strip()} (`CITATION.cff` is the source of this entry.)",
        "",
        "```bibtex",
        bibtex(meta),
        "```",
        "",
        "A table on MNIST-1D should also cite the dataset:",
        "",
        "```bibtex",
        MNIST1D_BIB,
        "```",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)
    print(index(), end="")


if __name__ == "__main__":
    main()
