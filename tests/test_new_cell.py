"""A new cell in one place: each cell below is defined in this file, with one catalogue
entry, and runs through everything the library and the laboratory offer with no other
file edited (issue "One cell, one file").

- ``leaky_gated``: every optional capability declared (gated, its gates, the fused
  backward without a written-out step VJP, a recurrent scale):
  ``f = sigmoid(x W_f + b_f)``, ``n = tanh(x W_n + b_n + h W_h)``,
  ``h' = (1 - f) * h + f * n``.
- ``core_only``: the required core alone: ``h' = tanh(x W_x + b + h W_h) / 2 + h / 2``.
"""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import numpy_step, randomize

import rnnjax
from rnnjax import diagnostics as dg
from rnnjax.cells.base import (
    Cell,
    Entry,
    FusedRecurrence,
    check_input,
    check_positive_int,
    scale_w_h,
)
from rnnjax.modules import Recurrent, SequenceModel


class NewParams(NamedTuple):
    w_x: jax.Array  # [I, K H]
    w_h: jax.Array  # [H, H]
    b: jax.Array  # [K H]


def _init(blocks, H, param_dtype):
    def init(key, input_size):
        input_size = check_positive_int("input_size", input_size)
        k = jax.random.split(key, 3)
        return NewParams(
            jax.random.normal(k[0], (input_size, blocks * H), param_dtype) / np.sqrt(input_size),
            jax.nn.initializers.orthogonal()(k[1], (H, H), param_dtype),
            jnp.zeros((blocks * H,), param_dtype),
        )

    return init


def _zeros(H, param_dtype):
    def initial_carry(batch_shape=(), dtype=None):
        shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
        return jnp.zeros(shape + (H,), dtype or param_dtype)

    return initial_carry


def _project(params, xs):
    check_input(xs, params.w_x.shape[0], "xs")
    return xs @ params.w_x + params.b


def leaky_gated(hidden_size: int, *, param_dtype=jnp.float32) -> Cell:
    H = check_positive_int("hidden_size", hidden_size)

    def gates(params, h, xp):
        return {"update": jax.nn.sigmoid(xp[..., :H])}

    def recur_z(params, h, xp, z):
        f = jax.nn.sigmoid(xp[..., :H])
        h_new = ((1.0 - f) * h + f * jnp.tanh(xp[..., H:] + z)).astype(h.dtype)
        return h_new, h_new

    def recur(params, h, xp):
        return recur_z(params, h, xp, h @ params.w_h)

    return Cell(
        name="leaky_gated",
        hidden_size=H,
        init=_init(2, H, param_dtype),
        initial_carry=_zeros(H, param_dtype),
        project=_project,
        recur=recur,
        output=lambda h: h,
        gated=True,
        gates=gates,
        fused=FusedRecurrence(recur_z),
        recurrent_scale=scale_w_h,
    )


def leaky_gated_reference(xp, params, h, x):
    w_x, w_h, b = params
    H = h.shape[-1]
    z = x @ w_x + b
    f = 1.0 / (1.0 + xp.exp(-z[..., :H]))
    h_new = (1.0 - f) * h + f * xp.tanh(z[..., H:] + h @ w_h)
    return h_new, h_new


def core_only(hidden_size: int, *, param_dtype=jnp.float32) -> Cell:
    H = check_positive_int("hidden_size", hidden_size)

    def recur(params, h, xp):
        h_new = (0.5 * jnp.tanh(xp + h @ params.w_h) + 0.5 * h).astype(h.dtype)
        return h_new, h_new

    return Cell(
        name="core_only",
        hidden_size=H,
        init=_init(1, H, param_dtype),
        initial_carry=_zeros(H, param_dtype),
        project=_project,
        recur=recur,
        output=lambda h: h,
    )


def core_only_reference(xp, params, h, x):
    w_x, w_h, b = params
    h_new = 0.5 * xp.tanh(x @ w_x + b + h @ w_h) + 0.5 * h
    return h_new, h_new


ENTRIES = {
    "leaky_gated": Entry(
        "leaky_gated",
        leaky_gated,
        leaky_gated_reference,
        lambda i, h: 2 * h * (2 * i + h),
        family="test",
        summary="a gated leaky RNN defined in a test",
    ),
    "core_only": Entry(
        "core_only",
        core_only,
        core_only_reference,
        lambda i, h: 2 * h * (i + h),
        family="test",
        summary="a cell with only the required core",
    ),
}
B, T, I, H = 4, 7, 3, 5


