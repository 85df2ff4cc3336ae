"""minGRU and minLSTM (Feng, Tung, Ahmed, Bengio and Hajimirsadeghi 2024, "Were RNNs All
We Needed?"): gates that read only the input, so the recurrence is linear in the state
and trains as a parallel prefix scan.

Read against the authors' code (BorealisAI/minRNNs, ``models/minRNNs.py`` at ff52e9d)
and ``../shared/CELLS.md`` section 10. Where ours differs from that code:

- The code wraps each cell in ``to_out = Linear(dim_inner, dim)`` (and an expansion
  factor); here the cell is the recurrence alone, ``I -> H``, and the next layer or the
  readout is that projection.
- The code's state starts from nothing (``h_1 = z_1 * h~_1``) or a learned
  ``init_hidden_state``; here it starts from the driver's carry (zeros by default, which
  gives the same ``h_1``).
- The code's log-space scan takes ``log g(h_0)`` as its first value, so it needs a
  positive ``h_0``; here the initial state's term is added as ``prod(a) * h_0``, which
  is exact for a carry of any sign.
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
    LinearRecurrence,
    check_input,
    check_positive_int,
    compute_dtype,
    initialize,
    resolve_batch_shape,
)


def g(x: Array) -> Array:
    """The paper's ``g``: ``x + 1/2`` for ``x >= 0``, ``sigmoid(x)`` below: positive
    everywhere, continuous at 0, so the state stays positive and ``log h`` exists."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def log_g(x: Array) -> Array:
    """``log g(x)`` without forming ``g``: ``log(x + 1/2)`` for ``x >= 0``,
    ``-softplus(-x)`` below."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


class MinGRUParams(NamedTuple):
    w_x: Array  # [I, 2H], blocks (h~, z) as the authors' chunk order (hidden, gate)
    b: Array  # [2H]


class MinLSTMParams(NamedTuple):
    w_x: Array  # [I, 3H], blocks (h~, f, i) as the authors' chunk order
    b: Array  # [3H]


def _uniform(bound: float) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _linear_params(key, input_size: int, width: int, param_dtype):
    """``nn.Linear(input_size, width)``'s default initialisation, as ``(w_x, b)``."""
    bound = 1.0 / input_size**0.5
    k_w, k_b = jax.random.split(key)
    return (
        initialize(_uniform(bound), k_w, (input_size, width), param_dtype),
        initialize(_uniform(bound), k_b, (width,), param_dtype),
    )


def _zeros(H: int, dtype_default, param_dtype):
    def initial_carry(batch_shape=(), dtype=None) -> Array:
        dt = dtype or dtype_default or param_dtype
        return jnp.zeros(resolve_batch_shape(batch_shape) + (H,), dt)

    return initial_carry


def _project(dtype):
    def project(params, xs: Array) -> Array:
        check_input(xs, params.w_x.shape[0], "xs")
        dt = compute_dtype(dtype, xs, params.w_x)
        return xs.astype(dt) @ params.w_x.astype(dt) + params.b.astype(dt)

    return project


def min_gru(
    hidden_size: int, *, log_space: bool = True, dtype=None, param_dtype=jnp.float32
) -> Cell:
    """minGRU: an update gate and a candidate that read only the input.

    Equations (blocks of ``k = x W_x + b`` in the order (h~, z))::

        z = sigmoid(k_z)        h~ = g(k_h)
        h' = (1 - z) * h + z * h~                y = h'

    so ``h' = a * h + b`` with ``a = 1 - z`` and ``b = z * h~``, and the Jacobian
    ``dh'/dh = diag(1 - z)`` does not depend on ``h``. In log space (the paper's
    numerically stable parallel form): ``log a = -softplus(k_z)``,
    ``log b = -softplus(-k_z) + log g(k_h)``.

    Initialisation: PyTorch's ``nn.Linear`` default, ``U(+-1/sqrt(I))`` for ``W_x`` and
    ``b``, as the authors' code.

    Args:
      hidden_size: ``H``.
      log_space: run the parallel scan in log space (the paper's form; default), else on
        ``a`` and ``b`` themselves. The same numbers up to rounding (tested).
      dtype: computation dtype; ``None`` promotes inputs and params.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"min_gru"``. Params ``MinGRUParams(w_x [I, 2H], b [2H])``;
      carry ``h [*batch, H]``. Declares: gated (its gate reads the input only), its gates
      (update), a linear recurrence (``loop="associative"``, the default on an
      accelerator). No recurrent weight, so no recurrent scale and no fused backward.
    """
    H = check_positive_int("hidden_size", hidden_size)

    def init(key: Array, input_size: int) -> MinGRUParams:
        input_size = check_positive_int("input_size", input_size)
        return MinGRUParams(*_linear_params(key, input_size, 2 * H, param_dtype))

    def split(xp):
        return xp[..., :H], xp[..., H:]

    def gates(params, h, xp):
        return {"update": jax.nn.sigmoid(split(xp)[1])}

    def coefficients(params, xp):
        k_h, k_z = split(xp)
        z = jax.nn.sigmoid(k_z)
        return 1.0 - z, z * g(k_h)

    def log_coefficients(params, xp):
        k_h, k_z = split(xp)
        return -jax.nn.softplus(k_z), -jax.nn.softplus(-k_z) + log_g(k_h)

    def recur(params, h, xp):
        a, b = coefficients(params, xp)
        h_new = (a * h.astype(a.dtype) + b).astype(h.dtype)
        return h_new, h_new

    return Cell(
        name="min_gru",
        hidden_size=H,
        init=init,
        initial_carry=_zeros(H, dtype, param_dtype),
        project=_project(dtype),
        recur=recur,
        output=lambda h: h,
        gated=True,
        gates=gates,
        linear=LinearRecurrence(
            coefficients, log_coefficients=log_coefficients if log_space else None
        ),
    )


