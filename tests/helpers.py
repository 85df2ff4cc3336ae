"""Shared test helpers."""

import functools

import jax
import numpy as np
import reference

import rnnjax


def randomize(params, key, scale=0.5):
    """Replace every leaf with random normal values (biases included): init leaves
    zero biases, which would hide an indexing bug in the bias blocks."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    new = [scale * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, new)


# name -> (factory of the rnnjax cell, NumPy reference step (params, carry, x))
CELLS = {
    "elman_tanh": (
        lambda H, **kw: rnnjax.elman(H, activation="tanh", **kw),
        functools.partial(reference.elman_step, activation="tanh"),
    ),
    "elman_relu": (
        lambda H, **kw: rnnjax.elman(H, activation="relu", **kw),
        functools.partial(reference.elman_step, activation="relu"),
    ),
    "lstm": (lambda H, **kw: rnnjax.lstm(H, **kw), reference.lstm_step),
    "gru": (lambda H, **kw: rnnjax.gru(H, **kw), reference.gru_step),
    "gru_reset_before": (
        lambda H, **kw: rnnjax.gru(H, reset_after=False, **kw),
        functools.partial(reference.gru_step, reset_after=False),
    ),
}


def to_np_carry(carry):
    if isinstance(carry, rnnjax.LSTMCarry):
        return (np.asarray(carry.h, np.float64), np.asarray(carry.c, np.float64))
    return np.asarray(carry, np.float64)


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
