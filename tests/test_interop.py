"""PyTorch parity: the same weights and inputs give the same outputs and final states."""

import itertools
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from rnnjax.interop import from_torch  # noqa: E402

I, H, B, T = 3, 5, 4, 6
KINDS = {
    "rnn_tanh": lambda **kw: torch.nn.RNN(I, H, nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: torch.nn.RNN(I, H, nonlinearity="relu", **kw),
    "lstm": lambda **kw: torch.nn.LSTM(I, H, **kw),
    "gru": lambda **kw: torch.nn.GRU(I, H, **kw),
}
CASES = list(itertools.product(KINDS, [1, 2, 3], [False, True], [False, True], [False, True]))


def _np(t):
    if isinstance(t, tuple):
        return tuple(_np(a) for a in t)
    return t.detach().numpy()


def _assert_close(got, want):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _assert_close(g, w)
        return
    assert np.shape(got) == np.shape(want), (np.shape(got), np.shape(want))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,layers,bidir,batch_first,padded", CASES)
def test_matches_pytorch(kind, layers, bidir, batch_first, padded):
    seed = zlib.crc32(repr((kind, layers, bidir, batch_first, padded)).encode())
    torch.manual_seed(seed)
    module = KINDS[kind](num_layers=layers, bidirectional=bidir, batch_first=batch_first)
    with torch.no_grad():  # random biases too, not PyTorch's symmetric default alone
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    apply, params = from_torch(module)
    if padded:
        lengths = torch.tensor([T, 2, 5, 1])
        packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
        out, state = module(packed)
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
        got = apply(params, jnp.asarray(x.numpy()), lengths=jnp.asarray(lengths.numpy()))
    else:
        out, state = module(x)
        got = apply(params, jnp.asarray(x.numpy()))
    _assert_close(got, (_np(out), _np(state)))


@pytest.mark.parametrize("kind", list(KINDS))
def test_initial_state_and_unbatched_input(kind):
    torch.manual_seed(1)
    module = KINDS[kind](num_layers=2, bidirectional=True)
    apply, params = from_torch(module)
    x = torch.randn(T, B, I)
    h0 = torch.randn(4, B, H)
    hx = (h0, torch.randn(4, B, H)) if kind == "lstm" else h0
    out, state = module(x, hx)
    jx = (
        (jnp.asarray(hx[0].numpy()), jnp.asarray(hx[1].numpy()))
        if kind == "lstm"
        else (jnp.asarray(hx.numpy()))
    )
    _assert_close(apply(params, jnp.asarray(x.numpy()), jx), (_np(out), _np(state)))
    # Unbatched [T, I] input, as PyTorch accepts it.
    out1, state1 = module(x[:, 0])
    _assert_close(apply(params, jnp.asarray(x[:, 0].numpy())), (_np(out1), _np(state1)))


@pytest.mark.parametrize("kind", list(KINDS))
def test_without_bias(kind):
    torch.manual_seed(2)
    module = KINDS[kind](num_layers=2, bias=False, batch_first=True)
    apply, params = from_torch(module)
    x = torch.randn(B, T, I)
    out, state = module(x)
    _assert_close(apply(params, jnp.asarray(x.numpy())), (_np(out), _np(state)))


def test_rejects_unsupported_modules():
    with pytest.raises(ValueError, match=r"torch.nn.LSTM with proj_size=2 is not supported; the"):
        from_torch(torch.nn.LSTM(I, H, proj_size=2))
    with pytest.raises(ValueError, match=r"module must be one of \[.*torch.nn.GRU\(\).*\]; got"):
        from_torch(torch.nn.Linear(I, H))


def test_rejects_bad_state_shapes():
    apply, params = from_torch(torch.nn.LSTM(I, H, num_layers=2))
    x = jnp.zeros((T, B, I))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 4, 5\); got \(1, 4, 5\)"):
        apply(params, x, (jnp.zeros((1, B, H)), jnp.zeros((2, B, H))))
    with pytest.raises(ValueError, match=r"hx of a torch.nn.LSTM must be a tuple \(h_0, c_0\)"):
        apply(params, x, jnp.zeros((2, B, H)))
    with pytest.raises(ValueError, match=r"xs must have shape \[T, B, I\] or \[T, I\]"):
        apply(params, jnp.zeros((1, T, B, I)))
