"""Flax modules own parameters and call the pure core; they add no math of their own."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax.modules import Recurrent, SequenceModel

B, T, I, H = 3, 5, 4, 6


@pytest.fixture
def xs():
    return jax.random.normal(jax.random.key(0), (B, T, I))


@pytest.mark.parametrize("cell", list(rnnjax.cells.names()))
def test_recurrent_params_are_the_core_pytree(cell, xs):
    layer = rnnjax.make_layer(cell, H, num_layers=2, bidirectional=True)
    module = Recurrent(layer)
    lengths = jnp.array([5, 2, 0])
    variables = module.init(jax.random.key(1), xs, lengths)
    params = variables["params"]["layer"]
    chex.assert_trees_all_equal_shapes_and_dtypes(
        params, jax.eval_shape(lambda k: layer.init(k, I), jax.random.key(0))
    )
    assert jax.tree.structure(params) == jax.tree.structure(layer.init(jax.random.key(0), I))
    chex.assert_trees_all_close(
        module.apply(variables, xs, lengths), layer.apply(params, xs, lengths=lengths)
    )


def test_sequence_model_heads_equal_core_composition(xs):
    layer = rnnjax.make_layer("lstm", H)
    lengths = jnp.array([5, 3, 1])
    last = SequenceModel(layer, num_outputs=2, head="last")
    v = last.init(jax.random.key(2), xs, lengths)["params"]
    carry, ys = layer.apply(v["rnn"]["layer"], xs, lengths=lengths)
    want = rnnjax.readout(v["head"]["readout"], carry[0].h)
    np.testing.assert_allclose(last.apply({"params": v}, xs, lengths), want, rtol=1e-6)
    # The final state is the output at each sequence's last valid step.
    np.testing.assert_allclose(carry[0].h, ys[jnp.arange(B), lengths - 1], rtol=1e-6)
    each = SequenceModel(layer, num_outputs=2, head="each")
    np.testing.assert_allclose(
        each.apply({"params": v}, xs, lengths), rnnjax.readout(v["head"]["readout"], ys), rtol=1e-6
    )


def test_token_inputs_and_continuing_from_a_carry():
    model = SequenceModel(rnnjax.make_layer("gru", H), num_outputs=7, vocab_size=7, embed_dim=5)
    tokens = jax.random.randint(jax.random.key(3), (2, 8), 0, 7)
    params = model.init(jax.random.key(4), tokens)
    whole = model.apply(params, tokens)
    first, carry = model.apply(params, tokens[:, :5], return_carry=True)
    rest = model.apply(params, tokens[:, 5:], initial_carry=carry)
    np.testing.assert_allclose(jnp.concatenate([first, rest], 1), whole, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="inputs must be integer tokens"):
        model.apply(params, tokens.astype(jnp.float32))


def test_dropout_uses_the_dropout_stream(xs):
    model = SequenceModel(
        rnnjax.make_layer("gru", H, num_layers=2, dropout_rate=0.5), num_outputs=1
    )
    params = model.init(jax.random.key(5), xs)
    det = model.apply(params, xs)
    a = model.apply(params, xs, deterministic=False, rngs={"dropout": jax.random.key(0)})
    b = model.apply(params, xs, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(a, det) and not np.allclose(a, b)


def test_a_layer_without_dropout_needs_no_dropout_rng(xs):
    """deterministic=False asked for a "dropout" rng even where nothing draws from it (a
    single layer); a stack with dropout still needs one."""
    single = SequenceModel(rnnjax.make_layer("gru", H, dropout_rate=0.5), num_outputs=1)
    params = single.init(jax.random.key(5), xs)
    np.testing.assert_array_equal(
        single.apply(params, xs, deterministic=False), single.apply(params, xs)
    )
    stacked = SequenceModel(rnnjax.make_layer("gru", H, num_layers=2, dropout_rate=0.5), 1)
    params = stacked.init(jax.random.key(5), xs)
    with pytest.raises(Exception, match="dropout"):
        stacked.apply(params, xs, deterministic=False)
    nested = rnnjax.stack([rnnjax.make_layer("gru", H, num_layers=2, dropout_rate=0.5)])
    assert nested.stochastic and not rnnjax.make_layer("lstm", H, bidirectional=True).stochastic


def test_unknown_head(xs):
    model = SequenceModel(rnnjax.make_layer("gru", H), num_outputs=1, head="middle")
    want = r"head must be one of \('each', 'last', 'flatten'\); got 'middle'"
    with pytest.raises(ValueError, match=want):
        model.init(jax.random.key(0), xs)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"embed_dim": 0}, "embed_dim must be a positive int; got 0"),  # was the layer's width
        ({"embed_dim": -1}, "embed_dim must be a positive int; got -1"),  # was an MLIRError
        ({"vocab_size": 0}, "vocab_size must be a positive int; got 0"),
    ],
)
def test_sequence_model_embedding_sizes(kw, match):
    model = SequenceModel(rnnjax.make_layer("gru", 4), 3, **{"vocab_size": 5, **kw})
    with pytest.raises(ValueError, match=match):
        model.init(jax.random.key(0), jnp.array([[1, 2, 3]]))
