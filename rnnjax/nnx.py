"""Flax NNX modules: the linen modules of :mod:`rnnjax.modules`, as ``nnx.Module``\\ s.

No recurrent math lives here either: every module holds the core's parameter pytrees and
calls the pure functions (:class:`~rnnjax.layers.Layer`'s ``apply``, the decoder of
:mod:`rnnjax.seq2seq`, :mod:`rnnjax.decode`). A module's parameters are exactly the
core's pytree with every array in an ``nnx.Param``: ``Recurrent(layer, 8, rngs=...).params``
is ``layer.init(key, 8)`` (the same ``NamedTuple``\\ s, in the same places), so
:func:`unwrap` gives what :func:`rnnjax.scan` and ``layer.apply`` take, :func:`wrap` and
the ``params=`` arguments take it back, and :func:`from_linen` / :func:`to_linen` move
whole models between the two Flax APIs without renaming anything.

One ``nnx.Param`` per array, not one per pytree: Flax 0.12's ``nnx.Optimizer`` loses
the structure of a ``Param`` whose value is a pytree (its second ``update`` fails), and
per-array ``Param``\\ s are what ``nnx.state`` filters, sharding metadata and orbax
expect. ``nnx.state(model)``'s paths follow the core pytree's fields
(``rnn/params/0/forward/w_x``).

Dropout between stacked layers (``make_layer(..., dropout_rate=...)``) draws from the
``"dropout"`` stream of the ``nnx.Rngs`` given at construction, as ``nnx.Dropout`` does:
on unless the module is ``deterministic`` (``model.eval()``, ``nnx.view(model,
deterministic=True)``, or ``deterministic=True`` at the call), which linen's modules
are by default. Seq2Seq's scheduled sampling draws from the ``"sampling"`` stream.

Shapes: ``B`` batch, ``T`` time (``S`` source, ``L`` target), ``I`` input features,
``V`` vocabulary, ``E`` embedding width.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx as fnnx

from rnnjax import decode
from rnnjax import modules as linen
from rnnjax.cells.base import Array, Cell, PyTree, check_positive_int
from rnnjax.layers import Layer, final_hidden
from rnnjax.modules import HEADS, _check_tokens
from rnnjax.readout import ReadoutParams, readout, readout_init
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

# linen's heads that this front end has (the 'flatten' readout is linen's only).
NNX_HEADS = ("each", "last")

__all__ = [
    "Encoder",
    "Readout",
    "Recurrent",
    "Seq2Seq",
    "SequenceModel",
    "from_linen",
    "make_seq2seq",
    "to_linen",
    "unwrap",
    "wrap",
]

RngsLike = fnnx.Rngs | fnnx.RngStream | jax.Array  # what a call's rngs may be


def _is_variable(x) -> bool:
    return isinstance(x, fnnx.Variable)


def wrap(params: PyTree) -> PyTree:
    """The core pytree ``params`` with every array in an ``nnx.Param`` (same structure,
    same ``NamedTuple``\\ s), ready to be a module attribute."""
    return jax.tree.map(fnnx.Param, params)


def unwrap(params: PyTree) -> PyTree:
    """The core pytree of arrays under a pytree of ``nnx.Variable``\\ s: the inverse of
    :func:`wrap`, what the pure functions (``layer.apply``, :func:`rnnjax.scan`) take."""
    return jax.tree.map(lambda v: v.get_value(), params, is_leaf=_is_variable)


def _describe(tree) -> str:
    return str(jax.tree.map(lambda a: f"{jnp.result_type(a)}{list(jnp.shape(a))}", tree))


def _check_like(name: str, given: PyTree, expected: PyTree, *, shapes: bool = True) -> None:
    """A ``ValueError`` naming ``name`` unless ``given`` has ``expected``'s structure
    (and, with ``shapes``, its leaves' shapes and dtypes); ``expected`` may be abstract."""
    if jax.tree.structure(given) != jax.tree.structure(expected):
        raise ValueError(
            f"{name} must have the structure {jax.tree.structure(expected)}; got "
            f"{jax.tree.structure(given)}."
        )
    if not shapes:
        return
    flat_given = jax.tree_util.tree_flatten_with_path(given)[0]
    for (path, a), b in zip(flat_given, jax.tree.leaves(expected)):
        if jnp.shape(a) != b.shape or jnp.result_type(a) != b.dtype:
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} must be {b.dtype}{list(b.shape)}; "
                f"got {jnp.result_type(a)}{list(jnp.shape(a))}."
            )


