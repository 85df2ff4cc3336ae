"""benchmarks/run.py: the correctness gate (all backends compute the same function),
its teeth, the statistics, and the report, at a tiny size. Speed itself is measured by
the benchmark, never asserted here."""

import contextlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

import rnnjax

ROOT = Path(__file__).resolve().parents[1]
CELLS = rnnjax.cells.names()  # the catalogue's cells, by their canonical names


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _data(cell, batch=3, steps=7, inputs=5, hidden=6, seed=0):
    peers = load("peers")
    w = peers.weights(cell, inputs, hidden, seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, steps, inputs)).astype(np.float32)
    y = rng.standard_normal((batch, steps, hidden)).astype(np.float32)
    return peers, w, x, y


EXPECTED = {
    "lstm": {"rnnjax", "flax/OptimizedLSTMCell", "flax/LSTMCell", "equinox", "torch"},
    "gru": {"rnnjax", "flax/GRUCell", "equinox", "torch"},
    "rnn_tanh": {"rnnjax", "flax/SimpleCell", "torch"},
    "rnn_relu": {"rnnjax", "flax/SimpleCell", "torch"},
    # Linear in the state: no peer has them.
    "lru": {"rnnjax"},
    "rg_lru": {"rnnjax"},
    "min_gru": {"rnnjax"},
    "min_lstm": {"rnnjax"},
    # The nonlinear families of issue 20: no peer library has them either.
    "mgu": {"rnnjax"},
    "ln_lstm": {"rnnjax"},
    "ln_gru": {"rnnjax"},
    "indrnn": {"rnnjax"},
    "exprnn": {"rnnjax"},
    "cornn": {"rnnjax"},
    "lem": {"rnnjax"},
    "antisymmetric": {"rnnjax"},
    "antisymmetric_gated": {"rnnjax"},
}
# The PyTorch module each catalogue cell is, written here apart from the catalogue.
TORCH = {
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
    "rnn_tanh": ("RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
}


class _TinyParams(NamedTuple):
    w_x: Any
    w_h: Any
    b: Any


def _tiny_make(hidden_size: int):
    """A user's cell, written here: an Elman RNN with only the required core of
    ``Cell`` (no fused backward, no gates, no PyTorch mapping), its bias initialised
    to zeros."""
    import jax
    import jax.numpy as jnp

    H = hidden_size

    def init(key, input_size):
        k_x, k_h = jax.random.split(key)
        return _TinyParams(
            jax.random.normal(k_x, (input_size, H)) / np.sqrt(input_size),
            jax.random.normal(k_h, (H, H)) / np.sqrt(H),
            jnp.zeros(H),
        )

    def initial_carry(batch_shape=(), dtype=None):
        return jnp.zeros((*batch_shape, H), dtype or jnp.float32)

    def recur(p, h, xp_t):
        h = jnp.tanh(xp_t + h @ p.w_h)
        return h, h

    return rnnjax.cells.Cell(
        name="tiny_elman",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=lambda p, xs: xs @ p.w_x + p.b,
        recur=recur,
        output=lambda h: h,
    )


def _tiny_reference(xp, params, h, x):
    h = xp.tanh(x @ params.w_x + h @ params.w_h + params.b)
    return h, h


def _tiny_reference_without_bias(xp, params, h, x):  # wrong: the gate must fail it
    h = xp.tanh(x @ params.w_x + h @ params.w_h)
    return h, h


def _tiny_entry(reference=_tiny_reference, matmul_flops=lambda i, h: 2 * h * (i + h)):
    return rnnjax.cells.Entry(
        name="tiny_elman",
        make=_tiny_make,
        reference=reference,
        matmul_flops=matmul_flops,
        torch=None,
        summary="a test's own Elman RNN",
    )


VARIANTS = {
    "rnnjax (vjp=autodiff)",
    "rnnjax (vjp=fused)",
    "rnnjax (remat=True)",
    "rnnjax (projection before the loop)",
    "rnnjax (projection in the loop)",
    "rnnjax (unroll=8)",
    "rnnjax (unroll=1)",
}
DEVICES = "rnnjax (batch over devices)"
PERSISTENT = "rnnjax (persistent Pallas loop)"
CUDNN = "jax.experimental.rnn (cuDNN)"


def test_gate_every_backend_computes_the_same_function(tmp_path):
    """The gate of a real run (tiny configuration, by default every catalogue cell):
    every installed peer maps the weights right, forward and backward, against the
    catalogue's reference in float64 NumPy and float64 torch. On a GPU the cuDNN LSTM
    joins them."""
    pytest.importorskip("torch")
    pytest.importorskip("equinox")
    import jax

    gpu = jax.default_backend() == "gpu"
    run = load("run")
    assert run.main(["--configs", "tiny", "--gate_only", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert record["complete"]
    assert set(EXPECTED) == set(CELLS)  # a new cell in the catalogue: say what it runs on
    assert [g["cell"] for g in record["gates"]] == list(CELLS)
    for g in record["gates"]:
        cudnn = {CUDNN} if gpu and g["cell"] == "lstm" else set()
        assert set(g["backends"]) == EXPECTED[g["cell"]] | cudnn
        for name, r in g["backends"].items():
            assert r["ok"], (g["cell"], name, r)
            want = (
                "torch float64"
                if g["cell"] in TORCH
                else "float64 JAX autodiff of the catalogue's reference"
            )
            # The gate's rule: 1e-5, times the largest reference output beyond |y| = 1.
            scale = max(1.0, r["output_scale"])
            assert r["max_abs_output_error"] < 1e-5 * scale and r["grad_reference"] == want
    for cell in ("rnn_tanh", "rnn_relu"):
        assert f"Equinox has no {cell} cell" in record["skipped"][f"equinox/{cell}"]
    assert (f"{CUDNN}/lstm" in record["skipped"]) == (not gpu)


def test_rnnjax_variants_pass_the_gate():
    """rnnjax's variants (JAX's backward, fused, remat, both projection placements,
    unrolled loops) as the benchmark builds them; the one that splits the batch over
    devices is skipped, with the reason, on one device."""
    import jax

    pytest.importorskip("torch")
    run = load("run")
    peers, w, x, y = _data("lstm", batch=4)
    impls = {}
    for backend in peers.VARIANTS:
        impls.update(peers.build(backend, "lstm", w, x, y))
    gpu = jax.default_backend() == "gpu"
    persistent = impls.pop(PERSISTENT)
    if gpu:
        impls[PERSISTENT] = persistent
    else:  # interpret mode is for tests (tests/test_persistent.py), not for timing
        assert isinstance(persistent, peers.Unavailable) and "GPUs only" in str(persistent)
    if len(jax.devices()) == 1:
        skipped = impls.pop(DEVICES)
        assert isinstance(skipped, peers.Unavailable) and "--host_devices" in str(skipped)
        assert set(impls) - {PERSISTENT} == VARIANTS
    else:
        assert set(impls) - {PERSISTENT} == VARIANTS | {DEVICES}
    report = run.gate("lstm", impls, w, x, y, 1e-5, 1e-4)
    assert all(r["ok"] and r["grad_reference"] == "torch float64" for r in report.values())


def test_a_backend_that_breaks_fails_the_gate_and_the_run_goes_on(tmp_path, monkeypatch):
    """A peer whose construction raises (a changed API, say) is reported as failing,
    not skipped, and does not stop the others being checked."""
    run = load("run")
    peers = sys.modules["peers"]

    def broken(*args, **kwargs):
        raise AttributeError("module 'flax.linen' has no attribute 'GRUCell'")

    monkeypatch.setattr(peers, "flax_impl", broken)
    argv = ["--configs", "tiny", "--cells", "gru", "--backends", "rnnjax,flax", "--gate_only"]
    assert run.main(argv + ["--out", str(tmp_path)]) == 1
    (g,) = json.loads((tmp_path / "benchmark.json").read_text())["gates"]
    assert g["backends"]["rnnjax"]["ok"]
    bad = g["backends"]["flax/GRUCell"]
    assert not bad["ok"] and "building it raised AttributeError: module 'flax" in bad["error"]


@pytest.mark.parametrize("cell", sorted(TORCH))  # the PyTorch layout's gate blocks
def test_gate_rejects_a_wrong_mapping(cell):
    """Two gate blocks swapped (or, for an Elman RNN, one weight nudged) in what one
    backend receives: the gate must fail it and pass the others."""
    peers, w, x, y = _data(cell)
    run = load("run")
    bad = dict(w)
    gates = w["weight_ih"].shape[0] // w["weight_hh"].shape[1]
    if gates == 1:
        bad["weight_hh"] = w["weight_hh"] + 1e-3 * np.eye(*w["weight_hh"].shape, dtype=np.float32)
    else:
        blocks = np.split(w["weight_ih"], gates)
        blocks[0], blocks[1] = blocks[1], blocks[0]
        bad["weight_ih"] = np.concatenate(blocks)
    impls = {
        "rnnjax": peers.rnnjax_impl(cell, w, x, y),
        "broken": peers.rnnjax_impl(cell, bad, x, y),
    }
    report = run.gate(cell, impls, w, x, y, atol=1e-5, grad_rtol=1e-4)
    assert report["rnnjax"]["ok"]
    assert not report["broken"]["ok"]
    assert report["broken"]["max_abs_output_error"] > 1e-5


def test_reference_agrees_with_torch_float64():
    """The gate's NumPy yardstick (the catalogue's reference) and PyTorch in double
    precision: two routes. The module for each cell is named here, apart from the
    catalogue's mapping, which must agree."""
    torch = pytest.importorskip("torch")
    mapped = {c for c in CELLS if rnnjax.cells.get(c).torch is not None}
    assert mapped == set(TORCH)
    for cell, (module_name, options) in TORCH.items():
        mapping = rnnjax.cells.get(cell).torch
        assert mapping.module == module_name
        assert all(mapping.options.get(k) == v for k, v in options.items()), cell
        peers, w, x, _ = _data(cell)
        cls = getattr(torch.nn, module_name)
        module = cls(x.shape[-1], w["weight_hh"].shape[1], batch_first=True, **options)
        module = module.double()
        with torch.no_grad():
            for k in peers.NAMES:
                getattr(module, f"{k}_l0").copy_(torch.from_numpy(w[k].astype(np.float64)))
        ys = module(torch.from_numpy(x.astype(np.float64)))[0].detach().numpy()
        ref = peers.reference(cell, w, x, w["weight_hh"].shape[1])
        np.testing.assert_allclose(ref, ys, rtol=1e-12, atol=1e-12)


def test_a_users_cell_passes_the_gate_with_no_benchmark_file_edited(tmp_path):
    """A cell registered from a user's code (no PyTorch mapping, only the core of
    ``Cell``) is benchmarkable as it is: ``run.py --cells <it> --gate_only`` checks
    rnnjax against the catalogue's reference, in the cell's own params layout (its zero
    bias made random), and names every peer that cannot run it, with why. Given a
    reference that leaves the bias out, the same gate fails."""
    run = load("run")
    peers = sys.modules["peers"]
    argv = ["--configs", "tiny", "--cells", "tiny_elman", "--gate_only", "--out"]
    with rnnjax.cells.registered(_tiny_entry()):
        assert run.main([*argv, str(tmp_path / "right")]) == 0
        w = peers.weights("tiny_elman", 8, 16)
    assert "tiny_elman" not in rnnjax.cells.names()
    assert list(w) == ["w_x", "w_h", "b"] and w["b"].shape == (16,) and np.all(w["b"] != 0)
    assert w["w_h"].shape == (16, 16) and w["w_x"].shape == (8, 16)
    record = json.loads((tmp_path / "right" / "benchmark.json").read_text())
    (g,) = record["gates"]
    assert (g["config"], g["cell"], set(g["backends"])) == ("tiny", "tiny_elman", {"rnnjax"})
    r = g["backends"]["rnnjax"]
    assert r["ok"] and r["max_abs_output_error"] < 1e-5 and r["max_rel_grad_error"] < 1e-4
    assert r["grad_reference"] == "float64 JAX autodiff of the catalogue's reference"
    skipped = record["skipped"]
    assert set(skipped) == {f"{name}/tiny_elman" for name in ("flax", "equinox", "torch", CUDNN)}, (
        skipped
    )
    assert "PyTorch has no tiny_elman cell" in skipped["torch/tiny_elman"]
    assert "Flax linen has no cell for tiny_elman" in skipped["flax/tiny_elman"]
    assert "Equinox has no tiny_elman cell" in skipped["equinox/tiny_elman"]

    with rnnjax.cells.registered(_tiny_entry(_tiny_reference_without_bias)):
        assert run.main([*argv, str(tmp_path / "wrong")]) == 1
    (g,) = json.loads((tmp_path / "wrong" / "benchmark.json").read_text())["gates"]
    bad = g["backends"]["rnnjax"]
    assert not bad["ok"] and bad["max_abs_output_error"] > 1e-3


def test_gate_cell_runs_the_gate_in_process_with_the_variants():
    """``run.gate_cell`` for a registered cell: every rnnjax variant that applies passes
    against the catalogue's reference, the one that does not (``vjp="fused"``: the cell
    declares no fused recurrence) is skipped with the reason, and the gradients are
    keyed by the params' field names and checked with teeth."""
    run = load("run")
    peers = sys.modules["peers"]
    with rnnjax.cells.registered(_tiny_entry()):
        g = run.gate_cell("tiny_elman", backends=("rnnjax", *peers.VARIANTS))
        w, x, y = run.problem("tiny_elman", run.CONFIGS["tiny"])
        ref_grads = peers.reference_grads("tiny_elman", w, x, y)
        ys = peers.reference("tiny_elman", w, x, y.shape[-1])
        loss = 0.5 * float(np.mean((ys - y.astype(np.float64)) ** 2))
        right = {k: v.astype(np.float32) for k, v in ref_grads.items()}
        fixed = {
            "right": _Fixed(ys, loss, right),
            "tripled": _Fixed(ys, loss, {**right, "b": 3 * right["b"]}),
            "torch names": _Fixed(ys, loss, dict(zip(peers.NAMES[:3], right.values()))),
        }
        report = run.gate("tiny_elman", fixed, w, x, y, 1e-5, 1e-4)
    assert g.ok and g.cell == "tiny_elman"
    applies = VARIANTS - {"rnnjax (vjp=fused)"}
    assert set(g.backends) - {DEVICES} == {"rnnjax"} | applies  # DEVICES: with 2 devices
    assert set(g.impls) == set(g.backends)  # passed: ready to time
    assert "declares no fused recurrence" in g.skipped["rnnjax (vjp=fused)"]
    # The persistent loop: GPUs only, and there too it needs the fused recurrence.
    assert any(s in g.skipped[PERSISTENT] for s in ("GPUs only", "no fused recurrence"))
    assert set(g.skipped) <= {"rnnjax (vjp=fused)", DEVICES, PERSISTENT}
    assert all(r["grad_reference"].startswith("float64 JAX autodiff") for r in g.backends.values())
    assert list(ref_grads) == ["w_x", "w_h", "b"] and np.all(ref_grads["b"] != 0)
    assert report["right"]["ok"]
    assert not report["tripled"]["ok"] and report["tripled"]["max_rel_grad_error"] > 1
    assert not report["torch names"]["ok"] and "gradients named" in report["torch names"]["error"]
    with pytest.raises(ValueError, match="cell must be one of"):
        run.gate_cell("tiny_elman")  # no longer in the catalogue


def test_committed_runs_render_their_old_cell_names():
    """Runs recorded before the catalogue named cells (``"rnn"``, no recorded least
    count) still render: every committed ``benchmark.json`` gives the targets rows of
    the ``summary.md`` committed beside it, the share of the peak each target needs
    included, and its tables name each row's cell as recorded."""
    report = load("report")
    runs = sorted((ROOT / "results").rglob("benchmark.json"))
    assert runs
    for path in runs:
        record = json.loads(path.read_text())
        report.header(record), report.sweep_table(record), report.gate_table(record)
        tables = "\n".join(report.tables(record))
        for r in record["rows"]:
            assert f") | {r['cell']} | " in tables, (path, r["cell"])
        summary = path.parent / "summary.md"
        if summary.exists():
            committed = set(summary.read_text().splitlines())
            rows = [
                x
                for x in report.targets(record)
                if x.startswith("| ") and not x.startswith(("| config", "|---"))
            ]
            assert all(x in committed for x in rows), (
                path,
                [x for x in rows if x not in committed],
            )


def test_speedups_are_per_round_ratios():
    run = load("run")
    times = {
        "rnnjax": {"samples_s": [1.0, 2.0, 1.0, 4.0]},
        "peer": {"samples_s": [2.0, 2.0, 3.0, 4.0]},
    }
    s = run.speedups(times)["peer"]
    ratios = np.array([2.0, 1.0, 3.0, 1.0])  # by hand, round by round
    assert s["median"] == pytest.approx(np.median(ratios))
    assert (s["q1"], s["q3"]) == pytest.approx(tuple(np.percentile(ratios, [25, 75])))
    # Not the ratio of the medians (2.5 / 1.5), which a noisy round would skew.
    assert s["median"] != pytest.approx(2.5 / 1.5)


def test_interleaved_timing_visits_every_backend_every_round():
    run = load("run")
    calls = {"a": 0, "b": 0}
    fns = {k: (lambda k=k: calls.__setitem__(k, calls[k] + 1)) for k in calls}
    out = run.time_interleaved(
        fns, rounds=5, min_sample=0.0, warmup=2, rng=np.random.default_rng(0)
    )
    for k, r in out.items():
        assert len(r["samples_s"]) == 5 and r["calls_per_sample"] == 1
        assert calls[k] == 1 + 2 + 1 + 5  # compile, warm-up, calibration, rounds
        assert r["q1_s"] <= r["median_s"] <= r["q3_s"] and r["min_s"] <= r["median_s"]


def test_flop_count_matches_the_matmul_shapes():
    run = load("run")
    # LSTM forward: per token x [I] @ W_x [I, 4H] and h [H] @ W_h [H, 4H], 2 FLOPs per MAC.
    b, t, i, h = 3, 5, 7, 11
    assert run.flops_per_call("lstm", "infer", b, t, i, h) == b * t * 2 * (i * 4 * h + h * 4 * h)
    assert run.flops_per_call("gru", "train", b, t, i, h) == 3 * b * t * 2 * 3 * h * (i + h)
    for cell in ("rnn_tanh", "rnn_relu"):
        assert run.flops_per_call(cell, "infer", b, t, i, h) == b * t * 2 * h * (i + h)
    # Read from the catalogue: a registered cell's own count, whatever it is.
    with rnnjax.cells.registered(_tiny_entry(matmul_flops=lambda i, h: 1000 * i + h)):
        assert run.flops_per_call("tiny_elman", "infer", b, t, i, h) == b * t * (1000 * i + h)
        assert run.flops_per_call("tiny_elman", "train", b, t, i, h) == 3 * b * t * (1000 * i + h)
        least = run.least_flops_per_call("tiny_elman", "train", b, t, i, h)
        assert least == b * t * (2 * (1000 * i + h) + h)


@pytest.mark.slow
def test_a_tiny_benchmark_writes_tables_plots_and_targets(tmp_path):
    pytest.importorskip("torch")
    run = load("run")
    argv = [
        "--configs", "tiny", "--cells", "gru", "--backends", "rnnjax,torch",
        "--rounds", "3", "--min_sample", "0.001", "--warmup", "1", "--peak_n", "64",
        "--sweep_lengths", "20,40", "--out", str(tmp_path),
    ]  # fmt: skip
    assert run.main(argv) == 0
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert [(r["cell"], r["mode"]) for r in record["rows"]] == [("gru", "train"), ("gru", "infer")]
    for r in record["rows"]:
        assert set(r["times"]) == {"rnnjax", "torch"}
        t = r["times"]["torch"]
        ratio = np.median(np.array(t["samples_s"]) / np.array(r["times"]["rnnjax"]["samples_s"]))
        assert r["speedup"]["torch"]["median"] == pytest.approx(ratio)
        assert t["gflops"] == pytest.approx(r["flops_per_call"] / t["median_s"] / 1e9)
        assert r["times"]["rnnjax"]["memory"]["xla_program_bytes"] > 0
    assert [p["steps"] for p in record["sweep"]] == [20, 40]
    md = (tmp_path / "benchmark.md").read_text()
    assert "| tiny | gru | train | torch |" in md and "## Correctness gate" in md
    assert record["environment"]["torch_threads"] >= 1
    summary = (tmp_path / "summary.md").read_text()
    assert "| tiny | gru | train | torch |" in summary and "## Correctness gate" not in summary
    for name in ("speedup.png", "memory.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_an_interrupted_run_keeps_what_it_timed(tmp_path, monkeypatch):
    """benchmark.json is rewritten after every cell, marked incomplete until the end."""
    run = load("run")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "memory_sweep", interrupted)
    argv = ["--configs", "tiny", "--cells", "rnn_tanh", "--backends", "rnnjax", "--rounds", "2"]
    argv += ["--min_sample", "0.001", "--peak_n", "64", "--out", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        run.main(argv)
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert record["complete"] is False
    assert [(r["cell"], r["mode"]) for r in record["rows"]] == [
        ("rnn_tanh", "train"),
        ("rnn_tanh", "infer"),
    ]
    record["matmul_peak"] = None
    assert "(interrupted: these rows are all it timed)" in load("report").header(record)[2]


def test_the_allocator_settings_are_recorded_and_printed(monkeypatch):
    # They move CPU step times by 1.3-1.7x (benchmarks/README.md), so a run records them.
    run, report = load("run"), load("report")
    for k in run.ALLOCATOR_VARIABLES:
        monkeypatch.delenv(k, raising=False)
    plain = run.allocator()
    assert set(plain) == {"libc"}
    tuned = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296"
    monkeypatch.setenv("GLIBC_TUNABLES", tuned)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    record = {
        "command": "x",
        "complete": True,
        "matmul_peak": None,
        "args": {"rounds": 3, "min_sample": 0.2, "dtype": "float32"},
        "environment": {
            "cpu": "c", "cpu_count": 2, "backend": "cpu", "versions": {"jax": 1, "flax": 2},
            "git_commit": "abc", "allocator": run.allocator(),
        },
    }  # fmt: skip
    assert record["environment"]["allocator"]["GLIBC_TUNABLES"] == tuned
    line = next(x for x in report.header(record) if x.startswith("Allocator:"))
    assert f"GLIBC_TUNABLES={tuned}" in line and "MALLOC_ARENA_MAX=2" in line
    record["environment"]["allocator"] = plain
    line = next(x for x in report.header(record) if x.startswith("Allocator:"))
    assert line.endswith("its default settings.")
    record["environment"]["allocator"] = {**plain, "mallopt": {"M_ARENA_MAX": 1}}
    line = next(x for x in report.header(record) if x.startswith("Allocator:"))
    assert line.endswith("set in the process with mallopt: M_ARENA_MAX=1.")
    del record["environment"]["allocator"]  # a run from before the field existed
    assert not any(x.startswith("Allocator:") for x in report.header(record))


def _row(config, mode, medians, speedups):
    times = {
        n: {"median_s": m, "samples_s": [m], "fraction_of_peak": 0.5} for n, m in medians.items()
    }
    sp = {n: {"median": v, "q1": v, "q3": v} for n, v in speedups.items()}
    return {"config": config, "cell": "lstm", "mode": mode, "times": times, "speedup": sp}


def test_targets_leave_rnnjax_variants_out_of_the_peers():
    """rnnjax's own variants (fused backward, remat) are timed beside it but are not the
    "best peer" a target is held against; on a GPU the cuDNN and Flax targets are
    ratios to the fastest of each."""
    report = load("report")
    medians = {"rnnjax": 2.0, "rnnjax (vjp=fused)": 1.0, "torch": 3.0, "flax/LSTMCell": 5.0}
    medians[CUDNN] = 1.8
    speedups = {"rnnjax (vjp=fused)": 0.5, "torch": 1.5, "flax/LSTMCell": 2.5, CUDNN: 0.9}
    record = {
        "rows": [_row("small", "train", medians, speedups)],
        "targets": {
            "train_speedup_over_best_peer": 1.25,
            "large_fraction_of_peak": 0.8,
            "gpu_lstm_within_cudnn": 1.2,
            "gpu_lstm_speedup_over_flax": 2.0,
        },
        "environment": {"backend": "gpu"},
    }
    text = "\n".join(report.targets(record))
    assert f"| small | lstm | train | {CUDNN} | 1800.00 | 2000.00 | 0.90x | 1.25x | no |" in text
    # t_rnnjax / t_cuDNN = 1 / 0.9 = 1.11 (within 1.2); 2.5x over Flax (at least 2).
    assert f"| small | train | {CUDNN} | 1.11 | yes | flax/LSTMCell | 2.50x | yes |" in text
    record["environment"]["backend"] = "cpu"
    assert "GPU, LSTM" not in "\n".join(report.targets(record))
    # The variants get their own lines, against the same best peer (cuDNN's 1.8).
    line = f"| rnnjax (vjp=fused) | {CUDNN} | 1000.00 | 1.80x | 1.25x | yes |"
    assert line in "\n".join(report.targets(record))


@pytest.mark.slow
def test_the_devices_variant_passes_the_gate_on_two_host_devices(tmp_path):
    """``--host_devices 2`` in a fresh process: JAX sees two CPU devices, the variant that
    splits the batch over them reproduces the float64 reference, forward and backward."""
    pytest.importorskip("torch")
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "run.py"), "--configs", "tiny",
        "--cells", "lstm,gru", "--backends", "rnnjax,rnnjax-devices", "--gate_only",
        "--host_devices", "2", "--out", str(tmp_path),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert (
        "--xla_force_host_platform_device_count=2" in record["environment"]["threads"]["XLA_FLAGS"]
    )
    assert not record["skipped"]
    for g in record["gates"]:
        r = g["backends"][DEVICES]
        assert r["ok"] and r["grad_reference"] == "torch float64", (g["cell"], r)
    assert "JAX saw 2 host devices" in "\n".join(load("report").header(record))


def test_host_devices_cannot_change_a_running_jax():
    import jax

    run = load("run")
    have = len(jax.devices("cpu"))
    run.force_host_devices(have)  # what it already is: nothing to do
    with pytest.raises(SystemExit, match="JAX already started in this process with"):
        run.force_host_devices(have + 1)
    with pytest.raises(SystemExit):
        run.parse(["--host_devices", "-1"])


def test_bad_flags_name_the_flag():
    run = load("run")
    with pytest.raises(SystemExit, match="--cells must be names from"):
        run.parse(["--cells", "lstm,transformer"])
    with pytest.raises(SystemExit, match="--cells must be names from"):
        run.parse(["--cells", "rnn"])  # one name per cell: the Elman tanh RNN is rnn_tanh
    assert run.parse([]).cells == list(CELLS)  # every catalogue cell by default
    with rnnjax.cells.registered(_tiny_entry()):
        assert run.parse(["--cells", "tiny_elman"]).cells == ["tiny_elman"]
    with pytest.raises(SystemExit, match="--configs must be names from"):
        run.parse(["--configs", "huge"])
    with pytest.raises(SystemExit):  # argparse names the choices
        run.parse(["--precision", "bf16"])
    args = run.parse(["--precision", "tf32"])
    assert (args.atol, args.grad_rtol) == run.GATE_TOLERANCES["tf32"]
    assert run.parse(["--atol", "1e-3"]).atol == 1e-3


def test_first_call_is_recorded_once_whoever_makes_it():
    """The gate calls each backend first; the compile time must still be its own
    number, not a warm call's."""
    peers = load("peers")
    calls = []
    first = {}
    fn = peers._first_timed(first, "train", lambda x: calls.append(x) or x, block=lambda o: None)
    assert fn(1) == 1 and set(first) == {"train"}
    recorded = first["train"]
    fn(2)
    fn(3)
    assert first == {"train": recorded} and calls == [1, 2, 3]
    _, w, x, y = _data("lstm")
    impl = peers.rnnjax_impl("lstm", w, x, y)
    impl.result()  # what the gate does: compiles both functions
    assert set(impl.first_call_s) == {"train", "infer"}


def _dot_flops(jaxpr) -> int:
    """Every ``dot_general``'s FLOPs in ``jaxpr`` (2 x output size x contracted size),
    sub-jaxprs included, a scan's body times its length."""
    import math

    from jax.extend.core import ClosedJaxpr, Jaxpr

    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            k = math.prod(lhs[d] for d in contract)
            total += 2 * k * math.prod(eqn.outvars[0].aval.shape)
        times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                if isinstance(sub, ClosedJaxpr):
                    total += times * _dot_flops(sub.jaxpr)
                elif isinstance(sub, Jaxpr):
                    total += times * _dot_flops(sub)
    return total


@pytest.mark.parametrize("cell", [*CELLS, "tiny_elman"])
def test_least_matmul_flops_are_what_the_training_step_does(cell):
    """The report's least work (``2 G H (2I + 3H)`` per token for a training step, the
    forward count for inference; from the catalogue's ``matmul_flops``, a registered
    cell's too), against the matmuls counted in the jaxpr of the step the benchmark
    times for rnnjax (the loss over every output, the gradient of the params only).
    I != H, so a count off by the input's gradient would show. A row from a run before
    the count was recorded gets the same number for the built-in cells."""
    import jax
    import jax.numpy as jnp

    run, report = load("run"), load("report")
    batch, steps, inputs, hidden = 3, 7, 5, 6
    with contextlib.ExitStack() as stack:
        if cell not in CELLS:
            stack.enter_context(rnnjax.cells.registered(_tiny_entry()))
        _, _, x, y = _data(cell, batch, steps, inputs, hidden)
        core = rnnjax.cells.make_cell(cell, hidden)
        params = core.init(jax.random.PRNGKey(0), inputs)
        if core.prepare is not None:
            # The per-token work: the step over the derived weights (expRNN's
            # W_h = expm(A), O(H^3) once per call, is not counted per token).
            params, prepare, init = core.prepare(params), core.prepare, core.init
            core = core._replace(prepare=None, init=lambda k, i: prepare(init(k, i)))

        def forward(p, x):
            return rnnjax.scan(core, p, x, vjp="autodiff")[1]

        def loss(p, x, y):
            return 0.5 * jnp.mean((forward(p, x) - y) ** 2)

        counted = {
            "train": _dot_flops(jax.make_jaxpr(jax.value_and_grad(loss))(params, x, y).jaxpr),
            "infer": _dot_flops(jax.make_jaxpr(forward)(params, x).jaxpr),
        }
        sizes = (batch, steps, inputs, hidden)
        for mode in ("train", "infer"):
            row = {
                "mode": mode,
                "shape": {"batch": batch, "steps": steps, "inputs": inputs, "hidden": hidden},
                "flops_per_call": run.flops_per_call(cell, mode, *sizes),
                "least_matmul_flops": run.least_flops_per_call(cell, mode, *sizes),
            }
            assert report.least_matmul_flops(row) == counted[mode], mode
            if cell in TORCH:  # an old row (the cells before the catalogue), no recorded count
                del row["least_matmul_flops"]
                assert report.least_matmul_flops(row) == counted[mode], mode
        # The stated 3x count is more than the step does: it holds the input's gradient.
        assert run.flops_per_call(cell, "train", *sizes) > counted["train"]


def test_the_targets_say_what_share_of_the_peak_each_needs():
    report = load("report")
    shape = {"batch": 2, "steps": 10, "inputs": 4, "hidden": 4}
    # Stated count 3 * 1e9 FLOPs: the least work is 1e9 * (2*4 + 3*4) / (4 + 4) = 2.5e9.
    row = {**_row("large", "train", {"rnnjax": 0.05, "torch": 0.04}, {"torch": 0.8})}
    row.update(shape=shape, flops_per_call=3e9)
    record = {
        "rows": [row],
        "matmul_peak": {"peak_gflops": 100.0},
        "targets": {"train_speedup_over_best_peer": 1.25, "large_fraction_of_peak": 0.8},
        "environment": {"backend": "cpu"},
    }
    # 1.25x over torch's 40 ms allows 32 ms; 2.5e9 FLOPs in 32 ms at 100 GFLOP/s: 78%.
    assert report.needed_fraction_of_peak(row, 0.032, 100.0) == pytest.approx(2.5e9 / 0.032 / 1e11)
    text = "\n".join(report.targets(record))
    assert "| large | lstm | train | torch | 40.00 | 50.00 | 0.80x | 1.25x | no | 78% |" in text
    assert "Rows that need more than the measured peak" not in text
    assert "the highest any backend ran at here: training step 62% (torch, large lstm)" in text
    row["times"]["torch"]["median_s"] = 0.02  # now 2.5e9 FLOPs in 16 ms: 156%
    text = "\n".join(report.targets(record))
    assert "| no | 156% |" in text
    assert "Rows that need more than the measured peak: large lstm train." in text
    record["matmul_peak"] = None
    assert "| no | n/a |" in "\n".join(report.targets(record))


def test_the_placement_variants_pass_hoist_to_scan(monkeypatch):
    """``rnnjax-hoisted`` / ``rnnjax-in-loop`` pass ``hoist=True`` / ``False`` to
    ``rnnjax.scan`` (an option of the call, no environment variable); rnnjax itself
    leaves the placement to scan."""
    peers, w, x, y = _data("lstm")
    seen = []
    scan = rnnjax.scan

    def spy(*args, **kwargs):
        seen.append(kwargs.get("hoist", "not passed"))
        return scan(*args, **kwargs)

    monkeypatch.setattr(rnnjax, "scan", spy)
    for backend, hoist in (("rnnjax", None), ("rnnjax-hoisted", True), ("rnnjax-in-loop", False)):
        (impl,) = peers.build(backend, "lstm", w, x, y).values()
        seen.clear()
        impl.infer()  # traced here: scan is called once
        assert seen == [hoist], backend
    assert not hasattr(peers, "_env")


def test_compare_two_runs_pairs_rows_and_backends(tmp_path):
    compare = load("compare")
    rng = np.random.default_rng(0)

    def record(backends, tunables=None):
        rows = []
        for config, cell, mode in [("small", "gru", "train"), ("large", "rnn", "infer")]:
            times = {b: {"median_s": float(rng.uniform(0.01, 0.5))} for b in backends}
            rows.append({"config": config, "cell": cell, "mode": mode, "times": times})
        alloc = {"libc": "glibc 2.36", **({"GLIBC_TUNABLES": tunables} if tunables else {})}
        env = {"date_utc": "d", "git_commit": "0123456789abc", "allocator": alloc}
        return {"command": "python benchmarks/run.py", "environment": env, "rows": rows}

    a = record(["rnnjax", "torch", "flax/GRUCell"])
    b = record(["rnnjax", "torch"], tunables="glibc.malloc.trim_threshold=1")
    b["rows"] = b["rows"][:1]  # B timed only the first row
    got = compare.compare(a, b)
    assert [(r["config"], r["backend"]) for r in got] == [("small", "rnnjax"), ("small", "torch")]
    for r, name in zip(got, ["rnnjax", "torch"]):
        ta, tb = a["rows"][0]["times"][name]["median_s"], b["rows"][0]["times"][name]["median_s"]
        assert r["a_over_b"] == pytest.approx(ta / tb)
        assert r["a_ms"] == pytest.approx(ta * 1e3)
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    out = tmp_path / "c.md"
    argv = [str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--labels", "plain,tuned"]
    assert compare.main(argv + ["--out", str(out)]) == 0
    text = out.read_text()
    assert "GLIBC_TUNABLES=glibc.malloc.trim_threshold=1" in text and "default settings" in text
    # A row B did not time (or recorded under another cell name) is named, not dropped.
    assert "Timed only in plain (not compared): large rnn infer." in text
    assert "Timed only in tuned" not in text
    ta, tb = (x["rows"][0]["times"]["torch"]["median_s"] for x in (a, b))
    assert (
        f"| small | gru | train | torch | {ta * 1e3:.2f} | {tb * 1e3:.2f} | {ta / tb:.2f} |" in text
    )
    with pytest.raises(SystemExit):
        compare.main(argv[:2] + ["--labels", "one"])
    with pytest.raises(SystemExit):
        compare.main([str(tmp_path / "missing.json"), argv[1]])
    # Several runs per side: the mean of their medians; --rename pairs an old cell name.
    a2 = record(["rnnjax", "torch"])
    b2 = record(["rnnjax", "torch"])
    for rec in (a, a2):
        rec["rows"][1]["cell"] = "rnn"
    b2["rows"][1]["cell"] = "rnn_tanh"
    merged = compare.merge([a, a2], {"rnn": "rnn_tanh"})
    (small, large) = merged["rows"]
    assert set(small["times"]) == {"rnnjax", "torch"}  # flax: timed in one run only
    want = (
        a["rows"][1]["times"]["torch"]["median_s"] + a2["rows"][1]["times"]["torch"]["median_s"]
    ) / 2
    assert large["cell"] == "rnn_tanh" and large["times"]["torch"]["median_s"] == pytest.approx(
        want
    )
    (tmp_path / "a2.json").write_text(json.dumps(a2))
    (tmp_path / "b2.json").write_text(json.dumps(b2))
    two = [f"{tmp_path / 'a.json'},{tmp_path / 'a2.json'}", str(tmp_path / "b2.json")]
    assert compare.main(two + ["--rename", "rnn=rnn_tanh", "--out", str(out)]) == 0
    text = out.read_text()
    assert "the mean of 2 runs' medians" in text and "| large | rnn_tanh | infer | torch |" in text
    assert "Timed only" not in text
    with pytest.raises(SystemExit):
        compare.main(two + ["--rename", "rnn"])


def test_page_faults_writes_its_table(tmp_path):
    page_faults = load("page_faults")
    argv = ["--sizes", "small", "--cells", "rnn_tanh", "--calls", "2", "--warmup", "1"]
    assert page_faults.main(argv + ["--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "page_faults.json").read_text())
    (row,) = record["rows"]
    assert row["temp_bytes"] > 0 and row["faults_per_call"] >= 0 and row["median_ms"] > 0
    assert row["faulted_bytes_per_call"] == row["faults_per_call"] * resource.getpagesize()
    assert "mallopt" not in record["allocator"] and record["environment"]["git_commit"]
    text = (tmp_path / "page_faults.md").read_text()
    assert f"| small | rnn_tanh | {row['temp_bytes'] / 2**20:.1f} |" in text
    for bad in ("transformer", "rnn"):  # "rnn": the old name, now rnn_tanh
        with pytest.raises(SystemExit):
            page_faults.main(["--cells", bad])
    with pytest.raises(ValueError, match="nbytes must be in"):
        load("run").keep_freed_memory(2**32)  # would wrap to 0: trim on every free


@pytest.mark.slow
def test_keeping_freed_memory_stops_the_step_from_faulting(tmp_path):
    # Each in a fresh process, as it is used: mallopt changes the whole process, and
    # only before JAX starts its threads does one arena serve them all. The small LSTM's
    # temporaries (53 MiB) are above glibc's 32 MiB ceiling, so with its defaults most
    # of their pages fault on every call; kept, few do. (A threshold of 2**32
    # would wrap to 0 in mallopt's C int and trim on every free.)
    def run(*flags):
        out = tmp_path / ("kept" if flags else "default")
        argv = ["--sizes", "small", "--cells", "lstm", "--calls", "10", "--warmup", "5"]
        done = subprocess.run(
            [sys.executable, "benchmarks/page_faults.py", *argv, *flags, "--out", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((out / "page_faults.json").read_text())

    default, kept = run(), run("--keep_freed_memory")
    (before,), (after,) = default["rows"], kept["rows"]
    assert "mallopt" not in default["allocator"]
    assert kept["allocator"]["mallopt"] == {
        "M_ARENA_MAX": 1, "M_MMAP_THRESHOLD": 2**30, "M_TRIM_THRESHOLD": 2**30,
    }  # fmt: skip
    assert before["temp_bytes"] > 32 * 2**20
    assert before["faulted_bytes_per_call"] > 0.5 * before["temp_bytes"]
    # Kept, a call now and then still takes fresh pages (the heap grows around other
    # allocations): a mean over 10 calls, not every call, is what drops.
    assert after["faulted_bytes_per_call"] < 0.25 * after["temp_bytes"]


def test_profile_adds_up_events_by_process_and_name():
    """``summarize`` against sums taken another way, over random events, with the
    Python frames and XLA:CPU's completion markers left out."""
    profile_step = load("profile_step")
    rng = np.random.default_rng(3)
    names = ["while.3", "ynn_fusion", "copy.1"]
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
        {"ph": "M", "name": "process_name", "pid": 7, "args": {"name": "/device:GPU:0"}},
    ]
    want = {}
    for pid, where in ((1, "/host:CPU"), (7, "/device:GPU:0")):
        for name in names:
            durs = rng.uniform(0.5, 50.0, size=int(rng.integers(1, 40)))
            events += [{"ph": "X", "pid": pid, "name": name, "dur": float(d)} for d in durs]
            want[(where, name)] = (len(durs), durs.sum())
    events += [
        {"ph": "X", "pid": 1, "name": "$api.py:1 block_until_ready", "dur": 1e6},
        {"ph": "X", "pid": 1, "name": "end: ynn_fusion", "dur": 1e6},
        {"ph": "i", "pid": 1, "name": "while.3"},  # an instant event: no duration
    ]
    rng.shuffle(events)
    calls = 4
    rows = profile_step.summarize({"traceEvents": events}, calls)
    assert [r["ms_per_call"] for r in rows] == sorted(
        (r["ms_per_call"] for r in rows), reverse=True
    )
    got = {(r["process"], r["name"]): r for r in rows}
    assert set(got) == set(want)
    for key, (count, total_us) in want.items():
        r = got[key]
        assert r["runs_per_call"] == count / calls
        np.testing.assert_allclose(r["ms_per_call"], total_us / calls / 1e3, rtol=1e-12)
        np.testing.assert_allclose(r["us_per_run"], total_us / count, rtol=1e-12)


@pytest.mark.slow
def test_profile_step_finds_the_loop_body_and_its_unrolling(tmp_path):
    """On the tiny size (T = 16), rnnjax's training step runs its loops' operations 16
    times per call; with unroll=8 (two iterations of eight copies) none runs 16 times."""
    import jax

    if jax.default_backend() != "cpu":
        pytest.skip("checks XLA:CPU's operation names; gpu.sh profiles on the GPU itself")
    done = subprocess.run(
        [sys.executable, "benchmarks/profile_step.py", "--config", "tiny", "--cell", "gru",
         "--mode", "train", "--backends", "rnnjax,rnnjax-unroll", "--calls", "3",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "profile.json").read_text())
    T = record["shape"][1]
    assert T == 16 and record["mode"] == "train" and record["environment"]["git_commit"]
    plain, unrolled = (record["backends"][k]["rows"] for k in ("rnnjax", "rnnjax (unroll=8)"))
    assert any(r["runs_per_call"] == T for r in plain)
    assert not any(r["runs_per_call"] == T for r in unrolled)
    assert any(r["runs_per_call"] == T // 8 for r in unrolled)
    for rows in (plain, unrolled):  # the forward and the backward loop, once per call
        assert sorted(r["runs_per_call"] for r in rows if r["name"].startswith("while")) == [1, 1]
    text = (tmp_path / "profile.md").read_text()
    assert "## rnnjax (unroll=8):" in text and "| runs per call |" in text


def test_profile_step_refuses_bad_input(monkeypatch, capsys):
    profile_step = load("profile_step")
    for argv, message in (
        (["--backends", "torch"], "--backends must be JAX backends"),
        (["--config", "huge"], "--config must be one of"),
        (["--cell", "rnn"], "--cell must be one of"),
        (["--calls", "0"], "--calls must be >= 1"),
    ):
        with pytest.raises(SystemExit):
            profile_step.parse(argv)
        assert message in capsys.readouterr().err
    # This process's JAX has started without the CPU trace flag: a clear error, not a
    # trace with no CPU operations in it.
    import jax

    jax.devices()
    monkeypatch.setenv("XLA_FLAGS", "")
    with pytest.raises(RuntimeError, match="fresh process"):
        profile_step.enable_cpu_trace()


def test_gpu_script_commands_parse():
    """Every benchmark command in gpu.sh is accepted by its script's parser, as written
    (defaults of its time limits and variables filled in): a wrong flag or backend name
    would fail on the lent GPU, after its start-up, where device time is short."""
    import re
    import shlex

    text = (ROOT / "benchmarks" / "gpu.sh").read_text().replace("\\\n", " ")
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)  # ${VAR:-default} -> default
    text = text.replace("$out", "/tmp/out")
    parsers = {
        "run.py": load("run").parse,
        "lengths.py": load("lengths").parse,
    }
    seen = set()
    for line in text.splitlines():
        m = re.search(r'"\$py" benchmarks/(\w+\.py)(.*?)(>>|>|$)', line)
        if m:
            parsers[m.group(1)](shlex.split(m.group(2)))
            seen.add(m.group(1))
    assert seen == set(parsers)


class _Fixed:
    """A backend that returns given outputs, loss and gradients."""

    def __init__(self, ys, loss, grads):
        self.value = (ys, loss, grads)

    def result(self):
        return self.value


@pytest.mark.parametrize("cell", sorted(TORCH))  # both routes need PyTorch's module
def test_the_gate_fails_nan_and_never_checks_a_backend_against_itself(cell, monkeypatch):
    """Two routes to the reference gradients (PyTorch's float64 module, and float64 JAX
    autodiff of the catalogue's reference step) agree; without PyTorch the second one is
    the reference, not rnnjax's own float32 gradients (which passed a 3x error as 0.0).
    A NaN in any gradient fails (Python's max dropped one after the first tensor), and
    so does a backend that leaves a gradient out."""
    pytest.importorskip("torch")
    run = load("run")
    peers, w, x, y = _data(cell)
    torch_grads, source = run._reference_grads(cell, w, x, y)
    assert source == "torch float64"
    jax_grads = peers.reference_grads(cell, w, x, y)
    for k in peers.NAMES:
        np.testing.assert_allclose(jax_grads[k], torch_grads[k], rtol=1e-9, atol=1e-12)

    ys = peers.reference(cell, w, x, y.shape[-1])
    loss = 0.5 * float(np.mean((ys - y.astype(np.float64)) ** 2))
    right = {k: v.astype(np.float32) for k, v in torch_grads.items()}
    tripled = {k: 3 * v for k, v in right.items()}
    poisoned = {**right, "bias_hh": np.full_like(right["bias_hh"], np.nan)}
    impls = {
        "rnnjax": _Fixed(ys, loss, tripled),
        "peer": _Fixed(ys, loss, right),
        "nan": _Fixed(ys, loss, poisoned),
        "partial": _Fixed(ys, loss, {k: v for k, v in right.items() if k != "bias_hh"}),
    }
    monkeypatch.setattr(run, "_reference_grads", lambda *a: (None, None))  # no PyTorch
    report = run.gate(cell, impls, w, x, y, 1e-5, 1e-4)
    assert report["peer"]["ok"] and report["peer"]["max_rel_grad_error"] < 1e-6
    assert not report["rnnjax"]["ok"] and report["rnnjax"]["max_rel_grad_error"] > 1
    assert not report["nan"]["ok"] and report["nan"]["max_rel_grad_error"] == float("inf")
    assert report["peer"]["grad_reference"].startswith("float64 JAX autodiff")
    assert not report["partial"]["ok"] and "gradients named" in report["partial"]["error"]


def test_summary_names_what_was_not_timed_and_met_agrees_with_the_number():
    """A row whose rnnjax failed the gate stays in the targets as not met (it vanished);
    peers that failed or were skipped are listed; a speed-up that rounds up to its
    target but misses it shows enough digits; the GPU's t_rnnjax / t_cuDNN is the
    median of the per-round ratio."""
    report = load("report")
    ok = {"ok": True, "max_abs_output_error": 0.0, "max_rel_grad_error": 0.0}
    bad = {"ok": False, "max_abs_output_error": 0.3, "max_rel_grad_error": 2.0}
    gates = [
        {"config": "small", "cell": "lstm", "backends": {"rnnjax": ok, "torch": bad}},
        {"config": "large", "cell": "lstm", "backends": {"rnnjax": bad, "torch": ok}},
    ]
    rows = [
        _row("small", "train", {"rnnjax": 1.0, "flax/LSTMCell": 1.2496}, {"flax/LSTMCell": 1.2496}),
        _row("large", "train", {"torch": 1.0}, {}),
    ]
    record = {
        "rows": rows,
        "gates": gates,
        "skipped": {"equinox/lstm": "equinox is not installed"},
        "targets": {"train_speedup_over_best_peer": 1.25, "large_fraction_of_peak": 0.8},
        "environment": {"backend": "cpu"},
    }
    text = "\n".join(report.targets(record))
    assert (
        "| small | lstm | train | flax/LSTMCell | 1249.60 | 1000.00 | 1.2496x | 1.25x | no |"
        in text
    )
    assert "| large | lstm | train | | | failed the gate: output error 3.0e-01" in text
    assert "Large lstm training step: rnnjax not timed (failed the gate" in text
    assert "- small lstm: torch failed the gate: output error 3.0e-01" in text
    assert "- equinox/lstm: equinox is not installed" in text

    # GPU: rounds with t_rnnjax / t_cuDNN = 0.7, 0.7, 0.7, 0.75, 0.92, 1, 1, 1: median
    # 0.835, where 1 / the median of the inverse ratios gave 0.826 (near the 1.2
    # threshold the two can disagree): the per-round statistic is the one shown.
    cudnn = [1.0] * 8
    mine = [0.7, 0.7, 0.7, 0.75, 0.92, 1.0, 1.0, 1.0]
    row = _row("small", "infer", {"rnnjax": 1.0, CUDNN: 1.0}, {CUDNN: 1.0})
    row["times"]["rnnjax"]["samples_s"], row["times"][CUDNN]["samples_s"] = mine, cudnn
    record = {**record, "rows": [row], "gates": [], "environment": {"backend": "gpu"}}
    record["targets"].update(gpu_lstm_within_cudnn=1.2, gpu_lstm_speedup_over_flax=2.0)
    assert f"| small | infer | {CUDNN} | 0.83 | yes |" in "\n".join(report.targets(record))


def _floored(peers, monkeypatch, rounding):
    """``peers.reference`` whose float32 run is ``rounding`` off the float64 one at every
    step, standing in for a recurrence that amplifies float32 rounding."""
    exact = peers.reference

    def reference(cell, w, x, hidden, dtype=np.float64):
        ys = exact(cell, w, x, hidden, dtype)
        return ys + rounding if dtype == np.float32 else ys

    monkeypatch.setattr(peers, "reference", reference)


def test_the_gate_floors_its_tolerance_at_the_float32_references_own_error(monkeypatch):
    """Where the reference's own float32 run misses the fixed tolerance, a backend passes
    within ROUNDING_MARGIN times that error and no further; where it does not, the fixed
    tolerance stands."""
    run = load("run")
    peers = sys.modules["peers"]
    with rnnjax.cells.registered(_tiny_entry()):
        w, x, y = run.problem("tiny_elman", run.CONFIGS["tiny"])
        ys = peers.reference("tiny_elman", w, x, y.shape[-1])
        grads = peers.reference_grads("tiny_elman", w, x, y)

        def backend(err):
            out = ys + err
            loss = 0.5 * float(np.mean((out - y.astype(np.float64)) ** 2))
            return _Fixed(out, loss, grads)

        fixed = {"near": backend(5e-4), "far": backend(5e-2)}
        strict = run.gate("tiny_elman", fixed, w, x, y, 1e-5, 1.0)
        _floored(peers, monkeypatch, 1e-3)
        floored = run.gate("tiny_elman", fixed, w, x, y, 1e-5, 1.0)
    assert not strict["near"]["ok"] and not strict["near"]["rounding_floor"]
    assert floored["near"]["ok"] and floored["near"]["rounding_floor"]
    assert floored["near"]["output_tolerance"] == pytest.approx(
        run.ROUNDING_MARGIN * 1e-3, rel=1e-3
    )
    assert not floored["far"]["ok"]


@pytest.mark.parametrize("wrong_from", [0, 8])
def test_a_floored_backend_must_pass_the_short_sequence_at_the_fixed_tolerance(
    wrong_from, monkeypatch
):
    """``gate_cell`` gates a backend that passed through the rounding floor again on the
    first SHORT_STEPS steps at the fixed tolerances: an error there (a wrong equation
    shows from the first step) fails it, one that only grows later does not."""
    run = load("run")
    peers = sys.modules["peers"]
    assert run.SHORT_STEPS == 8

    def build(backend, cell, w, x, y):
        out = peers.reference(cell, w, x, y.shape[-1]).copy()
        out[:, wrong_from:] += 5e-3
        loss = 0.5 * float(np.mean((out - y.astype(np.float64)) ** 2))
        return {"fake": _Fixed(out, loss, peers.reference_grads(cell, w, x, y))}

    with rnnjax.cells.registered(_tiny_entry()):
        _floored(peers, monkeypatch, 1e-3)
        monkeypatch.setattr(peers, "build", build)
        g = run.gate_cell("tiny_elman", (3, 20, 4, 5), backends=("fake",), grad_rtol=1.0)
    r = g.backends["fake"]
    assert r["rounding_floor"] and r["short"]["steps"] == 8
    assert r["ok"] == (wrong_from == 8) == r["short"]["ok"]
