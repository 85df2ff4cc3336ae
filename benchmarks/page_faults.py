"""Page faults per training step on a CPU, against the size of XLA's temporaries.

    python benchmarks/page_faults.py --out results/page-faults/default
    python benchmarks/page_faults.py --keep_freed_memory --out results/page-faults/kept

For each benchmark size and cell, rnnjax's training step (the benchmark's loss, as
``run.py`` times it) is compiled; XLA's ``temp_size_in_bytes`` is read from its
``memory_analysis()``; after ``--warmup`` calls, the process's minor page faults
(``getrusage``) and the wall time are counted over ``--calls`` calls.

XLA:CPU allocates a step's temporaries as one block per call. glibc serves a block
above its mmap threshold (which it raises by itself only up to 32 MiB) with fresh pages
each time, so every page of it faults on every call; a block above 64 MiB from a
thread's own arena, always. ``--keep_freed_memory`` (``lab.keep_freed_memory``) sets
one malloc arena and glibc's mmap and trim thresholds to 1 GiB with ``mallopt`` before
JAX starts, so freed blocks stay in the process and are reused (the resident set then
stays at its peak). Writes ``page_faults.json`` (with the environment) and
``page_faults.md``. Linux with glibc only.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import run  # the benchmark's sizes, the allocator record

from rnnjax import cells as catalogue

SIZES = {k: run.CONFIGS[k] for k in ("small", "medium", "large")}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(cell_name: str, size: str, calls: int, warmup: int) -> dict:
    import jax
    import jax.numpy as jnp

    import rnnjax

    B, T, I, H = SIZES[size]
    cell = catalogue.make_cell(cell_name, H)
    params = cell.init(jax.random.key(0), I)
    x = jax.random.normal(jax.random.key(1), (B, T, I))
    y = jax.random.normal(jax.random.key(2), (B, T, H))

    def loss(p, x, y):
        return 0.5 * jnp.mean((rnnjax.scan(cell, p, x)[1] - y) ** 2)

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, x, y).compile()
    analysis = compiled.memory_analysis()
    for _ in range(warmup):
        jax.block_until_ready(compiled(params, x, y))
    times = []
    before = _faults()
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, x, y))
        times.append(time.perf_counter() - t0)
    faults = (_faults() - before) / calls
    return {
        "size": size,
        "cell": cell_name,
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "faults_per_call": faults,
        "faulted_bytes_per_call": faults * resource.getpagesize(),
        "median_ms": float(np.median(times)) * 1e3,
    }


def markdown(record: dict) -> str:
    env = record["environment"]
    from report import allocator_text

    lines = [
        "# Page faults per training step",
        "",
        f"Command: `{record['command']}`, {env['date_utc']}; {env['cpu']} "
        f"({env['cpu_count']} cores), jax {env['versions']['jax']}, commit "
        f"{str(env['git_commit'])[:10]}{' (with uncommitted edits)' if env['git_dirty'] else ''}.",
        f"Allocator: {allocator_text(record['allocator'])}.",
        f"Minor page faults and wall time over {record['calls']} calls after "
        f"{record['warmup']} warm-up calls; XLA's temporaries from `memory_analysis()`.",
        "",
        "| size | cell | XLA temporaries MiB | page faults per call | faulted MiB per call "
        "| median ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['size']} | {r['cell']} | {r['temp_bytes'] / 2**20:.1f} | "
            f"{r['faults_per_call']:,.1f} | {r['faulted_bytes_per_call'] / 2**20:.1f} | "
            f"{r['median_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument(
        "--cells",
        default=",".join(catalogue.names()),
        help=f"cells of the catalogue (default: every one), from {list(catalogue.names())}",
    )
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--keep_freed_memory", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results/page-faults"))
    args = parser.parse_args(argv)
    sizes, cells = args.sizes.split(","), args.cells.split(",")
    allowed_cells = catalogue.names()
    for name, values, allowed in (("--sizes", sizes, SIZES), ("--cells", cells, allowed_cells)):
        if bad := [v for v in values if v not in allowed]:
            parser.error(f"{name} must be names from {sorted(allowed)}; got {bad}")
    for name in ("calls", "warmup"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    if not Path("/proc/self/status").exists():
        parser.error("page faults are counted on Linux only")

    if args.keep_freed_memory:  # before JAX starts its threads
        run.keep_freed_memory()
    allocator = run.allocator()

    record = {
        "command": "python benchmarks/page_faults.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "calls": args.calls,
        "warmup": args.warmup,
        "allocator": allocator,
        "rows": [],
    }
    for size in sizes:
        for cell in cells:
            row = measure(cell, size, args.calls, args.warmup)
            record["rows"].append(row)
            print(
                f"{size} {cell}: temporaries {row['temp_bytes'] / 2**20:.1f} MiB, "
                f"{row['faults_per_call']:,.1f} faults per call, {row['median_ms']:.2f} ms",
                flush=True,
            )
    record["environment"] = run.lab.environment()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "page_faults.json").write_text(json.dumps(record, indent=2))
    (args.out / "page_faults.md").write_text(markdown(record))
    print(f"Wrote {args.out / 'page_faults.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
