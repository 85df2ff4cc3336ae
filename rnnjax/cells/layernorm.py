"""Layer-normalised LSTM and GRU (Ba, Kiros and Hinton 2016, "Layer Normalization"), in
the form of haste's ``LayerNormLSTM`` and ``LayerNormGRU`` (lmnt-com/haste).

Read against the authors' code (ryankiros/layer-norm ``layers.py`` at 7a9a1bf:
``ln``, ``param_init_lnlstm``, ``lnlstm_layer``, ``param_init_lngru``, ``lngru_layer``),
the paper's supplementary LSTM equations and their initialisation sentence (as quoted
in cleemesser/keras-layer-norm-work ``lstm-layer-normalization-in-progress.ipynb``; the
paper's PDF itself was not read), haste at ceba32e (``frameworks/pytorch/
layer_norm_lstm.py``, ``layer_norm_gru.py``, ``frameworks/tf/layer_norm_lstm_cell.py``,
``lib/layer_norm_forward_gpu.cu.cc``; its equations as its author states them in
lmnt-com/haste#1) and ``../shared/CELLS.md`` section 3.

``LN(v; g, beta) = g * (v - mean(v)) / sqrt(var(v) + epsilon) + beta`` over the feature
axis of one example (``var`` the biased variance), with ``epsilon = 1e-5``.

Where the sources differ, and what we follow:

- Epsilon: the paper's ``sigma`` has none, so its LN of ``h_0 W_h`` at a zero carry is
  0 / 0; the authors' Theano ``ln`` and haste (CUDA kernel, PyTorch ``F.layer_norm``,
  TF cell) use ``1e-5`` inside the square root. We follow the code: ``epsilon=1e-5``.
- Gains and biases of the gate norms: the paper writes ``LN(h W_h; a1, b1) +
  LN(x W_x; a2, b2) + b``, three additive terms that only ever appear summed; haste
  keeps ``b`` alone (the norms have gains only). We follow haste: the same function,
  one bias. (The authors' LSTM code also adds ``b`` to ``x W_x`` *before* its norm,
  ``LN(x W_x + b) + LN(h W_h) + b``, which neither the paper nor haste does.)
- Gain initialisation: gains 1, norm biases 0 in the authors' code and haste. The
  paper's sentence calls its ``alpha`` "additive" and initialises it to zeros (``beta``
  to ones), but its definition of ``LN`` makes ``alpha`` the gain: taken by the
  definition, every normalised term would start at zero; taken by the labels, it is
  the code's initialisation, which we follow.
- The LSTM's forget bias: haste sets the forget block of ``b`` to ``forget_bias = 1.0``;
  the authors' code starts every bias at 0. We follow haste (and rnnjax's LSTM):
  ``forget_bias=1.0``, overridable.
- The LSTM's gate norm is over all ``4H`` pre-activations at once (paper, authors' code,
  haste alike); a joint norm does not depend on the gate order, so we keep rnnjax's
  LSTM layout ``(i, f, g, o)`` (haste: ``(i, g, f, o)``; paper: ``(f, i, o, g)``).
- The GRU: haste normalises all ``3H`` pre-activations of ``x W_x`` and of ``h W_h``
  jointly, biases after the norms, reset applied after the matmul and its norm. The
  authors' ``lngru_layer`` normalises the two gates (``2H``) and the candidate (``H``)
  separately, with biases inside the norms. The paper's supplement gives no GRU
  equations that we read. We follow haste.
- Initial weights: haste's (``W_x`` Xavier-uniform and ``W_h`` orthogonal, per gate
  block). The authors' code takes ``W`` from its host repository's ``norm_weight``
  (not in ``layers.py``) and ``U`` orthogonal per block. The norm divides out an
  overall scale of ``W_x`` or ``W_h`` (but for ``epsilon``), so that scale is moot.
- haste's built-in DropConnect on ``W_h`` and zoneout are regularisers of the driver
  here, not options of the cell.

In bfloat16 the norms' statistics are computed in float32, yet these cells follow
float32 less closely than the plain LSTM and GRU do: the recurrent term's Jacobian is
``W_h`` over ``std(h W_h)``, about ``1 / ||h||``, so where the state is small the step
amplifies rounding (measured, ``H = 5``, 7 steps: 0.006-0.018 from float32 at init and
up to 0.07 with random params, against 0.004-0.009 for the LSTM and GRU).

With one input feature (``I = 1``) the joint norm of ``x_t W_x`` is ``sign(x_t) (w -
mean(w)) / std(w)`` (but for ``epsilon``): the input reaches the cell only through its
sign, its magnitude divided out as the recurrent scale is. On MNIST-1D (one value per
step) both cells stay near chance (21.5% and 18.5%, against the plain GRU's 96.4%:
``results/mnist1d``); give them two or more features (a linear embedding of the input
first), as the adding problem's (value, marker) pairs are.
Family "normalised": these cells are gated, but what they add to the LSTM and GRU is
the normalisation, and the study's tables rank mechanisms; filed under "gated", their
rows could not say what normalisation changes.
"""

