"""A time loop whose backward pass keeps only the recurrent matmul inside the loop.

Reverse-mode autodiff of ``lax.scan`` differentiates every step on its own: each
backward step computes ``dh_{t-1} = dz_t W_h^T`` *and* the step's share of the weight
gradient, ``h_{t-1}^T dz_t``, a small ``[H, B] x [B, G*H]`` matmul added into a
``[H, G*H]`` accumulator, ``T`` times. Here the backward loop computes only ``dz_t`` and
``dh_{t-1}``, stores ``dz_t``, and after the loop forms

    dW_h = sum_t h_{t-1}^T dz_t = H_prev^T dZ      (one [H, T*B] x [T*B, G*H] matmul)

as cuDNN does. The input projection's gradients (``dW_x = X^T dXP``, ``dX = dXP W_x^T``)
are one matmul each after the loop too, wherever the forward ran the projection.

It needs the cell's recurrence split at its one recurrent matmul,
``z_t = output(carry_{t-1}) W_h``, declared by the cell (``cell.fused``, a
:class:`~rnnjax.cells.base.FusedRecurrence` that names the weight field); cells without
it use the plain scan. Where the cell also writes its step's backward out
(``cell.fused.vjp``: the LSTM, GRU and Elman cells), the forward saves what that
backward reads (the gate activations) and the backward loop runs it, as cuDNN does;
otherwise each backward step differentiates the step again with ``jax.vjp``. The
numbers are the plain scan's up to float rounding: tested against it in outputs and
gradients, with lengths and reverse.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from rnnjax.cells.base import Cell, PyTree, dense_weight_grad

Array = jax.Array


def supports(cell: Cell) -> bool:
    """Whether ``cell`` declares the split this backward needs (``cell.fused``)."""
    return cell.fused is not None


def _pointwise_params(cell: Cell, params):
    # What recur_z reads besides z (the cell declares it), so the per-step cotangents
    # the backward loop stacks stay small.
    return {k: getattr(params, k) for k in cell.fused.reads}


def _weight(cell: Cell, params):
    return getattr(params, cell.fused.weight)


def _step(cell: Cell, params, small, carry, xp_t, z_t, valid):
    new, y = cell.fused.recur_z(params._replace(**small), carry, xp_t, z_t)
    return _mask(valid, new, y, carry)


def _matmul(h, w_h):
    return h.astype(w_h.dtype) @ w_h


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def fused_scan(
    cell: Cell, reverse: bool, in_loop: bool, unroll: int | bool, params, xs, carry: PyTree, mask
):
    """The driver's loop over time-major inputs ``xs [T, *batch, I]``: ``(final_carry,
    ys)`` with ``ys [T, *batch, H]``. ``in_loop``: project each step's input inside the
    loop (else all steps in one matmul before it). ``unroll``: ``lax.scan``'s, for the
    forward and the backward loop. ``mask [T, *batch]`` or ``None`` marks valid
    steps."""
    out, _ = _forward(cell, reverse, in_loop, unroll, params, xs, carry, mask)
    return out


def _forward(cell, reverse, in_loop, unroll, params, xs, carry, mask):
    small = _pointwise_params(cell, params)
    step_vjp = cell.fused.vjp
    w_h = _weight(cell, params)

    def body(carry, inputs):
        xp_t, valid = inputs
        if in_loop:
            xp_t = cell.project(params, xp_t)
        z = _matmul(cell.output(carry), w_h)
        if step_vjp is None:
            new, y = _step(cell, params, small, carry, xp_t, z, valid)
            return new, (y, carry, (xp_t, z) if in_loop else z)
        (new, y), saved = step_vjp.fwd(params, carry, xp_t, z)
        new, y = _mask(valid, new, y, carry)
        return new, (y, carry, saved)

    xp = xs if in_loop else cell.project(params, xs)
    final, (ys, carries, saved) = jax.lax.scan(
        body, carry, (xp, mask), reverse=reverse, unroll=unroll
    )
    return (final, ys), (carries, saved)


def _mask(valid, new, y, carry):
    """Padded steps (``valid`` false) keep the carry and emit zeros."""
    if valid is None:
        return new, y
    keep = valid[..., None]
    new = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, carry)
    return new, jnp.where(keep, y, jnp.zeros_like(y))


def _fwd(cell, reverse, in_loop, unroll, params, xs, carry, mask):
    out, (carries, saved) = _forward(cell, reverse, in_loop, unroll, params, xs, carry, mask)
    # The outputs ys are kept for the written-out backward (an output of the loop
    # anyway: no extra store).
    ys = out[1] if cell.fused.vjp is not None else None
    return out, (params, xs, mask, carries, saved, ys)


def _bwd(cell, reverse, in_loop, unroll, residuals, cotangents):
    params, xs, mask, carries, saved, ys = residuals
    d_final, d_ys = cotangents
    small = _pointwise_params(cell, params)
    w_h = _weight(cell, params)
    step_vjp = cell.fused.vjp

    def recurrent_input(d_z, carry, d_prev):
        # h_{t-1} fed z_t = h_{t-1} W_h: the one matmul left in the loop.
        d_h = (d_z @ w_h.T.astype(d_z.dtype)).astype(cell.output(carry).dtype)
        return _add_to_output(cell, d_prev, d_h, carry)

    if step_vjp is None:
        # A cell without a written-out backward: differentiate each step again (its
        # inputs saved by the forward where it projected inside the loop, else the
        # projection again, here). The projection's backward runs once, after the loop.
        xp_all, project_vjp = jax.vjp(cell.project, params, xs)

        def body(d_carry, inputs):
            carry, step_saved, xp_t, dy_t, valid = inputs
            if in_loop:
                xp_t, z_t = step_saved
            else:
                z_t = step_saved

            def f(carry, xp_t, z_t, small):
                return _step(cell, params, small, carry, xp_t, z_t, valid)

            _, vjp = jax.vjp(f, carry, xp_t, z_t, small)
            d_prev, d_xp, d_z, d_small = vjp((d_carry, dy_t))
            return recurrent_input(d_z, carry, d_prev), (d_xp, d_z, d_small)

        xp_in = None if in_loop else xp_all
        d_carry0, (d_xp, d_z, d_small) = jax.lax.scan(
            body, d_final, (carries, saved, xp_in, d_ys, mask), reverse=not reverse, unroll=unroll
        )
        d_params, d_xs = project_vjp(d_xp)
        d_params = d_params._replace(
            **{k: getattr(d_params, k) + jnp.sum(v, axis=0) for k, v in d_small.items()}
        )
    else:

        def body(d_carry, inputs):
            carry, step_saved, y_t, dy_t, valid = inputs
            if valid is not None:  # a padded step passes the carry's cotangent through
                keep = valid[..., None]
                d_in = jax.tree.map(lambda d: jnp.where(keep, d, jnp.zeros_like(d)), d_carry)
                dy_t = jnp.where(keep, dy_t, jnp.zeros_like(dy_t))
            else:
                d_in = d_carry
            d_prev, d_z, extra = step_vjp.bwd(params, carry, step_saved, y_t, d_in, dy_t)
            d_prev = recurrent_input(d_z, carry, d_prev)
            if valid is not None:
                d_prev = jax.tree.map(
                    lambda a, d: a + jnp.where(keep, jnp.zeros_like(d), d), d_prev, d_carry
                )
            return d_prev, (d_z, extra)

        d_carry0, (d_z, extra) = jax.lax.scan(
            body, d_final, (carries, saved, ys, d_ys, mask), reverse=not reverse, unroll=unroll
        )
        d_params, d_xs = step_vjp.finish(params, xs, d_z, extra)
    # dW_h = H_prev^T dZ: one matmul over every step.
    d_w_h = dense_weight_grad(cell.output(carries), d_z, w_h.dtype)
    name = cell.fused.weight
    return d_params._replace(**{name: getattr(d_params, name) + d_w_h}), d_xs, d_carry0, None


def _add_to_output(cell: Cell, d_carry, d_h, carry):
    """``d_carry`` plus ``d_h`` carried back through ``cell.output`` (whichever part of
    the carry it reads; a selection, which XLA reduces to one addition)."""
    _, output_vjp = jax.vjp(cell.output, carry)
    return jax.tree.map(jnp.add, d_carry, output_vjp(d_h)[0])


fused_scan.defvjp(_fwd, _bwd)
