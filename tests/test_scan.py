"""The driver's masking, reverse and layout semantics, each checked by a second route."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import CELLS, random_carry, randomize, to_np_carry

import rnnjax

NAMES = ["rnn_tanh", "lstm", "gru"]
I, H, B, T = 3, 4, 4, 7


def setup(name, seed=0):
    cell = CELLS[name][0](H)
    params = randomize(cell.init(jax.random.key(seed), I), jax.random.key(seed + 1))
    xs = jax.random.normal(jax.random.key(seed + 2), (B, T, I))
    lengths = jnp.array([T, 3, 0, 5])
    return cell, params, xs, lengths


def numpy_route(name, params, carry0, xs, lengths, reverse):
    ref_step = CELLS[name][1]
    return reference.run(
        lambda c, x: ref_step(params, c, x),
        to_np_carry(carry0),
        np.asarray(xs, np.float64),
        None if lengths is None else np.asarray(lengths),
        reverse,
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_match_numpy_loop_over_valid_prefix(name, reverse):
    cell, params, xs, lengths = setup(name)
    carry0 = random_carry(cell, (B,), jax.random.key(9))
    final, ys = rnnjax.scan(cell, params, xs, carry0, lengths=lengths, reverse=reverse)
    ref_finals, ref_ys = numpy_route(name, params, carry0, xs, lengths, reverse)
    np.testing.assert_allclose(ys, ref_ys, rtol=1e-5, atol=1e-5)
    for b in range(B):
        got = to_np_carry(jax.tree.map(lambda c: c[b], final))
        chex.assert_trees_all_close(got, ref_finals[b], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reverse", [False, True])
def test_padding_values_are_inert(name, reverse):
    cell, params, xs, lengths = setup(name)
    pad = jnp.arange(T)[None, :, None] >= lengths[:, None, None]
    garbage = jnp.where(pad, 1e3 * jax.random.normal(jax.random.key(5), xs.shape), xs)
    out_a = rnnjax.scan(cell, params, xs, lengths=lengths, reverse=reverse)
    out_b = rnnjax.scan(cell, params, garbage, lengths=lengths, reverse=reverse)
    chex.assert_trees_all_equal(out_a, out_b)
    np.testing.assert_array_equal(np.where(pad, out_a[1], 0.0), 0.0)
    # ...and the garbage did change an unmasked run, so the comparison has teeth.
    assert not np.allclose(rnnjax.scan(cell, params, garbage)[1], rnnjax.scan(cell, params, xs)[1])


@pytest.mark.parametrize("name", NAMES)
def test_final_carry_is_carry_at_last_valid_step(name):
    cell, params, xs, lengths = setup(name)
    final, _ = rnnjax.scan(cell, params, xs, lengths=lengths)
    for b in range(B):
        L = int(lengths[b])
        want, _ = rnnjax.scan(cell, params, xs[b, :L]) if L else (cell.initial_carry(), None)
        chex.assert_trees_all_close(jax.tree.map(lambda c: c[b], final), want, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_reverse_with_lengths_equals_reversing_each_prefix_by_hand(name):
    cell, params, xs, lengths = setup(name)
    final, ys = rnnjax.scan(cell, params, xs, lengths=lengths, reverse=True)
    for b in range(B):
        L = int(lengths[b])
        if L == 0:
            np.testing.assert_array_equal(ys[b], 0.0)
            continue
        f_b, y_b = rnnjax.scan(cell, params, xs[b, :L][::-1])
        np.testing.assert_allclose(ys[b, :L], y_b[::-1], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ys[b, L:], 0.0)
        chex.assert_trees_all_close(jax.tree.map(lambda c: c[b], final), f_b, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_zero_length_sequences_keep_initial_carry_and_finite_grads(name):
    cell, params, xs, _ = setup(name)
    carry0 = random_carry(cell, (B,), jax.random.key(3))
    lengths = jnp.zeros((B,), jnp.int32)
    final, ys = rnnjax.scan(cell, params, xs, carry0, lengths=lengths)
    chex.assert_trees_all_equal(final, carry0)
    np.testing.assert_array_equal(ys, 0.0)
    g = jax.grad(lambda p: jnp.sum(rnnjax.scan(cell, p, xs, carry0, lengths=lengths)[1]))(params)
    for leaf in jax.tree.leaves(g):
        np.testing.assert_array_equal(leaf, 0.0)


@pytest.mark.parametrize("reverse", [False, True])
def test_time_major_equals_batch_major(reverse):
    cell, params, xs, lengths = setup("lstm")
    f_b, y_b = rnnjax.scan(cell, params, xs, lengths=lengths, reverse=reverse)
    f_t, y_t = rnnjax.scan(
        cell, params, jnp.swapaxes(xs, 0, 1), lengths=lengths, reverse=reverse, time_major=True
    )
    chex.assert_trees_all_close(f_b, f_t)
    np.testing.assert_allclose(y_b, jnp.swapaxes(y_t, 0, 1))


def test_unroll_does_not_change_results():
    cell, params, xs, lengths = setup("gru")
    a = rnnjax.scan(cell, params, xs, lengths=lengths, unroll=1)
    b = rnnjax.scan(cell, params, xs, lengths=lengths, unroll=3)
    chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-6)


def test_traced_lengths_are_checked_under_checkify_and_cost_nothing_otherwise():
    """No host callback in a compiled step by default; ``checkify`` opts in and then
    names the range; concrete lengths are checked at once either way."""
    from jax.experimental import checkify

    cell, params, xs, _ = setup("rnn_tanh")

    def f(l):
        return rnnjax.scan(cell, params, xs, lengths=l)[1]

    assert "callback" not in jax.jit(f).lower(jnp.array([T, 0, 1, 2])).as_text()
    checked = jax.jit(checkify.checkify(f))
    err, ys = checked(jnp.array([T, 0, 1, 2]))
    err.throw()  # in range: no error
    np.testing.assert_allclose(ys, f(jnp.array([T, 0, 1, 2])))
    err, _ = checked(jnp.array([T + 1, 0, 1, 2]))
    with pytest.raises(Exception, match=r"lengths must lie in \[0, 8\) \(\[0, T\], T = 7\)"):
        err.throw()
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 8\).*got values \[-1\]"):
        f(jnp.array([T, -1, 1, 2]))
