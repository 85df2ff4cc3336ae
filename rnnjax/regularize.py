"""Regularisers that change gradient flow through time, for any cell the driver runs.

- **Zoneout** (Krueger et al., ICLR 2017): at every step each unit of the carry keeps
  its previous value with probability ``z``, ``s_t = d_t * s_{t-1} + (1 - d_t) * s~_t``,
  ``d_t ~ Bernoulli(z)`` drawn afresh per unit and per step; at evaluation (no key) the
  expectation, ``s_t = z * s_{t-1} + (1 - z) * s~_t``. Every leaf of the carry (an
  LSTM's ``h`` and ``c``) with one rate, or a rate per carry field (``{"c": 0.5, "h":
  0.05}``, the paper's character-level PTB setting). Any cell.
- **Variational recurrent dropout** (Gal & Ghahramani, NeurIPS 2016): one mask per
  sequence, the same at every step, on the state entering the recurrent matmul,
  ``z_t = (h_{t-1} * m / (1 - p)) W_h`` (the cell's declared matmul,
  :attr:`Cell.fused`; the rest of the step reads the unmasked carry, as Gal's LSTM and
  GRU do). Identity at evaluation. Needs a cell that declares its recurrent matmul.
- **Weight drop** (DropConnect on the recurrent weight, AWD-LSTM; Merity et al., ICLR
  2018): ``W_h * M / (1 - p)`` with one elementwise mask per call, shared by every
  sequence of the batch and every step, over every gate's block (``weight_drop.py``).
  Identity at evaluation. Needs a cell that declares its recurrent weight
  (:attr:`Cell.fused`).

Masks are drawn before the loop from the ``key`` given to :func:`rnnjax.scan` (or to a
layer's ``apply``), so the same key gives the same masks; padded steps leave the carry
unchanged whatever their mask (the driver's rule), and a mask at position ``t``
belongs to input ``t`` in both directions. Without a key the run is deterministic.
Variational dropout on the inputs and outputs of a layer is the stack's
``dropout_rate`` (between layers), not this module's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells.base import Array, Cell, PyTree


class Regularizer(NamedTuple):
    """Rates of the regularisers a run applies (all 0: none).

    Attributes:
      zoneout: in ``[0, 1)``: the probability a unit keeps its previous value; one
        rate for every leaf of the carry, or a mapping from carry field names to rates
        (fields not named: 0).
      recurrent_dropout: in ``[0, 1)``: Gal's variational dropout on the state entering
        the recurrent matmul.
      weight_drop: in ``[0, 1)``: DropConnect on the recurrent weight.
    """

    zoneout: float | Mapping[str, float] = 0.0
    recurrent_dropout: float = 0.0
    weight_drop: float = 0.0

    @property
    def active(self) -> bool:
        return bool(_zoneout_rates(self.zoneout)) or bool(
            self.recurrent_dropout or self.weight_drop
        )


class Masks(NamedTuple):
    """The masks one call draws (``None`` where a regulariser is off).

    Attributes:
      zoneout: like the carry, each leaf ``[T, *batch, ...]``: 1 where the unit keeps its
        previous value.
      recurrent: ``[*batch, H]``, Gal's mask already scaled by ``1 / (1 - p)``.
      weight: like the recurrent weight ``[H, K]``, scaled by ``1 / (1 - p)``.
    """

    zoneout: PyTree | None = None
    recurrent: Array | None = None
    weight: Array | None = None


def check(regularizer: Regularizer | None, cell: Cell) -> Regularizer | None:
    """``regularizer`` checked against ``cell`` (a ``ValueError`` naming the argument,
    before anything runs); ``None`` when nothing is regularised."""
    if regularizer is None:
        return None
    if not isinstance(regularizer, Regularizer):
        raise ValueError(
            f"regularizer must be a rnnjax.Regularizer; got {type(regularizer).__name__}."
        )
    rates = _zoneout_rates(regularizer.zoneout)
    for name, rate in [*(("zoneout", r) for r in rates.values())] + [
        ("recurrent_dropout", regularizer.recurrent_dropout),
        ("weight_drop", regularizer.weight_drop),
    ]:
        _check_rate(name, rate)
    if isinstance(regularizer.zoneout, Mapping):
        fields = getattr(cell.initial_carry(()), "_fields", None)
        unknown = sorted(set(regularizer.zoneout) - set(fields or ()))
        if fields is None or unknown:
            raise ValueError(
                f"zoneout rates by field need a carry with named fields; the {cell.name} "
                f"cell's carry has fields {fields}, and {unknown or sorted(regularizer.zoneout)} "
                "are not among them."
            )
    for name in ("recurrent_dropout", "weight_drop"):
        if getattr(regularizer, name) and cell.fused is None:
            raise ValueError(
                f"{name} acts on the cell's recurrent matmul h W_h, which a cell declares "
                f"as cell.fused; the {cell.name} cell declares none (use zoneout, which "
                "any cell takes)."
            )
    return regularizer if regularizer.active else None


def draw(
    regularizer: Regularizer, cell: Cell, weights: PyTree, carry: PyTree, num_steps: int, key
) -> Masks:
    """The masks of one call: ``carry`` is the initial carry (``[*batch, ...]``),
    ``weights`` what the step reads (``cell.prepared(params)``)."""
    if key is None:
        return Masks()
    k_zone, k_drop, k_weight = (jax.random.fold_in(key, i) for i in range(3))
    zone = None
    if _zoneout_rates(regularizer.zoneout):
        leaves, treedef = jax.tree.flatten(carry)
        per_leaf = _leaf_rates(regularizer.zoneout, carry)
        zone = jax.tree.unflatten(
            treedef,
            [
                jax.random.bernoulli(
                    jax.random.fold_in(k_zone, i), rate, (num_steps,) + jnp.shape(leaf)
                ).astype(jnp.result_type(leaf))
                for i, (leaf, rate) in enumerate(zip(leaves, per_leaf))
            ],
        )
    recurrent = weight = None
    if regularizer.recurrent_dropout:
        h = cell.output(carry)
        recurrent = _inverted(k_drop, regularizer.recurrent_dropout, jnp.shape(h), h.dtype)
    if regularizer.weight_drop:
        w = getattr(weights, cell.fused.weight)
        weight = _inverted(k_weight, regularizer.weight_drop, w.shape, w.dtype)
    return Masks(zone, recurrent, weight)


def apply(
    regularizer: Regularizer, cell: Cell, weights: PyTree, xs: Array, carry: PyTree, key
) -> tuple[Cell, PyTree, PyTree]:
    """``(cell', weights', xs')``: the regularised run over time-major ``xs [T, *batch,
    I]`` from ``carry``, as a cell the driver's sequential loop runs unchanged
    (``xs'`` carries each step's masks beside its input)."""
    masks = draw(regularizer, cell, weights, carry, jnp.shape(xs)[0], key)
    if masks.weight is not None:
        name = cell.fused.weight
        weights = weights._replace(**{name: getattr(weights, name) * masks.weight})
    rates = _leaf_rates(regularizer.zoneout, carry)
    if not any(rates) and not (regularizer.recurrent_dropout and masks.recurrent is not None):
        return cell, weights, xs  # weight drop alone (or nothing drawn): the cell as it is
    recurrent = masks.recurrent
    if recurrent is not None:  # the same mask at every step
        recurrent = jnp.broadcast_to(recurrent, (jnp.shape(xs)[0],) + recurrent.shape)

    def project(w, inputs):
        x, zone_t, drop_t = inputs
        return cell.project(w, x), zone_t, drop_t

    def recur(w, old, inputs):
        xp_t, zone_t, drop_t = inputs
        if drop_t is None:
            new, _ = cell.recur(w, old, xp_t)
        else:
            w_h = getattr(w, cell.fused.weight)
            h = cell.output(old)
            h = h * drop_t.astype(h.dtype)
            new, _ = cell.fused.recur_z(w, old, xp_t, h.astype(w_h.dtype) @ w_h)
        if any(rates):
            if zone_t is None:  # evaluation: the expectation
                new = jax.tree.map(
                    lambda n, o, z: (z * o + (1 - z) * n).astype(n.dtype) if z else n,
                    new,
                    old,
                    jax.tree.unflatten(jax.tree.structure(old), rates),
                )
            else:
                new = jax.tree.map(lambda n, o, d: jnp.where(d > 0, o, n), new, old, zone_t)
        return new, cell.output(new)

    wrapped = cell._replace(
        project=project,
        recur=recur,
        gates=None,
        fused=None,
        linear=None,
        recurrent_scale=None,
        prepare=None,
    )
    return wrapped, weights, (xs, masks.zoneout, recurrent)


def _inverted(key, rate: float, shape, dtype) -> Array:
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(dtype)


def _zoneout_rates(zoneout) -> dict:
    if isinstance(zoneout, Mapping):
        return {k: v for k, v in zoneout.items() if v}
    return {None: zoneout} if zoneout else {}


def _leaf_rates(zoneout, carry) -> list[float]:
    """One zoneout rate per leaf of ``carry`` (a field's rate for each of its leaves)."""
    if not isinstance(zoneout, Mapping):
        return [float(zoneout)] * len(jax.tree.leaves(carry))
    rates = []
    for field in carry._fields:
        n = len(jax.tree.leaves(getattr(carry, field)))
        rates += [float(zoneout.get(field, 0.0))] * n
    return rates


def _check_rate(name: str, rate) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1); got {rate!r}.")
