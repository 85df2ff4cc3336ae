"""Seq2Seq: the decoder against NumPy, teacher forcing against step-by-step decoding,
beam search against greedy and brute force, padding invariance, and bad inputs."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CELLS, randomize

import rnnjax
from rnnjax import decode
from rnnjax.modules import make_seq2seq
from rnnjax.seq2seq import DecoderState, decoder
from rnnjax.tasks.vocab import BOS, EOS, PAD

B, S, C, H, E, V = 3, 6, 5, 5, 4, 9
ATTN = [None, "bahdanau", "luong_dot", "luong_general"]


def _np(a):
    return np.asarray(a, np.float64)


def greedy(*args, **kw):
    """``decode.greedy`` with the task vocabulary's special ids unless given."""
    return decode.greedy(*args, **{"bos": BOS, "eos": EOS, "pad": PAD, **kw})


def beam_search(*args, **kw):
    return decode.beam_search(*args, **{"bos": BOS, "eos": EOS, "pad": PAD, **kw})


def _softmax_masked(e, mask):
    e = np.where(mask, e, -np.inf)
    w = np.exp(e - e.max(-1, keepdims=True))
    return w / w.sum(-1, keepdims=True)


def numpy_decoder_step(cell_name, attention, p, values, mask, context, carry, feed, tokens):
    """The equations of rnnjax/seq2seq.py's docstring, by hand in float64."""
    ref = CELLS[cell_name][1]
    out = lambda h: h[0] if isinstance(h, tuple) else h  # noqa: E731
    emb = _np(p.embedding)[tokens]
    values, context = _np(values), _np(context)

    def attend(q):
        if attention == "bahdanau":
            a = p.attention
            hid = np.tanh(q[:, None] @ _np(a.w_query) + values @ _np(a.w_key) + _np(a.b))
            e = hid @ _np(a.v)
        elif attention == "luong_general":
            e = np.einsum("bsc,cq,bq->bs", values, _np(p.attention.w), q)
        else:
            e = np.einsum("bsc,bc->bs", values, q)
        w = _softmax_masked(e, mask)
        return np.einsum("bs,bsc->bc", w, values), w

    (cp,) = p.cells
    w_out, b_out = _np(p.output.w), _np(p.output.b)
    if attention is None:
        carry, s = ref(cp, carry, np.concatenate([emb, context], -1))
        return carry, s @ w_out + b_out, None
    if attention == "bahdanau":
        ctx, w = attend(out(carry))
        carry, s = ref(cp, carry, np.concatenate([emb, ctx], -1))
        return carry, np.concatenate([s, ctx], -1) @ w_out + b_out, w
    carry, s = ref(cp, carry, np.concatenate([emb, feed], -1))
    ctx, w = attend(s)
    feed = np.tanh(np.concatenate([ctx, s], -1) @ _np(p.combine.w) + _np(p.combine.b))
    return carry, feed @ w_out + b_out, w


@pytest.mark.parametrize("attention", ATTN)
@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru"])
def test_decoder_step_matches_numpy(cell_name, attention):
    cell = CELLS[cell_name][0](H)
    dec = decoder([cell], V, E, C, attention=attention)
    k = jax.random.split(jax.random.key(0), 8)
    params = randomize(dec.init(k[0]), k[1])
    values = jax.random.normal(k[2], (B, S, C))
    lengths = np.array([6, 3, 1])
    mask = np.arange(S)[None] < lengths[:, None]
    values = jnp.where(mask[..., None], values, 0.0)
    context = jax.random.normal(k[3], (B, C))
    carry = jax.tree.map(lambda z: jax.random.normal(k[4], z.shape), dec.initial_carry((B,)))
    state = dec.initial_state(carry)
    if state.feed is not None:
        state = DecoderState(state.carry, jax.random.normal(k[5], state.feed.shape))
    tokens = jax.random.randint(k[6], (B,), 0, V)

    memory = dec.memory(params, values, jnp.asarray(mask), context)
    new, logits, weights = dec.step(params, memory, state, tokens)

    np_carry = carry[0]
    np_carry = (_np(np_carry.h), _np(np_carry.c)) if hasattr(np_carry, "c") else _np(np_carry)
    feed = None if state.feed is None else _np(state.feed)
    want_carry, want_logits, want_w = numpy_decoder_step(
        cell_name, attention, params, values, mask, context, np_carry, feed, np.asarray(tokens)
    )
    np.testing.assert_allclose(logits, want_logits, rtol=2e-5, atol=2e-5)
    got_carry = new.carry[0]
    got_carry = (got_carry.h, got_carry.c) if hasattr(got_carry, "c") else got_carry
    want_carry = tuple(want_carry) if isinstance(want_carry, tuple) else want_carry
    chex.assert_trees_all_close(got_carry, want_carry, rtol=2e-5, atol=2e-5)
    if attention is None:
        assert weights is None
    else:
        np.testing.assert_allclose(weights, want_w, rtol=2e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(weights)[~mask], 0.0)  # exactly zero
        np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)


