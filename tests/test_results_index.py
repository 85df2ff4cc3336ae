"""results/README.md is what experiments/results_index.py makes of the tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import results_index

ROOT = Path(__file__).resolve().parents[1]


def test_index_regenerates_from_the_tables():
    assert results_index.index() == (ROOT / "results" / "README.md").read_text()


# Folders of results/ that hold no table of their own, and why.
NOT_TABLES = {
    "profile": "XLA profiles behind benchmarks/README.md's notes",
    "training": "the run outputs behind results/training.md",
    "training_linear": "the run outputs behind results/training_linear.md",
}


def test_every_table_is_listed_and_exists():
    listed = {path for path, *_ in results_index.TABLES}
    for path in listed:
        assert (ROOT / path).is_file(), path
    # Every table at the top of results/, and a table from every results folder: a new
    # one joins the index or this fails.
    top = {f"results/{p.name}" for p in (ROOT / "results").glob("*.md") if p.name != "README.md"}
    assert top <= listed, top - listed
    folders = {p.name for p in (ROOT / "results").iterdir() if p.is_dir()} - set(NOT_TABLES)
    covered = {path.split("/")[1] for path in listed if path.count("/") >= 2}
    assert folders <= covered, folders - covered


def test_provenance_parsers():
    text = (
        "| a | 1.5 min |\n| b | >=2.0 min |\n\nMachine: AMD EPYC (2 cores), backend cpu, jax "
        "0.10.2; code at commits 1eef8e0d6a, 508a56b777 (with edits), cce5e83868.\n"
    )
    assert results_index.commits(text) == ["1eef8e0d6a", "508a56b777", "cce5e83868"]
    assert results_index.commits("commit `b68fd7e962`; wall time") == ["b68fd7e962"]
    assert results_index.machine(text) == "AMD EPYC (2 cores), backend cpu, jax 0.10.2"
    assert results_index.wall(text) == ">= 4 min (2 runs)"
    assert results_index.wall("wall time 6.3 min.") == "6.3 min"
    assert results_index.intervals("mean [95% CI]", "seeds") == "yes, and n"
    assert results_index.intervals("mean ± std", "seeds").startswith("not yet")


def test_run_csvs_name_a_bad_row_or_column(tmp_path):
    import common
    import pytest

    run = common.RunDir(tmp_path / "r", primary=True)
    path = run.write_seed_csv("final.csv", [3, 4], {"accuracy": [0.5, 0.25]})
    assert path.read_text() == "seed,accuracy\n3,0.5\n4,0.25\n"
    with pytest.raises(ValueError, match=r"metrics\['loss'\] must hold one value per seed \(2\)"):
        run.write_seed_csv("final.csv", [3, 4], {"loss": [1.0]})
    with pytest.raises(ValueError, match=r"rows\[1\] must have the columns \['a', 'b'\]"):
        run.write_csv("x.csv", [{"a": 1, "b": 2.0}, {"a": 1}])


@pytest.mark.parametrize("table", ["training", "training_linear"])
def test_training_tables_regenerate_from_their_committed_runs(table):
    """results/<table>.md is train_report.py's output over the committed run folders."""
    import subprocess
    import sys

    runs = sorted(str(p) for p in (ROOT / "results" / table / "runs").iterdir())
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "train_report.py"), *runs],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == (ROOT / "results" / f"{table}.md").read_text()