def _shapes(init) -> PyTree:
    """The abstract params ``init(key)`` would give (``jax.eval_shape``, nothing run)."""
    return jax.eval_shape(lambda: init(jax.random.key(0)))


def _check_layer(layer) -> Layer:
    if not isinstance(layer, Layer):
        raise ValueError(
            "layer must be an rnnjax.layers.Layer (e.g. make_layer('lstm', 64)); got "
            f"{type(layer).__name__}."
        )
    return layer


def _check_rngs(rngs, *, needed_for: str | None) -> fnnx.Rngs | None:
    if rngs is not None and not isinstance(rngs, fnnx.Rngs):
        raise ValueError(f"rngs must be an nnx.Rngs; got {type(rngs).__name__}.")
    if rngs is None and needed_for is not None:
        raise ValueError(f"rngs (an nnx.Rngs) is needed {needed_for}; got None.")
    return rngs


def _entry(params, *path: str):
    """``params[path[0]][path[1]]...``, or a ``ValueError`` naming where the linen
    layout (the linen module's ``variables["params"]``) was left."""
    value = params
    for depth, key in enumerate(path):
        if not isinstance(value, Mapping) or key not in value:
            where = "params" + "".join(f"[{k!r}]" for k in path[:depth])
            got = f"keys {sorted(value)}" if isinstance(value, Mapping) else type(value).__name__
            raise ValueError(
                f"{where} must be a mapping with the key {key!r} (the linen module's "
                f"variables['params'] layout); got {got}."
            )
        value = value[key]
    return value


def _draw(rngs, stream: str) -> Array:
    """One key from ``rngs``: an ``nnx.Rngs`` (its ``stream``, else its default), an
    ``nnx.RngStream``, or a key itself."""
    if isinstance(rngs, fnnx.Rngs):
        return rngs[stream]()
    if isinstance(rngs, fnnx.RngStream):
        return rngs()
    if isinstance(rngs, jax.Array):
        return rngs
    raise ValueError(
        f"rngs must be an nnx.Rngs, an nnx.RngStream or a jax.random key; got "
        f"{type(rngs).__name__}."
    )


def _stream(rngs: fnnx.Rngs | None, name: str):
    """A stream of its own for a module's randomness (forked, as ``nnx.Dropout`` does)."""
    return None if rngs is None else rngs[name].fork()


class Recurrent(fnnx.Module):
    """Any :class:`~rnnjax.layers.Layer` (one cell over time, bidirectional, stacked).

    ``__call__(xs, lengths=None, initial_carry=None, *, deterministic=None, rngs=None)``
    returns ``(final_carry, ys)`` exactly as ``layer.apply``: ``xs [*batch, T, I]``,
    ``ys [*batch, T, layer.output_size]``.

    Args:
      layer: the recurrent layer, e.g. ``make_layer("gru", 64, num_layers=2,
        bidirectional=True, dropout_rate=0.1)``.
      input_size: ``I``; the params are ``layer.init(rngs.params(), I)``.
      rngs: initialises the params; a layer with dropout keeps a fork of its
        ``"dropout"`` stream.
      params: instead of ``input_size``: the core pytree to hold (``layer.init``'s
        structure), e.g. trained with :func:`rnnjax.scan`.
      deterministic: no dropout (the attribute ``eval()`` / ``train()`` set).

    Attributes:
      params: the core pytree, every array an ``nnx.Param``.
      layer: the :class:`~rnnjax.layers.Layer` (static).
    """

    def __init__(
        self,
        layer: Layer,
        input_size: int | None = None,
        *,
        rngs: fnnx.Rngs | None = None,
        params: PyTree | None = None,
        deterministic: bool = False,
    ):
        self.layer = _check_layer(layer)
        if (input_size is None) == (params is None):
            raise ValueError(
                "Recurrent needs exactly one of input_size (to initialise the params) and "
                f"params (to hold given ones); got input_size={input_size!r} and "
                f"params={'None' if params is None else type(params).__name__}."
            )
        if params is None:
            check_positive_int("input_size", input_size)
            _check_rngs(rngs, needed_for="to initialise the params (input_size given)")
            params = layer.init(rngs.params(), input_size)
        else:
            _check_rngs(rngs, needed_for=None)
            expected = _shapes(lambda k: layer.init(k, 1))
            _check_like("params", params, expected, shapes=False)
        self.params = fnnx.data(wrap(params))
        self.deterministic = deterministic
        self.rngs = fnnx.data(_stream(rngs, "dropout") if layer.stochastic else None)

    def __call__(
        self,
        xs: Array,
        lengths: Array | None = None,
        initial_carry: PyTree | None = None,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
    ) -> tuple[PyTree, Array]:
        """``rngs`` at the call replaces the module's dropout stream (an ``nnx.Rngs``,
        an ``nnx.RngStream`` or a key)."""
        key = self._dropout_key(deterministic, rngs)
        return self.layer.apply(unwrap(self.params), xs, initial_carry, lengths=lengths, key=key)

    def _dropout_key(self, deterministic: bool | None, rngs) -> Array | None:
        deterministic = self.deterministic if deterministic is None else deterministic
        # A key only where the layer draws from one, as linen's Recurrent.
        if deterministic or not self.layer.stochastic:
            return None
        rngs = self.rngs if rngs is None else rngs
        if rngs is None:
            raise ValueError(
                "rngs is needed for dropout (deterministic=False and the layer has "
                "dropout): give rngs at construction or at the call, or run "
                "deterministic=True (model.eval()); got None."
            )
        return _draw(rngs, "dropout")

    def set_view(self, deterministic: bool | None = None):
        """For ``nnx.view(model, deterministic=...)``.

        Args:
          deterministic: if True, no dropout between the layers.
        """
        if deterministic is not None:
            self.deterministic = deterministic


