"""MNIST-1D: built offline by the package's generator, cached, and held to the
published ``mnist1d_data.pkl`` (values below read from that file, greydanus/mnist1d at
7878d96, not from our generation)."""

from __future__ import annotations

import random
import socket

import jax
import numpy as np
import pytest

import rnnjax
from rnnjax.modules import SequenceModel
from rnnjax.tasks import make_task
from rnnjax.tasks import mnist_1d as m1d

pytest.importorskip("mnist1d")

# From the published mnist1d_data.pkl (the package's download): the first labels of
# each split, the first 8 values of the first training sequence, the last 8 of the
# last test sequence, and sums over the training inputs.
PUBLISHED = {
    "y": [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9, 4, 3, 4, 5, 1, 9, 0, 3, 4, 2, 6, 3],
    "y_test": [2, 6, 3, 9, 4, 3, 1, 9, 5, 2, 0, 7, 7, 1, 4, 6, 1, 4, 3, 9, 9, 7, 5, 0],
    "x0": [
        -0.3320056673693902, -0.4719103656557236, -0.778697076293495, -1.0097408265367047,
        -0.8823525654053074, 0.10393481264623418, 1.643284346437359, 1.6525071095153063,
    ],
    "x_test_last": [
        -0.5400119928423919, -0.5587724330587539, -0.39591055084416954, -0.09864609258520216,
        0.4472328851428726, 0.6598756470890784, 0.8777343497528006, 1.193151836835276,
    ],
    "x_sum": -51.78746787509559,
    "x_sq_sum": 159248.2538653486,
}  # fmt: skip


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (every socket connect fails, as does requests.get) and an empty cache
    folder of the test's own."""

    def refuse(*args, **kwargs):
        raise AssertionError("the MNIST-1D task tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import requests

    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.setenv("RNNJAX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def arrays():
    return m1d.generate(False)[0]


def test_generated_offline_equals_the_published_file(offline):
    np_state, py_state = np.random.get_state(), random.getstate()
    data, record = m1d.load(False)
    assert record["from"] == "generated"
    assert data["x"].shape == (4000, 40) and data["x_test"].shape == (1000, 40)
    assert data["y"].shape == (4000,) and data["y_test"].shape == (1000,)
    assert data["y"][:24].tolist() == PUBLISHED["y"]
    assert data["y_test"][:24].tolist() == PUBLISHED["y_test"]
    np.testing.assert_allclose(data["x"][0, :8], PUBLISHED["x0"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(data["x_test"][-1, -8:], PUBLISHED["x_test_last"], atol=1e-12)
    np.testing.assert_allclose(data["x"].sum(), PUBLISHED["x_sum"], rtol=0, atol=1e-8)
    np.testing.assert_allclose((data["x"] ** 2).sum(), PUBLISHED["x_sq_sum"], rtol=1e-12)
    # make_dataset seeds the global generators; the task puts them back.
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert random.getstate() == py_state
    assert record["args"]["seed"] == 42 and record["args"]["num_samples"] == 5000


def test_splits_are_balanced_and_disjoint(arrays):
    y_all = np.concatenate([arrays["y"], arrays["y_test"]])
    # The generator makes 500 of each digit, then shuffles and splits 80/20.
    assert np.bincount(y_all, minlength=10).tolist() == [500] * 10
    train_counts = np.bincount(arrays["y"], minlength=10)
    assert train_counts.min() >= 350 and train_counts.max() <= 450, train_counts
    # No test sequence appears in the training set (nor twice in its own split).
    train_rows = {row.tobytes() for row in arrays["x"]}
    assert len(train_rows) == 4000
    assert not any(row.tobytes() in train_rows for row in arrays["x_test"])
    # The whole dataset is z-scored once.
    x_all = np.concatenate([arrays["x"], arrays["x_test"]])
    np.testing.assert_allclose([x_all.mean(), x_all.std()], [0.0, 1.0], atol=1e-12)


def test_shuffled_variant_is_one_fixed_permutation_of_the_steps(arrays):
    shuffled = m1d.generate(True)[0]
    assert np.array_equal(shuffled["y"], arrays["y"])
    # Recover the order from the first sequence (its 40 values are distinct), then
    # check that the same order maps every sequence of both splits.
    first, first_s = arrays["x"][0], shuffled["x"][0]
    assert len(np.unique(first)) == 40
    order = np.array([int(np.flatnonzero(first == v)[0]) for v in first_s])
    assert sorted(order.tolist()) == list(range(40)) and not np.array_equal(order, np.arange(40))
    np.testing.assert_array_equal(shuffled["x"], arrays["x"][:, order])
    np.testing.assert_array_equal(shuffled["x_test"], arrays["x_test"][:, order])


def test_cache_is_read_back_and_a_bad_file_rebuilt(offline):
    first, record = m1d.load(False)
    files = list(offline.glob("mnist1d-*.npz"))
    assert record["from"] == "generated" and len(files) == 1
    again, record2 = m1d.load(False)
    assert record2["from"] == str(files[0]) and record2["sha256"] == record["sha256"]
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])
    # A file whose arrays no longer match their recorded digest is built again.
    with np.load(files[0]) as f:
        stored = {k: f[k] for k in f.files}
    stored["x"] = stored["x"] + 1.0
    np.savez(files[0], **stored)
    rebuilt, record3 = m1d.load(False)
    assert record3["from"] == "generated"
    np.testing.assert_array_equal(rebuilt["x"], first["x"])
    # The shuffled variant has a file of its own.
    m1d.load(True)
    assert len(list(offline.glob("mnist1d-*.npz"))) == 2


def test_task_batches(offline, arrays):
    task = make_task("mnist1d")
    assert (task.name, task.input_size, task.num_outputs, task.head) == ("mnist1d", 1, 10, "last")
    held = task.eval_set()
    assert held.inputs.shape == (1000, 40, 1) and held.lengths.tolist() == [40] * 1000
    np.testing.assert_allclose(held.inputs[..., 0], arrays["x_test"].astype(np.float32))
    batch = task.sample(jax.random.key(3), 17)
    assert batch.inputs.shape == (17, 40, 1) and batch.targets.shape == (17,)
    # Every drawn example is a training example with its own label.
    index = {row.astype(np.float32).tobytes(): y for row, y in zip(arrays["x"], arrays["y"])}
    for x, y in zip(np.asarray(batch.inputs[..., 0]), np.asarray(batch.targets)):
        assert index[x.tobytes()] == y
    assert task.info["train"] == 4000 and task.info["test"] == 1000
    assert make_task("mnist1d", shuffle_seq=True).name == "mnist1d_shuffled"
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        task.sample(jax.random.key(0), 0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_flatten_head_reads_every_step(bidirectional):
    """The readout on all T outputs, against NumPy on the layer's own outputs."""
    layer = rnnjax.make_layer("gru", 5, bidirectional=bidirectional)
    model = SequenceModel(layer, num_outputs=10, head="flatten")
    xs = jax.random.normal(jax.random.key(0), (3, 7, 2))
    params = model.init(jax.random.key(1), xs)["params"]
    w = np.asarray(params["head"]["readout"].w, np.float64)
    b = np.asarray(params["head"]["readout"].b, np.float64)
    assert w.shape == (7 * layer.output_size, 10)
    _, ys = layer.apply(params["rnn"]["layer"], xs)
    want = np.asarray(ys, np.float64).reshape(3, -1) @ w + b
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, xs)), want, atol=1e-5)


