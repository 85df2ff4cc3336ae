"""The driver: run a cell over time with ``jax.lax.scan``.

Shapes: ``[*batch, T, I]`` at the public boundary (batch-major, any number of leading
batch dims, possibly none), ``[T, *batch, ...]`` inside the loop.
"""

from __future__ import annotations

import numbers
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from rnnjax import fused
from rnnjax.cells.base import Array, Cell, PyTree, check_carry, check_params
from rnnjax.distributed import DATA


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
    remat: int | bool | None = None,
) -> tuple[PyTree, Array]:
    """Run ``cell`` over the time axis of ``xs``.

    ``cell.project`` (the input part of every gate) runs as one matmul before the loop
    on GPUs and TPUs and, on a CPU, for an ungated cell (the Elman RNN); a gated cell's
    runs per step inside the loop on a CPU, where that measured faster
    (:func:`hoist_projection`). ``cell.recur`` runs inside ``lax.scan``.

    Many devices: under a mesh with an axis named ``"data"`` (``jax.set_mesh``, which
    :func:`rnnjax.distributed.parallel_step` sets for its ``"data"`` and ``"sharded"``
    layouts) whose size divides the first batch dimension, the loop runs under
    ``shard_map``, each device over its slice of the batch, and the parameters'
    gradient is summed over the devices once, after the loop. (Left to XLA's
    partitioner, the backward pass sums it at every time step.) ``scan`` also runs
    inside a user's own ``shard_map``, the default zero carry included.

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
      unroll: a positive int or a bool, passed to ``lax.scan`` (both loops of
        ``vjp="fused"``); measure before raising it (on this project's 2-core CPU,
        ``unroll=8`` made the LSTM and GRU training steps 0.49-0.79x as fast:
        benchmarks/README.md).
      time_major: layout of ``xs`` and of the returned ``ys``.
      perturbation: a :class:`Perturbation` of zeros, for gradient-flow diagnostics.
      return_carries: return every step's carry (padded steps hold the last valid
        one) in place of ``ys``, with the time axis where ``ys`` would have it.
      vjp: how reverse-mode gradients are formed. ``"autodiff"``: JAX differentiates
        the loop step by step. ``"fused"``: the backward loop keeps only ``dh W_h^T``
        and ``dW_h`` is one matmul after it (:mod:`rnnjax.fused`; needs
        ``cell.recur_z``, one dtype, no ``perturbation`` or
        ``return_carries``; no forward-mode ``jax.jvp``). ``"auto"`` (default):
        ``"fused"`` wherever it applies, ``"autodiff"`` elsewhere (:func:`auto_vjp`).
        Measured training steps: on an H200 the fused backward was 1.16-1.35x faster
        than JAX's for every cell and benchmark size (and took less memory); on this
        project's 2-core CPU, with each cell's backward written out
        (``cell.recur_z_vjp``), it was 1.06-1.17x faster at 7 of the 9 benchmark
        sizes and cells, 0.97x and 1.00x at the other two (medium LSTM and GRU;
        README, "Speed"). Both give the same numbers up to rounding. Forward-mode
        differentiation (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``) through
        ``scan`` needs ``vjp="autodiff"``.
      remat: rematerialise over chunks of time, for long sequences. An integer ``k``:
        the backward pass keeps the carry at every ``k``-th step and recomputes the
        steps in between, chunk by chunk, instead of keeping every step's
        intermediates. ``True``: ``k = ceil(sqrt(T))``, so what is kept grows like
        ``sqrt(T)`` rather than ``T``, for one more forward pass in the training step
        (about 4/3 of its arithmetic). ``None`` / ``False`` (default): keep everything.
        The same numbers as without it; inputs, outputs and their gradients still take
        memory linear in ``T``. Not with ``vjp="fused"``.

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
    # What cell.init makes for this input size, shapes only (None for a cell whose init
    # cannot be traced that way): params of another cell or size get a clear error.
    expected = _expected_params(cell, xs.shape[-1])
    if expected is not None:
        check_params(cell, params, expected, shapes=False)
        try:
            check_params(cell, params, expected, shapes=True)
        except ValueError:
            w_x = getattr(params, "w_x", None)
            if w_x is not None and jnp.ndim(w_x) == 2 and jnp.shape(w_x)[0] != xs.shape[-1]:
                # xs of another feature size than the params: the cell's own error.
                jax.eval_shape(cell.project, params, xs)
            raise
    # Shape-only trace of the projection: raises the cell's own feature-size error
    # against the shape the caller gave, before any transpose.
    jax.eval_shape(cell.project, params, xs)

    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], xs_tm.shape[1:-1]
    dtype = jax.tree.leaves(jax.eval_shape(cell.project, params, xs_tm))[0].dtype

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

    if not isinstance(unroll, bool) and (not isinstance(unroll, numbers.Integral) or unroll < 1):
        raise ValueError(f"unroll must be a bool or a positive int; got {unroll!r}.")
    if vjp not in VJPS:
        raise ValueError(f"vjp must be one of {VJPS}; got {vjp!r}.")
    chunk = _chunk_length(remat, num_steps)

    def blockers():
        found = _fused_blockers(cell, params, dtype, carry, perturbation, return_carries)
        if chunk:
            found.append(f"remat={remat!r} (the fused backward keeps its own residuals)")
        return found

    if vjp == "auto":  # fused where it applies, else autodiff
        vjp = "fused" if auto_vjp() == "fused" and not blockers() else "autodiff"
    elif vjp == "fused" and (found := blockers()):
        raise ValueError(f"vjp='fused' does not apply here: {'; '.join(found)}.")
    eps_carry, eps_params = perturbation if perturbation is not None else (None, None)
    for name, eps, like in (("carry", eps_carry, carry), ("params", eps_params, params)):
        if eps is None:
            continue
        want = jax.tree.map(lambda a: (num_steps,) + jnp.shape(a), like)
        got = jax.tree.map(jnp.shape, eps)
        same = jax.tree.structure(got) == jax.tree.structure(want)
        if not same or jax.tree.leaves(got) != jax.tree.leaves(want):
            raise ValueError(
                f"perturbation.{name} must have the {name}'s shapes with a leading time "
                f"axis (time-major), {want}; got {got}."
            )
    # Where the input projection runs (hoist_projection says why). A perturbation
    # (diagnostics) always sees the hoisted projection.
    in_loop = perturbation is None and not hoist_projection(cell)

    def loop(params, xs_tm, carry, mask):
        """``(final_carry, ys)``, time-major."""
        # Inside shard_map the loop's carry comes out varying over every manual axis
        # its inputs vary over, and lax.scan rejects a carry that does not (zeros made
        # by initial_carry do not). Parameters replicated over those axes are cast too,
        # here, so the backward's psum of their gradient runs once after the loop, not
        # at every step. The values are unchanged.
        carry, params = _vary_like((carry, params), xs_tm, params, mask, perturbation)
        if vjp == "fused":
            return fused.fused_scan(cell, reverse, in_loop, unroll, params, xs_tm, carry, mask)
        xp = xs_tm if in_loop else cell.project(params, xs_tm)

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

        # Reverse over time with a mask: the padded tail comes first and is inert, so
        # the carry reaches step lengths-1 untouched; no per-example gather is needed.
        inputs = (xp, mask, eps_carry, eps_params)
        if chunk:
            return _chunked_scan(body, carry, inputs, num_steps, chunk, reverse, unroll)
        return jax.lax.scan(body, carry, inputs, reverse=reverse, unroll=unroll)

    if (mesh := _loop_mesh(batch_shape, perturbation)) is not None:
        loop = _per_device(loop, mesh)
    final_carry, ys = loop(params, xs_tm, carry, mask)
    if not time_major:
        ys = jax.tree.map(lambda a: jnp.moveaxis(a, 0, len(batch_shape)), ys)
    return final_carry, ys


def _loop_mesh(batch_shape: tuple[int, ...], perturbation) -> jax.sharding.AbstractMesh | None:
    """The mesh to run the loop on device by device, or ``None``.

    Under a mesh with an axis named ``"data"`` (:data:`rnnjax.distributed.DATA`; set by
    ``jax.set_mesh``, as :func:`rnnjax.distributed.parallel_step` does), whose size
    divides the first batch dimension, and outside a ``shard_map`` over that axis.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or perturbation is not None or not batch_shape or DATA not in mesh.axis_names:
        return None
    if DATA in mesh.manual_axes or mesh.shape[DATA] == 1 or batch_shape[0] % mesh.shape[DATA]:
        return None
    return mesh


