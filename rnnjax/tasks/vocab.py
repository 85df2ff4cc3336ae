"""One vocabulary for sequence-to-sequence tasks: characters plus PAD, BOS and EOS.

Ids 0, 1, 2 are always ``<pad>``, ``<bos>`` and ``<eos>``; the task's symbols follow in
the order given. A target ``"123"`` becomes the decoder input ``[BOS, 1, 2, 3]`` and the
decoder output ``[1, 2, 3, EOS]`` (teacher forcing), padded with PAD to the batch's
longest; the loss masks everything past EOS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")


class Vocab:
    """Symbols <-> integer ids, with the three special tokens first.

    Args:
      symbols: the task's symbols (characters of a string, or a sequence of strings),
        each once; special names are reserved.
    """

    pad, bos, eos = PAD, BOS, EOS

    def __init__(self, symbols: str | Sequence[str]):
        symbols = list(symbols)
        if not symbols:
            raise ValueError("symbols must not be empty.")
        dupes = sorted({s for s in symbols if symbols.count(s) > 1})
        if dupes:
            raise ValueError(f"symbols must be unique; repeated: {dupes!r}.")
        reserved = sorted(set(symbols) & set(SPECIALS))
        if reserved:
            raise ValueError(f"symbols must not contain the special tokens {reserved!r}.")
        self.symbols = tuple(SPECIALS) + tuple(symbols)
        self._ids = {s: i for i, s in enumerate(self.symbols)}

    @property
    def size(self) -> int:
        return len(self.symbols)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"Vocab({''.join(self.symbols[3:])!r}, size={self.size})"

    def encode(self, text: Iterable[str]) -> list[int]:
        """Ids of ``text``'s symbols; an unknown symbol is a ``ValueError`` naming it."""
        ids = []
        for position, symbol in enumerate(text):
            i = self._ids.get(symbol)
            if i is None or i < len(SPECIALS):
                raise ValueError(
                    f"unknown token {symbol!r} at position {position} of {text!r}; "
                    f"the vocabulary has {''.join(self.symbols[3:])!r}."
                )
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` up to the first EOS; PAD and BOS are skipped."""
        out = []
        for i in np.asarray(list(ids)).reshape(-1).tolist():
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            if not 0 <= i < self.size:
                raise ValueError(f"id {i} is outside the vocabulary of size {self.size}.")
            out.append(self.symbols[i])
        return "".join(out)

    def pad_batch(
        self,
        texts: Sequence[str],
        *,
        bos: bool = False,
        eos: bool = False,
        length: int | None = None,
        allow_empty: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [B, L] int32, lengths [B] int32)``, PAD-filled past each length.

        Args:
          texts: the sequences.
          bos / eos: prepend BOS / append EOS (counted in the lengths).
          length: pad to this length (default: the longest); longer is an error.
          allow_empty: permit a sequence of length 0 (after BOS/EOS are added).
        """
        if isinstance(texts, str):
            raise ValueError("texts must be a sequence of strings, not one string.")
        if len(texts) == 0:
            raise ValueError("texts must hold at least one sequence.")
        rows = [([BOS] if bos else []) + self.encode(t) + ([EOS] if eos else []) for t in texts]
        lengths = np.array([len(r) for r in rows], np.int32)
        if not allow_empty and (lengths == 0).any():
            i = int(np.argmin(lengths))
            raise ValueError(f"texts[{i}] is empty; an empty sequence is not allowed here.")
        width = int(lengths.max()) if length is None else length
        if lengths.max() > width:
            i = int(np.argmax(lengths))
            raise ValueError(
                f"texts[{i}] has {lengths[i]} tokens (with BOS/EOS); more than length={width}."
            )
        ids = np.full((len(rows), max(width, 1)), PAD, np.int32)
        for row, r in zip(ids, rows):
            row[: len(r)] = r
        return ids, lengths
