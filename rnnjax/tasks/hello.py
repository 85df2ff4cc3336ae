"""The "hello" sequence of REFERENCE.md section 1 as a task."""

from __future__ import annotations

import math

import jax.numpy as jnp

from rnnjax.tasks.base import Batch, Task, check_positive, xent_loss, xent_metrics

VOCAB = "helo"


def hello() -> Task:
    """Inputs h, e, l, l (tokens of the vocabulary "helo"); targets e, l, l, o."""
    inputs = jnp.array([[VOCAB.index(c) for c in "hell"]], jnp.int32)
    targets = jnp.array([[VOCAB.index(c) for c in "ello"]], jnp.int32)

    def sample(key, batch_size: int) -> Batch:
        del key  # one sequence: every batch is the same
        check_positive("batch_size", batch_size)
        tile = lambda a: jnp.tile(a, (batch_size, 1))  # noqa: E731
        return Batch(tile(inputs), tile(targets), jnp.full((batch_size,), 4, jnp.int32))

    return Task(
        name="hello",
        sample=sample,
        eval_set=lambda: sample(None, 1),
        input_size=None,
        vocab_size=4,
        num_outputs=4,
        head="each",
        loss=xent_loss,
        metrics=xent_metrics,
        baseline=math.log(4.0),
        info={"vocab": VOCAB, "inputs": "hell", "targets": "ello"},
    )
