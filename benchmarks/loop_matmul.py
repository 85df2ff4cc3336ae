"""How fast XLA runs the recurrent matmul of one step inside a loop, against the peak.

    python benchmarks/loop_matmul.py

For each benchmark size, the step's recurrent matmul ``h @ W_h`` (``[B, H] x [H, 4H]``,
the LSTM's) runs ``T`` times inside ``lax.scan``, as in rnnjax's loop; it is timed
(median of 9 samples of at least 0.2 s, compile excluded) and turned into GFLOP/s,
beside a large matmul's rate (the machine's peak as JAX reaches it). On a CPU the
ratio shows how many cores one step's matmul occupies: XLA runs a small one on one
core, whatever the machine has, which is why splitting the batch over host devices
(``--host_devices`` in ``run.py``) speeds up the small sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

SIZES = {"small": (32, 256, 128), "medium": (64, 128, 256), "large": (64, 100, 512)}


def _median_s(fn, *args) -> float:
    jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(9):
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.2:
            jax.block_until_ready(fn(*args))
            calls += 1
        samples.append((time.perf_counter() - t0) / calls)
    return float(np.median(samples))


def _loop(w, h0, steps: int):
    """``steps`` recurrent matmuls in a row, each fed the last (``tanh`` of its first
    ``H`` columns, the LSTM step's matmul without its gates)."""
    hidden = h0.shape[-1]

    def body(h, _):
        return jnp.tanh((h @ w)[:, :hidden]), None

    return jax.lax.scan(body, h0, None, length=steps)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--peak_n", type=int, default=2048)
    args = p.parse_args()
    keys = jax.random.split(jax.random.key(0), 3)
    a = jax.random.normal(keys[0], (args.peak_n, args.peak_n))
    peak = 2 * args.peak_n**3 / _median_s(jax.jit(jnp.matmul), a, a) / 1e9
    rows = {"peak_gflops": peak, "backend": jax.default_backend(), "cpus": os.cpu_count()}
    print(f"{args.peak_n}x{args.peak_n} matmul: {peak:.1f} GFLOP/s ({jax.devices()[0]})")
    for name, (batch, steps, hidden) in SIZES.items():
        w = jax.random.normal(keys[1], (hidden, 4 * hidden)) / np.sqrt(hidden)
        h0 = jax.random.normal(keys[2], (batch, hidden))

        per_step = _median_s(jax.jit(_loop, static_argnums=2), w, h0, steps) / steps
        gflops = 2 * batch * hidden * 4 * hidden / per_step / 1e9
        rows[name] = {"shape": [batch, hidden, 4 * hidden], "us_per_step": per_step * 1e6}
        rows[name]["gflops"] = gflops
        print(
            f"{name}: [{batch}, {hidden}] x [{hidden}, {4 * hidden}] in a loop of {steps}: "
            f"{per_step * 1e6:.1f} us per step, {gflops:.1f} GFLOP/s, "
            f"{100 * gflops / peak:.0f}% of the large matmul's rate"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