from __future__ import annotations

import math
import numbers
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
    gate_init,
    resolve_batch_shape,
    scale_w_h,
)
from rnnjax.cells.lstm import LSTMCarry

EPSILON = 1e-5  # the authors' Theano ``ln`` and haste's kernels
XAVIER_UNIFORM = jax.nn.initializers.glorot_uniform()  # haste's kernel init, per gate block


class LNLSTMParams(NamedTuple):
    w_x: Array  # [I, 4H], gate blocks (i, f, g, o)
    w_h: Array  # [H, 4H], gate blocks (i, f, g, o)
    b: Array  # [4H], added after the two norms
    g_x: Array  # [4H], gain of LN(x W_x)
    g_h: Array  # [4H], gain of LN(h W_h)
    g_c: Array  # [H], gain of LN(c)
    b_c: Array  # [H], bias of LN(c)


class LNGRUParams(NamedTuple):
    w_x: Array  # [I, 3H], gate blocks (r, z, n)
    w_h: Array  # [H, 3H], gate blocks (r, z, n)
    b_x: Array  # [3H], added after LN(x W_x)
    b_h: Array  # [3H], added after LN(h W_h)
    g_x: Array  # [3H], gain of LN(x W_x)
    g_h: Array  # [3H], gain of LN(h W_h)


def layer_norm(v: Array, gain: Array, bias: Array | None = None, *, epsilon: float) -> Array:
    """``gain * (v - mean) / sqrt(var + epsilon) (+ bias)`` over the last axis of ``v``.

    The mean and (biased) variance are computed in at least float32, so a bfloat16
    cell's statistics do not round to bfloat16; the result has ``v``'s dtype."""
    dt = v.dtype
    v_stats = v.astype(jnp.promote_types(dt, jnp.float32))
    centred = v_stats - jnp.mean(v_stats, axis=-1, keepdims=True)
    var = jnp.mean(centred * centred, axis=-1, keepdims=True)
    out = (centred * jax.lax.rsqrt(var + epsilon)).astype(dt) * gain.astype(dt)
    return out if bias is None else out + bias.astype(dt)


def _check_real(name: str, value, *, positive: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 or not positive)
    if not ok:
        want = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"{name} must be {want}; got {value!r}.")
    return float(value)