class Readout(fnnx.Module):
    """The linear output layer ``y = h W_y + b_y`` of :mod:`rnnjax.readout`.

    ``Readout(in_features, features, rngs=...)`` initialises
    :class:`~rnnjax.readout.ReadoutParams` (``w [in_features, features]``, ``b``);
    ``Readout(params=ReadoutParams(w, b))`` holds given ones.
    """

    def __init__(
        self,
        in_features: int | None = None,
        features: int | None = None,
        *,
        rngs: fnnx.Rngs | None = None,
        params: ReadoutParams | None = None,
    ):
        if params is None:
            check_positive_int("in_features", in_features)
            check_positive_int("features", features)
            _check_rngs(rngs, needed_for="to initialise the params")
            params = readout_init(rngs.params(), in_features, features)
        else:
            ok = (
                isinstance(params, ReadoutParams)
                and jnp.ndim(params.w) == 2
                and jnp.shape(params.b) == jnp.shape(params.w)[-1:]
            )
            if not ok:
                raise ValueError(
                    "params must be a ReadoutParams(w [H, V], b [V]); got "
                    f"{type(params).__name__} {_describe(params)}."
                )
            for name, value in (("in_features", in_features), ("features", features)):
                want = jnp.shape(params.w)[0 if name == "in_features" else 1]
                if value is not None and value != want:
                    raise ValueError(
                        f"{name} must match params.w [H, V] = {list(jnp.shape(params.w))}: "
                        f"{want}; got {value!r}."
                    )
        self.params = fnnx.data(wrap(params))

    def __call__(self, h: Array) -> Array:
        return readout(unwrap(self.params), h)


def _embed(vocab_size: int, embed_dim: int, rngs, embedding) -> fnnx.Embed:
    """``nnx.Embed`` (the initialisation of linen's ``nn.Embed``), or one holding
    ``embedding [V, E]``."""
    if embedding is None:
        return fnnx.Embed(vocab_size, embed_dim, rngs=rngs)
    if jnp.shape(embedding) != (vocab_size, embed_dim):
        raise ValueError(
            f"the embedding must have shape [vocab_size, embed_dim] = "
            f"[{vocab_size}, {embed_dim}]; got {list(jnp.shape(embedding))}."
        )
    return fnnx.Embed(
        vocab_size,
        embed_dim,
        param_dtype=jnp.result_type(embedding),
        embedding_init=lambda *_: jnp.asarray(embedding),
        rngs=fnnx.Rngs(0) if rngs is None else rngs,  # the init above reads no key
    )


