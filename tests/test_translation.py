"""The Seq2Seq vocabulary and the generated translation tasks."""

import datetime as dt

import jax
import numpy as np
import pytest

from rnnjax.tasks.translation import DATE_FORMATS, addition, dates, reversal
from rnnjax.tasks.vocab import BOS, EOS, PAD, Vocab

TASKS = {
    "addition": lambda: addition(3),
    "addition2": lambda: addition(2, held_out=0.2),
    "reversal": lambda: reversal(12, min_len=3, num_symbols=5),
    "dates": lambda: dates(),
}


def test_vocab_round_trip_and_specials():
    v = Vocab("abc")
    assert (v.pad, v.bos, v.eos) == (PAD, BOS, EOS) == (0, 1, 2)
    assert v.size == len(v) == 6
    assert v.encode("cab") == [5, 3, 4]
    assert v.decode([5, 3, EOS, 4, 4]) == "ca"  # stops at EOS
    assert v.decode([BOS, 5, PAD, 3]) == "ca"  # PAD and BOS skipped
    ids, lengths = v.pad_batch(["ab", "c", "abca"], bos=True, eos=True)
    np.testing.assert_array_equal(lengths, [4, 3, 6])
    np.testing.assert_array_equal(ids[1], [BOS, 5, EOS, PAD, PAD, PAD])
    assert [v.decode(r) for r in ids] == ["ab", "c", "abca"]


