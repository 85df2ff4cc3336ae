"""AntisymmetricRNN (``rnnjax/cells/antisymmetric.py``), plain and gated: the step and the
scan (lengths, reverse) against a float64 NumPy transcription of the paper's equations in
their column form (the entries' references), gradients against finite differences, the
antisymmetric structure (the step's eigenvalues at rest on the line ``1 - eps gamma``),
the Euler step's bound, the initialisation, the recurrent scale, bf16, and the layers
built from the catalogue name."""

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
asym = importlib.import_module("rnnjax.cells.antisymmetric")

B, T, I, H = 3, 7, 3, 6
LENGTHS = np.array([T, 0, 4])
EPS, GAMMA = 0.5, 0.1  # a step large enough for W, V and b to show in a few steps
ENTRIES = {False: asym.ENTRY, True: asym.GATED_ENTRY}


@contextlib.contextmanager
def in_catalogue(entry):
    """``entry`` in the catalogue: already there once the lead wires it into BUILTIN,
    registered for the test before that."""
    if entry.name in rnnjax.cells.names():
        yield rnnjax.cells.get(entry.name)
    else:
        with rnnjax.cells.registered(entry) as e:
            yield e


def _problem(gated, dtype=jnp.float32, seed=0, eps=EPS, gamma=GAMMA):
    cell = asym.antisymmetric(H, eps=eps, gamma=gamma, gated=gated, param_dtype=dtype)
    k = jax.random.split(jax.random.key(seed), 4)
    params = randomize(cell.init(k[0], I), k[1], scale=0.8)
    xs = jax.random.normal(k[2], (B, T, I), dtype)
    carry = 0.5 * jax.random.normal(k[3], (B, H), dtype)
    return cell, params, xs, carry


def _step(gated, eps=EPS, gamma=GAMMA):
    ref = functools.partial(asym.reference, eps=eps, gamma=gamma, gated=gated)
    return numpy_step(ENTRIES[gated]._replace(reference=ref))


@pytest.mark.parametrize("gated", [False, True])
def test_step_matches_the_papers_equations(gated):
    cell, params, xs, carry = _problem(gated)
    got = cell.step(params, carry, xs[:, 0])
    want = _step(gated)(params, carry, xs[:, 0])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
    # The entries' own references (the defaults eps = gamma = 0.01) against the
    # defaults' cell.
    cell0 = ENTRIES[gated].make(H)
    want0 = numpy_step(ENTRIES[gated])(params, carry, xs[:, 0])
    np.testing.assert_allclose(cell0.step(params, carry, xs[:, 0])[0], want0[0], rtol=1e-6)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_with_lengths_and_reverse_matches_the_reference(gated, reverse):
    cell, params, xs, carry = _problem(gated)
    step = _step(gated)
    final, ys = rnnjax.scan(cell, params, xs, carry, lengths=LENGTHS, reverse=reverse)
    finals, want = reference.run(
        lambda c, x: step(params, c, x), carry, np.asarray(xs), LENGTHS, reverse
    )
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final, np.stack(finals), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gated", [False, True])
def test_gradients_against_finite_differences(gated):
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(gated, jnp.float64)

        def loss(params, xs, carry):
            final, ys = rnnjax.scan(cell, params, xs, carry, lengths=LENGTHS)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(final**2)

        check_grads(
            jax.jit(loss), (params, xs, carry), order=1, modes=["rev"], atol=1e-6, rtol=1e-6
        )


def _jacobian_at_rest(cell, params):
    """``dh'/dh`` at ``h = 0`` with a zero projected input (``tanh' = 1`` there): ``I +
    eps A^T`` for the plain cell."""
    xp = jnp.zeros((H,)) if not cell.gated else (jnp.zeros((H,)), jnp.zeros((H,)))
    return np.asarray(jax.jacobian(lambda h: cell.recur(params, h, xp)[0])(jnp.zeros(H)))


@pytest.mark.parametrize("g", [1.0, 4.0])
def test_the_step_at_rest_sits_on_the_line_one_minus_eps_gamma(g):
    """``W - W^T`` has imaginary eigenvalues, ``-gamma I`` shifts them: the step's
    Jacobian at rest, ``I + eps A^T``, has every eigenvalue's real part ``1 - eps
    gamma``, at any recurrent scale ``g`` (``W -> g W``), while the imaginary parts grow
    with ``g``."""
    cell, params, _, _ = _problem(False)
    scaled = cell.recurrent_scale(params, g)
    np.testing.assert_allclose(scaled.w, g * params.w, rtol=1e-6)
    a = np.asarray(asym.recurrent_matrix(scaled, GAMMA), np.float64)
    np.testing.assert_allclose(a + a.T, -2 * GAMMA * np.eye(H), atol=1e-6)  # skew, less gamma
    w = np.asarray(params.w, np.float64)
    np.testing.assert_allclose(a, g * (w - w.T) - GAMMA * np.eye(H), rtol=1e-5, atol=1e-6)
    jac = _jacobian_at_rest(cell, scaled)
    np.testing.assert_allclose(jac, np.eye(H) + EPS * a.T, rtol=1e-5, atol=1e-6)
    lam = np.linalg.eigvals(jac)
    np.testing.assert_allclose(lam.real, 1 - EPS * GAMMA, atol=1e-5)
    base = np.linalg.eigvals(np.asarray(asym.recurrent_matrix(params, GAMMA), np.float64))
    np.testing.assert_allclose(
        np.sort(np.abs(lam.imag)), np.sort(g * EPS * np.abs(base.imag)), atol=1e-4
    )


