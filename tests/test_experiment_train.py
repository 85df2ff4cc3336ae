"""experiments/train.py end to end: files, resume, bad configs, SIGTERM mid-run."""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from helpers import keep_freed_memory_calls

from rnnjax import stats

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "train.py"


def load():
    spec = importlib.util.spec_from_file_location("train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_script"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


TINY = [
    "--hidden_size",
    "6",
    "--batch_size",
    "8",
    "--seeds",
    "2",
    "--eval_size",
    "16",
    "--no-progress",
]
# Digits and hello have fixed held-out sets: --eval_size does not apply to them.
TINY_FIXED_EVAL = [a for a in TINY if a not in ("--eval_size", "16")]


@pytest.mark.parametrize(
    "task,extra",
    [
        ("adding", ["--seq_len", "8"]),
        ("copy", ["--seq_len", "3", "--cell", "gru"]),
        ("digits", ["--cell", "rnn_relu", "--permuted"]),
        ("charlm", ["--seq_len", "10", "--sample_chars", "20", "--cell", "rnn_tanh"]),
        ("hello", ["--num_layers", "2", "--bidirectional"]),
        # The regularisers of issue 20, on a new cell and on the LSTM.
        ("adding", ["--seq_len", "8", "--cell", "indrnn", "--zoneout", "0.1"]),
        ("adding", ["--seq_len", "8", "--recurrent_dropout", "0.2", "--weight_drop", "0.2"]),
    ],
)
def test_each_task_writes_every_file(tmp_path, task, extra):
    module = load()
    tiny = TINY if task in ("adding", "copy", "charlm") else TINY_FIXED_EVAL
    argv = (
        [
            "--task",
            task,
            "--steps",
            "4",
            "--eval_every",
            "2",
            "--save_every",
            "2",
            "--out",
            str(tmp_path),
            "--name",
            "r",
        ]
        + tiny
        + extra
    )
    assert module.main(argv) == 0
    run = tmp_path / "r"
    for name in ("config.json", "metrics.jsonl", "eval.jsonl", "summary.json", "curves.png"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps"] == 4
    assert summary["final"]["loss"]["n"] == 2 and len(summary["final"]["loss"]["per_seed"]) == 2
    assert summary["environment"]["versions"]["jax"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and len(rows[0]["loss"]) == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    # The gradient's per-step decay at every evaluation, where the loss reads the last state.
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert all(("grad_decay" in r) == (task in ("adding", "digits")) for r in evals)
    if task == "charlm":
        assert len(summary["sample"]) == len("The ") + 20


def test_resume_continues_the_run(tmp_path):
    module = load()
    base = [
        "--task",
        "adding",
        "--seq_len",
        "6",
        "--out",
        str(tmp_path),
        "--name",
        "r",
        "--save_every",
        "3",
        "--eval_every",
        "0",
    ] + TINY
    assert module.main(base + ["--steps", "5"]) == 0
    with pytest.raises(SystemExit, match="already holds checkpoints"):
        module.main(base + ["--steps", "8"])
    assert module.main(base + ["--steps", "8", "--resume"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))


def test_remat_trains_the_same_model(tmp_path, monkeypatch):
    """--remat (recompute the backward in chunks of time) reaches the layers and changes
    memory, not numbers."""
    module = load()
    seen = []
    make_layer = module.rnnjax.make_layer

    def spy(*args, **kwargs):
        seen.append(kwargs.get("remat"))
        return make_layer(*args, **kwargs)

    monkeypatch.setattr(module.rnnjax, "make_layer", spy)
    base = ["--task", "adding", "--seq_len", "7", "--steps", "3", "--eval_every", "0"]
    base += ["--save_every", "0", "--out", str(tmp_path)] + TINY
    losses = {}
    for remat in ("0", "-1"):  # -1: chunks of ceil(sqrt(7)) = 3 steps, and 1 left over
        assert module.main(base + ["--remat", remat, "--name", f"r{remat}"]) == 0
        rows = (tmp_path / f"r{remat}" / "metrics.jsonl").read_text().splitlines()
        losses[remat] = np.array([json.loads(x)["loss"] for x in rows])
    assert losses["0"].shape == (3, 2)
    assert seen == [None, True]
    np.testing.assert_allclose(losses["-1"], losses["0"], rtol=1e-6)
    config = json.loads((tmp_path / "r-1" / "config.json").read_text())
    assert config["config"]["remat"] == -1


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--task", "nope"], "argument --task: invalid choice: 'nope'"),
        (["--cell", "lstmx"], "argument --cell: invalid choice: 'lstmx'"),
        (["--seq_len", "-3"], "--seq_len must be >= 1; got -3"),
        (["--optimizer", "adamax"], "argument --optimizer: invalid choice"),
        (["--dropout", "1.5"], r"--dropout must lie in \[0, 1\)"),
        (["--zoneout", "1.0"], r"--zoneout must lie in \[0, 1\)"),
        (
            ["--cell", "cornn", "--weight_drop", "0.1"],
            "--recurrent_dropout and --weight_drop act on .* the cornn cell does not declare",
        ),
        (["--seeds", "0"], "--seeds must be >= 1; got 0"),
        (["--max_grad_norm", "-1"], r"--max_grad_norm must be a finite number >= 0 \(0: no"),
        (["--max_grad_norm", "inf"], "--max_grad_norm must be a finite number >= 0"),
        (["--remat", "-2"], r"--remat must be -1 \(sqrt\(T\)\), 0 \(off\) or a chunk length"),
    ],
)
def test_bad_config_values(tmp_path, argv, match, capsys):
    """argparse's error: the message on stderr, exit status 2, no traceback, and no run
    folder left behind."""
    with pytest.raises(SystemExit) as info:
        load().main(argv + ["--out", str(tmp_path / "runs")])
    assert info.value.code == 2
    assert re.search(r"error: .*" + match, capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--task", "digits", "--seq_len", "50"], "--seq_len does not apply to --task digits"),
        (["--task", "hello", "--eval_size", "9"], "--eval_size does not apply to --task hello"),
        (["--task", "adding", "--permuted"], "--permuted does not apply to --task adding"),
        (["--task", "copy", "--data_path", "x.npz"], "--data_path does not apply to --task copy"),
        (["--task", "adding", "--embed_dim", "7"], "--embed_dim does not apply to --task adding"),
        (["--cell", "gru", "--forget_bias", "3"], "--forget_bias applies to --cell lstm only"),
        (["--schedule", "cosine", "--warmup_steps", "5"], "warmup_steps applies only to"),
    ],
)
def test_options_the_run_would_ignore_are_errors(tmp_path, argv, match, capsys):
    """They were accepted and recorded in config.json as if they had applied."""
    with pytest.raises(SystemExit) as info:
        load().main(argv + ["--out", str(tmp_path / "runs")])
    assert info.value.code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_grad_decay_is_the_decay_of_the_gradient_by_the_inputs():
    """The logged grad_decay (the script's jitted fit, diagnostics.decay_rate) against
    the same input gradient fitted by NumPy's float64 least squares."""
    import rnnjax
    from rnnjax.modules import SequenceModel
    from rnnjax.tasks import make_task

    task = make_task("adding", seq_len=12)
    batch = task.sample(jax.random.key(1), 16)
    model = SequenceModel(rnnjax.make_layer("gru", 8), 1, head="last")
    params = model.init(jax.random.key(0), batch.inputs, batch.lengths)["params"]
    got = float(load().input_grad_decay(model, task, params, batch))

    def loss(inputs):
        return task.loss(model.apply({"params": params}, inputs, batch.lengths), batch)

    grads = np.asarray(jax.grad(loss)(batch.inputs), np.float64)  # [B, T, I]
    logs = np.log(np.linalg.norm(grads, axis=-1)).mean(axis=0)  # [T]
    distance = np.arange(len(logs))[::-1]
    want = np.exp(np.polyfit(distance, logs, 1)[0])
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert 0.0 < got < 1.0  # a GRU at initialisation: the gradient fades with distance