def _per_device(loop, mesh):
    """``loop`` run by every device of ``mesh``'s data axis on its slice of the batch.

    Run by XLA's partitioner as one program, a loop over a batch split across devices
    sums the recurrent weights' gradient over the devices at every step of the backward
    pass. Under ``shard_map`` the loop is each device's own; the parameters' gradient is
    summed once, after it. (``benchmarks/scaling.py --devices 1,2 --seq_len 256
    --batch_size 32`` on 2 host devices of a 2-core CPU: the data layout at 0.97x one
    device's throughput before, 1.59x after; ``results/scaling/small-batch``.)
    """
    batch = P(None, DATA)  # time-major: [T, batch, ...]
    return jax.shard_map(
        loop,
        mesh=mesh,
        in_specs=(P(), batch, P(DATA), batch),
        out_specs=(P(DATA), batch),
        axis_names={DATA},
    )


VJPS = ("auto", "fused", "autodiff")


def _vary_like(tree: PyTree, *refs) -> PyTree:
    """``tree`` with every leaf cast to vary over the manual mesh axes (shard_map) any
    leaf of ``refs`` varies over; unchanged outside shard_map."""
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


def _chunk_length(remat, num_steps: int) -> int:
    """The chunk length ``remat`` asks for (0: no rematerialisation)."""
    if remat is None or remat is False:
        return 0
    if remat is True:
        return max(1, int(np.ceil(np.sqrt(num_steps))))
    if isinstance(remat, (int, np.integer)) and remat >= 1:
        return min(int(remat), max(num_steps, 1))
    raise ValueError(
        f"remat must be None, False, True or a chunk length >= 1 (steps); got {remat!r}."
    )


