"""Layers: cells driven over time, bidirectional pairs and stacks, all over :func:`scan`.

A :class:`Layer` is the sequence-level analogue of a :class:`~rnnjax.cells.base.Cell`:
a ``NamedTuple`` of pure functions. Stacking and bidirectionality are functions that
build layers from layers; none of them is a new cell and none re-implements the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells.base import Array, Cell, PyTree, check_positive_int
from rnnjax.regularize import Regularizer, check
from rnnjax.scan import PLAN_OPTIONS, scan


class Layer(NamedTuple):
    """A recurrent sequence layer as pure functions.

    Attributes:
      init: ``init(key, input_size) -> params``.
      initial_carry: ``initial_carry(batch_shape=(), dtype=None) -> carry`` of zeros.
      apply: ``apply(params, xs, carry=None, *, lengths=None, key=None,
        time_major=False) -> (final_carry, ys)``; ``xs [*batch, T, I]``,
        ``ys [*batch, T, output_size]``; ``key`` drives dropout where there is any
        (``None``: deterministic, e.g. at evaluation).
      output_size: feature size of ``ys``.
      stochastic: whether ``apply`` draws from ``key`` (dropout somewhere inside), so
        callers ask for a key only where it is used.
      output: ``output(final_carry) -> [*batch, output_size]``, the state a final carry
        ends on, for heads to read: the cell's own ``output`` (``h``); a bidirectional
        layer's two concatenated (the backward one has read each sequence back to its
        first step); a stack's last layer's.
    """

    init: Callable[..., PyTree]
    initial_carry: Callable[..., PyTree]
    apply: Callable[..., tuple[PyTree, Array]]
    output_size: int
    stochastic: bool = False
    output: Callable[[PyTree], Array] | None = None


class BidirectionalParams(NamedTuple):
    forward: PyTree
    backward: PyTree


class BidirectionalCarry(NamedTuple):
    forward: PyTree
    backward: PyTree


def recurrent(
    cell: Cell,
    *,
    reverse: bool = False,
    regularizer: Regularizer | None = None,
    **options,
) -> Layer:
    """One cell over time: :func:`~rnnjax.scan.scan` as a :class:`Layer`.

    ``reverse=True`` runs over the valid part of each sequence backwards;
    ``regularizer`` (zoneout, recurrent dropout, weight drop; :mod:`rnnjax.regularize`)
    draws its masks from ``apply``'s ``key`` (none: deterministic); ``options`` are
    scan's plan options (``remat``, ``unroll``, ``vjp``, ``loop``, ``hoist``, ``mesh``,
    ``batch_axis``; see :func:`~rnnjax.scan.scan`), checked here.
    """
    options = check_plan_options(options)
    regularizer = check(regularizer, cell)

    def apply(params, xs, carry=None, *, lengths=None, key=None, time_major=False):
        return scan(
            cell, params, xs, carry, lengths=lengths, reverse=reverse, time_major=time_major,
            regularizer=regularizer, key=key if regularizer is not None else None, **options,
        )  # fmt: skip

    return Layer(
        cell.init,
        cell.initial_carry,
        apply,
        cell.hidden_size,
        stochastic=regularizer is not None,
        output=cell.output,
    )


def bidirectional(
    forward: Cell,
    backward: Cell | None = None,
    *,
    regularizer: Regularizer | None = None,
    **options,
) -> Layer:
    """A forward and a padding-aware backward pass, outputs concatenated.

    ``ys[..., t, :] = [forward_y_t, backward_y_t]``, where the backward cell reads the
    valid part of each sequence from its last valid step to its first (padded steps
    stay zero in both halves). Params and carry are ``BidirectionalParams`` /
    ``BidirectionalCarry`` with fields ``forward`` and ``backward``.

    Args:
      forward: the cell of the forward direction.
      backward: the cell of the backward direction; a second instance of ``forward``
        (own params) if ``None``.
      regularizer: for both directions, each with masks of its own
        (:mod:`rnnjax.regularize`).
      **options: scan's plan options for both directions (``remat``, ``unroll``, ...).
    """
    backward = forward if backward is None else backward
    options = check_plan_options(options)
    regularizer = check(regularizer, forward)
    check(regularizer, backward)

    def init(key, input_size):
        k_f, k_b = jax.random.split(key)
        return BidirectionalParams(forward.init(k_f, input_size), backward.init(k_b, input_size))

    def initial_carry(batch_shape=(), dtype=None):
        return BidirectionalCarry(
            forward.initial_carry(batch_shape, dtype=dtype),
            backward.initial_carry(batch_shape, dtype=dtype),
        )

    def apply(params, xs, carry=None, *, lengths=None, key=None, time_major=False):
        _check_named(params, BidirectionalParams, "params")
        if carry is not None:
            _check_named(carry, BidirectionalCarry, "carry")
        c_f, c_b = (None, None) if carry is None else carry
        kw = dict(lengths=lengths, time_major=time_major, regularizer=regularizer, **options)
        k_f, k_b = (None, None)
        if key is not None and regularizer is not None:
            k_f, k_b = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        c_f, y_f = scan(forward, params.forward, xs, c_f, key=k_f, **kw)
        c_b, y_b = scan(backward, params.backward, xs, c_b, reverse=True, key=k_b, **kw)
        return BidirectionalCarry(c_f, c_b), jnp.concatenate([y_f, y_b], axis=-1)

    def output(carry):
        return jnp.concatenate([forward.output(carry.forward), backward.output(carry.backward)], -1)

    return Layer(
        init,
        initial_carry,
        apply,
        forward.hidden_size + backward.hidden_size,
        stochastic=regularizer is not None,
        output=output,
    )


# make_layer's ``bidirectional`` keyword shadows the function inside it.
_bidirectional = bidirectional


def stack(layers: Sequence[Layer], *, dropout_rate: float = 0.0) -> Layer:
    """Layers applied one after another, each reading the previous one's outputs.

    Params and carry are tuples with one entry per layer. With ``dropout_rate > 0`` and
    a ``key`` given to ``apply``, inverted dropout is applied to the outputs of every
    layer but the last (as PyTorch's ``dropout`` argument does); without a ``key`` the
    stack is deterministic.

    Args:
      layers: one :class:`Layer` per level, e.g. ``[recurrent(lstm(64))] * 2``.
      dropout_rate: in ``[0, 1)``.
    """
    layers = tuple(layers)
    if not layers or not all(isinstance(layer, Layer) for layer in layers):
        raise ValueError(f"layers must be a non-empty sequence of Layer; got {layers!r}.")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must lie in [0, 1); got {dropout_rate!r}.")
    n = len(layers)

    def init(key, input_size):
        input_size = check_positive_int("input_size", input_size)
        params = []
        for layer, k in zip(layers, jax.random.split(key, n)):
            params.append(layer.init(k, input_size))
            input_size = layer.output_size
        return tuple(params)

    def initial_carry(batch_shape=(), dtype=None):
        return tuple(layer.initial_carry(batch_shape, dtype=dtype) for layer in layers)

    def apply(params, xs, carry=None, *, lengths=None, key=None, time_major=False):
        _check_length("params", params, n)
        if carry is not None:
            _check_length("carry", carry, n)
        carries = [None] * n if carry is None else list(carry)
        finals = []
        for i, layer in enumerate(layers):
            # A layer's own randomness (a stack inside the stack: its dropout) gets a
            # key of its own, apart from the masks between layers (fold_in(key, i)).
            sub = None if key is None else jax.random.fold_in(key, n + i)
            c, xs = layer.apply(
                params[i], xs, carries[i], lengths=lengths, key=sub, time_major=time_major
            )
            finals.append(c)
            if dropout_rate > 0.0 and key is not None and i < n - 1:
                keep = jax.random.bernoulli(
                    jax.random.fold_in(key, i), 1.0 - dropout_rate, xs.shape
                )
                xs = jnp.where(keep, xs / (1.0 - dropout_rate), jnp.zeros_like(xs))
        return tuple(finals), xs

    stochastic = (dropout_rate > 0.0 and n > 1) or any(layer.stochastic for layer in layers)
    last = layers[-1].output
    output = None if last is None else (lambda carry: last(carry[-1]))
    return Layer(init, initial_carry, apply, layers[-1].output_size, stochastic, output)


def final_hidden(carry: PyTree, layer: Layer | None = None) -> Array:
    """The hidden state ``h [*batch, H']`` a final carry ends on, for heads to read.

    With ``layer``: ``layer.output(carry)``, what the layer's cells declare
    (``cell.output``). Without it, read from the carry's structure, for the built-in
    cells: a stack's carry gives its last layer's; a bidirectional carry gives
    ``[h_forward, h_backward]``; a carry with a field ``h`` gives it; any other carry is
    ``h`` itself. Pass the layer for a cell of your own whose carry is not like these.
    """
    if layer is not None and layer.output is not None:
        return layer.output(carry)
    if isinstance(carry, BidirectionalCarry):
        return jnp.concatenate([final_hidden(carry.forward), final_hidden(carry.backward)], -1)
    if isinstance(carry, tuple) and hasattr(carry, "h"):
        return carry.h
    if isinstance(carry, (tuple, list)):
        return final_hidden(carry[-1])
    return carry


def make_layer(
    cell: str,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout_rate: float = 0.0,
    regularizer: Regularizer | None = None,
    remat: int | bool | None = None,
    plan: dict | None = None,
    **cell_options,
) -> Layer:
    """A stack of ``num_layers`` (bidirectional) layers of the catalogue cell ``cell``.

    ``make_layer("lstm", 64, num_layers=2)`` is
    ``stack([recurrent(lstm(64)), recurrent(lstm(64))])``; ``remat`` goes to every
    layer's scan (rematerialisation over chunks of time, for long sequences), and so do
    the other plan options in ``plan`` (e.g. ``{"unroll": 4}``); ``regularizer``
    (zoneout, recurrent dropout, weight drop) to every layer, each with masks of its
    own.
    """
    from rnnjax.cells.catalogue import make_cell

    check_positive_int("num_layers", num_layers)
    options = check_plan_options({**(plan or {}), "remat": remat})
    make = lambda: make_cell(cell, hidden_size, **cell_options)  # noqa: E731
    reg = dict(regularizer=regularizer)
    wrap = (
        (lambda: _bidirectional(make(), make(), **reg, **options))
        if bidirectional
        else (lambda: recurrent(make(), **reg, **options))
    )
    return stack([wrap() for _ in range(num_layers)], dropout_rate=dropout_rate)


def check_plan_options(options: dict) -> dict:
    """``options`` if every key is one of scan's plan options; a ``ValueError`` naming
    the unknown ones (before anything runs) otherwise."""
    unknown = sorted(set(options) - set(PLAN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown scan options {unknown}; expected some of {PLAN_OPTIONS}.")
    return dict(options)


def _check_length(name: str, value, n: int) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != n:
        got = (
            f"{type(value).__name__} of length {len(value)}"
            if isinstance(value, (tuple, list))
            else type(value).__name__
        )
        raise ValueError(f"{name} of a {n}-layer stack must be a tuple of {n} entries; got {got}.")


def _check_named(value, cls, name: str) -> None:
    if not isinstance(value, cls):
        raise ValueError(
            f"{name} of a bidirectional layer must be a {cls.__name__}; got {type(value).__name__}."
        )
