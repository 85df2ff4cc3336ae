"""The time loops :func:`rnnjax.scan` chooses between, over time-major inputs.

Every loop here takes the projected (or raw, when the projection runs inside the loop)
inputs ``[T, *batch, ...]``, a carry for ``*batch`` and an optional validity mask
``[T, *batch]``, and returns ``(final_carry, ys)`` with ``ys [T, *batch, H]`` (or every
step's carry). They keep the driver's semantics: padded steps leave the carry unchanged
and emit zeros; ``reverse`` runs from the last step to the first, so with a mask the
padded tail comes first and is inert.

- :func:`sequential`: ``jax.lax.scan`` over the cell's ``recur``, optionally
  rematerialised over chunks of time (:func:`chunked_scan`).
- :func:`associative`: for a cell that declares its recurrence linear in the state
  (``cell.linear``), a parallel prefix scan, ``jax.lax.associative_scan``.
- :func:`rnnjax.fused.fused_scan`: the sequential loop with the cuDNN-style backward.
- :func:`per_device`: any of them run by every device of a mesh on its slice of the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from rnnjax.cells.base import Array, Cell, PyTree


def sequential(
    cell: Cell,
    params: PyTree,
    xs: Array,
    carry: PyTree,
    mask: Array | None,
    *,
    reverse: bool,
    in_loop: bool,
    unroll: int | bool,
    chunk: int,
    eps_carry: PyTree | None = None,
    eps_params: PyTree | None = None,
    return_carries: bool = False,
) -> tuple[PyTree, PyTree]:
    """``lax.scan`` over ``cell.recur``. ``in_loop``: ``xs`` are raw inputs, projected per
    step; else ``xs`` is ``cell.project``'s output. ``chunk > 0``: rematerialise over
    chunks of that many steps. ``eps_carry`` / ``eps_params``: the diagnostics'
    perturbations (:class:`rnnjax.scan.Perturbation`), time-major."""

    def body(carry, inputs):
        xp_t, valid, e_carry, e_params = inputs
        p = params if e_params is None else jax.tree.map(jnp.add, params, e_params)
        if in_loop:
            xp_t = cell.project(p, xp_t)
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

    inputs = (xs, mask, eps_carry, eps_params)
    if chunk:
        return chunked_scan(body, carry, inputs, xs_length(xs), chunk, reverse, unroll)
    return jax.lax.scan(body, carry, inputs, reverse=reverse, unroll=unroll)


def xs_length(xs: PyTree) -> int:
    return jax.tree.leaves(xs)[0].shape[0]


def chunked_scan(body, carry, inputs, num_steps: int, chunk: int, reverse: bool, unroll):
    """``lax.scan(body, carry, inputs)`` over ``num_steps`` steps, as an outer scan over
    chunks of ``chunk`` steps whose inner scans are rematerialised (``jax.checkpoint``):
    the backward pass keeps one carry per chunk and recomputes each chunk's steps.

    ``T = n * chunk + r``: the ``n`` whole chunks run as the outer scan and the last
    ``r`` steps as one more rematerialised scan, after them (before them in reverse),
    so every step runs exactly as in the plain scan, with no padding.
    """

    def inner(c, xs):
        return jax.lax.scan(body, c, xs, reverse=reverse, unroll=unroll)

    inner = jax.checkpoint(inner, prevent_cse=False)
    n, r = divmod(num_steps, chunk)
    head = jax.tree.map(lambda a: a[: n * chunk].reshape((n, chunk) + a.shape[1:]), inputs)
    tail = jax.tree.map(lambda a: a[n * chunk :], inputs)

    def whole_chunks(c):
        c, ys = jax.lax.scan(inner, c, head, reverse=reverse)
        return c, jax.tree.map(lambda a: a.reshape((n * chunk,) + a.shape[2:]), ys)

    # chunk <= num_steps, so there is at least one whole chunk (none only when T = 0).
    if r == 0:
        return whole_chunks(carry)
    if reverse:
        carry, ys_tail = inner(carry, tail)
        carry, ys_head = whole_chunks(carry)
    else:
        carry, ys_head = whole_chunks(carry)
        carry, ys_tail = inner(carry, tail)
    return carry, jax.tree.map(lambda h, t: jnp.concatenate([h, t]), ys_head, ys_tail)


def associative(
    cell: Cell,
    params: PyTree,
    xp: PyTree,
    carry: PyTree,
    mask: Array | None,
    *,
    reverse: bool,
    eps_carry: PyTree | None = None,
    return_carries: bool = False,
) -> tuple[PyTree, PyTree]:
    """A linear recurrence ``s_t = a_t * s_{t-1} + b_t`` as a parallel prefix scan.

    ``(a, b) = cell.linear.coefficients(params, xp)`` over every step at once; a padded
    step becomes the identity element ``(1, 0)``, so the state passes through it and
    the final carry is the last valid one (or, in reverse, the padded tail comes first
    and the state reaches the last valid step unchanged). Steps compose as
    ``(a1, b1) then (a2, b2) = (a2 a1, a2 b1 + b2)``, associative, so
    ``jax.lax.associative_scan`` needs ``O(log T)`` dependent levels instead of ``T``.
    The initial state enters as ``s_t = A_t s_0 + (the scan from zero)``, ``A_t`` the
    product of the ``a`` so far. With ``cell.linear.log_coefficients`` the scan from
    zero runs in log space (pairs ``(log a, log b)``, composed with ``logaddexp``). A
    diagnostic's carry perturbation ``eps_t`` enters as ``b_t + eps_t`` (in linear
    space: a perturbation need not be positive). A bfloat16 or float16 recurrence is
    accumulated in float32 (as recurrentgemma's scans do), its states cast back.
    """
    linear = cell.linear
    to_state = linear.to_state or (lambda c: c)
    from_state = linear.from_state or (lambda s: s)
    state0 = to_state(carry)
    steps = xs_length(xp)
    if eps_carry is not None:
        eps_state = jax.vmap(to_state)(eps_carry)
    log_space = linear.log_coefficients is not None and eps_carry is None

    def widen(m, leaf):
        return m.reshape(m.shape + (1,) * (leaf.ndim - m.ndim))

    if log_space:
        log_a, log_b = jax.tree.map(_accumulate, linear.log_coefficients(params, xp))
        if mask is not None:
            log_a = jax.tree.map(lambda x: jnp.where(widen(mask, x), x, 0.0), log_a)
            log_b = jax.tree.map(lambda x: jnp.where(widen(mask, x), x, -jnp.inf), log_b)

        def combine(earlier, later):
            (a1, b1), (a2, b2) = earlier, later
            a = jax.tree.map(jnp.add, a2, a1)
            return a, jax.tree.map(lambda x, y, z: jnp.logaddexp(x + y, z), a2, b1, b2)

        log_prod, log_zero = jax.lax.associative_scan(combine, (log_a, log_b), reverse=reverse)
        states = jax.tree.map(
            lambda p, z, s0: jnp.exp(p) * s0.astype(p.dtype) + jnp.exp(z),
            log_prod,
            log_zero,
            state0,
        )
    else:
        a, b = jax.tree.map(_accumulate, linear.coefficients(params, xp))
        if eps_carry is not None:
            b = jax.tree.map(jnp.add, b, eps_state)
        if mask is not None:
            a = jax.tree.map(lambda x: jnp.where(widen(mask, x), x, jnp.ones_like(x)), a)
            b = jax.tree.map(lambda x: jnp.where(widen(mask, x), x, jnp.zeros_like(x)), b)
        first = steps - 1 if reverse else 0

        def fold(a_, b_, s0):
            return b_.at[first].set(a_[first] * s0.astype(b_.dtype) + b_[first])

        if steps:
            b = jax.tree.map(fold, a, b, state0)

        def combine(earlier, later):
            (a1, b1), (a2, b2) = earlier, later
            a = jax.tree.map(jnp.multiply, a2, a1)
            return a, jax.tree.map(lambda x, y, z: x * y + z, a2, b1, b2)

        _, states = jax.lax.associative_scan(combine, (a, b), reverse=reverse)
    hs = jax.vmap(from_state)(states) if steps else jax.tree.map(lambda c: c[None][:0], carry)
    hs = jax.tree.map(lambda h, c: h.astype(jnp.result_type(c)), hs, carry)
    final = jax.tree.map(lambda h: h[0 if reverse else steps - 1], hs) if steps else carry
    if return_carries:
        return final, hs
    ys = jax.vmap(cell.output)(hs)
    if mask is not None:
        ys = jnp.where(mask[..., None], ys, jnp.zeros_like(ys))
    return final, ys


def _accumulate(x: Array) -> Array:
    """``x`` in float32 (complex64) if it is a float of fewer than 32 bits, else as is."""
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        return x.astype(jnp.float32)
    return x


def per_device(loop, mesh, axis: str):
    """``loop(params, xs, carry, mask)`` run by every device of ``mesh``'s ``axis`` on its
    slice of the batch, under ``shard_map``.

    Run by XLA's partitioner as one program, a loop over a batch split across devices
    sums the recurrent weights' gradient over the devices at every step of the backward
    pass. Under ``shard_map`` the loop is each device's own; the parameters' gradient is
    summed once, after it (benchmarks/README.md, "Many devices", measures it).
    """
    batch = P(None, axis)  # time-major: [T, batch, ...]
    return jax.shard_map(
        loop,
        mesh=mesh,
        in_specs=(P(), batch, P(axis), batch),
        out_specs=(P(axis), batch),
        axis_names={axis},
    )


def vary_like(tree: PyTree, *refs) -> PyTree:
    """``tree`` with every leaf cast to vary over the manual mesh axes (shard_map) any
    leaf of ``refs`` varies over; unchanged outside shard_map.

    Inside shard_map a loop's carry comes out varying over every manual axis its inputs
    vary over, and ``lax.scan`` rejects a carry that does not (zeros made by
    ``initial_carry`` do not). Parameters replicated over those axes are cast too, so
    the backward's psum of their gradient runs once after the loop, not at every step.
    The values are unchanged."""
    axes = set().union(*map(_varying_axes, jax.tree.leaves(refs)))
    if not axes:
        return tree

    def cast(leaf):
        missing = axes - _varying_axes(leaf)
        return jax.lax.pcast(leaf, tuple(sorted(missing)), to="varying") if missing else leaf

    return jax.tree.map(cast, tree)


def _varying_axes(leaf) -> set[str]:
    """The manual mesh axes ``leaf`` varies over (``manual_axis_type.varying``; ``vma``
    in JAX releases before it)."""
    aval = jax.typeof(leaf)
    kind = getattr(aval, "manual_axis_type", None)
    return set(kind.varying if kind is not None else getattr(aval, "vma", ()))
