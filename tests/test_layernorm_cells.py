"""The layer-normalised LSTM and GRU (``rnnjax/cells/layernorm.py``): each against a
float64 NumPy transcription of its equations (the entry's reference), gradients against
finite differences, the fused backward against JAX's, haste's initialisation, the
recurrent scale the norm divides out (measured against the plain LSTM and GRU), bf16,
and the layers built from the catalogue name."""

import contextlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import numpy_step
from jax.test_util import check_grads

import rnnjax
from rnnjax import diagnostics as dg
from rnnjax.cells import layernorm
from rnnjax.cells.lstm import LSTMCarry

ENTRIES = {"ln_lstm": layernorm.LN_LSTM, "ln_gru": layernorm.LN_GRU}
PLAIN = {"ln_lstm": "lstm", "ln_gru": "gru"}  # the same cell without the norms
GATES = {
    "ln_lstm": {"input", "forget", "candidate", "output"},
    "ln_gru": {"reset", "update", "candidate"},
}
B, T, I, H = 3, 7, 3, 5
LENGTHS = np.array([T, 0, 4])
# rnnjax.scan compiled as one program (the cell static): run eagerly, every small op of
# the driver and of the fused backward compiles on its own, most of this file's time.
scan = jax.jit(rnnjax.scan, static_argnums=0, static_argnames=("reverse", "vjp", "hoist"))


@contextlib.contextmanager
def in_catalogue(entry):
    """``entry`` in the catalogue: already there once the lead wires it into BUILTIN,
    registered for the test before that."""
    if entry.name in rnnjax.cells.names():
        assert rnnjax.cells.get(entry.name) is entry
        yield entry
    else:
        with rnnjax.cells.registered(entry) as e:
            yield e


def _problem(name, dtype=jnp.float32, seed=0):
    """A cell with random params (every leaf, biases and gains too: init's zeros and
    ones would hide an indexing bug), random inputs and carry. NumPy draws them: JAX's
    generators would compile for every shape and dtype, eagerly."""
    cell = ENTRIES[name].make(H, param_dtype=dtype)
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda key: cell.init(key, I), jax.random.key(0))
    params = jax.tree.map(lambda a: 0.6 * rng.standard_normal(a.shape), shapes)
    params = params._replace(g_h=params.g_h + 1.0, g_x=params.g_x + 1.0)  # gains near 1
    carry = jax.tree.map(lambda z: 0.5 * rng.standard_normal(z.shape), cell.initial_carry((B,)))
    xs = rng.standard_normal((B, T, I))
    cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)  # noqa: E731
    return cell, cast(params), cast(xs), cast(carry)