@pytest.fixture(params=sorted(ENTRIES))
def entry(request):
    with rnnjax.cells.registered(ENTRIES[request.param]) as e:
        yield e


def _problem(entry, seed=0):
    cell = rnnjax.make_cell(entry.name, H)
    k = jax.random.split(jax.random.key(seed), 4)
    params = randomize(cell.init(k[0], I), k[1])
    xs = jax.random.normal(k[2], (B, T, I))
    carry = 0.5 * jax.random.normal(k[3], (B, H))
    return cell, params, xs, carry


def test_the_catalogue_names_it_once(entry):
    assert entry.name in rnnjax.cells.names()
    assert rnnjax.make_cell(entry.name, H).name == entry.name
    with pytest.raises(ValueError, match="already in the catalogue"):
        rnnjax.cells.register(entry)
    wrong = entry._replace(name="other_name")
    with pytest.raises(ValueError, match="makes a cell named"):
        rnnjax.cells.register(wrong)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_with_lengths_and_reverse_matches_its_numpy_reference(entry, reverse):
    cell, params, xs, carry = _problem(entry)
    lengths = jnp.array([T, 0, 3, 6])
    final, ys = rnnjax.scan(cell, params, xs, carry, lengths=lengths, reverse=reverse)
    step = numpy_step(entry)
    finals, want = reference.run(
        lambda c, x: step(params, c, x), carry, np.asarray(xs), np.asarray(lengths), reverse
    )
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final, np.stack(finals), rtol=1e-5, atol=1e-6)


def test_the_plan_reads_the_declarations_and_every_path_agrees(entry):
    """Fused backward only where declared; remat, the fused and JAX's backward, the
    projection in or before the loop: one loss, one gradient."""
    cell, params, xs, carry = _problem(entry)
    lengths = jnp.array([T, 2, 0, 5])
    plan = rnnjax.plan(cell, params, xs, carry)
    assert plan.backward == ("fused" if cell.fused is not None else "autodiff")
    assert plan.hoist == (jax.default_backend() != "cpu" or not cell.gated)
    w = jax.random.normal(jax.random.key(5), (B, T, H))

    def grads(**options):
        def f(params, xs, carry):
            final, ys = rnnjax.scan(cell, params, xs, carry, lengths=lengths, **options)
            return jnp.sum(jnp.tanh(ys) * w) + jnp.sum(final**2)

        return jax.value_and_grad(f, argnums=(0, 1, 2))(params, xs, carry)

    want = grads(vjp="autodiff", hoist=True)
    for options in ({}, {"remat": 3}, {"hoist": False}, {"reverse": True, "remat": True}):
        got = grads(**options)
        if options.get("reverse"):
            want_r = grads(vjp="autodiff", reverse=True)
            chex.assert_trees_all_close(got, want_r, rtol=2e-5, atol=2e-6)
        else:
            chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-6)
    if cell.fused is None:
        with pytest.raises(ValueError, match="declares no fused recurrence"):
            rnnjax.scan(cell, params, xs, vjp="fused")


def test_layers_and_flax_modules(entry):
    cell, params, xs, _ = _problem(entry)
    lengths = jnp.array([T, 2, 0, 5])
    layer = rnnjax.make_layer(entry.name, H, num_layers=2, bidirectional=True)
    p = layer.init(jax.random.key(1), I)
    final, ys = layer.apply(p, xs, lengths=lengths)
    # The stack by hand: each direction is rnnjax.scan, the second layer reads the first.
    f0, y_f = rnnjax.scan(cell, p[0].forward, xs, lengths=lengths)
    b0, y_b = rnnjax.scan(cell, p[0].backward, xs, lengths=lengths, reverse=True)
    x1 = jnp.concatenate([y_f, y_b], -1)
    _, z_f = rnnjax.scan(cell, p[1].forward, x1, lengths=lengths)
    _, z_b = rnnjax.scan(cell, p[1].backward, x1, lengths=lengths, reverse=True)
    np.testing.assert_allclose(ys, jnp.concatenate([z_f, z_b], -1), rtol=1e-5, atol=1e-6)
    module = Recurrent(layer)
    variables = module.init(jax.random.key(1), xs, lengths)
    chex.assert_trees_all_close(
        module.apply(variables, xs, lengths),
        layer.apply(variables["params"]["layer"], xs, lengths=lengths),
    )
    model = SequenceModel(rnnjax.make_layer(entry.name, H), num_outputs=2, head="last")
    out = model.apply(model.init(jax.random.key(2), xs, lengths), xs, lengths)
    assert out.shape == (B, 2) and np.isfinite(out).all()


