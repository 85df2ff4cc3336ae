"""The papers table is regenerated from the committed study and says what the run says."""

import copy
import json
from pathlib import Path

import paper_rows
import pytest

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = json.loads((ROOT / "results" / "vanishing_gradients" / "summary.json").read_text())


def test_committed_table_is_the_generated_one():
    assert paper_rows.table(SUMMARY) == (ROOT / "results" / "papers.md").read_text(), (
        "run python experiments/paper_rows.py"
    )


def test_every_studied_cell_has_a_row_and_an_entry():
    text = paper_rows.table(SUMMARY)
    rows = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines()[8:]]
    assert rows == SUMMARY["config"]["cells"]
    unknown = set(rows) - set(paper_rows.PUBLISHED) - set(paper_rows.NONE_VERIFIED)
    assert not unknown, f"add {sorted(unknown)} to PUBLISHED or NONE_VERIFIED"


@pytest.mark.parametrize("mse, word", [(0.002, "solved"), (0.05, "did not solve")])
def test_verdict_follows_the_solve_rule_and_the_run(mse, word):
    summary = copy.deepcopy(SUMMARY)
    T = max(summary["config"]["train_lengths"])
    summary["train"][f"gru/T{T}"]["mse"]["mean"] = mse
    got = paper_rows.verdict(summary, "gru", paper_rows.PUBLISHED["gru"])
    assert got.startswith(f"ours {word} it at T={T}")
    assert f"the paper's T is {600 / T:.0f}x ours" in got


def test_the_sequences_seen_are_steps_times_batch():
    summary = copy.deepcopy(SUMMARY)
    summary["config"].update(train_steps=1000, train_batch=37)
    got = paper_rows.verdict(summary, "lstm", paper_rows.PUBLISHED["lstm"])
    assert "ours saw 37,000 sequences, 0.50x the paper's" in got


def test_a_folder_without_a_summary_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        paper_rows.main([str(tmp_path)])
    assert "summary.json" in capsys.readouterr().err
