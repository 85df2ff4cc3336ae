"""The Seq2Seq decoder and the encoder-to-decoder bridge, as pure functions.

REFERENCE.md section 1: the encoder's final state is the context vector ``c``; the
decoder state is fed the previous output token and the context at every step,

    s_t = phi(W_y y_{t-1} + W_s s_{t-1} + W_c c + b_s),   p(y_t) = softmax(W_o s_t + b_o).

Any cell is the decoder's first layer with input ``[E y_{t-1}; c]``, so its input
kernel is ``[W_y; W_c]`` and the context enters every gate of an LSTM or GRU exactly
as the token does; further layers (a stack) read the layer below. With attention the
fixed ``c`` is replaced by a context recomputed at every step (:mod:`rnnjax.attention`):

* ``"bahdanau"``: ``c_t = attend(s_{t-1})`` enters the cell input in place of ``c``;
  the readout sees ``[s_t; c_t]`` (Bahdanau et al.'s output also reads ``c_t``).
* ``"luong_dot"`` / ``"luong_general"``: the cell input is ``[E y_{t-1}; h~_{t-1}]``
  (input feeding), ``c_t = attend(s_t)``, ``h~_t = tanh(W_c [c_t; s_t] + b_c)``, and
  ``p(y_t) = softmax(W_o h~_t + b_o)`` (Luong et al. 2015, eq. 5 and section 3.3).

Shapes: one batch axis ``B``; source length ``S``; target length ``L``; ``C`` the
encoder's output size; ``V`` the target vocabulary; ``E`` the embedding width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import attention as attn
from rnnjax.cells.base import Array, Cell, PyTree, check_positive_int
from rnnjax.checks import check_in_range
from rnnjax.layers import Layer, final_hidden
from rnnjax.readout import ReadoutParams, readout, readout_init
from rnnjax.scan import scan

BRIDGES = ("auto", "copy", "dense", "zeros")


class Memory(NamedTuple):
    """What the encoder hands the decoder (every field has the batch axis first)."""

    values: Array  # [B, S, C] encoder outputs, zeros on padding
    keys: Array  # [B, S, K] the attention's key side (``values`` without attention)
    mask: Array  # [B, S] bool, true on valid source steps
    context: Array  # [B, C] the fixed context vector: the encoder's final hidden state


class DecoderParams(NamedTuple):
    embedding: Array  # [V, E]
    cells: tuple  # one cell's params per layer
    attention: PyTree  # attention params, or None
    combine: ReadoutParams | None  # Luong's W_c [C + H, H], or None
    output: ReadoutParams  # W_o [R, V], b_o [V]


class DecoderState(NamedTuple):
    carry: tuple  # one carry per layer
    feed: Array | None  # Luong's attentional vector h~_{t-1} [B, H], else None


class Decoder(NamedTuple):
    """A decoder as pure functions (built by :func:`decoder`).

    Attributes:
      init: ``init(key) -> DecoderParams``.
      memory: ``memory(params, values, mask, context) -> Memory``.
      initial_state: ``initial_state(carry) -> DecoderState`` from a per-layer carry.
      initial_carry: ``initial_carry(batch_shape) -> tuple`` of zeros, one per layer.
      step: ``step(params, memory, state, tokens [B]) -> (state, logits [B, V],
        weights [B, S] or None)``.
      teacher_force: ``teacher_force(params, memory, state, tokens [B, L], *,
        sampling_rate=0.0, key=None) -> (logits [B, L, V], weights [B, L, S] or None)``.
      vocab_size, attention, cells: the configuration.
    """

    init: Callable[..., DecoderParams]
    memory: Callable[..., Memory]
    initial_state: Callable[..., DecoderState]
    initial_carry: Callable[..., tuple]
    step: Callable[..., tuple]
    teacher_force: Callable[..., tuple]
    vocab_size: int
    attention: str | None
    cells: tuple


def decoder(
    cells: Sequence[Cell],
    vocab_size: int,
    embed_dim: int,
    context_size: int,
    *,
    attention: str | None = None,
    attention_size: int | None = None,
) -> Decoder:
    """A (stacked) decoder over ``cells``, fixed-context or with attention.

    Args:
      cells: one :class:`~rnnjax.cells.base.Cell` per layer, bottom first.
      vocab_size: ``V``, the target vocabulary (embedding rows and softmax width).
      embed_dim: ``E``.
      context_size: ``C``, the encoder's output / final-hidden size.
      attention: ``None`` (the fixed context vector) or one of
        :data:`rnnjax.attention.ATTENTIONS`.
      attention_size: width of the additive attention's hidden layer.
    """
    cells = tuple(cells)
    if not cells or not all(isinstance(c, Cell) for c in cells):
        raise ValueError(f"cells must be a non-empty sequence of Cell; got {cells!r}.")
    for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim)):
        check_positive_int(name, value)
    check_positive_int("context_size", context_size)
    if attention is not None:
        attn.check_kind(attention)
    luong = attention in ("luong_dot", "luong_general")
    H = cells[-1].hidden_size
    C = context_size
    first_input = embed_dim + (H if luong else C)
    readout_size = H + C if attention == "bahdanau" else H

    def init(key) -> DecoderParams:
        k_e, k_c, k_a, k_w, k_o = jax.random.split(key, 5)
        params, size = [], first_input
        for cell, k in zip(cells, jax.random.split(k_c, len(cells))):
            params.append(cell.init(k, size))
            size = cell.hidden_size
        return DecoderParams(
            embedding=jax.random.normal(k_e, (vocab_size, embed_dim)),
            cells=tuple(params),
            attention=None
            if attention is None
            else attn.init(attention, k_a, H, C, attention_size),
            combine=readout_init(k_w, C + H, H) if luong else None,
            output=readout_init(k_o, readout_size, vocab_size),
        )

    def memory(params: DecoderParams, values: Array, mask: Array, context: Array) -> Memory:
        keys = values if attention is None else attn.keys(attention, params.attention, values)
        return Memory(values, keys, mask, context)

    def initial_carry(batch_shape=()) -> tuple:
        return tuple(cell.initial_carry(batch_shape) for cell in cells)

    def initial_state(carry) -> DecoderState:
        if not isinstance(carry, tuple) or len(carry) != len(cells):
            raise ValueError(
                f"the decoder's carry must be a tuple of {len(cells)} per-layer carries; "
                f"got {type(carry).__name__}."
            )
        h = cells[-1].output(carry[-1])
        return DecoderState(tuple(carry), jnp.zeros_like(h) if luong else None)

    def _cells_step(cell_params, carry, x):
        new = []
        for cell, p, c in zip(cells, cell_params, carry):
            c, x = cell.step(p, c, x)
            new.append(c)
        return tuple(new), x

    def _embed(params, tokens):
        if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
            raise ValueError(f"tokens must be integer ids; got dtype {jnp.result_type(tokens)}.")
        return jnp.take(params.embedding, tokens, axis=0)

    def step(params: DecoderParams, mem: Memory, state: DecoderState, tokens: Array):
        e = _embed(params, tokens)
        weights = None
        if attention is None:
            carry, s = _cells_step(params.cells, state.carry, jnp.concatenate([e, mem.context], -1))
            return DecoderState(carry, None), readout(params.output, s), None
        if attention == "bahdanau":
            query = cells[-1].output(state.carry[-1])
            ctx, weights = attn.attend(
                attention, params.attention, query, mem.keys, mem.values, mem.mask
            )
            carry, s = _cells_step(params.cells, state.carry, jnp.concatenate([e, ctx], -1))
            logits = readout(params.output, jnp.concatenate([s, ctx], -1))
            return DecoderState(carry, None), logits, weights
        carry, s = _cells_step(params.cells, state.carry, jnp.concatenate([e, state.feed], -1))
        ctx, weights = attn.attend(attention, params.attention, s, mem.keys, mem.values, mem.mask)
        feed = jnp.tanh(readout(params.combine, jnp.concatenate([ctx, s], -1)))
        return DecoderState(carry, feed), readout(params.output, feed), weights

    def teacher_force(
        params: DecoderParams,
        mem: Memory,
        state: DecoderState,
        tokens: Array,
        *,
        sampling_rate: float = 0.0,
        key: Array | None = None,
    ):
        if jnp.ndim(tokens) != 2:
            raise ValueError(f"tokens must have shape [B, L]; got {jnp.shape(tokens)}.")
        check_token_ids("tokens (the decoder's inputs, tgt_in)", tokens, vocab_size)
        if sampling_rate and key is None:
            raise ValueError("scheduled sampling (sampling_rate > 0) needs a key.")
        if attention is None and not sampling_rate:
            # The fixed context is the same at every step: run each layer with the
            # driver, whose input projection is one matmul over all steps.
            e = _embed(params, tokens)
            ctx = jnp.broadcast_to(mem.context[:, None, :], e.shape[:2] + mem.context.shape[-1:])
            xs = jnp.concatenate([e, ctx], -1)
            for cell, p, c in zip(cells, params.cells, state.carry):
                _, xs = scan(cell, p, xs, c)
            return readout(params.output, xs), None

        B, L = tokens.shape
        keys = jax.random.split(key, L) if sampling_rate else jnp.zeros((L,), jnp.uint32)

        def body(loop, inputs):
            state, previous = loop
            true_t, t, k = inputs
            if sampling_rate:  # Bengio et al. 2015: feed a model sample with this rate
                k_coin, k_tok = jax.random.split(k)
                coin = jax.random.bernoulli(k_coin, sampling_rate, (B,)) & (t > 0)
                sampled = jax.random.categorical(k_tok, previous)
                true_t = jnp.where(coin, sampled, true_t)
            state, logits, weights = step(params, mem, state, true_t)
            return (state, logits), (logits, weights)

        zeros = jnp.zeros((B, vocab_size), params.output.w.dtype)
        _, (logits, weights) = jax.lax.scan(body, (state, zeros), (tokens.T, jnp.arange(L), keys))
        logits = jnp.swapaxes(logits, 0, 1)
        return logits, (None if weights is None else jnp.swapaxes(weights, 0, 1))

    return Decoder(
        init,
        memory,
        initial_state,
        initial_carry,
        step,
        teacher_force,
        vocab_size,
        attention,
        cells,
    )


def bridge_mode(mode: str, encoder_carry: PyTree, decoder_carry: PyTree) -> str:
    """Resolve ``"auto"``: ``"copy"`` when the encoder's final carry already has the
    decoder's carry structure and shapes (same cell, size and depth, one direction),
    else ``"dense"``. ``"copy"`` on incompatible carries is an error."""
    if mode not in BRIDGES:
        raise ValueError(f"bridge must be one of {BRIDGES}; got {mode!r}.")
    same = jax.tree.structure(encoder_carry) == jax.tree.structure(decoder_carry) and all(
        jnp.shape(a) == jnp.shape(b)
        for a, b in zip(jax.tree.leaves(encoder_carry), jax.tree.leaves(decoder_carry))
    )
    if mode == "copy" and not same:
        raise ValueError(
            "bridge='copy' needs the encoder's final carry to match the decoder's carry "
            f"(same cell, hidden size and layers, unidirectional); encoder carry "
            f"{jax.tree.map(jnp.shape, encoder_carry)}, decoder carry "
            f"{jax.tree.map(jnp.shape, decoder_carry)}. Use bridge='dense'."
        )
    if mode == "auto":
        return "copy" if same else "dense"
    return mode


def bridge_init(key: Array, context_size: int, decoder_carry: PyTree) -> tuple:
    """One ``ReadoutParams [C, size]`` per leaf of the decoder's carry (``"dense"``)."""
    leaves = jax.tree.leaves(decoder_carry)
    return tuple(
        readout_init(k, context_size, jnp.shape(leaf)[-1])
        for k, leaf in zip(jax.random.split(key, max(len(leaves), 1)), leaves)
    )


