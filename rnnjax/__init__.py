"""rnnjax: recurrent networks as pure JAX functions.

Cells (``elman``, ``lstm``, ``gru``, and every family in the catalogue,
:mod:`rnnjax.cells`) are NamedTuples of pure functions; :func:`scan` drives any cell
over time, validating, planning (:func:`plan`) and running; :mod:`rnnjax.layers`
composes cells into bidirectional and stacked layers over the same driver.
"""

from rnnjax import cells
from rnnjax.cells import (
    Cell,
    ElmanParams,
    GRUParams,
    LSTMCarry,
    LSTMParams,
    chrono_bias_init,
    elman,
    gru,
    lstm,
    make_cell,
)
from rnnjax.layers import (
    BidirectionalCarry,
    BidirectionalParams,
    Layer,
    bidirectional,
    final_hidden,
    make_layer,
    recurrent,
    stack,
)
from rnnjax.readout import ReadoutParams, readout, readout_init
from rnnjax.regularize import Regularizer
from rnnjax.scan import Perturbation, Plan, plan, scan

__version__ = "0.1.0"

__all__ = [
    "cells",
    "final_hidden",
    "make_cell",
    "make_layer",
    "BidirectionalCarry",
    "BidirectionalParams",
    "Cell",
    "ElmanParams",
    "GRUParams",
    "LSTMCarry",
    "LSTMParams",
    "Layer",
    "Perturbation",
    "Plan",
    "ReadoutParams",
    "Regularizer",
    "bidirectional",
    "chrono_bias_init",
    "elman",
    "gru",
    "lstm",
    "plan",
    "readout",
    "readout_init",
    "recurrent",
    "scan",
    "stack",
]