def ln_lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    epsilon: float = EPSILON,
    kernel_init: Initializer = XAVIER_UNIFORM,
    recurrent_init: Initializer = jax.nn.initializers.orthogonal(),
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """Layer-normalised LSTM: each matmul's pre-activations normalised, and the cell state
    before its ``tanh``.

    Gates in order (i, f, g, o); ``LN`` over all ``4H`` pre-activations of one term::

        v = LN(h W_h; g_h) + LN(x W_x; g_x) + b            v = [v_i, v_f, v_g, v_o]
        i = sigmoid(v_i)   f = sigmoid(v_f)   g = tanh(v_g)   o = sigmoid(v_o)
        c' = f * c + i * g
        h' = o * tanh(LN(c'; g_c, b_c))                    y = h'

    The carry keeps ``c'`` itself, not its norm (as the paper, the authors' code and
    haste). Jacobian (*derived*): the recurrent term's is ``W_h`` through the norm's,
    ``(g_h / sigma_t) (I - 1 1^T / 4H - u u^T / 4H)`` with ``u`` the normalised vector
    and ``sigma_t = std(h W_h)``: the norm divides the size of ``W_h`` out.

    Initialisation (haste's): each ``[I, H]`` block of ``W_x`` Xavier-uniform, each
    ``[H, H]`` block of ``W_h`` orthogonal; ``b`` zeros but the forget block,
    ``forget_bias``; gains ``g_x, g_h, g_c`` ones, ``b_c`` zeros. The module docstring
    says where the paper and the authors' code differ.

    Args:
      hidden_size: ``H``.
      forget_bias: the forget block of ``b`` at ``init`` (default 1.0, haste's, as
        rnnjax's LSTM; the authors' code: 0.0). Added after the norms, so it shifts the
        normalised pre-activation.
      epsilon: added to the variance in every norm (default ``1e-5``, the authors'
        code and haste; the paper has none). Must be positive: at a zero carry
        ``h W_h = 0`` and the norm is ``0 / sqrt(epsilon)``.
      kernel_init: initialiser of each ``[I, H]`` gate block of ``W_x``.
      recurrent_init: initialiser of each ``[H, H]`` gate block of ``W_h``.
      dtype: computation dtype; ``None`` promotes inputs and params. The norms'
        statistics are computed in at least float32.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"ln_lstm"``. Params :class:`LNLSTMParams`; carry
      ``LSTMCarry(h, c)``, each ``[*batch, H]``; output ``h'``. ``project`` returns
      ``LN(x W_x; g_x) + b``, ``[..., 4H]``.
      Declares: gated, its gates (input, forget, candidate, output), the fused
      backward (``z = h W_h``; ``recur_z`` normalises ``z`` itself, so it reads
      ``g_h``, ``g_c`` and ``b_c``; no written-out step VJP: each backward step
      differentiates ``recur_z``), and recurrent scale ``W_h -> g W_h``. The norm
      divides ``|g|`` out of ``LN(h g W_h)`` (exactly, but for ``epsilon``): the scale
      changes nothing unless ``g^2 var(h W_h)`` comes near ``epsilon`` (a zero carry,
      ``g`` near 0), and a negative ``g`` flips the term's sign. That invariance is
      what this cell stands for in the study's sweep.
    """
    H = check_positive_int("hidden_size", hidden_size)
    forget_bias = _check_real("forget_bias", forget_bias)
    epsilon = _check_real("epsilon", epsilon, positive=True)
    _dtype = dtype

    def init(key: Array, input_size: int) -> LNLSTMParams:
        input_size = check_positive_int("input_size", input_size)
        k_x, k_h = jax.random.split(key)
        b = jnp.zeros((4 * H,), param_dtype).at[H : 2 * H].set(forget_bias)
        return LNLSTMParams(
            w_x=gate_init(kernel_init, k_x, input_size, H, 4, param_dtype),
            w_h=gate_init(recurrent_init, k_h, H, H, 4, param_dtype),
            b=b,
            g_x=jnp.ones((4 * H,), param_dtype),
            g_h=jnp.ones((4 * H,), param_dtype),
            g_c=jnp.ones((H,), param_dtype),
            b_c=jnp.zeros((H,), param_dtype),
        )

    def initial_carry(batch_shape=(), dtype=None) -> LSTMCarry:
        dt = dtype or _dtype or param_dtype
        zeros = jnp.zeros(resolve_batch_shape(batch_shape) + (H,), dt)
        return LSTMCarry(h=zeros, c=zeros)

    def project(params: LNLSTMParams, xs: Array) -> Array:
        check_input(xs, params.w_x.shape[0], "xs")
        dt = compute_dtype(_dtype, xs, params.w_x)
        wx = xs.astype(dt) @ params.w_x.astype(dt)
        return layer_norm(wx, params.g_x, epsilon=epsilon) + params.b.astype(dt)

    def gates_z(params: LNLSTMParams, xp: Array, z: Array) -> dict[str, Array]:
        v = layer_norm(z, params.g_h, epsilon=epsilon) + xp.astype(z.dtype)
        v_i, v_f, v_g, v_o = jnp.split(v, 4, axis=-1)
        return {
            "input": jax.nn.sigmoid(v_i),
            "forget": jax.nn.sigmoid(v_f),
            "candidate": jnp.tanh(v_g),
            "output": jax.nn.sigmoid(v_o),
        }

    def gates(params: LNLSTMParams, carry: LSTMCarry, xp: Array) -> dict[str, Array]:
        dt = compute_dtype(_dtype, xp, params.w_h)
        return gates_z(params, xp, carry.h.astype(dt) @ params.w_h.astype(dt))

    def update(params: LNLSTMParams, carry: LSTMCarry, a: dict[str, Array]):
        c_new = a["forget"] * carry.c.astype(a["forget"].dtype) + a["input"] * a["candidate"]
        h_new = a["output"] * jnp.tanh(layer_norm(c_new, params.g_c, params.b_c, epsilon=epsilon))
        new = LSTMCarry(h=h_new.astype(carry.h.dtype), c=c_new.astype(carry.c.dtype))
        return new, new.h

    def recur(params: LNLSTMParams, carry: LSTMCarry, xp: Array):
        return update(params, carry, gates(params, carry, xp))

    def recur_z(params: LNLSTMParams, carry: LSTMCarry, xp: Array, z: Array):
        return update(params, carry, gates_z(params, xp, z))

    return Cell(
        name="ln_lstm",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda carry: carry.h,
        gated=True,
        gates=gates,
        fused=FusedRecurrence(recur_z, weight="w_h", reads=("g_h", "g_c", "b_c")),
        recurrent_scale=scale_w_h,
    )


