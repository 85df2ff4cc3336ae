"""Gated recurrent unit (Cho et al. 2014), in the PyTorch/cuDNN form or the original."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells.base import (
    Array,
    Cell,
    Entry,
    FusedRecurrence,
    Initializer,
    StepVJP,
    TorchMapping,
    check_input,
    check_positive_int,
    compute_dtype,
    dense_backward,
    gate_init,
    initialize,
    resolve_batch_shape,
    scale_w_h,
    sum_over_batch,
)

NUM_GATES = 3


class GRUParams(NamedTuple):
    w_x: Array  # [I, 3H], gate blocks (r, z, n)
    w_h: Array  # [H, 3H], gate blocks (r, z, n)
    b_x: Array  # [3H], input-side biases (b_ir, b_iz, b_in)
    b_h: Array  # [3H], hidden-side biases (b_hr, b_hz, b_hn)


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    kernel_init: Initializer = jax.nn.initializers.lecun_normal(),
    recurrent_init: Initializer = jax.nn.initializers.orthogonal(),
    bias_init: Initializer = jax.nn.initializers.zeros,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """Gated recurrent unit.

    Gates in order (r, z, n). With ``reset_after=True`` (default; PyTorch and cuDNN,
    so weights port one-to-one, ``b_hn`` kept)::

        r = sigmoid(x W_xr + b_xr + h W_hr + b_hr)
        z = sigmoid(x W_xz + b_xz + h W_hz + b_hz)
        n = tanh(x W_xn + b_xn + r * (h W_hn + b_hn))
        h' = (1 - z) * n + z * h                y = h'

    With ``reset_after=False`` (Cho et al. 2014's original, reset before the matmul)::

        n = tanh(x W_xn + b_xn + (r * h) W_hn + b_hn)

    Args:
      hidden_size: ``H``.
      reset_after: where the reset gate applies, see above.
      kernel_init: initialiser of each ``[I, H]`` gate block of ``W_x``; lecun normal.
      recurrent_init: initialiser of each ``[H, H]`` gate block of ``W_h``; orthogonal.
      bias_init: initialiser of ``b_x`` and ``b_h`` (each ``[3H]``); zeros.
      dtype: computation dtype; ``None`` promotes inputs and params.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"gru"`` (``"gru_reset_before"`` with
      ``reset_after=False``). Params: ``GRUParams(w_x [I, 3H], w_h [H, 3H], b_x [3H],
      b_h [3H])``. Carry: ``h [*batch, H]``, a bare array. Output: ``h'``.
      ``project`` returns one array per gate, ``(x_r, x_z, x_n)``, biases included.
      Declares: gated, its gates (reset, update, candidate), recurrent scale
      ``W_h -> g W_h``, and (reset-after form only) the fused backward (matmul
      ``h W_h``; its ``recur_z`` reads ``b_h``).
    """
    hidden_size = check_positive_int("hidden_size", hidden_size)
    if not isinstance(reset_after, bool):
        raise ValueError(f"reset_after must be True or False; got {reset_after!r}.")
    H = hidden_size
    _dtype = dtype

    def init(key: Array, input_size: int) -> GRUParams:
        input_size = check_positive_int("input_size", input_size)
        k_x, k_h, k_bx, k_bh = jax.random.split(key, 4)
        return GRUParams(
            w_x=gate_init(kernel_init, k_x, input_size, H, NUM_GATES, param_dtype),
            w_h=gate_init(recurrent_init, k_h, H, H, NUM_GATES, param_dtype),
            b_x=initialize(bias_init, k_bx, (NUM_GATES * H,), param_dtype),
            b_h=initialize(bias_init, k_bh, (NUM_GATES * H,), param_dtype),
        )

    def initial_carry(batch_shape=(), dtype=None) -> Array:
        dt = dtype or _dtype or param_dtype
        return jnp.zeros(resolve_batch_shape(batch_shape) + (H,), dt)

    def project(params: GRUParams, xs: Array) -> tuple[Array, ...]:
        check_input(xs, params.w_x.shape[0], "xs")
        dt = compute_dtype(_dtype, xs, params.w_x)
        z = xs.astype(dt) @ params.w_x.astype(dt) + params.b_x.astype(dt)
        return tuple(jnp.split(z, NUM_GATES, axis=-1))

    def gates_a(xp, a) -> dict[str, Array]:
        # a = h W_h + b_h, the recurrent pre-activations (reset-after form).
        (x_r, x_z, x_n), (a_r, a_z, a_n) = xp, jnp.split(a, NUM_GATES, axis=-1)
        r = jax.nn.sigmoid(x_r + a_r)
        return {
            "reset": r,
            "update": jax.nn.sigmoid(x_z + a_z),
            "candidate": jnp.tanh(x_n + r * a_n),
        }

    def gates(params: GRUParams, h: Array, xp) -> dict[str, Array]:
        x_r, x_z, x_n = xp
        dt = compute_dtype(_dtype, x_r, params.w_h)
        h_in = h.astype(dt)
        w_h, b_h = params.w_h.astype(dt), params.b_h.astype(dt)
        if reset_after:
            return gates_a(xp, h_in @ w_h + b_h)
        a_r, a_z = jnp.split(h_in @ w_h[:, : 2 * H] + b_h[: 2 * H], 2, axis=-1)
        r = jax.nn.sigmoid(x_r + a_r)
        z = jax.nn.sigmoid(x_z + a_z)
        n = jnp.tanh(x_n + (r * h_in) @ w_h[:, 2 * H :] + b_h[2 * H :])
        return {"reset": r, "update": z, "candidate": n}

    def update(h: Array, a: dict[str, Array]) -> tuple[Array, Array]:
        z = a["update"]
        h_new = ((1.0 - z) * a["candidate"] + z * h.astype(z.dtype)).astype(h.dtype)
        return h_new, h_new

    def recur(params: GRUParams, h: Array, xp) -> tuple[Array, Array]:
        return update(h, gates(params, h, xp))

    def recur_z(params: GRUParams, h: Array, xp, z: Array) -> tuple[Array, Array]:
        return update(h, gates_a(xp, z + params.b_h.astype(z.dtype)))

    def recur_z_fwd(params: GRUParams, h: Array, xp, z: Array):
        a = z + params.b_h.astype(z.dtype)
        g = gates_a(xp, a)
        h_new, y = update(h, g)
        # Four arrays, not one concatenated store per step (as the LSTM's).
        saved = (g["reset"], g["update"], g["candidate"], a[..., 2 * H :])
        return (h_new, y), saved

    def recur_z_bwd(params: GRUParams, h: Array, saved, y, d_new: Array, d_y: Array):
        r, u, n, a_n = saved
        d_h = d_new + d_y
        # h' = (1 - u) n + u h;  n = tanh(x_n + r a_n);  r, u sigmoids.
        d_n = d_h * (1 - u) * (1 - n * n)
        d_x_r = d_n * a_n * r * (1 - r)
        d_x_u = d_h * (h.astype(u.dtype) - n) * u * (1 - u)
        d_z = jnp.concatenate([d_x_r, d_x_u, d_n * r], axis=-1)
        return (d_h * u).astype(h.dtype), d_z, d_n

    def recur_z_finish(params: GRUParams, xs: Array, d_z: Array, d_n: Array):
        # The reset and update gates' inputs are sums of x and z parts; the
        # candidate's x part is not multiplied by r.
        d_xp = jnp.concatenate([d_z[..., : 2 * H], d_n], axis=-1)
        d_w_x, d_xs = dense_backward(xs, params.w_x, d_xp)
        grads = GRUParams(
            w_x=d_w_x,
            w_h=jnp.zeros_like(params.w_h),
            b_x=sum_over_batch(d_xp).astype(params.b_x.dtype),
            b_h=sum_over_batch(d_z).astype(params.b_h.dtype),
        )
        return grads, d_xs

    fused = FusedRecurrence(
        recur_z, reads=("b_h",), vjp=StepVJP(recur_z_fwd, recur_z_bwd, recur_z_finish)
    )
    return Cell(
        name="gru" if reset_after else "gru_reset_before",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda h: h,
        gated=True,
        gates=gates,
        fused=fused if reset_after else None,  # reset-before has r inside the matmul
        recurrent_scale=scale_w_h,
    )


# ------------------------------------------------------------------ the catalogue


def reference(xp, params, h, x, reset_after: bool = True):
    """One step from the equations in :func:`gru`'s docstring, in the array namespace
    ``xp`` (the catalogue's float64 reference; independent of the code above)."""
    w_x, w_h, b_x, b_h = params
    sigmoid = lambda a: 1.0 / (1.0 + xp.exp(-a))  # noqa: E731
    x_r, x_z, x_n = xp.split(x @ w_x + b_x, 3, axis=-1)
    (w_r, w_z, w_n), (b_r, b_z, b_n) = xp.split(w_h, 3, axis=-1), xp.split(b_h, 3, axis=-1)
    r = sigmoid(x_r + h @ w_r + b_r)
    z = sigmoid(x_z + h @ w_z + b_z)
    if reset_after:
        n = xp.tanh(x_n + r * (h @ w_n + b_n))
    else:
        n = xp.tanh(x_n + (r * h) @ w_n + b_n)
    h_new = (1.0 - z) * n + z * h
    return h_new, h_new


ENTRY = Entry(
    name="gru",
    make=gru,
    reference=reference,
    matmul_flops=lambda i, h: 2 * NUM_GATES * h * (i + h),
    # torch.nn.GRU: the same gate order (r, z, n) and reset-after form; both biases kept.
    torch=TorchMapping(
        module="GRU",
        options={},
        to_params=lambda w: GRUParams(
            w["weight_ih"].T, w["weight_hh"].T, w["bias_ih"], w["bias_hh"]
        ),
        to_torch=lambda p: {
            "weight_ih": p.w_x.T,
            "weight_hh": p.w_h.T,
            "bias_ih": p.b_x,
            "bias_hh": p.b_h,
        },
    ),
    family="gated",
    summary="GRU, reset after the recurrent matmul as PyTorch/cuDNN (Cho et al. 2014)",
)