def _chunked_scan(body, carry, inputs, num_steps: int, chunk: int, reverse: bool, unroll):
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


def auto_vjp() -> str:
    """What ``vjp="auto"`` uses where the fused backward applies: ``"fused"`` (measured
    faster on a GPU and on this project's CPU). ``RNNJAX_VJP=fused`` / ``autodiff``
    overrides, for measuring."""
    forced = _env_choice("RNNJAX_VJP", ("fused", "autodiff"))
    return "fused" if forced is None else forced


def hoist_projection(cell: Cell | None = None) -> bool:
    """Whether ``cell``'s input projection runs as one matmul before the time loop
    rather than per step inside it.

    Before it on GPUs and TPUs. On a CPU, inside it for a gated cell (LSTM, GRU) and
    before it for an ungated one (``cell.gates is None``: the Elman RNN), as measured
    with the fused backward on a 2-core EPYC (``python benchmarks/run.py --backends
    rnnjax,rnnjax-hoisted,rnnjax-in-loop,torch --no-sweep``,
    ``results/benchmarks/placement-1ee7bdd``: Elman RNN medium training 64.9 ms hoisted
    against 70.1 ms in the loop; medium LSTM 229.7 against 211.6 ms).
    ``RNNJAX_HOIST=1`` / ``0`` overrides, for measuring.
    """
    forced = _env_choice("RNNJAX_HOIST", ("0", "1"))
    if forced is not None:
        return forced == "1"
    if jax.default_backend() != "cpu":
        return True
    return cell is not None and cell.gates is None


def _env_choice(name: str, allowed: tuple[str, ...]) -> str | None:
    """The value of the override ``name`` (``None`` when unset or empty); a value
    outside ``allowed`` is an error, never silently the default."""
    value = os.environ.get(name, "")
    if value == "":
        return None
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed} or unset; got {value!r}.")
    return value


def _fused_blockers(cell, params, dtype, carry, perturbation, return_carries) -> list[str]:
    reasons = []
    if not fused.supports(cell):
        reasons.append(f"the {cell.name} cell has no recur_z")
    elif not hasattr(params, "w_h"):
        reasons.append("params have no w_h")
    if perturbation is not None:
        reasons.append("a perturbation is given")
    if return_carries:
        reasons.append("return_carries=True")
    dtypes = {jnp.dtype(dtype)} | {jnp.result_type(a) for a in jax.tree.leaves(carry)}
    if hasattr(params, "w_h"):
        dtypes.add(jnp.result_type(params.w_h))
    if len(dtypes) > 1:
        reasons.append(f"mixed dtypes {sorted(map(str, dtypes))}")
    return reasons


def _expected_params(cell: Cell, input_size: int) -> PyTree | None:
    try:
        return jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
    except Exception:  # noqa: BLE001  (a user's cell with an init of another form)
        return None


def _check_lengths(lengths, batch_shape: tuple[int, ...], num_steps: int) -> Array:
    if isinstance(lengths, (list, tuple)):
        lengths = np.asarray(lengths)
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
