"""Data and seed parallelism on 4 forced host devices equal the one-device run.

Each check runs in a fresh Python process, because the number of host devices is fixed
when JAX starts (``XLA_FLAGS=--xla_force_host_platform_device_count=4``).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from rnnjax import distributed

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    import rnnjax
    from rnnjax import distributed, train as tr
    from rnnjax.modules import SequenceModel
    from rnnjax.tasks import make_task

    assert len(jax.devices()) == 4, jax.devices()
    task = make_task("adding", seq_len=8)
    model = SequenceModel(rnnjax.make_layer("lstm", 8), 1, head="last")
    opt, sched = tr.make_optimizer("adam", 1e-2, clip_norm=1.0)

    def loss_fn(params, batch, key):
        out = model.apply({"params": params}, batch.inputs, batch.lengths)
        return task.loss(out, batch), {}

    step = tr.make_train_step(loss_fn, opt, clip_norm=1.0, schedule=sched)

    def init(seed):
        ex = task.sample(jax.random.key(0), 2)
        params = model.init(jax.random.key(seed), ex.inputs, ex.lengths)["params"]
        return tr.init_state(params, opt, jax.random.key(seed))

    def batch(i, seeds=None):
        if seeds is None:
            return task.sample(jax.random.key(100 + i), 16)
        return jax.vmap(lambda s: task.sample(jax.random.fold_in(jax.random.key(i), s), 16))(
            jnp.arange(seeds))

    def run(fn, state, start, stop, **kw):
        losses = []
        for i in range(start, stop):
            state, m = fn(state, batch(i, **kw))
            losses.append(np.asarray(m["loss"]).tolist())
        return state, losses

    def leaves(state):
        return [np.asarray(x).tolist() for x in jax.tree.leaves(state.params)]
    """
)


def _run(code: str) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _close(a, b, rtol=2e-5, atol=2e-6):
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.slow
def test_data_and_seed_parallel_equal_one_device(tmp_path):
    r = _run(
        f"""
        one = jax.jit(step)
        s1, l1 = run(one, init(0), 0, 6)
        mesh = distributed.data_mesh(4)
        par = distributed.parallel_step(step, mesh, "data")
        s4, l4 = run(par, distributed.place_state(init(0), mesh), 0, 6)
        batch_devices = len(distributed.shard(batch(0), mesh, 0).inputs.sharding.device_set)

        # Sharded state: each device stores a slice of the parameters and optimizer state.
        sh = distributed.parallel_step(step, mesh, "sharded")
        ss, ls = run(sh, init(0), 0, 6)
        whole = sum(x.nbytes for x in jax.tree.leaves(ss))
        on_dev0 = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(ss))
        w_h_shape = list(ss.params["rnn"]["layer"][0].w_h.addressable_shards[0].data.shape)

        # Seeds: 4 seeds vmapped on one device, or one seed per device.
        seeds = jax.vmap(init)(jnp.arange(4))
        vs = tr.vmap_seeds(step)
        v1, lv1 = run(jax.jit(vs), seeds, 0, 4, seeds=4)
        seed_step = distributed.parallel_step(vs, mesh, "seeds")
        v4, lv4 = run(seed_step, distributed.place_state(seeds, mesh, "seeds"), 0, 4, seeds=4)
        per_device = v4.params["rnn"]["layer"][0].w_h.addressable_shards[0].data.shape

        # A checkpoint saved on 4 devices resumes on 1, and one saved on 1 resumes on 4.
        from rnnjax.checkpoint import Checkpointer
        c4 = Checkpointer("{tmp_path}/from4")
        s4_3, _ = run(par, distributed.place_state(init(0), mesh), 0, 3)
        c4.save(3, s4_3); c4.close()
        _, back1, _ = Checkpointer("{tmp_path}/from4").restore_latest(init(0))
        r1, l_r1 = run(one, back1, 3, 6)
        c1 = Checkpointer("{tmp_path}/from1")
        s1_3, _ = run(one, init(0), 0, 3)
        c1.save(3, s1_3); c1.close()
        like = distributed.place_state(init(0), mesh)
        _, back4, _ = Checkpointer("{tmp_path}/from1").restore_latest(like)
        r4, l_r4 = run(par, back4, 3, 6)
        print(json.dumps(dict(
            l1=l1, l4=l4, p1=leaves(s1), p4=leaves(s4), batch_devices=batch_devices,
            ls=ls, ps=leaves(ss), whole=whole, on_dev0=on_dev0, w_h_shape=w_h_shape,
            lv1=lv1, lv4=lv4, pv1=leaves(v1), pv4=leaves(v4), per_device=list(per_device),
            l_r1=l_r1, l_r4=l_r4, pr1=leaves(r1), pr4=leaves(r4),
        )))
        """
    )
    assert r["batch_devices"] == 4  # the batch really is split
    _close(r["l1"], r["l4"])
    _close(r["p1"], r["p4"])
    _close(r["l1"], r["ls"])
    _close(r["p1"], r["ps"])
    assert r["w_h_shape"] == [8, 8]  # w_h is [8, 32]: its gate axis split 4 ways
    assert r["on_dev0"] < 0.4 * r["whole"]  # about a quarter, plus the replicated scalars
    assert r["per_device"][0] == 1  # one seed per device
    _close(r["lv1"], r["lv4"], rtol=1e-6)
    _close(r["pv1"], r["pv4"], rtol=1e-6)
    _close(r["l_r1"], r["l1"][3:])  # saved on 4, resumed on 1
    _close(r["l_r4"], r["l1"][3:])  # saved on 1, resumed on 4
    _close(r["pr1"], r["p1"])
    _close(r["pr4"], r["p1"])


