"""MGU (``rnnjax/cells/mgu.py``): the step and the scan (lengths, reverse) against a float64
NumPy transcription of the paper's equations on ``[h, x]`` (the entry's reference),
the paper's gate convention, gradients against finite differences, the initialisation
it declares, the gates, the recurrent scale, bf16, and the layers built from the
catalogue name."""

import contextlib
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import numpy_step, randomize
from jax.test_util import check_grads

import rnnjax

# The modules, not the factories rnnjax.cells exports under the same names.
mgu = importlib.import_module("rnnjax.cells.mgu")

B, T, I, H = 3, 7, 3, 5
LENGTHS = np.array([T, 0, 4])
STEP = numpy_step(mgu.ENTRY)


@contextlib.contextmanager
def in_catalogue(entry):
    """``entry`` in the catalogue: already there once the lead wires it into BUILTIN,
    registered for the test before that."""
    if entry.name in rnnjax.cells.names():
        yield rnnjax.cells.get(entry.name)
    else:
        with rnnjax.cells.registered(entry) as e:
            yield e


def _problem(dtype=jnp.float32, seed=0):
    cell = mgu.mgu(H, param_dtype=dtype)
    k = jax.random.split(jax.random.key(seed), 4)
    params = randomize(cell.init(k[0], I), k[1], scale=0.6)
    xs = jax.random.normal(k[2], (B, T, I), dtype)
    carry = 0.5 * jax.random.normal(k[3], (B, H), dtype)
    return cell, params, xs, carry


def test_step_matches_the_papers_equations():
    cell, params, xs, carry = _problem()
    got = cell.step(params, carry, xs[:, 0])
    want = STEP(params, carry, xs[:, 0])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_with_lengths_and_reverse_matches_the_reference(reverse):
    cell, params, xs, carry = _problem()
    final, ys = rnnjax.scan(cell, params, xs, carry, lengths=LENGTHS, reverse=reverse)
    finals, want = reference.run(
        lambda c, x: STEP(params, c, x), carry, np.asarray(xs), LENGTHS, reverse
    )
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final, np.stack(finals), rtol=1e-5, atol=1e-6)


def test_the_gate_lets_the_candidate_in():
    """The paper's convention ``h' = (1 - f) h + f h~``: a gate held open (``b_f``
    large) gives the candidate, a closed one keeps ``h`` (the RecurrentLayers.jl code
    mixes the other way round)."""
    cell, params, xs, carry = _problem()
    for b_f, expect_candidate in ((30.0, True), (-30.0, False)):
        p = params._replace(b=params.b.at[:H].set(b_f))
        xp = cell.project(p, xs[:, 0])
        gates = cell.gates(p, carry, xp)
        h_new, _ = cell.recur(p, carry, xp)
        want = gates["candidate"] if expect_candidate else carry
        np.testing.assert_allclose(h_new, want, atol=1e-6)
    # In between, the update is the gates' mix, and the gates are in range.
    xp = cell.project(params, xs[:, 0])
    gates = cell.gates(params, carry, xp)
    f, n = gates["forget"], gates["candidate"]
    assert set(gates) == {"forget", "candidate"}
    assert float(f.min()) > 0 and float(f.max()) < 1 and float(jnp.abs(n).max()) < 1
    np.testing.assert_allclose(cell.recur(params, carry, xp)[0], (1 - f) * carry + f * n, rtol=1e-6)


def test_gradients_against_finite_differences():
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(jnp.float64)

        def loss(params, xs, carry):
            final, ys = rnnjax.scan(cell, params, xs, carry, lengths=LENGTHS)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(final**2)

        check_grads(
            jax.jit(loss), (params, xs, carry), order=1, modes=["rev"], atol=1e-6, rtol=1e-6
        )


def test_initialisation_per_block():
    """Each recurrent block ``U_f``, ``U_h`` orthogonal on its own (not one ``[H, 2H]``
    matrix), input blocks of variance ``1/I``, zero biases."""
    wide_in, h = 400, 64
    p = mgu.mgu(h).init(jax.random.key(0), wide_in)
    assert p.w_x.shape == (wide_in, 2 * h) and p.w_h.shape == (h, 2 * h) and p.b.shape == (2 * h,)
    for block in (p.w_h[:, :h], p.w_h[:, h:]):
        np.testing.assert_allclose(block.T @ block, np.eye(h), atol=1e-5)
    np.testing.assert_allclose(np.var(p.w_x), 1 / wide_in, rtol=0.05)
    np.testing.assert_array_equal(p.b, 0.0)


def test_recurrent_scale_scales_both_recurrent_blocks():
    cell, params, xs, carry = _problem()
    scaled = cell.recurrent_scale(params, 2.5)
    np.testing.assert_allclose(scaled.w_h, 2.5 * params.w_h, rtol=1e-6)
    np.testing.assert_array_equal(scaled.w_x, params.w_x)
    # g = 0 cuts the recurrence out of both the gate and the candidate.
    cut = cell.recurrent_scale(params, 0.0)
    xp = cell.project(params, xs[:, 0])
    f, n = jax.nn.sigmoid(xp[0]), jnp.tanh(xp[1])
    np.testing.assert_allclose(cell.recur(cut, carry, xp)[0], (1 - f) * carry + f * n, rtol=1e-6)


def test_no_fused_backward_is_declared():
    cell, params, xs, _ = _problem()
    assert cell.fused is None and cell.gated
    with pytest.raises(ValueError, match="declares no fused recurrence"):
        rnnjax.scan(cell, params, xs, vjp="fused")


def test_bfloat16_stays_close_to_float32():
    cell32, params, xs, _ = _problem()
    cell16 = mgu.mgu(H, dtype=jnp.bfloat16)
    ys16 = jax.jit(lambda p, x: rnnjax.scan(cell16, p, x, lengths=LENGTHS)[1])(params, xs)
    ys32 = rnnjax.scan(cell32, params, xs, lengths=LENGTHS)[1]
    assert ys16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(ys16, np.float32), ys32, atol=0.03)


def test_catalogue_entry_and_a_stacked_bidirectional_layer():
    entry = mgu.ENTRY
    assert entry.family == "gated" and entry.torch is None and entry.make(2).name == "mgu"
    assert entry.matmul_flops(I, H) == 2 * 2 * H * (I + H)
    _, _, xs, _ = _problem()
    with in_catalogue(entry):
        layer = rnnjax.make_layer("mgu", H, num_layers=2, bidirectional=True)
        p = layer.init(jax.random.key(1), I)
        _, ys = layer.apply(p, xs, lengths=LENGTHS)
    cell = mgu.mgu(H)
    _, y_f = rnnjax.scan(cell, p[0].forward, xs, lengths=LENGTHS)
    _, y_b = rnnjax.scan(cell, p[0].backward, xs, lengths=LENGTHS, reverse=True)
    x1 = jnp.concatenate([y_f, y_b], -1)
    _, z_f = rnnjax.scan(cell, p[1].forward, x1, lengths=LENGTHS)
    _, z_b = rnnjax.scan(cell, p[1].backward, x1, lengths=LENGTHS, reverse=True)
    np.testing.assert_allclose(ys, jnp.concatenate([z_f, z_b], -1), rtol=1e-5, atol=1e-6)


def test_bad_sizes_name_the_argument():
    with pytest.raises(ValueError, match="hidden_size"):
        mgu.mgu(0)
    with pytest.raises(ValueError, match="input_size"):
        mgu.mgu(H).init(jax.random.key(0), 0)