@pytest.mark.parametrize("gated", [False, True])
def test_each_step_moves_the_state_by_at_most_eps(gated):
    """The Euler step's bound: ``|h_t - h_{t-1}| <= eps`` (``<= eps z`` with the gate)."""
    cell, params, xs, carry = _problem(gated)
    params = params._replace(w_x=3.0 * params.w_x)  # saturate the tanh
    _, hs = rnnjax.scan(cell, params, xs, carry, return_carries=True)
    steps = np.abs(np.diff(np.concatenate([carry[:, None], hs], axis=1), axis=1))
    assert steps.max() <= EPS + 1e-6 and steps.max() > 0.8 * EPS
    if gated:
        xp = cell.project(params, xs[:, 0])
        z = cell.gates(params, carry, xp)["input"]
        assert set(cell.gates(params, carry, xp)) == {"input"}
        assert float(z.min()) > 0 and float(z.max()) < 1
        assert np.all(steps[:, 0] <= EPS * np.asarray(z) + 1e-6)


def test_initialisation():
    """``W ~ N(0, w_std^2 / H)``, ``V ~ N(0, 1 / I)`` per block, zero biases."""
    wide_in, h = 100, 200
    for gated, w_std in ((False, 1.0), (True, 2.0)):
        p = asym.antisymmetric(h, gated=gated, w_std=w_std).init(jax.random.key(0), wide_in)
        blocks = 2 if gated else 1
        assert p.w_x.shape == (wide_in, blocks * h) and p.b.shape == (blocks * h,)
        np.testing.assert_allclose(np.std(p.w), w_std / np.sqrt(h), rtol=0.02)
        np.testing.assert_allclose(np.std(p.w_x), 1 / np.sqrt(wide_in), rtol=0.03)
        assert abs(float(np.mean(p.w))) < 0.05 * w_std / np.sqrt(h)
        np.testing.assert_array_equal(p.b, 0.0)


@pytest.mark.parametrize("gated", [False, True])
def test_declared_capabilities(gated):
    cell, params, xs, _ = _problem(gated)
    assert cell.fused is None and cell.gated == gated and (cell.gates is not None) == gated
    assert cell.name == ("antisymmetric_gated" if gated else "antisymmetric")
    with pytest.raises(ValueError, match="declares no fused recurrence"):
        rnnjax.scan(cell, params, xs, vjp="fused")


@pytest.mark.parametrize("gated", [False, True])
def test_bfloat16_stays_close_to_float32(gated):
    cell32, params, xs, _ = _problem(gated)
    cell16 = asym.antisymmetric(H, eps=EPS, gamma=GAMMA, gated=gated, dtype=jnp.bfloat16)
    ys16 = jax.jit(lambda p, x: rnnjax.scan(cell16, p, x, lengths=LENGTHS)[1])(params, xs)
    ys32 = rnnjax.scan(cell32, params, xs, lengths=LENGTHS)[1]
    assert ys16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(ys16, np.float32), ys32, atol=0.03)


@pytest.mark.parametrize("gated", [False, True])
def test_catalogue_entry_and_a_stacked_bidirectional_layer(gated):
    entry = ENTRIES[gated]
    assert entry.family == "bounded" and entry.torch is None
    assert entry.make(2).name == entry.name
    assert entry.matmul_flops(I, H) == 2 * H * ((2 if gated else 1) * I + H)
    _, _, xs, _ = _problem(gated)
    with in_catalogue(entry):
        layer = rnnjax.make_layer(entry.name, H, num_layers=2, bidirectional=True, eps=EPS)
        p = layer.init(jax.random.key(1), I)
        _, ys = layer.apply(p, xs, lengths=LENGTHS)
    cell = asym.antisymmetric(H, eps=EPS, gated=gated)
    _, y_f = rnnjax.scan(cell, p[0].forward, xs, lengths=LENGTHS)
    _, y_b = rnnjax.scan(cell, p[0].backward, xs, lengths=LENGTHS, reverse=True)
    x1 = jnp.concatenate([y_f, y_b], -1)
    _, z_f = rnnjax.scan(cell, p[1].forward, x1, lengths=LENGTHS)
    _, z_b = rnnjax.scan(cell, p[1].backward, x1, lengths=LENGTHS, reverse=True)
    assert float(jnp.max(jnp.abs(ys))) > 0.05
    np.testing.assert_allclose(ys, jnp.concatenate([z_f, z_b], -1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"eps": 0.0}, "eps must be a positive number"),
        ({"eps": True}, "eps must be a positive number"),
        ({"gamma": -0.1}, "gamma must be a number >= 0"),
        ({"w_std": 0}, "w_std must be a positive number"),
        ({"gated": "yes"}, "gated must be True or False"),
        ({"gamma": "0.1"}, "gamma must be a number >= 0"),
    ],
)
def test_bad_options_name_the_argument(options, match):
    with pytest.raises(ValueError, match=match):
        asym.antisymmetric(H, **options)
