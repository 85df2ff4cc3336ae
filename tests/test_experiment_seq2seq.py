"""experiments/seq2seq.py and its report, end to end: files, learning, exact resume."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import keep_freed_memory_calls

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


def load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"{name}_script"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


TINY = "--hidden_size 24 --embed_dim 16 --batch_size 32 --eval_size 64 --no-progress".split()


def _run(module, tmp_path, name, *args):
    code = module.main([*TINY, "--out", str(tmp_path), "--name", name, *map(str, args)])
    return code, tmp_path / name


@pytest.mark.slow
@pytest.mark.parametrize(
    "task,extra,chance",
    [
        ("addition", ["--digits", "2", "--attention", "bahdanau"], 1 / 11),
        ("reversal", ["--seq_len", "6", "--attention", "luong_general", "--cell", "gru"], 1 / 11),
        ("dates", ["--attention", "none", "--cell", "gru"], 1 / 11),
    ],
)
def test_short_run_beats_chance_and_writes_every_file(tmp_path, task, extra, chance):
    module = load("seq2seq")
    code, run = _run(
        module, tmp_path, task, "--task", task, "--steps", 150, "--eval_every", 75,
        "--learning_rate", 1e-2, "--beam_width", 3, *extra,
    )  # fmt: skip
    assert code == 0
    for name in ("config.json", "metrics.jsonl", "eval.jsonl", "summary.json", "curves.png"):
        assert (run / name).exists(), name
    assert (run / "attention.png").exists() == ("none" not in extra)
    summary = json.loads((run / "summary.json").read_text())
    final = summary["final"]
    # Held-out token accuracy well above chance (one in ~11 target symbols).
    assert final["token_accuracy"]["min"] > 3 * chance, final["token_accuracy"]
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert final["loss"]["max"] < 0.7 * min(first)
    assert set(final) >= {"exact_greedy", "exact_beam3", "loss", "token_accuracy"}
    assert len(summary["samples"]) == 12 and summary["eval_size"] == 64
    evals = [json.loads(r) for r in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [75, 150]
    # The exact match reported is recomputed from the samples' text for seed 0.
    assert all(set(s) == {"source", "target", "greedy", "beam"} for s in summary["samples"])
    # final.csv: the same per-seed numbers, one row per seed.
    rows = (run / "final.csv").read_text().splitlines()
    assert rows[0].split(",") == ["seed", *final]
    for i, line in enumerate(rows[1:]):
        values = line.split(",")
        assert int(values[0]) == summary["seeds"][i]
        assert [float(v) for v in values[1:]] == [final[k]["per_seed"][i] for k in final]


def test_resume_continues_exactly(tmp_path):
    module = load("seq2seq")
    base = ["--task", "reversal", "--seq_len", "4", "--attention", "none", "--eval_every", "0"]
    base += ["--schedule", "constant", "--warmup_steps", "0"]  # the same at 6 and 12 steps
    code, full = _run(module, tmp_path, "full", *base, "--steps", 12, "--save_every", 6)
    assert code == 0
    code, part = _run(module, tmp_path, "part", *base, "--steps", 6, "--save_every", 6)
    assert code == 0
    # A second start without --resume refuses to overwrite the checkpoints.
    with pytest.raises(SystemExit, match="--resume"):
        _run(module, tmp_path, "part", *base, "--steps", 12)
    code, part = _run(module, tmp_path, "part", *base, "--steps", 12, "--save_every", 6, "--resume")
    assert code == 0
    rows = lambda run: [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["step"] for r in rows(part)] == list(range(1, 13))
    np.testing.assert_array_equal([r["loss"] for r in rows(part)], [r["loss"] for r in rows(full)])
    s_full = json.loads((full / "summary.json").read_text())["final"]
    s_part = json.loads((part / "summary.json").read_text())["final"]
    assert s_full["loss"]["per_seed"] == s_part["loss"]["per_seed"]


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--attention", "cosine"], "argument --attention: invalid choice"),
        (["--beam_width", "0"], "--beam_width must be >= 1"),
        (["--task", "translate"], "argument --task: invalid choice"),
        (["--task", "reversal", "--digits", "4"], "--digits applies to --task addition only"),
        (["--seq_len", "12"], "--seq_len applies to --task reversal only"),
        (["--beam_width", "1", "--alpha", "0.6"], "--alpha (the beam's length penalty) needs"),
        # Clamped to the run's length before, so config.json said 50 and 4 ran.
        (["--steps", "5", "--schedule", "warmup_cosine", "--warmup_steps", "50"],
         r"warmup_steps must lie in [0, total_steps); got 50"),
        (["--warmup_steps", "10"], "warmup_steps applies only to schedule 'warmup_cosine'"),
        (["--no_such_flag", "1"], "unrecognized arguments: --no_such_flag"),
    ],
)  # fmt: skip
def test_bad_config_names_the_flag(tmp_path, argv, match, capsys):
    with pytest.raises(SystemExit) as info:
        load("seq2seq").main(argv + ["--out", str(tmp_path / "runs")])
    assert info.value.code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_report_reads_runs(tmp_path):
    """The report's numbers are the summaries' numbers."""
    module = load("seq2seq_report")
    runs = []
    for att, T, exact in (("none", 10, 0.5), ("bahdanau", 10, 0.9), ("none", 20, 0.1)):
        run = tmp_path / f"rev-{att}-{T}"
        run.mkdir()
        cfg = dict(load("seq2seq").Config().__dict__, task="reversal", seq_len=T, attention=att)
        stats = {"mean": exact, "std": 0.0, "min": exact, "max": exact, "n": 1, "per_seed": [exact]}
        summary = {
            "config": cfg, "final": {"exact_greedy": stats, "exact_beam4": stats},
            "params_per_seed": 123, "steps": 7, "seeds": [0], "wall_s": 60.0, "eval_size": 5,
            "environment": {
                "cpu": "cpu", "cpu_count": 2, "backend": "cpu", "versions": {"jax": "x"},
                "git_commit": "abc",
            },
        }  # fmt: skip
        (run / "summary.json").write_text(json.dumps(summary))
        runs.append(str(run))
    module.main([*runs, "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "README.md").read_text()
    assert "| fixed context vector | 0.500 | 0.100 |" in text
    assert "| attention (bahdanau) | 0.900 |  |" in text
    assert "| 0.100 | k=4: 0.100 |" in text  # one seed: the value alone
    assert "--seq_len 20 --attention none" in text
    # Several seeds: the mean, its bootstrap interval over the seeds, and each seed. With
    # two seeds the resampled means are 0.8, 0.85, 0.85, 0.9: the 95% interval is [0.8, 0.9].
    two = tmp_path / "add-2"
    two.mkdir()
    pair = {"per_seed": [0.8, 0.9], "mean": 0.85, "std": 0.07, "min": 0.8, "max": 0.9, "n": 2}
    summary = json.loads((tmp_path / "rev-none-10" / "summary.json").read_text())
    summary["config"]["task"] = "addition"
    summary.update(seeds=[0, 1], final={"exact_greedy": pair, "exact_beam4": pair})
    (two / "summary.json").write_text(json.dumps(summary))
    module.main([str(two), "--out", str(tmp_path / "out_two")])
    text = (tmp_path / "out_two" / "README.md").read_text()
    assert "| 2 | 0.850 [0.800, 0.900] (0.800, 0.900) |" in text
    assert (tmp_path / "out" / "reversal_vs_length.png").exists()

    # Two cells: each its own row (one hid the other); two runs of one model and T: an error.
    gru = tmp_path / "rev-none-10-gru"
    gru.mkdir()
    summary = json.loads((tmp_path / "rev-none-10" / "summary.json").read_text())
    summary["config"]["cell"] = "gru"
    summary["final"]["exact_greedy"] = dict(summary["final"]["exact_greedy"], mean=0.7)
    (gru / "summary.json").write_text(json.dumps(summary))
    module.main([*runs, str(gru), "--out", str(tmp_path / "out2")])
    text = (tmp_path / "out2" / "README.md").read_text()
    assert "| fixed context vector, gru | 0.700 |  |" in text
    assert "| fixed context vector, lstm | 0.500 | 0.100 |" in text
    twin = tmp_path / "rev-none-10-again"
    twin.mkdir()
    (twin / "summary.json").write_text((tmp_path / "rev-none-10" / "summary.json").read_text())
    with pytest.raises(SystemExit, match="two reversal runs of fixed context vector at T=10"):
        module.main([*runs, str(twin), "--out", str(tmp_path / "out3")])


def test_keep_freed_memory_is_set_before_jax_starts(tmp_path, monkeypatch):
    # As for train.py: before join_processes (JAX's first call), and only with the flag.
    module, argv = load("seq2seq"), [*TINY, "--out", str(tmp_path)]
    assert keep_freed_memory_calls(module, [*argv, "--keep_freed_memory"], monkeypatch) == [
        "keep",
        "join",
    ]
    assert keep_freed_memory_calls(module, argv, monkeypatch) == ["join"]
