"""The fused backward pass (rnnjax.fused) against JAX's own differentiation of the loop."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax


def _without_vjp(cell):
    return cell._replace(fused=cell.fused._replace(vjp=None))


CELLS = {
    "lstm": lambda h: rnnjax.lstm(h),
    "gru": lambda h: rnnjax.gru(h),
    "rnn_tanh": lambda h: rnnjax.elman(h),
    "rnn_relu": lambda h: rnnjax.elman(h, activation="relu"),
    # Any other activation: its derivative through JAX, from the saved pre-activation.
    "rnn_softplus": lambda h: rnnjax.elman(h, activation=jax.nn.softplus),
    # A cell with recur_z but no written-out backward: each step differentiated again.
    "lstm_generic": lambda h: _without_vjp(rnnjax.lstm(h)),
}


def _problem(name, batch=(3,), steps=7, inputs=4, hidden=5, seed=0):
    cell = CELLS[name](hidden)
    k = jax.random.split(jax.random.key(seed), 6)
    params = cell.init(k[0], inputs)
    # Nonzero biases everywhere (zero-initialised ones would hide a wrong bias gradient).
    keys = jax.tree.unflatten(jax.tree.structure(params), list(jax.random.split(k[1], len(params))))
    params = jax.tree.map(lambda p, kk: p + 0.3 * jax.random.normal(kk, p.shape), params, keys)
    xs = jax.random.normal(k[2], (*batch, steps, inputs))
    carry = jax.tree.map(
        lambda c: 0.5 * jax.random.normal(k[3], c.shape), cell.initial_carry(batch)
    )
    w_y = jax.random.normal(k[4], (*batch, steps, hidden))
    w_c = jax.tree.map(lambda c: jax.random.normal(k[5], c.shape), carry)
    lengths = jax.random.randint(k[5], batch, 0, steps + 1)
    return cell, params, xs, carry, w_y, w_c, lengths


def _loss(cell, vjp, lengths, reverse, w_y, w_c, **options):
    def f(params, xs, carry):
        final, ys = rnnjax.scan(
            cell, params, xs, carry, lengths=lengths, reverse=reverse, vjp=vjp, **options
        )
        tail = sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(w_c)))
        return jnp.sum(jnp.tanh(ys) * w_y) + tail

    return f


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_equals_autodiff_in_outputs_and_gradients(name, with_lengths, reverse):
    cell, params, xs, carry, w_y, w_c, lengths = _problem(name)
    lengths = lengths if with_lengths else None
    outs = {
        v: rnnjax.scan(cell, params, xs, carry, lengths=lengths, reverse=reverse, vjp=v)
        for v in ("fused", "autodiff")
    }
    for a, b in zip(jax.tree.leaves(outs["fused"]), jax.tree.leaves(outs["autodiff"])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    grads = {
        v: jax.grad(_loss(cell, v, lengths, reverse, w_y, w_c), argnums=(0, 1, 2))(
            params, xs, carry
        )
        for v in ("fused", "autodiff")
    }
    for a, b in zip(jax.tree.leaves(grads["fused"]), jax.tree.leaves(grads["autodiff"])):
        assert float(jnp.max(jnp.abs(b))) > 0  # every gradient is exercised
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh", "lstm_generic"])
@pytest.mark.parametrize("unroll", [3, True])
def test_unrolled_fused_loops_equal_the_plain_scan(name, unroll):
    """``unroll`` reaches both of the fused backward's loops: 3 does not divide the 7
    steps (a remainder step), True unrolls them whole. With lengths and reverse, against
    JAX's own backward of the loop not unrolled."""
    cell, params, xs, carry, w_y, w_c, lengths = _problem(name, seed=1)

    def grads(vjp, unroll):
        def f(params, xs, carry):
            final, ys = rnnjax.scan(
                cell, params, xs, carry, lengths=lengths, reverse=True, vjp=vjp, unroll=unroll
            )
            tail = sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(w_c)))
            return jnp.sum(jnp.tanh(ys) * w_y) + tail

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(params, xs, carry)

    got, want = grads("fused", unroll), grads("autodiff", 1)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert float(jnp.max(jnp.abs(b))) > 0
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)

    # Both loops, the forward and the written-out backward, carry the unroll (True:
    # the whole length, 7).
    def forward(p):
        return jnp.sum(rnnjax.scan(cell, p, xs, vjp="fused", unroll=unroll)[1])

    assert "custom_vjp_call" in str(jax.make_jaxpr(forward)(params))
    jaxpr = str(jax.make_jaxpr(jax.grad(forward))(params))
    assert re.findall(r"unroll=(\w+)", jaxpr) == [str(7 if unroll is True else unroll)] * 2


