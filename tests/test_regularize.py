"""Zoneout, variational recurrent dropout and weight drop (rnnjax.regularize).

Two routes: the driver with a key against a Python loop over the catalogue's float64
NumPy reference step with the very same masks applied by hand (lengths, reverse);
Monte Carlo: the mean output over many keys against the deterministic (no key) output,
on a linear Elman RNN where the expectation is exact (zoneout over every step; the
dropouts over one step, where the mask enters linearly); finite differences through a
regularised run; the same key gives the same masks; errors before any work.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randomize
from jax.test_util import check_grads

import rnnjax
from rnnjax import Regularizer, regularize

I, H, T, B = 3, 4, 6, 3
LENGTHS = np.array([T, 0, 4])


def _problem(name, seed=0, dtype=jnp.float64):
    cell = rnnjax.make_cell(name, H, param_dtype=dtype)
    params = randomize(cell.init(jax.random.key(seed), I), jax.random.key(seed + 1))
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.standard_normal((B, T, I)), dtype)
    carry = jax.tree.map(
        lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), dtype), cell.initial_carry(B)
    )
    return cell, params, xs, carry


def _by_hand(name, cell, params, xs, carry, masks, lengths, reverse):
    """The reference step of the catalogue (NumPy, float64), example by example, with
    ``masks`` applied as the papers say: weight drop on ``W_h`` for the whole call,
    Gal's mask on ``h`` where it enters the recurrent matmul, zoneout on every carry
    field after the step."""
    entry = rnnjax.cells.get(name)
    p = jax.tree.map(np.asarray, params)
    if masks.weight is not None:
        p = p._replace(w_h=p.w_h * np.asarray(masks.weight))
    finals, ys = [], np.zeros((B, T, H))
    for b in range(B):
        c = jax.tree.map(lambda a: np.asarray(a)[b], carry)
        order = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        for t in order:
            into = c
            if masks.recurrent is not None:  # h enters the step through h W_h only
                m = np.asarray(masks.recurrent)[b]
                into = c._replace(h=c.h * m) if hasattr(c, "h") else c * m
            new, _ = entry.reference(np, p, into, np.asarray(xs)[b, t])
            if masks.zoneout is not None:
                keep = jax.tree.map(lambda d: np.asarray(d)[t, b], masks.zoneout)
                new = jax.tree.map(lambda n, o, d: np.where(d > 0, o, n), new, c, keep)
            c = new
            ys[b, t] = cell.output(c)
        finals.append(c)
    return jax.tree.map(lambda *a: np.stack(a), *finals), ys


CASES = [
    ("lstm", Regularizer(zoneout={"c": 0.5, "h": 0.2})),
    ("lstm", Regularizer(recurrent_dropout=0.4)),
    ("lstm", Regularizer(zoneout=0.3, recurrent_dropout=0.3, weight_drop=0.5)),
    ("rnn_tanh", Regularizer(weight_drop=0.5)),
    ("rnn_tanh", Regularizer(zoneout=0.25, recurrent_dropout=0.5)),
    ("indrnn", Regularizer(zoneout=0.4)),
    ("cornn", Regularizer(zoneout={"y": 0.3})),
]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name, reg", CASES)
def test_a_keyed_run_equals_the_reference_loop_with_the_same_masks(name, reg, reverse):
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(name)
        key = jax.random.key(7)
        final, ys = rnnjax.scan(
            cell, params, xs, carry, lengths=LENGTHS, reverse=reverse, regularizer=reg, key=key
        )
        masks = regularize.draw(reg, cell, cell.prepared(params), carry, T, key)
        want_final, want_ys = _by_hand(name, cell, params, xs, carry, masks, LENGTHS, reverse)
        np.testing.assert_allclose(ys, want_ys, rtol=1e-10, atol=1e-12)
        chex.assert_trees_all_close(final, want_final, rtol=1e-10, atol=1e-12)
        # Padded steps emit zeros; the empty sequence keeps its initial carry.
        assert not np.any(np.asarray(ys)[2, 4:]) and not np.any(np.asarray(ys)[1])
        chex.assert_trees_all_close(
            jax.tree.map(lambda a: a[1], final), jax.tree.map(lambda a: a[1], carry)
        )


def test_masks_are_drawn_as_the_methods_say():
    """Zoneout: fresh per unit and step, at rate z. Gal's: one mask per sequence, scaled
    by 1/(1-p). Weight drop: one mask of W_h's shape for the call, scaled."""
    cell = rnnjax.lstm(64)
    params = cell.init(jax.random.key(0), 2)
    carry = cell.initial_carry(32)
    reg = Regularizer(zoneout={"c": 0.5, "h": 0.1}, recurrent_dropout=0.25, weight_drop=0.6)
    masks = regularize.draw(reg, cell, params, carry, 50, jax.random.key(1))
    assert masks.zoneout.c.shape == (50, 32, 64) and masks.zoneout.h.shape == (50, 32, 64)
    assert abs(float(masks.zoneout.c.mean()) - 0.5) < 0.02
    assert abs(float(masks.zoneout.h.mean()) - 0.1) < 0.01
    assert np.any(masks.zoneout.c[0] != masks.zoneout.c[1])  # a fresh mask every step
    assert masks.recurrent.shape == (32, 64) and masks.weight.shape == params.w_h.shape
    assert set(np.unique(masks.recurrent)) == {0.0, np.float32(1 / 0.75)}
    assert abs(float((masks.recurrent == 0).mean()) - 0.25) < 0.02
    assert set(np.unique(masks.weight)) == {0.0, np.float32(1 / 0.4)}
    again = regularize.draw(reg, cell, params, carry, 50, jax.random.key(1))
    chex.assert_trees_all_equal(masks, again)
    other = regularize.draw(reg, cell, params, carry, 50, jax.random.key(2))
    assert np.any(other.recurrent != masks.recurrent)


