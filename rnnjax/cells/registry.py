"""Cells by name, for configs and for studies that compare "every cell the library has"."""

from __future__ import annotations

import functools
from collections.abc import Callable

from rnnjax.cells.base import Cell
from rnnjax.cells.elman import elman
from rnnjax.cells.gru import gru
from rnnjax.cells.lstm import lstm

CELLS: dict[str, Callable[..., Cell]] = {
    "rnn_tanh": functools.partial(elman, activation="tanh"),
    "rnn_relu": functools.partial(elman, activation="relu"),
    "lstm": lstm,
    "gru": gru,
}


def make_cell(name: str, hidden_size: int, **options) -> Cell:
    """``make_cell("lstm", 64, forget_bias=0.0)``; names: see :data:`CELLS`."""
    if name not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}; got {name!r}.")
    return CELLS[name](hidden_size, **options)