def test_max_grad_norm_stops_a_diverging_run(tmp_path, capsys):
    """A ceiling below the first update's gradient norm: the run stops at update 1 with
    exit status 1, the summary says diverged and names the update, no update landed."""
    argv = ["--task", "adding", "--seq_len", "8", "--steps", "6", "--max_grad_norm", "1e-9"]
    argv += TINY + ["--out", str(tmp_path), "--name", "r"]
    assert load().main(argv) == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] == 0
    assert "passed max_grad_norm=1e-09 at update 1 (from state at step 0)" in summary["message"]


def _rows(run: Path, name: str) -> list[int]:
    return [json.loads(x)["step"] for x in (run / name).read_text().splitlines()]


def test_resume_keeps_the_record_true(tmp_path, capsys):
    """--resume continues the run config.json describes, or refuses: a changed option
    (the record would claim it for the whole run), --steps below the checkpoint, or
    another --steps under a schedule that depends on it. A complete run is left alone;
    a run without a usable checkpoint starts again with fresh logs."""
    module = load()
    run = tmp_path / "r"
    base = ["--task", "adding", "--seq_len", "6", "--out", str(tmp_path), "--name", "r"]
    base += ["--save_every", "3", "--eval_every", "3"] + TINY
    assert module.main(base + ["--steps", "6"]) == 0
    record = {n: (run / n).read_bytes() for n in ("eval.jsonl", "summary.json", "config.json")}
    with pytest.raises(SystemExit, match=r"changed config: --learning_rate 0.001 -> 0.05"):
        module.main(base + ["--steps", "6", "--resume", "--learning_rate", "0.05"])
    with pytest.raises(SystemExit, match=r"--steps 4 is below .* latest checkpoint, 6"):
        module.main(base + ["--steps", "4", "--resume"])
    with pytest.raises(SystemExit) as info:
        module.main(base + ["--steps", "6", "--resume"])
    assert info.value.code == 0 and "complete at step 6" in capsys.readouterr().out
    assert record == {n: (run / n).read_bytes() for n in record}  # nothing rewritten
    # The output options may change: progress, evaluation cadence, placement.
    assert module.main(base + ["--steps", "9", "--resume", "--eval_every", "2"]) == 0
    assert _rows(run, "metrics.jsonl") == list(range(1, 10))
    assert _rows(run, "eval.jsonl") == [3, 6, 8, 9]  # 6: the first run's final evaluation
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 9 and summary["wall_s_complete"] is False  # 1-6 not in it

    # No usable checkpoint: the logs start over with the run.
    shutil.rmtree(run / "checkpoints")
    assert module.main(base + ["--steps", "4", "--resume"]) == 0
    assert _rows(run, "metrics.jsonl") == [1, 2, 3, 4]
    assert _rows(run, "eval.jsonl") == [3, 4]

    cosine = base[: -len(TINY)] + ["--name", "c", "--schedule", "cosine"] + TINY
    assert module.main(cosine + ["--steps", "3"]) == 0
    with pytest.raises(SystemExit, match=r"--steps 3 -> 6 \(the learning-rate schedule"):
        module.main(cosine + ["--steps", "6", "--resume"])


