"""Weight import from PyTorch: run a ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` in rnnjax.

torch is an optional dependency (``pip install rnnjax[torch]``), imported only here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.cells.catalogue import torch_entry
from rnnjax.layers import BidirectionalCarry, BidirectionalParams, bidirectional, recurrent, stack


def from_torch(module) -> tuple[Callable[..., Any], tuple]:
    """Convert a PyTorch recurrent module into an rnnjax function and params.

    Supports every module the cell catalogue maps (:class:`rnnjax.cells.TorchMapping`):
    ``torch.nn.RNN`` (tanh or relu), ``torch.nn.LSTM`` (without ``proj_size``) and
    ``torch.nn.GRU``, with any ``num_layers``, ``bidirectional``, ``batch_first`` and
    ``bias``. Each catalogue entry maps one layer's weights to its cell's params (the
    gate orders are PyTorch's, so ``w_x = weight_ih.T``, ``w_h = weight_hh.T``; LSTM and
    RNN keep one bias ``b_ih + b_hh``; GRU keeps both, as ``b_hn`` sits inside
    ``r * (.)``). A module without biases gets zero biases.

    Returns:
      ``(apply, params)``. ``apply(params, xs, hx=None, *, lengths=None, key=None)``
      returns ``(output, final_state)`` laid out exactly as the module's ``forward``:
      ``output`` ``[B, T, D*H]`` if ``batch_first`` else ``[T, B, D*H]`` (or ``[T, D*H]``
      for an unbatched ``[T, I]`` input); ``final_state`` ``h_n``, or ``(h_n, c_n)`` for
      an LSTM (one entry per carry field), each ``[num_layers * D, B, H]``. ``hx`` is
      the initial state in the same layout. ``lengths [B]`` plays the part of
      ``pack_padded_sequence``: padded outputs are zero and the final state is taken at
      each sequence's last valid step. ``key`` enables the module's inter-layer dropout
      (training mode); without it the function is deterministic, like ``module.eval()``.
    """
    entry = torch_entry(module)
    hidden, num_layers = module.hidden_size, module.num_layers
    num_dirs = 2 if module.bidirectional else 1
    batch_first = module.batch_first
    make_cell = lambda: entry.make(hidden)  # noqa: E731

    layers = [
        bidirectional(make_cell(), make_cell()) if num_dirs == 2 else recurrent(make_cell())
        for _ in range(num_layers)
    ]
    net = stack(layers, dropout_rate=float(module.dropout))
    zeros = make_cell().initial_carry(())
    carry_def = jax.tree.structure(zeros)
    num_parts = carry_def.num_leaves  # the module's state: h_n, or (h_n, c_n)
    part_names = (
        ("h_0", "c_0")[:num_parts] if num_parts <= 2 else [f"hx[{i}]" for i in range(num_parts)]
    )

    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}

    def direction_params(layer: int, suffix: str):
        name = f"_l{layer}{suffix}"
        w_ih = state["weight_ih" + name]
        zeros = np.zeros(w_ih.shape[0], w_ih.dtype)
        w = {
            "weight_ih": w_ih,
            "weight_hh": state["weight_hh" + name],
            "bias_ih": state.get("bias_ih" + name, zeros),
            "bias_hh": state.get("bias_hh" + name, zeros),
        }
        return jax.tree.map(jnp.asarray, entry.torch.to_params(w))

    params = tuple(
        BidirectionalParams(direction_params(k, ""), direction_params(k, "_reverse"))
        if num_dirs == 2
        else direction_params(k, "")
        for k in range(num_layers)
    )

    def to_carry(hx, batch_shape):
        """Torch's [L*D, *batch, H] state(s) -> the stack's per-layer carries."""
        expected = (num_layers * num_dirs,) + tuple(batch_shape) + (hidden,)
        if num_parts > 1 and not (isinstance(hx, (tuple, list)) and len(hx) == num_parts):
            raise ValueError(
                f"hx of a torch.nn.{entry.torch.module} must be a tuple "
                f"({', '.join(part_names)}); got {type(hx).__name__}."
            )
        parts = [jnp.asarray(p) for p in (hx if num_parts > 1 else (hx,))]
        for name, p in zip(part_names, parts):
            if p.shape != expected:
                raise ValueError(f"hx's {name} must have shape {expected}; got {p.shape}.")

        def one(i):
            return jax.tree.unflatten(carry_def, [p[i] for p in parts])

        return tuple(
            BidirectionalCarry(one(2 * k), one(2 * k + 1)) if num_dirs == 2 else one(k)
            for k in range(num_layers)
        )

    def from_carry(carries):
        flat = []
        for c in carries:
            flat.extend([c.forward, c.backward] if num_dirs == 2 else [c])
        parts = [jnp.stack(leaves) for leaves in zip(*(jax.tree.leaves(c) for c in flat))]
        return tuple(parts) if num_parts > 1 else parts[0]

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