def test_vocab_errors():
    v = Vocab("abc")
    with pytest.raises(ValueError, match=r"unknown token 'z' at position 2 of 'abz'"):
        v.encode("abz")
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        v.pad_batch(["a", ""])
    v.pad_batch(["a", ""], allow_empty=True)
    with pytest.raises(ValueError, match="more than length=2"):
        v.pad_batch(["abc"], length=2)
    with pytest.raises(ValueError, match="repeated"):
        Vocab("aba")
    with pytest.raises(ValueError, match="special tokens"):
        Vocab(["a", "<eos>"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        v.decode([9])
    with pytest.raises(ValueError, match="not one string"):
        v.pad_batch("abc")


def _solve(name, source):
    """The answer by a second route: Python arithmetic, slicing, or strptime."""
    if name.startswith("addition"):
        a, b = source.split("+")
        return str(int(a) + int(b))
    if name == "reversal":
        return "".join(reversed(source))
    return parse_date(source).isoformat()


STRPTIME = {
    "d Month yyyy": "%d %B %Y",
    "Month d, yyyy": "%B %d, %Y",
    "Mon d, yyyy": "%b %d, %Y",
    "d Mon yyyy": "%d %b %Y",
    "dd-Mon-yyyy": "%d-%b-%Y",
    "dd/mm/yy": "%d/%m/%y",
    "d/m/yyyy": "%d/%m/%Y",
    "dd.mm.yyyy": "%d.%m.%Y",
    "yyyy.mm.dd": "%Y.%m.%d",
    "Weekday, d Month yyyy": "%A, %d %B %Y",
}


def parse_date(source: str) -> dt.date:
    """Try each surface form with the standard library's parser (C locale names)."""
    found = set()
    for fmt in STRPTIME.values():
        try:
            d = dt.datetime.strptime(source, fmt).date()
        except ValueError:
            continue
        if fmt == "%d/%m/%y" and d.year >= 2050:  # strptime pivots at 69, the task at 50
            d = d.replace(year=d.year - 100)
        if "%A" in fmt:
            assert source.startswith(d.strftime("%A")), f"wrong weekday in {source!r}"
        found.add(d)
    assert len(found) == 1, f"{source!r} parses as {found}: ambiguous or unknown"
    return found.pop()


def test_strptime_covers_every_format():
    assert set(STRPTIME) == set(DATE_FORMATS)
    for name, fn in DATE_FORMATS.items():
        for d in (
            dt.date(1950, 1, 1),
            dt.date(1968, 2, 29),
            dt.date(2026, 11, 25),
            dt.date(2049, 12, 31),
        ):
            assert parse_date(fn(d)) == d, name


@pytest.mark.parametrize("name", sorted(TASKS))
def test_examples_are_correct_and_reproducible(name):
    task = TASKS[name]()
    pairs = task.examples(jax.random.key(0), 300)
    assert pairs == task.examples(jax.random.key(0), 300)
    assert pairs != task.examples(jax.random.key(1), 300)
    for src, tgt in pairs:
        assert tgt == _solve(name, src)
        assert len(src) <= task.max_src_len and len(tgt) <= task.max_tgt_len
    assert all(task.split_of(s, t) == "train" for s, t in pairs)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_never_overlap(name):
    task = TASKS[name]()
    train = task.examples(jax.random.key(2), 3000, "train")
    test = task.examples(jax.random.key(3), 3000, "test")
    key = (lambda s, t: t) if name == "dates" else (lambda s, t: s)
    assert not {key(*p) for p in train} & {key(*p) for p in test}
    assert all(task.split_of(*p) == "test" for p in test)
    pairs, batch = task.eval_set(200)
    assert len({s for s, _ in pairs}) == 200  # distinct
    assert all(task.split_of(*p) == "test" for p in pairs)
    assert pairs == task.eval_set(200)[0]  # fixed


def test_held_out_fraction_is_as_asked():
    task = addition(2, held_out=0.2)  # all 10,000 sources enumerated
    held = [task.split_of(f"{a}+{b}", str(a + b)) == "test" for a in range(100) for b in range(100)]
    assert abs(np.mean(held) - 0.2) < 0.02


@pytest.mark.parametrize("name", sorted(TASKS))
def test_batches_have_fixed_shapes_and_teacher_forcing_layout(name):
    task = TASKS[name]()
    batch = task.sample(jax.random.key(7), 16)
    pairs = task.examples(jax.random.key(7), 16)
    S, L = task.max_src_len, task.max_tgt_len + 1
    assert batch.src.shape == (16, S) and batch.tgt_in.shape == batch.tgt_out.shape == (16, L)
    v = task.vocab
    for i, (src, tgt) in enumerate(pairs):
        assert v.decode(batch.src[i]) == src and batch.src_lengths[i] == len(src)
        assert batch.tgt_lengths[i] == len(tgt) + 1
        assert batch.tgt_in[i, 0] == BOS and v.decode(batch.tgt_in[i]) == tgt
        assert batch.tgt_out[i, len(tgt)] == EOS and v.decode(batch.tgt_out[i]) == tgt
        np.testing.assert_array_equal(
            batch.tgt_in[i, 1 : len(tgt) + 1], batch.tgt_out[i, : len(tgt)]
        )
        assert (batch.src[i, len(src) :] == PAD).all() and (
            batch.tgt_out[i, len(tgt) + 1 :] == PAD
        ).all()


def test_dates_use_every_format_and_the_whole_range():
    task = dates()
    pairs = task.examples(jax.random.key(0), 3000)
    years = [int(t[:4]) for _, t in pairs]
    assert min(years) < 1955 and max(years) > 2044
    seen = {
        name
        for name in DATE_FORMATS
        for s, t in pairs
        if DATE_FORMATS[name](dt.date.fromisoformat(t)) == s
    }
    assert seen == set(DATE_FORMATS)
    one = dates(formats=("yyyy.mm.dd",))
    assert all(s.replace(".", "-") == t for s, t in one.examples(jax.random.key(0), 50))


def test_task_errors():
    with pytest.raises(ValueError, match="min_len must be <= seq_len"):
        reversal(5, min_len=6)
    with pytest.raises(ValueError, match="num_symbols must lie in"):
        reversal(5, num_symbols=1)
    with pytest.raises(ValueError, match="digits must be an int >= 1"):
        addition(0)
    with pytest.raises(ValueError, match="formats must be a non-empty subset"):
        dates(formats=("mm/dd/yy",))
    with pytest.raises(ValueError, match="held_out must lie in"):
        addition(held_out=1.0)
    with pytest.raises(ValueError, match="split must be one of"):
        addition().examples(jax.random.key(0), 3, "valid")
    with pytest.raises(ValueError, match="could not draw 100 distinct test examples"):
        reversal(2, num_symbols=2).eval_set(100)  # only 4 sequences exist
