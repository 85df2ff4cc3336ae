"""What every task provides: batches from a PRNG key, a loss, metrics and a baseline."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnjax.checks import check_in_range

Array = jax.Array


class Batch(NamedTuple):
    inputs: Array  # [B, T, I] float features, or [B, T] integer tokens
    targets: Array  # [B, 1] (regression), [B] (class), or [B, T] (a token per step)
    lengths: Array  # [B] int32 valid lengths


class Task(NamedTuple):
    """A supervised sequence task.

    Attributes:
      name: e.g. ``"adding"``.
      sample: ``sample(key, batch_size) -> Batch``, a pure function of the key.
      eval_set: ``eval_set() -> Batch``, the fixed held-out set (same every call).
      input_size: feature size of float inputs, or ``None`` for token inputs.
      vocab_size: number of input tokens for token inputs, else ``None``.
      num_outputs: readout size.
      head: ``"last"`` (one output per sequence) or ``"each"`` (one per step).
      loss: ``loss(outputs, batch) -> scalar``.
      metrics: ``metrics(outputs, batch) -> dict`` of scalars (includes ``"loss"``).
      baseline: the loss of the best memoryless / constant predictor, for reference.
      info: a dict describing the task (sizes, definitions) for reports.
    """

    name: str
    sample: Callable[[Array, int], Batch]
    eval_set: Callable[[], Batch]
    input_size: int | None
    vocab_size: int | None
    num_outputs: int
    head: str
    loss: Callable[[Array, Batch], Array]
    metrics: Callable[[Array, Batch], dict]
    baseline: float | None
    info: dict


def check_batch(task: Task, batch: Batch) -> Batch:
    """``batch`` if its lengths lie in ``[0, T]`` and, for token inputs, its ids in the
    task's vocabulary; a ``ValueError`` naming the field otherwise.

    Where the data is still concrete (a batch made outside ``jit``, the held-out set),
    this is the check that a compiled step leaves out: ``scan`` and the embedding only
    check traced lengths and ids under ``checkify`` (README, "Checks")."""
    steps = jnp.shape(batch.inputs)[1]
    check_in_range("batch.lengths", batch.lengths, 0, steps + 1, f"[0, T], T = {steps}")
    if task.vocab_size is not None:
        check_in_range(
            "batch.inputs", batch.inputs, 0, task.vocab_size, "the vocabulary",
            verb="hold token ids in",
        )  # fmt: skip
    return batch


def check_positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return value


def step_mask(lengths: Array, num_steps: int) -> Array:
    return jnp.arange(num_steps)[None, :] < lengths[:, None]  # [B, T]


def masked_xent(logits: Array, targets: Array, mask: Array) -> Array:
    """Mean cross-entropy (nats) over the steps where ``mask`` is true."""
    xent = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    mask = jnp.broadcast_to(mask, xent.shape)
    return jnp.sum(jnp.where(mask, xent, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def masked_accuracy(logits: Array, targets: Array, mask: Array) -> Array:
    hit = jnp.argmax(logits, -1) == targets
    mask = jnp.broadcast_to(mask, hit.shape)  # a mask may be shared by the whole batch
    return jnp.sum(jnp.where(mask, hit, False)) / jnp.maximum(jnp.sum(mask), 1)


LN2 = math.log(2.0)


def xent_loss(outputs: Array, batch: Batch) -> Array:
    """Cross-entropy over every target (a class per sequence or a token per step)."""
    return masked_xent(outputs, batch.targets, jnp.ones(batch.targets.shape, bool))


def xent_metrics(outputs: Array, batch: Batch) -> dict:
    ones = jnp.ones(batch.targets.shape, bool)
    return {
        "loss": xent_loss(outputs, batch),
        "accuracy": masked_accuracy(outputs, batch.targets, ones),
    }
