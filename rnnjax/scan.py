"""The driver: run a cell over time with ``jax.lax.scan``.

Shapes: ``[*batch, T, I]`` at the public boundary (batch-major, any number of leading
batch dims, possibly none), ``[T, *batch, ...]`` inside the loop.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import fused
from rnnjax.cells.base import Array, Cell, PyTree, check_carry


class Perturbation(NamedTuple):
    """Zeros to differentiate with respect to: the driver's hook for diagnostics.

    Each field has a leading time axis ``[T, ...]`` (time-major, whatever ``xs`` is):
      carry: like the carry, ``[T, *batch, ...]``; ``eps_t`` is added to the carry
        after step ``t`` (before its output is read), so ``d loss / d eps_t`` is
        ``dL/dh_t`` (and ``dL/dc_t``) for every ``t`` from one backward pass.
      params: like the params, ``[T, ...]``; added to the params ``recur`` sees at step
        ``t``, so ``d loss / d eps_t`` is step ``t``'s term of ``dL/dW_h`` (the
        chain-rule sum of backpropagation through time, split by time step).
    With zeros the forward pass is unchanged. Either field may be ``None``.
    """

    carry: PyTree | None = None
    params: PyTree | None = None


def scan(
    cell: Cell,
    params: PyTree,
    xs: Array,
    carry: PyTree | None = None,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    time_major: bool = False,
    perturbation: Perturbation | None = None,
    return_carries: bool = False,
    vjp: str = "auto",
) -> tuple[PyTree, Array]:
    """Run ``cell`` over the time axis of ``xs``.

    The input projection of every time step is one matmul before the loop
    (``cell.project``); only ``cell.recur`` runs inside ``lax.scan``.

    Args:
      cell: a :class:`~rnnjax.cells.base.Cell`.
      params: the cell's params, from ``cell.init``.
      xs: inputs ``[*batch, T, I]``, or ``[T, *batch, I]`` with ``time_major=True``.
      carry: initial carry for batch shape ``*batch``; zeros if ``None``.
      lengths: optional integer array ``[*batch]`` of valid lengths in ``[0, T]``.
        Steps ``t >= lengths`` are padding: they leave the carry unchanged and emit
        zeros, so the final carry is each sequence's carry after its last valid step
        (the initial carry for a zero-length sequence).
      reverse: run from the last valid step to the first. With ``lengths`` this
        reverses only the valid part of each sequence (the padded tail is skipped, not
        read first), which is what a bidirectional layer over a padded batch needs.
        Outputs stay aligned with the inputs: ``ys[..., t, :]`` belongs to ``xs[..., t, :]``.
      unroll: passed to ``lax.scan``; measure before raising it (slower on CPU).
      time_major: layout of ``xs`` and of the returned ``ys``.
      perturbation: a :class:`Perturbation` of zeros, for gradient-flow diagnostics.
      return_carries: return every step's carry (padded steps hold the last valid
        one) in place of ``ys``, with the time axis where ``ys`` would have it.
      vjp: how reverse-mode gradients are formed. ``"fused"``: the backward loop keeps
        only ``dh W_h^T`` and ``dW_h`` is one matmul after it (:mod:`rnnjax.fused`;
        needs ``cell.recur_z``, one dtype, ``unroll=1``, no ``perturbation`` or
        ``return_carries``; no forward-mode ``jax.jvp``). ``"autodiff"``: JAX
        differentiates the loop step by step. ``"auto"`` (default): ``"fused"`` for the
        gated cells (LSTM, GRU) where it applies, else ``"autodiff"`` (for the Elman
        cell JAX's own loop measured as fast or faster; ``benchmarks/run.py``). Both
        give the same numbers up to rounding.

    Returns:
      ``(final_carry, ys)`` with ``ys`` ``[*batch, T, H]`` (or ``[T, *batch, H]``).

    Raises:
      ValueError: on a wrong input rank or feature size, ``lengths`` of the wrong
        shape, dtype or range, or a ``carry`` that does not match the cell.
    """
    xs = jnp.asarray(xs)
    layout = "[T, *batch, I]" if time_major else "[*batch, T, I]"
    if xs.ndim < 2:
        raise ValueError(
            f"xs must have shape {layout} (at least 2 dims: time and features); "
            f"got shape {tuple(xs.shape)}."
        )
    # Shape-only trace of the projection: raises the cell's own feature-size error
    # against the shape the caller gave, before any transpose.
    jax.eval_shape(cell.project, params, xs)

    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], xs_tm.shape[1:-1]
    xp = cell.project(params, xs_tm)
    dtype = jax.tree.leaves(xp)[0].dtype

    if carry is None:
        carry = cell.initial_carry(batch_shape, dtype=dtype)
    else:
        check_carry(carry, cell.initial_carry(batch_shape, dtype=dtype), "carry")

    if lengths is None:
        mask = None
    else:
        lengths = _check_lengths(lengths, batch_shape, num_steps)
        steps = jnp.arange(num_steps).reshape((num_steps,) + (1,) * len(batch_shape))
        mask = steps < lengths  # [T, *batch]

    if vjp not in VJPS:
        raise ValueError(f"vjp must be one of {VJPS}; got {vjp!r}.")
    blockers = _fused_blockers(cell, params, xp, carry, unroll, perturbation, return_carries)
    if vjp == "fused" and blockers:
        raise ValueError(f"vjp='fused' does not apply here: {'; '.join(blockers)}.")
    gated = cell.gates is not None
    if (vjp == "fused" or (vjp == "auto" and gated)) and not blockers:
        final_carry, ys = fused.fused_scan(cell, reverse, params, xp, carry, mask)
        if not time_major:
            ys = jnp.moveaxis(ys, 0, len(batch_shape))
        return final_carry, ys

    eps_carry, eps_params = perturbation if perturbation is not None else (None, None)
    if eps_carry is not None:
        want = jax.tree.map(lambda c: (num_steps,) + jnp.shape(c), carry)
        got = jax.tree.map(jnp.shape, eps_carry)
        if jax.tree.structure(got) != jax.tree.structure(want) or jax.tree.leaves(
            got
        ) != jax.tree.leaves(want):
            raise ValueError(f"perturbation.carry must have shapes {want} (time-major); got {got}.")

    def body(carry, inputs):
        xp_t, valid, e_carry, e_params = inputs
        p = params if e_params is None else jax.tree.map(jnp.add, params, e_params)
        new_carry, y = cell.recur(p, carry, xp_t)
        if valid is not None:
            keep = valid[..., None]
            new_carry = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_carry, carry)
        if e_carry is not None:
            new_carry = jax.tree.map(jnp.add, new_carry, e_carry)
            y = cell.output(new_carry)
        if valid is not None:
            y = jnp.where(keep, y, jnp.zeros_like(y))
        return new_carry, new_carry if return_carries else y

    # Reverse over time with a mask: the padded tail comes first and is inert, so the
    # carry reaches step lengths-1 untouched; no per-example gather is needed.
    final_carry, ys = jax.lax.scan(
        body, carry, (xp, mask, eps_carry, eps_params), reverse=reverse, unroll=unroll
    )
    if not time_major:
        ys = jax.tree.map(lambda a: jnp.moveaxis(a, 0, len(batch_shape)), ys)
    return final_carry, ys


VJPS = ("auto", "fused", "autodiff")


def _fused_blockers(cell, params, xp, carry, unroll, perturbation, return_carries) -> list[str]:
    reasons = []
    if not fused.supports(cell):
        reasons.append(f"the {cell.name} cell has no recur_z")
    elif not hasattr(params, "w_h"):
        reasons.append("params have no w_h")
    if perturbation is not None:
        reasons.append("a perturbation is given")
    if return_carries:
        reasons.append("return_carries=True")
    if unroll not in (1, False):
        reasons.append(f"unroll={unroll!r}")
    dtypes = {jnp.result_type(a) for a in jax.tree.leaves((xp, carry))}
    if hasattr(params, "w_h"):
        dtypes.add(jnp.result_type(params.w_h))
    if len(dtypes) > 1:
        reasons.append(f"mixed dtypes {sorted(map(str, dtypes))}")
    return reasons


def _check_lengths(lengths, batch_shape: tuple[int, ...], num_steps: int) -> Array:
    shape = tuple(jnp.shape(lengths))
    if shape != tuple(batch_shape):
        raise ValueError(
            f"lengths must have the batch shape of xs, {tuple(batch_shape)}; got shape {shape}."
        )
    dtype = jnp.result_type(lengths)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"lengths must be an integer array; got dtype {dtype}.")
    if isinstance(lengths, jax.core.Tracer):
        # Values are unknown at trace time: check them when the program runs.
        jax.debug.callback(_raise_if_out_of_range, lengths, num_steps)
    else:
        _raise_if_out_of_range(lengths, num_steps)
    return jnp.asarray(lengths)


def _raise_if_out_of_range(lengths, num_steps: int) -> None:
    values = np.asarray(lengths)
    bad = (values < 0) | (values > num_steps)
    if bad.any():
        raise ValueError(
            f"lengths must lie in [0, T] = [0, {num_steps}]; got values "
            f"{values[bad].ravel()[:8].tolist()} (min {values.min()}, max {values.max()})."
        )
