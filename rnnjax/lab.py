"""Tools the experiment scripts and the benchmarks share: the environment record a
result is written with, and the allocator setting the memory measurements use.

Nothing here reads an experiment's config; studies build on it (``experiments/``,
``benchmarks/``), and so can a researcher's own scripts.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def environment() -> dict[str, Any]:
    """Versions, device and machine: what a reader needs to reproduce a number."""
    import jax

    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "chex", "numpy"):
        try:
            module = __import__(name, fromlist=["__version__"])
            versions[name] = getattr(module, "__version__", "?")
        except ImportError:
            versions[name] = None
    try:
        commit = _git("rev-parse", "HEAD") or None
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    device = jax.devices()[0]
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": getattr(device, "device_kind", str(device)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "git_commit": commit,
        "git_dirty": dirty,  # tracked files differed from the commit when this was recorded
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        # Other work on the machine when this was recorded (1, 5, 15 min): a busy machine
        # slows a backend whose threads need every core (PyTorch's) more than others.
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _git(*args: str) -> str:
    # The repository of the script being run (its commit is the result's), else here.
    script = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else Path.cwd()
    where = script if script.is_dir() else Path.cwd()
    out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=where, timeout=10)
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
KEEP_BYTES = 2**30  # mallopt takes a C int: 2**32 would wrap to 0 (trim on every free)
KEPT: dict = {}  # what keep_freed_memory set in this process, for the record


def keep_freed_memory(nbytes: int = KEEP_BYTES) -> dict:
    """Keep freed memory in this process for reuse (glibc, ``mallopt``): one malloc
    arena, and mmap and trim thresholds of ``nbytes``.

    Call it before JAX (or PyTorch) starts its threads: a thread's own arena serves a
    block above 64 MiB with fresh pages whatever the thresholds, hence one arena. The
    resident set then stays at its peak. Returns the settings, as the benchmark's
    ``allocator()`` records them. Linux with glibc only (benchmarks/README.md, "The
    allocator", has the measurements).
    """
    if not 0 < nbytes < 2**31:
        raise ValueError(f"nbytes must be in (0, 2**31): mallopt takes a C int; got {nbytes}.")
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018  (glibc's; absent from other C libraries)
    except (OSError, AttributeError) as err:
        raise RuntimeError(f"keep_freed_memory needs glibc (Linux): {err}") from err
    settings = {"M_ARENA_MAX": 1, "M_MMAP_THRESHOLD": nbytes, "M_TRIM_THRESHOLD": nbytes}
    codes = {"M_ARENA_MAX": M_ARENA_MAX, "M_MMAP_THRESHOLD": M_MMAP_THRESHOLD}
    codes["M_TRIM_THRESHOLD"] = M_TRIM_THRESHOLD
    refused = [k for k, v in settings.items() if libc.mallopt(codes[k], v) != 1]
    if refused:
        raise RuntimeError(f"mallopt refused {refused} ({settings}).")
    KEPT.update(settings)
    return {"mallopt": settings}
