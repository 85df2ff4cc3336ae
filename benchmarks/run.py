"""Training-step and inference speed of rnnjax against Flax, Equinox and PyTorch.

    python benchmarks/run.py                                  # the full benchmark
    python benchmarks/run.py --configs small --cells lstm     # a subset
    python benchmarks/run.py --configs tiny --rounds 2 --no-sweep --gate_only   # the gate

For every configuration and cell, in one process:

1. **Correctness gate.** Every backend gets the same weights (PyTorch's layout where
   the cell catalogue maps the cell to PyTorch, else the cell's own params; mapped into
   each library's parameters) and must reproduce a float64 NumPy run of the catalogue's
   reference step (outputs to ``--atol``, times the largest reference output where it
   exceeds 1) and the float64 gradients (PyTorch in double
   precision, or float64 JAX autodiff of the same reference where the cell or torch is
   missing) to ``--grad_rtol`` of each tensor's largest entry. A backend that fails is
   reported and not timed; the command exits with status 1. ``gate_cell`` runs it in
   a process for one cell (a test's own, registered).
2. **Timing**, interleaved: each round visits the backends in a fresh random order and
   times enough calls of each for ``--min_sample`` seconds (``block_until_ready`` /
   ``cuda.synchronize``); compile (the first call) is timed on its own and excluded.
   Per backend: the median over ``--rounds`` rounds, the minimum and the interquartile
   range; rnnjax's speed-up over each peer is the ratio *within each round*, then its
   median and IQR, which a noisy machine affects far less than two separate medians.
3. **Derived numbers**: tokens/s (``B*T`` per call); GFLOP/s from the analytic count
   per token forward from the cell catalogue (``Entry.matmul_flops``: ``2*G*H*(I+H)``
   for a cell of G gates) and three times that for a training step; the fraction of the
   matmul peak measured at the start of the same run (the faster of a JAX and a PyTorch
   float32 matmul); memory (below).
4. **Memory**: for XLA backends, the bytes of the compiled program (XLA's buffer
   assignment: temporaries, arguments, outputs); for every backend, the growth of the
   process's resident set over one call (``VmHWM`` after the call minus ``VmRSS``
   before it, with freed memory handed back to the OS first), on the CPU; on a GPU,
   PyTorch's ``max_memory_allocated``. ``--sweep`` repeats the memory measurement of
   the LSTM training step for sequence lengths up to 10,000.

Writes ``<out>/benchmark.json`` (every sample, the whole environment, the command),
``<out>/benchmark.md`` and ``<out>/speedup.png`` (+ ``memory.png`` with ``--sweep``).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import peers

from rnnjax import cells as catalogue
from rnnjax import lab
from rnnjax.lab import keep_freed_memory  # noqa: F401  (page_faults.py, --keep_freed_memory)

ROOT = Path(__file__).resolve().parents[1]

# (batch, steps, input size, hidden size)
CONFIGS = {
    "tiny": (4, 16, 8, 16),  # the gate in CI
    "small": (32, 256, 32, 128),  # per-step overhead dominates
    "medium": (64, 128, 256, 256),
    "large": (64, 100, 512, 512),  # matmul bound
}
SWEEP_SHAPE = (16, 64, 128)  # batch, input, hidden of the sequence-length sweep
TARGET_TRAIN, TARGET_PEAK = 1.25, 0.80
# GPU targets for the LSTM: rnnjax within this factor of cuDNN, and this many times
# faster than Flax nn.RNN.
TARGET_GPU_CUDNN, TARGET_GPU_FLAX = 1.2, 2.0

# --precision: what float32 matmuls run as on a GPU (a CPU has no TF32: its float32
# matmuls are float32 whatever the setting), and the gate's default tolerances there.
PRECISIONS = {"float32": "highest", "tf32": "tensorfloat32"}
GATE_TOLERANCES = {"float32": (1e-5, 1e-4), "tf32": (2e-2, 2e-2)}


def problem(cell: str, shape: tuple[int, int, int, int], seed: int = 0):
    """What every backend gets for ``cell`` at ``shape = (B, T, I, H)``: the weights
    (``peers.weights``: PyTorch's layout, or the cell's own), inputs ``x [B, T, I]``
    and targets ``y [B, T, H]`` (NumPy)."""
    batch, steps, inputs, hidden = shape
    w = peers.weights(cell, inputs, hidden, seed)
    data = np.random.default_rng(seed + 1)
    x = data.standard_normal((batch, steps, inputs)).astype(np.float32)
    y = data.standard_normal((batch, steps, hidden)).astype(np.float32) * 0.5
    return w, x, y


def set_precision(precision: str) -> None:
    """Make every backend run its float32 matmuls as ``precision`` on a GPU: JAX's
    default matmul precision (which ``jax.experimental.rnn`` follows too) and PyTorch's
    TF32 switches for matmuls and cuDNN. PyTorch's own defaults differ (TF32 off for
    matmuls, on for cuDNN), so leaving them alone would time different arithmetic."""
    import jax

    if jax.default_backend() == "cpu":
        if precision != "float32":
            raise SystemExit(f"--precision {precision} needs a GPU; JAX runs on the CPU here")
        return
    jax.config.update("jax_default_matmul_precision", PRECISIONS[precision])
    try:
        import torch
    except ImportError:
        return
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"


def flops_per_call(cell: str, mode: str, batch: int, steps: int, inputs: int, hidden: int):
    """The stated count: the cell's forward matmul FLOPs per token (the catalogue's
    ``Entry.matmul_flops``, ``2 G H (I + H)`` for a cell of G gates) times ``B T``, and
    three times that for a training step."""
    forward = catalogue.get(cell).matmul_flops(inputs, hidden) * batch * steps
    return forward * (3 if mode == "train" else 1)


def least_flops_per_call(cell: str, mode: str, batch: int, steps: int, inputs: int, hidden: int):
    """The matmul FLOPs a call cannot do without (each row records it, and
    ``report.least_matmul_flops`` reads it). Inference: the stated count. A training
    step: the forward, the weights' gradients (the same matmuls' sizes again) and the
    carry's gradient through the recurrent matmul, whose count is the forward's with no
    input, ``matmul_flops(0, H)``: ``2 matmul_flops(I, H) + matmul_flops(0, H)`` per
    token, ``2 G H (2I + 3H)`` for G gates. The stated 3x count also holds the input's
    gradient, which the step does not take."""
    flops = catalogue.get(cell).matmul_flops
    if mode != "train":
        return flops_per_call(cell, mode, batch, steps, inputs, hidden)
    return (2 * flops(inputs, hidden) + flops(0, hidden)) * batch * steps


# ------------------------------------------------------------------------ the gate


# A recurrence whose dynamics amplify a perturbation (the layer-normalised LSTM with the
# gate's random gains, measured: float32 rounding of 3e-7 at t = 0 grows to 1.4e-2 by
# t = 255 at B, T, I, H = 32, 256, 32, 128) or keep it (expRNN's orthogonal W_h: 9e-7
# to 2.7e-3 of outputs up to 100) cannot meet a fixed float32 tolerance over a long
# sequence in any float32 implementation: the reference's own equations in float32 miss
# it too (3.0e-2 and 7.4e-2). So the gate also runs the reference in float32, and where
# that misses the fixed tolerance a backend passes the long sequence within
# ROUNDING_MARGIN times the reference's float32 error, and must also pass the fixed
# tolerances, outputs and gradients, on the first SHORT_STEPS steps (gate_cell), where
# rounding has not grown: a wrong equation fails there.
ROUNDING_MARGIN = 10.0
SHORT_STEPS = 8


def gate(cell, impls, w, x, y, atol, grad_rtol) -> dict[str, dict]:
    """Check every backend against float64 outputs and gradients; returns a report per
    backend with ``ok`` and the largest deviations. The outputs are the catalogue's
    reference step in float64 NumPy; the gradients PyTorch's float64 module where the
    catalogue maps the cell to PyTorch and torch is installed, else float64 JAX
    autodiff of the same reference; either way in the weights' layout.

    Tolerances: outputs within ``atol`` (times the largest reference output beyond 1),
    gradients and loss within ``grad_rtol`` of each tensor's largest entry, or, where
    the reference's own float32 run is further off than that, within
    :data:`ROUNDING_MARGIN` times its error (``rounding_floor`` in the report, which
    records the tolerances used; :func:`gate_cell` then also gates the first
    :data:`SHORT_STEPS` steps). The float32 reference runs only when some backend
    misses the fixed tolerances; otherwise its recorded errors are 0 (not run)."""
    ref_ys = peers.reference(cell, w, x, y.shape[-1])
    ref_loss = 0.5 * float(np.mean((ref_ys - y.astype(np.float64)) ** 2))
    ref_grads, grad_source = _reference_grads(cell, w, x, y)
    report = {}
    results = {}
    for name, impl in impls.items():
        try:
            results[name] = impl.result()
        except Exception as err:  # noqa: BLE001  (a backend that crashes fails the gate)
            report[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"[:500]}
    if ref_grads is None:  # no PyTorch, or no such cell in it: float64 JAX autodiff
        ref_grads = peers.reference_grads(cell, w, x, y)
        grad_source = "float64 JAX autodiff of the catalogue's reference"
    rounding = {"output": 0.0, "grads": 0.0}  # the float32 reference's own error

    def misses(ys, loss, grads):  # the fixed tolerances
        out_scale = max(1.0, _max_abs(ref_ys))
        loss_err = _max_abs(loss - ref_loss) / max(abs(ref_loss), 1e-12)
        return (
            _max_abs(np.asarray(ys) - ref_ys) > atol * out_scale
            or loss_err > grad_rtol
            or (set(grads) == set(ref_grads) and _grad_error(grads, ref_grads) > grad_rtol)
        )

    # Only a backend that misses the fixed tolerances needs the float32 reference (a
    # second compile of the reference's gradient): most gates never run it.
    if any(misses(*r) for r in results.values()):
        ref32_ys = peers.reference(cell, w, x, y.shape[-1], dtype=np.float32)
        ref32_grads = peers.reference_grads(cell, w, x, y, dtype=np.float32)
        rounding = {
            "output": _max_abs(ref32_ys - ref_ys),
            "grads": _grad_error(ref32_grads, ref_grads),
        }
    for name, (ys, loss, grads) in results.items():
        if set(grads) != set(ref_grads):
            report[name] = {
                "ok": False,
                "error": f"gradients named {sorted(grads)}; the weights are {sorted(ref_grads)}",
            }
            continue
        out_err = _max_abs(np.asarray(ys) - ref_ys)
        # --atol is absolute for outputs within [-1, 1] (the tanh / sigmoid cells) and
        # relative to the largest reference output beyond it (modReLU and relu cells
        # reach |y| ~ 16, where float32 rounding alone is ~1e-6 of it).
        out_scale = max(1.0, _max_abs(ref_ys))
        loss_err = _max_abs(loss - ref_loss) / max(abs(ref_loss), 1e-12)
        grad_err = _grad_error(grads, ref_grads)
        out_tol = max(atol * out_scale, ROUNDING_MARGIN * rounding["output"])
        grad_tol = max(grad_rtol, ROUNDING_MARGIN * rounding["grads"])
        report[name] = {
            "ok": out_err <= out_tol and grad_err <= grad_tol and loss_err <= grad_tol,
            "max_abs_output_error": out_err,
            "output_scale": out_scale,
            "loss_rel_error": loss_err,
            "max_rel_grad_error": grad_err,
            "grad_reference": grad_source,
            "output_tolerance": out_tol,
            "grad_tolerance": grad_tol,
            "float32_reference_output_error": rounding["output"],
            "float32_reference_grad_error": rounding["grads"],
            "rounding_floor": out_tol > atol * out_scale or grad_tol > grad_rtol,
            "rounding_margin": ROUNDING_MARGIN,
        }
    return report


def _grad_error(grads: dict, ref_grads: dict) -> float:
    """The largest error of any gradient tensor relative to its largest entry."""
    return max(
        _max_abs(np.asarray(grads[k]) - ref_grads[k]) / max(_max_abs(ref_grads[k]), 1e-12)
        for k in ref_grads
    )


def _max_abs(a) -> float:
    """The largest absolute value; ``inf`` if any is NaN or infinite (a NaN must fail
    the gate, and Python's ``max`` and comparisons let it through)."""
    a = np.asarray(a, np.float64)
    return float(np.max(np.abs(a))) if np.all(np.isfinite(a)) else float("inf")


def _reference_grads(cell, w, x, y):
    """PyTorch's float64 gradients in its layout, ``(grads, "torch float64")``, or
    ``(None, None)`` where the catalogue maps the cell to no PyTorch module or torch is
    not installed."""
    try:
        import torch
    except ImportError:
        return None, None
    try:
        mapping = peers.torch_mapping(cell)
    except peers.Unavailable:
        return None, None
    module = peers.torch_module(torch, mapping, x.shape[-1], y.shape[-1]).double()
    with torch.no_grad():
        for k in peers.NAMES:
            getattr(module, f"{k}_l0").copy_(torch.from_numpy(w[k].astype(np.float64)))
    ys, _ = module(torch.from_numpy(x.astype(np.float64)))
    (0.5 * ((ys - torch.from_numpy(y.astype(np.float64))) ** 2).mean()).backward()
    return {k: getattr(module, f"{k}_l0").grad.numpy() for k in peers.NAMES}, "torch float64"


@dataclasses.dataclass
class CellGate:
    """The gate for one cell at one size (:func:`gate_cell`).

    Attributes:
      cell: the catalogue name.
      backends: ``{name: report}`` for every backend that was checked: ``ok``, and the
        largest deviations or the ``error`` (a backend that raised while being built
        is here, failing).
      skipped: ``{name: why}`` for the backends that cannot run this cell here (library
        missing, no such cell, needs a GPU): reported, never dropped.
      impls: the backends that passed, built, ready to time.
    """

    cell: str
    backends: dict[str, dict]
    skipped: dict[str, str]
    impls: dict[str, peers.Impl]

    @property
    def ok(self) -> bool:
        """Every backend checked passed, and at least one was."""
        return bool(self.backends) and all(r["ok"] for r in self.backends.values())


def gate_cell(
    cell: str,
    shape: tuple[int, int, int, int] = CONFIGS["tiny"],
    *,
    backends=peers.BACKENDS,
    atol: float = GATE_TOLERANCES["float32"][0],
    grad_rtol: float = GATE_TOLERANCES["float32"][1],
    seed: int = 0,
) -> CellGate:
    """The correctness gate for the catalogue cell ``cell`` at ``shape = (B, T, I, H)``,
    in this process: what ``run.py`` does for each configuration and cell before it
    times anything. ``backends`` are names from ``peers.BACKENDS`` and
    ``peers.VARIANTS``. A cell registered with ``rnnjax.cells.register`` (or
    ``registered``) needs nothing else: without a PyTorch mapping its weights come from
    its own ``init`` and the peers that cannot run it are skipped."""
    catalogue.get(cell)  # a ValueError naming the cells, before anything is built
    w, x, y = problem(cell, shape, seed)
    impls, broken, skipped = {}, {}, {}
    for backend in backends:
        for name, impl in peers.build(backend, cell, w, x, y).items():
            if isinstance(impl, peers.Unavailable):
                skipped[name] = str(impl)
            elif isinstance(impl, Exception):
                broken[name] = {
                    "ok": False,
                    "error": f"building it raised {type(impl).__name__}: {impl}"[:500],
                }
            else:
                impls[name] = impl
    report = gate(cell, impls, w, x, y, atol, grad_rtol) | broken
    floored = {n for n, r in report.items() if r["ok"] and r.get("rounding_floor")}
    if floored:
        _gate_short(cell, backends, floored, report, w, x, y, atol, grad_rtol)
    passing = {n: i for n, i in impls.items() if report[n]["ok"]}
    return CellGate(cell, report, skipped, passing)


def _gate_short(cell, backends, names, report, w, x, y, atol, grad_rtol) -> None:
    """The backends ``names``, which passed the long sequence through the rounding floor,
    gated again on its first :data:`SHORT_STEPS` steps at the fixed tolerances; the
    result goes into ``report[name]["short"]`` and decides ``ok``."""
    xs, ys = x[:, :SHORT_STEPS], y[:, :SHORT_STEPS]
    impls = {}
    for backend in backends:
        for name, impl in peers.build(backend, cell, w, xs, ys).items():
            if name in names:
                impls[name] = impl
    short = gate(cell, impls, w, xs, ys, atol, grad_rtol)
    for name in names:
        r = short.get(name, {"ok": False, "error": "not built on the short sequence"})
        strict = "error" not in r and (
            r["max_abs_output_error"] <= atol * r["output_scale"]
            and r["max_rel_grad_error"] <= grad_rtol
            and r["loss_rel_error"] <= grad_rtol
        )
        report[name]["short"] = {**r, "ok": strict, "steps": SHORT_STEPS}
        report[name]["ok"] = report[name]["ok"] and strict


# ------------------------------------------------------------------------ timing


def _time_calls(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def time_interleaved(fns: dict, *, rounds, min_sample, warmup, rng) -> dict[str, dict]:
    """Compile, warm up, calibrate, then ``rounds`` rounds in random order."""
    out = {}
    calls = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        compile_s = time.perf_counter() - t0
        for _ in range(warmup):
            fn()
        one = _time_calls(fn, 1)
        calls[name] = max(1, int(np.ceil(min_sample / max(one, 1e-9))))
        out[name] = {"compile_and_first_call_s": compile_s, "calls_per_sample": calls[name]}
        out[name]["samples_s"] = []
    names = list(fns)
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            name = names[i]
            out[name]["samples_s"].append(_time_calls(fns[name], calls[name]))
    for r in out.values():
        t = np.array(r["samples_s"])
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        r.update(median_s=float(med), min_s=float(t.min()), q1_s=float(q1), q3_s=float(q3))
    return out


def speedups(times: dict[str, dict], ours: str = "rnnjax") -> dict[str, dict]:
    """rnnjax's speed-up over every other backend timed (peers, and rnnjax's variants):
    ``t_other / t_rnnjax`` per round, summarised."""
    if ours not in times:
        return {}
    mine = np.array(times[ours]["samples_s"])
    out = {}
    for name, r in times.items():
        if name == ours:
            continue
        ratio = np.array(r["samples_s"]) / mine
        q1, med, q3 = np.percentile(ratio, [25, 50, 75])
        out[name] = {"median": float(med), "q1": float(q1), "q3": float(q3)}
    return out


# ------------------------------------------------------------------------ memory


_LIBC = None


def _trim() -> None:
    global _LIBC
    gc.collect()
    try:
        _LIBC = _LIBC or ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except OSError:
        pass


def _status(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def rss_growth(fn) -> int | None:
    """Peak resident-set growth over one call of ``fn`` (Linux), after a warm call."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    _trim()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _status("VmRSS")
    fn()
    peak = _status("VmHWM")
    return None if before is None or peak is None else max(peak - before, 0)


def torch_gpu_peak(fn) -> int | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    return int(torch.cuda.max_memory_allocated() - base)


def measure_memory(name, impl, mode, gpu: bool) -> dict:
    fn = impl.train if mode == "train" else impl.infer
    record = {"xla_program_bytes": impl.memory(mode)}
    if gpu:
        record["torch_cuda_peak_bytes"] = torch_gpu_peak(fn) if name == "torch" else None
    else:
        record["rss_growth_bytes"] = rss_growth(fn)
    return record


# ------------------------------------------------------------------------ peak


def matmul_peak(n: int, repeats: int = 10) -> dict:
    """GFLOP/s of an ``n x n`` float32 matmul in JAX and in PyTorch (best of repeats)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(a, b))
    best = min(_time_calls(lambda: jax.block_until_ready(mm(a, b)), 1) for _ in range(repeats))
    out = {"n": n, "jax_gflops": 2 * n**3 / best / 1e9}
    try:
        import torch

        gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
        dev = "cuda" if gpu else "cpu"
        ta, tb = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
        sync = torch.cuda.synchronize if gpu else (lambda: None)
        torch.mm(ta, tb)
        sync()

        def call():
            torch.mm(ta, tb)
            sync()

        best_t = min(_time_calls(call, 1) for _ in range(repeats))
        out["torch_gflops"] = 2 * n**3 / best_t / 1e9
    except ImportError:
        out["torch_gflops"] = None
    out["peak_gflops"] = max(v for k, v in out.items() if k.endswith("gflops") and v)
    return out


# ------------------------------------------------------------------------ environment


def environment() -> dict:
    import jax

    from rnnjax import lab

    env = lab.environment()
    try:
        import equinox

        env["versions"]["equinox"] = equinox.__version__
    except ImportError:
        env["versions"]["equinox"] = None
    env.update(peers.torch_info())
    # What JAX (and jax.experimental.rnn's cuDNN LSTM) runs on a GPU: its CUDA plugin
    # and the cuDNN it loads, apart from PyTorch's own (torch_info).
    from importlib import metadata

    cuda = ("jax-cuda12-plugin", "jax-cuda13-plugin", "nvidia-cudnn-cu12", "nvidia-cudnn-cu13")
    for dist in cuda:
        try:
            env["versions"][dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    env["threads"] = {
        k: os.environ.get(k)
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")
    }
    env["allocator"] = allocator()
    env["cpu_flags"] = _cpu_flags()
    env["machine"] = platform.machine()
    if jax.default_backend() == "gpu":
        env["gpu"] = _nvidia_smi()
    return env


ALLOCATOR_VARIABLES = ("GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_")
ALLOCATOR_VARIABLES += ("MALLOC_MMAP_THRESHOLD_", "MALLOC_CONF", "TCMALLOC_RELEASE_RATE")


def allocator() -> dict:
    """The C library and the allocator settings the process started with.

    On a CPU they move every backend's step time: with glibc's defaults, a step's large
    temporaries come back as fresh pages each call, and touching them costs page
    faults (benchmarks/README.md, "The allocator")."""
    libc, version = platform.libc_ver()
    return {
        "libc": f"{libc} {version}".strip() or None,
        **{k: os.environ[k] for k in ALLOCATOR_VARIABLES if k in os.environ},
        **({"mallopt": dict(lab.KEPT)} if lab.KEPT else {}),
    }


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if re.match(r"(avx|fma|sse4|amx|f16c)", f))
    except OSError:
        pass
    return []


def _nvidia_smi() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ------------------------------------------------------------------------ main


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="small,medium,large", help=f"from {sorted(CONFIGS)}")
    p.add_argument(
        "--cells",
        default=",".join(catalogue.names()),
        help=f"cells of the catalogue (default: every one), from {list(catalogue.names())}",
    )
    p.add_argument("--backends", default=",".join(peers.BACKENDS))
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--min_sample", type=float, default=0.2, help="seconds per timed sample")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--precision",
        default="float32",
        choices=sorted(PRECISIONS),
        help="float32 matmuls on a GPU: true float32 (every backend) or TF32",
    )
    p.add_argument(
        "--atol", type=float, default=None, help="gate: outputs vs float64 (1e-5; TF32 2e-2)"
    )
    p.add_argument(
        "--grad_rtol", type=float, default=None, help="gate: grads vs float64 (1e-4; TF32 2e-2)"
    )
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--sweep_lengths", default="1000,3000,10000")
    p.add_argument("--peak_n", type=int, default=0, help="matmul size (0: 2048 CPU, 8192 GPU)")
    p.add_argument("--gate_only", action="store_true", help="check the backends, time nothing")
    p.add_argument(
        "--host_devices",
        type=int,
        default=0,
        help="CPU: force this many host devices (for the rnnjax-devices variant; 0: JAX's "
        "own count); set before JAX starts, so only in a fresh process",
    )
    p.add_argument(
        "--keep_freed_memory",
        action="store_true",
        help="glibc: keep freed memory in the process for every backend (one malloc "
        "arena, mmap and trim thresholds 1 GiB; benchmarks/README.md, 'The allocator')",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/benchmarks")
    args = p.parse_args(argv)
    if args.host_devices < 0:
        p.error(f"--host_devices must be >= 0; got {args.host_devices}")
    args.configs = _names(args.configs, CONFIGS, "--configs")
    args.cells = _names(args.cells, catalogue.names(), "--cells")
    args.backends = _names(args.backends, peers.BACKENDS + peers.VARIANTS, "--backends")
    args.modes = _names(args.modes, ("train", "infer"), "--modes")
    args.sweep_lengths = [int(t) for t in args.sweep_lengths.split(",") if t]
    atol, grad_rtol = GATE_TOLERANCES[args.precision]
    args.atol = atol if args.atol is None else args.atol
    args.grad_rtol = grad_rtol if args.grad_rtol is None else args.grad_rtol
    if args.rounds < 2:
        p.error(f"--rounds must be >= 2 for an interquartile range; got {args.rounds}")
    return args


def _names(text: str, allowed, flag: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise SystemExit(f"{flag} must be names from {sorted(allowed)}; got {text!r}")
    return names


def force_host_devices(count: int) -> None:
    """Make JAX's CPU backend show ``count`` devices (``XLA_FLAGS``), before JAX starts;
    ``0``: JAX's own count (:func:`rnnjax.lab.use_host_devices` does the work).

    Raises:
      SystemExit: JAX has already started in this process with another count.
    """
    if count:
        lab.use_host_devices(count)


def main(argv=None) -> int:
    args = parse(argv)
    force_host_devices(args.host_devices)
    if args.keep_freed_memory:  # before JAX and PyTorch start their threads
        keep_freed_memory()
    import jax

    gpu = jax.default_backend() == "gpu"
    set_precision(args.precision)
    rng = np.random.default_rng(args.seed)
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    env = environment()
    peak = None
    if not args.gate_only:
        peak = matmul_peak(args.peak_n or (8192 if gpu else 2048))
        print(f"matmul peak: {peak['peak_gflops']:.1f} GFLOP/s ({peak})", flush=True)
    rows, skipped, gates, failed, sweep = [], {}, [], False, []
    record = {
        "command": command.strip(),
        "args": vars(args),
        "environment": env,
        "matmul_peak": peak,
        "complete": False,
        "gates": gates,
        "skipped": skipped,
        "rows": rows,
        "sweep": sweep,
        "targets": {
            "train_speedup_over_best_peer": TARGET_TRAIN,
            "large_fraction_of_peak": TARGET_PEAK,
            "gpu_lstm_within_cudnn": TARGET_GPU_CUDNN,
            "gpu_lstm_speedup_over_flax": TARGET_GPU_FLAX,
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for config in args.configs:
        batch, steps, inputs, hidden = CONFIGS[config]
        for cell in args.cells:
            checked = gate_cell(
                cell,
                CONFIGS[config],
                backends=args.backends,
                atol=args.atol,
                grad_rtol=args.grad_rtol,
                seed=args.seed,
            )
            report = checked.backends
            skipped.update({f"{name}/{cell}": why for name, why in checked.skipped.items()})
            gates.append({"config": config, "cell": cell, "backends": report})
            for name, r in report.items():
                mark = "ok" if r["ok"] else "FAILED"
                detail = r.get("error") or (
                    f"output {r['max_abs_output_error']:.1e}, grads {r['max_rel_grad_error']:.1e}"
                )
                print(f"gate {config}/{cell} {name}: {mark} ({detail})", flush=True)
            failed |= not all(r["ok"] for r in report.values())
            passing = checked.impls
            if args.gate_only:
                continue
            for mode in args.modes:
                fns = {n: (i.train if mode == "train" else i.infer) for n, i in passing.items()}
                times = time_interleaved(
                    fns,
                    rounds=args.rounds,
                    min_sample=args.min_sample,
                    warmup=args.warmup,
                    rng=rng,
                )
                flops = flops_per_call(cell, mode, batch, steps, inputs, hidden)
                for name, t in times.items():
                    # The gate ran first: where the backend recorded its own first call
                    # (compile included), that is the number, not the harness's.
                    first = passing[name].first_call_s.get(mode)
                    if first is not None:
                        t["compile_and_first_call_s"] = first
                    t["tokens_per_s"] = batch * steps / t["median_s"]
                    t["gflops"] = flops / t["median_s"] / 1e9
                    t["fraction_of_peak"] = t["gflops"] / peak["peak_gflops"]
                    t["memory"] = measure_memory(name, passing[name], mode, gpu)
                row = {
                    "config": config,
                    "shape": {"batch": batch, "steps": steps, "inputs": inputs, "hidden": hidden},
                    "cell": cell,
                    "mode": mode,
                    "flops_per_call": flops,
                    "least_matmul_flops": least_flops_per_call(
                        cell, mode, batch, steps, inputs, hidden
                    ),
                    "times": times,
                    "speedup": speedups(times),
                }
                rows.append(row)
                print(_row_summary(row), flush=True)
            _save(record, out)  # after every cell: an interrupted run keeps what it timed
    if args.sweep and not args.gate_only:
        sweep += memory_sweep(args, gpu)
    record["complete"] = True
    record["environment"]["load_average_end"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    _save(record, out)
    if not args.gate_only:
        import report

        report.write(record, out)
        print((out / "benchmark.md").read_text())
    print(f"Wrote {out}")
    if failed:
        print("Some backends failed the correctness gate (see above).", file=sys.stderr)
    return 1 if failed else 0


def _save(record: dict, out: Path) -> None:
    """Write ``benchmark.json`` atomically (``complete`` says whether the run finished)."""
    tmp = out / "benchmark.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out / "benchmark.json")


def _row_summary(row) -> str:
    parts = []
    for name, t in sorted(row["times"].items(), key=lambda kv: kv[1]["median_s"]):
        parts.append(f"{name} {t['median_s'] * 1e3:.1f} ms")
    return f"{row['config']}/{row['cell']}/{row['mode']}: " + ", ".join(parts)


def memory_sweep(args, gpu: bool) -> list[dict]:
    """Memory of the LSTM training step for each of ``--sweep_lengths``."""
    batch, inputs, hidden = SWEEP_SHAPE
    out = []
    for steps in args.sweep_lengths:
        w, x, y = problem("lstm", (batch, steps, inputs, hidden), args.seed)
        point = {"steps": steps, "batch": batch, "inputs": inputs, "hidden": hidden, "backends": {}}
        for backend in args.backends:
            for name, impl in peers.build(backend, "lstm", w, x, y).items():
                if isinstance(impl, Exception):  # skipped or broken: the gate said which
                    continue
                impl.train()  # compile and warm up
                point["backends"][name] = measure_memory(name, impl, "train", gpu)
                del impl
                _trim()
        print(f"sweep T={steps}: {point['backends']}", flush=True)
        out.append(point)
    return out


if __name__ == "__main__":
    sys.exit(main())
