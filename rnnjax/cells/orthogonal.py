"""Orthogonal recurrences: expRNN (Lezcano-Casado & Martinez-Rubio, ICML 2019), with
scoRNN's scaled Cayley transform (Helfrich, Willmott & Ye, ICML 2018) as an option of the
same cell, both with the real modReLU of Arjovsky, Shah & Bengio (ICML 2016).

Read against the authors' code: lezcano/expRNN (``orthogonal.py``, ``initialization.py``,
``parametrization.py``, ``1_copying.py``, ``2_mnist.py`` at 00cbf56, ``trivializations.py``
at 06a0da0, and those files again at HEAD 830ec83) and SpartinStuff/scoRNN (``scoRNN.py``
at 3e34d5f, ``scoRNN_copying.py`` at 77207fb, ``scoRNN_adding.py`` at afc2c84,
``scoRNN_mnist.py`` at 3e34d5f); ``../shared/CELLS.md`` section 4. Where ours differs
from that code:

- expRNN's repository runs ``dtriv`` by default (``W = base expm(A)``, the base moved
  every K = 100 optimiser steps; NeurIPS 2019). This is the paper's static expRNN, the
  repository's ``-m exprnn``.
- scoRNN's code does not differentiate through the Cayley map: it takes ``dL/dW`` and
  forms ``dL/dA = U^T - U``, ``U = (I + A)^{-T} dL/dW (D + W^T)``, on the full
  skew-symmetric ``A``. Here autodiff differentiates ``A = triu(X, 1) - triu(X, 1)^T``:
  the gradient on ``X``'s strict upper triangle is that formula's upper triangle
  (tested), and the lower triangle, which the code moves by the opposite amounts, is
  not read. The same ``A`` after an RMSprop step.
- expRNN's repository's own ``-m cayley`` mode is the Cayley map without ``D``
  (``negative_ones=0`` here).
- Both repositories train ``A`` with its own optimiser, at a learning rate 10x smaller
  than the other parameters'. That is the training script's choice, not the cell's.
- ``W_h`` is computed in at least float32 (``jax.scipy.linalg.expm`` and
  ``jnp.linalg.solve`` have no bfloat16 kernels), then cast to the computation dtype.
- ``W_h`` is derived once per call by the cell's ``prepare`` (the contract's hook, run
  by the driver before the loop), as the expRNN authors compute it once per batch and
  backpropagate through it once (``parametrization.py``, their paper's
  "implementation trick").
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
    FusedRecurrence,
    Initializer,
    check_input,
    check_positive_int,
    compute_dtype,
    initialize,
    resolve_batch_shape,
)

PARAMETRIZATIONS = ("exp", "cayley")
SKEW_INITS = ("henaff", "cayley")


class OrthogonalParams(NamedTuple):
    """The trainable parameters."""

    w_x: Array  # [I, H]
    a: Array  # [H, H]: X, with A = triu(X, 1) - triu(X, 1)^T (X's lower triangle unread)
    b: Array  # [H]: modReLU's bias


class OrthogonalWeights(NamedTuple):
    """What the step reads, derived from :class:`OrthogonalParams` once
    (the cell's ``prepare``): ``w_h`` is the orthogonal recurrent weight."""

    w_x: Array  # [I, H]
    w_h: Array  # [H, H]
    b: Array  # [H]


def modrelu(z: Array, b: Array) -> Array:
    """``sign(z) * relu(|z| + b)``: the real modReLU, as both authors' code write it.

    Its slope is 1 wherever ``|z| + b > 0`` (and 0 elsewhere), so a step whose units
    are all active has the Jacobian ``W_h`` itself. For ``b > 0`` it jumps by ``2 b``
    at ``z = 0``."""
    return jnp.sign(z) * jax.nn.relu(jnp.abs(z) + b)


def skew(x: Array) -> Array:
    """``triu(x, 1) - triu(x, 1)^T``: the skew-symmetric ``A`` that ``x`` stands for
    (expRNN's ``Orthogonal.retraction``)."""
    upper = jnp.triu(x, 1)
    return upper - jnp.swapaxes(upper, -1, -2)


def cayley_signs(hidden_size: int, negative_ones: int, dtype=jnp.float32) -> Array:
    """scoRNN's ``D`` as its diagonal: ``hidden_size - negative_ones`` ones, then
    ``negative_ones`` minus ones (``scoRNN_copying.py``)."""
    return jnp.concatenate(
        [jnp.ones(hidden_size - negative_ones, dtype), -jnp.ones(negative_ones, dtype)]
    )


def recurrent_weight(a: Array, *, parametrization: str = "exp", negative_ones: int = 0) -> Array:
    """The orthogonal ``W_h [H, H]`` the free parameter ``a`` stands for, in ``a``'s
    dtype promoted to at least float32.

    ``"exp"``: ``expm(A)`` (``jax.scipy.linalg.expm``, Pade with scaling and squaring;
    differentiable), in SO(H). ``"cayley"``: ``(I + A)^{-1} (I - A) D`` with ``D`` of
    :func:`cayley_signs` (``I + A`` is invertible for every skew-symmetric ``A``), of
    determinant ``(-1)^negative_ones``."""
    dtype = jnp.promote_types(a.dtype, jnp.float32)
    A = skew(a.astype(dtype))
    if parametrization == "exp":
        return jax.scipy.linalg.expm(A)
    n = A.shape[-1]
    eye = jnp.eye(n, dtype=dtype)
    return jnp.linalg.solve(eye + A, eye - A) * cayley_signs(n, negative_ones, dtype)


def skew_init(scheme: str) -> Initializer:
    """The authors' initialisation of ``A`` (expRNN ``initialization.py``; scoRNN's
    ``scoRNNCell``): block diagonal, ``H // 2`` blocks ``[[0, s], [-s, 0]]`` on the units
    ``(2k, 2k + 1)`` (an odd ``H`` leaves its last unit unrotated), with

    - ``"henaff"``: ``s ~ U(-pi, pi)``: ``expm`` rotates each plane by ``s``, uniform
      angles (Henaff, Szlam & LeCun 2016);
    - ``"cayley"``: ``s = -sqrt((1 - cos u) / (1 + cos u)) = -tan(u / 2)``,
      ``u ~ U(0, pi/2)``: the Cayley map rotates each plane by ``u``.

    Returns the skew-symmetric ``A`` itself, as both authors store it (``X = A``)."""

    def init(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
        n = shape[-1]
        if scheme == "henaff":
            s = jax.random.uniform(key, (n // 2,), dtype, -math.pi, math.pi)
        else:
            u = jax.random.uniform(key, (n // 2,), dtype, 0.0, math.pi / 2)
            s = -jnp.sqrt((1.0 - jnp.cos(u)) / (1.0 + jnp.cos(u)))
        upper = jnp.diag(jnp.zeros(max(n - 1, 0), dtype).at[::2].set(s), k=1)
        return upper - upper.T

    return init


def _uniform(bound: float) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# The authors' initialisation of W_x and b, per parametrisation: expRNN's
# OrthogonalRNN (kaiming_normal relu on nn.Linear(I, H), no bias; modrelu's b ~
# U(-0.01, 0.01)) and scoRNN's scoRNNCell (U ~ U(-0.01, 0.01); b = 0).
_KERNEL_INITS = {
    "exp": jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    "cayley": _uniform(0.01),
}
_BIAS_INITS = {"exp": _uniform(0.01), "cayley": jax.nn.initializers.zeros}
_DEFAULT_SKEW_INIT = {"exp": "henaff", "cayley": "cayley"}


def exprnn(
    hidden_size: int,
    *,
    parametrization: str = "exp",
    init: str | None = None,
    negative_ones: int | None = None,
    kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """An orthogonal RNN: expRNN, or scoRNN with ``parametrization="cayley"``.

    Equations (one step, row-vector convention, as both authors' code)::

        A = triu(X, 1) - triu(X, 1)^T                   (skew-symmetric)
        W_h = expm(A)                                   ("exp": expRNN; W_h in SO(H))
        W_h = (I + A)^{-1} (I - A) D                    ("cayley": scoRNN)
        z = x W_x + h W_h
        h' = modReLU(z) = sign(z) * relu(|z| + b)       y = h'

    No input bias: the bias lives in modReLU. ``D = diag(1, ..., 1, -1, ..., -1)`` is
    fixed, not trained, with ``negative_ones`` minus ones last: the Cayley map alone
    never reaches an orthogonal matrix with eigenvalue -1, and ``D`` lets ``W_h`` have
    ``negative_ones`` of them. The Jacobian ``dh'/dh = W_h diag(1[|z| + b > 0])``
    (row convention): orthogonal while every unit is active.

    Initialisation (the authors'): ``X = A`` block diagonal with 2x2 rotation blocks
    (:func:`skew_init`: ``"henaff"`` angles ``U(-pi, pi)``, expRNN's copying default;
    ``"cayley"`` angles ``U(0, pi/2)`` under the Cayley map, scoRNN's only init and
    expRNN's MNIST default). ``W_x`` and ``b`` as the parametrisation's authors:
    ``"exp"``: ``W_x ~ N(0, 2 / I)`` (PyTorch's kaiming_normal, relu),
    ``b ~ U(-0.01, 0.01)``; ``"cayley"``: ``W_x ~ U(-0.01, 0.01)``, ``b = 0``.

    Where W_h is derived: the trainable parameter is ``X``; the cell's ``prepare``
    derives ``OrthogonalWeights(w_x, w_h, b)`` from it, which the driver does once per
    call, before the loop (:attr:`Cell.prepare`), so the backward sums ``dL/dW_h`` over
    the steps (the fused backward: ``h W_h`` is the step's one recurrent matmul) and
    maps it back through ``expm`` (or the Cayley map) once, where deriving it inside
    every step would cost one adjoint Frechet derivative per step. ``cell.step``
    derives it at every call, as a single step must.

    Args:
      hidden_size: ``H``.
      parametrization: ``"exp"`` (expRNN, default) or ``"cayley"`` (scoRNN).
      init: the initialisation of ``A``, ``"henaff"`` or ``"cayley"``; ``None``: the
        authors' default for the parametrisation (``"henaff"`` for ``"exp"``,
        ``"cayley"`` for ``"cayley"``).
      negative_ones: the minus ones in scoRNN's ``D`` (``"cayley"`` only), in
        ``[0, H]``; ``None``: ``H // 2``, the authors' copying and adding scripts (95 of
        190, 85 of 170; their MNIST script takes 17 of 170).
      kernel_init, bias_init: initialisers of ``W_x [I, H]`` and ``b [H]``; ``None``: the
        parametrisation's authors', above.
      dtype: computation dtype; ``None`` promotes inputs and params.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"exprnn"``. Params
      ``OrthogonalParams(w_x [I, H], a [H, H], b [H])``; carry ``h [*batch, H]``. Any
      leading batch dims. ``prepare(params) -> OrthogonalWeights(w_x, w_h [H, H], b)``:
      what ``project`` and ``recur`` read. Declares: ``prepare``, the fused backward
      (matmul ``h W_h``, over the derived ``w_h``); ungated. No recurrent scale: ``W_h``'s singular
      values are all 1 by construction, the property this cell stands for; ``g W_h``
      would leave the orthogonal group (another cell), and scaling ``A`` (the rotation
      angles) keeps ``W_h`` orthogonal but changes none of its singular values, so the
      study's sweep, which reads ``g`` as the recurrence's gain, would measure nothing
      it names.
    """
    H = check_positive_int("hidden_size", hidden_size)
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {PARAMETRIZATIONS}; got {parametrization!r}."
        )
    if init is None:
        init = _DEFAULT_SKEW_INIT[parametrization]
    if init not in SKEW_INITS:
        raise ValueError(f"init must be None or one of {SKEW_INITS}; got {init!r}.")
    if parametrization == "exp":
        if negative_ones is not None:
            raise ValueError(
                "negative_ones sets scoRNN's D and applies to parametrization='cayley' "
                f"only; got negative_ones={negative_ones!r} with parametrization='exp'."
            )
        negative_ones = 0
    elif negative_ones is None:
        negative_ones = H // 2
    elif isinstance(negative_ones, bool) or not isinstance(negative_ones, int):
        raise ValueError(f"negative_ones must be None or an int; got {negative_ones!r}.")
    elif not 0 <= negative_ones <= H:
        raise ValueError(f"negative_ones must be in [0, hidden_size = {H}]; got {negative_ones}.")
    for name, fn in (("kernel_init", kernel_init), ("bias_init", bias_init)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be None or an initialiser (callable); got {fn!r}.")
    kernel_init = kernel_init or _KERNEL_INITS[parametrization]
    bias_init = bias_init or _BIAS_INITS[parametrization]
    a_init = skew_init(init)
    _dtype = dtype

    def init_params(key: Array, input_size: int) -> OrthogonalParams:
        input_size = check_positive_int("input_size", input_size)
        k_x, k_a, k_b = jax.random.split(key, 3)
        return OrthogonalParams(
            w_x=initialize(kernel_init, k_x, (input_size, H), param_dtype),
            a=initialize(a_init, k_a, (H, H), param_dtype),
            b=initialize(bias_init, k_b, (H,), param_dtype),
        )

    def prepare(params: OrthogonalParams) -> OrthogonalWeights:
        w_h = recurrent_weight(
            params.a, parametrization=parametrization, negative_ones=negative_ones
        )
        return OrthogonalWeights(params.w_x, w_h.astype(params.a.dtype), params.b)

    def initial_carry(batch_shape=(), dtype=None) -> Array:
        dt = dtype or _dtype or param_dtype
        return jnp.zeros(resolve_batch_shape(batch_shape) + (H,), dt)

    def project(weights: OrthogonalWeights, xs: Array) -> Array:
        check_input(xs, weights.w_x.shape[0], "xs")
        dt = compute_dtype(_dtype, xs, weights.w_x)
        return xs.astype(dt) @ weights.w_x.astype(dt)

    def recur_z(weights: OrthogonalWeights, h: Array, xp: Array, z: Array):
        pre = xp + z
        h_new = modrelu(pre, weights.b.astype(pre.dtype)).astype(h.dtype)
        return h_new, h_new

    def recur(weights: OrthogonalWeights, h: Array, xp: Array):
        dt = compute_dtype(_dtype, xp, weights.w_h)
        return recur_z(weights, h, xp.astype(dt), h.astype(dt) @ weights.w_h.astype(dt))

    return Cell(
        name="exprnn",
        hidden_size=H,
        init=init_params,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda h: h,
        fused=FusedRecurrence(recur_z, weight="w_h", reads=("b",)),
        prepare=prepare,
    )


# ------------------------------------------------------------------ the catalogue


def expm_series(xp, A, *, squarings: int = 8, terms: int = 20):
    """``exp(A)`` as the Taylor series of ``A / 2^squarings`` (``terms`` terms), squared
    ``squarings`` times, in the array namespace ``xp``: the reference's exponential,
    apart from ``jax.scipy``'s Pade approximant. For ``||A|| <= 10^3`` the truncation is
    below 1e-25 and the squarings cost about ``2^squarings`` roundings: ~1e-13 in
    float64."""
    eye = xp.eye(A.shape[-1], dtype=A.dtype)
    B = A / 2.0**squarings
    term, total = eye, eye
    for k in range(1, terms):
        term = term @ B / k
        total = total + term
    for _ in range(squarings):
        total = total @ total
    return total


def reference(xp, params, h, x, parametrization: str = "exp", negative_ones: int | None = None):
    """One step from the equations of :func:`exprnn`, in the array namespace ``xp``
    (the catalogue's float64 reference; independent of the code above: ``expm`` by
    :func:`expm_series`, the Cayley map by ``xp.linalg.solve``)."""
    w_x, a, b = params
    n = a.shape[-1]
    upper = xp.triu(a, 1)
    A = upper - upper.T
    if parametrization == "exp":
        w_h = expm_series(xp, A)
    else:
        rho = n // 2 if negative_ones is None else negative_ones
        eye = xp.eye(n, dtype=a.dtype)
        d = xp.concatenate([xp.ones(n - rho, dtype=a.dtype), -xp.ones(rho, dtype=a.dtype)])
        w_h = xp.linalg.solve(eye + A, eye - A) * d
    z = x @ w_x + h @ w_h
    h_new = xp.sign(z) * xp.maximum(xp.abs(z) + b, 0.0)
    return h_new, h_new


ENTRY = Entry(
    name="exprnn",
    make=exprnn,
    reference=reference,
    # x W_x and h W_h per step. Deriving W_h (expm or the Cayley solve, O(H^3)) is per
    # call, not per token, and not counted.
    matmul_flops=lambda i, h: 2 * h * (i + h),
    family="orthogonal",
    summary=(
        "expRNN: orthogonal W_h = expm(A), modReLU; scoRNN's scaled Cayley map as an "
        "option (Lezcano-Casado & Martinez-Rubio 2019; Helfrich et al. 2018)"
    ),
)