def _close(got, want, **tol):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g, np.float64), w, **tol)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_entry_names_the_cell_and_its_declarations(name):
    entry = ENTRIES[name]
    cell = entry.make(H)
    assert cell.name == entry.name == name
    assert entry.family == "normalised" and entry.torch is None
    assert cell.gated and cell.linear is None and cell.recurrent_scale is not None
    assert cell.fused is not None and cell.fused.weight == "w_h"
    assert entry.matmul_flops(I, H) == rnnjax.cells.get(PLAIN[name]).matmul_flops(I, H)
    carry = cell.initial_carry((2,))
    if name == "ln_lstm":  # the LSTM's carry type: (h, c), c the unnormalised cell state
        assert isinstance(carry, LSTMCarry) and carry.c.shape == (2, H)
    else:
        assert carry.shape == (2, H)
    with in_catalogue(entry):
        assert rnnjax.make_cell(name, H).name == name


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_step_and_scan_match_the_numpy_reference_in_float64(name):
    """One step, then the scan with lengths 0 < 4 < T in both directions, random params
    and carry, against the entry's reference looped by hand."""
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(name, jnp.float64)
        step = numpy_step(ENTRIES[name])
        got = jax.jit(cell.step)(params, carry, xs[:, 0])
        _close(got, step(params, carry, xs[:, 0]), rtol=1e-12, atol=1e-13)

        lengths = jnp.asarray(LENGTHS)
        for reverse in (False, True):
            final, ys = scan(cell, params, xs, carry, lengths=lengths, reverse=reverse)
            finals, want = reference.run(
                lambda c, x: step(params, c, x), carry, np.asarray(xs), LENGTHS, reverse
            )
            np.testing.assert_allclose(ys, want, rtol=1e-12, atol=1e-13)
            _close(final, jax.tree.map(lambda *a: np.stack(a), *finals), rtol=1e-12, atol=1e-13)
        # The zero-length sequence kept its carry.
        _close(jax.tree.map(lambda a: a[1], final), jax.tree.map(lambda a: a[1], carry), rtol=0)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_gradients_against_finite_differences(name):
    """``check_grads`` in float64 through ``rnnjax.scan`` (the fused backward, the default
    plan), in params, inputs and carry, with lengths."""
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(name, jnp.float64)
        lengths = jnp.asarray(LENGTHS)
        w = jnp.asarray(np.random.default_rng(3).standard_normal((B, T, H)))

        def f(params, xs, carry):
            final, ys = rnnjax.scan(cell, params, xs, carry, lengths=lengths)
            return jnp.sum(jnp.sin(ys) * w) + sum(jnp.sum(a**2) for a in jax.tree.leaves(final))

        assert rnnjax.plan(cell, params, xs, carry, lengths=lengths).backward == "fused"
        check_grads(jax.jit(f), (params, xs, carry), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


# The LSTM forward with its projection in the loop (the CPU's plan for a gated cell),
# the GRU in reverse with it hoisted before the loop: the fused driver's two paths.
@pytest.mark.parametrize("name,reverse,hoist", [("ln_lstm", False, False), ("ln_gru", True, True)])
def test_fused_backward_equals_autodiff(name, reverse, hoist):
    """``vjp="fused"`` (``z = h W_h`` formed by the driver, ``recur_z`` normalises it,
    ``dW_h`` one matmul after the loop) against JAX's backward of the plain loop: the
    value and every gradient (params, inputs, carry), with lengths."""
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(name, jnp.float64, seed=1)
        lengths = jnp.array([T, 2, 0])
        w = jnp.asarray(np.random.default_rng(5).standard_normal((B, T, H)))

        def grads(vjp):
            def f(params, xs, carry):
                final, ys = scan(
                    cell, params, xs, carry, lengths=lengths, reverse=reverse, hoist=hoist, vjp=vjp
                )
                tail = sum(jnp.sum(jnp.cos(a)) for a in jax.tree.leaves(final))
                return jnp.sum(jnp.tanh(ys) * w) + tail

            return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(params, xs, carry)

        got = grads("fused")
        chex.assert_trees_all_close(got, grads("autodiff"), rtol=1e-10, atol=1e-12)
        # The gains the step reads (cell.fused.reads) get their gradient summed over the
        # steps by the driver: not zero.
        assert float(jnp.max(jnp.abs(got[1][0].g_h))) > 1e-3


def _orthogonal_blocks(w, blocks):
    for block in np.split(np.asarray(w, np.float64), blocks, axis=-1):
        np.testing.assert_allclose(block.T @ block, np.eye(block.shape[0]), atol=1e-5)


def _xavier_uniform_blocks(w, blocks):
    """Each ``[I, H]`` block inside ``+-sqrt(6 / (I + H))``, reaching near it, with the
    uniform's variance ``bound^2 / 3``."""
    rows = w.shape[0]
    for block in np.split(np.asarray(w, np.float64), blocks, axis=-1):
        bound = np.sqrt(6.0 / (rows + block.shape[1]))
        assert np.abs(block).max() <= bound and np.abs(block).max() > 0.9 * bound
        np.testing.assert_allclose(block.var(), bound**2 / 3, rtol=0.15)


def test_ln_lstm_starts_as_haste():
    inputs, hidden = 24, 32
    cell = layernorm.ln_lstm(hidden, forget_bias=2.5)
    p = jax.jit(cell.init, static_argnums=1)(jax.random.key(0), inputs)
    assert p.w_x.shape == (inputs, 4 * hidden) and p.w_h.shape == (hidden, 4 * hidden)
    _xavier_uniform_blocks(p.w_x, 4)
    _orthogonal_blocks(p.w_h, 4)
    # The forget block, second in (i, f, g, o), holds forget_bias; the rest are zeros.
    want_b = np.zeros(4 * hidden)
    want_b[hidden : 2 * hidden] = 2.5
    np.testing.assert_array_equal(p.b, want_b)
    for gain in (p.g_x, p.g_h, p.g_c):
        np.testing.assert_array_equal(gain, 1.0)
    np.testing.assert_array_equal(p.b_c, 0.0)
    assert p.g_c.shape == p.b_c.shape == (hidden,)
    # At init the forget gate starts open: sigmoid(LN(.) + 2.5), the norm unit-scale.
    x = np.random.default_rng(1).standard_normal((16, inputs)).astype(np.float32)
    carry = jax.tree.map(lambda z: z + 0.3, cell.initial_carry((16,)))
    gates = jax.jit(lambda p, c, x: cell.gates(p, c, cell.project(p, x)))(p, carry, x)
    assert float(gates["forget"].mean()) > 0.8 > float(gates["input"].mean())


def test_ln_gru_starts_as_haste():
    inputs, hidden = 24, 32
    p = jax.jit(layernorm.ln_gru(hidden).init, static_argnums=1)(jax.random.key(0), inputs)
    assert p.w_x.shape == (inputs, 3 * hidden) and p.w_h.shape == (hidden, 3 * hidden)
    _xavier_uniform_blocks(p.w_x, 3)
    _orthogonal_blocks(p.w_h, 3)
    for bias in (p.b_x, p.b_h):
        np.testing.assert_array_equal(bias, 0.0)
    for gain in (p.g_x, p.g_h):
        np.testing.assert_array_equal(gain, 1.0)


def test_layer_norm_normalises_and_keeps_bfloat16_statistics_in_float32():
    norm = jax.jit(lambda v, g: layernorm.layer_norm(v, g, epsilon=1e-5))
    v = np.random.default_rng(0).standard_normal((4, 12)).astype(np.float32) * 3.0 + 2.0
    out = norm(v, jnp.ones(12))
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(-1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(norm(v * 7.0, jnp.ones(12)), out, rtol=1e-5, atol=1e-5)
    # At zero input: 0 / sqrt(epsilon), finite.
    assert bool(jnp.all(norm(np.zeros((4, 12), np.float32), jnp.ones(12)) == 0))
    # bfloat16: a row with a large mean and a small spread; the statistics in bfloat16
    # would lose the spread (bfloat16 keeps 8 bits), float32 keeps it.
    row = (64.0 + 0.5 * jnp.arange(8.0)).astype(jnp.bfloat16)  # exact in bfloat16
    got = norm(row, jnp.ones(8, jnp.bfloat16))
    assert got.dtype == jnp.bfloat16
    want = (np.arange(8.0) - 3.5) / np.arange(8.0).std()
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=2e-2)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_gates_in_range_and_recur_built_on_them(name):
    cell, params, xs, carry = _problem(name)

    @jax.jit
    def one_step(params, carry, x):
        xp = cell.project(params, x)
        return cell.gates(params, carry, xp), cell.recur(params, carry, xp)

    gates, (new, y) = one_step(params, carry, xs[:, 0])
    assert set(gates) == GATES[name]
    for key, a in gates.items():
        lo = -1.0 if key == "candidate" else 0.0
        assert a.shape == (B, H) and bool(jnp.all((a > lo) & (a < 1.0)))
    if name == "ln_lstm":
        c_new = gates["forget"] * carry.c + gates["input"] * gates["candidate"]
        np.testing.assert_allclose(new.c, c_new, rtol=1e-6, atol=1e-6)
    else:
        u = gates["update"]
        np.testing.assert_allclose(y, (1 - u) * gates["candidate"] + u * carry, rtol=1e-6)
    stats = jax.jit(lambda p, xs: dg.gate_stats(cell, p, xs))(params, xs)
    assert set(stats) == GATES[name] and all(a.shape == (T,) for a in stats.values())


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_recurrent_scale_is_divided_out_by_the_norm(name):
    """``recurrent_scale(params, g)`` multiplies ``W_h`` by ``g``; the norm divides it out
    of ``LN(h g W_h)``, so outputs and the Jacobian products ``dh_T / dh_t`` barely move,
    where the plain LSTM / GRU on the same weights change by orders more. A negative
    ``g`` is not divided out (the term flips sign)."""
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(name, jnp.float64)
        plain = rnnjax.make_cell(PLAIN[name], H, param_dtype=jnp.float64)
        plain_params = plain.init(jax.random.key(0), I)._replace(w_h=params.w_h)
        scaled = cell.recurrent_scale(params, 4.0)
        np.testing.assert_allclose(scaled.w_h, 4.0 * params.w_h)
        for field in params._fields:
            if field != "w_h":
                np.testing.assert_array_equal(getattr(scaled, field), getattr(params, field))

        c0 = jax.tree.map(lambda a: a[0], carry)

        def routes(cell, params):
            """Outputs and ||dh_T / dh_t|| as functions of g, each compiled once."""
            outputs = jax.jit(lambda p: rnnjax.scan(cell, p, xs, carry)[1])
            norms = jax.jit(lambda p: dg.jacobian_products(cell, p, xs[0], c0)["frobenius"])
            base_y, base_j = outputs(params), norms(params)

            def measure(g):
                p = cell.recurrent_scale(params, g)
                change = float(jnp.max(jnp.abs(outputs(p) - base_y)))
                shift = float(jnp.max(jnp.abs(jnp.log(norms(p) / base_j))))
                return change, shift

            return measure

        ln, control = routes(cell, params), routes(plain, plain_params)
        for g in (0.25, 4.0):
            (ln_change, ln_shift), (plain_change, plain_shift) = ln(g), control(g)
            assert ln_change < 1e-3 < 0.1 < plain_change, (g, ln_change, plain_change)
            assert ln_shift < 1e-2 < 0.3 < plain_shift, (g, ln_shift, plain_shift)
        assert ln(-1.0)[0] > 0.1


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_one_input_feature_reaches_the_cell_only_through_its_sign(name):
    """With I = 1 the joint norm of ``x_t W_x`` is ``sign(x_t) (w - mean w) / std w`` (but
    for epsilon): the input's magnitude is divided out, as the recurrent scale is above.
    Hence these cells' place near chance on MNIST-1D (one value per step; the docstring).
    The plain LSTM / GRU on the same inputs tell x, 3x and sign(x) apart."""
    with jax.enable_x64(True):
        cell = rnnjax.make_cell(name, H, param_dtype=jnp.float64)
        plain = rnnjax.make_cell(PLAIN[name], H, param_dtype=jnp.float64)
        noise = jax.random.normal(jax.random.key(3), (2, T, 1), jnp.float64)
        x = jnp.sign(noise) * (0.5 + jnp.abs(noise))  # |x| >= 0.5: epsilon negligible
        for c in (cell, plain):
            params = c.init(jax.random.key(0), 1)
            ys = [rnnjax.scan(c, params, v)[1] for v in (x, 3 * x, jnp.sign(x))]
            change = max(float(jnp.max(jnp.abs(y - ys[0]))) for y in ys[1:])
            if c is cell:
                assert change < 1e-3, change
            else:
                assert change > 0.1, change


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_bfloat16_runs_and_stays_near_float32(name):
    """A bfloat16 cell (params and compute) against the float32 cell on the same
    (bfloat16-representable) initial params and inputs, and the float32 cell against
    the float64 reference. Init params, as the other cells' bfloat16 test: the norm's
    Jacobian grows as 1 / ||h||, so with random params and small states the bfloat16
    error grew to 0.07 by step 6 (seed 0; 0.004-0.009 for the plain LSTM and GRU)."""
    cell16 = ENTRIES[name].make(H, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    cell32 = ENTRIES[name].make(H)
    p16 = jax.jit(cell16.init, static_argnums=1)(jax.random.key(0), I)
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p16)
    xs16 = jnp.asarray(np.random.default_rng(1).standard_normal((B, T, I)), jnp.bfloat16)
    xs32 = xs16.astype(jnp.float32)
    lengths = jnp.asarray(LENGTHS)
    final16, ys16 = scan(cell16, p16, xs16, lengths=lengths)
    _, ys32 = scan(cell32, p32, xs32, lengths=lengths)
    step = numpy_step(ENTRIES[name])
    _, want = reference.run(
        lambda c, x: step(p32, c, x), cell32.initial_carry((B,)), np.asarray(xs32), LENGTHS
    )
    np.testing.assert_allclose(ys32, want, rtol=2e-5, atol=2e-6)
    assert ys16.dtype == jnp.bfloat16
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(final16))
    err = float(jnp.max(jnp.abs(ys16.astype(jnp.float32) - ys32)))
    assert err < 3e-2, err


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_stacked_bidirectional_layer_from_the_catalogue_name(name):
    cell, _, xs, _ = _problem(name)
    lengths = jnp.array([T, 2, 0])
    with in_catalogue(ENTRIES[name]):
        layer = rnnjax.make_layer(name, H, num_layers=2, bidirectional=True)
    p = layer.init(jax.random.key(1), I)
    ys = jax.jit(lambda p, xs: layer.apply(p, xs, lengths=lengths)[1])(p, xs)

    @jax.jit
    def by_hand(p, xs):
        # Each direction is rnnjax.scan, the second layer reads the first.
        _, y_f = rnnjax.scan(cell, p[0].forward, xs, lengths=lengths)
        _, y_b = rnnjax.scan(cell, p[0].backward, xs, lengths=lengths, reverse=True)
        x1 = jnp.concatenate([y_f, y_b], -1)
        _, z_f = rnnjax.scan(cell, p[1].forward, x1, lengths=lengths)
        _, z_b = rnnjax.scan(cell, p[1].backward, x1, lengths=lengths, reverse=True)
        return jnp.concatenate([z_f, z_b], -1)

    np.testing.assert_allclose(ys, by_hand(p, xs), rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(ys[1, 2:]))) == 0.0  # padding emits zeros
    assert float(jnp.min(jnp.abs(ys[1, :2]))) > 0.0


@pytest.mark.parametrize(
    "make,options,match",
    [
        (layernorm.ln_lstm, {"hidden_size": 0}, "hidden_size"),
        (layernorm.ln_gru, {"hidden_size": 2.5}, "hidden_size"),
        (layernorm.ln_lstm, {"hidden_size": 4, "epsilon": 0.0}, "epsilon must be a positive"),
        (layernorm.ln_gru, {"hidden_size": 4, "epsilon": -1e-5}, "epsilon must be a positive"),
        (layernorm.ln_gru, {"hidden_size": 4, "epsilon": "1e-5"}, "epsilon must be a positive"),
        (layernorm.ln_lstm, {"hidden_size": 4, "forget_bias": float("nan")}, "forget_bias"),
        (layernorm.ln_lstm, {"hidden_size": 4, "forget_bias": "1"}, "forget_bias must be"),
    ],
)
def test_bad_options_name_the_argument(make, options, match):
    with pytest.raises(ValueError, match=match):
        make(**options)


def test_wrong_input_size_is_named():
    cell = layernorm.ln_gru(H)
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match="feature size"):
        rnnjax.scan(cell, params, jnp.zeros((2, T, I + 1)))
