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

from rnnjax import decode
from rnnjax.cells.base import Cell, check_positive_int
from rnnjax.cells.catalogue import make_cell
from rnnjax.layers import Layer, final_hidden, make_layer
from rnnjax.readout import readout, readout_init
from rnnjax.seq2seq import (
    Decoder,
    Memory,
    bridge_init,
    bridge_mode,
    check_token_ids,
    decoder,
    start,
)
from rnnjax.tasks.vocab import BOS, EOS, PAD

HEADS = ("each", "last", "flatten")


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
        # A key only where the layer draws from one: a layer without dropout runs with
        # deterministic=False and no "dropout" rng, as Flax's own Dropout at rate 0 does.
        key = None if deterministic or not self.layer.stochastic else self.make_rng("dropout")
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
        ``[*batch, num_outputs]`` (classification, regression). ``"flatten"``: one
        output per sequence from every step's output at once, the readout reading
        ``ys`` reshaped to ``[*batch, T * C]`` (the MNIST-1D paper's GRU; its width
        depends on ``T``, so every batch must have the ``T`` of the init, and padded
        steps enter it as the layer's outputs there: zeros).
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
            for name, value in (("vocab_size", self.vocab_size), ("embed_dim", self.embed_dim)):
                if value is not None:
                    check_positive_int(name, value)
            check_token_ids("inputs", inputs, self.vocab_size)
            width = self.layer.output_size if self.embed_dim is None else self.embed_dim
            xs = nn.Embed(self.vocab_size, width)(inputs)
        else:
            xs = inputs
        rnn = Recurrent(self.layer, name="rnn")
        carry, ys = rnn(xs, lengths, initial_carry, deterministic=deterministic)
        out = Readout(self.num_outputs, name="head")
        if self.head == "last":
            outputs = out(final_hidden(carry, self.layer))
        elif self.head == "flatten":
            outputs = out(jnp.reshape(ys, (*jnp.shape(ys)[:-2], -1)))
        else:
            outputs = out(ys)
        return (outputs, carry) if return_carry else outputs


def _check_tokens(name: str, tokens, rank: int = 2):
    shape = jnp.shape(tokens)
    if len(shape) != rank or not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
        want = "[B, S]" if rank == 2 else "[B]"
        raise ValueError(
            f"{name} must be integer tokens of shape {want}; got dtype "
            f"{jnp.result_type(tokens)} and shape {tuple(shape)}."
        )


class Encoder(nn.Module):
    """Token embedding, then any :class:`~rnnjax.layers.Layer` (stacked, bidirectional).

    ``__call__(tokens [B, S], lengths [B] | None) -> (final_carry, ys [B, S, C])``; the
    context vector is ``final_hidden(final_carry)``, each sequence's last valid state
    (both directions' for a bidirectional layer).
    """

    layer: Layer
    vocab_size: int
    embed_dim: int

    @nn.compact
    def __call__(self, tokens, lengths=None, *, deterministic: bool = True):
        _check_tokens("src", tokens)
        check_token_ids("src", tokens, self.vocab_size)
        xs = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(tokens)
        return Recurrent(self.layer, name="rnn")(xs, lengths, deterministic=deterministic)


class Seq2Seq(nn.Module):
    """Encoder-decoder (REFERENCE.md section 1) over the pure cells.

    The encoder's final state is the context vector; the decoder
    (:func:`rnnjax.seq2seq.decoder`) is fed the previous token and the context (or an
    attention context recomputed per step) at every step.

    Attributes:
      src_vocab / tgt_vocab: vocabulary sizes (may be equal and share ids).
      encoder: the encoder :class:`~rnnjax.layers.Layer`, e.g.
        ``make_layer("gru", 128, bidirectional=True)``.
      decoder_cells: one cell per decoder layer, e.g. ``(make_cell("lstm", 128),)``.
      embed_dim: width of both embeddings.
      attention: ``None`` (fixed context), ``"bahdanau"``, ``"luong_dot"`` or
        ``"luong_general"``.
      attention_size: width of the additive attention (default: decoder hidden size).
      bridge: how the encoder's final carry becomes the decoder's initial carry:
        ``"copy"`` (same cell, size and depth), ``"dense"`` (``tanh(c W + b)`` per carry
        field), ``"zeros"``, or ``"auto"`` (copy when possible, else dense).
      pad, bos, eos: the target vocabulary's special ids, for decoding
        (:mod:`rnnjax.tasks.vocab`'s by default).

    Methods (``model.apply(variables, ..., method=...)``):
      ``__call__(src, src_lengths, tgt_in, *, sampling_rate=0.0, deterministic=True)
      -> (logits [B, L, V], attention weights [B, L, S] or None)``: teacher forcing;
      ``sampling_rate > 0`` needs the ``"sampling"`` RNG stream, dropout the
      ``"dropout"`` stream.
      ``encode(src, src_lengths) -> (Memory, DecoderState)``;
      ``step(memory, state, tokens [B]) -> (state, logits [B, V], weights)``;
      ``greedy(src, src_lengths, *, max_len) -> Decoded``;
      ``beam(src, src_lengths, *, beam_width, max_len, alpha=0.0) -> (Decoded, Beams)``.
    """

    src_vocab: int
    tgt_vocab: int
    encoder: Layer
    decoder_cells: tuple[Cell, ...]
    embed_dim: int = 64
    attention: str | None = None
    attention_size: int | None = None
    bridge: str = "auto"
    pad: int = PAD
    bos: int = BOS
    eos: int = EOS

    def _decoder(self) -> Decoder:
        return decoder(
            self.decoder_cells,
            self.tgt_vocab,
            self.embed_dim,
            self.encoder.output_size,
            attention=self.attention,
            attention_size=self.attention_size,
        )

    def setup(self):
        dec = self._decoder()
        self.enc = Encoder(self.encoder, self.src_vocab, self.embed_dim)
        self.decoder_params = self.param("decoder", dec.init)
        dec_carry = dec.initial_carry((1,))
        self.bridge_kind = bridge_mode(self.bridge, self.encoder.initial_carry((1,)), dec_carry)
        self.bridge_params = (
            self.param("bridge", bridge_init, self.encoder.output_size, dec_carry)
            if self.bridge_kind == "dense"
            else None
        )

    def encode(self, src, src_lengths=None, *, deterministic: bool = True):
        _check_tokens("src", src)
        B, S = jnp.shape(src)
        if src_lengths is not None and jnp.shape(src_lengths) != (B,):
            raise ValueError(
                f"src_lengths must have shape [B] = ({B},) to match src {(B, S)}; "
                f"got {jnp.shape(src_lengths)}."
            )
        carry, ys = self.enc(src, src_lengths, deterministic=deterministic)
        bridge = (self.bridge_kind, self.bridge_params)
        return start(
            self._decoder(), self.decoder_params, bridge, self.encoder, carry, ys, src_lengths
        )

    def step(self, memory: Memory, state, tokens):
        _check_tokens("tokens", tokens, rank=1)
        check_token_ids("tokens", tokens, self.tgt_vocab)
        return self._decoder().step(self.decoder_params, memory, state, tokens)

    def __call__(
        self, src, src_lengths, tgt_in, *, sampling_rate: float = 0.0, deterministic: bool = True
    ):
        _check_tokens("tgt_in", tgt_in)  # its ids: teacher_force checks them, once
        if jnp.shape(tgt_in)[0] != jnp.shape(src)[0]:
            raise ValueError(
                f"tgt_in [B, L] and src [B, S] must share the batch size; got "
                f"{jnp.shape(tgt_in)} and {jnp.shape(src)}."
            )
        if not 0.0 <= sampling_rate <= 1.0:
            raise ValueError(f"sampling_rate must lie in [0, 1]; got {sampling_rate!r}.")
        memory, state = self.encode(src, src_lengths, deterministic=deterministic)
        key = self.make_rng("sampling") if sampling_rate else None
        return self._decoder().teacher_force(
            self.decoder_params, memory, state, tgt_in, sampling_rate=sampling_rate, key=key
        )

    def _step_fn(self):
        dec, params = self._decoder(), self.decoder_params
        return lambda memory, state, tokens: dec.step(params, memory, state, tokens)[:2]

    def greedy(self, src, src_lengths=None, *, max_len: int) -> decode.Decoded:
        memory, state = self.encode(src, src_lengths)
        return decode.greedy(self._step_fn(), memory, state, max_len=max_len, **self._special_ids())

    def beam(self, src, src_lengths=None, *, beam_width: int, max_len: int, alpha: float = 0.0):
        memory, state = self.encode(src, src_lengths)
        return decode.beam_search(
            self._step_fn(), memory, state, beam_width=beam_width, max_len=max_len,
            alpha=alpha, **self._special_ids(),
        )  # fmt: skip

    def _special_ids(self) -> dict[str, int]:
        return {"bos": self.bos, "eos": self.eos, "pad": self.pad}


def make_seq2seq(
    src_vocab: int,
    tgt_vocab: int | None = None,
    *,
    cell: str = "lstm",
    hidden_size: int = 128,
    encoder_layers: int = 1,
    decoder_layers: int = 1,
    bidirectional: bool = False,
    decoder_cell: str | None = None,
    decoder_hidden: int | None = None,
    embed_dim: int = 64,
    attention: str | None = None,
    attention_size: int | None = None,
    bridge: str = "auto",
    dropout_rate: float = 0.0,
) -> Seq2Seq:
    """A :class:`Seq2Seq` from names: ``make_seq2seq(V, cell="gru", attention="bahdanau")``.

    The decoder defaults to the encoder's cell and hidden size; ``tgt_vocab`` to
    ``src_vocab`` (one shared vocabulary).
    """
    encoder = make_layer(
        cell,
        hidden_size,
        num_layers=encoder_layers,
        bidirectional=bidirectional,
        dropout_rate=dropout_rate,
    )
    check_positive_int("decoder_layers", decoder_layers)
    cells = tuple(
        make_cell(decoder_cell or cell, decoder_hidden or hidden_size)
        for _ in range(decoder_layers)
    )
    return Seq2Seq(
        src_vocab=src_vocab,
        tgt_vocab=src_vocab if tgt_vocab is None else tgt_vocab,
        encoder=encoder,
        decoder_cells=cells,
        embed_dim=embed_dim,
        attention=attention,
        attention_size=attention_size,
        bridge=bridge,
    )


def count_params(params) -> int:
    return sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(params))
