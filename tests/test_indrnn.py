"""IndRNN (``rnnjax/cells/indrnn.py``): the step and the scan (lengths, reverse) against a
float64 NumPy transcription of the paper's eq. 2 with the authors' bound on ``|u|``
(the entry's reference), gradients against finite differences, the authors'
initialisation and bound, what the in-step constraint does to the gradient, the
recurrent scale, bf16, and the layers built from the catalogue name."""

import contextlib
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import numpy_step, randomize
from jax.test_util import check_grads

import rnnjax

# The modules, not the factories rnnjax.cells exports under the same names.
indrnn = importlib.import_module("rnnjax.cells.indrnn")

B, T, I, H = 3, 7, 3, 6
LENGTHS = np.array([T, 0, 4])


@contextlib.contextmanager
def in_catalogue(entry):
    """``entry`` in the catalogue: already there once the lead wires it into BUILTIN,
    registered for the test before that."""
    if entry.name in rnnjax.cells.names():
        yield rnnjax.cells.get(entry.name)
    else:
        with rnnjax.cells.registered(entry) as e:
            yield e


def _problem(dtype=jnp.float32, seed=0, **options):
    """Random params (``u`` of either sign, some beyond the bound 1), inputs, carry."""
    cell = indrnn.indrnn(H, param_dtype=dtype, **options)
    k = jax.random.split(jax.random.key(seed), 4)
    params = randomize(cell.init(k[0], I), k[1], scale=1.0)
    xs = jax.random.normal(k[2], (B, T, I), dtype)
    carry = 0.5 * jax.random.normal(k[3], (B, H), dtype)
    return cell, params, xs, carry


def _reference(**options):
    """The entry's float64 NumPy step for the cell made with ``options``."""
    bound = indrnn.recurrent_bound(options["horizon"]) if "horizon" in options else 1.0
    ref = functools.partial(indrnn.reference, u_max=bound, constrain=options.get("constrain", True))
    return numpy_step(indrnn.ENTRY._replace(reference=ref)), bound


OPTIONS = [{}, {"constrain": False}, {"horizon": 5}]


@pytest.mark.parametrize("options", OPTIONS, ids=["default", "unconstrained", "horizon5"])
def test_step_matches_the_papers_equation(options):
    cell, params, xs, carry = _problem(**options)
    step, bound = _reference(**options)
    u = np.abs(np.asarray(params.u))
    assert (u > bound).any() and (u < bound).any()  # both sides of the clip exercised
    got = cell.step(params, carry, xs[:, 0])
    want = step(params, carry, xs[:, 0])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_with_lengths_and_reverse_matches_the_reference(reverse):
    cell, params, xs, carry = _problem()
    step, _ = _reference()
    final, ys = rnnjax.scan(cell, params, xs, carry, lengths=LENGTHS, reverse=reverse)
    finals, want = reference.run(
        lambda c, x: step(params, c, x), carry, np.asarray(xs), LENGTHS, reverse
    )
    assert (want != 0).any()  # relu leaves something on
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final, np.stack(finals), rtol=1e-5, atol=1e-6)


def test_gradients_against_finite_differences():
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(jnp.float64)
        # Away from the clip's corners, where finite differences straddle a kink.
        assert float(jnp.min(jnp.abs(jnp.abs(params.u) - 1.0))) > 1e-2

        def loss(params, xs, carry):
            final, ys = rnnjax.scan(cell, params, xs, carry, lengths=LENGTHS)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(final**2)

        check_grads(
            jax.jit(loss), (params, xs, carry), order=1, modes=["rev"], atol=1e-6, rtol=1e-6
        )


def test_the_authors_bound_and_initialisation():
    """``U_bound = MAG^(1/T)``; ``u ~ U(0, U_bound)``; the last layer ``U(1/U_bound,
    U_bound)``; the adding code's input weights ``N(0, 0.001^2)``, zero bias."""
    # The code writes it as 10^(log10(MAG)/T); the paper as |u| in (0, 2^(1/T)).
    assert indrnn.recurrent_bound(784) == pytest.approx(10 ** (np.log10(2) / 784), rel=1e-12)
    assert indrnn.recurrent_bound(100, 10.0) == pytest.approx(10**0.01, rel=1e-12)
    wide = 4000
    cases = {
        "default": ({}, 0.0, 1.0),
        "horizon": ({"horizon": 784}, 0.0, 2 ** (1 / 784)),
        "last_layer": ({"horizon": 100, "last_layer": True}, 2 ** (-1 / 100), 2 ** (1 / 100)),
        "u_max": ({"u_max": 0.5}, 0.0, 0.5),
    }
    for name, (options, low, high) in cases.items():
        p = indrnn.indrnn(wide, **options).init(jax.random.key(1), I)
        u = np.asarray(p.u, np.float64)
        assert u.min() >= low - 1e-6 and u.max() <= high + 1e-6, name
        # Uniform over the whole range: its ends reached, its mean in the middle.
        span = high - low
        assert u.min() < low + 0.01 * span and u.max() > high - 0.01 * span, name
        assert abs(u.mean() - (low + high) / 2) < 0.02 * span, name
    ones = indrnn.indrnn(8, last_layer=True).init(jax.random.key(0), I).u  # u_max = 1
    np.testing.assert_array_equal(ones, np.ones(8))
    p = indrnn.indrnn(wide).init(jax.random.key(2), I)
    np.testing.assert_allclose(np.std(p.w_x), 1e-3, rtol=0.05)
    np.testing.assert_array_equal(p.b, 0.0)