def test_diagnostics(entry):
    cell, params, xs, carry = _problem(entry)

    def loss(ys, final):
        return jnp.sum(jnp.sin(ys[..., -1, :]))

    _, grads = dg.hidden_grads(cell, params, xs, loss, carry)
    # Route 2: dL/dh_t by finite differences of the loss in a perturbation of h_t.
    t, b, j, eps = 3, 1, 2, 1e-3
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        x64, c64 = xs.astype(jnp.float64), carry.astype(jnp.float64)

        def perturbed(delta):
            e = jnp.zeros((T, B, H), jnp.float64).at[t, b, j].set(delta)
            final, ys = rnnjax.scan(cell, p64, x64, c64, perturbation=rnnjax.Perturbation(e))
            return loss(ys, final)

        fd = (perturbed(eps) - perturbed(-eps)) / (2 * eps)
    np.testing.assert_allclose(grads[t, b, j], fd, rtol=1e-3, atol=1e-5)
    # dh_T/dh_{T-2} against the product of two one-step Jacobians, by jax.jacobian.
    spectra = dg.jacobian_products(cell, params, xs[0])
    _, hs = rnnjax.scan(cell, params, xs[0], return_carries=True)
    xp = cell.project(params, xs[0])
    step_jac = [
        jax.jacobian(lambda h, t=t: cell.recur(params, h, xp[t])[0])(hs[t - 1])
        for t in (T - 2, T - 1)
    ]
    product = step_jac[1] @ step_jac[0]
    np.testing.assert_allclose(spectra["frobenius"][T - 3], np.linalg.norm(product), rtol=1e-4)
    np.testing.assert_allclose(spectra["sigma_max"][T - 3], np.linalg.norm(product, 2), rtol=1e-4)
    if cell.gates is None:
        with pytest.raises(ValueError, match="declares no gates"):
            dg.gate_stats(cell, params, xs)
    else:
        assert set(dg.gate_stats(cell, params, xs)) == {"update"}


def test_the_vanishing_study_takes_it(entry, tmp_path):
    """A tiny run of the main job with the new cell alone: it joins every section its
    declarations allow (the gate statistics and the scale sweep for the gated cell with
    a scale; neither for the core-only one; the clipping study for neither)."""
    import json

    import vanishing_gradients

    tiny = "--hidden_size 5 --lengths 8 --seeds 2 --batch_size 4 --sweep_len 8 "
    tiny += "--train_lengths 8 --train_steps 3 --eval_size 8 --scales 0.5,1.5"
    argv = tiny.split() + ["--no-progress", "--cells", entry.name]
    assert vanishing_gradients.main(argv + ["--out", str(tmp_path / "vg")]) == 0
    summary = json.loads((tmp_path / "vg" / "summary.json").read_text())
    assert f"{entry.name}/T8" in summary["init"] and entry.name in summary["jacobian"]
    assert np.isfinite(summary["train"][f"{entry.name}/T8"]["mse"]["mean"])
    scaled = {f"{entry.name}/g0.5", f"{entry.name}/g1.5"}
    assert (scaled <= set(summary["sweep"])) == (entry.name == "leaky_gated")
    assert (entry.name in summary["gates"]) == (entry.name == "leaky_gated")
    assert summary["clip"] == {}  # gated, or ungated without a scale


def test_the_benchmark_gate_takes_it(entry):
    """The benchmark's correctness gate, in process: rnnjax's default plan and JAX's own
    backward against the entry's float64 reference; the peers, which have no such cell,
    are listed as skipped, not dropped."""
    import run

    gate = run.gate_cell(entry.name, backends=("rnnjax", "rnnjax-autodiff", "torch", "flax"))
    assert gate.ok and set(gate.backends) == {"rnnjax", "rnnjax (vjp=autodiff)"}
    assert all(r["ok"] for r in gate.backends.values())
    assert {"torch", "flax"} <= {k.split("/")[0] for k in gate.skipped}