def test_errors_name_the_problem():
    mesh = distributed.data_mesh(1)
    with pytest.raises(ValueError, match="devices must lie in"):
        distributed.data_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match="layout must be one of"):
        distributed.parallel_step(lambda s, b: (s, b), mesh, "model")
    with pytest.raises(ValueError, match=r"value\['x'\] has shape \(3,\): dimension 1 must exist"):
        distributed.shard({"x": np.zeros(3)}, mesh, 1)
    # A negative axis was checked from the end but split dimension 0.
    with pytest.raises(ValueError, match=r"axis to split batch along must be an int >= 0; got -1"):
        distributed.shard(np.zeros((4, 2)), mesh, -1, name="batch")
    # NumPy counts are counts; a repeated device is refused (it failed later, elsewhere).
    assert distributed.data_mesh(np.int64(1)).size == 1
    with pytest.raises(ValueError, match="devices must be distinct"):
        distributed.data_mesh([jax.devices()[0]] * 2)
    with pytest.raises(ValueError, match="devices must be a count, a list of devices or None"):
        distributed.data_mesh(True)
    with pytest.raises(ValueError, match=r"\['b'\] has shape \(\): dimension 0 \(seeds\)"):
        distributed.state_shardings({"a": np.zeros(2), "b": np.float32(0)}, mesh, "seeds")
    with pytest.raises(ValueError, match="layout must be one of"):
        distributed.state_shardings({"a": np.zeros(2)}, mesh, "fsdp")
    # Sharded: a leaf split along its largest dimension the device count divides.
    tree = {"w": np.zeros((3, 8)), "s": np.float32(0)}
    specs = distributed.state_shardings(tree, mesh, "sharded")
    assert tuple(specs["w"].spec) == (None, "data") and tuple(specs["s"].spec) == ()


TRAIN = [
    sys.executable, str(ROOT / "experiments" / "train.py"), "--task", "adding",
    "--seq_len", "8", "--hidden_size", "8", "--batch_size", "8", "--eval_every", "3",
    "--eval_size", "16", "--no-progress", "--seeds", "4",
]  # fmt: skip


def _env(devices=1, **extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    # Set even for one device: the scripts' default (--host_devices 0) is one per core,
    # and a count XLA_FLAGS already sets is kept.
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _train(out, name, devices, extra, steps=6):
    cmd = [*TRAIN, "--steps", str(steps), "--out", str(out), "--name", name, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(devices), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _read(run):
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run / "config.json").read_text())
    return np.array([r["loss"] for r in rows]), config["placement"]


