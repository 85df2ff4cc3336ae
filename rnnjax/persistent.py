"""A persistent time loop: the whole forward loop, and the whole backward loop, as one
Pallas kernel each (issue 22).

XLA runs :mod:`rnnjax.fused`'s loops as a ``while`` loop whose body's kernels the host
launches at every step. On a GPU at small sizes that launch cost, not the arithmetic,
sets the step time (about 30-40 us per step on an H200 against cuDNN's 7, where cuDNN
runs its persistent algorithm: the recurrent weight stays on chip and the time loop is
one kernel). This module is that design written in Pallas, for every cell that writes
its step's backward out (``cell.fused.vjp``: the Elman RNN, the LSTM, the GRU):

- **forward**: a grid over tiles of ``block_batch`` batch rows. Each program loads
  ``W_h`` once, holds its rows' carry, and loops over ``T`` inside the kernel, reading
  the hoisted projection ``x_t W_x + b`` and writing ``y_t``, the carry before the step
  and what ``cell.fused.vjp.bwd`` will read (the gate activations). Batch rows are
  independent, so the programs never synchronise.
- **backward**: the same grid; each program loads ``W_h^T`` once and runs the
  backward recurrence ``d_carry_{t-1} = bwd(...) + d_z_t W_h^T`` over ``T`` inside the
  kernel, writing ``d_z_t``. As in :mod:`rnnjax.fused`, ``dW_h = H_prev^T dZ`` and the
  projection's gradients are one large matmul each after the loop, outside the kernel.

The kernels trace the cell's own ``recur_z`` step functions (``cell.fused.vjp.fwd`` and
``.bwd``), so a cell that declares them gets the kernel with nothing more written; the
step may read only the params fields ``cell.fused`` names (``weight`` and ``reads``),
and the kernel passes only those (reading another field fails at trace time, naming it).
``lengths`` (a mask of valid steps) and ``reverse`` follow the driver's definitions:
padded steps keep the carry and emit zeros, forward and backward, exactly as
:func:`rnnjax.fused.fused_scan`. A batch that does not divide into tiles is padded with
zero rows, which are dropped again.

Where it runs: off a GPU (and in the tests) the kernels run in Pallas's interpret mode,
which evaluates the same kernel body with ordinary JAX operations; the tests hold it
against :func:`rnnjax.fused.fused_scan` and the plain ``lax.scan`` in outputs, final
carry and every gradient (lengths including 0 and ``T``, reverse, a batch that does not
divide into tiles, float32 and bfloat16). On a GPU the kernel is compiled by Pallas's
default GPU lowering. **It has not been measured on a GPU at this commit**, and a first,
forward-only probe of the same design (``benchmarks/pallas_probe.py``, Triton lowering,
jax 0.11.2 on an H200, ``results/gpu-h200``) ran the small Elman forward 2.6x slower
than XLA's loop; so :func:`rnnjax.plan` chooses this loop only when asked
(``loop="persistent"``), on every backend, until ``benchmarks/gpu.sh`` shows it winning.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from rnnjax import fused
from rnnjax.cells.base import Cell, dense_weight_grad

Array = jax.Array

# Batch rows per program. 16 is the smallest tile a GPU matmul unit takes whole in
# every lowering Pallas has (Triton's ``tl.dot`` needs >= 16 rows); a smaller batch is
# padded to it. Not tuned: no GPU has run this kernel yet.
DEFAULT_BLOCK_BATCH = 16


def supports(cell: Cell) -> bool:
    """Whether ``cell`` writes its step's backward out (``cell.fused.vjp``), which both
    kernels trace."""
    return cell.fused is not None and cell.fused.vjp is not None


def interpret_default() -> bool:
    """Interpret mode off a GPU: Pallas compiles its kernels for GPUs and TPUs only."""
    return jax.default_backend() == "cpu"


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def persistent_scan(
    cell: Cell, reverse: bool, block_batch: int, interpret: bool, params, xs, carry, mask
):
    """The driver's loop as two persistent kernels: ``(final_carry, ys)`` for time-major
    ``xs [T, *batch, I]``, with ``ys [T, *batch, H]``; ``mask [T, *batch]`` (or ``None``)
    marks valid steps. The input projection runs as one matmul before the loop.
    ``block_batch``: batch rows per program. ``interpret``: run the kernels in Pallas's
    interpret mode (for CPUs and tests)."""
    out, _ = _forward(cell, reverse, block_batch, interpret, params, xs, carry, mask)
    return out


# ------------------------------------------------------------------ layout


class _Layout:
    """The batch flattened to one axis of ``rows`` rows and padded to whole tiles."""

    def __init__(self, xs: Array, block_batch: int):
        if not isinstance(block_batch, int) or block_batch < 1:
            raise ValueError(f"block_batch must be a positive int; got {block_batch!r}.")
        self.steps = xs.shape[0]
        self.batch_shape = xs.shape[1:-1]
        self.rows = math.prod(self.batch_shape)
        self.block = block_batch
        self.tiles = max(1, -(-self.rows // block_batch))
        self.padded = self.tiles * block_batch

    def pad(self, a: Array, time_major: bool) -> Array:
        """``a [T?, *batch, ...]`` as ``[T?, padded, ...]``, zeros in the padded rows."""
        lead = 1 if time_major else 0
        a = a.reshape(a.shape[:lead] + (self.rows,) + a.shape[lead + len(self.batch_shape) :])
        widths = [(0, 0)] * a.ndim
        widths[lead] = (0, self.padded - self.rows)
        return jnp.pad(a, widths)

    def unpad(self, a: Array, time_major: bool) -> Array:
        lead = 1 if time_major else 0
        a = jax.lax.slice_in_dim(a, 0, self.rows, axis=lead)
        return a.reshape(a.shape[:lead] + self.batch_shape + a.shape[lead + 1 :])

    def spec(self, shape: tuple[int, ...], time_major: bool) -> pl.BlockSpec:
        """The tile of an array ``[T?, padded, ...]`` that program ``i`` owns."""
        lead = 1 if time_major else 0
        block = shape[:lead] + (self.block,) + shape[lead + 1 :]
        rest = len(shape) - lead - 1

        def index(i):
            return (0,) * lead + (i,) + (0,) * rest

        return pl.BlockSpec(block, index)


def _whole(a: Array) -> pl.BlockSpec:
    """Every program reads all of ``a`` (the weights)."""
    return pl.BlockSpec(a.shape, lambda i: (0,) * a.ndim)


def _kernel_params(cell: Cell, params, reads, weight=None):
    """``params`` with only what the step may read filled in: ``cell.fused.reads`` (the
    values ``reads``) and, in the forward kernel, the recurrent weight; every other
    field is ``None`` (the backward step never reads the weight: the driver applies
    ``W_h^T`` itself)."""
    empty = params._replace(**{f: None for f in params._fields})
    fill = dict(zip(cell.fused.reads, reads, strict=True))
    if weight is not None:
        fill[cell.fused.weight] = weight
    return empty._replace(**fill)


def _reads(cell: Cell, params) -> list[Array]:
    return [getattr(params, n) for n in cell.fused.reads]


def _row(a: Array, batch_dims: int, time_major: bool) -> jax.ShapeDtypeStruct:
    """The shape of one batch row of ``a``, as ``[1, ...]``."""
    lead = (1 if time_major else 0) + batch_dims
    return jax.ShapeDtypeStruct((1,) + a.shape[lead:], a.dtype)


def _stacked(row, steps: int, padded: int) -> jax.ShapeDtypeStruct:
    """A per-step output ``[T, padded, ...]`` of rows shaped like ``row [1, ...]``."""
    return jax.ShapeDtypeStruct((steps, padded) + row.shape[1:], row.dtype)


def _time_index(t, steps: int, backward_in_time: bool):
    return steps - 1 - t if backward_in_time else t


def _keep(mask_ref, t):
    return (mask_ref[t] != 0)[:, None]


def _where_tree(keep, new, old):
    def pick(n, o):
        k = keep.reshape(keep.shape + (1,) * (n.ndim - keep.ndim))
        return jnp.where(k, n, o)

    return jax.tree.map(pick, new, old)


# ------------------------------------------------------------------ forward


def _check(cell: Cell) -> None:
    if not supports(cell):
        raise ValueError(
            f"the persistent loop needs a cell that writes its step's backward out "
            f"(cell.fused.vjp); the {cell.name} cell does not."
        )


def _step_shapes(cell: Cell, params, xp, carry, batch_dims: int):
    """One row's ``y`` and saved residuals of the forward step, and the step's
    backward ``extra`` (shapes only: traced, not run)."""

    def step(xp_t, carry_t):
        z = fused._matmul(cell.output(carry_t), getattr(params, cell.fused.weight))
        (new, y), saved = cell.fused.vjp.fwd(params, carry_t, xp_t, z)
        _, d_z, extra = cell.fused.vjp.bwd(params, carry_t, saved, y, new, y)
        return y, saved, extra

    xp_row = jax.tree.map(lambda a: _row(a, batch_dims, True), xp)
    carry_row = jax.tree.map(lambda a: _row(a, batch_dims, False), carry)
    return jax.eval_shape(step, xp_row, carry_row)


def _forward(cell, reverse, block_batch, interpret, params, xs, carry, mask):
    _check(cell)
    lay = _Layout(xs, block_batch)
    T, P, nb = lay.steps, lay.padded, len(lay.batch_shape)
    xp = cell.project(params, xs)
    xp_leaves, xp_tree = jax.tree.flatten(xp)
    carry_leaves, carry_tree = jax.tree.flatten(carry)
    y_row, saved_row, _ = _step_shapes(cell, params, xp, carry, nb)
    saved_rows = jax.tree.leaves(saved_row)
    reads = _reads(cell, params)
    w_h = getattr(params, cell.fused.weight)

    xp_in = [lay.pad(a, True) for a in xp_leaves]
    carry_in = [lay.pad(a, False) for a in carry_leaves]
    mask_in = [] if mask is None else [lay.pad(mask.astype(jnp.int32), True)]
    nx, nr, nc, nm = len(xp_in), len(reads), len(carry_in), len(mask_in)
    carry_rows = [_row(a, 1, False) for a in carry_in]
    out_shape = (
        [_stacked(y_row, T, P)]
        + [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in carry_in]  # the final carry
        + [_stacked(r, T, P) for r in carry_rows]  # the carry before each step
        + [_stacked(r, T, P) for r in saved_rows]  # what the step's backward reads
    )
    in_specs = (
        [lay.spec(a.shape, True) for a in xp_in]
        + [_whole(w_h)]
        + [_whole(a) for a in reads]
        + [lay.spec(a.shape, False) for a in carry_in]
        + [lay.spec(a.shape, True) for a in mask_in]
    )
    out_specs = [lay.spec(o.shape, time_major=not (1 <= i <= nc)) for i, o in enumerate(out_shape)]

    def kernel(*refs):
        xp_refs, (w_ref,) = refs[:nx], refs[nx : nx + 1]
        read_refs = refs[nx + 1 : nx + 1 + nr]
        c_refs = refs[nx + 1 + nr : nx + 1 + nr + nc]
        m_ref = refs[nx + 1 + nr + nc] if nm else None
        outs = refs[nx + 1 + nr + nc + nm :]
        ys_ref, final_refs = outs[0], outs[1 : 1 + nc]
        carries_refs, saved_refs = outs[1 + nc : 1 + 2 * nc], outs[1 + 2 * nc :]
        w = w_ref[...]  # loaded once: on chip for the whole loop
        p = _kernel_params(cell, params, [r[...] for r in read_refs], weight=w)

        def body(t, leaves):
            idx = _time_index(t, T, reverse)
            c = jax.tree.unflatten(carry_tree, leaves)
            xp_t = jax.tree.unflatten(xp_tree, [r[idx] for r in xp_refs])
            z = fused._matmul(cell.output(c), w)
            (new, y), saved = cell.fused.vjp.fwd(p, c, xp_t, z)
            if m_ref is not None:  # a padded step keeps the carry and emits zeros
                keep = _keep(m_ref, idx)
                new = _where_tree(keep, new, c)
                y = jnp.where(keep, y, jnp.zeros_like(y))
            ys_ref[idx] = y.astype(ys_ref.dtype)
            for r, a in zip(carries_refs, leaves, strict=True):
                r[idx] = a
            for r, a in zip(saved_refs, jax.tree.leaves(saved), strict=True):
                r[idx] = a.astype(r.dtype)
            return [n.astype(o.dtype) for n, o in zip(jax.tree.leaves(new), leaves, strict=True)]

        final = jax.lax.fori_loop(0, T, body, [r[...] for r in c_refs])
        for r, a in zip(final_refs, final, strict=True):
            r[...] = a

    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(lay.tiles,),
        in_specs=in_specs,
        out_specs=out_specs,
        interpret=interpret,
        name=f"rnnjax_persistent_{cell.name}_forward",
    )(*xp_in, w_h, *reads, *carry_in, *mask_in)
    ys, final = outs[0], outs[1 : 1 + nc]
    carries, saved = list(outs[1 + nc : 1 + 2 * nc]), list(outs[1 + 2 * nc :])
    result = (
        jax.tree.unflatten(carry_tree, [lay.unpad(a, False) for a in final]),
        lay.unpad(ys, True),
    )
    return result, (carries, saved, ys)


def _fwd(cell, reverse, block_batch, interpret, params, xs, carry, mask):
    out, (carries, saved, ys) = _forward(
        cell, reverse, block_batch, interpret, params, xs, carry, mask
    )
    # Padded to whole tiles, as the backward kernel reads them.
    return out, (params, xs, carry, mask, carries, saved, ys)


# ------------------------------------------------------------------ backward


def _bwd(cell, reverse, block_batch, interpret, residuals, cotangents):
    params, xs, carry, mask, carries, saved, ys = residuals
    d_final, d_ys = cotangents
    lay = _Layout(xs, block_batch)
    T, P, nb = lay.steps, lay.padded, len(lay.batch_shape)
    carry_tree = jax.tree.structure(carry)
    xp_shapes = jax.eval_shape(cell.project, params, xs)
    _, saved_row, extra_row = _step_shapes(cell, params, xp_shapes, carry, nb)
    saved_tree = jax.tree.structure(saved_row)
    extra_rows, extra_tree = jax.tree.flatten(extra_row)
    reads = _reads(cell, params)
    w_h = getattr(params, cell.fused.weight)
    w_t = w_h.T  # the kernel holds W_h^T for d_h = d_z W_h^T

    d_final_in = [lay.pad(a, False) for a in jax.tree.leaves(d_final)]
    d_ys_in = lay.pad(d_ys, True)
    mask_in = [] if mask is None else [lay.pad(mask.astype(jnp.int32), True)]
    nc, ns, nr, nm = len(carries), len(saved), len(reads), len(mask_in)
    # d_z: the cotangent of the step's recurrent pre-activation, [T, P, K].
    out_shape = (
        [jax.ShapeDtypeStruct((T, P, w_h.shape[1]), d_ys.dtype)]
        + [_stacked(r, T, P) for r in extra_rows]
        + [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in d_final_in]  # d carry_0
    )
    in_specs = (
        [lay.spec(a.shape, True) for a in carries]
        + [lay.spec(a.shape, True) for a in saved]
        + [lay.spec(ys.shape, True), lay.spec(d_ys_in.shape, True)]
        + [_whole(w_t)]
        + [_whole(a) for a in reads]
        + [lay.spec(a.shape, False) for a in d_final_in]
        + [lay.spec(a.shape, True) for a in mask_in]
    )
    ne = len(extra_rows)
    out_specs = [lay.spec(o.shape, time_major=i <= ne) for i, o in enumerate(out_shape)]

    def kernel(*refs):
        carry_refs, saved_refs = refs[:nc], refs[nc : nc + ns]
        ys_ref, dys_ref, wt_ref = refs[nc + ns : nc + ns + 3]
        k = nc + ns + 3
        read_refs, dfin_refs = refs[k : k + nr], refs[k + nr : k + nr + nc]
        m_ref = refs[k + nr + nc] if nm else None
        outs = refs[k + nr + nc + nm :]
        dz_ref, extra_refs, d0_refs = outs[0], outs[1 : 1 + ne], outs[1 + ne :]
        wt = wt_ref[...]  # loaded once: on chip for the whole loop
        p = _kernel_params(cell, params, [r[...] for r in read_refs])

        def body(t, d_leaves):
            idx = _time_index(t, T, not reverse)
            c = jax.tree.unflatten(carry_tree, [r[idx] for r in carry_refs])
            s = jax.tree.unflatten(saved_tree, [r[idx] for r in saved_refs])
            y_t, dy_t = ys_ref[idx], dys_ref[idx]
            d_carry = jax.tree.unflatten(carry_tree, d_leaves)
            if m_ref is not None:  # a padded step passes the carry's cotangent through
                keep = _keep(m_ref, idx)
                d_in = _where_tree(keep, d_carry, jax.tree.map(jnp.zeros_like, d_carry))
                dy_t = jnp.where(keep, dy_t, jnp.zeros_like(dy_t))
            else:
                d_in = d_carry
            d_prev, d_z, extra = cell.fused.vjp.bwd(p, c, s, y_t, d_in, dy_t)
            d_h = (d_z @ wt.astype(d_z.dtype)).astype(cell.output(c).dtype)
            d_prev = fused._add_to_output(cell, d_prev, d_h, c)
            if m_ref is not None:
                d_prev = jax.tree.map(
                    lambda a, d: a + jnp.where(keep, jnp.zeros_like(d), d), d_prev, d_carry
                )
            dz_ref[idx] = d_z.astype(dz_ref.dtype)
            for r, a in zip(extra_refs, jax.tree.leaves(extra), strict=True):
                r[idx] = a.astype(r.dtype)
            return [
                n.astype(o.dtype) for n, o in zip(jax.tree.leaves(d_prev), d_leaves, strict=True)
            ]

        d0 = jax.lax.fori_loop(0, T, body, [r[...] for r in dfin_refs])
        for r, a in zip(d0_refs, d0, strict=True):
            r[...] = a

    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(lay.tiles,),
        in_specs=in_specs,
        out_specs=out_specs,
        interpret=interpret,
        name=f"rnnjax_persistent_{cell.name}_backward",
    )(*carries, *saved, ys, d_ys_in, w_t, *reads, *d_final_in, *mask_in)
    d_z = lay.unpad(outs[0], True)
    extra = jax.tree.unflatten(extra_tree, [lay.unpad(a, True) for a in outs[1 : 1 + ne]])
    d_carry0 = jax.tree.unflatten(carry_tree, [lay.unpad(a, False) for a in outs[1 + ne :]])
    d_params, d_xs = cell.fused.vjp.finish(params, xs, d_z, extra)
    # dW_h = H_prev^T dZ: one matmul over every step, outside the kernel.
    h_prev = cell.output(jax.tree.unflatten(carry_tree, [lay.unpad(a, True) for a in carries]))
    d_w_h = dense_weight_grad(h_prev, d_z, w_h.dtype)
    name = cell.fused.weight
    d_params = d_params._replace(**{name: getattr(d_params, name) + d_w_h})
    return d_params, d_xs, d_carry0, None


persistent_scan.defvjp(_fwd, _bwd)
