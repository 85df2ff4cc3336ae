"""Toy translation tasks for Seq2Seq, generated from a PRNG key (REFERENCE.md section 2).

* ``addition``: ``"123+45"`` -> ``"168"`` (Keras addition_rnn; Flax examples/seq2seq).
* ``reversal``: ``"cadbe"`` -> ``"ebdac"``.
* ``dates``: ``"25 November 2026"``, ``"Nov 25, 2026"``, ``"25/11/26"``,
  ``"2026.11.25"``, ... -> ``"2026-11-25"``.

Train and held-out splits never overlap: every example has a *split key* (the source
string for addition and reversal, the ISO date, i.e. the target, for dates, so a
held-out date is unseen in every surface form) and belongs to the held-out split exactly when
``crc32(split_key) mod 10000 < held_out * 10000``. Sampling draws candidates and keeps
those of the requested split.

Batches have fixed shapes (the task's longest source and target), so a jitted train
step compiles once.
"""

from __future__ import annotations

import datetime as dt
import string
import zlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from rnnjax.tasks.base import check_positive
from rnnjax.tasks.vocab import Vocab

SPLITS = ("train", "test")


class Seq2SeqBatch(NamedTuple):
    src: np.ndarray  # [B, S] int32 source tokens, PAD after src_lengths
    src_lengths: np.ndarray  # [B] int32
    tgt_in: np.ndarray  # [B, L+1] decoder inputs: BOS y_1 ... y_n PAD ...
    tgt_out: np.ndarray  # [B, L+1] decoder targets: y_1 ... y_n EOS PAD ...
    tgt_lengths: np.ndarray  # [B] int32: n + 1 (the EOS counts)


class Seq2SeqTask(NamedTuple):
    """A generated string-to-string task.

    Attributes:
      name: ``"addition"``, ``"reversal"`` or ``"dates"``.
      vocab: the shared source / target :class:`~rnnjax.tasks.vocab.Vocab`.
      examples: ``examples(key, n, split="train") -> [(source, target), ...]``.
      sample: ``sample(key, batch_size, split="train") -> Seq2SeqBatch``.
      eval_set: ``eval_set(n) -> (pairs, Seq2SeqBatch)``: ``n`` distinct held-out
        examples, the same on every call.
      batch: ``batch(pairs) -> Seq2SeqBatch`` at the task's fixed shapes.
      split_of: ``split_of(source, target) -> "train" | "test"``.
      max_src_len: longest source (tokens).
      max_tgt_len: longest target (tokens, without BOS / EOS).
      info: the options, for reports.
    """

    name: str
    vocab: Vocab
    examples: Callable[..., list[tuple[str, str]]]
    sample: Callable[..., Seq2SeqBatch]
    eval_set: Callable[[int], tuple[list[tuple[str, str]], Seq2SeqBatch]]
    batch: Callable[[list[tuple[str, str]]], Seq2SeqBatch]
    split_of: Callable[[str, str], str]
    max_src_len: int
    max_tgt_len: int
    info: dict


