"""Every promised error: a ValueError naming the argument, what was expected and what came."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax

I, H = 3, 4


@pytest.fixture
def lstm():
    cell = rnnjax.lstm(H)
    return cell, cell.init(jax.random.key(0), I)


def test_input_rank(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match=r"xs must have shape \[\*batch, T, I\].*got shape \(3,\)"):
        rnnjax.scan(cell, params, jnp.zeros((I,)))
    with pytest.raises(ValueError, match=r"xs must have shape \[T, \*batch, I\]"):
        rnnjax.scan(cell, params, jnp.zeros((I,)), time_major=True)


def test_feature_size_names_the_shape_given(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match=r"xs must have feature size 3.*got shape \(2, 5, 7\)"):
        rnnjax.scan(cell, params, jnp.zeros((2, 5, 7)))
    with pytest.raises(ValueError, match=r"feature size 3.*got shape \(2, 7\)"):
        cell.step(params, cell.initial_carry((2,)), jnp.zeros((2, 7)))


def test_feature_size_error_under_jit(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match="feature size 3"):
        jax.jit(lambda x: rnnjax.scan(cell, params, x))(jnp.zeros((2, 5, 7)))


def test_integer_inputs(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match="floating-point array; got dtype int32"):
        rnnjax.scan(cell, params, jnp.zeros((2, 5, I), jnp.int32))


def test_lengths_shape_dtype_and_range(lstm):
    cell, params = lstm
    xs = jnp.zeros((2, 5, I))
    with pytest.raises(
        ValueError, match=r"lengths must have the batch shape of xs, \(2,\); got shape \(3,\)"
    ):
        rnnjax.scan(cell, params, xs, lengths=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"integer array; got dtype float32"):
        rnnjax.scan(cell, params, xs, lengths=jnp.array([1.0, 2.0]))
    with pytest.raises(
        ValueError, match=r"lengths must lie in \[0, 6\) \(\[0, T\], T = 5\); got values \[6\]"
    ):
        rnnjax.scan(cell, params, xs, lengths=jnp.array([6, 2]))
    with pytest.raises(ValueError, match=r"got values \[-1\]"):
        rnnjax.scan(cell, params, xs, lengths=jnp.array([-1, 2]))


def test_carry_mismatch(lstm):
    cell, params = lstm
    xs = jnp.zeros((2, 5, I))
    with pytest.raises(ValueError, match="carry does not match the cell"):
        rnnjax.scan(cell, params, xs, jnp.zeros((2, H)))  # a bare h for an LSTM
    bad = rnnjax.LSTMCarry(jnp.zeros((3, H)), jnp.zeros((3, H)))
    with pytest.raises(ValueError, match=r"expected shapes .*\(2, 4\).*got .*\(3, 4\)"):
        rnnjax.scan(cell, params, xs, bad)


def test_integer_carry_is_refused(lstm):
    """The cells cast their state to the carry's dtype: an integer carry would round
    every state and output to integers (zeros here) instead of failing."""
    cell, params = lstm
    xs = jax.random.normal(jax.random.key(1), (2, 5, I))
    ints = rnnjax.LSTMCarry(jnp.zeros((2, H), jnp.int32), jnp.zeros((2, H), jnp.int32))
    with pytest.raises(ValueError, match=r"carry must be floating point.*float32.*got.*int32"):
        rnnjax.scan(cell, params, xs, ints)
    gru = rnnjax.gru(H)
    with pytest.raises(ValueError, match=r"carry must be floating point"):
        rnnjax.scan(gru, gru.init(jax.random.key(0), I), xs, jnp.zeros((2, H), jnp.int32))
    # Another float width is a choice (mixed precision), not an error.
    low = jax.tree.map(lambda a: a.astype(jnp.bfloat16), cell.initial_carry((2,)))
    assert rnnjax.scan(cell, params, xs, low)[1].shape == (2, 5, H)


def test_params_of_another_cell_or_size(lstm):
    cell, params = lstm
    xs = jnp.zeros((2, 5, I))
    gru = rnnjax.gru(H)
    with pytest.raises(
        ValueError, match=r"params do not match the gru cell: expected .*GRUParams.*got LSTMParams"
    ):
        rnnjax.scan(gru, params, xs)
    wider = rnnjax.lstm(H + 1).init(jax.random.key(0), I)
    with pytest.raises(
        ValueError, match=r"hidden size 4.*expected shapes .*w_h=\(4, 16\).*got .*w_h=\(5, 20\)"
    ):
        rnnjax.scan(cell, wider, xs)
    with pytest.raises(ValueError, match=r"expected shapes .*b=\(16,\).*got .*b=\(5,\)"):
        rnnjax.scan(cell, params._replace(b=jnp.zeros(5)), xs)
    # The input's feature size is still blamed on xs, not on the params.
    with pytest.raises(ValueError, match=r"xs must have feature size 3"):
        rnnjax.scan(cell, params, jnp.zeros((2, 5, I + 2)))


def test_lengths_as_a_list(lstm):
    cell, params = lstm
    xs = jax.random.normal(jax.random.key(1), (2, 5, I))
    got = rnnjax.scan(cell, params, xs, lengths=[5, 2])[1]
    want = rnnjax.scan(cell, params, xs, lengths=jnp.array([5, 2]))[1]
    assert jnp.array_equal(got, want)


def test_perturbation_params_need_a_time_axis():
    """Without the leading T axis the params' perturbation was taken as one per step
    along its first axis whenever that had T entries: a wrong gradient, no error."""
    cell = rnnjax.elman(4)
    params = cell.init(jax.random.key(0), 4)
    xs = jnp.ones((2, 4, 4))  # T = I = H = 4
    eps = jax.tree.map(jnp.zeros_like, params)
    with pytest.raises(ValueError, match=r"perturbation.params must have .* leading time axis"):
        rnnjax.scan(cell, params, xs, perturbation=rnnjax.Perturbation(params=eps))


@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda: rnnjax.elman(4, activation="sigmoidish"),
            r"activation must be one of \['identity', 'relu', 'tanh'\]",
        ),
        (lambda: rnnjax.elman(4, activation=3), "activation must be a string or a callable"),
        (lambda: rnnjax.lstm(0), "hidden_size must be a positive int; got 0"),
        (lambda: rnnjax.gru(4.0), "hidden_size must be a positive int; got 4.0"),
        (lambda: rnnjax.gru(4, reset_after="yes"), "reset_after must be True or False"),
        (
            lambda: rnnjax.lstm(4).init(jax.random.key(0), -1),
            "input_size must be a positive int; got -1",
        ),
        (lambda: rnnjax.stack([]), "layers must be a non-empty sequence of Layer"),
        (
            lambda: rnnjax.stack([rnnjax.recurrent(rnnjax.gru(4))], dropout_rate=1.0),
            r"dropout_rate must lie in \[0, 1\)",
        ),
    ],
)
def test_bad_options(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_numpy_integer_sizes_are_sizes():
    """Sizes read from arrays or configs are often NumPy integers: the same cell."""
    key = jax.random.key(0)
    for make in (rnnjax.lstm, rnnjax.gru, rnnjax.elman):
        cell = make(np.int64(H))
        assert type(cell.hidden_size) is int and cell.hidden_size == H
        got = cell.init(key, np.int32(I))
        chex.assert_trees_all_equal(got, make(H).init(key, I))
    with pytest.raises(ValueError, match=r"hidden_size must be a positive int; got np.int64\(0\)"):
        rnnjax.lstm(np.int64(0))


def test_stack_params_and_carry_counts():
    net = rnnjax.stack([rnnjax.recurrent(rnnjax.gru(H)) for _ in range(2)])
    params = net.init(jax.random.key(0), I)
    xs = jnp.zeros((2, 5, I))
    with pytest.raises(
        ValueError,
        match="params of a 2-layer stack must be a tuple of 2 entries; got tuple of length 1",
    ):
        net.apply(params[:1], xs)
    with pytest.raises(ValueError, match="carry of a 2-layer stack"):
        net.apply(params, xs, carry=jnp.zeros((2, H)))


def test_bidirectional_params_type():
    layer = rnnjax.bidirectional(rnnjax.gru(H))
    params = layer.init(jax.random.key(0), I)
    with pytest.raises(
        ValueError, match="params of a bidirectional layer must be a BidirectionalParams; got tuple"
    ):
        layer.apply(tuple(params), jnp.zeros((2, 5, I)))


def test_readout_feature_size():
    params = rnnjax.readout_init(jax.random.key(0), H, 6)
    with pytest.raises(ValueError, match=r"h must have feature size 4.*got shape \(2, 5\)"):
        rnnjax.readout(params, jnp.zeros((2, 5)))
