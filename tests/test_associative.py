"""The associative (parallel prefix) loop against the sequential one, for a cell that
declares its recurrence linear in the state (``cell.linear``).

The cell is defined here, in one place: a diagonal gated linear recurrence
``h' = a * h + (1 - a) * tanh(x W_b + b_b)``, ``a = sigmoid(x W_a + b_a)`` (the shape of
minGRU's, without its log-space form), with a float64 NumPy reference of the equation.
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
from rnnjax.cells.base import Cell, Entry, LinearRecurrence, check_input


class DiagParams(NamedTuple):
    w_x: jax.Array  # [I, 2H]: the decay's and the input's blocks
    b: jax.Array  # [2H]


def diagonal(hidden_size: int, *, param_dtype=jnp.float32) -> Cell:
    H = hidden_size

    def init(key, input_size):
        k1, k2 = jax.random.split(key)
        w = jax.random.normal(k1, (input_size, 2 * H), param_dtype) / np.sqrt(input_size)
        return DiagParams(w, 0.1 * jax.random.normal(k2, (2 * H,), param_dtype))

    def initial_carry(batch_shape=(), dtype=None):
        shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
        return jnp.zeros(shape + (H,), dtype or param_dtype)

    def project(params, xs):
        check_input(xs, params.w_x.shape[0], "xs")
        return xs @ params.w_x + params.b

    def coefficients(params, xp):
        a = jax.nn.sigmoid(xp[..., :H])
        return a, (1.0 - a) * jnp.tanh(xp[..., H:])

    def recur(params, h, xp_t):
        a, b = coefficients(params, xp_t)
        h_new = (a * h + b).astype(h.dtype)
        return h_new, h_new

    return Cell(
        name="diag_linear",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=project,
        recur=recur,
        output=lambda h: h,
        linear=LinearRecurrence(coefficients),
    )


def diag_reference(xp, params, h, x):
    w_x, b = params
    H = h.shape[-1]
    z = x @ w_x + b
    a = 1.0 / (1.0 + xp.exp(-z[..., :H]))
    h_new = a * h + (1.0 - a) * xp.tanh(z[..., H:])
    return h_new, h_new


ENTRY = Entry("diag_linear", diagonal, diag_reference, lambda i, h: 2 * 2 * h * i, family="test")
I, H, T = 3, 4, 9


def _problem(batch, dtype=jnp.float32, seed=0):
    cell = diagonal(H, param_dtype=dtype)
    k = jax.random.split(jax.random.key(seed), 4)
    params = randomize(cell.init(k[0], I), k[1])
    xs = jax.random.normal(k[2], batch + (T, I), dtype)
    carry = 0.5 * jax.random.normal(k[3], batch + (H,), dtype)
    return cell, params, xs, carry


def _lengths(batch):
    n = int(np.prod(batch)) if batch else 1
    values = np.array([T, 0, 4, 1, T - 1, 7][:n] + [3] * max(0, n - 6))
    return jnp.asarray(values.reshape(batch)) if batch else jnp.asarray(values[0])


def test_the_plan_takes_the_associative_loop_where_the_cell_declares_it(monkeypatch):
    cell, params, xs, carry = _problem((2,))
    # On a CPU the sequential loop (measured faster there), and the plan says why.
    assert jax.default_backend() == "cpu"
    cpu = rnnjax.plan(cell, params, xs)
    assert cpu.loop == "sequential" and "measured 1-3x slower" in cpu.notes[0]
    assert rnnjax.plan(cell, params, xs, loop="associative").loop == "associative"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # the plan only, no run
    assert rnnjax.plan(cell, params, xs).loop == "associative"
    assert rnnjax.plan(cell, params, xs, loop="sequential").loop == "sequential"
    assert rnnjax.plan(cell, params, xs, remat=3).loop == "sequential"  # remat: sequential
    with pytest.raises(ValueError, match="remat=3 does not apply to loop='associative'"):
        rnnjax.scan(cell, params, xs, loop="associative", remat=3)
    lstm = rnnjax.lstm(H)
    with pytest.raises(ValueError, match="the lstm cell does not"):
        rnnjax.scan(lstm, lstm.init(jax.random.key(0), I), xs, loop="associative")
    with pytest.raises(ValueError, match="loop must be one of"):
        rnnjax.scan(cell, params, xs, loop="parallel")


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
@pytest.mark.parametrize("reverse", [False, True])
def test_associative_equals_sequential_in_float64(batch, reverse):
    """Outputs, final carry and every gradient, lengths including 0 and T, to 1e-10."""
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(batch, jnp.float64)
        lengths = _lengths(batch)
        w = jax.random.normal(jax.random.key(7), batch + (T, H), jnp.float64)

        def loss(loop):
            def f(params, xs, carry):
                final, ys = rnnjax.scan(
                    cell, params, xs, carry, lengths=lengths, reverse=reverse, loop=loop
                )
                return jnp.sum(jnp.sin(ys) * w) + jnp.sum(final**2), (final, ys)

            return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(params, xs, carry)

        seq, par = loss("sequential"), loss("associative")
        chex.assert_trees_all_close(par, seq, rtol=1e-10, atol=1e-12)
        # and the route by hand: the catalogue-style NumPy reference, one example at a time
        if batch:
            step = numpy_step(ENTRY)
            flat = lambda a: np.asarray(a).reshape((-1,) + a.shape[len(batch) :])  # noqa: E731
            finals, ys = reference.run(
                lambda c, x: step(params, c, x),
                flat(carry),
                flat(xs),
                np.asarray(lengths).reshape(-1),
                reverse,
            )
            np.testing.assert_allclose(flat(par[0][1][1]), ys, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(flat(par[0][1][0]), np.stack(finals), rtol=1e-10)


def test_associative_equals_sequential_in_float32_under_jit_and_vmap():
    cell, params, xs, carry = _problem((2, 3))
    lengths = _lengths((2, 3))

    def run(loop):
        def f(params, xs, carry, lengths):
            return rnnjax.scan(cell, params, xs, carry, lengths=lengths, reverse=True, loop=loop)

        return jax.jit(jax.vmap(f, in_axes=(None, 0, 0, 0)))(params, xs, carry, lengths)

    chex.assert_trees_all_close(run("associative"), run("sequential"), rtol=1e-5, atol=1e-6)

    def grads(loop):
        def f(params):
            return jnp.sum(rnnjax.scan(cell, params, xs, carry, lengths=lengths, loop=loop)[1])

        return jax.jit(jax.grad(f))(params)

    chex.assert_trees_all_close(grads("associative"), grads("sequential"), rtol=1e-5, atol=1e-6)


def test_associative_paths_of_the_driver_keep_the_semantics():
    """return_carries, time-major, padding that is garbage, a carry perturbation (the
    diagnostics' hook) and layers, all as the sequential loop gives them."""
    cell, params, xs, carry = _problem((4,))
    lengths = jnp.array([T, 0, 3, 6])
    for kw in (
        {"return_carries": True},
        {"time_major": True},
        {"reverse": True, "return_carries": True},
    ):
        x = jnp.moveaxis(xs, 1, 0) if kw.get("time_major") else xs
        a = rnnjax.scan(cell, params, x, carry, lengths=lengths, loop="associative", **kw)
        b = rnnjax.scan(cell, params, x, carry, lengths=lengths, loop="sequential", **kw)
        chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-6)
    pad = jnp.arange(T)[None, :, None] >= lengths[:, None, None]
    garbage = jnp.where(pad, 1e3, xs)
    chex.assert_trees_all_close(
        rnnjax.scan(cell, params, garbage, carry, lengths=lengths),
        rnnjax.scan(cell, params, xs, carry, lengths=lengths),
    )
    # dL/dh_t from the perturbation hook, both loops.
    from rnnjax import diagnostics as dg

    def loss(ys, final):
        return jnp.sum(jnp.cos(ys))

    with_assoc = dg.hidden_grads(cell, params, xs, loss, carry, lengths=lengths)
    lstm_like = cell._replace(linear=None)  # the same cell, sequential only
    plain = dg.hidden_grads(lstm_like, params, xs, loss, carry, lengths=lengths)
    chex.assert_trees_all_close(with_assoc, plain, rtol=1e-5, atol=1e-6)
    layer = rnnjax.stack([rnnjax.bidirectional(cell), rnnjax.recurrent(cell, loop="sequential")])
    p = layer.init(jax.random.key(3), I)
    ys = layer.apply(p, xs, lengths=lengths)[1]
    assert ys.shape == (4, T, H) and np.isfinite(ys).all()
