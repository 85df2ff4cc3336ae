"""A first measurement of a persistent Pallas time loop on a GPU (issue 22's question).

    python benchmarks/pallas_probe.py --out OUT          # on a GPU (Triton lowering)
    python benchmarks/pallas_probe.py --interpret        # anywhere: correctness only

One kernel per cell (Elman tanh, LSTM, GRU as PyTorch/rnnjax define them) runs the
whole forward loop over time: a grid over batch tiles of ``bt`` rows, each program
holding its rows' state and looping over ``T`` inside the kernel, reading the hoisted
input projection ``xp [G, T, B, H]`` (one array per gate) and the recurrent weights
``w_h [G, H, H]``. Batch rows are independent, so programs never synchronise. Two
variants of where the weights live: ``once`` loads ``w_h`` before the loop (the
compiler keeps it in registers or spills it), ``per_step`` reads it from global memory
(L2-resident) at every step.

This is a probe, not the library's kernel: forward only, no lengths or reverse, float32
matmuls in IEEE precision (no TF32, as the benchmark's float32 rows). It checks each
kernel against ``rnnjax.scan`` on the same weights and, on a GPU, times it (median of
interleaved rounds) beside ``rnnjax.scan`` (jit, inference) and PyTorch's cuDNN module.
Writes ``OUT/pallas_probe.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

import rnnjax

# The probe's own kernels, written per cell (a probe, not the library's kernel): the
# catalogue names them; the gate counts are these kernels' layouts.
GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}
HIGHEST = jax.lax.Precision.HIGHEST


def _dot(h, w):
    return jnp.dot(h, w, precision=HIGHEST, preferred_element_type=jnp.float32)


def _kernel(cell, steps, weights, xp_ref, w_ref, bhn_ref, h0_ref, c0_ref, ys_ref, hT_ref, cT_ref):
    g = GATES[cell]
    once = weights == "once"
    w_all = [w_ref[k] for k in range(g)] if once else None

    def w(k):
        return w_all[k] if once else w_ref[k]

    def body(t, state):
        h, c = state
        z = [xp_ref[k, t] + _dot(h, w(k)) for k in range(g)]
        if cell == "rnn_tanh":
            h = jnp.tanh(z[0])
        elif cell == "lstm":
            i, f, gg, o = z
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
        else:  # gru: z[2] already holds x W_xn + b_xn; the recurrent part is gated by r
            r = jax.nn.sigmoid(z[0])
            u = jax.nn.sigmoid(z[1])
            n = jnp.tanh(xp_ref[2, t] + r * (_dot(h, w(2)) + bhn_ref[...]))
            h = (1.0 - u) * n + u * h
        ys_ref[t] = h
        return h, c

    h, c = jax.lax.fori_loop(0, steps, body, (h0_ref[...], c0_ref[...]))
    hT_ref[...] = h
    cT_ref[...] = c


@functools.partial(jax.jit, static_argnames=("cell", "bt", "weights", "interpret", "num_warps"))
def pallas_forward(cell, xp, w, bhn, h0, c0, *, bt, weights="once", interpret=False, num_warps=4):
    """``ys [T, B, H], h_T, c_T`` of ``cell`` over the hoisted projection ``xp [G, T, B, H]``
    (biases folded in; for the GRU, ``bhn [1, H]`` is the new gate's recurrent bias)."""
    g, steps, batch, hidden = xp.shape
    kernel = functools.partial(_kernel, cell, steps, weights)
    tile = lambda i: (i, 0)  # noqa: E731
    params = {}
    if not interpret:
        from jax.experimental.pallas import triton as plt

        params["compiler_params"] = plt.CompilerParams(num_warps=num_warps, num_stages=1)
    return pl.pallas_call(
        kernel,
        grid=(batch // bt,),
        in_specs=[
            pl.BlockSpec((g, steps, bt, hidden), lambda i: (0, 0, i, 0)),
            pl.BlockSpec((g, hidden, hidden), lambda i: (0, 0, 0)),
            pl.BlockSpec((1, hidden), lambda i: (0, 0)),
            pl.BlockSpec((bt, hidden), tile),
            pl.BlockSpec((bt, hidden), tile),
        ],
        out_specs=[
            pl.BlockSpec((steps, bt, hidden), lambda i: (0, i, 0)),
            pl.BlockSpec((bt, hidden), tile),
            pl.BlockSpec((bt, hidden), tile),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((steps, batch, hidden), xp.dtype),
            jax.ShapeDtypeStruct((batch, hidden), xp.dtype),
            jax.ShapeDtypeStruct((batch, hidden), xp.dtype),
        ],
        interpret=interpret,
        **params,
    )(xp, w, bhn, h0, c0)


def problem(cell, batch, steps, inputs, hidden, seed=0):
    """rnnjax params for ``cell`` and inputs ``x [B, T, I]``, plus the kernel's operands."""
    core = rnnjax.make_cell(cell, hidden)
    key = jax.random.key(seed)
    params = core.init(key, inputs)
    params = jax.tree.map(
        lambda a: a + 0.1 * jax.random.normal(jax.random.fold_in(key, a.size), a.shape), params
    )
    x = jax.random.normal(jax.random.key(seed + 1), (batch, steps, inputs))
    g = GATES[cell]
    x_tm = jnp.moveaxis(x, 1, 0)
    xp = jnp.einsum("tbi,ih->tbh", x_tm, params.w_x, precision=HIGHEST)
    if cell == "gru":
        xp = xp + params.b_x
        b_h = params.b_h.reshape(g, hidden)
        bhn = b_h[2][None]
        b_h = b_h.at[2].set(0.0)
        xp = xp + b_h.reshape(-1)
    else:
        xp = xp + params.b
        bhn = jnp.zeros((1, hidden))
    xp = jnp.stack(jnp.split(xp, g, axis=-1))  # [G, T, B, H]
    w = jnp.stack(jnp.split(params.w_h, g, axis=-1))  # [G, H, H]
    h0 = jnp.zeros((batch, hidden))
    return core, params, x, (xp, w, bhn, h0, h0)


def check(cell, shape, bt, weights, interpret):
    core, params, x, ops = problem(cell, *shape)
    ys, h_t, c_t = pallas_forward(cell, *ops, bt=bt, weights=weights, interpret=interpret)
    with jax.default_matmul_precision("highest"):
        carry, ref = rnnjax.scan(core, params, x)
    ref_h = carry.h if cell == "lstm" else carry
    err = float(jnp.max(jnp.abs(jnp.moveaxis(ys, 0, 1) - ref)))
    err = max(err, float(jnp.max(jnp.abs(h_t - ref_h))))
    if cell == "lstm":
        err = max(err, float(jnp.max(jnp.abs(c_t - carry.c))))
    return err


def _median_time(fn, rounds, min_s=0.02):
    fn()
    n, t0 = 1, time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    n = max(1, int(min_s / one))
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n)
    return float(np.median(samples)), samples


def timings(cell, shape, bt, rounds):
    core, params, x, ops = problem(cell, *shape)
    out = {}

    scan_fn = jax.jit(lambda p, x: rnnjax.scan(core, p, x)[1])
    out["rnnjax.scan (XLA while loop)"] = lambda: scan_fn(params, x).block_until_ready()
    for weights in ("once", "per_step"):
        for warps in (4, 8):
            name = f"pallas ({weights}, bt={bt}, warps={warps})"
            fn = functools.partial(pallas_forward, cell, bt=bt, weights=weights, num_warps=warps)
            out[name] = lambda fn=fn: fn(*ops)[0].block_until_ready()
    # The kernel with the projection in front, as the library would run it.
    try:
        import torch

        batch, steps, inputs, hidden = shape
        mod = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
        m = mod(inputs, hidden, batch_first=True).cuda()
        xt = torch.randn(batch, steps, inputs, device="cuda")
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

        def torch_infer():
            with torch.no_grad():
                m(xt)
            torch.cuda.synchronize()

        out["torch (cuDNN)"] = torch_infer
    except Exception as err:  # noqa: BLE001
        print(f"  torch not timed: {err}")
    results = {}
    names = list(out)
    for name in names:  # compile / first call, failures reported not raised
        try:
            out[name]()
        except Exception as err:  # noqa: BLE001
            print(f"  {name}: FAILED {type(err).__name__}: {str(err)[:300]}")
            results[name] = {"error": f"{type(err).__name__}: {str(err)[:2000]}"}
    live = [n for n in names if n not in results]
    samples = {n: [] for n in live}
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        for n in rng.permutation(live):
            samples[n].append(_median_time(out[n], 1)[0])
    for n in live:
        results[n] = {"median_ms": 1e3 * float(np.median(samples[n])), "samples_s": samples[n]}
    return results


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", default="rnn_tanh,lstm,gru", help="from rnn_tanh, lstm, gru")
    p.add_argument("--shape", default="32,256,32,128", help="B,T,I,H (the benchmark's small)")
    p.add_argument("--bt", type=int, default=16, help="batch rows per program")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--interpret", action="store_true", help="correctness only, any backend")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    unknown = set(args.cells.split(",")) - set(GATES)
    if unknown:
        p.error(f"--cells must be from {sorted(GATES)}; got {sorted(unknown)}")
    if args.bt < 16 or args.bt & (args.bt - 1):
        p.error(f"--bt must be a power of 2 >= 16 (Triton's dot); got {args.bt}")
    return args


def main(argv=None):
    args = parse(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    cells = args.cells.split(",")
    report = {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
        "shape_BTIH": shape,
        "cells": {},
    }
    for cell in cells:
        entry = report["cells"][cell] = {"max_abs_err": {}}
        for weights in ("once", "per_step"):
            try:
                err = check(cell, shape, args.bt, weights, args.interpret)
                entry["max_abs_err"][weights] = err
                print(f"{cell} {weights}: max |pallas - scan| = {err:.2e}", flush=True)
            except Exception as e:  # noqa: BLE001
                entry["max_abs_err"][weights] = f"{type(e).__name__}: {str(e)[:2000]}"
                print(f"{cell} {weights}: FAILED {type(e).__name__}: {str(e)[:400]}", flush=True)
        if not args.interpret and jax.default_backend() == "gpu":
            entry["times"] = timings(cell, shape, args.bt, args.rounds)
            for name, r in entry["times"].items():
                print(f"  {cell:4s} {name:36s} {r.get('median_ms', float('nan')):8.3f} ms")
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            Path(args.out, "pallas_probe.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