@pytest.mark.slow
def test_the_same_command_on_one_device_and_on_two_processes(tmp_path):
    """experiments/train.py unchanged, 4 seeds x 6 updates: on 1 device, and on 2
    processes x 2 host devices with the parameters and optimizer state sharded, stopped
    after 3 updates and resumed on 1 device. (The seeds and data layouts on 4 devices
    of one process are checked above, at the library level.)"""
    final = lambda run: json.loads((run / "summary.json").read_text())["final"]  # noqa: E731
    _train(tmp_path, "one", 1, [])
    loss1, place1 = _read(tmp_path / "one")
    assert place1 == {"devices": 1, "parallel": "none"}

    # Two processes on loopback, each with 2 host devices: 4 global devices.
    cmd = [
        *TRAIN, "--steps", "3", "--save_every", "3", "--parallel", "sharded",
        "--out", str(tmp_path), "--name", "multi",
    ]  # fmt: skip
    address = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(
                2,
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(i),
                **_own_cache(i),
            ),
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    # Process 0 speaks for the run (gloo's own lines, written below Python, aside).
    assert "Wrote" in outs[0][0] and "Wrote" not in outs[1][0]
    multi = tmp_path / "multi"
    loss_m, place_m = _read(multi)
    assert place_m == {"devices": 4, "parallel": "sharded"}
    assert len(loss_m) == 3  # one row per update: only process 0 wrote
    np.testing.assert_allclose(loss_m, loss1[:3], rtol=2e-5, atol=1e-7)
    assert (multi / "checkpoints" / "3").is_dir()

    # Saved by 2 processes on 4 devices; resumed by one process on 1 device.
    resumed = _train(tmp_path, "multi", 1, ["--resume"])
    assert "Resumed from step 3" in resumed
    loss_r, place_r = _read(multi)
    assert place_r == {"devices": 1, "parallel": "none"}
    np.testing.assert_allclose(loss_r, loss1, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(
        final(multi)["mse"]["per_seed"], final(tmp_path / "one")["mse"]["per_seed"], rtol=2e-5
    )


def _own_cache(i: int) -> dict:
    """A compilation-cache folder for process ``i`` of processes that run at once (no two
    live processes share one: tests/conftest.py says why)."""
    base = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return {} if base is None else {"JAX_COMPILATION_CACHE_DIR": os.path.join(base, f"proc{i}")}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_loopback_equal_one_process(tmp_path):
    """jax.distributed over loopback: 2 processes x 2 host devices train data-parallel
    on 4 global devices and reproduce the one-process, one-device losses; a signal to
    one of them stops both after the same update, which both save."""
    script = str(ROOT / "tests" / "scripts" / "two_process_train.py")
    base = dict(os.environ, JAX_PLATFORMS="cpu")
    base.pop("XLA_FLAGS", None)
    single = subprocess.run([sys.executable, script], capture_output=True, text=True, env=base)
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads(single.stdout.strip().splitlines()[-1])
    env = dict(
        base,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}",
        JAX_NUM_PROCESSES="2",
        CKPT_DIR=str(tmp_path / "ckpt"),  # one folder: each process writes its part
    )
    procs = [
        subprocess.Popen(
            [sys.executable, script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env, JAX_PROCESS_ID=str(i), **_own_cache(i)),
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert one["joined"] is False and one["devices"] == 1
    for i, r in enumerate(results):
        assert (r["joined"], r["process"], r["processes"], r["devices"]) == (True, i, 2, 4)
        np.testing.assert_allclose(r["losses"], one["losses"], rtol=2e-5)
    # SIGTERM to process 1 only: both stop after update 7, and step 7 is saved.
    assert one["stopped"] is None and one["saved"] == [10]
    assert results[0]["stopped"] == [7, None]
    assert results[1]["stopped"] == [7, int(signal.SIGTERM)]
    assert results[0]["saved"] == results[1]["saved"] == [7]


def test_initialize_reads_the_environment():
    assert distributed.initialize({}) is False  # one process: nothing to join
    with pytest.raises(ValueError, match=r"\['JAX_PROCESS_ID'\] are not"):
        distributed.initialize({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"})


def test_scaling_benchmark_runs(tmp_path):
    """benchmarks/scaling.py end to end at a toy size (its numbers live in results/)."""
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--devices", "2",
        "--repeats", "1", "--warmup", "1", "--seq_len", "4", "--hidden_size", "4",
        "--batch_size", "4", "--seeds", "2", "--out", str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "scaling.json").read_text())
    assert [r["devices"] for r in record["rows"]] == [2]
    results = record["rows"][0]["results"]
    assert set(results) == {"data", "sharded", "seeds"}
    assert results["sharded"]["state_bytes_per_device"] < results["data"]["state_bytes_per_device"]
    assert "| 2 | seeds | 2 x 4 |" in (tmp_path / "scaling.md").read_text()
    assert record["rows"][0]["xla_flags"] == "--xla_force_host_platform_device_count=2"


def test_scaling_real_uses_the_device_count_asked_for(tmp_path):
    """--real on a machine with several devices (two host devices here): each row runs
    on the count asked for; every row ran on all of them before."""
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--real", "--devices", "1,2",
        "--repeats", "1", "--warmup", "1", "--seq_len", "4", "--hidden_size", "4",
        "--batch_size", "4", "--seeds", "2", "--out", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "scaling.json").read_text())["rows"]
    assert [r["devices"] for r in rows] == [1, 2]
    assert set(rows[0]["results"]) == {"data", "seeds"}  # one device: sharded is data


