"""--tensorboard: the run's JSONL logs mirrored as TensorBoard scalars, read back here
from the event files by a reader of our own (TFRecord framing + tensorboardX's Event
protobuf), and compared with the JSONL rows value by value."""

import json
import struct
from pathlib import Path

import pytest
import train

pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2  # noqa: E402


def read_scalars(folder: Path) -> dict:
    """``{tag: {step: value}}`` from every event file in ``folder`` (later wins)."""
    out = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4  # length, its crc, the record, its crc
            for v in event.summary.value:
                out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def test_train_logs_every_metric_per_seed(tmp_path):
    argv = ["--task", "adding", "--cell", "gru", "--hidden_size", "4", "--seq_len", "5",
            "--steps", "4", "--eval_every", "2", "--eval_size", "8", "--batch_size", "4",
            "--seeds", "2", "--seed", "3", "--no-progress", "--tensorboard",
            "--out", str(tmp_path), "--name", "tb"]  # fmt: skip
    assert train.main(argv) == 0
    run = tmp_path / "tb"
    board = run / "tensorboard"
    assert sorted(p.name for p in board.iterdir()) == ["all", "seed3", "seed4"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    for k, seed in enumerate((3, 4)):
        got = read_scalars(board / f"seed{seed}")
        for key in ("loss", "grad_norm", "clipped"):
            want = {r["step"]: float(r[key][k]) for r in rows}  # clipped: a bool, 1.0
            assert got[f"metrics/{key}"] == pytest.approx(want, rel=1e-6), key
        assert got["eval/mse"] == pytest.approx({r["step"]: r["mse"][k] for r in evals})
        assert sorted(got["eval/mse"]) == [2, 4]
    shared = read_scalars(board / "all")
    assert shared["metrics/lr"] == pytest.approx({r["step"]: r["lr"] for r in rows})


def test_without_the_writer_the_flag_is_a_usage_error(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "tensorboardX" else real(n, *a)
    )
    with pytest.raises(SystemExit) as e:
        train.main(["--tensorboard", "--out", str(tmp_path)])
    assert e.value.code == 2 and "pip install" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_the_study_logs_each_training_run_and_its_gradient_decay(tmp_path):
    """--tensorboard in the vanishing study: each training run (the unit's name) has one
    folder per seed with its loss at every update and the decay factor of dL/dh_t at
    every evaluation; the last one is the factor the summary reports after training."""
    import vanishing_gradients

    out = tmp_path / "vg"
    argv = ["--cells", "rnn_tanh", "--hidden_size", "4", "--lengths", "6", "--seeds", "2",
            "--batch_size", "4", "--sweep_len", "6", "--train_lengths", "6",
            "--train_steps", "4", "--clip_steps", "2", "--eval_size", "8", "--scales", "1.0",
            "--reg_cells", "rnn_tanh", "--no-progress", "--workers", "1",
            "--tensorboard", "--out", str(out)]  # fmt: skip
    assert vanishing_gradients.main(argv) == 0
    board = out / "tensorboard" / "train-rnn_tanh-T6"
    assert sorted(p.name for p in board.iterdir()) == ["all", "seed0", "seed1"]
    summary = json.loads((out / "summary.json").read_text())["train"]["rnn_tanh/T6"]
    final = []
    for seed in (0, 1):
        got = read_scalars(board / f"seed{seed}")
        assert sorted(got["metrics/loss"]) == [1, 2, 3, 4]
        assert sorted(got["eval/grad_decay"]) == [1, 2, 3, 4]  # 4 updates: every one
        assert all(0.0 < v < 2.0 for v in got["eval/grad_decay"].values())
        final.append(got["eval/grad_decay"][4])
    after = summary["factor_after"]
    assert sorted(final) == pytest.approx([after["min"], after["max"]], rel=1e-5)
    # The regulariser runs log too, under their unit names.
    assert (out / "tensorboard" / "reg-rnn_tanh-zoneout-r0.1-T6" / "seed0").is_dir()