def test_fixed_context_decoder_is_the_reference_equation():
    """REFERENCE.md: s_t = tanh(W_y y_{t-1} + W_s s_{t-1} + W_c c + b_s) and
    p(y_t) = softmax(W_o s_t + b_o), W_y and W_c the two blocks of the input kernel."""
    dec = decoder([rnnjax.elman(H)], V, E, C)
    p = randomize(dec.init(jax.random.key(3)), jax.random.key(4))
    cp = p.cells[0]
    W_y, W_c = _np(cp.w_x)[:E], _np(cp.w_x)[E:]
    y_prev = np.array([1, 4, 7])
    s_prev = np.random.default_rng(0).normal(size=(B, H))
    c = np.random.default_rng(1).normal(size=(B, C))
    s = np.tanh(_np(p.embedding)[y_prev] @ W_y + s_prev @ _np(cp.w_h) + c @ W_c + _np(cp.b))
    logits = s @ _np(p.output.w) + _np(p.output.b)
    mem = dec.memory(p, jnp.zeros((B, 1, C)), jnp.ones((B, 1), bool), jnp.asarray(c, jnp.float32))
    state = dec.initial_state((jnp.asarray(s_prev, jnp.float32),))
    _, got, _ = dec.step(p, mem, state, jnp.asarray(y_prev))
    np.testing.assert_allclose(got, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        jax.nn.softmax(got), np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), atol=1e-6
    )


MODELS = {
    "lstm-fixed": dict(cell="lstm"),
    "gru-fixed-bi-2layer-dec": dict(cell="gru", bidirectional=True, decoder_layers=2),
    "tanh-fixed-zeros-bridge": dict(cell="rnn_tanh", bridge="zeros"),
    "lstm-bahdanau": dict(cell="lstm", attention="bahdanau"),
    "gru-bahdanau-bi": dict(cell="gru", attention="bahdanau", bidirectional=True),
    "lstm-luong_dot": dict(cell="lstm", attention="luong_dot"),
    "gru-enc-lstm-dec-luong_general": dict(
        cell="gru", decoder_cell="lstm", attention="luong_general"
    ),
}


