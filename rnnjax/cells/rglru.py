"""The Real-Gated Linear Recurrent Unit, the recurrence of Griffin and Hawk (De et al.
2024), as google-deepmind/recurrentgemma writes it.

Read against the authors' code (``recurrentgemma/jax/layers.py``: ``RGLRU``,
``rnn_param_init``, ``sqrt_bound_derivative``, ``BlockDiagonalLinear``; commit 2a3dde4)
and ``../shared/CELLS.md`` section 9. Where ours differs:

- The cell maps the input to the recurrence's width itself (``x' = x W_in + b_in``, the
  block's ``linear_x``); the block's temporal ``Conv1D`` (width 4), its GeLU branch and
  output projection are not part of the cell.
- The code resets the state at a segment's first position (``a = 0`` and no
  ``sqrt(1 - a^2)`` factor there); the driver has no segments and starts from its
  carry, so every step here has the normalisation, the first included.
- The gates are block-diagonal with ``num_blocks`` blocks, as the code's
  ``num_heads``; the default 1 is one dense block.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells.base import (
    Array,
    Cell,
    Entry,
    LinearRecurrence,
    check_input,
    check_positive_int,
    compute_dtype,
    resolve_batch_shape,
)


class RGLRUParams(NamedTuple):
    w_in: Array  # [I, H]: the input to the recurrence's width
    b_in: Array  # [H]
    w_a: Array  # [K, H/K, H/K]: the recurrence gate, K diagonal blocks
    b_a: Array  # [H]
    w_i: Array  # [K, H/K, H/K]: the input gate
    b_i: Array  # [H]
    a_param: Array  # [H]: a = sigmoid(-a_param) = exp(-softplus(a_param))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def sqrt_bound_derivative(x: Array, max_gradient: float) -> Array:
    """``sqrt(x)`` whose derivative is clipped at ``max_gradient`` (the input is read as
    at least ``1 / (4 max_gradient^2)`` in the backward pass), as the authors' code, so
    that ``sqrt(1 - a^2)`` near ``a = 1`` gives no inf."""
    return jnp.sqrt(x)


def _sqrt_fwd(x, max_gradient):
    return jnp.sqrt(x), x


def _sqrt_bwd(max_gradient, x, g):
    return (g * 0.5 / jnp.sqrt(jnp.maximum(x, 1.0 / (4.0 * max_gradient**2))),)


sqrt_bound_derivative.defvjp(_sqrt_fwd, _sqrt_bwd)


def _block_diagonal(x: Array, w: Array, b: Array) -> Array:
    """``x [..., K*B] -> [..., K*B]`` through ``K`` diagonal blocks ``w [K, B, B]``."""
    k, width, _ = w.shape
    blocks = x.reshape(x.shape[:-1] + (k, width))
    return jnp.einsum("...kb,kbc->...kc", blocks, w).reshape(x.shape) + b


def rg_lru(
    hidden_size: int,
    *,
    num_blocks: int = 1,
    c: float = 8.0,
    min_rad: float = 0.9,
    max_rad: float = 0.999,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """RG-LRU: a diagonal recurrence gated by the input.

    Equations (``x`` the input)::

        x' = x W_in + b_in
        r = sigmoid(x' W_a + b_a)          i = sigmoid(x' W_i + b_i)
        log a = -c * r * softplus(a_param)          (a = base^(c r), base = sigmoid(-a_param))
        h' = a * h + sqrt(1 - a^2) * (i * x')       y = h'

    The Jacobian ``dh'/dh = diag(a)`` depends on the input only. The backward of
    ``sqrt(1 - a^2)`` is clipped at a derivative of 1000, as the authors' code.

    Initialisation (the code's): ``a_param`` such that the base ``a`` at ``c r = 1`` has
    ``a^2`` uniform in ``[min_rad^2, max_rad^2]``; the gates' and ``W_in``'s weights
    normal with variance ``1 / fan_in`` (per block), biases zero.

    Args:
      hidden_size: ``H``, the recurrence's width.
      num_blocks: the gates' diagonal blocks (the code's ``num_heads``); divides ``H``.
      c: the gate's exponent scale (8 in the paper and code).
      min_rad, max_rad: the ring of the base ``a`` at initialisation.
      dtype: computation dtype; ``None`` promotes inputs and params.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"rg_lru"``. Params :class:`RGLRUParams`; carry
      ``h [*batch, H]``. Declares: gated (its gates read the input only), its gates
      (recurrence, input), a linear recurrence, and a recurrent scale: ``g`` multiplies
      the memory timescale, ``a -> a^(1/g)`` (``softplus(a_param) / g``). No recurrent
      weight matrix, so no fused backward.
    """
    H = check_positive_int("hidden_size", hidden_size)
    K = check_positive_int("num_blocks", num_blocks)
    if H % K:
        raise ValueError(f"num_blocks must divide hidden_size {H}; got {K}.")
    if not 0.0 < min_rad < max_rad < 1.0:
        raise ValueError(
            f"min_rad, max_rad must satisfy 0 < min_rad < max_rad < 1; got {min_rad}, {max_rad}."
        )
    if not c > 0:
        raise ValueError(f"c must be positive; got {c!r}.")
    _dtype = dtype

    def init(key: Array, input_size: int) -> RGLRUParams:
        input_size = check_positive_int("input_size", input_size)
        k = jax.random.split(key, 4)
        width = H // K

        def normal(key, shape, fan_in):
            return (jax.random.normal(key, shape) / jnp.sqrt(fan_in)).astype(param_dtype)

        u = jax.random.uniform(k[3], (H,), jnp.float32)
        log_base = 0.5 * jnp.log(u * (max_rad**2 - min_rad**2) + min_rad**2 + 1e-8)
        a_param = jnp.log(jnp.exp(-log_base) - 1.0)  # softplus(a_param) = -log_base
        zeros = jnp.zeros((H,), param_dtype)
        return RGLRUParams(
            normal(k[0], (input_size, H), input_size),
            zeros,
            normal(k[1], (K, width, width), width),
            zeros,
            normal(k[2], (K, width, width), width),
            zeros,
            a_param.astype(param_dtype),
        )

    def initial_carry(batch_shape=(), dtype=None) -> Array:
        dt = dtype or _dtype or param_dtype
        return jnp.zeros(resolve_batch_shape(batch_shape) + (H,), dt)

    def project(params: RGLRUParams, xs: Array):
        check_input(xs, params.w_in.shape[0], "xs")
        dt = compute_dtype(_dtype, xs, params.w_in)
        cast = lambda a: a.astype(dt)  # noqa: E731
        x = cast(xs) @ cast(params.w_in) + cast(params.b_in)
        return (
            x,
            _block_diagonal(x, cast(params.w_a), cast(params.b_a)),
            _block_diagonal(x, cast(params.w_i), cast(params.b_i)),
        )

    def gate_values(params, xp):
        x, k_a, k_i = xp
        r, i = jax.nn.sigmoid(k_a), jax.nn.sigmoid(k_i)
        log_a = -c * r * jax.nn.softplus(params.a_param.astype(x.dtype))
        return x, r, i, log_a

    def gates(params, h, xp):
        _, r, i, _ = gate_values(params, xp)
        return {"recurrence": r, "input": i}

    def coefficients(params, xp):
        x, _, i, log_a = gate_values(params, xp)
        multiplier = sqrt_bound_derivative(1.0 - jnp.exp(2.0 * log_a), 1000.0)
        return jnp.exp(log_a), multiplier * (i * x)

    def recur(params, h, xp):
        a, b = coefficients(params, xp)
        h_new = (a * h.astype(a.dtype) + b).astype(h.dtype)
        return h_new, h_new

    def scale(params: RGLRUParams, g):
        # The memory timescale -1 / log a times g: the base's log-decay
        # softplus(a_param) over g, a -> a^(1/g) (g > 1: longer memory).
        softplus = jax.nn.softplus(params.a_param) / jnp.asarray(g)
        return params._replace(a_param=jnp.log(jnp.expm1(softplus)).astype(params.a_param.dtype))

    return Cell(
        name="rg_lru",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda h: h,
        gated=True,
        gates=gates,
        recurrent_scale=scale,
        linear=LinearRecurrence(coefficients),
    )


def reference(xp, params, h, x, c: float = 8.0):
    """One step from the equations above, in the array namespace ``xp``."""
    w_in, b_in, w_a, b_a, w_i, b_i, a_param = params
    sigmoid = lambda z: 1.0 / (1.0 + xp.exp(-z))  # noqa: E731
    softplus = lambda z: xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(z, 0.0)  # noqa: E731
    xin = x @ w_in + b_in

    def block(w, b):
        k, width, _ = w.shape
        parts = [xin[..., j * width : (j + 1) * width] @ w[j] for j in range(k)]
        return xp.concatenate(parts, axis=-1) + b

    r, i = sigmoid(block(w_a, b_a)), sigmoid(block(w_i, b_i))
    a = xp.exp(-c * r * softplus(a_param))
    h_new = a * h + xp.sqrt(1.0 - a * a) * (i * xin)
    return h_new, h_new


ENTRY = Entry(
    name="rg_lru",
    make=rg_lru,
    reference=reference,
    # x W_in, then the two gates' [H, H] (one block) matmuls.
    matmul_flops=lambda i, h: 2 * h * i + 2 * 2 * h * h,
    family="linear",
    summary="RG-LRU: input-gated real diagonal recurrence (De et al. 2024, Griffin)",
)
