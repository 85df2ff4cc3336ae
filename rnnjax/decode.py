"""Greedy and beam-search decoding, batched and jit-compatible (``lax.while_loop``).

Both drive any step function ::

    state, logits = step_fn(context, state, tokens)   # tokens [N], logits [N, V]

where ``context`` is read-only per-example data (e.g. the encoder's
:class:`~rnnjax.seq2seq.Memory`) and ``state`` what changes per step; every leaf of
both has the batch axis first. Decoding starts from BOS, stops a sequence at EOS (the
EOS is kept in the output) or after ``max_len`` tokens, and pads finished sequences
with PAD. Scores are sums of ``log_softmax(logits)`` of the emitted tokens (EOS
included). Tokens in ``banned`` (by default the ``pad`` and ``bos`` given) are never
emitted; the distribution is not renormalised over the rest, so a score is the model's
own log probability of the sequence. ``bos``, ``eos``, ``pad`` and ``banned`` must be
token ids of the step function's vocabulary, ``[0, V)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
StepFn = Callable[[Any, Any, Array], tuple[Any, Array]]


class Decoded(NamedTuple):
    tokens: Array  # [B, max_len] int32, EOS included, PAD after it
    lengths: Array  # [B] tokens up to and including EOS (max_len if none)
    log_prob: Array  # [B] log probability of the sequence under the model
    score: Array  # [B] the ranking score (log_prob / length penalty; greedy: log_prob)


class Beams(NamedTuple):
    """All ``k`` final hypotheses, best first."""

    tokens: Array  # [B, k, max_len]
    lengths: Array  # [B, k]
    log_prob: Array  # [B, k]
    score: Array  # [B, k]


def _check(step_fn, context, state, *, max_len, bos, eos, pad, banned) -> tuple[int, ...]:
    """Check the options against the step function's vocabulary (its logits' shape,
    traced once without running it); returns ``banned`` as ids."""
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int; got {max_len!r}.")
    banned = tuple(dict.fromkeys(int(b) for b in ((pad, bos) if banned is None else banned)))
    if eos in banned:
        raise ValueError(f"banned must not contain eos ({eos}): sequences could never end.")
    B = _batch_size(context, state)
    tokens = jax.ShapeDtypeStruct((B,), jnp.int32)
    logits = jax.eval_shape(step_fn, context, state, tokens)[1]
    if len(logits.shape) != 2 or logits.shape[0] != B:
        raise ValueError(
            f"step_fn must return logits of shape [N, V] for N = {B} tokens; got shape "
            f"{tuple(logits.shape)}."
        )
    V = logits.shape[1]
    for name, ids in (("bos", (bos,)), ("eos", (eos,)), ("pad", (pad,)), ("banned", banned)):
        bad = [i for i in ids if not 0 <= i < V]
        if bad:
            raise ValueError(
                f"{name} must hold token ids in [0, V) = [0, {V}) (V from step_fn's "
                f"logits); got {bad}."
            )
    return banned


def _batch_size(context, state) -> int:
    leaves = jax.tree.leaves((context, state))
    if not leaves:
        raise ValueError("context and state hold no arrays; cannot tell the batch size.")
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"every leaf of context and state needs the same leading batch axis; "
            f"got leading sizes {sorted(map(str, sizes))}."
        )
    return sizes.pop()


def _log_probs(logits: Array, banned: Sequence[int]) -> Array:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    if banned:
        logp = logp.at[..., jnp.array(banned)].set(-jnp.inf)
    return logp


def _running(max_len: int):
    """The loops' condition: steps left and some sequence not finished. The loop state
    is ``(t, state, last_tokens, done, ...)``."""

    def cond(loop):
        t, _, _, done, *_ = loop
        return (t < max_len) & ~jnp.all(done)

    return cond


def length_penalty(lengths: Array, alpha: float) -> Array:
    """GNMT's ``((5 + |Y|) / 6) ** alpha`` (Wu et al. 2016); ``alpha = 0``: none."""
    return ((5.0 + lengths.astype(jnp.float32)) / 6.0) ** alpha


def greedy(
    step_fn: StepFn,
    context: Any,
    state: Any,
    *,
    max_len: int,
    bos: int,
    eos: int,
    pad: int,
    banned: Sequence[int] | None = None,
) -> Decoded:
    """The most probable next token at every step, for a batch at once."""
    banned = _check(
        step_fn, context, state, max_len=max_len, bos=bos, eos=eos, pad=pad, banned=banned
    )
    B = _batch_size(context, state)

    def body(loop):
        t, state, last, done, tokens, lengths, log_prob = loop
        state, logits = step_fn(context, state, last)
        logp = _log_probs(logits, banned)
        token = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        chosen = jnp.take_along_axis(logp, token[:, None], -1)[:, 0]
        token = jnp.where(done, pad, token)
        log_prob = log_prob + jnp.where(done, 0.0, chosen)
        lengths = lengths + (~done).astype(jnp.int32)
        tokens = tokens.at[:, t].set(token)
        return t + 1, state, token, done | (token == eos), tokens, lengths, log_prob

    init = (
        jnp.zeros((), jnp.int32),
        state,
        jnp.full((B,), bos, jnp.int32),
        jnp.zeros((B,), bool),
        jnp.full((B, max_len), pad, jnp.int32),
        jnp.zeros((B,), jnp.int32),
        jnp.zeros((B,), jnp.float32),
    )
    *_, tokens, lengths, log_prob = jax.lax.while_loop(_running(max_len), body, init)
    return Decoded(tokens, lengths, log_prob, log_prob)


