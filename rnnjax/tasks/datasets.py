"""Tasks on data that ships inside a package (or a user's local files): no downloads."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.tasks.base import (
    LN2,
    Batch,
    Task,
    check_positive,
    masked_xent,
    step_mask,
    xent_loss,
    xent_metrics,
)

SPLIT_KEY = 0  # the fixed train/test shuffle of load_digits


def sequential_digits(
    *, permuted: bool = False, permutation_seed: int = 0, path: str | None = None
) -> Task:
    """Images read pixel by pixel, one grey value per step; classify at the last step.

    Default: scikit-learn's ``load_digits`` (1797 images of 8x8, values 0-16 scaled to
    [0, 1]; T = 64), shuffled once with a fixed key and split 80/20 into train / test.
    With ``path``: a local MNIST, either a Keras-style ``.npz`` (``x_train``,
    ``y_train``, ``x_test``, ``y_test``) or a folder of the four IDX files
    (``train-images-idx3-ubyte[.gz]``, ...), values 0-255 scaled to [0, 1]; T = 784:
    sequential MNIST. ``permuted=True`` applies one fixed random permutation (from
    ``permutation_seed``) to the pixel order of every image: permuted digits / MNIST.
    """
    if path is None:
        x_train, y_train, x_test, y_test, source = _load_digits()
    else:
        x_train, y_train, x_test, y_test = _load_mnist(Path(path))
        source = f"MNIST from {path}"
    if permuted:
        steps = x_train.shape[1]
        perm = np.asarray(jax.random.permutation(jax.random.key(permutation_seed), steps))
        x_train, x_test = x_train[:, perm], x_test[:, perm]
    return sequence_classification(
        "digits_permuted" if permuted else "digits",
        x_train, y_train, x_test, y_test,
        info={"source": source, "permuted": permuted},
    )  # fmt: skip


def sequence_classification(
    name: str, x_train, y_train, x_test, y_test, *, num_classes: int = 10, info: dict
) -> Task:
    """A task over fixed arrays: one float value per step (``[N, T]`` inputs), a class
    per sequence read at the last step. Training batches are drawn uniformly with
    replacement by the key; the held-out set is the whole test split. ``info`` gets
    ``seq_len``, ``train`` and ``test`` (the sizes) added."""
    x_train, y_train = jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train, jnp.int32)
    x_test, y_test = jnp.asarray(x_test, jnp.float32), jnp.asarray(y_test, jnp.int32)
    n_train, num_steps = x_train.shape

    def to_batch(x, y):
        return Batch(x[..., None], y, jnp.full(y.shape, num_steps, jnp.int32))

    def sample(key, batch_size: int) -> Batch:
        check_positive("batch_size", batch_size)
        idx = jax.random.randint(key, (batch_size,), 0, n_train)
        return to_batch(x_train[idx], y_train[idx])

    return Task(
        name=name,
        sample=sample,
        eval_set=lambda: to_batch(x_test, y_test),
        input_size=1,
        vocab_size=None,
        num_outputs=num_classes,
        head="last",
        loss=xent_loss,
        metrics=xent_metrics,
        baseline=float(np.log(num_classes)),
        info={
            **info,
            "seq_len": int(num_steps),
            "train": int(n_train),
            "test": int(x_test.shape[0]),
        },
    )


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "the digits task reads scikit-learn's bundled 8x8 digits; install it with "
            "`pip install 'rnnjax[experiments]'` (or `pip install scikit-learn`)."
        ) from e

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
    order = np.asarray(jax.random.permutation(jax.random.key(SPLIT_KEY), x.shape[0]))
    x, y = x[order], y[order]
    n_train = int(0.8 * x.shape[0])
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], "sklearn load_digits (8x8)"


def _load_mnist(path: Path):
    if not path.exists():
        raise ValueError(
            f"path must be a local MNIST .npz file or IDX folder; {path} does not exist."
        )
    if path.is_file():
        with np.load(path) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise ValueError(
                    f"{path} must hold x_train, y_train, x_test, y_test; missing {sorted(missing)}."
                )
            arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    else:
        names = [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ]
        arrays = [_read_idx(path, name) for name in names]
    x_train, y_train, x_test, y_test = arrays
    flat = lambda x: (x.reshape(x.shape[0], -1) / 255.0).astype(np.float32)  # noqa: E731
    return flat(x_train), y_train.astype(np.int32), flat(x_test), y_test.astype(np.int32)


def _read_idx(folder: Path, name: str) -> np.ndarray:
    for candidate in (folder / name, folder / (name + ".gz")):
        if candidate.exists():
            opener = gzip.open if candidate.suffix == ".gz" else open
            with opener(candidate, "rb") as f:
                raw = f.read()
            ndim = raw[3]
            dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    raise ValueError(f"IDX file {name}[.gz] not found in {folder}.")


def default_corpus() -> str:
    """The standard library's ``pydoc_data.topics``: about 465k characters every Python has."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def char_lm(
    seq_len: int = 100,
    *,
    path: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    eval_size: int = 256,
) -> Task:
    """Character-level language modelling on a text file (default: ``pydoc_data.topics``).

    The vocabulary is the set of characters of the whole text; the first
    ``1 - val_fraction`` of the text trains, the rest validates (a contiguous split, so
    no training window overlaps a validation one). A training batch is random windows:
    inputs ``text[o : o + T]``, targets ``text[o + 1 : o + T + 1]``, with ``o`` uniform
    over ``[0, max(split - T - 1, 1))`` for a training part of ``split`` characters. (The
    last window, at ``split - T - 1``, is not drawn: an off-by-one kept so that the
    published runs draw the same batches; with the default corpus it is one window in
    about 420,000.) The validation set
    is the first ``eval_size`` non-overlapping windows of the validation part. Metric:
    bits per character, ``xent / ln 2``. Baseline: ``ln V`` nats (uniform guessing).
    """
    T = check_positive("seq_len", seq_len)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1); got {val_fraction!r}.")
    text = default_corpus() if path is None else Path(path).read_text(encoding="utf-8")
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = np.array([lookup[c] for c in text], np.int32)
    split = int(len(ids) * (1.0 - val_fraction))
    train, val = jnp.asarray(ids[:split]), ids[split:]
    if split < T + 1 or len(val) < T + 1:  # one window needs T + 1 characters
        raise ValueError(f"text of {len(ids)} characters is too short for seq_len={T}.")
    windows = min(eval_size, (len(val) - 1) // T)
    val_in = val[: windows * T].reshape(windows, T)
    val_out = val[1 : windows * T + 1].reshape(windows, T)
    val_batch = Batch(jnp.asarray(val_in), jnp.asarray(val_out), jnp.full((windows,), T, jnp.int32))

    def sample(key, batch_size: int) -> Batch:
        check_positive("batch_size", batch_size)
        starts = jax.random.randint(key, (batch_size,), 0, split - T - 1)
        take = lambda s: jax.lax.dynamic_slice(train, (s,), (T + 1,))  # noqa: E731
        window = jax.vmap(take)(starts)
        return Batch(window[:, :-1], window[:, 1:], jnp.full((batch_size,), T, jnp.int32))

    def loss(outputs, batch):
        return masked_xent(outputs, batch.targets, step_mask(batch.lengths, T))

    def metrics(outputs, batch):
        xent = loss(outputs, batch)
        return {"loss": xent, "bpc": xent / LN2}

    return Task(
        name="charlm",
        sample=sample,
        eval_set=lambda: val_batch,
        input_size=None,
        vocab_size=len(chars),
        num_outputs=len(chars),
        head="each",
        loss=loss,
        metrics=metrics,
        baseline=float(np.log(len(chars))),
        info={
            "source": "pydoc_data.topics" if path is None else str(path),
            "characters": len(ids),
            "vocab": len(chars),
            "chars": "".join(chars),
            "seq_len": T,
            "val_windows": windows,
        },
    )