def test_the_same_key_gives_the_same_run_and_no_key_is_deterministic():
    cell, params, xs, carry = _problem("gru", dtype=jnp.float32)
    reg = Regularizer(zoneout=0.2, recurrent_dropout=0.3, weight_drop=0.3)
    run = jax.jit(lambda key: rnnjax.scan(cell, params, xs, carry, regularizer=reg, key=key)[1])
    a, b, c = run(jax.random.key(3)), run(jax.random.key(3)), run(jax.random.key(4))
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
    # Without a key the dropouts are off: the plain run.
    plain = rnnjax.scan(cell, params, xs, carry)[1]
    off = rnnjax.scan(cell, params, xs, carry, regularizer=reg._replace(zoneout=0.0))[1]
    np.testing.assert_array_equal(off, plain)


def test_zoneout_without_a_key_is_the_expectation_rule():
    """``s_t = z s_{t-1} + (1 - z) s~_t`` at every step, by hand over the reference."""
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem("lstm", seed=3)
        z = {"h": 0.3, "c": 0.6}
        final, ys = rnnjax.scan(cell, params, xs, carry, regularizer=Regularizer(zoneout=z))
        p = jax.tree.map(np.asarray, params)
        c = jax.tree.map(np.asarray, carry)
        for t in range(T):
            new, _ = rnnjax.cells.get("lstm").reference(np, p, c, np.asarray(xs)[:, t])
            c = type(c)(*(z[f] * getattr(c, f) + (1 - z[f]) * getattr(new, f) for f in c._fields))
            np.testing.assert_allclose(ys[:, t], c.h, rtol=1e-10, atol=1e-12)
        chex.assert_trees_all_close(final, c, rtol=1e-10, atol=1e-12)


def _linear_problem(num_steps, seed=0):
    cell = rnnjax.elman(H, activation="identity")
    params = randomize(cell.init(jax.random.key(seed), I), jax.random.key(seed + 1))
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.standard_normal((2, num_steps, I)), jnp.float32)
    carry = jnp.asarray(rng.standard_normal((2, H)), jnp.float32)
    return cell, params, xs, carry


@pytest.mark.parametrize(
    "reg, num_steps",
    [
        (Regularizer(zoneout=0.35), T),
        (Regularizer(recurrent_dropout=0.4), 1),
        (Regularizer(weight_drop=0.5), 1),
    ],
)
def test_the_mean_over_masks_is_the_deterministic_output(reg, num_steps):
    """Monte Carlo over 20,000 keys on a linear cell: each output's mean within 5
    standard errors (plus 1e-5 of float32 rounding) of the run without a key. Zoneout's
    masks are fresh at every step and independent of the state, so the expectation
    holds over every step; a dropout mask is reused by later steps (products of the
    same mask), so it is checked on the one step where it enters linearly."""
    cell, params, xs, carry = _linear_problem(num_steps)
    keys = jax.random.split(jax.random.key(11), 20_000)
    samples = jax.jit(
        jax.vmap(lambda k: rnnjax.scan(cell, params, xs, carry, regularizer=reg, key=k)[1])
    )(keys)
    mean, se = samples.mean(0), samples.std(0) / np.sqrt(len(keys))
    want = rnnjax.scan(cell, params, xs, carry, regularizer=reg)[1]
    assert float(se.max()) > 1e-3  # the masks do vary the output
    assert np.all(np.abs(mean - want) <= 5 * se + 1e-5), np.abs(mean - want) / se


