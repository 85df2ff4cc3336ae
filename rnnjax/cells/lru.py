"""The Linear Recurrent Unit (Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu and De,
ICML 2023): a complex diagonal recurrence, stable by construction, with the ``gamma``
normalisation and the ring initialisation.

There is no official code. Read against ``../shared/CELLS.md`` section 8, which
transcribes the paper's pseudo-code as ported in NicolasZucchet/minimal-LRU
(``lru/model.py``). Where ours differs:

- The paper's layer reads ``y = Re(C x) + D u``. Here the cell's output is the state's
  real coordinates ``[Re x, Im x]`` (``H = 2N`` features); a linear map of them, the
  next layer's or the readout's, is exactly ``Re(C x)`` for some complex ``C``
  (``W [Re x; Im x] = Re((W_re - i W_im) x)``), so ``C`` is that layer's. The skip
  ``D u`` is not part of the cell.
- The state is carried as its real and imaginary parts (``LRUCarry(re, im)``), so
  every diagnostic sees real coordinates; the scan runs on the complex state.
- The ring's radii and phase default to the port's (``r_min = 0``, ``r_max = 1``,
  ``max_phase = 2 pi``); the paper's per-task values were not verified here.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells.base import (
    Array,
    Cell,
    Entry,
    LinearRecurrence,
    check_input,
    check_positive_int,
    compute_dtype,
    resolve_batch_shape,
)


class LRUParams(NamedTuple):
    nu_log: Array  # [N]: |lambda| = exp(-exp(nu_log))
    theta_log: Array  # [N]: arg lambda = exp(theta_log)
    gamma_log: Array  # [N]: the input's normalisation, exp(gamma_log)
    b_re: Array  # [I, N]: real part of B (row-vector convention: u @ B)
    b_im: Array  # [I, N]: imaginary part of B


class LRUCarry(NamedTuple):
    re: Array  # [*batch, N]
    im: Array  # [*batch, N]


def lru(
    hidden_size: int,
    *,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """The LRU's recurrence over ``N = hidden_size / 2`` complex states.

    Equations (one step, ``u`` the input)::

        lambda = exp(-exp(nu_log) + i exp(theta_log))        complex diagonal, |lambda| < 1
        x' = lambda * x + exp(gamma_log) * (u B)             B = B_re + i B_im, [I, N]
        y = [Re x', Im x']                                   (see the module docstring)

    The Jacobian over ``d`` steps is ``diag(lambda^d)``: per state the gradient's
    magnitude falls exactly as ``|lambda|^d``.

    Initialisation (the ring): ``|lambda|^2`` uniform in ``[r_min^2, r_max^2]``
    (``nu_log = log(-log(u (r_max^2 - r_min^2) + r_min^2) / 2)``), the phase uniform in
    ``[0, max_phase]``, ``gamma_log = log(sqrt(1 - |lambda|^2))`` from the initial
    ``lambda`` (then trained freely), ``B_re, B_im ~ N(0, 1 / (2 I))``.

    Args:
      hidden_size: ``H = 2N``, even: the output is the ``N`` states' real and imaginary
        parts.
      r_min, r_max: the ring of the initial eigenvalues, ``0 <= r_min < r_max <= 1``.
      max_phase: the largest initial phase, in ``(0, 2 pi]``.
      dtype: computation dtype; ``None`` promotes inputs and params.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"lru"``. Params :class:`LRUParams`; carry
      ``LRUCarry(re, im)``, each ``[*batch, N]``. Declares a linear recurrence (complex
      state: ``to_state`` / ``from_state``) and a recurrent scale: ``g`` multiplies the
      memory timescale, ``|lambda| -> |lambda|^(1/g)``; ungated; no recurrent weight
      matrix, so no fused backward.
    """
    H = check_positive_int("hidden_size", hidden_size)
    if H % 2:
        raise ValueError(
            f"hidden_size of the LRU must be even (its output is the real and imaginary "
            f"parts of hidden_size / 2 complex states); got {H}."
        )
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(
            f"r_min, r_max must satisfy 0 <= r_min < r_max <= 1; got {r_min}, {r_max}."
        )
    if not 0.0 < max_phase <= 2 * math.pi:
        raise ValueError(f"max_phase must lie in (0, 2 pi]; got {max_phase}.")
    N = H // 2
    _dtype = dtype

    def init(key: Array, input_size: int) -> LRUParams:
        input_size = check_positive_int("input_size", input_size)
        k = jax.random.split(key, 4)
        u1 = jax.random.uniform(k[0], (N,), jnp.float32)
        u2 = jax.random.uniform(k[1], (N,), jnp.float32)
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * u2)
        modulus = jnp.exp(-jnp.exp(nu_log))
        gamma_log = jnp.log(jnp.sqrt(1.0 - modulus**2))
        scale = 1.0 / jnp.sqrt(2.0 * input_size)
        return LRUParams(
            nu_log.astype(param_dtype),
            theta_log.astype(param_dtype),
            gamma_log.astype(param_dtype),
            (scale * jax.random.normal(k[2], (input_size, N))).astype(param_dtype),
            (scale * jax.random.normal(k[3], (input_size, N))).astype(param_dtype),
        )

    def initial_carry(batch_shape=(), dtype=None) -> LRUCarry:
        dt = dtype or _dtype or param_dtype
        zeros = jnp.zeros(resolve_batch_shape(batch_shape) + (N,), dt)
        return LRUCarry(zeros, zeros)

    def project(params: LRUParams, xs: Array) -> tuple[Array, Array]:
        check_input(xs, params.b_re.shape[0], "xs")
        dt = compute_dtype(_dtype, xs, params.b_re)
        xs = xs.astype(dt)
        gamma = jnp.exp(params.gamma_log.astype(dt))
        return gamma * (xs @ params.b_re.astype(dt)), gamma * (xs @ params.b_im.astype(dt))

    def coefficients(params: LRUParams, xp):
        b = _complex(*xp)
        return jnp.broadcast_to(eigenvalues(params).astype(b.dtype), b.shape), b

    def to_state(carry: LRUCarry) -> Array:
        return _complex(carry.re, carry.im)

    def from_state(x: Array) -> LRUCarry:
        return LRUCarry(jnp.real(x), jnp.imag(x))

    def recur(params: LRUParams, carry: LRUCarry, xp):
        a, b = coefficients(params, xp)
        new = from_state(a * to_state(carry).astype(b.dtype) + b)
        new = LRUCarry(new.re.astype(carry.re.dtype), new.im.astype(carry.im.dtype))
        return new, output(new)

    def output(carry: LRUCarry) -> Array:
        return jnp.concatenate([carry.re, carry.im], axis=-1)

    def scale(params: LRUParams, g):
        # The memory timescale -1 / log|lambda| = exp(-nu_log) times g: |lambda| ->
        # |lambda|^(1/g), nu_log -> nu_log - log g (g > 1: longer memory, still < 1).
        return params._replace(nu_log=params.nu_log - jnp.log(jnp.asarray(g, params.nu_log.dtype)))

    return Cell(
        name="lru",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=output,
        recurrent_scale=scale,
        linear=LinearRecurrence(coefficients, to_state=to_state, from_state=from_state),
    )


def _complex(re: Array, im: Array) -> Array:
    """``re + i im``, in complex64 at least (there is no bfloat16 complex type)."""
    dtype = jnp.promote_types(jnp.result_type(re, im), jnp.float32)
    return jax.lax.complex(re.astype(dtype), im.astype(dtype))


def eigenvalues(params: LRUParams) -> Array:
    """The LRU's diagonal ``lambda [N]`` (complex) from its params."""
    return jnp.exp(-jnp.exp(params.nu_log) + 1j * jnp.exp(params.theta_log))


def reference(xp, params, carry, x):
    """One step from the paper's equations, in the array namespace ``xp``."""
    nu_log, theta_log, gamma_log, b_re, b_im = params
    lam_abs, lam_arg = xp.exp(-xp.exp(nu_log)), xp.exp(theta_log)
    gamma = xp.exp(gamma_log)
    re, im = carry
    # lambda * x by the real and imaginary parts, then + gamma * (u B).
    new_re = lam_abs * (xp.cos(lam_arg) * re - xp.sin(lam_arg) * im) + gamma * (x @ b_re)
    new_im = lam_abs * (xp.sin(lam_arg) * re + xp.cos(lam_arg) * im) + gamma * (x @ b_im)
    return LRUCarry(new_re, new_im), xp.concatenate([new_re, new_im], axis=-1)


ENTRY = Entry(
    name="lru",
    make=lru,
    reference=reference,
    # u B: a complex [I, N] = two real [I, H/2] products, H outputs in all.
    matmul_flops=lambda i, h: 2 * i * h,
    family="linear",
    summary="LRU: complex diagonal linear recurrence, ring init (Orvieto et al. 2023)",
)
