"""Long short-term memory (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000)."""

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
    additive_finish,
    check_input,
    check_positive_int,
    compute_dtype,
    gate_init,
    initialize,
    resolve_batch_shape,
    scale_w_h,
    summed_bias_mapping,
)

NUM_GATES = 4


class LSTMParams(NamedTuple):
    w_x: Array  # [I, 4H], gate blocks (i, f, g, o)
    w_h: Array  # [H, 4H], gate blocks (i, f, g, o)
    b: Array  # [4H]


class LSTMCarry(NamedTuple):
    h: Array  # [*batch, H]
    c: Array  # [*batch, H]


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    kernel_init: Initializer = jax.nn.initializers.lecun_normal(),
    recurrent_init: Initializer = jax.nn.initializers.orthogonal(),
    bias_init: Initializer = jax.nn.initializers.zeros,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """Long short-term memory cell with a forget gate.

    Gates in order (i, f, g, o), as PyTorch and cuDNN::

        z = x W_x + h W_h + b                  z = [z_i, z_f, z_g, z_o]
        i = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_g)   o = sigmoid(z_o)
        c' = f * c + i * g
        h' = o * tanh(c')                      y = h'

    Args:
      hidden_size: ``H``.
      forget_bias: added to the forget-gate block of ``b`` at ``init`` (default 1.0,
        Jozefowicz et al. 2015), so the cell starts out remembering. Set 0.0 for the
        plain initialisation; pass a ``bias_init`` for chrono initialisation.
      kernel_init: initialiser of each ``[I, H]`` gate block of ``W_x``; lecun normal.
      recurrent_init: initialiser of each ``[H, H]`` gate block of ``W_h``; orthogonal.
      bias_init: initialiser of ``b [4H]`` before ``forget_bias`` is added; zeros.
        (PyTorch's two biases ``b_ih + b_hh`` only appear summed, so one is kept.)
      dtype: computation dtype; ``None`` promotes inputs and params.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell`. Params: ``LSTMParams(w_x [I, 4H], w_h [H, 4H], b [4H])``.
      Carry: ``LSTMCarry(h, c)``, each ``[*batch, H]``. Output: ``h'``.
      ``project`` returns one array per gate, ``(x_i, x_f, x_g, x_o)``, because that
      layout let XLA:CPU fuse the per-step slice into the gate arithmetic.
      Declares: gated, its gates (input, forget, candidate, output), the fused
      backward (matmul ``h W_h``), recurrent scale ``W_h -> g W_h``.
    """
    hidden_size = check_positive_int("hidden_size", hidden_size)
    H = hidden_size
    _dtype = dtype

    def init(key: Array, input_size: int) -> LSTMParams:
        input_size = check_positive_int("input_size", input_size)
        k_x, k_h, k_b = jax.random.split(key, 3)
        b = initialize(bias_init, k_b, (NUM_GATES * H,), param_dtype)
        b = b.at[H : 2 * H].add(jnp.asarray(forget_bias, param_dtype))
        return LSTMParams(
            w_x=gate_init(kernel_init, k_x, input_size, H, NUM_GATES, param_dtype),
            w_h=gate_init(recurrent_init, k_h, H, H, NUM_GATES, param_dtype),
            b=b,
        )

    def initial_carry(batch_shape=(), dtype=None) -> LSTMCarry:
        dt = dtype or _dtype or param_dtype
        zeros = jnp.zeros(resolve_batch_shape(batch_shape) + (H,), dt)
        return LSTMCarry(h=zeros, c=zeros)

    def project(params: LSTMParams, xs: Array) -> tuple[Array, ...]:
        check_input(xs, params.w_x.shape[0], "xs")
        dt = compute_dtype(_dtype, xs, params.w_x)
        z = xs.astype(dt) @ params.w_x.astype(dt) + params.b.astype(dt)
        return tuple(jnp.split(z, NUM_GATES, axis=-1))

    def gates_z(xp, z) -> dict[str, Array]:
        x_i, x_f, x_g, x_o = xp
        z_i, z_f, z_g, z_o = jnp.split(z, NUM_GATES, -1)
        return {
            "input": jax.nn.sigmoid(x_i + z_i),
            "forget": jax.nn.sigmoid(x_f + z_f),
            "candidate": jnp.tanh(x_g + z_g),
            "output": jax.nn.sigmoid(x_o + z_o),
        }

    def gates(params: LSTMParams, carry: LSTMCarry, xp) -> dict[str, Array]:
        dt = compute_dtype(_dtype, xp[0], params.w_h)
        return gates_z(xp, carry.h.astype(dt) @ params.w_h.astype(dt))

    def update(carry: LSTMCarry, a: dict[str, Array]) -> tuple[LSTMCarry, Array]:
        c_new = a["forget"] * carry.c.astype(a["forget"].dtype) + a["input"] * a["candidate"]
        h_new = a["output"] * jnp.tanh(c_new)
        new = LSTMCarry(h=h_new.astype(carry.h.dtype), c=c_new.astype(carry.c.dtype))
        return new, new.h

    def recur(params: LSTMParams, carry: LSTMCarry, xp) -> tuple[LSTMCarry, Array]:
        return update(carry, gates(params, carry, xp))

    def recur_z(params: LSTMParams, carry: LSTMCarry, xp, z) -> tuple[LSTMCarry, Array]:
        return update(carry, gates_z(xp, z))

    def recur_z_fwd(params: LSTMParams, carry: LSTMCarry, xp, z):
        a = gates_z(xp, z)
        new, y = update(carry, a)
        # The four activations as four arrays: concatenated into one [*batch, 4H] store
        # per step, the training step was 1.03-1.17x slower (benchmark sizes, CPU; README).
        saved = (a["input"], a["forget"], a["candidate"], a["output"])
        return (new, y), saved

    def recur_z_bwd(params: LSTMParams, carry: LSTMCarry, saved, y, d_new: LSTMCarry, d_y):
        i, f, g, o = saved
        c_prev = carry.c.astype(i.dtype)
        tanh_c = jnp.tanh(f * c_prev + i * g)
        d_h = d_new.h + d_y
        d_c = d_new.c + d_h * o * (1 - tanh_c * tanh_c)
        # Through sigmoid (s' = s (1 - s)) and tanh (1 - t^2) to each gate's input.
        d_z = jnp.concatenate(
            [
                d_c * g * i * (1 - i),
                d_c * c_prev * f * (1 - f),
                d_c * i * (1 - g * g),
                d_h * tanh_c * o * (1 - o),
            ],
            axis=-1,
        )
        d_carry = LSTMCarry(h=jnp.zeros_like(carry.h), c=(d_c * f).astype(carry.c.dtype))
        return d_carry, d_z, None

    return Cell(
        name="lstm",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda carry: carry.h,
        gated=True,
        gates=gates,
        fused=FusedRecurrence(recur_z, vjp=StepVJP(recur_z_fwd, recur_z_bwd, additive_finish)),
        recurrent_scale=scale_w_h,
    )


