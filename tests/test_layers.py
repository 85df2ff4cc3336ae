"""Bidirectional and stacked layers against hand-written compositions of scan."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax

I, H, B, T = 3, 4, 3, 6


@pytest.fixture
def data():
    xs = jax.random.normal(jax.random.key(0), (B, T, I))
    lengths = jnp.array([6, 2, 4])
    return xs, lengths


def test_bidirectional_equals_two_scans(data):
    xs, lengths = data
    layer = rnnjax.bidirectional(rnnjax.lstm(H), rnnjax.gru(H + 1))
    params = layer.init(jax.random.key(1), I)
    carry, ys = layer.apply(params, xs, lengths=lengths)
    f_c, f_y = rnnjax.scan(rnnjax.lstm(H), params.forward, xs, lengths=lengths)
    b_c, b_y = rnnjax.scan(rnnjax.gru(H + 1), params.backward, xs, lengths=lengths, reverse=True)
    assert layer.output_size == 2 * H + 1
    np.testing.assert_allclose(ys[..., :H], f_y)
    np.testing.assert_allclose(ys[..., H:], b_y)
    chex.assert_trees_all_close(carry, rnnjax.BidirectionalCarry(f_c, b_c))
    # The backward output at t = 0 has read the whole valid sequence: it depends on the
    # last valid input of each example, and not on any padded one.
    grad = jax.grad(lambda x: layer.apply(params, x, lengths=lengths)[1][:, 0, H:].sum())(xs)
    for b in range(B):
        L = int(lengths[b])
        assert np.abs(grad[b, L - 1]).sum() > 0
        np.testing.assert_array_equal(grad[b, L:], 0.0)


@pytest.mark.parametrize("bidir", [False, True])
def test_stack_equals_chained_layers(data, bidir):
    xs, lengths = data
    make = (
        (lambda: rnnjax.bidirectional(rnnjax.gru(H)))
        if bidir
        else (lambda: rnnjax.recurrent(rnnjax.gru(H)))
    )
    layers = [make() for _ in range(3)]
    net = rnnjax.stack(layers)
    params = net.init(jax.random.key(2), I)
    carries, ys = net.apply(params, xs, lengths=lengths)
    h = xs
    for layer, p, c in zip(layers, params, carries):
        c_ref, h = layer.apply(p, h, lengths=lengths)
        chex.assert_trees_all_close(c, c_ref)
    np.testing.assert_allclose(ys, h)
    assert ys.shape == (B, T, net.output_size) == (B, T, (2 if bidir else 1) * H)


def test_stack_passes_initial_carries_per_layer(data):
    xs, _ = data
    net = rnnjax.stack([rnnjax.recurrent(rnnjax.lstm(H)) for _ in range(2)])
    params = net.init(jax.random.key(3), I)
    carry0 = jax.tree.map(
        lambda z: jax.random.normal(jax.random.key(4), z.shape), net.initial_carry((B,))
    )
    _, ys = net.apply(params, xs, carry0)
    _, h = rnnjax.scan(rnnjax.lstm(H), params[0], xs, carry0[0])
    _, h = rnnjax.scan(rnnjax.lstm(H), params[1], h, carry0[1])
    np.testing.assert_allclose(ys, h, rtol=1e-6)


def test_stack_dropout_between_layers_only_with_key(data):
    xs, _ = data
    net = rnnjax.stack([rnnjax.recurrent(rnnjax.elman(H)) for _ in range(2)], dropout_rate=0.5)
    params = net.init(jax.random.key(5), I)
    _, det = net.apply(params, xs)
    _, det_again = net.apply(params, xs, key=None)
    _, drop1 = net.apply(params, xs, key=jax.random.key(0))
    _, drop1_again = net.apply(params, xs, key=jax.random.key(0))
    _, drop2 = net.apply(params, xs, key=jax.random.key(1))
    np.testing.assert_array_equal(det, det_again)
    np.testing.assert_array_equal(drop1, drop1_again)
    assert not np.allclose(drop1, det) and not np.allclose(drop1, drop2)
    # By hand: layer 0, inverted dropout with the key folded with the layer index, layer 1.
    _, h = rnnjax.scan(rnnjax.elman(H), params[0], xs)
    keep = jax.random.bernoulli(jax.random.fold_in(jax.random.key(0), 0), 0.5, h.shape)
    _, want = rnnjax.scan(rnnjax.elman(H), params[1], jnp.where(keep, h / 0.5, 0.0))
    np.testing.assert_allclose(drop1, want, rtol=1e-6)


def test_nested_stack_keeps_its_dropout(data):
    """A stack inside a stack gets a key of its own: its dropout runs (it was silently
    off: the outer stack called it without a key)."""
    xs, _ = data
    inner = rnnjax.make_layer("gru", H, num_layers=2, dropout_rate=0.5)
    last = rnnjax.recurrent(rnnjax.gru(H))
    outer = rnnjax.stack([inner, last])
    params = outer.init(jax.random.key(7), I)
    key = jax.random.key(8)
    _, got = outer.apply(params, xs, key=key)
    assert not np.allclose(got, outer.apply(params, xs)[1])
    # By hand: the inner stack with the key the outer one derives for it, then the last.
    _, h = inner.apply(params[0], xs, key=jax.random.fold_in(key, 2 + 0))
    _, want = last.apply(params[1], h)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_recurrent_reverse_layer(data):
    xs, lengths = data
    layer = rnnjax.recurrent(rnnjax.lstm(H), reverse=True)
    params = layer.init(jax.random.key(6), I)
    got = layer.apply(params, xs, lengths=lengths)
    want = rnnjax.scan(rnnjax.lstm(H), params, xs, lengths=lengths, reverse=True)
    chex.assert_trees_all_close(got, want)
