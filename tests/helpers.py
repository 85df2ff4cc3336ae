"""Shared test helpers."""

import functools

import jax
import numpy as np

import rnnjax
from rnnjax.cells.gru import reference as gru_reference


def randomize(params, key, scale=0.5):
    """Replace every leaf with random normal values (biases included): init leaves
    zero biases, which would hide an indexing bug in the bias blocks."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    new = [scale * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, new)


def numpy_step(entry):
    """The catalogue entry's float64 reference step in NumPy: ``step(params, carry, x)``
    with every leaf converted to float64."""

    def step(params, carry, x):
        f64 = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float64), t)  # noqa: E731
        return entry.reference(np, f64(params), f64(carry), np.asarray(x, np.float64))

    return step


# name -> (factory of the rnnjax cell, float64 NumPy reference step (params, carry, x)):
# every catalogue cell, and the GRU in Cho et al.'s original form (an option, not a
# catalogue entry).
CELLS = {e.name: (e.make, numpy_step(e)) for e in rnnjax.cells.catalogue.entries()}
CELLS["gru_reset_before"] = (
    lambda H, **kw: rnnjax.gru(H, reset_after=False, **kw),
    numpy_step(
        rnnjax.cells.get("gru")._replace(
            reference=functools.partial(gru_reference, reset_after=False)
        )
    ),
)


def to_np_carry(carry):
    """A carry as float64 NumPy leaves, in the same pytree structure."""
    return jax.tree.map(lambda a: np.asarray(a, np.float64), carry)


def random_carry(cell, batch_shape, key, dtype=np.float32):
    zeros = cell.initial_carry(batch_shape, dtype=dtype)
    leaves, treedef = jax.tree.flatten(zeros)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [jax.random.normal(k, z.shape, z.dtype) for k, z in zip(keys, leaves)]
    )


def keep_freed_memory_calls(module, argv, monkeypatch) -> list[str]:
    """What an experiment script's ``main(argv)`` calls of ``common.keep_freed_memory``
    and ``common.join_processes`` (JAX's first call), in order, stopping at the latter.
    Recorded, not run: ``mallopt`` would change the whole test process."""
    calls = []

    class Stop(Exception):
        pass

    def join():
        calls.append("join")
        raise Stop

    monkeypatch.setattr(module.common, "keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(module.common, "join_processes", join)
    try:
        module.main(argv)
    except Stop:
        return calls
    raise AssertionError("main returned without calling common.join_processes")