def _setup(kind, src_len=S, tgt_len=5, key=0, vocab=V, scale=0.5):
    model = make_seq2seq(vocab, hidden_size=H, embed_dim=E, **MODELS[kind])
    k = jax.random.split(jax.random.key(key), 5)
    src = jax.random.randint(k[0], (B, src_len), 3, vocab)
    lengths = jnp.array([src_len, 3, 1])[:B]
    src = jnp.where(jnp.arange(src_len)[None] < lengths[:, None], src, PAD)
    tgt = jax.random.randint(k[1], (B, tgt_len), 3, vocab).at[:, 0].set(BOS)
    variables = model.init(k[2], src, lengths, tgt)
    variables = {"params": randomize(variables["params"], k[3], scale)}
    return model, variables, src, lengths, tgt


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_teacher_forcing_equals_step_by_step(kind):
    model, v, src, lengths, tgt = _setup(kind)
    logits, weights = model.apply(v, src, lengths, tgt)
    memory, state = model.apply(v, src, lengths, method="encode")
    for t in range(tgt.shape[1]):
        state, step_logits, step_w = model.apply(v, memory, state, tgt[:, t], method="step")
        np.testing.assert_allclose(logits[:, t], step_logits, rtol=2e-5, atol=2e-5)
        if weights is not None:
            np.testing.assert_allclose(weights[:, t], step_w, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_source_padding_changes_nothing(kind):
    model, v, src, lengths, tgt = _setup(kind)
    junk = jax.random.randint(jax.random.key(9), (B, S + 3), 3, V)
    padded = jnp.where(
        jnp.arange(S + 3)[None] < lengths[:, None], jnp.pad(src, ((0, 0), (0, 3))), junk
    )
    logits, weights = model.apply(v, src, lengths, tgt)
    logits2, weights2 = model.apply(v, padded, lengths, tgt)
    np.testing.assert_allclose(logits, logits2, rtol=1e-5, atol=1e-5)
    if weights is not None:
        w2 = np.asarray(weights2)
        mask = np.arange(S + 3)[None, None] < np.asarray(lengths)[:, None, None]
        np.testing.assert_array_equal(w2[~np.broadcast_to(mask, w2.shape)], 0.0)
        np.testing.assert_allclose(w2.sum(-1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(weights, w2[..., :S], rtol=1e-5, atol=1e-6)
    g1 = model.apply(v, src, lengths, method="greedy", max_len=6)
    g2 = model.apply(v, padded, lengths, method="greedy", max_len=6)
    np.testing.assert_array_equal(g1.tokens, g2.tokens)


def _teacher_forced_log_prob(model, v, src, lengths, seqs):
    """log p(seq | src) from one teacher-forced pass: an independent scorer."""
    L = seqs.shape[-1]
    tgt_in = jnp.concatenate([jnp.full((seqs.shape[0], 1), BOS), seqs[:, :-1]], 1)
    logits, _ = model.apply(v, src, lengths, tgt_in)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    tok = jnp.take_along_axis(logp, seqs[..., None], -1)[..., 0]
    ended = jnp.cumsum(seqs == EOS, axis=1) - (seqs == EOS)  # EOS counted, after it not
    valid = (ended == 0) & (jnp.arange(L)[None] < L)
    return jnp.sum(jnp.where(valid, tok, 0.0), axis=1)


@pytest.mark.parametrize("kind", ["lstm-fixed", "lstm-bahdanau", "gru-enc-lstm-dec-luong_general"])
def test_beam_width_one_is_greedy(kind):
    model, v, src, lengths, _ = _setup(kind, key=3, scale=1.0)
    g = model.apply(v, src, lengths, method="greedy", max_len=7)
    best, beams = model.apply(v, src, lengths, method="beam", beam_width=1, max_len=7, alpha=0.6)
    np.testing.assert_array_equal(best.tokens, g.tokens)
    np.testing.assert_array_equal(best.lengths, g.lengths)
    np.testing.assert_allclose(best.log_prob, g.log_prob, rtol=1e-5)
    # Greedy's reported log probability is the model's, by an independent scorer.
    np.testing.assert_allclose(
        g.log_prob, _teacher_forced_log_prob(model, v, src, lengths, g.tokens), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("kind", ["lstm-fixed", "gru-bahdanau-bi"])
def test_wide_beam_finds_the_brute_force_best(kind):
    """Vocabulary of 3 symbols + EOS, max_len 4: enumerate all 121 outputs."""
    vocab, max_len = 6, 4  # ids 3, 4, 5 are the symbols
    model, v, src, lengths, _ = _setup(kind, key=5, vocab=vocab, scale=1.5)
    symbols = [3, 4, 5]
    seqs = []
    for n in range(1, max_len + 1):  # n tokens, the last EOS (or truncated at max_len)
        for body in itertools.product(symbols, repeat=n - 1):
            seqs.append(list(body) + [EOS] + [PAD] * (max_len - n))
    seqs += [list(body) for body in itertools.product(symbols, repeat=max_len)]
    seqs = jnp.array(seqs, jnp.int32)
    N = seqs.shape[0]
    best, beams = model.apply(v, src, lengths, method="beam", beam_width=64, max_len=max_len)
    g = model.apply(v, src, lengths, method="greedy", max_len=max_len)
    beat_greedy = 0
    for b in range(B):
        rep = lambda x: jnp.repeat(x[b : b + 1], N, axis=0)  # noqa: E731
        scores = np.asarray(_teacher_forced_log_prob(model, v, rep(src), rep(lengths), seqs))
        i = int(np.argmax(scores))
        np.testing.assert_array_equal(best.tokens[b], seqs[i])
        np.testing.assert_allclose(best.log_prob[b], scores[i], rtol=1e-5, atol=1e-5)
        # The beams are the top sequences, best first, with their true scores.
        top = np.sort(scores)[::-1][:5]
        np.testing.assert_allclose(beams.log_prob[b, :5], top, rtol=1e-5, atol=1e-5)
        beat_greedy += scores[i] > float(g.log_prob[b]) + 1e-6
    assert np.all(np.asarray(best.log_prob) >= np.asarray(g.log_prob) - 1e-5)
    # The check has teeth: on these models greedy misses the best sequence somewhere.
    assert beat_greedy >= 1


def _counting_step(vocab=7, eos_after=None):
    """A hand-made model: the context is a per-example table of logits per step."""

    def step(table, t, tokens):
        del tokens
        return t + 1, table[jnp.arange(table.shape[0]), jnp.minimum(t, table.shape[1] - 1)]

    return step


def test_decoding_stops_at_eos_and_pads():
    # Example 0 emits 3, 4, EOS; example 1 never emits EOS within max_len.
    table = np.full((2, 6, 7), -5.0, np.float32)
    for t, tok in enumerate([3, 4, EOS, 5, 5, 5]):
        table[0, t, tok] = 5.0
    table[1, :, 6] = 5.0
    step = _counting_step()
    t0 = jnp.zeros((2,), jnp.int32)
    g = greedy(step, jnp.asarray(table), t0, max_len=5)
    np.testing.assert_array_equal(g.tokens, [[3, 4, EOS, PAD, PAD], [6, 6, 6, 6, 6]])
    np.testing.assert_array_equal(g.lengths, [3, 5])
    best, beams = beam_search(step, jnp.asarray(table), t0, beam_width=3, max_len=5)
    np.testing.assert_array_equal(best.tokens, g.tokens)
    logp = jax.nn.log_softmax(jnp.asarray(table), -1)
    np.testing.assert_allclose(
        best.log_prob[0], logp[0, 0, 3] + logp[0, 1, 4] + logp[0, 2, EOS], rtol=1e-6
    )


def test_length_penalty_prefers_the_longer_hypothesis():
    # Step 0: EOS (p=0.55) or 3 (p=0.45); after 3, EOS with probability ~1.
    table = np.full((1, 3, 5), -30.0, np.float32)
    table[0, 0, EOS], table[0, 0, 3] = np.log(0.55), np.log(0.45)
    table[0, 1, EOS] = 0.0
    ctx, t0 = jnp.asarray(table), jnp.zeros((1,), jnp.int32)
    short, _ = beam_search(_counting_step(), ctx, t0, beam_width=2, max_len=3, alpha=0.0)
    assert short.tokens[0, 0] == EOS
    # Normalised by ((5+n)/6)^alpha: log(0.45)/(7/6)^3 = -0.50 beats log(0.55)/1 = -0.60.
    long, _ = beam_search(_counting_step(), ctx, t0, beam_width=2, max_len=3, alpha=3.0)
    np.testing.assert_array_equal(long.tokens[0, :2], [3, EOS])
    want = np.log(0.45) / ((5 + 2) / 6) ** 3.0
    np.testing.assert_allclose(long.score[0], want, rtol=1e-4)


def test_decoding_is_jittable_and_batched():
    model, v, src, lengths, _ = _setup("lstm-bahdanau")
    fn = jax.jit(lambda v, s, l: model.apply(v, s, l, method="beam", beam_width=3, max_len=5))
    best, beams = fn(v, src, lengths)
    chex.assert_shape(best.tokens, (B, 5))
    chex.assert_shape(beams.tokens, (B, 3, 5))
    assert np.all(np.diff(np.asarray(beams.score), axis=1) <= 1e-6)  # best first
    # One example alone decodes as it does in the batch.
    one, _ = fn(v, src[1:2], lengths[1:2])
    np.testing.assert_array_equal(one.tokens[0], best.tokens[1])


def test_scheduled_sampling_changes_only_later_inputs():
    model, v, src, lengths, tgt = _setup("lstm-bahdanau")
    base, _ = model.apply(v, src, lengths, tgt)
    zero, _ = model.apply(v, src, lengths, tgt, sampling_rate=0.0)
    np.testing.assert_array_equal(base, zero)
    full, _ = model.apply(
        v, src, lengths, tgt, sampling_rate=1.0, rngs={"sampling": jax.random.key(1)}
    )
    np.testing.assert_allclose(full[:, 0], base[:, 0], rtol=1e-6)  # step 0 always reads BOS
    assert not np.allclose(full[:, 1:], base[:, 1:])
    again, _ = model.apply(
        v, src, lengths, tgt, sampling_rate=1.0, rngs={"sampling": jax.random.key(1)}
    )
    np.testing.assert_array_equal(full, again)
    with pytest.raises(Exception, match="sampling"):
        model.apply(v, src, lengths, tgt, sampling_rate=0.5)  # no "sampling" RNG stream


def test_copy_bridge_passes_the_encoder_state():
    model, v, src, lengths, tgt = _setup("lstm-fixed")
    assert "bridge" not in v["params"]  # same cell, size, depth: "auto" copies
    memory, state = model.apply(v, src, lengths, method="encode")
    enc = rnnjax.make_layer("lstm", H)
    xs = jnp.take(v["params"]["enc"]["embed"]["embedding"], src, axis=0)
    carry, _ = enc.apply(v["params"]["enc"]["rnn"]["layer"], xs, lengths=lengths)
    chex.assert_trees_all_close(state.carry, carry)
    np.testing.assert_allclose(memory.context, carry[-1].h)
    model2, v2, *_ = _setup("gru-fixed-bi-2layer-dec")
    assert "bridge" in v2["params"]  # bidirectional -> 2 decoder layers: a dense bridge


def test_bad_inputs_give_clear_errors():
    model, v, src, lengths, tgt = _setup("lstm-bahdanau")
    with pytest.raises(ValueError, match="beam_width must be an int >= 1; got 0"):
        model.apply(v, src, lengths, method="beam", beam_width=0, max_len=4)
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        model.apply(v, src, lengths, method="greedy", max_len=0)
    with pytest.raises(ValueError, match=r"src must be integer tokens of shape \[B, S\]"):
        model.apply(v, src.astype(jnp.float32), lengths, tgt)
    with pytest.raises(ValueError, match=r"src_lengths must have shape \[B\] = \(3,\)"):
        model.apply(v, src, lengths[:2], tgt)
    with pytest.raises(ValueError, match="share the batch size"):
        model.apply(v, src, lengths, tgt[:2])
    with pytest.raises(ValueError, match="sampling_rate must lie in"):
        model.apply(v, src, lengths, tgt, sampling_rate=1.5)
    with pytest.raises(ValueError, match="attention must be one of"):
        make_seq2seq(V, attention="cosine").init(jax.random.key(0), src, lengths, tgt)
    with pytest.raises(ValueError, match="luong_dot attention needs the decoder's hidden size"):
        bad = make_seq2seq(V, hidden_size=4, bidirectional=True, attention="luong_dot")
        bad.init(jax.random.key(0), src, lengths, tgt)
    with pytest.raises(ValueError, match="bridge='copy' needs"):
        make_seq2seq(V, hidden_size=4, cell="gru", decoder_cell="lstm", bridge="copy").init(
            jax.random.key(0), src, lengths, tgt
        )
    with pytest.raises(ValueError, match="bridge must be one of"):
        make_seq2seq(V, bridge="magic").init(jax.random.key(0), src, lengths, tgt)
    with pytest.raises(ValueError, match=r"banned must not contain eos \(2\)"):
        greedy(
            _counting_step(),
            jnp.zeros((1, 2, 5)),
            jnp.zeros((1,), jnp.int32),
            max_len=2,
            banned=(EOS,),
        )


def _constant_step(logits):
    """Every step, every example: the same logits, whatever the tokens."""
    logits = jnp.asarray(logits, jnp.float32)

    def step(ctx, state, tokens):
        return state, jnp.broadcast_to(logits, (tokens.shape[0], logits.shape[-1]))

    return step


def test_default_banned_follows_the_pad_and_bos_given():
    """With pad=5 and bos=6 the defaults ban 5 and 6, not the module's PAD and BOS: the
    padding id was emitted as a real token, and token 0 was banned."""
    step = _constant_step([5.0, -1, -1, -1, -1, 4.0, 3.0])
    ctx, state = jnp.zeros((1, 1)), jnp.zeros((1, 1))
    got = greedy(step, ctx, state, max_len=3, pad=5, bos=6, eos=2)
    np.testing.assert_array_equal(got.tokens, [[0, 0, 0]])
    best, _ = beam_search(step, ctx, state, beam_width=2, max_len=3, pad=5, bos=6)
    np.testing.assert_array_equal(best.tokens, [[0, 0, 0]])
    with pytest.raises(ValueError, match=r"banned must not contain eos \(4\)"):
        greedy(step, ctx, state, max_len=2, eos=4, banned=(0, 4))


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(eos=7), r"eos must hold token ids in \[0, V\) = \[0, 7\).*got \[7\]"),
        (dict(banned=(0, 9)), r"banned must hold token ids in \[0, V\) = \[0, 7\).*got \[9\]"),
        (dict(pad=-1), r"pad must hold token ids .*got \[-1\]"),
        (dict(bos=12), r"bos must hold token ids .*got \[12\]"),
    ],
)
def test_token_ids_outside_the_vocabulary_are_refused(options, match):
    step = _constant_step(np.zeros(7))
    ctx, state = jnp.zeros((2, 1)), jnp.zeros((2, 1))
    with pytest.raises(ValueError, match=match):
        greedy(step, ctx, state, max_len=2, **options)
    with pytest.raises(ValueError, match=match):
        beam_search(step, ctx, state, beam_width=2, max_len=2, **options)


def test_step_fn_must_return_logits_per_token():
    def step(ctx, state, tokens):
        return state, jnp.zeros((tokens.shape[0], 3, 7))

    with pytest.raises(ValueError, match=r"logits of shape \[N, V\] for N = 2.*\(2, 3, 7\)"):
        greedy(step, jnp.zeros((2, 1)), jnp.zeros((2, 1)), max_len=2)


def test_beams_no_sequence_fills_are_empty():
    """V = 4 with PAD and BOS banned leaves EOS and 3: two one-token sequences for five
    beams. The three left over are -inf, length 0, all PAD (they held banned tokens)."""
    step = _constant_step([0.0, 0.0, 1.0, 0.5])
    best, beams = beam_search(step, jnp.zeros((1, 1)), jnp.zeros((1, 1)), beam_width=5, max_len=1)
    np.testing.assert_array_equal(beams.tokens[0, :, 0], [EOS, 3, PAD, PAD, PAD])
    np.testing.assert_array_equal(beams.lengths[0], [1, 1, 0, 0, 0])
    assert np.all(np.isneginf(beams.log_prob[0, 2:])) and np.all(np.isfinite(beams.log_prob[0, :2]))
    assert int(best.tokens[0, 0]) == EOS


def test_token_ids_beyond_the_vocabulary_are_errors_not_nan():
    """An embedding lookup does not check ids: one past the end gave NaN logits, a
    negative one silently read the last row. Now each entry point names its argument,
    eagerly and (when the program runs) under jit."""
    from rnnjax.modules import SequenceModel

    src = jnp.array([[3, 4, 5], [4, 5, 6]])
    lengths = jnp.array([3, 2])
    tgt = jnp.array([[1, 3, 4], [1, 5, 6]])
    model = make_seq2seq(7, hidden_size=6, embed_dim=5)
    variables = model.init(jax.random.key(0), src, lengths, tgt)
    logits = model.apply(variables, src, lengths, tgt)[0]
    assert logits.shape == (2, 3, 7) and np.isfinite(logits).all()
    for args, name, bad in [
        ((src, lengths, tgt.at[0, 0].set(7)), r"tokens \(the decoder's inputs, tgt_in\)", 7),
        ((src.at[1, 2].set(-1), lengths, tgt), "src", -1),
        ((src, lengths, tgt.at[1, 1].set(-3)), r"tokens \(the decoder's inputs, tgt_in\)", -3),
    ]:
        with pytest.raises(ValueError, match=rf"{name} must hold token ids in \[0, 7\).*\[{bad}\]"):
            model.apply(variables, *args)
    # Under jit: no host callback in the compiled program; checked under checkify.
    from jax.experimental import checkify

    def run(t):
        return model.apply(variables, src, lengths, t)[0]

    assert "callback" not in jax.jit(run).lower(tgt).as_text()
    err, _ = jax.jit(checkify.checkify(run))(tgt.at[0, 0].set(9))
    with pytest.raises(Exception, match=r"tgt_in\) must hold token ids in \[0, 7\)"):
        err.throw()
    memory, state = model.apply(variables, src, lengths, method=model.encode)
    with pytest.raises(ValueError, match=r"tokens must hold token ids in \[0, 7\).*\[8\]"):
        model.apply(variables, memory, state, jnp.array([1, 8]), method=model.step)

    lm = SequenceModel(rnnjax.make_layer("gru", 4), 3, vocab_size=5)
    lm_vars = lm.init(jax.random.key(1), jnp.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"inputs must hold token ids in \[0, 5\).*\[7\]"):
        lm.apply(lm_vars, jnp.array([[1, 2, 7]]))