def bridge_apply(mode: str, params, encoder_carry, context: Array, decoder_carry: PyTree):
    """The decoder's initial carry: the encoder's (``"copy"``), zeros (``"zeros"``), or
    ``tanh(c W + b)`` per carry leaf (``"dense"``; Cho et al. 2014's ``s_0 = tanh(V c)``)."""
    if mode == "copy":
        return encoder_carry
    if mode == "zeros":
        return jax.tree.map(jnp.zeros_like, decoder_carry)
    leaves, treedef = jax.tree.flatten(decoder_carry)
    return treedef.unflatten([jnp.tanh(readout(p, context)) for p, _ in zip(params, leaves)])


def start(
    dec: Decoder,
    decoder_params: DecoderParams,
    bridge: tuple[str, tuple | None],
    encoder: Layer,
    encoder_carry: PyTree,
    encoder_ys: Array,
    src_lengths: Array | None,
) -> tuple[Memory, DecoderState]:
    """``(Memory, DecoderState)`` from an encoder's run: the outputs ``encoder_ys [B, S,
    C]`` for attention (masked past ``src_lengths``), and the decoder's first state from
    the encoder's final carry through ``bridge = (mode, params)`` (:func:`bridge_apply`).

    ``encoder`` is the encoder layer (for its final hidden state, the context). The
    linen and NNX Seq2Seq modules both start decoding here."""
    B, S = jnp.shape(encoder_ys)[:2]
    mask = (
        jnp.ones((B, S), bool)
        if src_lengths is None
        else jnp.arange(S)[None, :] < jnp.asarray(src_lengths)[:, None]
    )
    context = final_hidden(encoder_carry, encoder)
    memory = dec.memory(decoder_params, encoder_ys, mask, context)
    mode, params = bridge
    first = bridge_apply(mode, params, encoder_carry, context, dec.initial_carry((B,)))
    return memory, dec.initial_state(first)


def check_token_ids(name: str, tokens, vocab_size: int) -> None:
    """Raise a ``ValueError`` naming ``name`` unless every id lies in ``[0, vocab_size)``.

    An embedding lookup does not check: an id past the end gives NaN, a negative one
    wraps to the last rows. Concrete ids are checked now; ids traced under ``jit`` only
    under ``checkify`` (:func:`rnnjax.checks.check_in_range`), so a compiled training
    step holds no host callback.
    """
    check_in_range(name, tokens, 0, vocab_size, "the vocabulary", verb="hold token ids in")
