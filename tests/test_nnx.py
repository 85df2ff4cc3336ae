"""Flax NNX modules (rnnjax.nnx): the same numbers as the linen modules on the same
weights (outputs and gradients), training with nnx.Optimizer, orbax round trips, and
bad arguments.

Random weights and inputs come from NumPy (a seeded generator): every distinct eager JAX
op compiles once, and compiling is most of what a small test spends."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rnnjax
import rnnjax.nnx as rnx
from rnnjax import modules
from rnnjax.checkpoint import Checkpointer, state_checksum

B, T, I, H = 3, 5, 4, 6


def _random(shapes, seed: int, scale: float = 0.5):
    """Random normal arrays in the structure of ``shapes`` (abstract or concrete), biases
    included: init leaves zero biases, which would hide an indexing bug."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes
    )


def _tokens(shape, vocab: int, seed: int, low: int = 0):
    return jnp.asarray(np.random.default_rng(seed).integers(low, vocab, shape), jnp.int32)


def _linen_params(module, *args, seed: int):
    """Random params in the structure ``module.init`` gives (traced, not run)."""
    return _random(jax.eval_shape(module.init, jax.random.key(0), *args)["params"], seed)


def _pure(state):
    return nnx.to_pure_dict(nnx.state(state, nnx.Param))


def _linen_value_and_grad(module, params, loss, *args):
    """``(loss, outputs), grads`` of ``loss(module.apply(...))`` for the params."""

    def f(p):
        out = module.apply({"params": p}, *args)
        return loss(out), out

    return jax.jit(jax.value_and_grad(f, has_aux=True))(params)


def _nnx_value_and_grad(model, loss, *args):
    @nnx.jit
    def run(model, args):
        def f(m):
            out = m(*args)
            return loss(out), out

        return nnx.value_and_grad(f, has_aux=True)(model)

    return run(model, args)


def _dot(out, r) -> jax.Array:
    return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(r)))


def test_stacked_bidirectional_recurrent_matches_linen():
    """NNX -> linen: an NNX Recurrent holding the core's params, moved with to_linen,
    computes linen's carry, outputs and gradients (padded batch, given initial carry)."""
    layer = rnnjax.make_layer("gru", H, num_layers=2, bidirectional=True, dropout_rate=0.5)
    core = _random(jax.eval_shape(lambda: layer.init(jax.random.key(0), I)), seed=0)
    xs = _random(jax.ShapeDtypeStruct((B, T, I), jnp.float32), seed=1, scale=1.0)
    lengths = jnp.array([5, 2, 1])
    carry0 = _random(layer.initial_carry((B,)), seed=2)
    model = rnx.Recurrent(layer, params=core, deterministic=True)
    assert jax.tree.structure(rnx.unwrap(model.params)) == jax.tree.structure(core)

    r = _random(jax.eval_shape(lambda: layer.apply(core, xs, carry0)), seed=3)
    loss = functools.partial(_dot, r=r)
    (got_loss, got), grads = _nnx_value_and_grad(model, loss, xs, lengths, carry0)
    linen_module, params = rnx.to_linen(model)
    assert linen_module == modules.Recurrent(layer)
    chex.assert_trees_all_equal(params, {"layer": core})
    (want_loss, want), want_grads = _linen_value_and_grad(
        linen_module, params, loss, xs, lengths, carry0
    )
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    moved = rnx.Recurrent(layer, params=want_grads["layer"])
    chex.assert_trees_all_close(_pure(grads), _pure(moved), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(got[1][2, 1:]).max()) == 0.0  # padded steps stay zero