class SequenceModel(fnnx.Module):
    """Embedding (for token inputs) -> recurrent layer -> readout; linen's
    :class:`rnnjax.modules.SequenceModel` as an NNX module.

    Args:
      layer: the recurrent :class:`~rnnjax.layers.Layer`.
      num_outputs: readout size (classes, vocabulary, or regression targets).
      input_size: ``I`` of float inputs ``[*batch, T, I]``; not with ``vocab_size``.
      head: ``"each"`` (``[*batch, T, num_outputs]``; padded steps give the readout's
        bias only and should be masked in the loss) or ``"last"`` (``[*batch,
        num_outputs]`` from each sequence's last valid state).
      vocab_size: if set, inputs are integer tokens ``[*batch, T]`` embedded into
        ``embed_dim`` features.
      embed_dim: embedding width (default: the layer's output size, as linen's).
      rngs: initialises the params; keeps the dropout stream (see :class:`Recurrent`).
      params: instead of a random init: the linen module's ``variables["params"]``
        (``{"Embed_0": {"embedding"}, "rnn": {"layer"}, "head": {"readout"}}``; see
        :func:`from_linen`).
      deterministic: no dropout.

    Attributes: ``embed`` (an ``nnx.Embed``, or None), ``rnn`` (:class:`Recurrent`),
    ``head`` (:class:`Readout`), ``head_kind`` (the ``head`` string); the rest of the
    configuration as given.
    """

    def __init__(
        self,
        layer: Layer,
        num_outputs: int,
        *,
        input_size: int | None = None,
        head: str = "each",
        vocab_size: int | None = None,
        embed_dim: int | None = None,
        rngs: fnnx.Rngs | None = None,
        params: Mapping | None = None,
        deterministic: bool = False,
    ):
        _check_layer(layer)
        check_positive_int("num_outputs", num_outputs)
        if head not in NNX_HEADS:
            more = (
                " (linen's 'flatten' head is not here yet: its readout width T * C needs "
                "the sequence length at init)"
                if head in HEADS
                else ""
            )
            raise ValueError(f"head must be one of {NNX_HEADS}; got {head!r}{more}.")
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim)):
            if value is not None:
                check_positive_int(name, value)
        if vocab_size is not None and input_size is not None:
            raise ValueError(
                f"input_size must be None with vocab_size set (token inputs are embedded "
                f"into embed_dim features); got input_size={input_size!r}."
            )
        if vocab_size is None and embed_dim is not None:
            raise ValueError(
                f"embed_dim needs vocab_size (only token inputs are embedded); got "
                f"embed_dim={embed_dim!r} and vocab_size=None."
            )
        if params is None:
            _check_rngs(rngs, needed_for="to initialise the params (params not given)")
            if vocab_size is None:
                if input_size is None:
                    raise ValueError(
                        "input_size (I of float inputs [*batch, T, I]) is needed without "
                        "vocab_size; got None."
                    )
                check_positive_int("input_size", input_size)
        else:
            _check_rngs(rngs, needed_for=None)
            core = _entry(params, "rnn", "layer")
            readout_params = _entry(params, "head", "readout")
            embedding = None if vocab_size is None else _entry(params, "Embed_0", "embedding")

        self.layer = layer
        self.num_outputs = num_outputs
        self.head_kind = head
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        width = input_size
        if vocab_size is None:
            self.embed = None
        else:
            width = layer.output_size if embed_dim is None else embed_dim
            self.embed = _embed(vocab_size, width, rngs, None if params is None else embedding)
        if params is None:
            self.rnn = Recurrent(layer, width, rngs=rngs, deterministic=deterministic)
            self.head = Readout(layer.output_size, num_outputs, rngs=rngs)
        else:
            if width is not None:
                want = _shapes(lambda k: layer.init(k, width))
                _check_like("params['rnn']['layer']", core, want)
            self.rnn = Recurrent(layer, params=core, rngs=rngs, deterministic=deterministic)
            self.head = Readout(layer.output_size, num_outputs, params=readout_params)

    def __call__(
        self,
        inputs: Array,
        lengths: Array | None = None,
        initial_carry: PyTree | None = None,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
        return_carry: bool = False,
    ) -> Any:
        """Outputs (see ``head``); with ``return_carry=True``, ``(outputs, final_carry)``
        so generation can continue from where the input stopped."""
        if self.embed is not None:
            if not jnp.issubdtype(jnp.result_type(inputs), jnp.integer):
                raise ValueError(
                    f"inputs must be integer tokens [*batch, T] when vocab_size is set; "
                    f"got dtype {jnp.result_type(inputs)} and shape {jnp.shape(inputs)}."
                )
            check_token_ids("inputs", inputs, self.vocab_size)
            xs = self.embed(inputs)
        else:
            xs = inputs
        carry, ys = self.rnn(xs, lengths, initial_carry, deterministic=deterministic, rngs=rngs)
        h = final_hidden(carry, self.layer) if self.head_kind == "last" else ys
        outputs = self.head(h)
        return (outputs, carry) if return_carry else outputs

    def _linen_params(self) -> dict:
        params = {"rnn": {"layer": unwrap(self.rnn.params)}, "head": _readout(self.head)}
        if self.embed is not None:
            params["Embed_0"] = {"embedding": self.embed.embedding.get_value()}
        return params

    def _linen_module(self) -> nn.Module:
        return linen.SequenceModel(
            self.layer, self.num_outputs, self.head_kind, self.vocab_size, self.embed_dim
        )


