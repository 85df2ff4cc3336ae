"""The training step against sequence length: the associative loop against the
sequential one, for the cells that declare a linear recurrence, and the LSTM at the
same parameter count.

    python benchmarks/lengths.py                                   # T = 1,000 / 10,000 / 100,000
    python benchmarks/lengths.py --lengths 1000,10000 --cells lru,min_gru --out /tmp/len

For each cell and length: one training step (forward over the sequence, loss
``mean(ys^2)``, gradients of every parameter), jit-compiled once (the compile is
timed apart and excluded), then timed ``--rounds`` times, interleaving the loops of a
cell; the median, the time per step (``median / T``), the matmul GFLOP/s by the
catalogue's count (``Entry.matmul_flops``, three times the forward for a training
step) and the bytes of XLA's compiled program (temporaries + arguments + outputs).
Writes ``<out>/lengths.json`` (every sample, the environment, the command) and
``<out>/lengths.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import rnnjax
from rnnjax import lab


def param_count(cell, input_size: int) -> int:
    shapes = jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(0))
    return sum(int(jnp.size(jnp.zeros(a.shape))) for a in jax.tree.leaves(shapes))


def lstm_width_for(params: int, input_size: int) -> int:
    """The LSTM hidden size whose parameter count is closest to ``params``."""
    best, best_gap = 1, None
    for h in range(1, 4097):
        gap = abs(4 * h * (input_size + h + 1) - params)
        if best_gap is None or gap < best_gap:
            best, best_gap = h, gap
    return best


def training_step(cell, loop: str):
    def loss(params, xs):
        return jnp.mean(rnnjax.scan(cell, params, xs, loop=loop)[1] ** 2)

    return jax.jit(jax.value_and_grad(loss))


def measure(cell, loop, batch, steps, inputs, rounds, seed=0):
    params = cell.init(jax.random.key(seed), inputs)
    xs = jax.random.normal(jax.random.key(seed + 1), (batch, steps, inputs))
    step = training_step(cell, loop)
    t0 = time.perf_counter()
    compiled = step.lower(params, xs).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    program = None
    if mem is not None:
        program = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    jax.block_until_ready(compiled(params, xs))  # first call, apart
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, xs))
        samples.append(time.perf_counter() - t0)
    return {"compile_s": compile_s, "samples_s": samples, "program_bytes": program}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    linear = [n for n in rnnjax.cells.names() if rnnjax.make_cell(n, 2).linear is not None]
    p.add_argument("--cells", default=",".join(linear), help=f"from {list(rnnjax.cells.names())}")
    p.add_argument("--lengths", default="1000,10000,100000")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--input_size", type=int, default=16)
    p.add_argument("--hidden_size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--lstm", action=argparse.BooleanOptionalAction, default=True,
                   help="time the LSTM at the same parameter count beside each cell")  # fmt: skip
    p.add_argument("--out", default="results/lengths")
    p.add_argument("--report", action="store_true",
                   help="only rewrite <out>/lengths.md from <out>/lengths.json")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="keep the rows <out>/lengths.json already holds (same arguments) "
                   "and measure only the rest")  # fmt: skip
    args = p.parse_args(argv)
    args.cells = [c for c in args.cells.split(",") if c]
    for c in args.cells:
        if c not in rnnjax.cells.names():
            p.error(f"--cells must be names from {list(rnnjax.cells.names())}; got {c!r}")
    try:
        args.lengths = [int(t) for t in args.lengths.split(",") if t]
    except ValueError:
        p.error(f"--lengths must be integers separated by commas; got {args.lengths!r}")
    for name in ("batch_size", "input_size", "hidden_size", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    if not args.lengths or min(args.lengths) < 1:
        p.error(f"--lengths must be positive; got {args.lengths}")
    return args


def report(record: dict) -> str:
    a, env = record["args"], record["environment"]
    lines = [
        "# The training step against sequence length",
        "",
        f"Command: `{record['command']}`. Machine: {env['cpu']} ({env['backend']}), "
        f"jax {env['versions']['jax']}, commit {str(env['git_commit'])[:10]}, {env['date_utc']}.",
        f"B = {a['batch_size']}, I = {a['input_size']}, H = {a['hidden_size']} (the LSTM's H "
        "chosen for the same parameter count); median of "
        f"{a['rounds']} calls after the first; XLA program = temporaries + arguments + outputs.",
        "",
        "| cell | params | loop | T | median s | us / step | matmul GFLOP/s | XLA program MiB "
        "| compile s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        med = statistics.median(r["samples_s"])
        gflops = r["flops"] / med / 1e9
        mib = "–" if r["program_bytes"] is None else f"{r['program_bytes'] / 2**20:.1f}"
        lines.append(
            f"| {r['cell']} (H={r['hidden']}) | {r['params']} | {r['loop']} | {r['steps']} | "
            f"{med:.4f} | {1e6 * med / r['steps']:.2f} | {gflops:.2f} | {mib} | "
            f"{r['compile_s']:.1f} |"
        )
    lines += ["", "Growth from the shortest to the longest T (median time ratio over T ratio):", ""]
    groups = {}
    for r in record["rows"]:
        groups.setdefault((r["beside"], r["cell"], r["hidden"], r["loop"]), []).append(r)
    for (_, cell, hidden, loop), rs in groups.items():
        if len(rs) > 1:
            lo, hi = min(rs, key=lambda r: r["steps"]), max(rs, key=lambda r: r["steps"])
            ratio = statistics.median(hi["samples_s"]) / statistics.median(lo["samples_s"])
            lines.append(
                f"- {cell} (H={hidden}), {loop}: x{ratio:.1f} time for "
                f"x{hi['steps'] / lo['steps']:g} steps."
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse(argv)
    out = Path(args.out)
    if args.report:
        record = json.loads((out / "lengths.json").read_text())
        (out / "lengths.md").write_text(report(record))
        print(f"Wrote {out / 'lengths.md'}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "python benchmarks/lengths.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "args": {k: v for k, v in vars(args).items()},
        "environment": lab.environment(),
        "rows": [],
    }
    done = {}
    if args.resume and (out / "lengths.json").exists():
        old = json.loads((out / "lengths.json").read_text())

        def measured(a):  # the arguments that decide what a row measures
            return {k: v for k, v in a.items() if k not in ("resume", "report")}

        if measured(old["args"]) != measured(record["args"]):
            raise SystemExit(
                f"--resume: {out / 'lengths.json'} was written with other arguments "
                f"({old['args']}); give another --out or drop --resume."
            )
        done = {(r["beside"], r["cell"], r["loop"], r["steps"]): r for r in old["rows"]}
        print(f"--resume: {len(done)} rows kept from {out / 'lengths.json'}", flush=True)
    I, H, B = args.input_size, args.hidden_size, args.batch_size
    for name in args.cells:
        cell = rnnjax.make_cell(name, H)
        entry = rnnjax.cells.get(name)
        n = param_count(cell, I)
        runs = [(name, cell, H, n, loop) for loop in ("associative", "sequential")]
        if cell.linear is None:
            runs = [(name, cell, H, n, "sequential")]
        if args.lstm and name != "lstm":
            h_lstm = lstm_width_for(n, I)
            lstm = rnnjax.make_cell("lstm", h_lstm)
            runs.append(("lstm", lstm, h_lstm, param_count(lstm, I), "sequential"))
        for steps in args.lengths:
            for cname, c, hidden, count, loop in runs:
                if (name, cname, loop, steps) in done:
                    record["rows"].append(done[(name, cname, loop, steps)])
                    continue
                e = rnnjax.cells.get(cname) if cname != name else entry
                flops = 3 * e.matmul_flops(I, hidden) * B * steps
                print(f"{cname} (H={hidden}) {loop} T={steps} ...", flush=True)
                m = measure(c, loop, B, steps, I, args.rounds)
                row = {"cell": cname, "beside": name, "hidden": hidden, "params": count,
                       "loop": loop, "steps": steps, "flops": flops, **m}  # fmt: skip
                record["rows"].append(row)
                print(f"  median {statistics.median(m['samples_s']):.4f} s", flush=True)
                (out / "lengths.json").write_text(json.dumps(record, indent=1))
    (out / "lengths.md").write_text(report(record))
    print(f"Wrote {out / 'lengths.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
