"""The linear recurrences (LRU, RG-LRU, minGRU, minLSTM): each against a float64 NumPy
transcription of its paper's equations (the catalogue's reference), the associative
loop against the sequential one, the log-space form against the linear one, the
initialisations against what their papers and the authors' code say, and the closed-form
Jacobians against the general route through the loop."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import numpy_step, randomize

import rnnjax
from rnnjax import diagnostics as dg
from rnnjax.cells import minrnn, rglru
from rnnjax.cells.lru import eigenvalues

LINEAR = ["lru", "rg_lru", "min_gru", "min_lstm"]
I, H, T = 3, 4, 9


def _problem(name, batch, dtype=jnp.float32, seed=0, **options):
    cell = rnnjax.make_cell(name, H, param_dtype=dtype, **options)
    k = jax.random.split(jax.random.key(seed), 4)
    params = randomize(cell.init(k[0], I), k[1], scale=0.6)
    xs = jax.random.normal(k[2], batch + (T, I), dtype)
    carry = jax.tree.map(
        lambda z: 0.5 * jax.random.normal(k[3], z.shape, dtype), cell.initial_carry(batch)
    )
    return cell, params, xs, carry


def _lengths(batch):
    n = int(np.prod(batch)) if batch else 1
    values = np.array(([T, 0, 4, 1, T - 1, 7] * 2)[:n])
    return jnp.asarray(values.reshape(batch)) if batch else jnp.asarray(values[0])


@pytest.mark.parametrize("name", LINEAR)
def test_each_cell_is_in_the_catalogue_and_declares_its_recurrence_linear(name):
    entry = rnnjax.cells.get(name)
    assert entry.family == "linear" and entry.torch is None
    cell = entry.make(H)
    assert cell.name == name and cell.linear is not None and cell.fused is None
    params = cell.init(jax.random.key(0), I)
    xs = jnp.zeros((2, T, I))
    assert rnnjax.plan(cell, params, xs, loop="associative").loop == "associative"


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_matches_the_papers_equations_in_numpy(name, reverse):
    cell, params, xs, carry = _problem(name, (4,))
    lengths = jnp.array([T, 0, 3, 6])
    final, ys = rnnjax.scan(cell, params, xs, carry, lengths=lengths, reverse=reverse)
    step = numpy_step(rnnjax.cells.get(name))
    finals, want = reference.run(
        lambda c, x: step(params, c, x), carry, np.asarray(xs), np.asarray(lengths), reverse
    )
    np.testing.assert_allclose(ys, want, rtol=2e-5, atol=2e-6)
    for b in range(4):
        got = [np.asarray(a)[b] for a in jax.tree.leaves(final)]
        want_b = jax.tree.leaves(finals[b])
        for g_leaf, w_leaf in zip(got, want_b, strict=True):
            np.testing.assert_allclose(g_leaf, w_leaf, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_associative_equals_sequential_in_float64(name, batch):
    """Outputs, final carry and every gradient, lengths including 0 and T, both
    directions: to 1e-10 in float64."""
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(name, batch, jnp.float64)
        lengths = _lengths(batch)
        w = jax.random.normal(jax.random.key(7), batch + (T, cell.hidden_size), jnp.float64)
        for reverse in (False, True):

            def loss(loop, reverse=reverse):
                def f(params, xs, carry):
                    final, ys = rnnjax.scan(
                        cell, params, xs, carry, lengths=lengths, reverse=reverse, loop=loop
                    )
                    tail = sum(jnp.sum(jnp.cos(a)) for a in jax.tree.leaves(final))
                    return jnp.sum(jnp.sin(ys) * w) + tail, (final, ys)

                return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(params, xs, carry)

            chex.assert_trees_all_close(
                loss("associative"), loss("sequential"), rtol=1e-10, atol=1e-12
            )


@pytest.mark.parametrize("name", LINEAR)
def test_associative_equals_sequential_in_float32_under_jit_and_vmap(name):
    cell, params, xs, carry = _problem(name, (2, 3))
    lengths = _lengths((2, 3))

    def run(loop):
        def f(params, xs, carry, lengths):
            return rnnjax.scan(cell, params, xs, carry, lengths=lengths, reverse=True, loop=loop)

        return jax.jit(jax.vmap(f, in_axes=(None, 0, 0, 0)))(params, xs, carry, lengths)

    chex.assert_trees_all_close(run("associative"), run("sequential"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_the_log_space_form_equals_the_linear_one(name):
    """The paper's numerically stable parallel form (log space) against the same scan on
    ``a`` and ``b`` themselves, with a carry of either sign, lengths and gradients."""
    with jax.enable_x64(True):
        log_cell, params, xs, carry = _problem(name, (4,), jnp.float64)
        lin_cell = rnnjax.make_cell(name, H, param_dtype=jnp.float64, log_space=False)
        assert log_cell.linear.log_coefficients is not None
        assert lin_cell.linear.log_coefficients is None
        lengths = jnp.array([T, 0, 5, 2])

        def run(cell):
            def f(params, xs):
                final, ys = rnnjax.scan(cell, params, xs, carry, lengths=lengths)
                return jnp.sum(ys**2) + jnp.sum(final), ys

            return jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(params, xs)

        chex.assert_trees_all_close(run(log_cell), run(lin_cell), rtol=1e-10, atol=1e-12)


def test_min_cells_g_and_log_g():
    """``g`` is positive and continuous at 0; ``log_g`` is its log without forming it."""
    x = jnp.linspace(-30.0, 30.0, 2001)
    assert bool(jnp.all(minrnn.g(x) > 0))
    np.testing.assert_allclose(minrnn.g(jnp.array([-1e-7, 0.0])), [0.5, 0.5], atol=1e-6)
    with jax.enable_x64(True):
        x64 = jnp.linspace(-30.0, 30.0, 2001, dtype=jnp.float64)
        np.testing.assert_allclose(minrnn.log_g(x64), jnp.log(minrnn.g(x64)), rtol=1e-12)


def test_min_lstm_without_normalisation_and_with_a_forget_bias():
    cell = rnnjax.make_cell("min_lstm", H, normalise=False, forget_bias=2.0)
    params = cell.init(jax.random.key(0), I)
    plain = rnnjax.make_cell("min_lstm", H).init(jax.random.key(0), I)
    np.testing.assert_allclose(params.b[H : 2 * H] - plain.b[H : 2 * H], 2.0, rtol=1e-6)
    np.testing.assert_array_equal(params.b[:H], plain.b[:H])
    xs = jax.random.normal(jax.random.key(1), (2, T, I))
    h = jnp.zeros((2, H))
    for t in range(T):  # the unnormalised update, by hand
        k = xs[:, t] @ params.w_x + params.b
        f, i = jax.nn.sigmoid(k[:, H : 2 * H]), jax.nn.sigmoid(k[:, 2 * H :])
        h = f * h + i * minrnn.g(k[:, :H])
    np.testing.assert_allclose(rnnjax.scan(cell, params, xs)[0], h, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="normalise must be True or False"):
        rnnjax.make_cell("min_lstm", H, normalise=1)


def test_min_cells_start_as_pytorch_linear():
    """The authors' code uses nn.Linear's default: U(+-1/sqrt(I)) for weights and biases."""
    inputs = 16
    for name, width in (("min_gru", 2 * H), ("min_lstm", 3 * H)):
        p = rnnjax.make_cell(name, H).init(jax.random.key(3), inputs)
        assert p.w_x.shape == (inputs, width) and p.b.shape == (width,)
        bound = 1 / math.sqrt(inputs)
        for a in (p.w_x, p.b):
            assert float(jnp.max(jnp.abs(a))) <= bound and float(jnp.max(jnp.abs(a))) > 0.5 * bound


@pytest.mark.parametrize("r_min,r_max,max_phase", [(0.0, 1.0, 2 * math.pi), (0.9, 0.999, 0.314)])
def test_lru_eigenvalues_start_in_the_ring_asked_for(r_min, r_max, max_phase):
    cell = rnnjax.make_cell("lru", 512, r_min=r_min, r_max=r_max, max_phase=max_phase)
    params = cell.init(jax.random.key(0), 3)
    lam = eigenvalues(params)
    modulus, phase = jnp.abs(lam), jnp.angle(lam) % (2 * math.pi)
    assert float(modulus.min()) >= r_min - 1e-6 and float(modulus.max()) <= r_max + 1e-6
    assert float(phase.max()) <= max_phase + 1e-5
    # |lambda|^2 uniform on [r_min^2, r_max^2] (area-uniform on the ring): its mean.
    mean_sq = float(jnp.mean(modulus**2))
    assert abs(mean_sq - (r_min**2 + r_max**2) / 2) < 0.05 * (r_max**2 - r_min**2) + 1e-3
    # float32: 1 - |lambda|^2 loses digits near |lambda| = 1 (2e-5 seen at 0.999).
    np.testing.assert_allclose(jnp.exp(params.gamma_log), jnp.sqrt(1 - modulus**2), rtol=1e-4)
    np.testing.assert_allclose(jnp.std(params.b_re), 1 / math.sqrt(2 * 3), rtol=0.15)
    with pytest.raises(ValueError, match="hidden_size of the LRU must be even"):
        rnnjax.make_cell("lru", 5)
    with pytest.raises(ValueError, match="r_min, r_max"):
        rnnjax.make_cell("lru", 4, r_min=0.5, r_max=0.4)


def test_rg_lru_initialisation_and_its_clipped_square_root():
    """The base ``a`` in [0.9, 0.999] (the code's ring), ``a^8`` below it; the backward of
    ``sqrt`` clipped at a derivative of 1000 (the code's ``sqrt_bound_derivative``)."""
    cell = rnnjax.make_cell("rg_lru", 256, num_blocks=4)
    params = cell.init(jax.random.key(0), 3)
    base = jnp.exp(-jax.nn.softplus(params.a_param))
    assert float(base.min()) >= 0.9 - 1e-6 and float(base.max()) <= 0.999 + 1e-6
    assert params.w_a.shape == (4, 64, 64)
    np.testing.assert_allclose(jnp.std(params.w_a), 1 / 8, rtol=0.05)  # 1 / sqrt(fan_in = 64)
    grad = jax.grad(lambda x: rglru.sqrt_bound_derivative(x, 1000.0))
    np.testing.assert_allclose(grad(0.0), 1000.0, rtol=1e-6)
    np.testing.assert_allclose(grad(0.25), 1.0, rtol=1e-6)  # unclipped: 1 / (2 sqrt(x))
    with pytest.raises(ValueError, match="num_blocks must divide"):
        rnnjax.make_cell("rg_lru", 6, num_blocks=4)


@pytest.mark.parametrize("name", LINEAR)
def test_closed_form_jacobians_equal_the_general_route(name):
    """For ``s_t = a_t s_{t-1} + b_t`` the Jacobian over the steps after ``t`` is the
    product of the ``a``: against the general route's vector-Jacobian products through
    the loop."""
    cell, params, xs, carry = _problem(name, ())
    closed = dg.jacobian_products(cell, params, xs, carry)  # auto: closed form
    general = dg.jacobian_products(cell, params, xs, carry, method="exact")
    chex.assert_trees_all_close(closed, general, rtol=1e-4, atol=1e-7)
    assert bool(jnp.all(jnp.diff(closed["frobenius"]) >= -1e-6))  # |a| <= 1: decays back
    with pytest.raises(ValueError, match="declares a linear recurrence"):
        lstm = rnnjax.lstm(H)
        dg.jacobian_products(lstm, lstm.init(jax.random.key(0), I), xs, method="closed_form")


@pytest.mark.parametrize("name", LINEAR)
def test_gradients_against_finite_differences(name):
    """``jax.test_util.check_grads`` in float64 through the associative loop."""
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(name, (2,), jnp.float64)

        def f(params, xs):
            return jnp.sum(jnp.tanh(rnnjax.scan(cell, params, xs, carry)[1]))

        check_grads(f, (params, xs), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", LINEAR)
def test_recurrent_scale_is_the_memory_timescale(name):
    """Where a cell declares one, ``g`` multiplies the memory timescale: ``|a| ->
    |a|^(1/g)``; minGRU and minLSTM have no recurrent parameter and declare none."""
    cell, params, xs, _ = _problem(name, ())
    if cell.recurrent_scale is None:
        assert name in ("min_gru", "min_lstm")
        return
    xp = cell.project(params, xs)
    a = cell.linear.coefficients(params, xp)[0]
    a2 = cell.linear.coefficients(cell.recurrent_scale(params, 2.0), xp)[0]
    if name == "rg_lru":  # a_t = base^(c r_t): the base's log halves
        np.testing.assert_allclose(jnp.abs(a2), jnp.sqrt(jnp.abs(a)), rtol=1e-5)
    else:
        np.testing.assert_allclose(jnp.abs(a2), jnp.abs(a) ** 0.5, rtol=1e-5)


@pytest.mark.parametrize("name", ["min_gru", "lru"])
def test_bfloat16_is_accumulated_in_float32_on_the_associative_loop(name):
    """A bfloat16 cell's associative scan accumulates in float32 (its states cast back):
    against the float32 cell on the same (bfloat16-representable) weights and inputs,
    closer than a bfloat16 accumulation over 100 steps gets."""
    steps = 100
    cell32 = rnnjax.make_cell(name, H)
    cell16 = rnnjax.make_cell(name, H, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    p16 = cell16.init(jax.random.key(0), I)
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p16)
    xs = jax.random.normal(jax.random.key(1), (2, steps, I)).astype(jnp.bfloat16)
    ys32 = rnnjax.scan(cell32, p32, xs.astype(jnp.float32))[1]
    ys16 = rnnjax.scan(cell16, p16, xs)[1]
    assert ys16.dtype == jnp.bfloat16
    err = float(jnp.max(jnp.abs(ys16.astype(jnp.float32) - ys32)))
    seq = rnnjax.scan(cell16, p16, xs, loop="sequential")[1]  # bfloat16 carried per step
    err_seq = float(jnp.max(jnp.abs(seq.astype(jnp.float32) - ys32)))
    scale = float(jnp.max(jnp.abs(ys32)))
    assert err < 2e-2 * scale and err <= err_seq
