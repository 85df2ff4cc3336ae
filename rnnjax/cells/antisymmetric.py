"""The AntisymmetricRNN (Chang, Chen, Haber and Chi, ICLR 2019): a forward-Euler step of
an ODE whose recurrent matrix is antisymmetric (eigenvalues on the imaginary axis) less
a small diffusion ``gamma I``, so that the Jacobian's eigenvalues stay near the unit
circle.

No official code was found, and the paper's text beyond its abstract and introduction
was not read here. The equations are the paper's as quoted by third-party
implementations that agree with each other (the RecurrentLayers.jl and
LuxRecurrentLayers.jl docstrings of ``AntisymmetricRNNCell`` and
``GatedAntisymmetricRNNCell``; a PyTorch port's ``AntisymmetricRNNCell`` and
``AntisymmetricGatingRNNCell``, which cite the paper's eq. 12 and 13), and
``../shared/CELLS.md`` section 7. Where ours differs, or where the source is thin:

- The paper writes column vectors, ``(W - W^T - gamma I) h``; this library writes rows,
  ``h (W - W^T - gamma I)``: our ``W`` is the paper's ``W^T``, the same family of
  functions, identical after transposing ``W`` (the reference test holds the two forms
  against each other).
- Initialisation: the paper's was not read. The PyTorch port draws ``V ~ Normal`` with
  standard deviation ``1/I`` and ``W ~ Normal`` with standard deviation
  ``init_W_std / H``; we read these as the variances ``1/I`` and ``w_std^2 / H``
  (``N(0, sigma^2 / d)``, the usual fan-in scaling; the port's ``std = 1/d`` shrinks the
  input weights with the input width squared). Biases zero; the port opens the gate with
  ``b_z = 1``, which ``bias_init`` can reproduce.
- ``eps`` and ``gamma`` default to 0.01, the port's defaults; the paper tunes both per
  task (its values unverified here).
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


class AntisymmetricParams(NamedTuple):
    w_x: Array  # [I, H] (ungated) or [I, 2H], blocks (h, z): the paper's V_h (and V_z)
    w: Array  # [H, H], unconstrained; the step reads only W - W^T
    b: Array  # [H] or [2H], blocks (b_h, b_z)


def recurrent_matrix(params: AntisymmetricParams, gamma: float) -> Array:
    """``W - W^T - gamma I``, the matrix the step multiplies ``h`` by (row form)."""
    w = params.w
    return w - jnp.swapaxes(w, -1, -2) - gamma * jnp.eye(w.shape[-1], dtype=w.dtype)


def _normal(variance_numerator: float) -> Initializer:
    """Normal with variance ``variance_numerator / fan_in`` (the first axis)."""

    def init(key, shape, dtype=jnp.float32):
        std = (variance_numerator / shape[0]) ** 0.5
        return std * jax.random.normal(key, shape, dtype)

    return init


FAN_IN_NORMAL: Initializer = _normal(1.0)


def antisymmetric(
    hidden_size: int,
    *,
    eps: float = 0.01,
    gamma: float = 0.01,
    gated: bool = False,
    w_std: float = 1.0,
    kernel_init: Initializer = FAN_IN_NORMAL,
    bias_init: Initializer = jax.nn.initializers.zeros,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """AntisymmetricRNN: ``h' = h + eps * tanh(x V + h (W - W^T - gamma I) + b)``.

    Equations (row-vector convention; ``A = W - W^T - gamma I``)::

        h' = h + eps * tanh(x V_h + h A + b_h)                       y = h'

    and with ``gated=True`` (the paper's gated form: both terms read the same ``h A``)::

        z  = sigmoid(x V_z + h A + b_z)
        h' = h + eps * z * tanh(x V_h + h A + b_h)

    The Jacobian (ungated) ``dh'/dh = I + eps diag(1 - tanh^2) A^T``: ``W - W^T`` has
    purely imaginary eigenvalues, ``-gamma`` shifts them left, so for small ``eps`` the
    step's eigenvalues sit just inside the unit circle, ``|1 + eps(-gamma + i w)|``.

    Initialisation (see the module docstring): ``V ~ N(0, 1/I)`` per block, ``W ~ N(0,
    w_std^2 / H)``, biases zero.

    Args:
      hidden_size: ``H``.
      eps: the Euler step (> 0).
      gamma: the diffusion (>= 0).
      gated: the gated variant, see above.
      w_std: the scale of ``W``'s initial entries, standard deviation ``w_std /
        sqrt(H)`` (> 0).
      kernel_init: initialiser of each ``[I, H]`` block of ``V``.
      bias_init: initialiser of ``b``.
      dtype: computation dtype; ``None`` promotes inputs and params.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"antisymmetric"`` (``"antisymmetric_gated"`` with
      ``gated=True``). Params ``AntisymmetricParams(w_x [I, H or 2H], w [H, H], b [H or
      2H])``; carry ``h [*batch, H]``, a bare array; output ``h'``. Declares a recurrent
      scale ``W -> g W`` (the trained weight: ``A -> g (W - W^T) - gamma I``, the
      rotation scaled and the diffusion ``gamma``, a fixed hyperparameter, kept; the
      sweep then shows whether the antisymmetric construction keeps the gradient's
      per-step factor near 1 whatever the weight's size, the paper's claim); the gated
      form declares gated and its gate (``input``, the paper's ``z``). No fused backward:
      the step's one matmul is ``h A`` with ``A`` derived from ``W``, not a params field;
      the fused driver forms ``dA = H_prev^T dZ`` and adds it to the field it names,
      while ``W`` needs ``dA - dA^T``, a map the :class:`FusedRecurrence` contract has no
      hook for.
    """
    H = check_positive_int("hidden_size", hidden_size)
    for arg, value, ok, want in (
        ("eps", eps, lambda v: v > 0, "a positive number"),
        ("gamma", gamma, lambda v: v >= 0, "a number >= 0"),
        ("w_std", w_std, lambda v: v > 0, "a positive number"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ValueError(f"{arg} must be {want}; got {value!r}.")
    if not isinstance(gated, bool):
        raise ValueError(f"gated must be True or False; got {gated!r}.")
    blocks = 2 if gated else 1
    _dtype = dtype

    def init(key: Array, input_size: int) -> AntisymmetricParams:
        input_size = check_positive_int("input_size", input_size)
        k_x, k_w, k_b = jax.random.split(key, 3)
        kx = jax.random.split(k_x, blocks)
        w_x = jnp.concatenate(
            [initialize(kernel_init, k, (input_size, H), param_dtype) for k in kx], axis=-1
        )
        return AntisymmetricParams(
            w_x=w_x,
            w=initialize(_normal(w_std**2), k_w, (H, H), param_dtype),
            b=initialize(bias_init, k_b, (blocks * H,), param_dtype),
        )

    def initial_carry(batch_shape=(), dtype=None) -> Array:
        dt = dtype or _dtype or param_dtype
        return jnp.zeros(resolve_batch_shape(batch_shape) + (H,), dt)

    def project(params: AntisymmetricParams, xs: Array):
        check_input(xs, params.w_x.shape[0], "xs")
        dt = compute_dtype(_dtype, xs, params.w_x)
        z = xs.astype(dt) @ params.w_x.astype(dt) + params.b.astype(dt)
        return tuple(jnp.split(z, 2, axis=-1)) if gated else z

    def pre_activations(params, h, xp):
        x_h = xp[0] if gated else xp
        dt = compute_dtype(_dtype, x_h, params.w)
        a = h.astype(dt) @ recurrent_matrix(params._replace(w=params.w.astype(dt)), gamma)
        return dt, a

    def gates(params: AntisymmetricParams, h: Array, xp) -> dict[str, Array]:
        dt, a = pre_activations(params, h, xp)
        return {"input": jax.nn.sigmoid(xp[1].astype(dt) + a)}

    def recur(params: AntisymmetricParams, h: Array, xp) -> tuple[Array, Array]:
        dt, a = pre_activations(params, h, xp)
        if gated:
            x_h, x_z = xp
            step = jax.nn.sigmoid(x_z.astype(dt) + a) * jnp.tanh(x_h.astype(dt) + a)
        else:
            step = jnp.tanh(xp.astype(dt) + a)
        h_new = (h.astype(dt) + eps * step).astype(h.dtype)
        return h_new, h_new

    return Cell(
        name="antisymmetric_gated" if gated else "antisymmetric",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda h: h,
        gated=gated,
        gates=gates if gated else None,
        recurrent_scale=scale_fields("w"),
    )


# ------------------------------------------------------------------ the catalogue


def reference(xp, params, h, x, eps: float = 0.01, gamma: float = 0.01, gated: bool = False):
    """One step of the paper's equations in its column-vector form, with ``W_p`` the
    paper's matrix (our ``W^T``)::

        A_p  = W_p - W_p^T - gamma I
        h_t  = h_{t-1} + eps * tanh(A_p h_{t-1} + V_h x_t + b_h)
        gated:  z_t = sigma(A_p h_{t-1} + V_z x_t + b_z);
                h_t = h_{t-1} + eps * z_t * tanh(A_p h_{t-1} + V_h x_t + b_h)

    in the array namespace ``xp`` (the catalogue's float64 reference; independent of the
    code above)."""
    w_x, w, b = params
    H = h.shape[-1]
    w_p = w.T
    a_p = w_p - w_p.T - gamma * xp.eye(H)
    a_h = (a_p @ h[..., None])[..., 0]  # A_p h, one column per example
    v_h = x @ w_x[:, :H] + b[:H]
    if gated:
        z = 1.0 / (1.0 + xp.exp(-(a_h + x @ w_x[:, H:] + b[H:])))
        h_new = h + eps * z * xp.tanh(a_h + v_h)
    else:
        h_new = h + eps * xp.tanh(a_h + v_h)
    return h_new, h_new


def _gated_reference(xp, params, h, x):
    return reference(xp, params, h, x, gated=True)


ENTRY = Entry(
    name="antisymmetric",
    make=antisymmetric,
    reference=reference,
    matmul_flops=lambda i, h: 2 * h * (i + h),
    family="bounded",
    summary="AntisymmetricRNN: Euler step of h' = tanh((W - W^T - gamma I) h + V x) "
    "(Chang et al. 2019)",
)

# The gated form, for the lead to list if wanted (an option of the same factory).
GATED_ENTRY = Entry(
    name="antisymmetric_gated",
    make=lambda hidden_size, **options: antisymmetric(hidden_size, gated=True, **options),
    reference=_gated_reference,
    matmul_flops=lambda i, h: 2 * h * (2 * i + h),
    family="bounded",
    summary="AntisymmetricRNN with its input gate (Chang et al. 2019)",
)
