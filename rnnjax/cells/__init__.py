"""Pure recurrent cells: one file per family, plain JAX only, and the catalogue."""

from rnnjax.cells.base import (
    Cell,
    Entry,
    FusedRecurrence,
    LinearRecurrence,
    StepVJP,
    TorchMapping,
)
from rnnjax.cells.catalogue import (
    get,
    make_cell,
    names,
    register,
    registered,
    unregister,
)
from rnnjax.cells.elman import ElmanParams, elman
from rnnjax.cells.gru import GRUParams, gru
from rnnjax.cells.lstm import LSTMCarry, LSTMParams, chrono_bias_init, lstm

__all__ = [
    "Cell",
    "ElmanParams",
    "Entry",
    "FusedRecurrence",
    "GRUParams",
    "LSTMCarry",
    "LSTMParams",
    "LinearRecurrence",
    "StepVJP",
    "TorchMapping",
    "chrono_bias_init",
    "elman",
    "get",
    "gru",
    "lstm",
    "make_cell",
    "names",
    "register",
    "registered",
    "unregister",
]
