"""The vanishing-gradient laboratory: how gradients flow back through time in each cell.

    python experiments/vanishing_gradients.py            # under 8 min on a 2-core CPU (README)
    python experiments/vanishing_gradients.py --full     # paper-size, for an accelerator
    python experiments/vanishing_gradients.py --resume   # continue a stopped study

Compares every cell of the catalogue (``rnnjax.cells.names()``, read when the study
runs) on the adding problem (REFERENCE.md 2, 4):

1. at initialisation, over sequence lengths and seeds: ``||dL/dh_t||`` against the
   distance ``T - t`` (one backward pass), its per-step decay factor, the ratio
   ``||dL/dh_1|| / ||dL/dh_T||``, and the theory's prediction for the tanh RNN;
2. the singular values of ``dh_T/dh_t`` against the distance, and the mean gate
   activations of the cells that declare gates;
3. a sweep of the recurrent scale ``g`` (``W_h = g x orthogonal``) for the cells that
   declare one;
4. the LSTM forget-bias ablation (0, 1, chrono);
5. gradient clipping on / off where gradients explode (g > 1) and vanish (g < 1), for
   the ungated cells;
6. training on the adding problem per cell and length: the outcome, and the gradient
   flow after training.

Writes ``<out>/``: ``report.md``, ``findings.md``, PNG figures, ``summary.json``,
``config.json`` and ``units/`` (each measurement, for ``--resume``). This file is the
entry point; the study lives in the package ``experiments/vanishing/``.
"""

from __future__ import annotations

import sys

from vanishing.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
