"""The independently recurrent neural network, IndRNN (Li, Li, Cook, Zhu and Gao, CVPR
2018): one recurrent weight per unit, so each unit's gradient over time is a power of
its own weight, and the paper bounds that weight for a memory horizon ``T``.

Read against the paper (arXiv 1803.04831v2, eq. 2, Sec. 3.1 and 5.1; the PDF in
Sunnydreamrain/IndRNN_pytorch at 9b9cb4c) and the authors' code
(Sunnydreamrain/IndRNN_Theano_Lasagne ``adding/adding.py`` and ``adding/IndRNN.py`` at
abe3ca6 / eabf1e1; Sunnydreamrain/IndRNN_pytorch ``IndRNN_onlyrecurrent.py``,
``Indrnn_plainnet.py``, ``pixelMNIST/Indrnn_mnist_train.py`` at 278240f, README at
18d1261), and ``../shared/CELLS.md`` section 1. Where ours differs:

- The authors' code keeps ``u`` inside ``[-u_max, u_max]`` by *projecting the stored
  parameter* before every training step (``np.clip`` / ``clamp_`` on the weight, then
  forward and backward at the projected value). A cell cannot change its stored params,
  so with ``constrain=True`` the step reads ``u`` clipped to ``[-u_max, u_max]``: the
  forward pass is the authors' whatever the trainer does; a unit whose stored ``|u|``
  has left the bound gets zero gradient on ``u`` (where the authors' projection would
  have moved it back to the bound first). :func:`clip_recurrent` is that projection, for
  a training loop that wants the authors' update exactly (the in-step clip is then a
  no-op: the boundary counts as inside, so its gradient there is the unclipped one).
- The paper writes the bound as ``|u| in [0, gamma^(1/T)]``; the code (and we) allow
  negative ``u`` down to ``-u_max``.
- The code's layer takes ``W x + b`` from a separate Dense (or Dense + batch norm) layer;
  here the cell holds ``W_x`` and ``b`` itself, as the paper's eq. 2 (and the Theano
  ``IndRNNLayer`` used for the adding problem) does. Only the relu form is built.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells.base import (
    Array,
    Cell,
    Entry,
    Initializer,
    check_input,
    check_positive_int,
    compute_dtype,
    initialize,
    resolve_batch_shape,
    scale_fields,
)

# The adding problem's input weights in the authors' code (``--in2hidW 0.001``).
ADDING_KERNEL_INIT: Initializer = jax.nn.initializers.normal(stddev=1e-3)


class IndRNNParams(NamedTuple):
    w_x: Array  # [I, H]
    u: Array  # [H], one recurrent weight per unit
    b: Array  # [H]


def recurrent_bound(horizon: int, magnitude: float = 2.0) -> float:
    """The paper's bound on ``|u|`` for relu over ``horizon`` steps:
    ``magnitude^(1/horizon)`` (the code's ``U_bound = MAG^(1/seq_len)``, MAG 2 by
    default): a unit's gradient over ``horizon`` steps grows at most ``magnitude``-fold."""
    return float(magnitude) ** (1.0 / horizon)


def clip_recurrent(params: IndRNNParams, u_max: float) -> IndRNNParams:
    """``params`` with ``u`` projected onto ``[-u_max, u_max]``: the authors' constraint,
    applied to the stored weight before every training step in their code."""
    return params._replace(u=jnp.clip(params.u, -u_max, u_max).astype(params.u.dtype))


def _constrained(u: Array, u_max: float) -> Array:
    # The boundary counts as inside (gradient 1 there), so after a projection onto the
    # bound the gradient is the unclipped one; outside, the value is the bound and the
    # gradient zero.
    bound = jnp.asarray(u_max, u.dtype)
    return jnp.where(jnp.abs(u) <= bound, u, jnp.sign(u) * bound)