def test_gradients_through_a_keyed_run_by_finite_differences():
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem("lstm", seed=5)
        reg = Regularizer(zoneout=0.3, recurrent_dropout=0.3, weight_drop=0.3)
        key = jax.random.key(9)

        def loss(params, xs, carry):
            final, ys = rnnjax.scan(
                cell, params, xs, carry, lengths=LENGTHS, regularizer=reg, key=key
            )
            return jnp.sum(jnp.sin(ys)) + jnp.sum(final.c**2)

        check_grads(loss, (params, xs, carry), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_layers_take_a_regularizer_and_draw_masks_per_direction():
    cell = rnnjax.gru(H)
    reg = Regularizer(zoneout=0.3)
    layer = rnnjax.recurrent(cell, regularizer=reg)
    assert layer.stochastic and not rnnjax.recurrent(cell).stochastic
    params = layer.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    key = jax.random.key(2)
    _, ys = layer.apply(params, xs, key=key)
    np.testing.assert_array_equal(ys, rnnjax.scan(cell, params, xs, regularizer=reg, key=key)[1])
    bi = rnnjax.bidirectional(cell, regularizer=reg)
    bp = bi.init(jax.random.key(0), I)
    same = rnnjax.layers.BidirectionalParams(bp.forward, bp.forward)
    _, y2 = bi.apply(same, xs[:, ::-1] * 0 + xs[:, :1], key=key)  # a constant sequence
    # The same weights on a constant input: the directions differ only by their masks.
    assert np.abs(np.asarray(y2[..., :H]) - np.asarray(y2[..., H:][:, ::-1])).max() > 1e-4
    stacked = rnnjax.make_layer("lstm", H, num_layers=2, regularizer=reg)
    assert stacked.stochastic
    p2 = stacked.init(jax.random.key(0), I)
    a = stacked.apply(p2, xs, key=key)[1]
    b = stacked.apply(p2, xs, key=jax.random.key(5))[1]
    c = stacked.apply(p2, xs)[1]
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4
    np.testing.assert_array_equal(c, stacked.apply(p2, xs)[1])


@pytest.mark.parametrize(
    "make, reg, match",
    [
        (lambda: rnnjax.lstm(H), Regularizer(zoneout=1.0), r"zoneout must be a number in \[0, 1\)"),
        (lambda: rnnjax.lstm(H), Regularizer(recurrent_dropout=-0.1), "recurrent_dropout must"),
        (lambda: rnnjax.lstm(H), Regularizer(weight_drop="0.5"), "weight_drop must be a number"),
        (
            lambda: rnnjax.lstm(H),
            Regularizer(zoneout={"x": 0.1}),
            r"carry has fields \('h', 'c'\), and \['x'\]",
        ),
        (lambda: rnnjax.gru(H), Regularizer(zoneout={"h": 0.1}), "carry with named fields"),
        (
            lambda: rnnjax.make_cell("indrnn", H),
            Regularizer(recurrent_dropout=0.1),
            "recurrent_dropout acts on .* the indrnn cell declares none",
        ),
        (
            lambda: rnnjax.make_cell("min_gru", H),
            Regularizer(weight_drop=0.1),
            "weight_drop .* the min_gru cell declares none",
        ),
        (lambda: rnnjax.lstm(H), {"zoneout": 0.1}, "regularizer must be a rnnjax.Regularizer"),
    ],
)
def test_bad_regularizers_are_refused_before_any_work(make, reg, match):
    cell = make()
    with pytest.raises(ValueError, match=match):
        rnnjax.recurrent(cell, regularizer=reg)
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match=match):
        rnnjax.scan(cell, params, jnp.ones((2, T, I)), regularizer=reg)