@pytest.mark.slow
def test_scan_runs_its_loop_per_device_under_a_mesh():
    """Three routes to one loss and its gradients, for the LSTM, GRU and Elman cells,
    with lengths, reverse, both backwards and remat, and two cells on the associative
    loop (minGRU, RG-LRU): one device; jit over a batch split
    4 ways under ``jax.set_mesh`` (what ``parallel_step`` does: the loop runs per
    device); and the user's own ``shard_map`` with the default zero carry. Under the
    mesh no collective sits inside a loop, where the partitioner alone puts one in the
    backward."""
    r = _run(
        """
        import re
        from helpers import CELLS, random_carry, randomize
        from jax.sharding import NamedSharding, PartitionSpec as P

        mesh = distributed.data_mesh(4)
        B, T, I, H = 8, 7, 3, 5

        def in_loop_collectives(text):
            # Collectives in computations a while loop's body reaches.
            comps = {c.split()[0].lstrip("%"): c for c in re.split(r"\\n(?=\\S)", text)
                     if c.split()}
            todo = re.findall(r"body=%([\\w.\\-]+)", text)
            seen = set()
            while todo:
                name = todo.pop()
                if name not in seen and name in comps:
                    seen.add(name)
                    todo += re.findall(r"(?:calls|body|condition)=%([\\w.\\-]+)", comps[name])
            pattern = r"all-reduce\\(|all-gather\\(|collective-permute\\(|all-to-all\\("
            return sum(len(re.findall(pattern, comps[n])) for n in seen)

        def diff(a, b):
            return max(float(jnp.max(jnp.abs(x - y))) for x, y in
                       zip(jax.tree.leaves(a), jax.tree.leaves(b)))

        out = {}
        rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        # The loop's plumbing, not the cells' arithmetic (tested elsewhere): a carry
        # pair (LSTM) and a single carry (GRU, Elman), both backwards, and remat.
        cells = ("lstm", "gru", "rnn_tanh")
        cases = [(n, v, None, v == "fused") for n in cells for v in ("autodiff", "fused")]
        cases += [("lstm", "autodiff", 3, True)]
        # Linear recurrences: the associative loop, device by device.
        cases += [("min_gru", "autodiff", None, True), ("rg_lru", "autodiff", None, False)]
        for name, vjp, remat, reverse in cases:
            cell = CELLS[name][0](H)
            k = jax.random.split(jax.random.key(len(out)), 6)
            params = randomize(cell.init(k[0], I), k[1])
            xs = jax.random.normal(k[2], (B, T, I))
            carry = random_carry(cell, (B,), k[3])
            w_y = jax.random.normal(k[4], (B, T, H))
            lengths = jax.random.randint(k[5], (B,), 0, T + 1)
            kw = dict(reverse=reverse, vjp=vjp, remat=remat)

            def loss(params, xs, carry, w_y, lengths, kw=kw, cell=cell):
                final, ys = rnnjax.scan(cell, params, xs, carry, lengths=lengths, **kw)
                tail = sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves(final))
                return jnp.sum(jnp.tanh(ys) * w_y) + tail

            vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
            args = (params, xs, carry, w_y, lengths)
            one = vg(*args)
            placed = (jax.device_put(params, rep),) + tuple(
                jax.device_put(a, split) for a in args[1:])
            with jax.set_mesh(mesh):
                compiled = vg.lower(*placed).compile()
            row = dict(mesh=diff(one, compiled(*placed)), scale=diff(one, jax.tree.map(
                jnp.zeros_like, one)), under_mesh=in_loop_collectives(compiled.as_text()))
            if (name, vjp, remat) == ("lstm", "autodiff", None):
                row["plain"] = in_loop_collectives(vg.lower(*placed).compile().as_text())

            # The user's shard_map: each device its slice, the carry left to scan.
            def zero_carry(params, xs, w_y, lengths, kw=kw, cell=cell):
                _, ys = rnnjax.scan(cell, params, xs, lengths=lengths, **kw)
                return jnp.sum(jnp.tanh(ys) * w_y)

            def local(*a):
                return jax.lax.psum(zero_carry(*a), "data")

            if remat is None and (vjp == "autodiff" or name == "lstm"):
                sm = jax.shard_map(local, mesh=mesh, out_specs=P(),
                                   in_specs=(P(), P("data"), P("data"), P("data")))
                a = jax.jit(jax.value_and_grad(zero_carry, argnums=(0, 1)))(
                    params, xs, w_y, lengths)
                b = jax.jit(jax.value_and_grad(sm, argnums=(0, 1)))(*placed[:2], *placed[3:])
                row["user"] = diff(a, b)
            out[f"{name}/{vjp}/{remat}"] = row
        print(json.dumps(out))
        """
    )
    assert len(r) == 9  # 3 cells x 2 backwards + remat + 2 associative loops
    assert sum("user" in d for d in r.values()) == 6  # the user's shard_map: 5 + fused LSTM
    for case, d in r.items():
        assert d["mesh"] < 1e-5 * max(1.0, d["scale"]), (case, d)
        assert d.get("user", 0) < 1e-5 * max(1.0, d["scale"]), (case, d)
        assert d["under_mesh"] == 0, case  # the loop is each device's own
    # Without the mesh, the partitioner sums the weights' gradient inside the backward
    # loop: the check above can see a collective there.
    assert r["lstm/autodiff/None"]["plain"] > 0


