"""Tools the experiment scripts and the benchmarks share: the environment record a
result is written with, the allocator setting the memory measurements use, and the
host devices that let a CPU run the batch split over every core.

Nothing here reads an experiment's config; studies build on it (``experiments/``,
``benchmarks/``), and so can a researcher's own scripts.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
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


HOST_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask, else ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def jax_started() -> bool:
    """Whether JAX has started its backends in this process (XLA reads ``XLA_FLAGS``
    then; importing JAX, as ``rnnjax`` does, starts nothing)."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return getattr(xla_bridge, "backends_are_initialized", lambda: True)()


def use_host_devices(count: int = 0, *, flag: str = "--host_devices") -> int | None:
    """Make JAX's CPU backend show ``count`` devices (``0``: one per core), before JAX
    starts.

    XLA:CPU runs each step's small matmul of a time loop on one core
    (``benchmarks/loop_matmul.py``); with one host device per core, a batch split over
    the devices (``shard_map``, as the experiment scripts' ``--parallel auto`` does)
    runs on every core. On a GPU or TPU machine it changes nothing there: the flag only
    shapes the CPU backend.

    With ``count=0`` an ``XLA_FLAGS`` that already sets the count (a user's choice) is
    kept, and so is a JAX that has already started in this process (a script's
    ``main`` called from a test): nothing to do. An explicit ``count`` replaces the
    flag's value; if JAX has started with another count it raises, naming ``flag``.

    Returns the count set, or ``None`` where it left things as they were.

    Raises:
      ValueError: ``count`` is negative.
      SystemExit: JAX has already started in this process with another count.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"{flag} must be an int >= 0 (0: one per core); got {count!r}.")
    flags = os.environ.get("XLA_FLAGS", "")
    if jax_started():
        if count:
            import jax

            have = len(jax.devices("cpu"))
            if have != count:
                raise SystemExit(
                    f"{flag} {count}: JAX already started in this process with {have} "
                    "host device(s); run it in a fresh process."
                )
        return None
    if not count and HOST_DEVICE_FLAG in flags:
        return None
    n = count or cores()
    rest = re.sub(rf"{HOST_DEVICE_FLAG}=\S+", "", flags)
    os.environ["XLA_FLAGS"] = f"{rest} {HOST_DEVICE_FLAG}={n}".strip()
    return n