def ln_gru(
    hidden_size: int,
    *,
    epsilon: float = EPSILON,
    kernel_init: Initializer = XAVIER_UNIFORM,
    recurrent_init: Initializer = jax.nn.initializers.orthogonal(),
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """Layer-normalised GRU, reset applied after the recurrent matmul and its norm.

    Gates in order (r, z, n) as rnnjax's GRU; ``LN`` over all ``3H`` pre-activations
    of one term::

        a_x = LN(x W_x; g_x) + b_x                         a_x = [x_r, x_z, x_n]
        a_h = LN(h W_h; g_h) + b_h                         a_h = [h_r, h_z, h_n]
        r = sigmoid(x_r + h_r)   z = sigmoid(x_z + h_z)   n = tanh(x_n + r * h_n)
        h' = (1 - z) * n + z * h                           y = h'

    Jacobian (*derived*): as the LN-LSTM's, ``W_h`` enters through the norm's
    Jacobian ``(g_h / sigma_t) (I - 1 1^T / 3H - u u^T / 3H)``, which divides its size
    out; the direct path ``z * h`` is untouched by the norm.

    Initialisation (haste's): each ``[I, H]`` block of ``W_x`` Xavier-uniform, each
    ``[H, H]`` block of ``W_h`` orthogonal, ``b_x`` and ``b_h`` zeros, gains ones. The
    module docstring says where the authors' code differs (separate norms for the
    gates and the candidate).

    Args:
      hidden_size: ``H``.
      epsilon: added to the variance in every norm (default ``1e-5``); positive.
      kernel_init: initialiser of each ``[I, H]`` gate block of ``W_x``.
      recurrent_init: initialiser of each ``[H, H]`` gate block of ``W_h``.
      dtype: computation dtype; ``None`` promotes inputs and params. The norms'
        statistics are computed in at least float32.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"ln_gru"``. Params :class:`LNGRUParams`; carry ``h
      [*batch, H]``; output ``h'``. ``project`` returns ``LN(x W_x; g_x) + b_x``.
      Declares: gated, its gates (reset, update, candidate), the fused backward
      (``z = h W_h``; ``recur_z`` reads ``g_h`` and ``b_h``; no written-out step VJP),
      and recurrent scale ``W_h -> g W_h``, which the norm divides out as for
      :func:`ln_lstm` (but for ``epsilon``; the sign of ``g`` stays).
    """
    H = check_positive_int("hidden_size", hidden_size)
    epsilon = _check_real("epsilon", epsilon, positive=True)
    _dtype = dtype

    def init(key: Array, input_size: int) -> LNGRUParams:
        input_size = check_positive_int("input_size", input_size)
        k_x, k_h = jax.random.split(key)
        return LNGRUParams(
            w_x=gate_init(kernel_init, k_x, input_size, H, 3, param_dtype),
            w_h=gate_init(recurrent_init, k_h, H, H, 3, param_dtype),
            b_x=jnp.zeros((3 * H,), param_dtype),
            b_h=jnp.zeros((3 * H,), param_dtype),
            g_x=jnp.ones((3 * H,), param_dtype),
            g_h=jnp.ones((3 * H,), param_dtype),
        )

    def initial_carry(batch_shape=(), dtype=None) -> Array:
        dt = dtype or _dtype or param_dtype
        return jnp.zeros(resolve_batch_shape(batch_shape) + (H,), dt)

    def project(params: LNGRUParams, xs: Array) -> Array:
        check_input(xs, params.w_x.shape[0], "xs")
        dt = compute_dtype(_dtype, xs, params.w_x)
        wx = xs.astype(dt) @ params.w_x.astype(dt)
        return layer_norm(wx, params.g_x, params.b_x, epsilon=epsilon)

    def gates_z(params: LNGRUParams, xp: Array, z: Array) -> dict[str, Array]:
        a_h = layer_norm(z, params.g_h, params.b_h, epsilon=epsilon)
        (x_r, x_z, x_n), (h_r, h_z, h_n) = (
            jnp.split(xp.astype(z.dtype), 3, axis=-1),
            jnp.split(a_h, 3, axis=-1),
        )
        r = jax.nn.sigmoid(x_r + h_r)
        return {
            "reset": r,
            "update": jax.nn.sigmoid(x_z + h_z),
            "candidate": jnp.tanh(x_n + r * h_n),
        }

    def gates(params: LNGRUParams, h: Array, xp: Array) -> dict[str, Array]:
        dt = compute_dtype(_dtype, xp, params.w_h)
        return gates_z(params, xp, h.astype(dt) @ params.w_h.astype(dt))

    def update(h: Array, a: dict[str, Array]) -> tuple[Array, Array]:
        z = a["update"]
        h_new = ((1.0 - z) * a["candidate"] + z * h.astype(z.dtype)).astype(h.dtype)
        return h_new, h_new

    def recur(params: LNGRUParams, h: Array, xp: Array):
        return update(h, gates(params, h, xp))

    def recur_z(params: LNGRUParams, h: Array, xp: Array, z: Array):
        return update(h, gates_z(params, xp, z))

    return Cell(
        name="ln_gru",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda h: h,
        gated=True,
        gates=gates,
        fused=FusedRecurrence(recur_z, weight="w_h", reads=("g_h", "b_h")),
        recurrent_scale=scale_w_h,
    )


# ------------------------------------------------------------------ the catalogue


def _ln(xp, v, gain, bias, epsilon):
    mu = xp.mean(v, axis=-1, keepdims=True)
    sd = xp.sqrt(xp.mean((v - mu) ** 2, axis=-1, keepdims=True) + epsilon)
    return gain * (v - mu) / sd + bias


def ln_lstm_reference(xp, params, carry, x, epsilon: float = EPSILON):
    """One LN-LSTM step from the equations (Ba et al.'s supplement, one bias as haste),
    in the array namespace ``xp``; independent of the code above."""
    w_x, w_h, b, g_x, g_h, g_c, b_c = params
    h, c = carry
    sigmoid = lambda a: 1.0 / (1.0 + xp.exp(-a))  # noqa: E731
    v = _ln(xp, h @ w_h, g_h, 0.0, epsilon) + _ln(xp, x @ w_x, g_x, 0.0, epsilon) + b
    i, f, g, o = xp.split(v, 4, axis=-1)
    c_new = sigmoid(f) * c + sigmoid(i) * xp.tanh(g)
    h_new = sigmoid(o) * xp.tanh(_ln(xp, c_new, g_c, b_c, epsilon))
    return LSTMCarry(h_new, c_new), h_new


def ln_gru_reference(xp, params, h, x, epsilon: float = EPSILON):
    """One LN-GRU step from the equations (haste's ``LayerNormGRU``), in the array
    namespace ``xp``; independent of the code above."""
    w_x, w_h, b_x, b_h, g_x, g_h = params
    sigmoid = lambda a: 1.0 / (1.0 + xp.exp(-a))  # noqa: E731
    x_r, x_z, x_n = xp.split(_ln(xp, x @ w_x, g_x, b_x, epsilon), 3, axis=-1)
    h_r, h_z, h_n = xp.split(_ln(xp, h @ w_h, g_h, b_h, epsilon), 3, axis=-1)
    r = sigmoid(x_r + h_r)
    z = sigmoid(x_z + h_z)
    n = xp.tanh(x_n + r * h_n)
    h_new = (1.0 - z) * n + z * h
    return h_new, h_new


LN_LSTM = Entry(
    name="ln_lstm",
    make=ln_lstm,
    reference=ln_lstm_reference,
    matmul_flops=lambda i, h: 2 * 4 * h * (i + h),
    family="normalised",
    summary="layer-normalised LSTM, gates and cell state (Ba et al. 2016; haste)",
)

LN_GRU = Entry(
    name="ln_gru",
    make=ln_gru,
    reference=ln_gru_reference,
    matmul_flops=lambda i, h: 2 * 3 * h * (i + h),
    family="normalised",
    summary="layer-normalised GRU, reset after the matmul (Ba et al. 2016; haste)",
)