def indrnn(
    hidden_size: int,
    *,
    horizon: int | None = None,
    magnitude: float = 2.0,
    u_max: float | None = None,
    constrain: bool = True,
    last_layer: bool = False,
    kernel_init: Initializer = ADDING_KERNEL_INIT,
    bias_init: Initializer = jax.nn.initializers.zeros,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """IndRNN with relu: each unit recurs on itself only.

    Equation (paper eq. 2, row-vector convention)::

        h' = relu(x W_x + u_c * h + b)     y = h'

    with ``u_c = u`` clipped to ``[-u_max, u_max]`` (``constrain=True``) or ``u_c = u``
    (``*`` elementwise: unit ``n`` reads only its own ``h_n``). The Jacobian
    ``dh'/dh = diag(relu'(.) * u_c)`` is diagonal: over ``k`` steps an active unit's
    gradient is multiplied by ``u_c^k``, which the bound keeps at most ``magnitude`` over
    the horizon (paper Sec. 3.1: ``|u| <= gamma^(1/T)`` for relu).

    The bound ``u_max``: given directly; or ``recurrent_bound(horizon, magnitude)`` =
    ``magnitude^(1/horizon)`` (the code's ``MAG^(1/seq_len)``; the adding problem's
    ``|u| in (0, 2^(1/T))``); or, with neither, 1 (the README: "the constraint can always
    be set to [-1, 1]").

    Initialisation (the authors' code for the adding problem, ``adding/adding.py``):
    ``W_x ~ Normal(0, 0.001^2)``, ``b = 0``, ``u ~ U(0, u_max)``; with
    ``last_layer=True`` (the code's ``u_lastlayer_ini``, for the layer whose last state
    is read out: "only long-term memory is needed") ``u ~ U(1 / u_max, u_max)``, which is
    ``U((1/MAG)^(1/T), MAG^(1/T))`` for a horizon and all ones for ``u_max = 1`` (the
    README's "all 1"). Their MNIST networks feed a He-initialised Dense layer through
    batch norm instead; pass ``kernel_init`` for that.

    Args:
      hidden_size: ``H``.
      horizon: the memory horizon ``T`` the bound is set for (positive integer).
      magnitude: the largest gradient growth allowed over the horizon (the code's MAG,
        >= 1); only with ``horizon``.
      u_max: the bound on ``|u|`` itself (> 0), in place of ``horizon``.
      constrain: the step reads ``u`` clipped to ``[-u_max, u_max]`` (default), see the
        module docstring; ``False``: the paper's equation with ``u`` as stored.
      last_layer: the last layer's initialisation, ``u ~ U(1/u_max, u_max)`` (needs
        ``u_max >= 1``).
      kernel_init: initialiser of ``W_x [I, H]``.
      bias_init: initialiser of ``b [H]``.
      dtype: computation dtype; ``None`` promotes inputs and params.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"indrnn"``. Params ``IndRNNParams(w_x [I, H], u [H], b
      [H])``; carry ``h [*batch, H]``, a bare array; output ``h'``. Declares a recurrent
      scale ``u -> g u`` (the stored weight; with ``constrain`` the step still reads at
      most ``u_max``, so ``g`` beyond ``u_max / |u|`` saturates at the bound: that is
      the constraint's point). Ungated. No fused backward: the recurrence is the
      elementwise ``u * h``, not a matmul, so there is no ``[H, B] x [B, H]`` weight
      gradient per step to gather into one (``du`` is an elementwise product summed over
      the batch, which plain autodiff of the loop already does at ``O(B H)`` a step).
    """
    H = check_positive_int("hidden_size", hidden_size)
    if horizon is not None:
        horizon = check_positive_int("horizon", horizon)
        if u_max is not None:
            raise ValueError(
                f"give horizon or u_max, not both; got horizon={horizon}, u_max={u_max!r}."
            )
    if isinstance(magnitude, bool) or not (
        isinstance(magnitude, (int, float)) and magnitude >= 1.0
    ):
        raise ValueError(f"magnitude must be a number >= 1; got {magnitude!r}.")
    if magnitude != 2.0 and horizon is None:
        raise ValueError(
            f"magnitude sets the bound for a horizon; give horizon too (got magnitude="
            f"{magnitude!r} and no horizon)."
        )
    if u_max is not None and (
        isinstance(u_max, bool) or not (isinstance(u_max, (int, float)) and u_max > 0)
    ):
        raise ValueError(f"u_max must be a positive number; got {u_max!r}.")
    for arg, value in (("constrain", constrain), ("last_layer", last_layer)):
        if not isinstance(value, bool):
            raise ValueError(f"{arg} must be True or False; got {value!r}.")
    if horizon is not None:
        bound = recurrent_bound(horizon, magnitude)
    else:
        bound = 1.0 if u_max is None else float(u_max)
    if last_layer and bound < 1.0:
        raise ValueError(
            f"last_layer initialises u in [1/u_max, u_max], which needs u_max >= 1; got "
            f"u_max={bound!r}."
        )
    u_low = 1.0 / bound if last_layer else 0.0
    _dtype = dtype

    def init(key: Array, input_size: int) -> IndRNNParams:
        input_size = check_positive_int("input_size", input_size)
        k_x, k_u, k_b = jax.random.split(key, 3)
        u = jax.random.uniform(k_u, (H,), jnp.float32, u_low, bound)
        return IndRNNParams(
            w_x=initialize(kernel_init, k_x, (input_size, H), param_dtype),
            u=u.astype(param_dtype),
            b=initialize(bias_init, k_b, (H,), param_dtype),
        )

    def initial_carry(batch_shape=(), dtype=None) -> Array:
        dt = dtype or _dtype or param_dtype
        return jnp.zeros(resolve_batch_shape(batch_shape) + (H,), dt)

    def project(params: IndRNNParams, xs: Array) -> Array:
        check_input(xs, params.w_x.shape[0], "xs")
        dt = compute_dtype(_dtype, xs, params.w_x)
        return xs.astype(dt) @ params.w_x.astype(dt) + params.b.astype(dt)

    def recur(params: IndRNNParams, h: Array, xp: Array) -> tuple[Array, Array]:
        dt = compute_dtype(_dtype, xp, params.u)
        u = params.u.astype(dt)
        if constrain:
            u = _constrained(u, bound)
        h_new = jax.nn.relu(xp.astype(dt) + u * h.astype(dt)).astype(h.dtype)
        return h_new, h_new

    return Cell(
        name="indrnn",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda h: h,
        recurrent_scale=scale_fields("u"),
    )


# ------------------------------------------------------------------ the catalogue


def reference(xp, params, h, x, u_max: float = 1.0, constrain: bool = True):
    """One step of the paper's eq. 2, ``h' = relu(W x + u (.) h + b)``, with the
    authors' constraint ``|u| <= u_max`` applied to ``u``, in the array namespace ``xp``
    (the catalogue's float64 reference; independent of the code above)."""
    w_x, u, b = params
    if constrain:
        u = xp.minimum(xp.maximum(u, -u_max), u_max)
    h_new = xp.maximum(x @ w_x + u * h + b, 0.0)
    return h_new, h_new


ENTRY = Entry(
    name="indrnn",
    make=indrnn,
    reference=reference,
    # x W_x only: the recurrence is elementwise (2H flops, no matmul).
    matmul_flops=lambda i, h: 2 * h * i,
    family="independent",
    summary="IndRNN: relu with one recurrent weight per unit, |u| bounded (Li et al. 2018)",
)
