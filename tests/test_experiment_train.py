"""experiments/train.py end to end: files, resume, bad configs, SIGTERM mid-run."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import numpy as np
import pytest
from helpers import keep_freed_memory_calls

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "train.py"


def load():
    sys.path.insert(0, str(SCRIPT.parent))
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


@pytest.mark.parametrize(
    "task,extra",
    [
        ("adding", ["--seq_len", "8"]),
        ("copy", ["--seq_len", "3", "--cell", "gru"]),
        ("digits", ["--cell", "rnn_relu", "--permuted"]),
        ("charlm", ["--seq_len", "10", "--sample_chars", "20", "--cell", "rnn_tanh"]),
        ("hello", ["--num_layers", "2", "--bidirectional"]),
    ],
)
def test_each_task_writes_every_file(tmp_path, task, extra):
    module = load()
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
        + TINY
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
        (["--task", "nope"], "task must be one of"),
        (["--cell", "lstmx"], "--cell must be one of"),
        (["--seq_len", "-3"], "--seq_len must be >= 1; got -3"),
        (["--optimizer", "adamax"], "optimizer must be one of"),
        (["--dropout", "1.5"], r"--dropout must lie in \[0, 1\)"),
        (["--seeds", "0"], "--seeds must be >= 1; got 0"),
        (["--remat", "-2"], r"--remat must be -1 \(sqrt\(T\)\), 0 \(off\) or a chunk length"),
    ],
)
def test_bad_config_values(tmp_path, argv, match):
    with pytest.raises(ValueError, match=match):
        load().main(argv + ["--out", str(tmp_path)])


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

    monkeypatch.setattr(common.ctypes, "CDLL", no_glibc)
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

    subprocess.run(args + ["--name", "cut", "--resume"], check=True, env=env, capture_output=True)
    assert _final_params(tmp_path / "cut") == _final_params(tmp_path / "straight")
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
    assert f"mse {mse['mean']:.3g} ± {mse['std']:.2g}" in text
    assert "| adding | 6 | gru | 6 |" in text
    # The command in the table reproduces the run's config (flags differing from defaults).
    cmd = text.split("`")[1]
    assert (
        "--cell gru" in cmd and "--seq_len 6" in cmd and "--steps 3" in cmd and "--out" not in cmd
    )
