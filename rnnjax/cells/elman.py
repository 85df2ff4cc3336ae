"""The Elman recurrent network (Elman 1990), with tanh, relu or identity activation."""

from __future__ import annotations

from collections.abc import Callable
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
    initialize,
    resolve_batch_shape,
    scale_w_h,
    summed_bias_mapping,
)

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "identity": lambda z: z,
}
# Each named activation's derivative, read off its output y = phi(z) (JAX's own
# convention at relu's kink: 0).
DERIVATIVES: dict[str, Callable[[Array], Array]] = {
    "tanh": lambda y: 1 - y * y,
    "relu": lambda y: (y > 0).astype(y.dtype),
    "identity": jnp.ones_like,
}


class ElmanParams(NamedTuple):
    w_x: Array  # [I, H]
    w_h: Array  # [H, H]
    b: Array  # [H]


def elman(
    hidden_size: int,
    *,
    activation: str | Callable[[Array], Array] = "tanh",
    kernel_init: Initializer = jax.nn.initializers.lecun_normal(),
    recurrent_init: Initializer = jax.nn.initializers.orthogonal(),
    bias_init: Initializer = jax.nn.initializers.zeros,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """Elman RNN cell (Elman 1990), the "vanilla" RNN.

    Equation (one step, row-vector convention)::

        h' = phi(x W_x + h W_h + b)        y = h'

    Args:
      hidden_size: ``H``.
      activation: ``"tanh"`` (default), ``"relu"``, ``"identity"`` (a linear RNN, for
        gradient-flow studies) or any elementwise callable.
      kernel_init: initialiser of ``W_x [I, H]``; default lecun normal (variance 1/I).
      recurrent_init: initialiser of ``W_h [H, H]``; default orthogonal.
      bias_init: initialiser of ``b [H]``; default zeros. (PyTorch's ``nn.RNN`` has two
        biases ``b_ih + b_hh``; they only ever appear summed, so one is kept.)
      dtype: computation dtype; ``None`` promotes inputs and params.
      param_dtype: dtype of the parameters ``init`` creates.

    Returns:
      A :class:`Cell` named ``"rnn_<activation>"`` (``"rnn"`` for a callable).
      Params: ``ElmanParams(w_x [I, H], w_h [H, H], b [H])``.
      Carry: ``h [*batch, H]``, a bare array. Output: ``h'``. Any leading batch dims.
      Declares: the fused backward (matmul ``h W_h``), recurrent scale ``W_h -> g W_h``;
      ungated.
    """
    hidden_size = check_positive_int("hidden_size", hidden_size)
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)} or a callable; "
                f"got {activation!r}."
            )
        phi = ACTIVATIONS[activation]
    elif callable(activation):
        phi = activation
    else:
        raise ValueError(f"activation must be a string or a callable; got {activation!r}.")
    H = hidden_size

    def init(key: Array, input_size: int) -> ElmanParams:
        input_size = check_positive_int("input_size", input_size)
        k_x, k_h, k_b = jax.random.split(key, 3)
        return ElmanParams(
            w_x=initialize(kernel_init, k_x, (input_size, H), param_dtype),
            w_h=initialize(recurrent_init, k_h, (H, H), param_dtype),
            b=initialize(bias_init, k_b, (H,), param_dtype),
        )

    _dtype = dtype

    def initial_carry(batch_shape=(), dtype=None) -> Array:
        dt = dtype or _dtype or param_dtype
        return jnp.zeros(resolve_batch_shape(batch_shape) + (H,), dt)

    def project(params: ElmanParams, xs: Array) -> Array:
        check_input(xs, params.w_x.shape[0], "xs")
        dt = compute_dtype(_dtype, xs, params.w_x)
        return xs.astype(dt) @ params.w_x.astype(dt) + params.b.astype(dt)

    def recur(params: ElmanParams, h: Array, xp: Array) -> tuple[Array, Array]:
        dt = compute_dtype(_dtype, xp, params.w_h)
        return recur_z(params, h, xp.astype(dt), h.astype(dt) @ params.w_h.astype(dt))

    def recur_z(params: ElmanParams, h: Array, xp: Array, z: Array) -> tuple[Array, Array]:
        h_new = phi(xp + z).astype(h.dtype)
        return h_new, h_new

    derivative = DERIVATIVES.get(activation) if isinstance(activation, str) else None

    def recur_z_fwd(params: ElmanParams, h: Array, xp: Array, z: Array):
        pre = xp + z
        h_new = phi(pre).astype(h.dtype)
        # A named activation's derivative comes from the output y = h', which the
        # driver keeps anyway; any other from the pre-activation, through JAX.
        return (h_new, h_new), (None if derivative is not None else pre)

    def recur_z_bwd(params: ElmanParams, h: Array, saved, y: Array, d_new: Array, d_y: Array):
        d_h = d_new + d_y
        if derivative is not None:
            d_pre = d_h * derivative(y)
        else:
            d_pre = jax.vjp(phi, saved)[1](d_h.astype(saved.dtype))[0]
        return jnp.zeros_like(h), d_pre, None

    return Cell(
        name=f"rnn_{activation}" if isinstance(activation, str) else "rnn",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda h: h,
        fused=FusedRecurrence(recur_z, vjp=StepVJP(recur_z_fwd, recur_z_bwd, additive_finish)),
        recurrent_scale=scale_w_h,
    )


# ------------------------------------------------------------------ the catalogue


def reference(xp, params, h, x, activation: str = "tanh"):
    """One step from the equation ``h' = phi(x W_x + h W_h + b)``, in the array
    namespace ``xp`` (the catalogue's float64 reference; independent of the code above)."""
    w_x, w_h, b = params
    pre = x @ w_x + h @ w_h + b
    h_new = xp.tanh(pre) if activation == "tanh" else xp.maximum(pre, 0.0)
    return h_new, h_new


def _entry(activation: str) -> Entry:
    def make(hidden_size, **options):
        return elman(hidden_size, activation=activation, **options)

    def ref(xp, params, h, x):
        return reference(xp, params, h, x, activation)

    return Entry(
        name=f"rnn_{activation}",
        make=make,
        reference=ref,
        matmul_flops=lambda i, h: 2 * h * (i + h),
        # torch.nn.RNN: h' = phi(x W_ih^T + b_ih + h W_hh^T + b_hh).
        torch=summed_bias_mapping("RNN", {"nonlinearity": activation}, ElmanParams),
        family="classic",
        summary=f"Elman RNN, {activation} (Elman 1990)",
    )


RNN_TANH = _entry("tanh")
RNN_RELU = _entry("relu")
