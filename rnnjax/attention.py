"""Attention over encoder states, as pure functions.

Shapes: ``values [*batch, S, C]`` (encoder outputs), ``mask [*batch, S]`` (true on
valid source steps), ``query [*batch, Q]`` (a decoder state).

* ``"bahdanau"`` (additive; Bahdanau, Cho & Bengio 2014):
  ``e_j = v . tanh(W_q q + W_k h_j + b)``.
* ``"luong_dot"`` (Luong, Pham & Manning 2015): ``e_j = q . h_j``; needs ``Q == C``.
* ``"luong_general"``: ``e_j = q . (h_j W)``.

``alpha = softmax(e)`` over valid steps only (exactly zero on padding, summing to 1);
the context is ``sum_j alpha_j h_j``. The key side (``W_k h_j``, ``h_j W``) does not
depend on the query, so :func:`keys` computes it once per source sequence.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells.base import Array, PyTree, check_positive_int

ATTENTIONS = ("bahdanau", "luong_dot", "luong_general")


class AdditiveParams(NamedTuple):
    w_query: Array  # [Q, A]
    w_key: Array  # [C, A]
    b: Array  # [A]
    v: Array  # [A]


class GeneralParams(NamedTuple):
    w: Array  # [C, Q]: keys_j = h_j W, e_j = q . keys_j


def check_kind(kind: str) -> str:
    if kind not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS} or None; got {kind!r}.")
    return kind


def init(
    kind: str, key: Array, query_size: int, value_size: int, attention_size: int | None = None
) -> PyTree:
    """Parameters of attention ``kind`` (``None`` for ``"luong_dot"``, which has none).

    ``attention_size`` is the additive score's width ``A`` (default ``query_size``).
    """
    check_kind(kind)
    check_positive_int("query_size", query_size)
    check_positive_int("value_size", value_size)
    glorot = jax.nn.initializers.glorot_uniform()
    if kind == "bahdanau":
        A = (
            query_size
            if attention_size is None
            else check_positive_int("attention_size", attention_size)
        )
        k_q, k_k, k_v = jax.random.split(key, 3)
        return AdditiveParams(
            w_query=glorot(k_q, (query_size, A)),
            w_key=glorot(k_k, (value_size, A)),
            b=jnp.zeros((A,)),
            v=jax.random.normal(k_v, (A,)) / jnp.sqrt(A),
        )
    if kind == "luong_general":
        return GeneralParams(w=glorot(key, (value_size, query_size)))
    if query_size != value_size:
        raise ValueError(
            f"luong_dot attention needs the decoder's hidden size to equal the encoder "
            f"output size; got query_size={query_size}, value_size={value_size}. "
            "Use 'luong_general' or 'bahdanau' for different sizes."
        )
    return None


def keys(kind: str, params: PyTree, values: Array) -> Array:
    """The query-independent half of the scores, ``[*batch, S, K]``."""
    check_kind(kind)
    if kind == "bahdanau":
        return values @ params.w_key
    if kind == "luong_general":
        return values @ params.w
    return values


def scores(kind: str, params: PyTree, query: Array, keys_: Array) -> Array:
    """Unnormalised scores ``e [*batch, S]`` of ``query [*batch, Q]`` against ``keys``."""
    check_kind(kind)
    if kind == "bahdanau":
        hidden = jnp.tanh(keys_ + (query @ params.w_query + params.b)[..., None, :])
        return hidden @ params.v
    return jnp.einsum("...sk,...k->...s", keys_, query)


def masked_softmax(scores_: Array, mask: Array) -> Array:
    """``softmax`` over the last axis where ``mask`` is true; exactly 0 elsewhere.

    A row with no valid entry gives all zeros (not NaN).
    """
    neg = jnp.finfo(scores_.dtype).min
    masked = jnp.where(mask, scores_, neg)
    weights = jnp.exp(masked - jnp.max(masked, axis=-1, keepdims=True))
    weights = jnp.where(mask, weights, 0.0)
    return weights / jnp.maximum(
        jnp.sum(weights, axis=-1, keepdims=True), jnp.finfo(weights.dtype).tiny
    )


def attend(
    kind: str, params: PyTree, query: Array, keys_: Array, values: Array, mask: Array
) -> tuple[Array, Array]:
    """``(context [*batch, C], weights [*batch, S])`` for one query per sequence."""
    weights = masked_softmax(scores(kind, params, query, keys_), mask)
    context = jnp.einsum("...s,...sc->...c", weights, values)
    return context, weights
