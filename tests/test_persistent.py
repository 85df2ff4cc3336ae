"""The persistent Pallas time loop (rnnjax.persistent), in Pallas's interpret mode, held
against JAX's own differentiation of the plain ``lax.scan`` (an independent route: no
shared backward code) and against the fused backward (the same arithmetic)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import fused, persistent

CELLS = {
    "rnn_tanh": lambda h: rnnjax.elman(h),
    "rnn_relu": lambda h: rnnjax.elman(h, activation="relu"),
    "lstm": lambda h: rnnjax.lstm(h),
    "gru": lambda h: rnnjax.gru(h),
}
STEPS = 6


def _problem(name, batch=(5,), inputs=3, hidden=4, seed=0, dtype=jnp.float32):
    cell = CELLS[name](hidden)
    k = jax.random.split(jax.random.key(seed), 6)
    params = cell.init(k[0], inputs)
    # Nonzero biases everywhere (zero-initialised ones would hide a wrong bias gradient).
    keys = jax.tree.unflatten(jax.tree.structure(params), list(jax.random.split(k[1], len(params))))
    params = jax.tree.map(lambda p, kk: p + 0.3 * jax.random.normal(kk, p.shape), params, keys)
    xs = jax.random.normal(k[2], (*batch, STEPS, inputs))
    carry = jax.tree.map(
        lambda c: 0.5 * jax.random.normal(k[3], c.shape), cell.initial_carry(batch)
    )
    cast = lambda t: jax.tree.map(lambda a: a.astype(dtype), t)  # noqa: E731
    return cell, cast(params), cast(xs), cast(carry), k[4]


def _loss(cell, key, lengths, reverse, **options):
    def f(params, xs, carry):
        final, ys = rnnjax.scan(
            cell, params, xs, carry, lengths=lengths, reverse=reverse, **options
        )
        kk = jax.random.split(key, 1 + len(jax.tree.leaves(final)))
        w_y = jax.random.normal(kk[0], ys.shape)
        tail = sum(
            jnp.sum(a.astype(jnp.float32) * jax.random.normal(k_, a.shape))
            for a, k_ in zip(jax.tree.leaves(final), kk[1:], strict=True)
        )
        return jnp.sum(jnp.tanh(ys.astype(jnp.float32)) * w_y) + tail, (final, ys)

    return f


def _value_and_grads(f, *args):
    return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(*args)


def _close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), **tol)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
def test_persistent_loop_equals_the_differentiated_scan(name, reverse):
    """Outputs, final carry and the gradients of params, inputs and initial carry, with
    lengths that include 0 and T, forward and reversed; a batch of 5 in the kernel's
    tiles of 16 (padded rows)."""
    cell, params, xs, carry, key = _problem(name)
    lengths = jnp.array([0, STEPS, 3, 1, STEPS - 1])
    ref = _loss(cell, key, lengths, reverse, vjp="autodiff", loop="sequential", hoist=True)
    got = _loss(cell, key, lengths, reverse, loop="persistent")
    (v_ref, out_ref), g_ref = _value_and_grads(ref, params, xs, carry)
    (v_got, out_got), g_got = _value_and_grads(got, params, xs, carry)
    _close(out_got, out_ref, rtol=1e-5, atol=1e-6)
    _close(g_got, g_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(v_got), float(v_ref), rtol=1e-5)
    # The zero-length row keeps its initial carry and emits zeros.
    final, ys = out_got
    _close(jax.tree.map(lambda a: a[0], final), jax.tree.map(lambda a: a[0], carry), rtol=0, atol=0)
    assert not np.any(np.asarray(ys[0]))


def test_without_lengths_the_kernel_equals_the_plain_scan():
    cell, params, xs, carry, key = _problem("lstm", batch=(2, 3))
    ref = _loss(cell, key, None, False, vjp="autodiff", loop="sequential", hoist=True)
    got = _loss(cell, key, None, False, loop="persistent")
    (_, out_ref), g_ref = _value_and_grads(ref, params, xs, carry)
    (_, out_got), g_got = _value_and_grads(got, params, xs, carry)
    _close(out_got, out_ref, rtol=1e-5, atol=1e-6)
    _close(g_got, g_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("block_batch", [1, 2, 4, 7])
def test_any_tile_size_gives_the_fused_loops_numbers(block_batch):
    """Batch (2, 3) = 6 rows in tiles of 1, 2 (whole tiles), 4 and 7 (a padded last
    tile): the same numbers as the fused backward's lax.scan, which runs the same step
    functions in the same order."""
    cell, params, xs, carry, key = _problem("gru", batch=(2, 3))
    xs_t = jnp.moveaxis(xs, 2, 0)
    lengths = jnp.array([[0, 6, 3], [2, 5, 6]])
    mask = jnp.arange(STEPS)[:, None, None] < lengths[None]
    w = jax.random.normal(key, (STEPS, 2, 3, 4))

    def loss(run):
        def f(params, xs, carry):
            final, ys = run(params, xs, carry)
            return jnp.sum(ys * w) + jnp.sum(jnp.sin(final)), (final, ys)

        return f

    fused_run = lambda p, x, c: fused.fused_scan(cell, True, False, 1, p, x, c, mask)  # noqa: E731
    kernel_run = lambda p, x, c: persistent.persistent_scan(  # noqa: E731
        cell, True, block_batch, True, p, x, c, mask
    )
    (_, out_ref), g_ref = _value_and_grads(loss(fused_run), params, xs_t, carry)
    (_, out_got), g_got = _value_and_grads(loss(kernel_run), params, xs_t, carry)
    _close(out_got, out_ref, rtol=1e-6, atol=1e-7)
    _close(g_got, g_ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_bfloat16_runs_the_fused_loops_arithmetic(name):
    """In bfloat16 the kernel gives the fused lax.scan's numbers (the same operations),
    and both stay near the float32 result."""
    cell, params, xs, carry, key = _problem(name, dtype=jnp.bfloat16)
    lengths = jnp.array([0, STEPS, 3, 1, STEPS - 1])
    got = _loss(cell, key, lengths, True, loop="persistent")
    ref = _loss(cell, key, lengths, True, vjp="fused", loop="sequential", hoist=True, unroll=1)
    (_, out_got), g_got = _value_and_grads(got, params, xs, carry)
    (_, out_ref), g_ref = _value_and_grads(ref, params, xs, carry)
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves((out_got, g_got)))
    _close(out_got, out_ref, rtol=2e-2, atol=2e-2)
    _close(g_got, g_ref, rtol=2e-2, atol=5e-2)
    f32 = lambda t: jax.tree.map(lambda a: a.astype(jnp.float32), t)  # noqa: E731
    ref32 = _loss(cell, key, lengths, True, vjp="autodiff", loop="sequential", hoist=True)
    (_, out32), _ = _value_and_grads(ref32, *f32((params, xs, carry)))
    _close(out_got, out32, rtol=0.1, atol=0.05)


def test_the_kernel_is_what_runs():
    """``loop="persistent"`` lowers to two pallas_calls (forward and backward), and the
    plain loops to none."""
    cell, params, xs, carry, key = _problem("rnn_tanh")
    lengths = jnp.array([0, STEPS, 3, 1, STEPS - 1])

    def grad_jaxpr(**options):
        f = _loss(cell, key, lengths, False, **options)
        return str(
            jax.make_jaxpr(jax.grad(lambda *a: f(*a)[0], argnums=(0, 1, 2)))(params, xs, carry)
        )

    assert grad_jaxpr(loop="persistent").count("pallas_call") == 2
    assert "pallas_call" not in grad_jaxpr(loop="sequential")
    plan = rnnjax.plan(cell, params, xs, loop="persistent")
    assert (plan.loop, plan.backward, plan.hoist) == ("persistent", "fused", True)
    assert any("interpret mode" in n for n in plan.notes)


def test_auto_never_chooses_the_persistent_loop():
    for name in CELLS:
        cell, params, xs, *_ = _problem(name)
        assert rnnjax.plan(cell, params, xs).loop == "sequential"


@pytest.mark.parametrize(
    ("make", "options", "message"),
    [
        (lambda: rnnjax.make_cell("mgu", 4), {}, "declares no fused recurrence"),
        (
            lambda: rnnjax.lstm(4)._replace(fused=rnnjax.lstm(4).fused._replace(vjp=None)),
            {},
            "writes no step backward",
        ),
        (lambda: rnnjax.lstm(4), {"vjp": "autodiff"}, "vjp='autodiff'"),
        (lambda: rnnjax.lstm(4), {"hoist": False}, "hoist=False"),
        (lambda: rnnjax.lstm(4), {"unroll": 4}, "unroll=4"),
        (lambda: rnnjax.lstm(4), {"remat": 2}, "remat"),
        (lambda: rnnjax.lstm(4), {"return_carries": True}, "return_carries=True"),
    ],
)
def test_where_the_persistent_loop_does_not_apply_the_error_says_why(make, options, message):
    cell = make()
    params = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((2, STEPS, 3))
    with pytest.raises(ValueError, match="loop='persistent' does not apply here") as err:
        rnnjax.scan(cell, params, xs, loop="persistent", **options)
    assert message in str(err.value)


def test_mixed_dtypes_are_refused_before_any_work():
    cell = rnnjax.lstm(4)
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), cell.init(jax.random.key(0), 3))
    with pytest.raises(ValueError, match="mixed dtypes"):
        rnnjax.scan(cell, params, jnp.ones((2, STEPS, 3)), loop="persistent")


def test_a_step_reading_an_undeclared_field_fails_naming_it():
    """The kernel passes the step only the fields ``cell.fused`` declares; a step that
    reads another (here the GRU's b_h, its declared read removed) fails at trace time."""
    cell = rnnjax.gru(4)
    cell = cell._replace(fused=cell.fused._replace(reads=()))
    params = cell.init(jax.random.key(0), 3)
    with pytest.raises((TypeError, AttributeError), match="NoneType"):
        rnnjax.scan(cell, params, jnp.ones((2, STEPS, 3)), loop="persistent")


def test_block_batch_is_checked():
    cell, params, xs, carry, _ = _problem("rnn_tanh")
    with pytest.raises(ValueError, match="block_batch must be a positive int; got 0"):
        persistent.persistent_scan(
            cell, False, 0, True, params, jnp.moveaxis(xs, 1, 0), carry, None
        )