def beam_search(
    step_fn: StepFn,
    context: Any,
    state: Any,
    *,
    beam_width: int,
    max_len: int,
    alpha: float = 0.0,
    bos: int,
    eos: int,
    pad: int,
    banned: Sequence[int] | None = None,
) -> tuple[Decoded, Beams]:
    """Keep the ``beam_width`` best prefixes of every example at every step.

    Hypotheses are ranked by ``log_prob / length_penalty(length, alpha)``. A hypothesis
    that emits EOS is finished: it stays in the beam with its score frozen and competes
    with the live ones until the search ends (when every beam of every example is
    finished, or after ``max_len`` steps). With ``beam_width=1`` this is :func:`greedy`.
    Where fewer than ``beam_width`` sequences can be formed at all (few allowed tokens,
    a short ``max_len``), the beams left over have ``log_prob`` ``-inf``, length 0 and
    only ``pad`` tokens.

    Returns:
      ``(best, beams)``: the best hypothesis per example and all ``k``, best first.
    """
    banned = _check(
        step_fn, context, state, max_len=max_len, bos=bos, eos=eos, pad=pad, banned=banned
    )
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_width must be an int >= 1; got {beam_width!r}.")
    B = _batch_size(context, state)
    k = beam_width
    tile = lambda x: jnp.repeat(
        x, k, axis=0
    )  # [B, ...] -> [B*k, ...], beams of one example adjacent
    context = jax.tree.map(tile, context)
    state = jax.tree.map(tile, state)

    def body(loop):
        t, state, last, done, tokens, lengths, log_prob = loop
        state, logits = step_fn(context, state, last.reshape(B * k))
        logp = _log_probs(logits, banned).reshape(B, k, -1)
        V = logp.shape[-1]
        # A finished hypothesis has exactly one continuation, PAD, at no cost.
        frozen = jnp.full((V,), -jnp.inf).at[pad].set(0.0)
        logp = jnp.where(done[..., None], frozen, logp)
        cand_logp = log_prob[..., None] + logp  # [B, k, V]
        cand_len = lengths + (~done).astype(jnp.int32)  # [B, k]
        cand_score = cand_logp / length_penalty(cand_len, alpha)[..., None]
        _, flat = jax.lax.top_k(cand_score.reshape(B, k * V), k)
        beam, token = flat // V, (flat % V).astype(jnp.int32)
        gather = lambda x: jnp.take_along_axis(x, beam.reshape((B, k) + (1,) * (x.ndim - 2)), 1)
        new_logp = jnp.take_along_axis(cand_logp.reshape(B, k * V), flat, 1)
        was_done = gather(done)
        lengths = gather(cand_len)
        tokens = gather(tokens).at[:, :, t].set(token)
        flat_index = (jnp.arange(B)[:, None] * k + beam).reshape(B * k)
        state = jax.tree.map(lambda x: x[flat_index], state)
        # A -inf hypothesis (fewer allowed tokens than beams) is dead: done as well.
        done = was_done | (token == eos) | (new_logp == -jnp.inf)
        return t + 1, state, token, done, tokens, lengths, new_logp

    init = (
        jnp.zeros((), jnp.int32),
        state,
        jnp.full((B, k), bos, jnp.int32),
        jnp.zeros((B, k), bool),
        jnp.full((B, k, max_len), pad, jnp.int32),
        jnp.zeros((B, k), jnp.int32),
        # Only the first beam is live at the start, so the k beams do not duplicate it.
        jnp.tile(jnp.concatenate([jnp.zeros((1,)), jnp.full((k - 1,), -jnp.inf)]), (B, 1)),
    )
    *_, tokens, lengths, log_prob = jax.lax.while_loop(_running(max_len), body, init)
    # A beam no sequence could fill holds whatever its -inf candidate was: clear it.
    dead = log_prob == -jnp.inf
    tokens = jnp.where(dead[..., None], pad, tokens)
    lengths = jnp.where(dead, 0, lengths)
    score = log_prob / length_penalty(lengths, alpha)
    order = jnp.argsort(-score, axis=1)
    take = lambda x: jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), 1)
    beams = Beams(take(tokens), take(lengths), take(log_prob), take(score))
    best = Decoded(beams.tokens[:, 0], beams.lengths[:, 0], beams.log_prob[:, 0], beams.score[:, 0])
    return best, beams
