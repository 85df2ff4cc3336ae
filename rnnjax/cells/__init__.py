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
from rnnjax.cells.lru import LRUCarry, LRUParams, lru
from rnnjax.cells.lstm import LSTMCarry, LSTMParams, chrono_bias_init, lstm
from rnnjax.cells.minrnn import MinGRUParams, MinLSTMParams, min_gru, min_lstm
from rnnjax.cells.rglru import RGLRUParams, rg_lru

__all__ = [
    "Cell",
    "ElmanParams",
    "Entry",
    "FusedRecurrence",
    "GRUParams",
    "LRUCarry",
    "LRUParams",
    "LSTMCarry",
    "LSTMParams",
    "LinearRecurrence",
    "MinGRUParams",
    "MinLSTMParams",
    "RGLRUParams",
    "StepVJP",
    "TorchMapping",
    "chrono_bias_init",
    "elman",
    "get",
    "gru",
    "lru",
    "lstm",
    "make_cell",
    "min_gru",
    "min_lstm",
    "names",
    "register",
    "registered",
    "rg_lru",
    "unregister",
]
