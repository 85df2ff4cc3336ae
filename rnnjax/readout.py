"""The output layer of a recurrent network: ``y_t = h_t W_y + b_y``, then softmax."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells.base import Array, Initializer, check_input, check_positive_int


class ReadoutParams(NamedTuple):
    w: Array  # [H, V]
    b: Array  # [V]


def readout_init(
    key: Array,
    hidden_size: int,
    output_size: int,
    *,
    kernel_init: Initializer = jax.nn.initializers.lecun_normal(),
    bias_init: Initializer = jax.nn.initializers.zeros,
    param_dtype=jnp.float32,
) -> ReadoutParams:
    """Params of a linear readout from ``H`` hidden units to ``V`` outputs."""
    check_positive_int("hidden_size", hidden_size)
    check_positive_int("output_size", output_size)
    k_w, k_b = jax.random.split(key)
    return ReadoutParams(
        w=kernel_init(k_w, (hidden_size, output_size), param_dtype),
        b=bias_init(k_b, (output_size,), param_dtype),
    )


def readout(params: ReadoutParams, h: Array) -> Array:
    """Logits ``y = h W_y + b_y``, ``[..., H] -> [..., V]``; ``jax.nn.softmax(y)`` gives
    the probabilities (e.g. of the next symbol)."""
    check_input(h, params.w.shape[0], "h")
    return h @ params.w + params.b