@pytest.mark.parametrize("tokens", [False, True], ids=["features_last", "tokens_each"])
def test_sequence_model_matches_linen(tokens):
    """linen -> NNX: from_linen on random linen weights gives the same outputs and the
    same gradients (padded batch with lengths); to_linen gives the same arrays back."""
    layer = rnnjax.make_layer("lstm", H)
    lengths = jnp.array([5, 3, 1])
    if tokens:
        inputs = _tokens((B, T), 7, seed=4)
        linen_model = modules.SequenceModel(layer, 3, head="each", vocab_size=7, embed_dim=5)
    else:
        inputs = _random(jax.ShapeDtypeStruct((B, T, I), jnp.float32), seed=4, scale=1.0)
        linen_model = modules.SequenceModel(layer, 3, head="last")
    params = _linen_params(linen_model, inputs, lengths, seed=5)
    model = rnx.from_linen(linen_model, params)

    r = _random(jax.ShapeDtypeStruct((B, T, 3) if tokens else (B, 3), jnp.float32), seed=6)
    loss = functools.partial(_dot, r=r)
    (got_loss, got), grads = _nnx_value_and_grad(model, loss, inputs, lengths)
    (want_loss, want), want_grads = _linen_value_and_grad(
        linen_model, params, loss, inputs, lengths
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    moved = rnx.from_linen(linen_model, want_grads)
    chex.assert_trees_all_close(_pure(grads), _pure(moved), rtol=1e-5, atol=1e-6)
    linen_again, params_again = rnx.to_linen(model)
    assert linen_again == linen_model
    chex.assert_trees_all_equal(params_again, params)


def test_seq2seq_with_attention_matches_linen():
    """Bidirectional GRU encoder, Bahdanau attention, dense bridge: teacher-forced logits,
    attention weights and gradients, and greedy decoding, on random linen weights."""
    V, S, L = 9, 6, 4
    linen_model = modules.make_seq2seq(
        V, cell="gru", hidden_size=5, bidirectional=True, attention="bahdanau", embed_dim=4
    )
    src, tgt_in = _tokens((B, S), V, seed=7, low=3), _tokens((B, L), V, seed=8, low=3)
    src_lengths = jnp.array([6, 3, 1])
    params = _linen_params(linen_model, src, src_lengths, tgt_in, seed=9)
    assert "bridge" in params  # a bidirectional encoder needs the dense bridge
    model = rnx.from_linen(linen_model, params)

    r = _random(jax.ShapeDtypeStruct((B, L, V), jnp.float32), seed=10)
    loss = lambda out: jnp.vdot(out[0], r) + jnp.sum(out[1] ** 2)  # noqa: E731
    (got_loss, got), grads = _nnx_value_and_grad(model, loss, src, src_lengths, tgt_in)
    (want_loss, want), want_grads = _linen_value_and_grad(
        linen_model, params, loss, src, src_lengths, tgt_in
    )
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    moved = rnx.from_linen(linen_model, want_grads)
    chex.assert_trees_all_close(_pure(grads), _pure(moved), rtol=1e-5, atol=1e-6)

    greedy = nnx.jit(lambda m, s, sl: m.greedy(s, sl, max_len=5))(model, src, src_lengths)
    want_greedy = jax.jit(
        lambda p, s, sl: linen_model.apply({"params": p}, s, sl, method="greedy", max_len=5)
    )(params, src, src_lengths)
    np.testing.assert_array_equal(greedy.tokens, want_greedy.tokens)
    np.testing.assert_array_equal(greedy.lengths, want_greedy.lengths)
    np.testing.assert_allclose(greedy.log_prob, want_greedy.log_prob, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(rnx.to_linen(model)[1], params)


def test_dropout_draws_from_the_dropout_stream():
    layer = rnnjax.make_layer("gru", H, num_layers=2, dropout_rate=0.5)
    xs = _random(jax.ShapeDtypeStruct((B, T, I), jnp.float32), seed=11, scale=1.0)
    model = rnx.Recurrent(layer, I, rngs=nnx.Rngs(0, dropout=1))
    # A key at the call is the key layer.apply gets.
    key = jax.random.key(7)
    got = nnx.jit(lambda m, x, k: m(x, rngs=k)[1])(model, xs, key)
    want = jax.jit(lambda p, x, k: layer.apply(p, x, key=k)[1])(rnx.unwrap(model.params), xs, key)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # The module's stream moves on from call to call; eval() turns dropout off.
    apply = nnx.jit(lambda m, x: m(x)[1])
    a, b = apply(model, xs), apply(model, xs)
    assert not np.allclose(a, b)
    model.eval()
    det = apply(model, xs)
    np.testing.assert_array_equal(apply(model, xs), det)
    assert not np.allclose(a, det)
    np.testing.assert_array_equal(apply(nnx.view(model, deterministic=True), xs), det)
    model.train()
    assert not np.allclose(apply(model, xs), det)


def test_a_regularised_layer_draws_its_masks_from_the_dropout_stream():
    """A layer with a Regularizer (zoneout, recurrent dropout; rnnjax.regularize) is
    stochastic as a dropout stack is: the NNX module passes a key exactly where
    layer.apply takes one, and none in evaluation."""
    reg = rnnjax.Regularizer(zoneout=0.3, recurrent_dropout=0.2)
    layer = rnnjax.make_layer("lstm", H, bidirectional=True, regularizer=reg)
    xs = _random(jax.ShapeDtypeStruct((B, T, I), jnp.float32), seed=14, scale=1.0)
    model = rnx.Recurrent(layer, I, rngs=nnx.Rngs(0))
    params = rnx.unwrap(model.params)
    key = jax.random.key(3)
    got = nnx.jit(lambda m, x, k: m(x, rngs=k))(model, xs, key)
    want = jax.jit(lambda p, x, k: layer.apply(p, x, key=k))(params, xs, key)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
    plain = jax.jit(lambda p, x: layer.apply(p, x))(params, xs)
    assert not np.allclose(got[1], plain[1])  # the masks did something
    model.eval()
    chex.assert_trees_all_close(nnx.jit(lambda m, x: m(x))(model, xs), plain, rtol=1e-6)


@functools.cache
def _token_layer():
    # One Layer object, so that every token model has the same graphdef and the
    # jitted steps below compile once for the tests that share them.
    return rnnjax.make_layer("gru", H, num_layers=2, dropout_rate=0.1)


def _token_model(seed: int) -> rnx.SequenceModel:
    return rnx.SequenceModel(_token_layer(), 7, vocab_size=7, embed_dim=I, rngs=nnx.Rngs(seed))


def _next_token_loss(model, tokens, deterministic=None):
    logits = model(tokens[:, :-1], deterministic=deterministic)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
    return loss, logits


@nnx.jit
def _train_step(model, optimizer, tokens):
    (loss, _), grads = nnx.value_and_grad(_next_token_loss, has_aux=True)(model, tokens)
    optimizer.update(model, grads)
    return loss


_evaluate = nnx.jit(functools.partial(_next_token_loss, deterministic=True))


def test_nnx_optimizer_lowers_the_loss():
    tokens = _tokens((8, 11), 7, seed=12)
    model = _token_model(0)
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)
    before = float(_evaluate(model, tokens)[0])
    for _ in range(30):
        _train_step(model, optimizer, tokens)  # dropout on: the model is in training mode
    after = float(_evaluate(model, tokens)[0])
    assert int(optimizer.step[...]) == 30
    assert after < 0.8 * before, (before, after)  # 1.98 -> 1.18 on a CPU
    # The params are still the core's pytrees after the optimizer wrote them.
    core = rnx.unwrap(model.rnn.params)
    assert jax.tree.structure(core) == jax.tree.structure(model.layer.init(jax.random.key(0), I))


def test_state_saves_and_restores_through_orbax(tmp_path):
    tokens = _tokens((8, 11), 7, seed=13)
    model = _token_model(0)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    for _ in range(2):
        _train_step(model, optimizer, tokens)
    # The whole model state (params and the dropout stream's typed key and count) and
    # the optimizer's state.
    state = {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(2, state)

    # Restore into an abstract model (nothing initialised), then a fresh one.
    abstract = nnx.eval_shape(lambda: _token_model(1))
    fresh = _token_model(2)
    fresh_optimizer = nnx.Optimizer(fresh, optax.adam(1e-2), wrt=nnx.Param)
    like = {"model": nnx.state(abstract), "optimizer": nnx.state(fresh_optimizer)}
    with Checkpointer(tmp_path) as checkpointer:
        restored, _ = checkpointer.restore(2, like)
    nnx.update(fresh, restored["model"])
    nnx.update(fresh_optimizer, restored["optimizer"])

    np.testing.assert_array_equal(_evaluate(fresh, tokens)[1], _evaluate(model, tokens)[1])
    chex.assert_trees_all_equal(
        nnx.to_pure_dict(nnx.state(fresh_optimizer)), nnx.to_pure_dict(nnx.state(optimizer))
    )
    assert int(fresh_optimizer.step[...]) == 2
    # The core's pytrees, NamedTuples and all.
    chex.assert_trees_all_equal(rnx.unwrap(fresh.rnn.params), rnx.unwrap(model.rnn.params))
    # The dropout stream goes on where it stopped: the next training step is the same.
    assert state_checksum(nnx.state(fresh)) == state_checksum(nnx.state(model))
    np.testing.assert_array_equal(
        _train_step(fresh, fresh_optimizer, tokens), _train_step(model, optimizer, tokens)
    )
    chex.assert_trees_all_equal(_pure(fresh), _pure(model))


def test_checksum_reads_typed_keys():
    """state_checksum over typed PRNG keys (a full NNX state holds them): by their data
    and their implementation."""
    a, b = nnx.state(_token_model(0)), nnx.state(_token_model(0))
    assert state_checksum(a) == state_checksum(b)
    key = jax.random.key(0)
    assert state_checksum({"k": key}) == state_checksum({"k": jax.random.key(0)})
    assert state_checksum({"k": key}) != state_checksum({"k": jax.random.key(1)})
    assert state_checksum({"k": key}) != state_checksum({"k": jax.random.key_data(key)})
    rbg = jax.random.key(0, impl="rbg")
    assert state_checksum({"k": rbg}) != state_checksum({"k": jax.random.key_data(rbg)})


def _gru(**kw):
    return rnnjax.make_layer("gru", H, **kw)


def _stochastic():
    return _gru(num_layers=2, dropout_rate=0.5)


def _rngs():
    return nnx.Rngs(0)


_xs = lambda: jnp.zeros((2, 3, I))  # noqa: E731

BAD = {
    "not a layer": (lambda: rnx.Recurrent("gru", I, rngs=_rngs()), "layer must be an rnnjax"),
    "neither size nor params": (
        lambda: rnx.Recurrent(_gru(), rngs=_rngs()),
        r"exactly one of input_size .* got input_size=None and params=None",
    ),
    "input_size": (
        lambda: rnx.Recurrent(_gru(), 0, rngs=_rngs()),
        "input_size must be a positive int; got 0",
    ),
    "no rngs": (lambda: rnx.Recurrent(_gru(), I), r"rngs \(an nnx.Rngs\) is needed"),
    "key as rngs": (
        lambda: rnx.Recurrent(_gru(), I, rngs=jax.random.key(0)),
        "rngs must be an nnx.Rngs; got",
    ),
    "params structure": (
        lambda: rnx.Recurrent(_gru(), params={"w": jnp.zeros(3)}),
        "params must have the structure",
    ),
    "head": (
        lambda: rnx.SequenceModel(_gru(), 2, input_size=I, head="middle", rngs=_rngs()),
        r"head must be one of \('each', 'last'\); got 'middle'",
    ),
    "no input_size": (
        lambda: rnx.SequenceModel(_gru(), 2, rngs=_rngs()),
        "input_size .* is needed without vocab_size; got None",
    ),
    "input_size with tokens": (
        lambda: rnx.SequenceModel(_gru(), 2, input_size=I, vocab_size=5, rngs=_rngs()),
        "input_size must be None with vocab_size set",
    ),
    "embed_dim": (
        lambda: rnx.SequenceModel(_gru(), 2, vocab_size=5, embed_dim=0, rngs=_rngs()),
        "embed_dim must be a positive int; got 0",
    ),
    "params layout": (
        lambda: rnx.SequenceModel(_gru(), 2, params={"rnn": {"params": {}}}),
        r"params\['rnn'\] must be a mapping with the key 'layer' .* got keys \['params'\]",
    ),
    "readout params": (
        lambda: rnx.Readout(params=(jnp.zeros((3, 2)), jnp.zeros(2))),
        r"params must be a ReadoutParams\(w \[H, V\], b \[V\]\); got tuple",
    ),
    "decoder_cells": (
        lambda: rnx.Seq2Seq(9, 9, _gru(), (), rngs=_rngs()),
        "decoder_cells must be a non-empty tuple of Cell",
    ),
    "bos": (
        lambda: rnx.Seq2Seq(9, 9, _gru(), (rnnjax.make_cell("gru", H),), bos=9, rngs=_rngs()),
        r"bos must be a token id in \[0, tgt_vocab\) = \[0, 9\); got 9",
    ),
    "luong_dot on a bidirectional encoder": (
        lambda: rnx.make_seq2seq(
            9, hidden_size=4, bidirectional=True, attention="luong_dot", rngs=_rngs()
        ),
        "luong_dot attention needs the decoder's hidden size to equal",
    ),
    "embedding shape": (
        lambda: rnx.Encoder(
            _gru(), 9, 3, params={"embed": {"embedding": jnp.zeros((9, 4))}, "rnn": {"layer": {}}}
        ),
        r"embedding must have shape \[vocab_size, embed_dim\] = \[9, 3\]; got \[9, 4\]",
    ),
    "from_linen module": (
        lambda: rnx.from_linen(modules.nn.Dense(3), {}),
        "module must be one of rnnjax.modules' .* got Dense",
    ),
    "to_linen model": (
        lambda: rnx.to_linen(nnx.Linear(2, 3, rngs=_rngs())),
        "model must be one of rnnjax.nnx's .* got Linear",
    ),
    "dropout without rngs": (
        lambda: rnx.Recurrent(_stochastic(), params=_stochastic().init(jax.random.key(0), I))(
            _xs()
        ),
        "rngs is needed for dropout",
    ),
    "rngs at the call": (
        lambda: rnx.Recurrent(_stochastic(), I, rngs=_rngs())(_xs(), rngs="seed"),
        "rngs must be an nnx.Rngs, an nnx.RngStream or a jax.random key; got str",
    ),
    "float tokens": (
        lambda: rnx.SequenceModel(_gru(), 7, vocab_size=7, embed_dim=I, rngs=_rngs())(_xs()),
        "inputs must be integer tokens",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_arguments_raise(name):
    make, match = BAD[name]
    with pytest.raises(ValueError, match=match):
        make()
