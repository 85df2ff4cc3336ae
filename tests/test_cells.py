"""Each cell against a float64 NumPy transcription of its docstring equations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CELLS, random_carry, randomize, to_np_carry
from jax.test_util import check_grads

import rnnjax

NAMES = list(CELLS)
# The cells with an input kernel w_x and a recurrent weight w_h (and their initialiser
# options): the classic families.
CLASSIC = [n for n in NAMES if n in ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before")]
I, H = 4, 6  # H even: the LRU's output is its H / 2 states' real and imaginary parts


def make(name, key=0, **kw):
    make_cell, ref_step = CELLS[name]
    cell = make_cell(H, **kw)
    params = randomize(cell.init(jax.random.key(key), I), jax.random.key(key + 100))
    return cell, params, ref_step


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
def test_step_matches_numpy_reference(name, batch_shape):
    cell, params, ref_step = make(name)
    carry = random_carry(cell, batch_shape, jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), batch_shape + (I,))
    new_carry, y = cell.step(params, carry, x)
    ref_carry, ref_y = ref_step(params, to_np_carry(carry), np.asarray(x, np.float64))
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(to_np_carry(new_carry), ref_carry, rtol=1e-5, atol=1e-6)
    chex.assert_shape(y, batch_shape + (H,))


@pytest.mark.parametrize("name", NAMES)
def test_project_then_recur_equals_step(name):
    cell, params, _ = make(name)
    carry = random_carry(cell, (3,), jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (3, I))
    weights = cell.prepared(params)  # what the step reads (expRNN: W_h = expm(A))
    via_halves = cell.recur(weights, carry, cell.project(weights, x))
    chex.assert_trees_all_close(via_halves, cell.step(params, carry, x), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_scan_matches_python_loop_and_numpy(name):
    cell, params, ref_step = make(name)
    B, T = 3, 6
    xs = jax.random.normal(jax.random.key(3), (B, T, I))
    carry0 = random_carry(cell, (B,), jax.random.key(4))
    final, ys = rnnjax.scan(cell, params, xs, carry0)

    # Route 2: a Python loop over cell.step.
    carry, loop_ys = carry0, []
    for t in range(T):
        carry, y = cell.step(params, carry, xs[:, t])
        loop_ys.append(y)
    chex.assert_trees_all_close(ys, jnp.stack(loop_ys, axis=1), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(final, carry, rtol=1e-5, atol=1e-6)

    # Route 3: float64 NumPy, example by example.
    ref_finals, ref_ys = reference_run(ref_step, params, carry0, xs)
    np.testing.assert_allclose(ys, ref_ys, rtol=1e-5, atol=1e-5)


def reference_run(ref_step, params, carry0, xs, lengths=None, reverse=False):
    import reference

    return reference.run(
        lambda c, x: ref_step(params, c, x),
        to_np_carry(carry0),
        np.asarray(xs, np.float64),
        lengths,
        reverse,
    )


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_no_jit(name):
    cell, params, _ = make(name)
    xs = jax.random.normal(jax.random.key(5), (2, 7, I))
    lengths = jnp.array([7, 4])
    f = lambda p, x, l: rnnjax.scan(cell, p, x, lengths=l, reverse=True)  # noqa: E731
    chex.assert_trees_all_close(jax.jit(f)(params, xs, lengths), f(params, xs, lengths), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_gradients_match_finite_differences(name, with_lengths):
    with jax.enable_x64(True):
        cell = CELLS[name][0](4, param_dtype=jnp.float64)
        params = randomize(cell.init(jax.random.key(0), 2), jax.random.key(1))
        xs = jax.random.normal(jax.random.key(2), (2, 5, 2), jnp.float64)
        lengths = jnp.array([5, 2]) if with_lengths else None

        def loss(params, xs):
            final, ys = rnnjax.scan(cell, params, xs, lengths=lengths)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(final))

        check_grads(loss, (params, xs), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_runs_close_to_float32(name):
    cell32, params, _ = make(name)
    cell16 = CELLS[name][0](H, dtype=jnp.bfloat16)
    xs = jax.random.normal(jax.random.key(6), (2, 5, I))
    _, ys16 = jax.jit(lambda p, x: rnnjax.scan(cell16, p, x))(params, xs)
    _, ys32 = rnnjax.scan(cell32, params, xs)
    assert ys16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(ys16, np.float32), ys32, atol=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_param_dtype(name):
    cell = CELLS[name][0](H, param_dtype=jnp.bfloat16)
    params = cell.init(jax.random.key(0), I)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize("name", CLASSIC)
def test_param_shapes(name):
    params = CELLS[name][0](H).init(jax.random.key(0), I)
    assert params.w_x.shape[0] == I and params.w_h.shape[0] == H
    assert params.w_x.shape[1] == params.w_h.shape[1]


@pytest.mark.parametrize("name", NAMES)
def test_leading_batch_dims_are_independent(name):
    """[2, 3, T, I] gives what each [T, I] sequence gives alone (unbatched)."""
    cell, params, _ = make(name)
    xs = jax.random.normal(jax.random.key(7), (2, 3, 6, I))
    final, ys = rnnjax.scan(cell, params, xs)
    for a in range(2):
        for b in range(3):
            f_ab, y_ab = rnnjax.scan(cell, params, xs[a, b])
            np.testing.assert_allclose(ys[a, b], y_ab, rtol=1e-5, atol=1e-6)
            chex.assert_trees_all_close(jax.tree.map(lambda c: c[a, b], final), f_ab, atol=1e-6)


def test_lstm_forget_bias_and_block_layout():
    params = rnnjax.lstm(H, forget_bias=2.5).init(jax.random.key(0), I)
    np.testing.assert_array_equal(params.b[H : 2 * H], 2.5)
    np.testing.assert_array_equal(params.b[:H], 0.0)
    np.testing.assert_array_equal(params.b[2 * H :], 0.0)
    # The recurrent init is orthogonal per gate block.
    for k in range(4):
        blk = np.asarray(params.w_h[:, k * H : (k + 1) * H])
        np.testing.assert_allclose(blk.T @ blk, np.eye(H), atol=1e-5)


@pytest.mark.parametrize("name", CLASSIC)
def test_initialisers_are_overridable(name):
    def const(value):
        return lambda key, shape, dtype: jnp.full(shape, value, dtype)

    kw = dict(kernel_init=const(0.1), recurrent_init=const(0.2), bias_init=const(0.3))
    if name == "lstm":
        kw["forget_bias"] = 0.0
    cell = CELLS[name][0](H, **kw)
    params = cell.init(jax.random.key(0), I)
    np.testing.assert_array_equal(params.w_x, np.float32(0.1))
    np.testing.assert_array_equal(params.w_h, np.float32(0.2))
    for leaf in jax.tree.leaves(params)[2:]:
        np.testing.assert_array_equal(leaf, np.float32(0.3))


def test_init_depends_on_key():
    cell = rnnjax.lstm(H)
    a, b = cell.init(jax.random.key(0), I), cell.init(jax.random.key(1), I)
    assert not np.allclose(a.w_x, b.w_x)


def test_vmap_over_params_and_inputs():
    """Seeds as a batch axis: vmap(init) and vmap(scan) equal per-seed calls."""
    cell = rnnjax.gru(H)
    keys = jax.random.split(jax.random.key(0), 3)
    params = jax.vmap(cell.init, in_axes=(0, None))(keys, I)
    xs = jax.random.normal(jax.random.key(1), (3, 2, 4, I))
    _, ys = jax.vmap(lambda p, x: rnnjax.scan(cell, p, x))(params, xs)
    for s in range(3):
        _, y_s = rnnjax.scan(cell, cell.init(keys[s], I), xs[s])
        np.testing.assert_allclose(ys[s], y_s, rtol=1e-5, atol=1e-6)
