import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# The tests hold two routes to the same number to 1e-5 or closer. On a GPU, JAX's
# default float32 matmul is TF32 (about 1e-3 relative), which fails them without any
# bug (seen on an H200: errors up to 4e-4). Test the arithmetic in float32 there; the
# benchmark's --precision chooses what speed runs use. (A CPU computes float32 matmuls
# in float32 whatever this says; set here without asking for the backend, which would
# start it before any test could configure it.)
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