def test_use_host_devices_sets_keeps_and_refuses(monkeypatch):
    """``lab.use_host_devices``: 0 makes one device per core and keeps a count that
    XLA_FLAGS already sets; an explicit count replaces it; with JAX started, 0 leaves
    it and another explicit count is refused, naming the flag."""
    from rnnjax import lab

    flag = lab.HOST_DEVICE_FLAG
    monkeypatch.setattr(lab, "jax_started", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert lab.use_host_devices(0) == lab.cores()
    assert os.environ["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false {flag}={lab.cores()}"
    monkeypatch.setenv("XLA_FLAGS", f"{flag}=3")
    assert lab.use_host_devices(0) is None and os.environ["XLA_FLAGS"] == f"{flag}=3"
    assert lab.use_host_devices(5) == 5 and os.environ["XLA_FLAGS"] == f"{flag}=5"
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"--host_devices must be an int >= 0"):
            lab.use_host_devices(bad)

    monkeypatch.setattr(lab, "jax_started", lambda: True)
    have = len(jax.devices("cpu"))
    monkeypatch.setenv("XLA_FLAGS", "")
    assert lab.use_host_devices(0) is None and lab.use_host_devices(have) is None
    assert os.environ["XLA_FLAGS"] == ""
    with pytest.raises(SystemExit, match=f"--devices_x {have + 1}: JAX already started"):
        lab.use_host_devices(have + 1, flag="--devices_x")


@pytest.mark.skipif(
    __import__("rnnjax.lab").lab.cores() < 2, reason="one core: nothing to split over"
)
def test_train_py_uses_every_core_by_default_with_the_same_numbers(tmp_path):
    """With no XLA_FLAGS, experiments/train.py makes one host device per core and splits
    the batch over them (--parallel auto); the losses and final metrics equal those of
    --host_devices 1 up to summation order."""
    from rnnjax import lab

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    runs = {}
    for name, extra in (("every-core", []), ("one", ["--host_devices", "1"])):
        cmd = [*TRAIN, "--seeds", "3", "--steps", "6", "--out", str(tmp_path), "--name", name]
        done = subprocess.run(cmd + extra, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = _read(tmp_path / name)
    (loss_all, place_all), (loss_one, place_one) = runs["every-core"], runs["one"]
    # 3 seeds, batch 8: whole seeds per device where the cores divide 3, else the batch.
    layout = "seeds" if 3 % lab.cores() == 0 else "data"
    assert place_all == {"devices": lab.cores(), "parallel": layout}
    assert place_one == {"devices": 1, "parallel": "none"}
    np.testing.assert_allclose(loss_all, loss_one, rtol=1e-5, atol=1e-7)
    assert not np.array_equal(loss_all[0], loss_all[-1])  # it trained
