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


# The vanishing study's --tensorboard is checked inside its end-to-end run
# (tests/test_vanishing_gradients.py::test_study_writes_report_figures_and_summary),
# which would otherwise run a second study.


def test_hello_logs_each_update(tmp_path):
    """experiments/hello.py --tensorboard: loss, gradient norm and learning rate at
    every update. The first update's values are computed again here from the initial
    weights by a loop over the letters (the equations of REFERENCE.md section 1, not
    rnnjax.scan)."""
    import jax
    import jax.numpy as jnp
    import optax
    from test_hello import load_hello

    hello = load_hello()
    summary = hello.main(["--out_dir", str(tmp_path), "--max_steps", "5", "--tensorboard"])
    got = read_scalars(tmp_path / "tensorboard" / "all")
    assert sorted(got["metrics/loss"]) == sorted(got["metrics/grad_norm"]) == [1, 2, 3, 4, 5]
    assert got["metrics/lr"] == pytest.approx(dict.fromkeys(range(1, 6), 0.05))
    assert got["metrics/loss"][5] == pytest.approx(summary["loss_last"], rel=1e-6)

    _, params = hello.init(hello.Config())
    targets = jnp.array([hello.VOCAB.index(c) for c in "ello"])

    def loss(params):
        (w_x, w_h, b), (w_y, b_y) = params["cell"], params["out"]
        h, logits = jnp.zeros(w_h.shape[0]), []
        for c in "hell":
            x = jnp.eye(len(hello.VOCAB))[hello.VOCAB.index(c)]
            h = jnp.tanh(x @ w_x + h @ w_h + b)
            logits.append(h @ w_y + b_y)
        return optax.softmax_cross_entropy_with_integer_labels(jnp.stack(logits), targets).mean()

    value, grads = jax.value_and_grad(loss)(params)
    assert got["metrics/loss"][1] == pytest.approx(float(value), rel=1e-5)
    norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
    assert got["metrics/grad_norm"][1] == pytest.approx(norm, rel=1e-5)
