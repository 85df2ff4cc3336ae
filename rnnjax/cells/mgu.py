"""The minimal gated unit, MGU (Zhou, Wu, Zhang and Zhou, IJAC 2016; arXiv 1603.09420):
a GRU with its reset and update gates merged into one forget gate.

No official code was found, and the paper's PDF was not read here. The equations are
the paper's as quoted by third-party implementations that agree with each other (the
docstrings of MartinuzziFrancesco/RecurrentLayers.jl ``src/cells/mgu_cell.jl`` and of
brainstate's ``MGUCell``), and ``../shared/CELLS.md`` section 2. Where ours differs, or
where the source is thin:

- The gate convention is the paper's: ``f`` lets the candidate in,
  ``h' = (1 - f) h + f h~`` (the RecurrentLayers.jl *code* computes the opposite mix,
  ``f h + (1 - f) h~``, against its own docstring; tested here against the paper's).
- The paper writes each block on the concatenation ``[h, x]``, ``W_f [h_{t-1}, x_t]``;
  we keep the input and recurrent halves apart (``x W_x`` runs as one matmul before the
  loop), the same function.
- Initialisation: the paper's was not read and there is no authors' code. We use this
  library's GRU defaults, per gate block: ``W_x`` lecun normal, ``W_h`` orthogonal,
  biases zero (RecurrentLayers.jl uses Glorot for both and zero biases).
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
    gate_init,
    initialize,
    resolve_batch_shape,
    scale_w_h,
)

NUM_BLOCKS = 2


class MGUParams(NamedTuple):
    w_x: Array  # [I, 2H], blocks (f, h~): W_f, W_h of the paper's input half
    w_h: Array  # [H, 2H], blocks (f, h~): U_f, U_h
    b: Array  # [2H], blocks (b_f, b_h)


def mgu(
    hidden_size: int,
    *,
    kernel_init: Initializer = jax.nn.initializers.lecun_normal(),
    recurrent_init: Initializer = jax.nn.initializers.orthogonal(),
    bias_init: Initializer = jax.nn.initializers.zeros,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """Minimal gated unit: one gate.

    Blocks in order (f, h~), row-vector convention::

        f   = sigmoid(x W_xf + h U_f + b_f)
        h~  = tanh(x W_xh + (f * h) U_h + b_h)
        h'  = (1 - f) * h + f * h~                  y = h'

    ``f`` is the paper's "forget gate": ``f = 1`` forgets ``h`` for the candidate. The
    Jacobian ``dh'/dh`` is ``diag(1 - f)`` plus the terms through ``U_h`` (scaled by
    ``f``) and through the gate: with ``f`` small the state is carried nearly unchanged.

    Args:
      hidden_size: ``H``.
      kernel_init: initialiser of each ``[I, H]`` block of ``W_x``; lecun normal.
      recurrent_init: initialiser of each ``[H, H]`` block of ``W_h``; orthogonal.
      bias_init: initialiser of ``b [2H]``; zeros.
      dtype: computation dtype; ``None`` promotes inputs and params.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"mgu"``. Params ``MGUParams(w_x [I, 2H], w_h [H, 2H], b
      [2H])``; carry ``h [*batch, H]``, a bare array; output ``h'``. ``project`` returns
      ``(x_f, x_h)``, biases included. Declares: gated, its gates (forget, candidate),
      recurrent scale ``W_h -> g W_h`` (both blocks, ``U_f`` and ``U_h``, as the GRU's).
      No fused backward: the step reads its recurrent weights in two matmuls, ``h U_f``
      and then ``(f * h) U_h``, whose input depends on the first's result (as the GRU in
      Cho et al.'s reset-before form, also undeclared); :class:`FusedRecurrence` fuses
      exactly one ``output(carry) @ weight``, and passing ``U_h`` through its ``reads``
      would stack a ``[T, H, H]`` gradient per step, the very cost it exists to avoid.
    """
    H = check_positive_int("hidden_size", hidden_size)
    _dtype = dtype

    def init(key: Array, input_size: int) -> MGUParams:
        input_size = check_positive_int("input_size", input_size)
        k_x, k_h, k_b = jax.random.split(key, 3)
        return MGUParams(
            w_x=gate_init(kernel_init, k_x, input_size, H, NUM_BLOCKS, param_dtype),
            w_h=gate_init(recurrent_init, k_h, H, H, NUM_BLOCKS, param_dtype),
            b=initialize(bias_init, k_b, (NUM_BLOCKS * H,), param_dtype),
        )

    def initial_carry(batch_shape=(), dtype=None) -> Array:
        dt = dtype or _dtype or param_dtype
        return jnp.zeros(resolve_batch_shape(batch_shape) + (H,), dt)

    def project(params: MGUParams, xs: Array) -> tuple[Array, Array]:
        check_input(xs, params.w_x.shape[0], "xs")
        dt = compute_dtype(_dtype, xs, params.w_x)
        z = xs.astype(dt) @ params.w_x.astype(dt) + params.b.astype(dt)
        return tuple(jnp.split(z, NUM_BLOCKS, axis=-1))

    def gates(params: MGUParams, h: Array, xp) -> dict[str, Array]:
        x_f, x_h = xp
        dt = compute_dtype(_dtype, x_f, params.w_h)
        h_in, w_h = h.astype(dt), params.w_h.astype(dt)
        f = jax.nn.sigmoid(x_f.astype(dt) + h_in @ w_h[:, :H])
        candidate = jnp.tanh(x_h.astype(dt) + (f * h_in) @ w_h[:, H:])
        return {"forget": f, "candidate": candidate}

    def recur(params: MGUParams, h: Array, xp) -> tuple[Array, Array]:
        g = gates(params, h, xp)
        f = g["forget"]
        h_new = ((1.0 - f) * h.astype(f.dtype) + f * g["candidate"]).astype(h.dtype)
        return h_new, h_new

    return Cell(
        name="mgu",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda h: h,
        gated=True,
        gates=gates,
        recurrent_scale=scale_w_h,
    )


# ------------------------------------------------------------------ the catalogue


def reference(xp, params, h, x):
    """One step of the paper's equations on the concatenation ``[h, x]``::

        f_t  = sigma(W_f [h_{t-1}, x_t] + b_f)
        h~_t = tanh(W_h [f_t * h_{t-1}, x_t] + b_h)
        h_t  = (1 - f_t) * h_{t-1} + f_t * h~_t

    in the array namespace ``xp`` (the catalogue's float64 reference; independent of the
    code above). ``W_f`` is ``[U_f; W_xf]`` stacked, in the row convention."""
    w_x, w_h, b = params
    H = h.shape[-1]
    w_f = xp.concatenate([w_h[:, :H], w_x[:, :H]], axis=0)  # [H + I, H]
    w_c = xp.concatenate([w_h[:, H:], w_x[:, H:]], axis=0)
    f = 1.0 / (1.0 + xp.exp(-(xp.concatenate([h, x], axis=-1) @ w_f + b[:H])))
    candidate = xp.tanh(xp.concatenate([f * h, x], axis=-1) @ w_c + b[H:])
    h_new = (1.0 - f) * h + f * candidate
    return h_new, h_new


ENTRY = Entry(
    name="mgu",
    make=mgu,
    reference=reference,
    matmul_flops=lambda i, h: 2 * NUM_BLOCKS * h * (i + h),
    family="gated",
    summary="MGU: a GRU with one forget gate (Zhou et al. 2016)",
)
