"""Pure recurrent cells: one file per family, plain JAX only, and the catalogue."""

from rnnjax.cells.antisymmetric import AntisymmetricParams, antisymmetric
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
from rnnjax.cells.cornn import CoRNNCarry, CoRNNParams, cornn
from rnnjax.cells.elman import ElmanParams, elman
from rnnjax.cells.gru import GRUParams, gru
from rnnjax.cells.indrnn import IndRNNParams, indrnn
from rnnjax.cells.layernorm import LNGRUParams, LNLSTMParams, ln_gru, ln_lstm
from rnnjax.cells.lem import LEMCarry, LEMParams, lem
from rnnjax.cells.lru import LRUCarry, LRUParams, lru
from rnnjax.cells.lstm import LSTMCarry, LSTMParams, chrono_bias_init, lstm
from rnnjax.cells.mgu import MGUParams, mgu
from rnnjax.cells.minrnn import MinGRUParams, MinLSTMParams, min_gru, min_lstm
from rnnjax.cells.orthogonal import OrthogonalParams, OrthogonalWeights, exprnn
from rnnjax.cells.rglru import RGLRUParams, rg_lru

__all__ = [
    "AntisymmetricParams",
    "Cell",
    "CoRNNCarry",
    "CoRNNParams",
    "ElmanParams",
    "Entry",
    "FusedRecurrence",
    "GRUParams",
    "IndRNNParams",
    "LEMCarry",
    "LEMParams",
    "LNGRUParams",
    "LNLSTMParams",
    "LRUCarry",
    "LRUParams",
    "LSTMCarry",
    "LSTMParams",
    "LinearRecurrence",
    "MGUParams",
    "MinGRUParams",
    "MinLSTMParams",
    "OrthogonalParams",
    "OrthogonalWeights",
    "RGLRUParams",
    "StepVJP",
    "TorchMapping",
    "antisymmetric",
    "chrono_bias_init",
    "cornn",
    "elman",
    "exprnn",
    "get",
    "gru",
    "indrnn",
    "lem",
    "ln_gru",
    "ln_lstm",
    "lru",
    "lstm",
    "make_cell",
    "mgu",
    "min_gru",
    "min_lstm",
    "names",
    "register",
    "registered",
    "rg_lru",
    "unregister",
]