def min_lstm(
    hidden_size: int,
    *,
    normalise: bool = True,
    forget_bias: float = 0.0,
    log_space: bool = True,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """minLSTM: forget and input gates that read only the input, normalised to sum to 1.

    Equations (blocks of ``k = x W_x + b`` in the order (h~, f, i))::

        f = sigmoid(k_f)   i = sigmoid(k_i)   h~ = g(k_h)
        f' = f / (f + i)   i' = i / (f + i)          (normalise=True)
        h' = f' * h + i' * h~                   y = h'

    In log space (the paper's parallel form): with ``d = softplus(-k_f) - softplus(-k_i)``,
    ``log f' = -softplus(d)``, ``log i' = -softplus(-d)``; without the normalisation
    ``log f = -softplus(-k_f)``, ``log i = -softplus(-k_i)``; ``log b = log i' + log g(k_h)``.

    Initialisation: PyTorch's ``nn.Linear`` default for ``W_x`` and ``b``, then
    ``forget_bias`` added to the forget block, as the authors' ``forget_bias_init_scale``
    (default 0: the code's default of ``None``).

    Args:
      hidden_size: ``H``.
      normalise: the ``f / (f + i)`` normalisation (the paper's form; the authors' code
        makes it optional, ``use_coeff_norm``).
      forget_bias: added to the forget-gate block of ``b`` at ``init``.
      log_space: the parallel scan in log space (default) or on ``a`` and ``b``.
      dtype, param_dtype: as for :func:`min_gru`.

    Returns:
      A :class:`Cell` named ``"min_lstm"``. Params ``MinLSTMParams(w_x [I, 3H], b [3H])``;
      carry ``h [*batch, H]``. Declares: gated, its gates (forget, input, as used in the
      update), a linear recurrence.
    """
    H = check_positive_int("hidden_size", hidden_size)
    if not isinstance(normalise, bool):
        raise ValueError(f"normalise must be True or False; got {normalise!r}.")

    def init(key: Array, input_size: int) -> MinLSTMParams:
        input_size = check_positive_int("input_size", input_size)
        w_x, b = _linear_params(key, input_size, 3 * H, param_dtype)
        return MinLSTMParams(w_x, b.at[H : 2 * H].add(jnp.asarray(forget_bias, param_dtype)))

    def split(xp):
        return xp[..., :H], xp[..., H : 2 * H], xp[..., 2 * H :]

    def mixing(xp):
        _, k_f, k_i = split(xp)
        f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
        if normalise:
            f, i = f / (f + i), i / (f + i)
        return f, i

    def gates(params, h, xp):
        f, i = mixing(xp)
        return {"forget": f, "input": i}

    def coefficients(params, xp):
        f, i = mixing(xp)
        return f, i * g(split(xp)[0])

    def log_coefficients(params, xp):
        k_h, k_f, k_i = split(xp)
        if normalise:
            d = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)
            log_f, log_i = -jax.nn.softplus(d), -jax.nn.softplus(-d)
        else:
            log_f, log_i = -jax.nn.softplus(-k_f), -jax.nn.softplus(-k_i)
        return log_f, log_i + log_g(k_h)

    def recur(params, h, xp):
        a, b = coefficients(params, xp)
        h_new = (a * h.astype(a.dtype) + b).astype(h.dtype)
        return h_new, h_new

    return Cell(
        name="min_lstm",
        hidden_size=H,
        init=init,
        initial_carry=_zeros(H, dtype, param_dtype),
        project=_project(dtype),
        recur=recur,
        output=lambda h: h,
        gated=True,
        gates=gates,
        linear=LinearRecurrence(
            coefficients, log_coefficients=log_coefficients if log_space else None
        ),
    )


# ------------------------------------------------------------------ the catalogue


def _g_ref(xp, x):
    return xp.where(x >= 0, x + 0.5, 1.0 / (1.0 + xp.exp(-x)))


def min_gru_reference(xp, params, h, x):
    """One step of minGRU from the paper's sequential equations, in namespace ``xp``."""
    w_x, b = params
    H = h.shape[-1]
    k = x @ w_x + b
    z = 1.0 / (1.0 + xp.exp(-k[..., H:]))
    h_new = (1.0 - z) * h + z * _g_ref(xp, k[..., :H])
    return h_new, h_new


def min_lstm_reference(xp, params, h, x):
    """One step of minLSTM (normalised) from the paper's sequential equations."""
    w_x, b = params
    H = h.shape[-1]
    k = x @ w_x + b
    f = 1.0 / (1.0 + xp.exp(-k[..., H : 2 * H]))
    i = 1.0 / (1.0 + xp.exp(-k[..., 2 * H :]))
    h_new = f / (f + i) * h + i / (f + i) * _g_ref(xp, k[..., :H])
    return h_new, h_new


MIN_GRU = Entry(
    name="min_gru",
    make=min_gru,
    reference=min_gru_reference,
    matmul_flops=lambda i, h: 2 * 2 * h * i,  # the input projection only: no W_h
    family="linear",
    summary="minGRU: input-only gates, linear in the state (Feng et al. 2024)",
)
MIN_LSTM = Entry(
    name="min_lstm",
    make=min_lstm,
    reference=min_lstm_reference,
    matmul_flops=lambda i, h: 2 * 3 * h * i,
    family="linear",
    summary="minLSTM: normalised input-only gates, linear in the state (Feng et al. 2024)",
)
