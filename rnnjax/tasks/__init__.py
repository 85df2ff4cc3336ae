"""Tasks: batches from a PRNG key, or from data that ships inside a package.

Each is a :class:`Task`; :func:`make_task` builds one by name with keyword options.
The Seq2Seq tasks (``addition``, ``reversal``, ``dates``) are :class:`Seq2SeqTask` s
over one :class:`Vocab`. Definitions: REFERENCE.md section 2.
"""

from __future__ import annotations

from collections.abc import Callable

from rnnjax.tasks.base import Batch, Task, check_batch
from rnnjax.tasks.datasets import char_lm, default_corpus, sequential_digits
from rnnjax.tasks.hello import hello
from rnnjax.tasks.mnist_1d import mnist1d
from rnnjax.tasks.synthetic import adding, copy_memory
from rnnjax.tasks.translation import Seq2SeqBatch, Seq2SeqTask, addition, dates, reversal
from rnnjax.tasks.vocab import Vocab

TASKS: dict[str, Callable[..., Task]] = {
    "adding": adding,
    "copy": copy_memory,
    "digits": sequential_digits,
    "charlm": char_lm,
    "hello": hello,
    "mnist1d": mnist1d,
}


def make_task(name: str, **options) -> Task:
    """``make_task("adding", seq_len=200)``; names: see :data:`TASKS`."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}; got {name!r}.")
    try:
        return TASKS[name](**options)
    except TypeError as err:  # an option the task does not take
        raise ValueError(f"bad options for task {name!r}: {err}") from None


__all__ = [
    "TASKS",
    "Batch",
    "Seq2SeqBatch",
    "Seq2SeqTask",
    "Task",
    "Vocab",
    "adding",
    "check_batch",
    "addition",
    "dates",
    "reversal",
    "char_lm",
    "copy_memory",
    "default_corpus",
    "hello",
    "make_task",
    "mnist1d",
    "sequential_digits",
]