def test_unknown_flag_and_bad_type(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load().main(["--hidden", "3"])
    with pytest.raises(SystemExit):
        load().main(["--steps", "many"])
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_keep_freed_memory_is_set_before_jax_starts(tmp_path, monkeypatch):
    # The flag must reach common.keep_freed_memory before join_processes (JAX's first
    # call), and nothing is called without it.
    module, out = load(), ["--out", str(tmp_path)]
    assert keep_freed_memory_calls(module, ["--keep_freed_memory", *out], monkeypatch) == [
        "keep",
        "join",
    ]
    assert keep_freed_memory_calls(module, out, monkeypatch) == ["join"]


def test_keep_freed_memory_without_glibc_says_so(monkeypatch):
    common = load().common

    def no_glibc(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    from rnnjax import lab

    monkeypatch.setattr(lab.ctypes, "CDLL", no_glibc)
    with pytest.raises(RuntimeError, match=r"needs glibc \(Linux\): libc.so.6"):
        common.keep_freed_memory()
    assert common.KEPT == {}
    with pytest.raises(ValueError, match=r"nbytes must be in \(0, 2\*\*31\)"):
        common.keep_freed_memory(0)


def _final_params(run: Path):
    from rnnjax.checkpoint import Checkpointer

    with Checkpointer(run / "checkpoints") as ckpt:
        step = ckpt.steps()[-1]
        return step, ckpt.metadata(step)["checksum"]


@pytest.mark.slow
def test_sigterm_mid_training_then_resume_equals_uninterrupted(tmp_path):
    """A real process, a real SIGTERM: checkpoint at the step reached, exit 130, and the
    resumed run ends with the same state bytes (checksum) as an uninterrupted one."""
    args = [
        sys.executable,
        str(SCRIPT),
        "--task",
        "adding",
        "--seq_len",
        "30",
        "--steps",
        "400",
        "--save_every",
        "1000",
        "--eval_every",
        "0",
        "--out",
        str(tmp_path),
    ] + TINY
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(args + ["--name", "straight"], check=True, env=env, capture_output=True)

    proc = subprocess.Popen(
        args + ["--name", "cut"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 50:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    cut_step = summary["steps"]
    assert 50 <= cut_step < 400

    first_wall = summary["wall_s"]
    subprocess.run(args + ["--name", "cut", "--resume"], check=True, env=env, capture_output=True)
    assert _final_params(tmp_path / "cut") == _final_params(tmp_path / "straight")
    resumed = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert resumed["wall_s_complete"] is True  # the interrupted segment's time is in it
    assert resumed["wall_s"] == pytest.approx(first_wall + resumed["wall_s_this_process"])
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 401))
    straight = [
        json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    chex.assert_trees_all_equal(
        np.array([r["loss"] for r in rows]), np.array([r["loss"] for r in straight])
    )


def test_report_table_reads_the_summaries(tmp_path):
    module = load()
    argv = [
        "--task",
        "adding",
        "--seq_len",
        "6",
        "--steps",
        "3",
        "--eval_every",
        "0",
        "--out",
        str(tmp_path),
        "--name",
        "r",
        "--cell",
        "gru",
    ] + TINY
    assert module.main(argv) == 0
    path = SCRIPT.parent / "train_report.py"
    spec = importlib.util.spec_from_file_location("report_script", path)
    report = importlib.util.module_from_spec(spec)
    sys.modules["report_script"] = report
    spec.loader.exec_module(report)
    text = report.table([tmp_path / "r"])
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    mse = summary["final"]["mse"]
    low, high = stats.bootstrap_ci(mse["per_seed"])
    assert f"mse {mse['mean']:.3g} [{low:.3g}, {high:.3g}]" in text
    assert "| adding | 6 | gru | 6 |" in text
    # The command in the table reproduces the run's config (flags differing from defaults).
    cmd = text.split("`")[1]
    assert (
        "--cell gru" in cmd and "--seq_len 6" in cmd and "--steps 3" in cmd and "--out" not in cmd
    )
    # T as the task ran it (hello: 4 letters; it printed 64 for any fixed-length task),
    # and no finished run among the paths is an error, not an empty table.
    hello = ["--task", "hello", "--steps", "2", "--eval_every", "0", "--out", str(tmp_path)]
    assert module.main(hello + ["--name", "h"] + TINY_FIXED_EVAL) == 0
    assert "| hello | 4 | lstm | 6 |" in report.table([tmp_path / "h"])
    with pytest.raises(SystemExit, match="no finished runs"):
        report.main([str(tmp_path / "missing")])
