"""Each task generator against its definition (REFERENCE.md section 2)."""

import gzip
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.tasks import make_task
from rnnjax.tasks.base import masked_xent


@pytest.mark.parametrize("T", [10, 101])
def test_adding_markers_values_and_target(T):
    batch = make_task("adding", seq_len=T).sample(jax.random.key(0), 500)
    values, markers = np.asarray(batch.inputs[..., 0]), np.asarray(batch.inputs[..., 1])
    assert batch.inputs.shape == (500, T, 2) and batch.targets.shape == (500, 1)
    assert values.min() >= 0.0 and values.max() <= 1.0
    np.testing.assert_array_equal(markers.sum(1), 2)
    np.testing.assert_array_equal(markers[:, : T // 2].sum(1), 1)
    np.testing.assert_array_equal(markers[:, T // 2 :].sum(1), 1)
    # Second route: the sum of the values at the two marked positions, by index.
    a, b = markers.argmax(1), T - 1 - markers[:, ::-1].argmax(1)
    want = values[np.arange(500), a] + values[np.arange(500), b]
    np.testing.assert_allclose(batch.targets[:, 0], want, rtol=1e-6)
    np.testing.assert_array_equal(batch.lengths, T)


def test_adding_baseline_is_one_sixth():
    task = make_task("adding", seq_len=20)
    batch = task.sample(jax.random.key(1), 40000)
    mse = float(task.loss(jnp.ones((40000, 1)), batch))
    # Var(X1 + X2) = 2/12; standard error of the mean of (S-1)^2 over 40k is ~0.001.
    assert abs(mse - 1 / 6) < 0.005 and abs(task.baseline - 1 / 6) < 1e-12


@pytest.mark.parametrize("T", [5, 50])
def test_copy_layout(T):
    batch = make_task("copy", delay=T).sample(jax.random.key(2), 64)
    x, y = np.asarray(batch.inputs), np.asarray(batch.targets)
    assert x.shape == y.shape == (64, T + 20)
    assert (x[:, :10] >= 1).all() and (x[:, :10] <= 8).all()
    np.testing.assert_array_equal(x[:, 10 : T + 9], 0)
    np.testing.assert_array_equal(x[:, T + 9], 9)
    np.testing.assert_array_equal(x[:, T + 10 :], 0)
    np.testing.assert_array_equal(y[:, : T + 10], 0)
    np.testing.assert_array_equal(y[:, T + 10 :], x[:, :10])


@pytest.mark.parametrize("T", [10, 50, 100])
def test_copy_memoryless_baseline(T):
    """Fit the best memoryless predictor (the per-position target frequencies) on one
    sample, score it on another: it matches 10 ln 8 / (T + 20)."""
    task = make_task("copy", delay=T)
    fit = np.asarray(task.sample(jax.random.key(3), 4000).targets)
    freq = np.stack([(fit == v).mean(0) for v in range(10)], -1)  # [T+20, 10]
    logits = jnp.log(jnp.asarray(np.maximum(freq, 1e-12)))
    test = task.sample(jax.random.key(4), 4000)
    xent = float(task.loss(jnp.broadcast_to(logits, (4000, T + 20, 10)), test))
    want = 10 * math.log(8) / (T + 20)
    assert abs(task.baseline - want) < 1e-12
    assert abs(xent - want) < 0.01 * want


def test_digits_shapes_labels_and_split():
    task = make_task("digits")
    batch, test = task.sample(jax.random.key(5), 32), task.eval_set()
    assert batch.inputs.shape == (32, 64, 1) and test.inputs.shape == (360, 64, 1)
    assert task.info["train"] + task.info["test"] == 1797
    for b in (batch, test):
        assert 0.0 <= float(b.inputs.min()) and float(b.inputs.max()) <= 1.0
        assert set(np.unique(b.targets)) <= set(range(10))
    assert len(np.unique(test.targets)) == 10
    # Permuted: the same images with one fixed reordering of the 64 pixels.
    perm = make_task("digits", permuted=True).eval_set().inputs[..., 0]
    plain = np.asarray(test.inputs[..., 0])
    np.testing.assert_array_equal(np.sort(perm, 1), np.sort(plain, 1))
    assert not np.array_equal(perm, plain)
    order = np.asarray(jax.random.permutation(jax.random.key(0), 64))
    np.testing.assert_array_equal(perm, plain[:, order])


def _fake_mnist(rng, n):
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(
        np.uint8
    )


def test_mnist_from_npz_and_idx(tmp_path):
    rng = np.random.default_rng(0)
    (xtr, ytr), (xte, yte) = _fake_mnist(rng, 20), _fake_mnist(rng, 6)
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    idx = tmp_path / "idx"
    idx.mkdir()

    def write_idx(name, arr):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
        with gzip.open(idx / (name + ".gz"), "wb") as f:
            f.write(header + arr.tobytes())

    write_idx("train-images-idx3-ubyte", xtr)
    write_idx("train-labels-idx1-ubyte", ytr)
    write_idx("t10k-images-idx3-ubyte", xte)
    write_idx("t10k-labels-idx1-ubyte", yte)
    for path in (tmp_path / "mnist.npz", idx):
        task = make_task("digits", path=str(path))
        test = task.eval_set()
        assert test.inputs.shape == (6, 784, 1) and task.info["seq_len"] == 784
        np.testing.assert_allclose(test.inputs[..., 0], xte.reshape(6, -1) / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(test.targets, yte)
    with pytest.raises(ValueError, match="does not exist"):
        make_task("digits", path=str(tmp_path / "nope.npz"))


def test_charlm_windows_shift_by_one(tmp_path):
    text = "".join(chr(97 + (i * 7) % 26) for i in range(5000))
    (tmp_path / "t.txt").write_text(text)
    task = make_task("charlm", seq_len=16, path=str(tmp_path / "t.txt"))
    chars = task.info["chars"]
    batch = task.sample(jax.random.key(6), 8)
    for x, y in zip(np.asarray(batch.inputs), np.asarray(batch.targets)):
        s = "".join(chars[i] for i in x) + chars[y[-1]]
        assert s in text[:4500] and "".join(chars[i] for i in y) == s[1:]
    val = task.eval_set()
    first = "".join(chars[i] for i in val.inputs[0])
    assert first == text[4500:4516]
    uniform = jnp.zeros(val.targets.shape + (len(chars),))
    np.testing.assert_allclose(task.metrics(uniform, val)["bpc"], math.log2(len(chars)), rtol=1e-5)


def test_charlm_needs_one_window_of_training_text(tmp_path):
    """T + 1 training characters hold one window (inputs and the targets one on);
    fewer cannot. The guard refused T + 1 too."""
    (tmp_path / "t.txt").write_text("abcdefghijkl")  # 12 characters, split at 6
    task = make_task("charlm", seq_len=5, path=str(tmp_path / "t.txt"), val_fraction=0.5)
    batch = task.sample(jax.random.key(0), 3)
    chars = task.info["chars"]
    assert {"".join(chars[i] for i in x) for x in np.asarray(batch.inputs)} == {"abcde"}
    assert {"".join(chars[i] for i in y) for y in np.asarray(batch.targets)} == {"bcdef"}
    with pytest.raises(ValueError, match="too short for seq_len=6"):
        make_task("charlm", seq_len=6, path=str(tmp_path / "t.txt"), val_fraction=0.5)


def test_default_corpus_is_pydoc_topics():
    task = make_task("charlm", seq_len=50)
    assert task.info["source"] == "pydoc_data.topics" and task.info["characters"] > 100_000


def test_samples_are_pure_functions_of_the_key():
    for name, kw in [("adding", {"seq_len": 9}), ("copy", {"delay": 4}), ("digits", {})]:
        task = make_task(name, **kw)
        a, b = task.sample(jax.random.key(7), 4), task.sample(jax.random.key(7), 4)
        c = task.sample(jax.random.key(8), 4)
        assert all(np.array_equal(u, v) for u, v in zip(a, b))
        assert not np.array_equal(a.inputs, c.inputs)


@pytest.mark.parametrize(
    "name,kw,maker",
    [("adding", {"seq_len": 13}, "_adding_batch"), ("copy", {"delay": 7}, "_copy_batch")],
)
def test_tasks_of_the_same_sizes_share_one_compiled_sampler(name, kw, maker):
    # An experiment builds the same task many times; each build used to compile its
    # own sampler. The second task of the same sizes must add no compilation.
    from rnnjax.tasks import synthetic

    fn = getattr(synthetic, maker)
    first = make_task(name, **kw).sample(jax.random.key(3), 6)
    size = fn._cache_size()
    second = make_task(name, **kw).sample(jax.random.key(3), 6)
    assert fn._cache_size() == size
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    make_task(name, **kw).sample(jax.random.key(3), 7)  # a new batch size compiles anew
    assert fn._cache_size() == size + 1


def test_masked_xent_ignores_masked_steps():
    logits = jax.random.normal(jax.random.key(9), (2, 3, 4))
    targets = jnp.array([[0, 1, 2], [3, 2, 1]])
    mask = jnp.array([[True, True, False], [True, False, False]])
    full = -jax.nn.log_softmax(logits)
    want = (full[0, 0, 0] + full[0, 1, 1] + full[1, 0, 3]) / 3
    np.testing.assert_allclose(masked_xent(logits, targets, mask), want, rtol=1e-6)


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("adding", {"seq_len": -3}, "seq_len must be an int >= 2; got -3"),
        ("copy", {"delay": 0}, "delay must be an int >= 1; got 0"),
        ("copy", {"alphabet": 1}, "alphabet must be an int >= 2"),
        ("charlm", {"seq_len": 10, "val_fraction": 1.5}, r"val_fraction must lie in \(0, 1\)"),
        ("nope", {}, r"task must be one of \['adding', 'charlm', 'copy', 'digits', 'hello', 'mn"),
        ("adding", {"length": 5}, "bad options for task 'adding'"),
    ],
)
def test_bad_task_options(name, kw, match):
    with pytest.raises(ValueError, match=match):
        make_task(name, **kw)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be an int >= 1; got 0"):
        make_task("adding", seq_len=5).sample(jax.random.key(0), 0)


def test_copy_accuracy_counts_the_copied_symbols_of_every_sequence():
    task = make_task("copy", delay=5)
    batch = task.sample(jax.random.key(10), 16)
    perfect = jax.nn.one_hot(batch.targets, 10) * 10.0
    assert float(task.metrics(perfect, batch)["accuracy"]) == 1.0
    # Right everywhere but the symbols of half the batch: accuracy exactly 1/2.
    wrong = perfect.at[:8, -10:].set(jax.nn.one_hot((batch.targets[:8, -10:] % 8) + 1, 10) * 10.0)
    np.testing.assert_allclose(task.metrics(wrong, batch)["accuracy"], 0.5)
    blanks_only = jax.nn.one_hot(jnp.zeros_like(batch.targets), 10)
    assert float(task.metrics(blanks_only, batch)["accuracy"]) == 0.0


def test_check_batch_refuses_lengths_and_token_ids_out_of_range():
    """The concrete-data check the compiled step leaves out (README, "Checks")."""
    from rnnjax.tasks import check_batch

    task = make_task("copy", delay=6, num_symbols=3, eval_size=4)
    batch = task.sample(jax.random.key(0), 3)
    assert check_batch(task, batch) is batch
    steps = batch.inputs.shape[1]
    bad = batch._replace(lengths=batch.lengths.at[1].set(steps + 1))
    with pytest.raises(ValueError, match=rf"batch.lengths must lie in \[0, {steps + 1}\)"):
        check_batch(task, bad)
    bad = batch._replace(inputs=batch.inputs.at[0, 0].set(task.vocab_size))
    with pytest.raises(ValueError, match=r"batch.inputs must hold token ids in \[0, \d+\)"):
        check_batch(task, bad)
