"""Flax (linen) modules: thin wrappers that own parameters and call the pure core.

No recurrent math lives here. A module's parameters are exactly the core's pytree:
``Recurrent(layer)`` stores ``layer.init(key, I)`` under ``params["layer"]``, the
readout stores :class:`~rnnjax.readout.ReadoutParams` under ``params["readout"]``.
Dropout between stacked layers draws from the ``"dropout"`` RNG stream when
``deterministic=False``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnjax.layers import Layer, final_hidden
from rnnjax.readout import readout, readout_init

HEADS = ("each", "last")


class Recurrent(nn.Module):
    """Any :class:`~rnnjax.layers.Layer` (one cell over time, bidirectional, stacked).

    ``__call__(xs, lengths=None, initial_carry=None, *, deterministic=True)`` returns
    ``(final_carry, ys)`` exactly as ``layer.apply``: ``xs [*batch, T, I]``,
    ``ys [*batch, T, layer.output_size]``.
    """

    layer: Layer

    @nn.compact
    def __call__(self, xs, lengths=None, initial_carry=None, *, deterministic: bool = True):
        params = self.param("layer", self.layer.init, jnp.shape(xs)[-1])
        key = None if deterministic else self.make_rng("dropout")
        return self.layer.apply(params, xs, initial_carry, lengths=lengths, key=key)


class Readout(nn.Module):
    """The linear output layer ``y = h W_y + b_y`` of :mod:`rnnjax.readout`."""

    features: int

    @nn.compact
    def __call__(self, h):
        params = self.param("readout", readout_init, jnp.shape(h)[-1], self.features)
        return readout(params, h)


class SequenceModel(nn.Module):
    """Embedding (for token inputs) -> recurrent layer -> readout.

    Attributes:
      layer: the recurrent :class:`~rnnjax.layers.Layer`.
      num_outputs: readout size (classes, vocabulary, or regression targets).
      head: ``"each"``: one output per time step ``[*batch, T, num_outputs]`` (language
        models, copy task); padded steps give the readout's bias only and should be
        masked in the loss. ``"last"``: one output per sequence from the final state
        (:func:`~rnnjax.layers.final_hidden`, i.e. each sequence's last valid step)
        ``[*batch, num_outputs]`` (classification, regression).
      vocab_size: if set, inputs are integer tokens ``[*batch, T]`` embedded into
        ``embed_dim`` features; otherwise inputs are float features ``[*batch, T, I]``.
      embed_dim: embedding width (default: the readout's input width is unrelated).
    """

    layer: Layer
    num_outputs: int
    head: str = "each"
    vocab_size: int | None = None
    embed_dim: int | None = None

    @nn.compact
    def __call__(
        self,
        inputs,
        lengths=None,
        initial_carry=None,
        *,
        deterministic: bool = True,
        return_carry: bool = False,
    ) -> Any:
        """Outputs (see ``head``); with ``return_carry=True``, ``(outputs, final_carry)``
        so generation can continue from where the input stopped."""
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}; got {self.head!r}.")
        if self.vocab_size is not None:
            if not jnp.issubdtype(jnp.result_type(inputs), jnp.integer):
                raise ValueError(
                    f"inputs must be integer tokens [*batch, T] when vocab_size is set; "
                    f"got dtype {jnp.result_type(inputs)} and shape {jnp.shape(inputs)}."
                )
            xs = nn.Embed(self.vocab_size, self.embed_dim or self.layer.output_size)(inputs)
        else:
            xs = inputs
        rnn = Recurrent(self.layer, name="rnn")
        carry, ys = rnn(xs, lengths, initial_carry, deterministic=deterministic)
        out = Readout(self.num_outputs, name="head")
        outputs = out(final_hidden(carry)) if self.head == "last" else out(ys)
        return (outputs, carry) if return_carry else outputs


def count_params(params) -> int:
    return sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(params))