def numpy_rng(key) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key (typed or raw): same key, same draws."""
    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, np.uint32).ravel().tolist())


def _held_out(split_key: str, fraction: float) -> bool:
    return zlib.crc32(split_key.encode()) % 10_000 < round(fraction * 10_000)


def _make_task(name, vocab, draw, split_key_of, max_src, max_tgt, held_out, info) -> Seq2SeqTask:
    """``draw(rng, m) -> [(source, target)]`` candidates and
    ``split_key_of(source, target)``; the rest is shared."""
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out must lie in (0, 1); got {held_out!r}.")

    def split_of(source: str, target: str) -> str:
        return "test" if _held_out(split_key_of(source, target), held_out) else "train"

    def _draw_split(rng, n, split, distinct=False):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {split!r}.")
        want_test = split == "test"
        out, seen = [], set()
        for _ in range(1000):
            for src, tgt in draw(rng, max(64, 2 * n)):
                if (split_of(src, tgt) == "test") != want_test or (distinct and src in seen):
                    continue
                seen.add(src)
                out.append((src, tgt))
                if len(out) == n:
                    return out
        raise ValueError(
            f"could not draw {n} {'distinct ' if distinct else ''}{split} examples of "
            f"{name} with {info}: the split is (nearly) empty; enlarge the task."
        )

    def examples(key, n: int, split: str = "train"):
        check_positive("n", n)
        return _draw_split(numpy_rng(key), n, split)

    def batch(pairs) -> Seq2SeqBatch:
        if not pairs:
            raise ValueError("pairs must hold at least one (source, target) example.")
        srcs, tgts = zip(*pairs)
        src, src_lengths = vocab.pad_batch(srcs, length=max_src)
        tgt_in, tgt_lengths = vocab.pad_batch(tgts, bos=True, length=max_tgt + 1)
        tgt_out, _ = vocab.pad_batch(tgts, eos=True, length=max_tgt + 1)
        return Seq2SeqBatch(src, src_lengths, tgt_in, tgt_out, tgt_lengths)

    def sample(key, batch_size: int, split: str = "train") -> Seq2SeqBatch:
        check_positive("batch_size", batch_size)
        return batch(examples(key, batch_size, split))

    def eval_set(n: int):
        check_positive("n", n)
        pairs = _draw_split(np.random.default_rng(20261125), n, "test", distinct=True)
        return pairs, batch(pairs)

    return Seq2SeqTask(
        name=name,
        vocab=vocab,
        examples=examples,
        sample=sample,
        eval_set=eval_set,
        batch=batch,
        split_of=split_of,
        max_src_len=max_src,
        max_tgt_len=max_tgt,
        info={"task": name, "held_out": held_out, **info},
    )


def addition(digits: int = 3, *, held_out: float = 0.1) -> Seq2SeqTask:
    """Integer addition as text: ``"a+b"`` -> ``"a+b"``'s sum, ``a, b`` uniform in
    ``[0, 10**digits)``, no leading zeros, characters as tokens.

    The split key is the source, so a held-out sum ``"a+b"`` is never trained on (its
    mirror ``"b+a"`` may be).
    """
    check_positive("digits", digits)
    vocab = Vocab("0123456789+")

    def draw(rng, m):
        a, b = rng.integers(0, 10**digits, size=(2, m))
        return [(f"{x}+{y}", str(x + y)) for x, y in zip(a.tolist(), b.tolist())]

    return _make_task(
        "addition", vocab, draw, lambda s, t: s, 2 * digits + 1, digits + 1, held_out,
        {"digits": digits},
    )  # fmt: skip


def reversal(
    seq_len: int = 10, *, min_len: int | None = None, num_symbols: int = 10, held_out: float = 0.1
) -> Seq2SeqTask:
    """Sequence reversal: ``num_symbols`` letters, lengths uniform in
    ``[min_len, seq_len]`` (``min_len`` defaults to ``seq_len``: fixed length)."""
    check_positive("seq_len", seq_len)
    min_len = seq_len if min_len is None else min_len
    check_positive("min_len", min_len)
    if min_len > seq_len:
        raise ValueError(f"min_len must be <= seq_len; got min_len={min_len}, seq_len={seq_len}.")
    if not 2 <= num_symbols <= 26:
        raise ValueError(f"num_symbols must lie in [2, 26]; got {num_symbols!r}.")
    letters = string.ascii_lowercase[:num_symbols]
    vocab = Vocab(letters)

    def draw(rng, m):
        lengths = rng.integers(min_len, seq_len + 1, size=m)
        codes = rng.integers(0, num_symbols, size=(m, seq_len))
        out = []
        for row, n in zip(codes.tolist(), lengths.tolist()):
            s = "".join(letters[c] for c in row[:n])
            out.append((s, s[::-1]))
        return out

    return _make_task(
        "reversal", vocab, draw, lambda s, t: s, seq_len, seq_len, held_out,
        {"seq_len": seq_len, "min_len": min_len, "num_symbols": num_symbols},
    )  # fmt: skip


MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _year2(d: dt.date) -> str:
    return f"{d.year % 100:02d}"


# Surface forms of one date; none is ambiguous: numeric forms are day-first or
# year-first, and two-digit years pivot at 50 (50-99 -> 19xx, 00-49 -> 20xx), which the
# date range 1950-2049 makes exact.
DATE_FORMATS: dict[str, Callable[[dt.date], str]] = {
    "d Month yyyy": lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    "Month d, yyyy": lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    "Mon d, yyyy": lambda d: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    "d Mon yyyy": lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}",
    "dd-Mon-yyyy": lambda d: f"{d.day:02d}-{MONTHS[d.month - 1][:3]}-{d.year}",
    "dd/mm/yy": lambda d: f"{d.day:02d}/{d.month:02d}/{_year2(d)}",
    "d/m/yyyy": lambda d: f"{d.day}/{d.month}/{d.year}",
    "dd.mm.yyyy": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "yyyy.mm.dd": lambda d: f"{d.year}.{d.month:02d}.{d.day:02d}",
    "Weekday, d Month yyyy": lambda d: (
        f"{WEEKDAYS[d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}"
    ),
}
DATE_RANGE = (dt.date(1950, 1, 1), dt.date(2049, 12, 31))


def dates(*, formats: tuple[str, ...] | None = None, held_out: float = 0.1) -> Seq2SeqTask:
    """Date normalisation: a date from 1950-01-01 to 2049-12-31 in one of
    :data:`DATE_FORMATS` (uniformly) -> ISO ``"yyyy-mm-dd"``.

    The split key is the date, so held-out dates are unseen in every form.
    """
    names = tuple(DATE_FORMATS) if formats is None else tuple(formats)
    unknown = [f for f in names if f not in DATE_FORMATS]
    if not names or unknown:
        raise ValueError(
            f"formats must be a non-empty subset of {list(DATE_FORMATS)}; got {names}."
        )
    fns = [DATE_FORMATS[f] for f in names]
    start, end = DATE_RANGE
    num_days = (end - start).days + 1
    # Symbols and the longest source: 28 years hold every (month, day, weekday) and the
    # years only change digits, so they stand for the whole range.
    chars, longest = set("0123456789-"), 0
    for offset in range(28 * 366):
        d = start + dt.timedelta(offset)
        for fn in fns:
            text = fn(d)
            chars.update(text)
            longest = max(longest, len(text))
    vocab = Vocab("".join(sorted(chars)))

    def draw(rng, m):
        offsets = rng.integers(0, num_days, size=m)
        which = rng.integers(0, len(fns), size=m)
        out = []
        for o, w in zip(offsets.tolist(), which.tolist()):
            d = start + dt.timedelta(o)
            out.append((fns[w](d), d.isoformat()))
        return out

    # The split key is the target, the ISO date.
    return _make_task(
        "dates", vocab, draw, lambda s, t: t, longest, 10, held_out, {"formats": list(names)}
    )
