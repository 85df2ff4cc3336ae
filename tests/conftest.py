import os
import shutil
import tempfile
from pathlib import Path

# A persistent compilation cache for this test session, shared by every script the
# tests start in a subprocess: the subprocess tests run the same train step in several
# processes one after another (interrupted, resumed, uninterrupted), and each would
# otherwise compile it again. Fresh per session (so every run compiles everything at
# least once) and removed at its end. Set before JAX is imported, which reads it then; a
# cache directory the caller set is kept.
#
# Never one directory for two processes that run at once: JAX writes an entry in place
# and takes no lock (jax/_src/lru_cache.py, without a size limit; with one, every write
# rescans the whole directory), so a process reading an entry another is still writing
# deserialises a truncated executable and crashes (two pytest-xdist workers sharing the
# cache segfaulted in CI at d457bae and a49b961). So each xdist worker has its own
# subfolder, and the tests that start processes side by side give each its own
# (tests/test_distributed.py).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnnjax-tests-xla-")
    os.environ["RNNJAX_TESTS_OWN_XLA_CACHE"] = os.environ["JAX_COMPILATION_CACHE_DIR"]
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The tests compile thousands of small programs and run each once or a few times: XLA's
# compile time, most of it LLVM optimising the CPU code, is most of the suite's time.
# LLVM at -O1 instead of the default -O2 cuts it by a third (tests/test_cells.py: 118 s
# -> 77 s). XLA's HLO passes (fusion, buffer assignment, the memory analysis tests read)
# are the same at every backend level. -O0 halved the time but changed float32 rounding
# between two programs by up to 4e-6 (six tests that hold a remat, checkify or fused
# route to the plain one at 1e-6 failed), so it is not used; at -O1 every check passes
# unchanged. The benchmarks and experiments keep the default. A level the caller set is
# kept; scripts the tests start inherit it, except where a test sets their XLA_FLAGS
# (tests/test_distributed.py's host-device counts: those run at the default level).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1"
    ).strip()
if "PYTEST_XDIST_WORKER" in os.environ:  # set by xdist before this file is imported
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(
        os.environ["JAX_COMPILATION_CACHE_DIR"], os.environ["PYTEST_XDIST_WORKER"]
    )

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The same, for a JAX another plugin imported before this file set the variables.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" in os.environ:
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )

ROOT = Path(__file__).resolve().parents[1]

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


def pytest_unconfigure(config):
    # The process that made the session's cache removes it (the controller under
    # pytest-xdist: its workers inherit the variable and never own it).
    own = os.environ.get("RNNJAX_TESTS_OWN_XLA_CACHE")
    if own and not hasattr(config, "workerinput"):
        shutil.rmtree(own, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test module, drop every compiled program JAX holds in memory.

    A pytest-xdist worker lives for the whole suite and, without this, keeps every one
    of the thousands of executables it compiled (and their LLVM code) until it exits.
    Twice a fresh-clone CI run segfaulted inside XLA's compiler (``backend_compile_and_load``)
    in a vanishing-study test at about 90% of the suite, never in a fresh process, and
    never the same test; memory stayed under 7 GB per worker. Bounding what a worker
    carries is a mitigation, not a proven fix. A later module that needs a program
    again reads it from the session's persistent compilation cache above."""
    yield
    jax.clear_caches()