def _readout(module: Readout) -> dict:
    return {"readout": unwrap(module.params)}


class Encoder(fnnx.Module):
    """Token embedding, then any :class:`~rnnjax.layers.Layer`; linen's
    :class:`rnnjax.modules.Encoder` as an NNX module.

    ``__call__(tokens [B, S], lengths [B] | None) -> (final_carry, ys [B, S, C])``.
    ``params``: the linen module's ``variables["params"]`` (``{"embed": {"embedding"},
    "rnn": {"layer"}}``) instead of a random init.
    """

    def __init__(
        self,
        layer: Layer,
        vocab_size: int,
        embed_dim: int,
        *,
        rngs: fnnx.Rngs | None = None,
        params: Mapping | None = None,
        deterministic: bool = False,
    ):
        _check_layer(layer)
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("embed_dim", embed_dim)
        _check_rngs(rngs, needed_for=None if params is not None else "to initialise the params")
        self.layer = layer
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        if params is None:
            self.embed = _embed(vocab_size, embed_dim, rngs, None)
            self.rnn = Recurrent(layer, embed_dim, rngs=rngs, deterministic=deterministic)
        else:
            embedding, core = _entry(params, "embed", "embedding"), _entry(params, "rnn", "layer")
            self.embed = _embed(vocab_size, embed_dim, rngs, embedding)
            want = _shapes(lambda k: layer.init(k, embed_dim))
            _check_like("params['rnn']['layer']", core, want)
            self.rnn = Recurrent(layer, params=core, rngs=rngs, deterministic=deterministic)

    def __call__(
        self,
        tokens: Array,
        lengths: Array | None = None,
        *,
        deterministic: bool | None = None,
        rngs: RngsLike | None = None,
    ) -> tuple[PyTree, Array]:
        _check_tokens("src", tokens)
        check_token_ids("src", tokens, self.vocab_size)
        return self.rnn(self.embed(tokens), lengths, deterministic=deterministic, rngs=rngs)

    def _linen_params(self) -> dict:
        return {
            "embed": {"embedding": self.embed.embedding.get_value()},
            "rnn": {"layer": unwrap(self.rnn.params)},
        }

    def _linen_module(self) -> nn.Module:
        return linen.Encoder(self.layer, self.vocab_size, self.embed_dim)


