"""A time loop whose backward pass keeps only the recurrent matmul inside the loop.

Reverse-mode autodiff of ``lax.scan`` differentiates every step on its own: each
backward step computes ``dh_{t-1} = dz_t W_h^T`` *and* the step's share of the weight
gradient, ``h_{t-1}^T dz_t``, a small ``[H, B] x [B, G*H]`` matmul added into a
``[H, G*H]`` accumulator, ``T`` times. Here the backward loop computes only ``dz_t`` and
``dh_{t-1}``, stores ``dz_t``, and after the loop forms

    dW_h = sum_t h_{t-1}^T dz_t = H_prev^T dZ      (one [H, T*B] x [T*B, G*H] matmul)

as cuDNN does. The input projection's gradients (``dW_x = X^T dXP``, ``dX = dXP W_x^T``)
are one matmul each after the loop too, wherever the forward ran the projection.

It needs the cell's recurrence split at its one recurrent matmul, ``z_t = h_{t-1} W_h``
(``cell.recur_z``, with ``params.w_h`` and ``cell.output(carry) = h``); cells without it
use the plain scan. The numbers are the plain scan's up to float rounding: tested
against it in outputs and gradients, with lengths and reverse.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from rnnjax.cells.base import Cell, PyTree

Array = jax.Array


def supports(cell: Cell) -> bool:
    return getattr(cell, "recur_z", None) is not None


def _pointwise_params(params):
    # Everything recur_z may read: the params without the two weight matrices, so the
    # per-step cotangents the backward loop stacks stay small.
    return {k: v for k, v in params._asdict().items() if k not in ("w_x", "w_h")}


def _step(cell: Cell, params, small, carry, xp_t, z_t, valid):
    new, y = cell.recur_z(params._replace(**small), carry, xp_t, z_t)
    if valid is not None:
        keep = valid[..., None]
        new = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, carry)
        y = jnp.where(keep, y, jnp.zeros_like(y))
    return new, y


def _matmul(h, w_h):
    return h.astype(w_h.dtype) @ w_h


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def fused_scan(cell: Cell, reverse: bool, in_loop: bool, params, xs, carry: PyTree, mask):
    """The driver's loop over time-major inputs ``xs [T, *batch, I]``: ``(final_carry,
    ys)`` with ``ys [T, *batch, H]``. ``in_loop``: project each step's input inside the
    loop (else all steps in one matmul before it). ``mask [T, *batch]`` or ``None``
    marks valid steps."""
    out, _ = _forward(cell, reverse, in_loop, params, xs, carry, mask)
    return out


def _forward(cell, reverse, in_loop, params, xs, carry, mask):
    small = _pointwise_params(params)

    def body(carry, inputs):
        xp_t, valid = inputs
        if in_loop:
            xp_t = cell.project(params, xp_t)
        h = cell.output(carry)
        z = _matmul(h, params.w_h)
        new, y = _step(cell, params, small, carry, xp_t, z, valid)
        return new, (y, carry, z)

    xp = xs if in_loop else cell.project(params, xs)
    final, (ys, carries, zs) = jax.lax.scan(body, carry, (xp, mask), reverse=reverse)
    return (final, ys), (carries, zs)


def _fwd(cell, reverse, in_loop, params, xs, carry, mask):
    out, (carries, zs) = _forward(cell, reverse, in_loop, params, xs, carry, mask)
    return out, (params, xs, mask, carries, zs)


def _bwd(cell, reverse, in_loop, residuals, cotangents):
    params, xs, mask, carries, zs = residuals
    d_final, d_ys = cotangents
    small = _pointwise_params(params)
    w_h = params.w_h
    # The input projection of every step again, as one matmul (cheap next to the loop),
    # and its backward as one matmul after the loop.
    xp, project_vjp = jax.vjp(cell.project, params, xs)

    def body(d_carry, inputs):
        carry, xp_t, z_t, dy_t, valid = inputs

        def f(carry, xp_t, z_t, small):
            return _step(cell, params, small, carry, xp_t, z_t, valid)

        _, vjp = jax.vjp(f, carry, xp_t, z_t, small)
        d_prev, d_xp, d_z, d_small = vjp((d_carry, dy_t))
        # h_{t-1} fed z_t = h_{t-1} W_h: the one matmul left in the loop.
        d_h = (d_z @ w_h.T.astype(d_z.dtype)).astype(cell.output(carry).dtype)
        d_prev = _add_to_output(cell, d_prev, d_h)
        return d_prev, (d_xp, d_z, d_small)

    d_carry0, (d_xp, d_z, d_small) = jax.lax.scan(
        body, d_final, (carries, xp, zs, d_ys, mask), reverse=not reverse
    )
    h_prev = cell.output(carries)  # [T, *batch, H]
    hidden = h_prev.shape[-1]
    d_w_h = (
        h_prev.reshape(-1, hidden).astype(d_z.dtype).T @ d_z.reshape(-1, d_z.shape[-1])
    ).astype(w_h.dtype)
    d_params, d_xs = project_vjp(d_xp)
    recurrent = params._replace(
        w_h=d_w_h,
        w_x=jnp.zeros_like(params.w_x),
        **{k: jnp.sum(v, axis=0) for k, v in d_small.items()},
    )
    return jax.tree.map(jnp.add, d_params, recurrent), d_xs, d_carry0, None


def _add_to_output(cell: Cell, d_carry, d_h):
    """Add ``d_h`` to the cotangent of the carry field that ``cell.output`` reads."""
    if hasattr(d_carry, "_replace") and hasattr(d_carry, "h"):
        return d_carry._replace(h=d_carry.h + d_h)
    return d_carry + d_h


fused_scan.defvjp(_fwd, _bwd)
