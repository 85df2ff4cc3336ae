"""Pure recurrent cells: one file per family, plain JAX only."""

from rnnjax.cells.base import Cell
from rnnjax.cells.elman import ElmanParams, elman
from rnnjax.cells.gru import GRUParams, gru
from rnnjax.cells.lstm import LSTMCarry, LSTMParams, chrono_bias_init, lstm
from rnnjax.cells.registry import CELLS, make_cell

__all__ = [
    "CELLS",
    "make_cell",
    "Cell",
    "ElmanParams",
    "GRUParams",
    "LSTMCarry",
    "LSTMParams",
    "chrono_bias_init",
    "elman",
    "gru",
    "lstm",
]
