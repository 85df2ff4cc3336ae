"""The driver: validate, plan, run a cell over time.

Shapes: ``[*batch, T, I]`` at the public boundary (batch-major, any number of leading
batch dims, possibly none), ``[T, *batch, ...]`` inside the loop.

1. :func:`validate` checks the inputs at the boundary and puts them time-major.
2. :func:`plan` resolves a small frozen :class:`Plan` from what the cell declares
   (``cell.fused``, ``cell.gated``, ``cell.linear``), the backend and the explicit
   options: which loop, which backward, where the input projection runs, the remat
   chunk, ``unroll`` and the mesh. Nothing is read from environment variables.
3. The chosen implementation in :mod:`rnnjax.loops` or :mod:`rnnjax.fused` runs.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import fused, loops, persistent, regularize
from rnnjax.cells.base import Array, Cell, PyTree, check_carry, check_params
from rnnjax.checks import check_in_range

VJPS = ("auto", "fused", "autodiff")
LOOPS = ("auto", "sequential", "associative", "persistent")
# unroll=None: lax.scan's unroll on each backend. On an H200, unroll=8 made every
# training step of the benchmark 1.25-2.08x and every inference 1.16-1.89x faster (each
# loop step there launches its kernels from the host; results/gpu-h200); on a 2-core
# CPU it made the LSTM and GRU training steps 0.49-0.79x as fast (benchmarks/README.md).
DEFAULT_UNROLL = {"gpu": 8}
BATCH_AXIS = "data"
# scan's keyword arguments that choose how it runs, not what it computes.
PLAN_OPTIONS = ("vjp", "loop", "hoist", "unroll", "remat", "mesh", "batch_axis")


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


class Plan(NamedTuple):
    """How :func:`scan` runs a cell, resolved by :func:`plan` before anything runs.

    Attributes:
      loop: ``"sequential"`` (``lax.scan``), ``"associative"`` (a parallel prefix
        scan, for a cell that declares ``linear``) or ``"persistent"`` (the forward
        and the backward loop as one Pallas kernel each, :mod:`rnnjax.persistent`).
      backward: ``"fused"`` (:mod:`rnnjax.fused`; the persistent loop's backward is
        the same, in its kernel) or ``"autodiff"``.
      hoist: the input projection runs as one matmul before the loop (else per step).
      remat: chunk length of the rematerialised loop; 0 for none.
      unroll: ``lax.scan``'s ``unroll``.
      mesh: the mesh whose ``batch_axis`` the loop is split over, device by device
        (``shard_map``), or ``None``.
      batch_axis: that axis's name.
      notes: why a faster path did not apply, for a reader of the plan.
    """

    loop: str
    backward: str
    hoist: bool
    remat: int
    unroll: int | bool
    mesh: jax.sharding.AbstractMesh | jax.sharding.Mesh | None
    batch_axis: str
    notes: tuple[str, ...] = ()


class Problem(NamedTuple):
    """The inputs, validated and time-major: what :func:`plan` and the loops read."""

    xs: Array  # [T, *batch, I]
    carry: PyTree
    mask: Array | None  # [T, *batch], True on valid steps
    num_steps: int
    batch_shape: tuple[int, ...]
    dtype: jnp.dtype


def scan(
    cell: Cell,
    params: PyTree,
    xs: Array,
    carry: PyTree | None = None,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    perturbation: Perturbation | None = None,
    return_carries: bool = False,
    regularizer: regularize.Regularizer | None = None,
    key: Array | None = None,
    vjp: str = "auto",
    loop: str = "auto",
    hoist: bool | None = None,
    unroll: int | bool | None = None,
    remat: int | bool | None = None,
    mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh | None = None,
    batch_axis: str = BATCH_AXIS,
) -> tuple[PyTree, Array]:
    """Run ``cell`` over the time axis of ``xs``.

    Args:
      cell: a :class:`~rnnjax.cells.base.Cell`.
      params: the cell's params, from ``cell.init``.
      xs: inputs ``[*batch, T, I]``, or ``[T, *batch, I]`` with ``time_major=True``.
      carry: initial carry for batch shape ``*batch``; zeros if ``None``.
      lengths: optional integer array ``[*batch]`` of valid lengths in ``[0, T]``.
        Steps ``t >= lengths`` are padding: they leave the carry unchanged and emit
        zeros, so the final carry is each sequence's carry after its last valid step
        (the initial carry for a zero-length sequence). Concrete lengths are checked
        at once; traced ones (inside ``jit``) only under
        ``jax.experimental.checkify.checkify``, so a compiled step holds no host
        callback (README, "Checks").
      reverse: run from the last valid step to the first. With ``lengths`` this
        reverses only the valid part of each sequence (the padded tail is skipped, not
        read first), which is what a bidirectional layer over a padded batch needs.
        Outputs stay aligned with the inputs: ``ys[..., t, :]`` belongs to ``xs[..., t, :]``.
      time_major: layout of ``xs`` and of the returned ``ys``.
      perturbation: a :class:`Perturbation` of zeros, for gradient-flow diagnostics.
      return_carries: return every step's carry (padded steps hold the last valid
        one) in place of ``ys``, with the time axis where ``ys`` would have it.
      regularizer: a :class:`~rnnjax.regularize.Regularizer` (zoneout, variational
        recurrent dropout, weight drop; :mod:`rnnjax.regularize`), or ``None``.
      key: the PRNG key its masks are drawn from; ``None``: deterministic (zoneout's
        expectation, the dropouts off), as at evaluation.

    The plan's options (:func:`plan` resolves them; each default is measured):
      vjp: ``"fused"``: the backward loop keeps only ``dh W_h^T`` and ``dW_h`` is one
        matmul after it (:mod:`rnnjax.fused`; needs ``cell.fused``, one dtype, no
        ``perturbation``, ``return_carries`` or ``remat``; no forward-mode ``jax.jvp``).
        ``"autodiff"``: JAX differentiates the loop step by step. ``"auto"``
        (default): fused wherever it applies. Both give the same numbers up to
        rounding; forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``,
        ``jax.hessian``) needs ``"autodiff"``.
      loop: ``"sequential"`` (``lax.scan``), ``"associative"`` (a parallel prefix
        scan; needs ``cell.linear``) or ``"auto"``: associative on a GPU or TPU
        where the cell declares a linear recurrence and ``remat`` is off, sequential
        elsewhere (on a CPU, which runs the scan's work and not its depth, the
        associative loop measured 1-3x slower: ``benchmarks/lengths.py``).
        ``"persistent"``: the whole forward loop and the whole backward loop as one
        Pallas kernel each, the recurrent weight loaded once (:mod:`rnnjax.persistent`;
        needs ``cell.fused.vjp``, one dtype, the projection hoisted, no
        ``perturbation``, ``return_carries`` or ``remat``). Never chosen by ``"auto"``:
        not yet measured faster on a GPU; off a GPU it runs in Pallas's interpret mode
        (correct, and slow: for tests).
      hoist: ``True``: ``cell.project`` runs as one matmul before the loop; ``False``:
        per step inside it; ``None`` (default): before it on GPUs and TPUs, for an
        ungated cell and for a linear recurrence, inside it for another gated cell on a
        CPU, where that measured faster.
      unroll: ``lax.scan``'s ``unroll`` (both loops of the fused backward); ``None``:
        8 on a GPU, 1 elsewhere (:data:`DEFAULT_UNROLL`).
      remat: rematerialise over chunks of time, for long sequences. An integer ``k``:
        the backward pass keeps the carry at every ``k``-th step and recomputes the
        steps in between; ``True``: ``k = ceil(sqrt(T))``; ``None`` / ``False``:
        keep everything. The same numbers, for about 4/3 of the arithmetic.
      mesh, batch_axis: run the loop device by device (``shard_map``) over the mesh
        axis ``batch_axis`` (default ``"data"``), each device over its slice of the
        first batch dimension, the parameters' gradient summed once after the loop.
        ``None``: the mesh set with ``jax.set_mesh`` (as
        :func:`rnnjax.distributed.parallel_step` does), where it has that axis and its
        size divides the batch. ``scan`` also runs inside a user's own ``shard_map``.

    Returns:
      ``(final_carry, ys)`` with ``ys [*batch, T, H]`` (or ``[T, *batch, H]``).

    Raises:
      ValueError: on a wrong input rank or feature size, ``lengths`` of the wrong
        shape, dtype or range, a ``carry`` or ``params`` that do not match the cell,
        or options that do not apply (each error names the argument).
    """
    problem = validate(cell, params, xs, carry, lengths=lengths, time_major=time_major)
    regularizer = regularize.check(regularizer, cell)
    # Once per call, inside whatever is differentiated (Cell.prepare): the loop reads
    # the derived weights, and their gradient goes back through prepare once.
    weights = cell.prepared(params)
    if regularizer is not None:
        cell, weights, xs_masked = regularize.apply(
            regularizer, cell, weights, problem.xs, problem.carry, key
        )
        problem = problem._replace(xs=xs_masked)
    chosen = _resolve(
        cell, weights, problem, perturbation, return_carries,
        vjp=vjp, loop=loop, hoist=hoist, unroll=unroll, remat=remat, mesh=mesh,
        batch_axis=batch_axis,
    )  # fmt: skip
    final, ys = run(cell, weights, problem, chosen, reverse, perturbation, return_carries)
    if not time_major:
        ys = jax.tree.map(lambda a: jnp.moveaxis(a, 0, len(problem.batch_shape)), ys)
    return final, ys


def plan(
    cell: Cell,
    params: PyTree,
    xs: Array,
    carry: PyTree | None = None,
    *,
    lengths: Array | None = None,
    time_major: bool = False,
    perturbation: Perturbation | None = None,
    return_carries: bool = False,
    **options,
) -> Plan:
    """The :class:`Plan` :func:`scan` would run with the same arguments, without running
    anything: ``rnnjax.plan(cell, params, xs)`` shows the loop, backward, projection
    placement, remat, unroll and mesh chosen here, and ``notes`` says why a faster path
    did not apply. ``options`` are scan's plan options (``vjp``, ``loop``, ``hoist``,
    ``unroll``, ``remat``, ``mesh``, ``batch_axis``)."""
    problem = validate(cell, params, xs, carry, lengths=lengths, time_major=time_major)
    weights = jax.eval_shape(cell.prepared, params)
    return _resolve(cell, weights, problem, perturbation, return_carries, **options)


# ------------------------------------------------------------------ 1. validate


def validate(
    cell: Cell, params: PyTree, xs, carry=None, *, lengths=None, time_major: bool = False
) -> Problem:
    """Check ``params``, ``xs``, ``carry`` and ``lengths`` against the cell; return them
    time-major with the validity mask (see :func:`scan` for the errors)."""
    xs = jnp.asarray(xs)
    layout = "[T, *batch, I]" if time_major else "[*batch, T, I]"
    if xs.ndim < 2:
        raise ValueError(
            f"xs must have shape {layout} (at least 2 dims: time and features); "
            f"got shape {tuple(xs.shape)}."
        )
    _check_params(cell, params, xs)
    # Shape-only trace of the projection: the cell's own feature-size error names the
    # shape the caller gave, before any transpose.
    weights = jax.eval_shape(cell.prepared, params)
    jax.eval_shape(cell.project, weights, xs)

    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], tuple(xs_tm.shape[1:-1])
    dtype = jax.tree.leaves(jax.eval_shape(cell.project, weights, xs_tm))[0].dtype
    if carry is None:
        carry = cell.initial_carry(batch_shape, dtype=dtype)
    else:
        check_carry(carry, cell.initial_carry(batch_shape, dtype=dtype), "carry")
    mask = None
    if lengths is not None:
        lengths = check_lengths(lengths, batch_shape, num_steps)
        steps = jnp.arange(num_steps).reshape((num_steps,) + (1,) * len(batch_shape))
        mask = steps < lengths  # [T, *batch]
    return Problem(xs_tm, carry, mask, num_steps, batch_shape, jnp.dtype(dtype))


def check_lengths(lengths, batch_shape: tuple[int, ...], num_steps: int) -> Array:
    """``lengths`` as an integer array of ``batch_shape``, its values in ``[0, T]``
    (:func:`rnnjax.checks.check_in_range`: traced values only under ``checkify``)."""
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
    check_in_range("lengths", lengths, 0, num_steps + 1, f"[0, T], T = {num_steps}")
    return jnp.asarray(lengths)


def _check_params(cell: Cell, params: PyTree, xs: Array) -> None:
    """``params`` against what ``cell.init`` makes for ``xs``'s feature size (shapes
    only; skipped for a cell whose ``init`` cannot be traced that way). Params of this
    cell built for another input size are the input's error: the cell's own, from
    ``project``, or one naming ``xs``."""
    input_size = xs.shape[-1]
    expected = _expected_params(cell, input_size)
    if expected is None:
        return
    check_params(cell, params, expected, shapes=False)
    got = [jnp.shape(a) for a in jax.tree.leaves(params)]
    want = [a.shape for a in jax.tree.leaves(expected)]
    if got == want:
        return
    # Which leaves depend on the input size: those that change with it.
    other = _expected_params(cell, input_size + 1)
    depends = [
        a.shape != b.shape for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(other))
    ]
    if any(depends) and all(g == w for g, w, d in zip(got, want, depends) if not d):
        # The cell's own error, where it has one.
        jax.eval_shape(lambda p, x: cell.project(cell.prepared(p), x), params, xs)
        raise ValueError(
            f"xs has feature size {input_size} (shape {tuple(xs.shape)}), but the params "
            f"were made for another input size: expected shapes {want}; got {got}."
        )
    check_params(cell, params, expected, shapes=True)


def _expected_params(cell: Cell, input_size: int) -> PyTree | None:
    try:
        return jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
    except Exception:  # noqa: BLE001  (a user's cell with an init of another form)
        return None


# ------------------------------------------------------------------ 2. plan


def _resolve(
    cell: Cell,
    params: PyTree,
    problem: Problem,
    perturbation: Perturbation | None,
    return_carries: bool,
    *,
    vjp: str = "auto",
    loop: str = "auto",
    hoist: bool | None = None,
    unroll: int | bool | None = None,
    remat: int | bool | None = None,
    mesh=None,
    batch_axis: str = BATCH_AXIS,
) -> Plan:
    """The plan for ``problem``: each option's explicit value, checked, or its measured
    default for this cell and backend."""
    if vjp not in VJPS:
        raise ValueError(f"vjp must be one of {VJPS}; got {vjp!r}.")
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}; got {loop!r}.")
    if hoist is not None and not isinstance(hoist, bool):
        raise ValueError(f"hoist must be True, False or None; got {hoist!r}.")
    if unroll is not None and not isinstance(unroll, bool):
        if not isinstance(unroll, numbers.Integral) or unroll < 1:
            raise ValueError(f"unroll must be None, a bool or a positive int; got {unroll!r}.")
        unroll = int(unroll)
    chunk = _chunk_length(remat, problem.num_steps)
    _check_perturbation(perturbation, problem, params)
    backend = jax.default_backend()
    notes = []

    if loop == "persistent":
        return _persistent_plan(
            cell, params, problem, perturbation, return_carries, chunk, vjp, hoist, unroll,
            mesh, batch_axis,
        )  # fmt: skip
    could = loop == "auto" and cell.linear is not None and not chunk
    if could and backend == "cpu":
        notes.append(
            "sequential loop: on a CPU the associative scan measured 1-3x slower than the "
            "sequential loop (benchmarks/lengths.py); loop='associative' forces it"
        )
    if loop == "associative" or (could and backend != "cpu"):
        if cell.linear is None:
            raise ValueError(
                f"loop='associative' needs a cell that declares a linear recurrence "
                f"(cell.linear); the {cell.name} cell does not."
            )
        if chunk:
            raise ValueError(f"remat={remat!r} does not apply to loop='associative'.")
        if vjp == "fused":
            raise ValueError("vjp='fused' does not apply to loop='associative'.")
        if hoist is False:
            raise ValueError("hoist=False does not apply to loop='associative'.")
        loop, backward, hoist = "associative", "autodiff", True
    else:
        loop = "sequential"
        blockers = _fused_blockers(cell, params, problem, perturbation, return_carries, chunk)
        if vjp == "fused" and blockers:
            raise ValueError(f"vjp='fused' does not apply here: {'; '.join(blockers)}.")
        backward = "fused" if vjp != "autodiff" and not blockers else "autodiff"
        if vjp == "auto" and blockers:
            notes.append("autodiff backward: " + "; ".join(blockers))
        if perturbation is not None:
            # Diagnostics perturb the params recur sees: the projection stays outside.
            if hoist is False:
                raise ValueError("hoist=False does not apply with a perturbation.")
            hoist = True
        elif hoist is None:
            # A linear recurrence's gates read only the input: hoisted, its
            # sequential loop is the associative one's work in a different order
            # (measured 1.9x faster for the RG-LRU's training step on the CPU).
            hoist = backend != "cpu" or not cell.gated or cell.linear is not None
    if unroll is None:
        unroll = DEFAULT_UNROLL.get(backend, 1)
    return Plan(
        loop, backward, hoist, chunk, unroll,
        _loop_mesh(mesh, batch_axis, problem.batch_shape, perturbation), batch_axis,
        tuple(notes),
    )  # fmt: skip


def _persistent_plan(
    cell, params, problem, perturbation, return_carries, chunk, vjp, hoist, unroll, mesh,
    batch_axis,
) -> Plan:  # fmt: skip
    """The plan of ``loop="persistent"``, or a ValueError naming what rules it out."""
    blockers = _fused_blockers(cell, params, problem, perturbation, return_carries, chunk)
    if fused.supports(cell) and not persistent.supports(cell):
        blockers.append(f"the {cell.name} cell writes no step backward (cell.fused.vjp)")
    if vjp == "autodiff":
        blockers.append("vjp='autodiff' (the persistent loop's backward is its own kernel)")
    if hoist is False:
        blockers.append("hoist=False (the kernel reads the hoisted projection)")
    if not (unroll is None or unroll is False or (unroll == 1 and unroll is not True)):
        blockers.append(f"unroll={unroll!r} (the kernel's loop is not lax.scan's)")
    if blockers:
        raise ValueError(f"loop='persistent' does not apply here: {'; '.join(blockers)}.")
    notes = ()
    if persistent.interpret_default():
        notes = ("persistent loop in Pallas's interpret mode (no GPU): correct, not fast",)
    return Plan(
        "persistent", "fused", True, 0, 1, _loop_mesh(mesh, batch_axis, problem.batch_shape, None),
        batch_axis, notes,
    )  # fmt: skip


def _fused_blockers(cell, params, problem, perturbation, return_carries, chunk) -> list[str]:
    reasons = []
    if not fused.supports(cell):
        reasons.append(f"the {cell.name} cell declares no fused recurrence (cell.fused)")
    if perturbation is not None:
        reasons.append("a perturbation is given")
    if return_carries:
        reasons.append("return_carries=True")
    if chunk:
        reasons.append("remat (the fused backward keeps its own residuals)")
    dtypes = {problem.dtype} | {jnp.result_type(a) for a in jax.tree.leaves(problem.carry)}
    if fused.supports(cell):
        dtypes.add(jnp.result_type(getattr(params, cell.fused.weight)))
    if len(dtypes) > 1:
        reasons.append(f"mixed dtypes {sorted(map(str, dtypes))}")
    return reasons


def _chunk_length(remat, num_steps: int) -> int:
    """The chunk length ``remat`` asks for (0: no rematerialisation)."""
    if remat is None or remat is False:
        return 0
    if remat is True:
        return max(1, int(np.ceil(np.sqrt(num_steps))))
    if isinstance(remat, numbers.Integral) and remat >= 1:
        return min(int(remat), max(num_steps, 1))
    raise ValueError(
        f"remat must be None, False, True or a chunk length >= 1 (steps); got {remat!r}."
    )


def _check_perturbation(perturbation, problem: Problem, params) -> None:
    if perturbation is None:
        return
    for name, eps, like in (
        ("carry", perturbation.carry, problem.carry),
        ("params", perturbation.params, params),
    ):
        if eps is None:
            continue
        want = jax.tree.map(lambda a: (problem.num_steps,) + jnp.shape(a), like)
        got = jax.tree.map(jnp.shape, eps)
        same = jax.tree.structure(got) == jax.tree.structure(want)
        if not same or jax.tree.leaves(got) != jax.tree.leaves(want):
            raise ValueError(
                f"perturbation.{name} must have the {name}'s shapes with a leading time "
                f"axis (time-major), {want}; got {got}."
            )


def _loop_mesh(mesh, axis: str, batch_shape: tuple[int, ...], perturbation):
    """The mesh to run the loop on device by device, or ``None``.

    An explicit ``mesh`` must have ``axis``, of a size that divides the first batch
    dimension (a ``ValueError`` otherwise). Without one, the mesh set by
    ``jax.set_mesh`` is used where it fits, outside a ``shard_map`` over ``axis``.
    """
    explicit = mesh is not None
    if not isinstance(axis, str):
        raise ValueError(f"batch_axis must be a mesh axis name (str); got {axis!r}.")
    if explicit:
        abstract = getattr(mesh, "abstract_mesh", mesh)
        if axis not in abstract.axis_names:
            raise ValueError(
                f"mesh has no axis {axis!r} (batch_axis); its axes: {abstract.axis_names}."
            )
        if not batch_shape or batch_shape[0] % abstract.shape[axis]:
            raise ValueError(
                f"the mesh's {axis!r} axis ({abstract.shape[axis]} devices) must divide the "
                f"first batch dimension; got batch shape {batch_shape}."
            )
        if perturbation is not None:
            raise ValueError("mesh does not apply with a perturbation (diagnostics).")
        return mesh
    abstract = jax.sharding.get_abstract_mesh()
    if abstract.empty or perturbation is not None or not batch_shape:
        return None
    if axis not in abstract.axis_names or axis in abstract.manual_axes:
        return None
    if abstract.shape[axis] == 1 or batch_shape[0] % abstract.shape[axis]:
        return None
    return abstract


# ------------------------------------------------------------------ 3. run


def run(
    cell: Cell,
    params: PyTree,
    problem: Problem,
    plan: Plan,
    reverse: bool = False,
    perturbation: Perturbation | None = None,
    return_carries: bool = False,
) -> tuple[PyTree, Array]:
    """Run ``plan`` over ``problem``: ``(final_carry, ys)``, time-major."""
    eps_carry, eps_params = perturbation if perturbation is not None else (None, None)

    def loop(params, xs, carry, mask):
        carry, params = loops.vary_like((carry, params), xs, params, mask, perturbation)
        if plan.loop == "associative":
            xp = cell.project(params, xs)
            return loops.associative(
                cell, params, xp, carry, mask, reverse=reverse, eps_carry=eps_carry,
                return_carries=return_carries,
            )  # fmt: skip
        if plan.loop == "persistent":
            return persistent.persistent_scan(
                cell, reverse, persistent.DEFAULT_BLOCK_BATCH, persistent.interpret_default(),
                params, xs, carry, mask,
            )  # fmt: skip
        if plan.backward == "fused":
            return fused.fused_scan(
                cell, reverse, not plan.hoist, plan.unroll, params, xs, carry, mask
            )
        return loops.sequential(
            cell, params, xs if not plan.hoist else cell.project(params, xs), carry, mask,
            reverse=reverse, in_loop=not plan.hoist, unroll=plan.unroll, chunk=plan.remat,
            eps_carry=eps_carry, eps_params=eps_params, return_carries=return_carries,
        )  # fmt: skip

    if plan.mesh is not None:
        loop = loops.per_device(loop, plan.mesh, plan.batch_axis)
    return loop(params, problem.xs, problem.carry, problem.mask)
