"""Gradient-flow diagnostics: how the gradient travels back through time in a cell.

Everything here runs through :func:`rnnjax.scan` (the same driver as training) and is
``jit``- and ``vmap``-able (batch over examples, seeds or weight scales). Shapes:
``T`` time steps, ``H`` hidden units, ``S`` carry size (``H``; ``2H`` for the LSTM's
``(h, c)``), ``*batch`` leading example dims.

- :func:`hidden_grads`: ``dL/dh_t`` (and ``dL/dc_t``) for every ``t`` from **one**
  backward pass, by differentiating with respect to a zero perturbation of each step's
  carry (:class:`rnnjax.Perturbation`).
- :func:`jacobian_products`: ``dh_T/dh_t`` for every ``t``: Frobenius norm and largest
  / smallest singular values against the distance ``T - t``. ``H`` vector-Jacobian
  products give every ``t`` at once; ``method="matrix_free"`` instead estimates the
  norm and the top singular value with random probes and power iteration, never
  forming a Jacobian (for large ``H``).
- :func:`step_jacobians`: the one-step Jacobian ``dh_t/dh_{t-1}`` and its spectral norm.
- :func:`gate_stats`: gate activations over time (LSTM: input, forget, output; GRU:
  reset, update), read from the cell's own ``gates``.
- :func:`weight_grad_by_lag`: the terms of ``dL/dW_h`` (all recurrent-side params) by
  time step, i.e. by lag ``T - t``, which sum to the full gradient.
- :func:`decay_rate`: the per-step slope of ``log ||dL/dh_t||`` against distance.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rnnjax.cells.base import Array, Cell, PyTree
from rnnjax.scan import Perturbation, scan

LossFn = Callable[[Array, PyTree], Array]  # loss_fn(ys [*batch, T, H], final_carry) -> scalar


def _zeros_over_time(tree: PyTree, num_steps: int) -> PyTree:
    return jax.tree.map(lambda a: jnp.zeros((num_steps,) + jnp.shape(a), jnp.result_type(a)), tree)


def _num_steps_and_batch(xs: Array) -> tuple[int, tuple[int, ...]]:
    if jnp.ndim(xs) < 2:
        raise ValueError(f"xs must have shape [*batch, T, I]; got shape {jnp.shape(xs)}.")
    return jnp.shape(xs)[-2], tuple(jnp.shape(xs)[:-2])


def _start_carry(cell: Cell, params: PyTree, xs: Array, carry, batch_shape) -> PyTree:
    """The given carry, or zeros in the dtype the cell computes ``xs`` in."""
    if carry is not None:
        return carry
    project = lambda p, x: cell.project(cell.prepared(p), x)  # noqa: E731
    dtype = jax.tree.leaves(jax.eval_shape(project, params, xs))[0].dtype
    return cell.initial_carry(batch_shape, dtype=dtype)


def _entering_carries(cell, params, xs_tm, start, lengths=None) -> PyTree:
    """``[T, ...]`` carries entering each step (``start``, then the carry after t-1)."""
    _, carries = scan(
        cell, params, xs_tm, start, lengths=lengths, time_major=True, return_carries=True
    )
    return jax.tree.map(lambda s, c: jnp.concatenate([s[None], c[:-1]]), start, carries)


def hidden_grads(
    cell: Cell,
    params: PyTree,
    xs: Array,
    loss_fn: LossFn,
    carry: PyTree | None = None,
    *,
    lengths: Array | None = None,
) -> tuple[Array, PyTree]:
    """``dL/dcarry_t`` for every step ``t`` from one backward pass.

    Args:
      cell, params, xs, carry, lengths: as for :func:`rnnjax.scan` (``xs [*batch, T, I]``).
      loss_fn: ``loss_fn(ys, final_carry) -> scalar``, ``ys [*batch, T, H]``.

    Returns:
      ``(loss, grads)``: ``grads`` is shaped like the carry with a leading time axis,
      ``[T, *batch, H]`` per field (for the LSTM, ``LSTMCarry(h=dL/dh_t, c=dL/dc_t)``):
      the total derivative of the loss with respect to the state after step ``t``.
    """
    num_steps, batch_shape = _num_steps_and_batch(xs)
    like = _start_carry(cell, params, xs, carry, batch_shape)
    eps = _zeros_over_time(like, num_steps)

    def f(eps):
        final, ys = scan(
            cell, params, xs, carry, lengths=lengths, perturbation=Perturbation(carry=eps)
        )
        return loss_fn(ys, final)

    return jax.value_and_grad(f)(eps)


def grad_norms(grads: PyTree) -> PyTree:
    """``||.||_2`` over the feature axis of each field: ``[T, *batch]`` per field."""
    return jax.tree.map(lambda g: jnp.linalg.norm(g, axis=-1), grads)


def decay_rate(norms: Array, *, skip: int = 0) -> tuple[Array, Array]:
    """Least-squares slope of ``ln ||dL/dh_t||`` against the distance ``T - t``.

    Args:
      norms: ``[T, ...]`` gradient norms, time first (a batch is averaged in log space).
      skip: ignore the ``skip`` steps nearest the loss (transients).

    Returns:
      ``(slope, factor)``: ``slope`` per step in natural-log units; ``factor =
      exp(slope)``, the geometric per-step multiplier (< 1: vanishing, > 1: exploding).
    """
    logs = jnp.log(jnp.maximum(norms, jnp.finfo(jnp.result_type(norms)).tiny))
    logs = logs.reshape(logs.shape[0], -1).mean(axis=1)
    num_steps = logs.shape[0]
    distance = (num_steps - 1 - jnp.arange(num_steps)).astype(logs.dtype)
    keep = distance >= skip
    d, y = jnp.where(keep, distance, 0.0), jnp.where(keep, logs, 0.0)
    n = keep.sum()
    d_mean, y_mean = d.sum() / n, y.sum() / n
    cov = jnp.sum(jnp.where(keep, (d - d_mean) * (y - y_mean), 0.0))
    var = jnp.sum(jnp.where(keep, (d - d_mean) ** 2, 0.0))
    slope = cov / var
    return slope, jnp.exp(slope)


def _final_state(cell: Cell, carry: PyTree) -> Array:
    return cell.output(carry)


def jacobian_products(
    cell: Cell,
    params: PyTree,
    xs: Array,
    carry: PyTree | None = None,
    *,
    method: str = "auto",
    num_probes: int = 16,
    num_iters: int = 20,
    key: Array | None = None,
) -> dict[str, Array]:
    """``J_t = dh_T / dh_t`` for every ``t`` of one sequence ``xs [T, I]``.

    ``h_t`` is the cell's output state after step ``t`` (for the LSTM the Jacobian is
    taken with respect to the whole state ``(h_t, c_t)``, ``[H, 2H]``, since ``h_t``
    alone does not determine the future).

    Args:
      method: ``"auto"`` (default): ``"closed_form"`` for a cell that declares a linear
        recurrence, else ``"exact"``. ``"closed_form"``: for ``s_t = a_t * s_{t-1} +
        b_t`` the state's Jacobian over the steps after ``t`` is the diagonal
        ``prod_{s > t} a_s`` (``a`` depends on the inputs only), mapped to the carry and
        the output by the cell's ``to_state`` / ``from_state`` / ``output``; no pass
        through the loop. ``"exact"``: ``H`` vector-Jacobian products (one per row of
        ``J``, all ``t`` at once) form every ``J_t`` and give the norm and every
        singular value.
        ``"matrix_free"``: ``num_probes`` random VJPs estimate ``||J_t||_F`` for all
        ``t`` (Hutchinson), and ``num_iters`` steps of power iteration with
        ``jax.jvp`` / ``jax.vjp`` give the largest singular value; no Jacobian is
        formed, memory is ``O(T S)``; the smallest singular value is not estimated
        (reported as NaN).
      key: randomness of the matrix-free probes.

    Returns:
      dict of ``[T]`` arrays, index ``t`` = step: ``"frobenius"``, ``"sigma_max"``,
      ``"sigma_min"``, and ``"distance"`` (``T - 1 - t``, 0 for the last step).
    """
    if jnp.ndim(xs) != 2:
        raise ValueError(f"xs must be one sequence of shape [T, I]; got shape {jnp.shape(xs)}.")
    num_steps = jnp.shape(xs)[0]
    like = _start_carry(cell, params, xs, carry, ())
    dtype = jax.tree.leaves(like)[0].dtype
    eps0 = _zeros_over_time(like, num_steps)
    flat0, unravel_t = _ravel_over_time(eps0)

    def final_h(flat_eps):  # [T, S] -> [H]
        final, _ = scan(
            cell, params, xs, carry, perturbation=Perturbation(carry=unravel_t(flat_eps))
        )
        return _final_state(cell, final)

    distance = num_steps - 1 - jnp.arange(num_steps)
    if method == "auto":
        method = "closed_form" if cell.linear is not None else "exact"
    if method == "closed_form":
        if cell.linear is None:
            raise ValueError(
                f"method='closed_form' needs a cell that declares a linear recurrence "
                f"(cell.linear); the {cell.name} cell does not."
            )
        jac = _linear_jacobians(cell, params, xs, like)
        sv = jnp.linalg.svd(jac, compute_uv=False)
        return {
            "frobenius": jnp.linalg.norm(jac, axis=(1, 2)),
            "sigma_max": sv[:, 0],
            "sigma_min": sv[:, -1],
            "distance": distance,
        }
    if method == "exact":
        _, vjp = jax.vjp(final_h, flat0)
        rows = jax.vmap(lambda e: vjp(e)[0])(jnp.eye(cell.hidden_size, dtype=dtype))  # [H, T, S]
        jac = jnp.moveaxis(rows, 1, 0)  # [T, H, S]
        sv = jnp.linalg.svd(jac, compute_uv=False)  # [T, min(H, S)]
        return {
            "frobenius": jnp.linalg.norm(jac, axis=(1, 2)),
            "sigma_max": sv[:, 0],
            "sigma_min": sv[:, -1],
            "distance": distance,
        }
    if method != "matrix_free":
        raise ValueError(
            f"method must be 'auto', 'closed_form', 'exact' or 'matrix_free'; got {method!r}."
        )
    key = jax.random.key(0) if key is None else key
    k_probe, k_power = jax.random.split(key)
    _, vjp = jax.vjp(final_h, flat0)
    probes = jax.random.normal(k_probe, (num_probes, cell.hidden_size), dtype)
    squares = jax.vmap(lambda v: jnp.sum(vjp(v)[0] ** 2, axis=-1))(probes)  # [P, T]
    frobenius = jnp.sqrt(squares.mean(0))

    def sigma_max_at(t, v0):
        def jv(v):  # J_t v, v in the state space [S]
            tangent = jnp.zeros_like(flat0).at[t].set(v)
            return jax.jvp(final_h, (flat0,), (tangent,))[1]

        def body(_, v):
            w = vjp(jv(v))[0][t]  # J_t^T J_t v
            return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)

        v = jax.lax.fori_loop(0, num_iters, body, v0 / jnp.linalg.norm(v0))
        return jnp.linalg.norm(jv(v))

    starts = jax.random.normal(k_power, flat0.shape, dtype)
    sigma_max = jax.lax.map(lambda a: sigma_max_at(*a), (jnp.arange(num_steps), starts))
    return {
        "frobenius": frobenius,
        "sigma_max": sigma_max,
        "sigma_min": jnp.full((num_steps,), jnp.nan, dtype),
        "distance": distance,
    }


def _linear_jacobians(cell: Cell, params: PyTree, xs: Array, like: PyTree) -> Array:
    """``[T, H, S]``: ``d output(carry_T) / d carry_t`` of a declared linear recurrence,
    from the products of ``a`` after each step (the diagonal the state is multiplied
    by), in log space where the cell gives its log coefficients."""
    linear = cell.linear
    to_state = linear.to_state or (lambda c: c)
    from_state = linear.from_state or (lambda s: s)
    weights = cell.prepared(params)
    xp = cell.project(weights, xs)
    if linear.log_coefficients is not None:
        log_a, _ = linear.log_coefficients(weights, xp)
        # sum_{s > t} log a_s: the reversed cumulative sum, less the step's own term.
        after = jax.tree.map(lambda la: jnp.exp(jnp.cumsum(la[::-1], 0)[::-1] - la), log_a)
    else:
        a, _ = linear.coefficients(weights, xp)

        def suffix_product(x):
            rev = jnp.cumprod(x[::-1], axis=0)
            exclusive = jnp.concatenate([jnp.ones_like(rev[:1]), rev[:-1]])
            return exclusive[::-1]

        after = jax.tree.map(suffix_product, a)
    flat_like, unravel = ravel_pytree(like)

    def jacobian(p_t):
        def f(v):
            state = to_state(unravel(v))
            moved = jax.tree.map(lambda p, s: p.astype(jnp.result_type(p, s)) * s, p_t, state)
            return cell.output(from_state(moved))

        return jax.jacfwd(f)(flat_like)

    return jax.vmap(jacobian)(after)


def _ravel_over_time(tree: PyTree) -> tuple[Array, Callable[[Array], PyTree]]:
    """``[T, ...]`` pytree <-> ``[T, S]`` array (a state vector per step)."""
    first = jax.tree.map(lambda a: a[0], tree)
    _, unravel = ravel_pytree(first)
    flat = jax.vmap(lambda t: ravel_pytree(t)[0])(tree)
    return flat, jax.vmap(unravel)


def step_jacobians(
    cell: Cell, params: PyTree, xs: Array, carry: PyTree | None = None
) -> dict[str, Array]:
    """The one-step Jacobian ``d carry_t / d carry_{t-1}`` along the trajectory of ``xs [T, I]``.

    Returns:
      ``"jacobian" [T, S, S]`` (state flattened, LSTM ``S = 2H`` as ``(h, c)``) and
      ``"spectral_norm" [T]``, its largest singular value. For a tanh RNN this is
      ``diag(1 - h_t^2) W_h^T`` in the row-vector convention of the cells.
    """
    if jnp.ndim(xs) != 2:
        raise ValueError(f"xs must be one sequence of shape [T, I]; got shape {jnp.shape(xs)}.")
    start = _start_carry(cell, params, xs, carry, ())
    previous = _entering_carries(cell, params, xs, start)
    weights = cell.prepared(params)
    xp = cell.project(weights, xs)
    _, unravel = ravel_pytree(start)

    def one(prev, xp_t):
        flat, _ = ravel_pytree(prev)
        f = lambda v: ravel_pytree(cell.recur(weights, unravel(v), xp_t)[0])[0]  # noqa: E731
        return jax.jacfwd(f)(flat)

    jac = jax.vmap(one)(previous, xp)
    return {"jacobian": jac, "spectral_norm": jnp.linalg.norm(jac, ord=2, axis=(1, 2))}


def gate_stats(
    cell: Cell,
    params: PyTree,
    xs: Array,
    carry: PyTree | None = None,
    *,
    lengths: Array | None = None,
) -> dict[str, Array]:
    """Gate activations along the trajectory, averaged over units and valid examples.

    Args:
      xs: ``[*batch, T, I]``.

    Returns:
      ``{gate: [T]}`` means over units and the batch (padded steps excluded); e.g.
      LSTM ``"input"``, ``"forget"``, ``"output"``, ``"candidate"``; GRU ``"reset"``,
      ``"update"``, ``"candidate"``.

    Raises:
      ValueError: for a cell that declares no gates (``cell.gates``; the Elman RNN).
    """
    if cell.gates is None:
        raise ValueError(
            f"cell {cell.name!r} declares no gates (cell.gates); gate_stats needs a gated "
            "cell such as the LSTM or GRU."
        )
    num_steps, batch_shape = _num_steps_and_batch(xs)
    xs_tm = jnp.moveaxis(xs, -2, 0)
    start = _start_carry(cell, params, xs_tm, carry, batch_shape)
    previous = _entering_carries(cell, params, xs_tm, start, lengths)
    dtype = jax.tree.leaves(start)[0].dtype
    weights = cell.prepared(params)
    acts = jax.vmap(lambda c, x: cell.gates(weights, c, x))(previous, cell.project(weights, xs_tm))
    if lengths is None:
        weight = jnp.ones((num_steps,) + batch_shape, dtype)
    else:
        steps = jnp.arange(num_steps).reshape((num_steps,) + (1,) * len(batch_shape))
        weight = (steps < jnp.asarray(lengths)).astype(dtype)
    axes = tuple(range(1, 1 + len(batch_shape)))

    def mean(a):
        per_example = a.mean(-1)  # over units
        return (per_example * weight).sum(axes) / jnp.maximum(weight.sum(axes), 1)

    return {name: mean(a) for name, a in acts.items()}


def weight_grad_by_lag(
    cell: Cell,
    params: PyTree,
    xs: Array,
    loss_fn: LossFn,
    carry: PyTree | None = None,
    *,
    lengths: Array | None = None,
) -> tuple[PyTree, Array]:
    """Split the gradient of the params ``recur`` reads (``W_h``, ...) by time step.

    Returns:
      ``(terms, distance)``: ``terms`` shaped like ``params`` with a leading ``[T]``
      axis, the contribution of step ``t`` (``sum_t terms = dL/dparams`` for the params
      used inside the loop; the input-side ``W_x`` enters through ``project`` and gets
      zero here); ``distance [T]`` = ``T - 1 - t``, the lag back from the last step.
    """
    num_steps, _ = _num_steps_and_batch(xs)
    # Like what recur reads: the params, or a prepared cell's derived weights.
    eps = _zeros_over_time(jax.eval_shape(cell.prepared, params), num_steps)

    def f(eps):
        final, ys = scan(
            cell, params, xs, carry, lengths=lengths, perturbation=Perturbation(params=eps)
        )
        return loss_fn(ys, final)

    return jax.grad(f)(eps), num_steps - 1 - jnp.arange(num_steps)


def tree_norm_over_time(tree: PyTree) -> Array:
    """``[T]`` Frobenius norm of each time slice of a ``[T, ...]`` pytree."""
    squares = [jnp.sum(a.reshape(a.shape[0], -1) ** 2, axis=1) for a in jax.tree.leaves(tree)]
    return jnp.sqrt(sum(squares))
