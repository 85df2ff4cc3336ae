"""Weight import from PyTorch: run a ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` in rnnjax.

torch is an optional dependency (``pip install rnnjax[torch]``), imported only here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from rnnjax.cells import ElmanParams, GRUParams, LSTMCarry, LSTMParams, elman, gru, lstm
from rnnjax.layers import BidirectionalCarry, BidirectionalParams, bidirectional, recurrent, stack


def from_torch(module) -> tuple[Callable[..., Any], tuple]:
    """Convert a PyTorch recurrent module into an rnnjax function and params.

    Supports ``torch.nn.RNN`` (tanh or relu), ``torch.nn.LSTM`` (without ``proj_size``)
    and ``torch.nn.GRU`` with any ``num_layers``, ``bidirectional``, ``batch_first``
    and ``bias``. The gate orders are the same as PyTorch's ((i, f, g, o) and (r, z, n)),
    so weights map one-to-one: ``w_x = weight_ih.T``, ``w_h = weight_hh.T``; LSTM and
    RNN keep one bias ``b_ih + b_hh``; GRU keeps both (``b_hn`` sits inside ``r * (.)``).
    A module without biases gets zero biases.

    Returns:
      ``(apply, params)``. ``apply(params, xs, hx=None, *, lengths=None, key=None)``
      returns ``(output, final_state)`` laid out exactly as the module's ``forward``:
      ``output`` ``[B, T, D*H]`` if ``batch_first`` else ``[T, B, D*H]`` (or ``[T, D*H]``
      for an unbatched ``[T, I]`` input); ``final_state`` ``h_n``, or ``(h_n, c_n)`` for
      an LSTM, each ``[num_layers * D, B, H]``. ``hx`` is the initial state in the same
      layout. ``lengths [B]`` plays the part of ``pack_padded_sequence``: padded outputs
      are zero and the final state is taken at each sequence's last valid step.
      ``key`` enables the module's inter-layer dropout (training mode); without it the
      function is deterministic, like ``module.eval()``.
    """
    import torch

    if isinstance(module, torch.nn.LSTM):
        if getattr(module, "proj_size", 0):
            raise ValueError(
                f"LSTM with proj_size={module.proj_size} is not supported; expected proj_size=0."
            )
        kind = "lstm"
    elif isinstance(module, torch.nn.GRU):
        kind = "gru"
    elif isinstance(module, torch.nn.RNN):
        kind = "rnn"
    else:
        raise ValueError(
            "module must be a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU; "
            f"got {type(module).__name__}."
        )

    hidden, num_layers = module.hidden_size, module.num_layers
    num_dirs = 2 if module.bidirectional else 1
    batch_first = module.batch_first

    def make_cell():
        if kind == "lstm":
            return lstm(hidden)
        if kind == "gru":
            return gru(hidden, reset_after=True)
        return elman(hidden, activation=module.nonlinearity)

    layers = [
        bidirectional(make_cell(), make_cell()) if num_dirs == 2 else recurrent(make_cell())
        for _ in range(num_layers)
    ]
    net = stack(layers, dropout_rate=float(module.dropout))

    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}

    def direction_params(layer: int, suffix: str):
        name = f"_l{layer}{suffix}"
        w_ih, w_hh = state["weight_ih" + name], state["weight_hh" + name]
        zeros = np.zeros(w_ih.shape[0], w_ih.dtype)
        b_ih, b_hh = state.get("bias_ih" + name, zeros), state.get("bias_hh" + name, zeros)
        w_x, w_h = jnp.asarray(w_ih.T), jnp.asarray(w_hh.T)
        if kind == "lstm":
            return LSTMParams(w_x, w_h, jnp.asarray(b_ih + b_hh))
        if kind == "gru":
            return GRUParams(w_x, w_h, jnp.asarray(b_ih), jnp.asarray(b_hh))
        return ElmanParams(w_x, w_h, jnp.asarray(b_ih + b_hh))

    params = tuple(
        BidirectionalParams(direction_params(k, ""), direction_params(k, "_reverse"))
        if num_dirs == 2
        else direction_params(k, "")
        for k in range(num_layers)
    )

    def to_carry(hx, batch_shape):
        """Torch's [L*D, *batch, H] state(s) -> the stack's per-layer carries."""
        expected = (num_layers * num_dirs,) + tuple(batch_shape) + (hidden,)
        parts = hx if kind == "lstm" else (hx,)
        if kind == "lstm" and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise ValueError("hx of an LSTM must be a pair (h_0, c_0).")
        parts = [jnp.asarray(p) for p in parts]
        for name, p in zip(("h_0", "c_0"), parts):
            if p.shape != expected:
                raise ValueError(f"hx's {name} must have shape {expected}; got {p.shape}.")

        def one(i):
            return LSTMCarry(parts[0][i], parts[1][i]) if kind == "lstm" else parts[0][i]

        return tuple(
            BidirectionalCarry(one(2 * k), one(2 * k + 1)) if num_dirs == 2 else one(k)
            for k in range(num_layers)
        )

    def from_carry(carries):
        flat = []
        for c in carries:
            flat.extend([c.forward, c.backward] if num_dirs == 2 else [c])
        if kind == "lstm":
            return jnp.stack([c.h for c in flat]), jnp.stack([c.c for c in flat])
        return jnp.stack(flat)

    def apply(params, xs, hx=None, *, lengths=None, key=None):
        xs = jnp.asarray(xs)
        if xs.ndim not in (2, 3):
            layout = "[B, T, I]" if batch_first else "[T, B, I]"
            raise ValueError(
                f"xs must have shape {layout} or [T, I] (unbatched); got shape {tuple(xs.shape)}."
            )
        time_major = not batch_first or xs.ndim == 2
        batch_shape = () if xs.ndim == 2 else (xs.shape[0] if batch_first else xs.shape[1],)
        carry = None if hx is None else to_carry(hx, batch_shape)
        finals, ys = net.apply(params, xs, carry, lengths=lengths, key=key, time_major=time_major)
        return ys, from_carry(finals)

    return apply, params
