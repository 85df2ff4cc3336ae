"""Every diagnostic against a brute-force route through a hand-built unrolled loop."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import numpy_step, randomize

import rnnjax
from rnnjax import diagnostics as dg

I, H, T = 3, 4, 7
CELLS = ["rnn_tanh", "lstm", "gru"]


def setup(name, batch=(2,)):
    cell = rnnjax.make_cell(name, H)
    params = randomize(cell.init(jax.random.key(0), I), jax.random.key(1), scale=0.7)
    xs = jax.random.normal(jax.random.key(2), batch + (T, I))
    return cell, params, xs


def last_step_loss(ys, final):
    return jnp.sum(jnp.sin(ys[..., -1, :]))


def all_steps_loss(ys, final):
    return jnp.sum(jnp.cos(ys) * jnp.arange(1, ys.shape[-2] + 1)[:, None])


def unrolled(cell, params, xs, eps=None, w_eps=None):
    """A Python loop over cell.step: the brute-force route (no scan, no hook)."""
    carry = cell.initial_carry(xs.shape[:-2])
    ys = []
    for t in range(xs.shape[-2]):
        p = (
            params
            if w_eps is None
            else jax.tree.map(jnp.add, params, jax.tree.map(lambda e: e[t], w_eps))
        )
        carry, _ = cell.step(p, carry, xs[..., t, :])
        if eps is not None:
            carry = jax.tree.map(jnp.add, carry, jax.tree.map(lambda e: e[t], eps))
        ys.append(cell.output(carry))
    return carry, jnp.stack(ys, axis=-2)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("loss_fn", [last_step_loss, all_steps_loss])
def test_hidden_grads_equal_hand_built_unrolled_loop(name, loss_fn):
    cell, params, xs = setup(name)
    loss, grads = dg.hidden_grads(cell, params, xs, loss_fn)
    eps = jax.tree.map(lambda a: jnp.zeros((T,) + a.shape), cell.initial_carry((2,)))
    want = jax.grad(lambda e: loss_fn(*unrolled(cell, params, xs, e)[::-1]))(eps)
    chex.assert_trees_all_close(grads, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, loss_fn(*rnnjax.scan(cell, params, xs)[::-1]), rtol=1e-6)


@pytest.mark.parametrize("name", CELLS)
def test_hidden_grads_equal_gradient_of_the_remaining_run(name):
    """Second route without any perturbation: dL/dh_t = grad of 'run steps t+1..T from h'."""
    cell, params, xs = setup(name, batch=())
    _, grads = dg.hidden_grads(cell, params, xs, last_step_loss)
    _, states = rnnjax.scan(cell, params, xs, time_major=True, return_carries=True)
    for t in range(T - 1):
        state_t = jax.tree.map(lambda s: s[t], states)

        def rest(c):
            _, ys = rnnjax.scan(cell, params, xs[t + 1 :], c)
            return jnp.sum(jnp.sin(ys[-1]))

        chex.assert_trees_all_close(
            jax.tree.map(lambda g: g[t], grads), jax.grad(rest)(state_t), rtol=1e-5, atol=1e-6
        )


def test_lstm_hidden_grads_have_h_and_c():
    cell, params, xs = setup("lstm")
    _, grads = dg.hidden_grads(cell, params, xs, last_step_loss)
    assert isinstance(grads, rnnjax.LSTMCarry) and grads.h.shape == grads.c.shape == (T, 2, H)
    norms = dg.grad_norms(grads)
    assert norms.h.shape == (T, 2)


def _run_from(cell, params, xs, t, state):
    """h_T as a function of the state after step t (brute force, a Python loop)."""
    carry = state
    for s in range(t + 1, xs.shape[0]):
        carry, _ = cell.step(params, carry, xs[s])
    return cell.output(carry)


@pytest.mark.parametrize("name", CELLS)
def test_jacobian_products_equal_jacrev_of_the_remaining_run(name):
    cell, params, xs = setup(name, batch=())
    got = dg.jacobian_products(cell, params, xs)
    _, states = rnnjax.scan(cell, params, xs, time_major=True, return_carries=True)
    for t in range(T):
        state_t = jax.tree.map(lambda s: s[t], states)
        flat, unravel = jax.flatten_util.ravel_pytree(state_t)
        jac = jax.jacrev(lambda v: _run_from(cell, params, xs, t, unravel(v)))(flat)
        sv = np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False)
        np.testing.assert_allclose(got["sigma_max"][t], sv[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got["sigma_min"][t], sv[-1], rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(got["frobenius"][t], np.linalg.norm(jac), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got["distance"], np.arange(T)[::-1])


@pytest.mark.parametrize("name", ["rnn_tanh", "lstm"])
def test_matrix_free_jacobian_estimates_match_exact(name):
    cell, params, xs = setup(name, batch=())
    exact = dg.jacobian_products(cell, params, xs)
    free = dg.jacobian_products(
        cell, params, xs, method="matrix_free", num_probes=2000, num_iters=50
    )
    np.testing.assert_allclose(free["sigma_max"], exact["sigma_max"], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(free["frobenius"], exact["frobenius"], rtol=0.1)
    assert np.isnan(free["sigma_min"]).all()


def test_tanh_step_jacobian_is_diag_tanh_prime_times_w_h():
    cell, params, xs = setup("rnn_tanh", batch=())
    got = dg.step_jacobians(cell, params, xs)
    _, hs = rnnjax.scan(cell, params, xs)
    w_h = np.asarray(params.w_h, np.float64)
    for t in range(T):
        want = np.diag(1 - np.asarray(hs[t], np.float64) ** 2) @ w_h.T
        np.testing.assert_allclose(got["jacobian"][t], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["spectral_norm"][t], np.linalg.norm(want, 2), rtol=1e-5)


@pytest.mark.parametrize("g", [0.5, 0.9, 1.2])
def test_linear_rnn_decays_by_exactly_g_per_step(g):
    with jax.enable_x64(True):
        cell = rnnjax.elman(
            H,
            activation="identity",
            param_dtype=jnp.float64,
            recurrent_init=lambda k, s, d: g * jnp.eye(s[0], dtype=d),
        )
        params = cell.init(jax.random.key(0), I)
        xs = jax.random.normal(jax.random.key(1), (3, 20, I), jnp.float64)
        _, grads = dg.hidden_grads(cell, params, xs, last_step_loss)
        norms = dg.grad_norms(grads)
        # dL/dh_t = g^(T-1-t) dL/dh_T, example by example:
        ratio = norms[:-1] / norms[1:]
        np.testing.assert_allclose(ratio, g, rtol=1e-12)
        _, factor = dg.decay_rate(norms)
        np.testing.assert_allclose(factor, g, rtol=1e-12)


def test_decay_rate_recovers_a_known_slope():
    distance = np.arange(30)[::-1]
    norms = 3.0 * np.exp(-0.2 * distance)
    slope, factor = dg.decay_rate(jnp.asarray(norms)[:, None])
    np.testing.assert_allclose(slope, -0.2, rtol=1e-5)
    np.testing.assert_allclose(factor, np.exp(-0.2), rtol=1e-5)


def test_gate_stats_match_numpy_and_hand_set_biases():
    cell, params, xs = setup("lstm")
    stats = dg.gate_stats(cell, params, xs)
    # NumPy route: z = x W_x + h W_h + b, gates from the reference loop's states.
    w_x, w_h, b = (np.asarray(a, np.float64) for a in params)
    x = np.asarray(xs, np.float64)
    h, c = np.zeros((2, H)), np.zeros((2, H))
    for t in range(T):
        z = x[:, t] @ w_x + h @ w_h + b
        np.testing.assert_allclose(
            stats["forget"][t], reference.sigmoid(z[:, H : 2 * H]).mean(), rtol=1e-5
        )
        np.testing.assert_allclose(stats["input"][t], reference.sigmoid(z[:, :H]).mean(), rtol=1e-5)
        (h, c), _ = numpy_step(rnnjax.cells.get("lstm"))(params, (h, c), x[:, t])
    huge = rnnjax.lstm(H, forget_bias=20.0)
    big = dg.gate_stats(huge, huge.init(jax.random.key(3), I), xs)
    assert float(big["forget"].min()) > 0.999
    closed = rnnjax.lstm(H, forget_bias=-20.0)
    assert (
        float(dg.gate_stats(closed, closed.init(jax.random.key(3), I), xs)["forget"].max()) < 1e-3
    )


def test_gate_stats_exclude_padding_and_reject_ungated_cells():
    cell, params, xs = setup("gru")
    lengths = jnp.array([T, 3])
    stats = dg.gate_stats(cell, params, xs, lengths=lengths)
    alone = dg.gate_stats(cell, params, xs[:1])
    np.testing.assert_allclose(stats["update"][3:], alone["update"][3:], rtol=1e-6)
    assert set(stats) == {"reset", "update", "candidate"}
    as_list = dg.gate_stats(cell, params, xs, lengths=[T, 3])  # as scan takes them
    chex.assert_trees_all_equal(as_list, stats)
    with pytest.raises(ValueError, match="cell 'rnn_tanh' declares no gates"):
        dg.gate_stats(rnnjax.elman(H), rnnjax.elman(H).init(jax.random.key(0), I), xs)


@pytest.mark.parametrize("name", CELLS)
def test_weight_grad_by_lag_sums_to_the_gradient_and_matches_per_step_perturbation(name):
    cell, params, xs = setup(name)
    terms, distance = dg.weight_grad_by_lag(cell, params, xs, last_step_loss)
    full = jax.grad(lambda p: last_step_loss(*rnnjax.scan(cell, p, xs)[::-1]))(params)
    total = jax.tree.map(lambda a: a.sum(0), terms)
    np.testing.assert_allclose(total.w_h, full.w_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(terms.w_x, 0.0)  # W_x enters through project, outside the loop
    w_eps = jax.tree.map(lambda a: jnp.zeros((T,) + a.shape), params)
    brute = jax.grad(lambda e: last_step_loss(*unrolled(cell, params, xs, w_eps=e)[::-1]))(w_eps)
    np.testing.assert_allclose(terms.w_h, brute.w_h, rtol=1e-5, atol=1e-6)
    assert dg.tree_norm_over_time(terms).shape == (T,)
    np.testing.assert_array_equal(distance, np.arange(T)[::-1])


def test_diagnostics_jit_and_vmap_over_seeds():
    cell = rnnjax.lstm(H)
    keys = jax.random.split(jax.random.key(0), 3)
    params = jax.vmap(cell.init, in_axes=(0, None))(keys, I)
    xs = jax.random.normal(jax.random.key(1), (2, T, I))
    f = jax.jit(
        jax.vmap(
            functools.partial(dg.hidden_grads, cell, loss_fn=last_step_loss), in_axes=(0, None)
        )
    )
    loss, grads = f(params, xs)
    for s in range(3):
        _, g = dg.hidden_grads(cell, jax.tree.map(lambda a: a[s], params), xs, last_step_loss)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[s], grads), g, rtol=1e-5, atol=1e-7)


def test_bad_inputs():
    cell, params, xs = setup("gru")
    with pytest.raises(ValueError, match=r"one sequence of shape \[T, I\]; got shape \(2, 7, 3\)"):
        dg.jacobian_products(cell, params, xs)
    with pytest.raises(ValueError, match="method must be 'auto', 'closed_form', 'exact' or"):
        dg.jacobian_products(cell, params, xs[0], method="lanczos")
    with pytest.raises(ValueError, match=r"perturbation.carry must have .* leading time axis"):
        rnnjax.scan(cell, params, xs, perturbation=rnnjax.Perturbation(carry=jnp.zeros((T, H))))