def test_fused_under_jit_vmap_and_two_batch_dims():
    cell, params, xs, carry, w_y, w_c, lengths = _problem("lstm", batch=(2, 3))
    for v in ("fused", "autodiff"):
        f = jax.jit(jax.grad(_loss(cell, v, lengths, False, w_y, w_c)))
        if v == "fused":
            got = f(params, xs, carry)
        else:
            want = f(params, xs, carry)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)

    # vmap over seeds of params: the same as a loop over them.
    stacked = jax.tree.map(lambda p: jnp.stack([p, 1.1 * p]), params)
    f = _loss(cell, "fused", lengths, False, w_y, w_c)
    vm = jax.vmap(jax.grad(f), in_axes=(0, None, None))(stacked, xs, carry)
    for i in range(2):
        one = jax.grad(f)(jax.tree.map(lambda p: p[i], stacked), xs, carry)
        for a, b in zip(jax.tree.leaves(vm), jax.tree.leaves(one)):
            np.testing.assert_allclose(a[i], b, rtol=2e-5, atol=2e-6)


def test_second_order_gradients_agree():
    """Reverse over reverse (e.g. a gradient penalty) through the fused backward."""
    cell, params, xs, carry, w_y, w_c, _ = _problem("gru")

    def penalty(v):
        f = _loss(cell, v, None, False, w_y, w_c)
        return lambda p: sum(jnp.sum(g**2) for g in jax.tree.leaves(jax.grad(f)(p, xs, carry)))

    got = jax.grad(penalty("fused"))(params)
    want = jax.grad(penalty("autodiff"))(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fused_only_on_request_and_only_where_it_applies():
    cell, params, xs, *_ = _problem("lstm")
    jaxpr = str(jax.make_jaxpr(lambda p: rnnjax.scan(cell, p, xs, vjp="fused"))(params))
    assert "custom_vjp_call" in jaxpr
    # The default on every backend: measured faster on a CPU and a GPU.
    assert rnnjax.plan(cell, params, xs).backward == "fused"
    for v in ("auto", "autodiff"):
        jaxpr = str(jax.make_jaxpr(lambda p: rnnjax.scan(cell, p, xs, vjp=v))(params))
        assert ("custom_vjp_call" in jaxpr) == (v == "auto")
    before = rnnjax.gru(5, reset_after=False)
    p = before.init(jax.random.key(0), 4)
    with pytest.raises(
        ValueError, match="vjp='fused' does not apply here: the gru_reset_before cell declares no"
    ):
        rnnjax.scan(before, p, xs, vjp="fused")
    with pytest.raises(ValueError, match="return_carries=True"):
        rnnjax.scan(cell, params, xs, vjp="fused", return_carries=True)
    for bad in (0, -1, 2.5, "8"):  # named, not left to lax.scan's own messages
        with pytest.raises(
            ValueError, match=f"unroll must be None, a bool or a positive int; got {bad!r}"
        ):
            rnnjax.scan(cell, params, xs, unroll=bad)
    a = rnnjax.scan(cell, params, xs, unroll=np.int64(3))[1]  # a NumPy integer is an int
    np.testing.assert_array_equal(a, rnnjax.scan(cell, params, xs, unroll=3)[1])
    with pytest.raises(ValueError, match="vjp must be one of"):
        rnnjax.scan(cell, params, xs, vjp="cudnn")


def test_auto_takes_the_fused_backward_where_it_is_faster_and_applies():
    """The default: the fused backward wherever it applies, JAX's own where it does not,
    never an error."""
    cell, params, xs, carry, *_ = _problem("gru")

    def uses_fused(**kw):
        f = lambda p: rnnjax.scan(cell, p, xs, carry, **kw)  # noqa: E731
        return "custom_vjp_call" in str(jax.make_jaxpr(f)(params))

    assert uses_fused()
    assert not uses_fused(vjp="autodiff")
    assert not uses_fused(return_carries=True)
    assert not uses_fused(remat=3)
    assert uses_fused(unroll=2)  # both of its loops unrolled (test below)
    eps = jax.tree.map(lambda c: jnp.zeros((xs.shape[-2],) + c.shape), carry)
    assert not uses_fused(perturbation=rnnjax.Perturbation(carry=eps))
    # The plan says why, for a reader.
    note = rnnjax.plan(cell, params, xs, carry, remat=3).notes
    assert note == ("autodiff backward: remat (the fused backward keeps its own residuals)",)
    with pytest.raises(ValueError, match="vjp must be one of .* got 'fuse'"):
        uses_fused(vjp="fuse")  # a typo is an error, not the default
    with pytest.raises(ValueError, match="hoist must be True, False or None; got 'yes'"):
        uses_fused(hoist="yes")


@pytest.mark.parametrize("hoist", [False, True])
def test_projection_inside_or_before_the_loop_gives_the_same_numbers(hoist):
    """Both places of the input projection, through both backward passes, against the
    cell's own step function in a Python loop (a route that shares no driver code)."""
    cell, params, xs, carry, *_ = _problem("gru")

    def loop(params, xs, carry):
        ys = []
        for t in range(xs.shape[1]):
            carry, y = cell.step(params, carry, xs[:, t])
            ys.append(y)
        return jnp.sum(jnp.stack(ys, 1) ** 2) + jnp.sum(carry)

    want = jax.grad(loop, argnums=(0, 1, 2))(params, xs, carry)
    for v in ("fused", "autodiff"):

        def f(params, xs, carry, v=v):
            final, ys = rnnjax.scan(cell, params, xs, carry, vjp=v, hoist=hoist)
            return jnp.sum(ys**2) + jnp.sum(final)

        got = jax.grad(f, argnums=(0, 1, 2))(params, xs, carry)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def _matmuls_in_the_loop(f, *args) -> int:
    """The ``dot_general``s inside the (one) time loop of ``f``'s jaxpr."""
    from jax.extend.core import jaxprs_in_params

    def count(jaxpr) -> int:
        n = 0
        for eqn in jaxpr.eqns:
            n += eqn.primitive.name == "dot_general"
            for sub in jaxprs_in_params(eqn.params):
                n += count(sub)
        return n

    def loops(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                yield eqn.params["jaxpr"].jaxpr
            else:
                for sub in jaxprs_in_params(eqn.params):
                    yield from loops(sub)

    (loop,) = list(loops(jax.make_jaxpr(f)(*args).jaxpr))
    return count(loop)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU's placement")
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh"])
def test_on_a_cpu_only_an_ungated_cell_projects_before_the_loop(name):
    """The default placement: per step inside the loop for the LSTM and GRU (declared
    gated), one matmul before it for the Elman RNN; ``hoist`` overrides."""
    cell, params, xs, carry, *_ = _problem(name)

    def in_loop(**kw):
        return _matmuls_in_the_loop(lambda p: rnnjax.scan(cell, p, xs, carry, **kw)[1], params)

    assert in_loop() == (2 if cell.gated else 1)
    assert rnnjax.plan(cell, params, xs, carry).hoist == (not cell.gated)
    for hoist, want in ((True, 1), (False, 2)):
        assert in_loop(hoist=hoist) == want


@pytest.mark.parametrize("name", sorted(CELLS))
def test_hoisted_and_in_loop_projection_agree_with_lengths_and_reverse(name):
    cell, params, xs, carry, w_y, w_c, lengths = _problem(name, batch=(2, 3))
    results = {}
    for hoist in (False, True):
        f = _loss(cell, "auto", lengths, True, w_y, w_c, hoist=hoist)
        out = rnnjax.scan(cell, params, xs, carry, lengths=lengths, reverse=True, hoist=hoist)
        results[hoist] = (out, jax.grad(f, argnums=(0, 1, 2))(params, xs, carry))
    for a, b in zip(jax.tree.leaves(results[False]), jax.tree.leaves(results[True])):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh", "rnn_relu", "rnn_softplus"])
def test_each_cells_written_out_backward_is_the_vjp_of_its_step(name):
    """``cell.fused.vjp`` (``fwd``, ``bwd``, then ``finish``) against ``jax.vjp`` of
    ``recur_z`` after ``project`` at one step: random inputs and cotangents, two batch
    dimensions, the cotangent of every input and parameter."""
    cell, params, xs, carry, *_ = _problem(name, batch=(2, 3))
    k = jax.random.split(jax.random.key(7), 4)
    x = xs[..., 0, :]
    z = jax.random.normal(k[0], x.shape[:-1] + (params.w_h.shape[1],))
    if name == "rnn_relu":  # both sides of the kink
        z = z.at[0].set(-z[0] - 5.0)

    def step(carry, x, z, params):
        return cell.fused.recur_z(params, carry, cell.project(params, x), z)

    (new, y), vjp = jax.vjp(step, carry, x, z, params)
    d_new = jax.tree.map(lambda a: jax.random.normal(k[1], a.shape), new)
    d_y = jax.random.normal(k[2], y.shape)
    want = vjp((d_new, d_y))  # d_carry, d_x, d_z, d_params (w_h: zero, z is given)

    (new2, y2), saved = cell.fused.vjp.fwd(params, carry, cell.project(params, x), z)
    for a, b in zip(jax.tree.leaves((new2, y2)), jax.tree.leaves((new, y))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    d_carry, d_z, extra = cell.fused.vjp.bwd(params, carry, saved, y2, d_new, d_y)
    # finish works on [T, *batch, ...]: give it this one step as T = 1.
    d_params, d_x = cell.fused.vjp.finish(
        params, x[None], d_z[None], jax.tree.map(lambda a: a[None], extra)
    )
    got = (d_carry, d_x[0], d_z, d_params)
    for g, w in zip(got, want):
        assert jax.tree.structure(g) == jax.tree.structure(w)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(w)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a in (want[1], want[3].w_x):
        assert float(jnp.max(jnp.abs(a))) > 0