class Seq2Seq(fnnx.Module):
    """Encoder-decoder (REFERENCE.md section 1); linen's :class:`rnnjax.modules.Seq2Seq`
    as an NNX module, over the same pure decoder (:func:`rnnjax.seq2seq.decoder`) and
    decoding (:mod:`rnnjax.decode`).

    The configuration (``src_vocab``, ``tgt_vocab``, ``encoder``, ``decoder_cells``,
    ``embed_dim``, ``attention``, ``attention_size``, ``bridge``, ``pad``, ``bos``,
    ``eos``) is linen's ``Seq2Seq``'s.

    Args:
      rngs: initialises the params; the encoder keeps a fork of ``"dropout"`` (for a
        stack with dropout), the model one of ``"sampling"`` (scheduled sampling).
      params: instead of a random init: the linen module's ``variables["params"]``
        (``{"enc": ..., "decoder": DecoderParams, "bridge": ...}``).
      deterministic: no dropout in the encoder.

    The call, ``model(src, src_lengths, tgt_in, *, sampling_rate=0.0,
    deterministic=None, rngs=None)``, teacher-forces: ``(logits [B, L, V], attention
    weights [B, L, S] or None)``; ``rngs`` at the call (an ``nnx.Rngs``) replaces the
    ``"dropout"`` and ``"sampling"`` streams. ``encode``, ``step``, ``greedy`` and
    ``beam`` are linen's; decoding is deterministic (no dropout).

    Attributes: ``enc`` (:class:`Encoder`), ``decoder_params``
    (:class:`~rnnjax.seq2seq.DecoderParams` of ``nnx.Param``\\ s), ``bridge_params``
    (one ``ReadoutParams`` per decoder carry leaf, for the ``"dense"`` bridge, else
    None), ``bridge_kind`` (the resolved bridge), ``dec`` (the pure
    :class:`~rnnjax.seq2seq.Decoder`).
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        encoder: Layer,
        decoder_cells: tuple[Cell, ...],
        *,
        embed_dim: int = 64,
        attention: str | None = None,
        attention_size: int | None = None,
        bridge: str = "auto",
        pad: int = PAD,
        bos: int = BOS,
        eos: int = EOS,
        rngs: fnnx.Rngs | None = None,
        params: Mapping | None = None,
        deterministic: bool = False,
    ):
        _check_layer(encoder)
        check_positive_int("src_vocab", src_vocab)
        check_positive_int("tgt_vocab", tgt_vocab)
        cells = tuple(decoder_cells) if isinstance(decoder_cells, (tuple, list)) else None
        if not cells or not all(isinstance(c, Cell) for c in cells):
            raise ValueError(
                "decoder_cells must be a non-empty tuple of Cell (e.g. "
                f"(make_cell('lstm', 128),)); got {decoder_cells!r}."
            )
        for name, value in (("pad", pad), ("bos", bos), ("eos", eos)):
            if (
                isinstance(value, bool)
                or not isinstance(value, Integral)
                or not 0 <= value < tgt_vocab
            ):
                raise ValueError(
                    f"{name} must be a token id in [0, tgt_vocab) = [0, {tgt_vocab}); "
                    f"got {value!r}."
                )
        _check_rngs(rngs, needed_for=None if params is not None else "to initialise the params")
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.encoder, self.decoder_cells = encoder, cells
        self.embed_dim, self.attention, self.attention_size = embed_dim, attention, attention_size
        self.bridge, self.pad, self.bos, self.eos = bridge, pad, bos, eos
        self.dec: Decoder = decoder(
            cells,
            tgt_vocab,
            embed_dim,
            encoder.output_size,
            attention=attention,
            attention_size=attention_size,
        )
        # Traced, not run: sizes that cannot work (luong_dot on a wider encoder) fail here,
        # before anything is initialised.
        expected = _shapes(self.dec.init)
        dec_carry = self.dec.initial_carry((1,))
        self.bridge_kind = bridge_mode(bridge, encoder.initial_carry((1,)), dec_carry)
        dense = self.bridge_kind == "dense"
        if params is None:
            self.enc = Encoder(
                encoder, src_vocab, embed_dim, rngs=rngs, deterministic=deterministic
            )
            decoder_params = self.dec.init(rngs.params())
            bridge_params = (
                bridge_init(rngs.params(), encoder.output_size, dec_carry) if dense else None
            )
        else:
            decoder_params = _entry(params, "decoder")
            bridge_params = _entry(params, "bridge") if dense else None
            self.enc = Encoder(
                encoder,
                src_vocab,
                embed_dim,
                params=_entry(params, "enc"),
                rngs=rngs,
                deterministic=deterministic,
            )
            _check_like("params['decoder']", decoder_params, expected)
            if dense:
                want = _shapes(lambda k: bridge_init(k, encoder.output_size, dec_carry))
                _check_like("params['bridge']", bridge_params, want)
        self.decoder_params = fnnx.data(wrap(decoder_params))
        self.bridge_params = fnnx.data(None if bridge_params is None else wrap(bridge_params))
        self.rngs = fnnx.data(_stream(rngs, "sampling"))

    def encode(
        self,
        src: Array,
        src_lengths: Array | None = None,
        *,
        deterministic: bool | None = None,
        rngs: fnnx.Rngs | None = None,
    ):
        """``(Memory, DecoderState)``: the encoder's outputs for the decoder to read, and
        the decoder's first state (the bridge from the encoder's final carry)."""
        _check_tokens("src", src)
        B, S = jnp.shape(src)
        if src_lengths is not None and jnp.shape(src_lengths) != (B,):
            raise ValueError(
                f"src_lengths must have shape [B] = ({B},) to match src {(B, S)}; "
                f"got {jnp.shape(src_lengths)}."
            )
        carry, ys = self.enc(src, src_lengths, deterministic=deterministic, rngs=rngs)
        bridge = (
            self.bridge_kind,
            None if self.bridge_params is None else unwrap(self.bridge_params),
        )
        params = unwrap(self.decoder_params)
        return start(self.dec, params, bridge, self.encoder, carry, ys, src_lengths)

    def step(self, memory: Memory, state, tokens: Array):
        """One decoder step: ``(state, logits [B, V], attention weights [B, S] or None)``."""
        _check_tokens("tokens", tokens, rank=1)
        check_token_ids("tokens", tokens, self.tgt_vocab)
        return self.dec.step(unwrap(self.decoder_params), memory, state, tokens)

    def __call__(
        self,
        src: Array,
        src_lengths: Array | None,
        tgt_in: Array,
        *,
        sampling_rate: float = 0.0,
        deterministic: bool | None = None,
        rngs: fnnx.Rngs | None = None,
    ):
        _check_tokens("tgt_in", tgt_in)  # its ids: teacher_force checks them, once
        if jnp.shape(tgt_in)[0] != jnp.shape(src)[0]:
            raise ValueError(
                f"tgt_in [B, L] and src [B, S] must share the batch size; got "
                f"{jnp.shape(tgt_in)} and {jnp.shape(src)}."
            )
        if not 0.0 <= sampling_rate <= 1.0:
            raise ValueError(f"sampling_rate must lie in [0, 1]; got {sampling_rate!r}.")
        if rngs is not None and not isinstance(rngs, fnnx.Rngs):
            raise ValueError(
                f"rngs at a Seq2Seq call must be an nnx.Rngs (streams 'dropout' and "
                f"'sampling'); got {type(rngs).__name__}."
            )
        memory, state = self.encode(src, src_lengths, deterministic=deterministic, rngs=rngs)
        key = None
        if sampling_rate:
            rngs = self.rngs if rngs is None else rngs
            if rngs is None:
                raise ValueError(
                    "rngs is needed for scheduled sampling (sampling_rate > 0): give rngs "
                    "at construction or at the call; got None."
                )
            key = _draw(rngs, "sampling")
        return self.dec.teacher_force(
            unwrap(self.decoder_params), memory, state, tgt_in, sampling_rate=sampling_rate, key=key
        )

    def _step_fn(self):
        dec, params = self.dec, unwrap(self.decoder_params)
        return lambda memory, state, tokens: dec.step(params, memory, state, tokens)[:2]

    def greedy(self, src: Array, src_lengths: Array | None = None, *, max_len: int):
        """Greedy decoding (:func:`rnnjax.decode.greedy`) from BOS to EOS or ``max_len``."""
        memory, state = self.encode(src, src_lengths, deterministic=True)
        return decode.greedy(self._step_fn(), memory, state, max_len=max_len, **self._special_ids())

    def beam(
        self,
        src: Array,
        src_lengths: Array | None = None,
        *,
        beam_width: int,
        max_len: int,
        alpha: float = 0.0,
    ):
        """Beam search (:func:`rnnjax.decode.beam_search`): ``(best Decoded, Beams)``."""
        memory, state = self.encode(src, src_lengths, deterministic=True)
        return decode.beam_search(
            self._step_fn(), memory, state, beam_width=beam_width, max_len=max_len,
            alpha=alpha, **self._special_ids(),
        )  # fmt: skip

    def _special_ids(self) -> dict[str, int]:
        return {"bos": self.bos, "eos": self.eos, "pad": self.pad}

    def _linen_params(self) -> dict:
        params = {"enc": self.enc._linen_params(), "decoder": unwrap(self.decoder_params)}
        if self.bridge_params is not None:
            params["bridge"] = unwrap(self.bridge_params)
        return params

    def _linen_module(self) -> nn.Module:
        return linen.Seq2Seq(**self._config())

    def _config(self) -> dict:
        return {
            "src_vocab": self.src_vocab,
            "tgt_vocab": self.tgt_vocab,
            "encoder": self.encoder,
            "decoder_cells": self.decoder_cells,
            "embed_dim": self.embed_dim,
            "attention": self.attention,
            "attention_size": self.attention_size,
            "bridge": self.bridge,
            "pad": self.pad,
            "bos": self.bos,
            "eos": self.eos,
        }


def _seq2seq_config(module: linen.Seq2Seq) -> dict:
    names = ("src_vocab", "tgt_vocab", "encoder", "decoder_cells")
    options = ("embed_dim", "attention", "attention_size", "bridge", "pad", "bos", "eos")
    return {name: getattr(module, name) for name in names + options}


def make_seq2seq(
    src_vocab: int,
    tgt_vocab: int | None = None,
    *,
    rngs: fnnx.Rngs,
    deterministic: bool = False,
    **options,
) -> Seq2Seq:
    """A :class:`Seq2Seq` from names, as :func:`rnnjax.modules.make_seq2seq` (same
    options: ``cell``, ``hidden_size``, ``encoder_layers``, ``decoder_layers``,
    ``bidirectional``, ``decoder_cell``, ``decoder_hidden``, ``embed_dim``,
    ``attention``, ``attention_size``, ``bridge``, ``dropout_rate``), initialised from
    ``rngs``."""
    _check_rngs(rngs, needed_for="to initialise the params")
    config = _seq2seq_config(linen.make_seq2seq(src_vocab, tgt_vocab, **options))
    return Seq2Seq(**config, rngs=rngs, deterministic=deterministic)


def from_linen(
    module: nn.Module,
    params: Mapping,
    *,
    rngs: fnnx.Rngs | None = None,
    deterministic: bool = False,
) -> fnnx.Module:
    """The NNX counterpart of a linen module of :mod:`rnnjax.modules`, holding ``params``.

    ``params`` is the linen module's ``variables["params"]``; the NNX module holds the
    same arrays (no copy, no random init). ``rngs`` gives the dropout / sampling
    streams (needed only where dropout or scheduled sampling is used).

    Example::

      model = rnnjax.modules.SequenceModel(layer, 3, head="last")
      variables = model.init(key, xs)
      nnx_model = from_linen(model, variables["params"], rngs=nnx.Rngs(0))
      # nnx_model(xs, deterministic=True) == model.apply(variables, xs)
    """
    _check_rngs(rngs, needed_for=None)
    kw = {"rngs": rngs, "deterministic": deterministic}
    if isinstance(module, linen.Recurrent):
        return Recurrent(module.layer, params=_entry(params, "layer"), **kw)
    if isinstance(module, linen.Readout):
        return Readout(features=module.features, params=_entry(params, "readout"))
    if isinstance(module, linen.SequenceModel):
        return SequenceModel(
            module.layer,
            module.num_outputs,
            head=module.head,
            vocab_size=module.vocab_size,
            # linen ignores embed_dim without a vocabulary; here it is an error
            embed_dim=None if module.vocab_size is None else module.embed_dim,
            params=params,
            **kw,
        )
    if isinstance(module, linen.Encoder):
        return Encoder(module.layer, module.vocab_size, module.embed_dim, params=params, **kw)
    if isinstance(module, linen.Seq2Seq):
        return Seq2Seq(**_seq2seq_config(module), params=params, **kw)
    raise ValueError(
        "module must be one of rnnjax.modules' Recurrent, Readout, SequenceModel, Encoder, "
        f"Seq2Seq; got {type(module).__name__}."
    )


def to_linen(model: fnnx.Module) -> tuple[nn.Module, dict]:
    """``(linen_module, params)``: the linen counterpart of an NNX module of this file
    and its ``variables["params"]`` (the same arrays), so that
    ``linen_module.apply({"params": params}, ...)`` computes what ``model`` does."""
    if isinstance(model, Recurrent):
        return linen.Recurrent(model.layer), {"layer": unwrap(model.params)}
    if isinstance(model, Readout):
        return linen.Readout(jnp.shape(model.params.b.get_value())[-1]), _readout(model)
    if isinstance(model, (SequenceModel, Encoder, Seq2Seq)):
        return model._linen_module(), model._linen_params()
    raise ValueError(
        "model must be one of rnnjax.nnx's Recurrent, Readout, SequenceModel, Encoder, "
        f"Seq2Seq; got {type(model).__name__}."
    )