def test_the_constraint_clips_the_weight_the_step_reads():
    """Forward: the constrained cell at ``u`` is the unconstrained one at the projected
    ``u``. Backward: zero for a unit beyond the bound; after the authors' projection
    (``clip_recurrent``) the unconstrained gradient, the boundary counting as inside."""
    cell, params, xs, carry = _problem()
    free = indrnn.indrnn(H, constrain=False)
    projected = indrnn.clip_recurrent(params, 1.0)
    outside = np.abs(np.asarray(params.u)) > 1.0
    assert outside.any() and not outside.all()
    np.testing.assert_array_equal(np.abs(projected.u[outside]), 1.0)

    def loss(cell):
        return jax.jit(
            jax.grad(
                lambda p: jnp.sum(jnp.sin(rnnjax.scan(cell, p, xs, carry, lengths=LENGTHS)[1]))
            )
        )

    np.testing.assert_allclose(
        rnnjax.scan(cell, params, xs, carry)[1], rnnjax.scan(free, projected, xs, carry)[1]
    )
    g, g_free = loss(cell)(params), loss(free)(projected)
    np.testing.assert_array_equal(g.u[outside], 0.0)
    np.testing.assert_allclose(g.u[~outside], g_free.u[~outside], rtol=1e-6, atol=1e-7)
    g_projected = loss(cell)(projected)
    np.testing.assert_allclose(g_projected.u, g_free.u, rtol=1e-6, atol=1e-7)
    assert np.all(np.asarray(g_free.u[outside]) != 0.0)  # what the clip zeroed


@pytest.mark.parametrize("g", [0.5, 3.0])
def test_recurrent_scale_scales_u_and_the_bound_caps_it(g):
    """``u -> g u``; the step's Jacobian is ``diag(relu' * clip(g u))``: diagonal (the
    units are independent) and never beyond the bound."""
    cell, params, xs, carry = _problem()
    scaled = cell.recurrent_scale(params, g)
    np.testing.assert_allclose(scaled.u, g * params.u, rtol=1e-6)
    np.testing.assert_array_equal(scaled.w_x, params.w_x)
    xp = cell.project(scaled, xs[0, 0])
    h = carry[0]
    jac = jax.jacobian(lambda h: cell.recur(scaled, h, xp)[0])(h)
    active = (xp + np.clip(g * params.u, -1, 1) * h) > 0
    want = np.where(active, np.clip(g * np.asarray(params.u), -1.0, 1.0), 0.0)
    np.testing.assert_allclose(jac, np.diag(want), rtol=1e-6, atol=1e-7)
    assert np.abs(np.diag(jac)).max() <= 1.0


def test_no_fused_backward_is_declared():
    cell, params, xs, _ = _problem()
    assert cell.fused is None and not cell.gated and cell.gates is None
    assert rnnjax.plan(cell, params, xs).backward == "autodiff"
    with pytest.raises(ValueError, match="declares no fused recurrence"):
        rnnjax.scan(cell, params, xs, vjp="fused")


def test_bfloat16_stays_close_to_float32():
    cell32, params, xs, _ = _problem()
    params = params._replace(w_x=10.0 * params.w_x)  # outputs of order 1
    cell16 = indrnn.indrnn(H, dtype=jnp.bfloat16)
    ys16 = jax.jit(lambda p, x: rnnjax.scan(cell16, p, x, lengths=LENGTHS)[1])(params, xs)
    ys32 = rnnjax.scan(cell32, params, xs, lengths=LENGTHS)[1]
    assert ys16.dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(ys32)))
    assert scale > 1.0
    np.testing.assert_allclose(np.asarray(ys16, np.float32), ys32, atol=0.02 * scale)


def test_catalogue_entry_and_a_stacked_bidirectional_layer():
    entry = indrnn.ENTRY
    assert entry.family == "independent" and entry.torch is None
    assert entry.make(2).name == "indrnn"
    assert entry.matmul_flops(I, H) == 2 * H * I
    cell, _, xs, _ = _problem()
    with in_catalogue(entry):
        layer = rnnjax.make_layer("indrnn", H, num_layers=2, bidirectional=True, horizon=T)
        p = layer.init(jax.random.key(1), I)
        p = jax.tree.map(lambda a: a * 300.0 if a.ndim == 2 else a, p)  # visible outputs
        _, ys = layer.apply(p, xs, lengths=LENGTHS)
    cell = indrnn.indrnn(H, horizon=T)
    _, y_f = rnnjax.scan(cell, p[0].forward, xs, lengths=LENGTHS)
    _, y_b = rnnjax.scan(cell, p[0].backward, xs, lengths=LENGTHS, reverse=True)
    x1 = jnp.concatenate([y_f, y_b], -1)
    _, z_f = rnnjax.scan(cell, p[1].forward, x1, lengths=LENGTHS)
    _, z_b = rnnjax.scan(cell, p[1].backward, x1, lengths=LENGTHS, reverse=True)
    assert float(jnp.max(jnp.abs(ys))) > 0.1
    np.testing.assert_allclose(ys, jnp.concatenate([z_f, z_b], -1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"horizon": 0}, "horizon"),
        ({"horizon": 2.5}, "horizon"),
        ({"horizon": 10, "u_max": 1.0}, "horizon or u_max"),
        ({"u_max": -1.0}, "u_max must be a positive number"),
        ({"horizon": 10, "magnitude": 0.5}, "magnitude must be a number >= 1"),
        ({"magnitude": 10.0}, "give horizon too"),
        ({"constrain": "yes"}, "constrain must be True or False"),
        ({"last_layer": 1}, "last_layer must be True or False"),
        ({"u_max": 0.5, "last_layer": True}, "needs u_max >= 1"),
    ],
)
def test_bad_options_name_the_argument(options, match):
    with pytest.raises(ValueError, match=match):
        indrnn.indrnn(H, **options)
