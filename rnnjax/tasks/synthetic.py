"""Synthetic long-range tasks generated from a PRNG key (REFERENCE.md section 2)."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from rnnjax.tasks.base import (
    Batch,
    Task,
    check_positive,
    masked_accuracy,
    masked_xent,
    step_mask,
)

EVAL_KEY = 2**31 - 1  # held-out sets come from a key the training stream never folds in


# The batch makers live at module level, jitted with their sizes static, so every task
# of the same sizes shares one compiled program (an experiment builds its tasks many
# times over).
@partial(jax.jit, static_argnums=(1, 2))
def _adding_batch(key, batch_size: int, T: int) -> Batch:
    half = T // 2
    k_v, k_a, k_b = jax.random.split(key, 3)
    values = jax.random.uniform(k_v, (batch_size, T))
    first = jax.random.randint(k_a, (batch_size,), 0, half)
    second = jax.random.randint(k_b, (batch_size,), half, T)
    steps = jnp.arange(T)[None, :]
    markers = (steps == first[:, None]) | (steps == second[:, None])
    inputs = jnp.stack([values, markers.astype(values.dtype)], axis=-1)
    targets = jnp.sum(jnp.where(markers, values, 0.0), axis=1, keepdims=True)
    return Batch(inputs, targets, jnp.full((batch_size,), T, jnp.int32))


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _copy_batch(key, batch_size: int, T: int, n: int, A: int) -> Batch:
    symbols = jax.random.randint(key, (batch_size, n), 1, A + 1)
    blanks = lambda k: jnp.zeros((batch_size, k), jnp.int32)  # noqa: E731
    delim = jnp.full((batch_size, 1), A + 1, jnp.int32)
    inputs = jnp.concatenate([symbols, blanks(T - 1), delim, blanks(n)], axis=1)
    targets = jnp.concatenate([blanks(T + n), symbols], axis=1)
    return Batch(inputs, targets, jnp.full((batch_size,), T + 2 * n, jnp.int32))


def adding(seq_len: int = 100, *, eval_size: int = 1000) -> Task:
    """The adding problem (Arjovsky et al. 2016; Le et al. 2015).

    Each step has two inputs, a value ~ U[0, 1] and a marker; exactly two markers are 1,
    one in each half of the sequence (first half ``[0, T//2)``, second ``[T//2, T)``).
    Target: the sum of the two marked values; MSE at the last step. Always predicting 1
    scores 1/6 (the baseline a model must clearly beat).
    """
    T = check_positive("seq_len", seq_len, 2)
    check_positive("eval_size", eval_size)

    def sample(key, batch_size: int) -> Batch:
        return _adding_batch(key, check_positive("batch_size", batch_size), T)

    def loss(outputs, batch):
        return jnp.mean((outputs - batch.targets) ** 2)

    def metrics(outputs, batch):
        return {"loss": loss(outputs, batch), "mse": loss(outputs, batch)}

    return Task(
        name="adding",
        sample=sample,
        eval_set=lambda: sample(jax.random.key(EVAL_KEY), eval_size),
        input_size=2,
        vocab_size=None,
        num_outputs=1,
        head="last",
        loss=loss,
        metrics=metrics,
        baseline=1.0 / 6.0,
        info={"seq_len": T, "baseline": "MSE of always predicting 1 = 1/6"},
    )


def copy_memory(
    delay: int = 50, *, num_symbols: int = 10, alphabet: int = 8, eval_size: int = 1000
) -> Task:
    """Copy memory (Arjovsky et al. 2016), with ``T = delay``.

    Tokens: 0 blank, 1..alphabet symbols, alphabet+1 the delimiter. Input (length
    T + 2*num_symbols): ``num_symbols`` random symbols, T-1 blanks, the delimiter, then
    ``num_symbols`` blanks. Target: T + num_symbols blanks, then the symbols. Loss:
    cross-entropy averaged over every step. A memoryless model that outputs blanks and
    then uniform guesses scores ``num_symbols ln(alphabet) / (T + 2 num_symbols)``
    (10 ln 8 / (T + 20) for the standard sizes). Accuracy is over the copied symbols.
    """
    T = check_positive("delay", delay)
    n = check_positive("num_symbols", num_symbols)
    A = check_positive("alphabet", alphabet, 2)
    check_positive("eval_size", eval_size)
    length = T + 2 * n
    vocab = A + 2

    def sample(key, batch_size: int) -> Batch:
        return _copy_batch(key, check_positive("batch_size", batch_size), T, n, A)

    def loss(outputs, batch):
        return masked_xent(outputs, batch.targets, step_mask(batch.lengths, length))

    def metrics(outputs, batch):
        copied = jnp.zeros((1, length), bool).at[:, -n:].set(True)
        return {
            "loss": loss(outputs, batch),
            "accuracy": masked_accuracy(outputs, batch.targets, copied),
        }

    return Task(
        name="copy",
        sample=sample,
        eval_set=lambda: sample(jax.random.key(EVAL_KEY), eval_size),
        input_size=None,
        vocab_size=vocab,
        num_outputs=vocab,
        head="each",
        loss=loss,
        metrics=metrics,
        baseline=n * math.log(A) / length,
        info={"delay": T, "length": length, "alphabet": A, "num_symbols": n},
    )
