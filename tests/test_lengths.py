"""benchmarks/lengths.py: the length sweep's records, its report and --resume."""

import json

import lengths
import pytest


def test_sweep_writes_rows_and_resumes(tmp_path, monkeypatch):
    argv = ["--cells", "min_gru", "--lengths", "3,6", "--hidden_size", "4", "--input_size", "2",
            "--batch_size", "2", "--rounds", "1", "--out", str(tmp_path)]  # fmt: skip
    assert lengths.main(argv) == 0
    record = json.loads((tmp_path / "lengths.json").read_text())
    got = [(r["cell"], r["loop"], r["steps"]) for r in record["rows"]]
    # The LSTM beside the cell, at the parameter count closest to the cell's.
    runs = (("min_gru", "associative"), ("min_gru", "sequential"), ("lstm", "sequential"))
    assert sorted(got) == sorted((c, loop, t) for t in (3, 6) for c, loop in runs)
    lstm = next(r for r in record["rows"] if r["cell"] == "lstm")
    cell = next(r for r in record["rows"] if r["cell"] == "min_gru")
    assert lstm["hidden"] == lengths.lstm_width_for(cell["params"], 2)
    assert lstm["params"] == 4 * lstm["hidden"] * (2 + lstm["hidden"] + 1)
    assert all(r["samples_s"] and r["program_bytes"] > 0 for r in record["rows"])
    assert "| min_gru (H=4) |" in (tmp_path / "lengths.md").read_text()

    # --resume measures nothing the file already holds ...
    def fail(*a, **k):
        raise AssertionError("measured a row that was already there")

    monkeypatch.setattr(lengths, "measure", fail)
    assert lengths.main([*argv, "--resume"]) == 0
    again = json.loads((tmp_path / "lengths.json").read_text())
    assert again["rows"] == record["rows"]
    # ... and refuses a file written with other arguments.
    with pytest.raises(SystemExit, match="other arguments"):
        lengths.main([*argv[:-2], "--out", str(tmp_path), "--rounds", "2", "--resume"])


def test_bad_arguments_are_named():
    with pytest.raises(SystemExit):
        lengths.parse(["--cells", "nope"])
    with pytest.raises(SystemExit):
        lengths.parse(["--lengths", "10,x"])