def chrono_bias_init(max_timescale: float):
    """Chrono initialisation of the LSTM bias (Tallec & Ollivier 2018).

    ``b_f = log(u)``, ``u ~ U[1, max_timescale - 1]``, and ``b_i = -b_f``; other gate
    biases 0. The forget gate then starts with memory timescales spread up to about
    ``max_timescale`` steps. Use with ``forget_bias=0.0``:
    ``lstm(H, forget_bias=0.0, bias_init=chrono_bias_init(T))``.
    """
    if not max_timescale > 2:
        raise ValueError(f"max_timescale must be > 2; got {max_timescale!r}.")

    def init(key, shape, dtype=jnp.float32):
        (size,) = shape
        if size % NUM_GATES:
            raise ValueError(f"chrono_bias_init expects an LSTM bias of shape [4H]; got {shape}.")
        H = size // NUM_GATES
        b_f = jnp.log(jax.random.uniform(key, (H,), jnp.float32, 1.0, max_timescale - 1.0))
        zeros = jnp.zeros((H,), jnp.float32)
        return jnp.concatenate([-b_f, b_f, zeros, zeros]).astype(dtype)

    return init


# ------------------------------------------------------------------ the catalogue


def reference(xp, params, carry, x):
    """One step from the equations in :func:`lstm`'s docstring, in the array namespace
    ``xp`` (the catalogue's float64 reference; independent of the code above)."""
    w_x, w_h, b = params
    h, c = carry
    sigmoid = lambda a: 1.0 / (1.0 + xp.exp(-a))  # noqa: E731
    i, f, g, o = xp.split(x @ w_x + h @ w_h + b, 4, axis=-1)
    c_new = sigmoid(f) * c + sigmoid(i) * xp.tanh(g)
    h_new = sigmoid(o) * xp.tanh(c_new)
    return LSTMCarry(h_new, c_new), h_new


ENTRY = Entry(
    name="lstm",
    make=lstm,
    reference=reference,
    matmul_flops=lambda i, h: 2 * NUM_GATES * h * (i + h),
    # torch.nn.LSTM: the same gate order (i, f, g, o); its two biases summed.
    torch=summed_bias_mapping("LSTM", {"proj_size": 0}, LSTMParams),
    family="gated",
    summary="LSTM with a forget gate (Hochreiter & Schmidhuber 1997; Gers et al. 2000)",
)
