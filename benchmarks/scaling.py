"""Throughput of data- and seed-parallel training against the number of devices.

    python benchmarks/scaling.py                        # 1, 2, 4, 8 forced host devices
    python benchmarks/scaling.py --devices 1,2 --repeats 30

Each device count runs in its own process (on a CPU the count is forced with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``; on a GPU machine use the real
devices with ``--real``). The workload is the train step of ``experiments/train.py``
(LSTM, adding problem), seeds vmapped, compiled by ``rnnjax.distributed.parallel_step``:

* ``data``: one seed, its global batch split over the devices, its state replicated;
* ``sharded``: as ``data``, with the parameters and optimizer state split too;
* ``seeds``: ``--seeds`` seeds (one or more per device), each with its own batch.

Reported per device count: median step time over ``--repeats`` timed steps after
``--warmup`` untimed ones (compile excluded, ``block_until_ready``), the interquartile
range, sequences/s, and the train state's bytes held by one device. Writes
``<out>/scaling.json`` (with the environment) and ``<out>/scaling.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def worker(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import rnnjax
    from rnnjax import distributed
    from rnnjax import train as tr
    from rnnjax.modules import SequenceModel
    from rnnjax.tasks import make_task

    task = make_task("adding", seq_len=args.seq_len)
    model = SequenceModel(rnnjax.make_layer("lstm", args.hidden_size), 1, head="last")
    opt, sched = tr.make_optimizer("adam", 1e-3, clip_norm=1.0)

    def loss_fn(params, batch, key):
        out = model.apply({"params": params}, batch.inputs, batch.lengths)
        return task.loss(out, batch), {}

    step = tr.vmap_seeds(tr.make_train_step(loss_fn, opt, clip_norm=1.0, schedule=sched))
    ex = task.sample(jax.random.key(0), 2)

    def init(seed):
        params = model.init(jax.random.key(seed), ex.inputs, ex.lengths)["params"]
        return tr.init_state(params, opt, jax.random.key(seed))

    # The devices asked for: forced host devices are exactly that many; with --real,
    # the first --count of the devices JAX sees (all of them were used before).
    mesh = distributed.data_mesh(args.count or None)
    n = mesh.size
    results = {}
    for layout, seeds in (("data", 1), ("sharded", 1), ("seeds", args.seeds)):
        if (layout == "seeds" and seeds % n) or (layout == "sharded" and n == 1):
            continue  # on one device, sharded is data
        state = jax.vmap(init)(jnp.arange(seeds))
        fn = distributed.parallel_step(step, mesh, layout, batch_axis=1) if n > 1 else jax.jit(step)
        if n > 1:
            state = distributed.place_state(state, mesh, layout)
        batch = jax.vmap(lambda k: task.sample(k, args.batch_size))(
            jax.random.split(jax.random.key(1), seeds)
        )
        batch = jax.device_get(batch)
        times = []
        for i in range(args.warmup + args.repeats):
            t0 = time.perf_counter()
            state, metrics = fn(state, batch)
            jax.block_until_ready((state, metrics))
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        t = np.array(times)
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        results[layout] = {
            "seeds": seeds,
            "median_s": float(med),
            "iqr_s": [float(q1), float(q3)],
            "min_s": float(t.min()),
            "sequences_per_s": seeds * args.batch_size / float(med),
            "state_bytes_per_device": sum(
                x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(state)
            ),
        }
    return {"devices": n, "platform": jax.devices()[0].platform, "results": results}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--real", action="store_true", help="use the real devices (GPU/TPU)")
    parser.add_argument("--seq_len", type=int, default=100)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="results/scaling")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from rnnjax import lab

    counts = [int(c) for c in args.devices.split(",")]
    rows = []
    for n in counts:
        env = dict(os.environ)
        if not args.real:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
            env["JAX_PLATFORMS"] = "cpu"
        cmd = [sys.executable, __file__, "--worker", f"--count={n}"] + [
            f"--{k}={v}"
            for k, v in vars(args).items()
            if k not in ("devices", "real", "out", "worker", "count")
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if out.returncode:
            raise SystemExit(f"{n} devices failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows[-1]["xla_flags"] = env.get("XLA_FLAGS", "")  # the worker's, not this process's
        print(f"{n} device(s): {rows[-1]['results']}", flush=True)

    env = lab.environment()
    base = {layout: rows[0]["results"][layout]["median_s"] for layout in rows[0]["results"]}
    base["sharded"] = base["data"]  # one device holds everything either way
    lines = [
        "| devices | layout | seeds x batch | median step (IQR) | sequences/s | speed-up vs 1 "
        "| state per device |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for layout, r in row["results"].items():
            q1, q3 = (x * 1e3 for x in r["iqr_s"])
            lines.append(
                f"| {row['devices']} | {layout} | {r['seeds']} x {args.batch_size} | "
                f"{r['median_s'] * 1e3:.1f} ms ({q1:.1f}-{q3:.1f}) | "
                f"{r['sequences_per_s']:.0f} | {base[layout] / r['median_s']:.2f}x | "
                f"{r['state_bytes_per_device'] / 1024:.0f} KiB |"
            )
    command = "python benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            "# Scaling with the number of devices",
            "",
            f"Command: `{command.strip()}`. LSTM H={args.hidden_size} on the adding problem, "
            f"T={args.seq_len}, train step (forward, loss, backward, Adam update); "
            f"{args.repeats} timed steps after {args.warmup} untimed.",
            "",
            *lines,
            "",
            f"Machine: {env['cpu']} ({env['cpu_count']} cores), "
            f"{'real devices' if args.real else 'forced host devices sharing those cores'}, "
            f"jax {env['versions']['jax']}, {env['date_utc']}, commit {str(env['git_commit'])[:10]}"
            f"{' (with uncommitted edits)' if env.get('git_dirty') else ''}.",
            "",
        ]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(
        json.dumps({"config": vars(args), "rows": rows, "environment": env}, indent=2) + "\n"
    )
    (out / "scaling.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
