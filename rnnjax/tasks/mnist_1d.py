"""MNIST-1D (Greydanus 2020; Greydanus & Kobak, ICML 2024), generated locally.

The data come from the ``mnist1d`` package's own generator, ``make_dataset`` with the
paper's ``get_dataset_args()`` (seed 42): 4,000 training and 1,000 test sequences of
40 steps, one value per step, 10 classes. Nothing is downloaded: the package's
``get_dataset`` would fetch a pickle from GitHub, so it is never called
(``../shared/CELLS.md`` section 12 checked that the generator's output equals that
pickle to 8.9e-16). The first build is written to a cache folder and read from there
afterwards, checked against the SHA-256 of its arrays.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import random
from pathlib import Path

import numpy as np

from rnnjax.tasks.base import Task
from rnnjax.tasks.datasets import sequence_classification

# The generator's arguments that define the data (get_dataset_args() minus its url).
DATA_KEYS = (
    "num_samples", "train_split", "template_len", "padding", "scale_coeff",
    "max_translation", "corr_noise_scale", "iid_noise_scale", "shear_scale",
    "shuffle_seq", "final_seq_length", "seed",
)  # fmt: skip
CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$RNNJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnjax``, else ``~/.cache/rnnjax``."""
    if os.environ.get("RNNJAX_CACHE_DIR"):
        return Path(os.environ["RNNJAX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rnnjax"


def _import_mnist1d():
    try:
        import mnist1d
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise ImportError(
            "the mnist1d task generates its data with the mnist1d package; install it "
            "with `pip install 'rnnjax[experiments]'` (or `pip install mnist1d`)."
        ) from e
    try:
        version = importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError:  # imported from a source tree
        version = getattr(mnist1d, "__version__", "unknown")
    return version, get_dataset_args, make_dataset


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def generate(shuffle_seq: bool = False) -> tuple[dict, dict]:
    """``(arrays, args)``: the package's ``make_dataset(get_dataset_args())`` with
    ``shuffle_seq`` set, as float64 ``x``/``x_test`` and int64 ``y``/``y_test``, and the
    generator arguments that made them.

    ``make_dataset`` seeds Python's and NumPy's global generators (``set_seed(42)``);
    their states are restored afterwards, so building the task leaves a caller's
    ``np.random`` as it was."""
    _, get_dataset_args, make_dataset = _import_mnist1d()
    args = get_dataset_args()
    args.shuffle_seq = bool(shuffle_seq)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}
    return arrays, {k: getattr(args, k) for k in DATA_KEYS}


def load(shuffle_seq: bool = False, *, cache: bool = True) -> tuple[dict, dict]:
    """``(arrays, record)``, from the cache when a valid copy is there, else generated
    (and cached when ``cache``). ``record`` holds the generator arguments, the package
    version, the arrays' SHA-256 and where they came from."""
    version, get_dataset_args, _ = _import_mnist1d()
    args = get_dataset_args()
    args.shuffle_seq = bool(shuffle_seq)
    wanted = {k: getattr(args, k) for k in DATA_KEYS}
    tag = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-v{CACHE_VERSION}-{tag}.npz"
    if cache and path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
                meta = json.loads(str(f["meta"]))
            if meta["args"] == wanted and meta["sha256"] == _digest(arrays):
                return arrays, {**meta, "from": str(path)}
        except (OSError, KeyError, ValueError):
            pass  # unreadable or stale: build it again below
    arrays, made_with = generate(shuffle_seq)
    meta = {"args": made_with, "mnist1d": version, "sha256": _digest(arrays)}
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays, meta=np.array(json.dumps(meta)))
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new
    return arrays, {**meta, "from": "generated"}


SHUFFLE_ORDERS = ("package", "notebook")


def notebook_order(num_steps: int = 40) -> np.ndarray:
    """The order the MNIST-1D notebook shuffles with (``mnist1d-classification.ipynb``:
    ``np.random.seed(42)`` then ``np.random.permutation(40)``, applied to the unshuffled
    data), from a generator of its own: the global one is left alone."""
    return np.random.RandomState(42).permutation(num_steps)


def mnist1d(
    *, shuffle_seq: bool = False, shuffle_order: str = "package", cache: bool = True
) -> Task:
    """MNIST-1D as a sequence task: ``[B, 40, 1]`` float inputs, a class per sequence.

    Args:
      shuffle_seq: the package's spatially shuffled variant (``shuffle_seq=True``: one
        fixed permutation of the 40 positions, drawn by the generator after the data,
        so the examples and labels are the same as without it). The analogue of
        permuted MNIST: a model that relies on local structure loses it. The README's
        57% for the GRU used another fixed permutation (``np.random.seed(42)`` then
        ``permutation(40)`` in its notebook): the same kind of task, not the same
        order.
      shuffle_order: with ``shuffle_seq``, whose fixed order: ``"package"`` (the
        generator's, above) or ``"notebook"`` (:func:`notebook_order`, the one behind
        the README's GRU number).
      cache: keep the built arrays in :func:`cache_dir` and read them back next time.

    A training batch is drawn uniformly with replacement from the 4,000 training
    sequences by the key (the paper's notebook walks the training set in order,
    ``batch_size`` at a time); the held-out set is the 1,000 test sequences. Values are
    the generator's (the whole dataset z-scored), in float32. Metrics: cross-entropy
    and accuracy; baseline ``ln 10``.
    """
    if shuffle_order not in SHUFFLE_ORDERS:
        raise ValueError(f"shuffle_order must be one of {SHUFFLE_ORDERS}; got {shuffle_order!r}.")
    if shuffle_order != "package" and not shuffle_seq:
        raise ValueError(
            f"shuffle_order={shuffle_order!r} picks the order of the shuffled variant: it "
            "needs shuffle_seq=True."
        )
    notebook = shuffle_seq and shuffle_order == "notebook"
    arrays, record = load(shuffle_seq and not notebook, cache=cache)
    order = None
    if notebook:
        order = notebook_order(arrays["x"].shape[1])
        arrays = {**arrays, "x": arrays["x"][:, order], "x_test": arrays["x_test"][:, order]}
    return sequence_classification(
        "mnist1d_shuffled" if shuffle_seq else "mnist1d",
        arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"],
        info={
            "source": f"mnist1d {record['mnist1d']} make_dataset(get_dataset_args())",
            "generator_args": record["args"],
            "sha256": record["sha256"],
            "shuffle_seq": bool(shuffle_seq),
            **({"shuffle_order": shuffle_order} if shuffle_seq else {}),
            **({"order": order.tolist()} if order is not None else {}),
        },
    )  # fmt: skip