def test_nnx_names_the_flatten_head_as_linen_only():
    from flax import nnx

    from rnnjax.nnx import SequenceModel as NNXModel

    with pytest.raises(ValueError, match="'flatten' head is not here yet"):
        NNXModel(rnnjax.make_layer("gru", 4), 10, input_size=1, head="flatten", rngs=nnx.Rngs(0))


def test_notebook_order_is_the_readme_gru_s_shuffle(offline, arrays):
    # The notebook: np.random.seed(42); shuffled_order = np.random.permutation(40).
    state = np.random.get_state()
    np.random.seed(42)
    want = np.random.permutation(40)
    np.random.set_state(state)
    task = make_task("mnist1d", shuffle_seq=True, shuffle_order="notebook")
    assert task.info["order"] == want.tolist()
    np.testing.assert_allclose(
        task.eval_set().inputs[..., 0], arrays["x_test"][:, want].astype(np.float32)
    )
    with pytest.raises(ValueError, match="needs shuffle_seq=True"):
        make_task("mnist1d", shuffle_order="notebook")
    with pytest.raises(ValueError, match=r"shuffle_order must be one of \('package', 'notebook'\)"):
        make_task("mnist1d", shuffle_seq=True, shuffle_order="mine")


def _train_script():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "train.py"
    spec = importlib.util.spec_from_file_location("train_script_m1d", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_script_m1d"] = module
    spec.loader.exec_module(module)
    return module


def test_train_writes_per_seed_csv_and_schema(offline, tmp_path):
    import csv
    import json

    train = _train_script()
    argv = ["--task", "mnist1d", "--cell", "gru", "--bidirectional", "--readout", "all",
            "--hidden_size", "3", "--steps", "3", "--seeds", "2", "--batch_size", "8",
            "--eval_every", "0", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert train.main(argv) == 0
    run = tmp_path / "mnist1d-gru-bi-readout_all"
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert summary["schema_version"] == config["schema_version"] == 2
    # The paper's GRU shape at H = 3: 2 directions x 3 units x 40 steps into 10 classes.
    gru = 2 * (3 * (1 * 3 + 3 * 3 + 2 * 3))  # W_x, W_h and the two biases of each gate
    assert summary["params_per_seed"] == gru + 2 * 3 * 40 * 10 + 10
    with open(run / "final.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seed"]) for r in rows] == summary["seeds"] == [0, 1]
    for key in ("accuracy", "loss"):
        assert [float(r[key]) for r in rows] == summary["final"][key]["per_seed"]
    assert "grad_decay" not in rows[0]  # measured only where the readout is the last state
    final = summary["final"]["accuracy"]
    assert final["n"] == 2 and final["ci_low"] <= final["mean"] <= final["ci_high"]
    assert config["task"]["test"] == 1000 and config["task"]["shuffle_seq"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "adding", "--shuffle_seq"], "--shuffle_seq does not apply to --task adding"),
        (["--task", "adding", "--readout", "all"], "--readout does not apply to --task adding"),
        (["--task", "mnist1d", "--readout", "middle"], "--readout"),
        (["--task", "mnist1d", "--shuffle_order", "notebook"], "needs shuffle_seq=True"),
    ],
)
def test_usage_errors(argv, message, tmp_path, capsys):
    train = _train_script()
    with pytest.raises(SystemExit) as exit_info:
        train.main([*argv, "--steps", "1", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written before the error


def test_committed_table_regenerates_from_committed_runs():
    """results/mnist1d/README.md is what the report makes of the committed run outputs."""
    from pathlib import Path

    import mnist1d_report

    folder = Path(__file__).resolve().parents[1] / "results" / "mnist1d"
    runs = [p for p in (folder / "runs").iterdir() if p.is_dir()]
    assert len(runs) >= len(rnnjax.cells.names()) + 2
    text = mnist1d_report.report(folder / "runs", folder / "peer")
    assert text == (folder / "README.md").read_text()
    # Every run folder holds its raw per-seed numbers, and the table covers the catalogue.
    assert all((p / "final.csv").exists() for p in runs)
    for name in rnnjax.cells.names():
        assert f"| MNIST-1D | {name} | one direction, last state |" in text, name
