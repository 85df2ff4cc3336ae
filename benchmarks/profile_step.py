"""Where one benchmark step's time goes: XLA's operations under ``jax.profiler``.

    python benchmarks/profile_step.py --config small --cell lstm --mode infer
    python benchmarks/profile_step.py --config medium --cell gru --mode train \\
        --backends rnnjax,rnnjax-unroll --keep_freed_memory --out results/profile/medium-gru

Builds the step exactly as ``run.py`` times it (``peers.build``: the same weights,
inputs, loss and jit), calls it ``--warmup`` times, then traces ``--calls`` calls with
``jax.profiler`` and adds up the trace's events by name: how many times each ran per
call, its milliseconds per call and microseconds per run. Inside the time loop an
operation runs once per step, so a row with ``T`` runs per call is the loop body's.
Events nest (a loop's span holds its body's operations), so rows do not add up.

On a CPU, XLA's runtime reports its operations to the profiler only with
``--xla_cpu_enable_xprof_traceme=true`` in ``XLA_FLAGS``; this script adds it before
JAX starts. On a GPU the trace holds the kernels (the device's rows) as well as the
host's. The profiler adds its own cost to every event: read the shares, and time with
``run.py``. Only JAX backends (rnnjax and its variants, Flax, Equinox): PyTorch's
operations do not reach JAX's profiler. Writes ``profile.json`` (every row, the
environment) and ``profile.md``.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import run  # the benchmark's sizes, data, environment and allocator record

from rnnjax import cells as catalogue

CPU_TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"
JAX_BACKENDS = ("rnnjax", "flax", "equinox", "cudnn") + run.peers.VARIANTS


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="small", help=f"one of {sorted(run.CONFIGS)}")
    p.add_argument("--cell", default="lstm", help=f"one of {list(catalogue.names())}")
    p.add_argument("--mode", default="train", choices=("train", "infer"))
    p.add_argument("--backends", default="rnnjax", help=f"from {list(JAX_BACKENDS)}")
    p.add_argument("--calls", type=int, default=5, help="traced calls")
    p.add_argument("--warmup", type=int, default=2, help="untraced calls first")
    p.add_argument("--top", type=int, default=25, help="rows per backend in the table")
    p.add_argument("--keep_freed_memory", action="store_true", help="as in run.py")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/profile"))
    args = p.parse_args(argv)
    if args.config not in run.CONFIGS:
        p.error(f"--config must be one of {sorted(run.CONFIGS)}; got {args.config!r}")
    if args.cell not in catalogue.names():
        p.error(f"--cell must be one of {list(catalogue.names())}; got {args.cell!r}")
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if bad := [b for b in args.backends if b not in JAX_BACKENDS]:
        p.error(f"--backends must be JAX backends from {list(JAX_BACKENDS)}; got {bad}")
    for name in ("calls", "warmup", "top"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    return args


def enable_cpu_trace() -> None:
    """Add XLA:CPU's profiler flag to ``XLA_FLAGS``, which XLA reads when JAX starts its
    backend: an error once it has (the trace would hold no CPU operations)."""
    if "jax" in sys.modules:
        from jax._src import xla_bridge

        started = getattr(xla_bridge, "backends_are_initialized", lambda: False)()
        if started and CPU_TRACE_FLAG not in os.environ.get("XLA_FLAGS", "").split():
            raise RuntimeError(
                f"JAX has started without {CPU_TRACE_FLAG} in XLA_FLAGS; run "
                "benchmarks/profile_step.py in a fresh process"
            )
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_TRACE_FLAG not in flags.split():
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_TRACE_FLAG}".strip()


def summarize(trace: dict, calls: int) -> list[dict]:
    """The trace's complete events (``"ph": "X"``) added up by process and name, per
    call, largest first. Python frames (``$``-prefixed names) and XLA:CPU's
    completion markers (``end: ...``) are left out."""
    processes = {
        e["pid"]: e.get("args", {}).get("name", str(e["pid"]))
        for e in trace.get("traceEvents", [])
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    total = collections.defaultdict(lambda: [0, 0.0])
    for e in trace.get("traceEvents", []):
        if e.get("ph") != "X" or e["name"].startswith(("$", "end: ")):
            continue
        key = (processes.get(e.get("pid"), str(e.get("pid"))), e["name"])
        total[key][0] += 1
        total[key][1] += float(e.get("dur", 0.0))
    rows = [
        {
            "process": process,
            "name": name,
            "runs_per_call": count / calls,
            "ms_per_call": dur_us / calls / 1e3,
            "us_per_run": dur_us / count,
        }
        for (process, name), (count, dur_us) in total.items()
    ]
    return sorted(rows, key=lambda r: -r["ms_per_call"])


def read_trace(log_dir: Path) -> dict:
    found = sorted(log_dir.rglob("*.trace.json.gz"))
    if not found:
        raise RuntimeError(f"jax.profiler wrote no perfetto trace under {log_dir}")
    with gzip.open(found[-1], "rt") as f:
        return json.load(f)


def profile(fn, calls: int, warmup: int) -> tuple[list[dict], float]:
    """``(rows, wall ms per call)`` of ``fn()`` (a benchmark step that waits for its
    result), ``calls`` traced calls after ``warmup`` untraced ones."""
    import jax

    for _ in range(warmup):
        fn()
    with tempfile.TemporaryDirectory(prefix="rnnjax-profile-") as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            wall = (time.perf_counter() - t0) / calls
        trace = read_trace(Path(tmp))
    return summarize(trace, calls), wall * 1e3


def markdown(record: dict, top: int) -> str:
    env = record["environment"]
    from report import allocator_text

    device = env.get("gpu") or f"{env['cpu']} ({env['cpu_count']} cores)"
    B, T, I, H = record["shape"]
    lines = [
        f"# Where the time goes: {record['cell']} {record['mode']}, {record['config']} "
        f"(B={B}, T={T}, I={I}, H={H})",
        "",
        f"Command: `{record['command']}`, {env['date_utc']}.",
        f"Machine: {device}, JAX backend {env['backend']}; jax {env['versions']['jax']}; "
        f"commit {str(env['git_commit'])[:10]}"
        f"{' (with uncommitted edits)' if env['git_dirty'] else ''}.",
        f"Allocator: {allocator_text(record['allocator'])}.",
        f"{record['calls']} traced calls after {record['warmup']} untraced; the profiler's "
        "own cost is in every number. An operation of the time loop runs T times per call. "
        "Events nest (a loop holds its body's operations, an executor's span what it "
        "runs), so the rows do not add up to the call.",
    ]
    for name, b in record["backends"].items():
        lines += [
            "",
            f"## {name}: {b['wall_ms_per_call']:.2f} ms per traced call",
            "",
            "| where | operation | runs per call | ms per call | us per run |",
            "|---|---|---|---|---|",
        ]
        for r in b["rows"][:top]:
            lines.append(
                f"| {r['process']} | `{r['name'][:60]}` | {r['runs_per_call']:g} | "
                f"{r['ms_per_call']:.3f} | {r['us_per_run']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse(argv)
    if args.keep_freed_memory:  # before JAX starts its threads
        run.keep_freed_memory()
    enable_cpu_trace()
    allocator = run.allocator()

    shape = run.CONFIGS[args.config]
    w, x, y = run.problem(args.cell, shape, args.seed)
    record = {
        "command": "python benchmarks/profile_step.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "config": args.config,
        "shape": list(shape),
        "cell": args.cell,
        "mode": args.mode,
        "calls": args.calls,
        "warmup": args.warmup,
        "allocator": allocator,
        "backends": {},
        "skipped": {},
    }
    for backend in args.backends:
        for name, impl in run.peers.build(backend, args.cell, w, x, y).items():
            if isinstance(impl, Exception):
                record["skipped"][name] = f"{type(impl).__name__}: {impl}"
                print(f"{name}: skipped ({impl})", flush=True)
                continue
            rows, wall = profile(getattr(impl, args.mode), args.calls, args.warmup)
            record["backends"][name] = {"wall_ms_per_call": wall, "rows": rows}
            print(f"{name}: {wall:.2f} ms per traced call, {len(rows)} operations", flush=True)
    if not record["backends"]:
        print("nothing profiled: every backend was skipped", file=sys.stderr)
        return 1
    record["environment"] = run.environment()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(record, indent=2))
    (args.out / "profile.md").write_text(markdown(record, args.top))
    print(f"Wrote {args.out / 'profile.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
