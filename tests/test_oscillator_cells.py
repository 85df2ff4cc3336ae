"""The bounded-dynamics cells coRNN (Rusch & Mishra 2021) and LEM (Rusch et al. 2022):
each against a float64 NumPy transcription of its equations (the catalogue's reference:
the authors' code's form, and for coRNN's ``implicit_damping`` the paper's as quoted),
gradients against finite differences, the authors' initialisations, the
declared capabilities, bfloat16, the layers, option checks; and the property the
coRNN's half-implicit step exists for, bounded energy over a long random sequence,
against a forward-Euler variant that breaks it."""

import contextlib
import functools
import importlib
import math

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

# The modules, not the factories rnnjax.cells exports under the same names.
cornn = importlib.import_module("rnnjax.cells.cornn")
lem = importlib.import_module("rnnjax.cells.lem")

ENTRIES = {"cornn": cornn.ENTRY, "lem": lem.ENTRY}
NAMES = sorted(ENTRIES)
I, H, T = 3, 5, 7


@contextlib.contextmanager
def in_catalogue(name):
    """The entry in the catalogue for the span of a ``with`` (already there once the
    lead has wired it into ``BUILTIN``)."""
    if name in rnnjax.cells.names():
        yield rnnjax.cells.get(name)
    else:
        with rnnjax.cells.registered(ENTRIES[name]) as entry:
            yield entry


def _random(cell, rng, *, scale, input_size=I, batch=(), carry_scale=0.5):
    """Random params in ``cell.init``'s structure (every leaf normal, times ``scale``:
    biases included, not the init's) and a random carry, from the NumPy generator
    ``rng`` (one ``jax.random`` kernel per shape would be compiled op by op)."""
    shapes = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)
    zeros = cell.initial_carry(batch)
    carry = jax.tree.map(
        lambda z: jnp.asarray(carry_scale * rng.normal(size=z.shape), z.dtype), zeros
    )
    return params, carry


def _problem(name, batch=(3,), dtype=jnp.float32, seed=0, **options):
    """Random params, inputs ``[*batch, T, I]`` and carry."""
    cell = ENTRIES[name].make(H, param_dtype=dtype, **options)
    rng = np.random.default_rng(seed)
    params, carry = _random(cell, rng, scale=0.6, batch=batch)
    xs = jnp.asarray(rng.normal(size=batch + (T, I)), dtype)
    return cell, params, xs, carry


def _entry_with(name, **options):
    """The entry whose reference takes ``options`` too (the default reference has the
    factory's defaults)."""
    entry = ENTRIES[name]
    return entry._replace(reference=functools.partial(entry.reference, **options))


# ------------------------------------------------------------ against the papers


@pytest.mark.parametrize(
    "name,options",
    [("cornn", {}), ("cornn", {"implicit_damping": True}), ("lem", {}), ("lem", {"dt": 0.7})],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_and_step_match_the_reference_in_float64(name, options, reverse):
    """``rnnjax.scan`` (lengths 0, 3 and T; both directions) and one ``cell.step`` against
    the catalogue's reference, run example by example by ``tests/reference.run``."""
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(name, dtype=jnp.float64, **options)
        step = numpy_step(_entry_with(name, **options))
        lengths = jnp.array([T, 0, 3])
        final, ys = rnnjax.scan(cell, params, xs, carry, lengths=lengths, reverse=reverse)
        finals, want = reference.run(
            lambda c, x: step(params, c, x), carry, np.asarray(xs), np.asarray(lengths), reverse
        )
        np.testing.assert_allclose(ys, want, rtol=1e-12, atol=1e-12)
        for b in range(3):
            chex.assert_trees_all_close(
                jax.tree.map(lambda a: np.asarray(a)[b], final), finals[b], rtol=1e-12, atol=1e-12
            )
        new, y = cell.step(params, carry, xs[:, 0])
        want_carry, want_y = step(params, carry, xs[:, 0])
        chex.assert_trees_all_close(new, want_carry, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(y, want_y, rtol=1e-12)
        np.testing.assert_array_equal(cell.output(new), y)  # the output is the position y


def test_cornn_damping_forms_differ_as_the_equations_say():
    """The two damping forms on the same step: ``z_implicit (1 + dt eps) = z_explicit +
    dt eps z_old``, both from ``z_old + dt (f - gamma y_old)`` (a check that the option
    is not a no-op and that the references are not swapped)."""
    with jax.enable_x64(True):
        _, params, xs, carry = _problem("cornn", dtype=jnp.float64)
        explicit = cornn.cornn(H, param_dtype=jnp.float64)
        implicit = cornn.cornn(H, implicit_damping=True, param_dtype=jnp.float64)
        (_, z_ex), _ = explicit.step(params, carry, xs[:, 0])
        (_, z_im), _ = implicit.step(params, carry, xs[:, 0])
        c = cornn.DT * cornn.EPSILON
        np.testing.assert_allclose(z_im * (1 + c), z_ex + c * carry.z, rtol=1e-12, atol=1e-12)
        assert float(jnp.max(jnp.abs(z_im - z_ex))) > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_gradients_against_finite_differences(name):
    """``check_grads`` in float64 through ``rnnjax.scan`` with lengths, in the params,
    the inputs and the initial carry."""
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem(name, batch=(2,), dtype=jnp.float64)
        lengths = jnp.array([T, 4])

        def loss(params, xs, carry):
            final, ys = rnnjax.scan(cell, params, xs, carry, lengths=lengths)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(final))

        check_grads(
            jax.jit(loss), (params, xs, carry), order=1, modes=["rev"], atol=1e-6, rtol=1e-6
        )


# ------------------------------------------------------------ initialisation


def _uniform_stats(a, bound):
    a = np.asarray(a, np.float64)
    return float(np.max(np.abs(a))) / bound, float(np.std(a)) / (bound / math.sqrt(3))


def test_cornn_starts_as_the_authors_linear_layer():
    """``nn.Linear(I + 2H, H)``: every block U(+-1/sqrt(I + 2H)), the input block too
    (a bound from ``I`` or ``H`` alone fails), independent draws, zero carry."""
    inputs, hidden = 3, 64
    cell = cornn.cornn(hidden)
    p = cell.init(jax.random.key(0), inputs)
    assert p.w_x.shape == (inputs, hidden) and p.w_y.shape == p.w_z.shape == (hidden, hidden)
    bound = 1 / math.sqrt(inputs + 2 * hidden)
    for leaf in (p.w_x, p.w_y, p.w_z, p.b):
        top, std = _uniform_stats(leaf, bound)
        assert 0.8 < top <= 1.0 and abs(std - 1) < 0.15
    assert not np.allclose(p.w_y, p.w_z)
    zeros = cell.initial_carry((2,))
    assert isinstance(zeros, cornn.CoRNNCarry)
    assert all(np.array_equal(a, np.zeros((2, hidden))) for a in zeros)


def test_lem_starts_as_the_authors_reset_parameters():
    """Every weight U(+-1/sqrt(H)), the input weights too (not the fan-in's bound); each
    bias the sum of the code's two such biases: within 2/sqrt(H), past 1/sqrt(H)
    somewhere, standard deviation sqrt(2/3)/sqrt(H) (one draw would give sqrt(1/3))."""
    inputs, hidden = 3, 64
    cell = lem.lem(hidden)
    p = cell.init(jax.random.key(0), inputs)
    assert p.w_x.shape == (inputs, 4 * hidden) and p.w_h.shape == (hidden, 3 * hidden)
    assert p.w_y.shape == (hidden, hidden) and p.b.shape == (4 * hidden,)
    bound = 1 / math.sqrt(hidden)
    for leaf in (p.w_x, p.w_h, p.w_y):
        top, std = _uniform_stats(leaf, bound)
        assert 0.9 < top <= 1.0 and abs(std - 1) < 0.1
    top, std = _uniform_stats(p.b, bound)
    assert 1.0 < top <= 2.0 and abs(std - math.sqrt(2)) < 0.15 * math.sqrt(2)
    zeros = cell.initial_carry(())
    assert isinstance(zeros, lem.LEMCarry)
    assert all(np.array_equal(a, np.zeros(hidden)) for a in zeros)


# ------------------------------------------------------------ declared capabilities


@pytest.mark.parametrize("name", NAMES)
def test_catalogue_entry_and_declarations(name):
    entry = ENTRIES[name]
    cell = entry.make(H)
    assert entry.name == cell.name == name and entry.family == "bounded"
    assert entry.torch is None and cell.fused is None and cell.linear is None
    assert cell.gated == (name == "lem") and (cell.gates is not None) == (name == "lem")
    params = cell.init(jax.random.key(0), I)
    steps = {"cornn": 2 * H * (I + 2 * H), "lem": 2 * (4 * H * I + 3 * H * H + H * H)}
    assert entry.matmul_flops(I, H) == steps[name]
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(2, T, I)), jnp.float32)
    with pytest.raises(ValueError, match="declares no fused recurrence"):
        rnnjax.scan(cell, params, xs, vjp="fused")
    with in_catalogue(name):
        assert rnnjax.make_cell(name, H).name == name


def test_cornn_recurrent_scale_scales_both_state_weights():
    """``g`` multiplies ``W_y`` and ``W_z`` and nothing else: the scaled cell's step is
    the reference's with those two weights times ``g`` (``g = 0``: a drive from the
    input alone)."""
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem("cornn", dtype=jnp.float64)
        for g in (0.0, 0.5, 2.0):
            scaled = cell.recurrent_scale(params, g)
            np.testing.assert_array_equal(scaled.w_x, params.w_x)
            np.testing.assert_array_equal(scaled.b, params.b)
            by_hand = params._replace(w_y=g * params.w_y, w_z=g * params.w_z)
            want = cornn.reference(np, by_hand, carry, np.asarray(xs[:, 0]))
            chex.assert_trees_all_close(
                cell.step(scaled, carry, xs[:, 0]), want, rtol=1e-12, atol=1e-12
            )


def test_lem_recurrent_scale_scales_every_state_weight():
    with jax.enable_x64(True):
        cell, params, xs, carry = _problem("lem", dtype=jnp.float64)
        for g in (0.0, 0.5, 2.0):
            scaled = cell.recurrent_scale(params, g)
            np.testing.assert_array_equal(scaled.w_x, params.w_x)
            np.testing.assert_array_equal(scaled.b, params.b)
            by_hand = params._replace(w_h=g * params.w_h, w_y=g * params.w_y)
            want = lem.reference(np, by_hand, carry, np.asarray(xs[:, 0]))
            chex.assert_trees_all_close(
                cell.step(scaled, carry, xs[:, 0]), want, rtol=1e-12, atol=1e-12
            )


def test_lem_gates_are_the_two_time_steps_in_range():
    """``dt_z`` (the paper's dt_n, the code's ``ms_dt`` from chunk ``dt2``) and ``dt_y``
    (dtbar_n, ``ms_dt_bar`` from ``dt1``), by hand from the code's chunks; each in
    ``(0, dt)``; and ``diagnostics.gate_stats`` reads them."""
    dt = 0.3
    cell, params, xs, carry = _problem("lem", dt=dt)
    x = xs[:, 0]
    got = cell.gates(params, carry, cell.project(params, x))
    assert set(got) == {"dt_z", "dt_y"}

    def chunk(a, j):
        return a[..., j * H : (j + 1) * H]

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    y, z = (np.asarray(a, np.float64) for a in carry)
    k, r = np.asarray(x, np.float64) @ p.w_x + p.b, y @ p.w_h
    sigmoid = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    np.testing.assert_allclose(got["dt_z"], dt * sigmoid(chunk(k, 1) + chunk(r, 1)), rtol=1e-5)
    np.testing.assert_allclose(got["dt_y"], dt * sigmoid(chunk(k, 0) + chunk(r, 0)), rtol=1e-5)
    for a in got.values():
        assert float(a.min()) > 0 and float(a.max()) < dt
    # The update uses them: z' = (1 - dt_z) z + dt_z tanh(k_y + r_y).
    (_, z_new), _ = cell.step(params, carry, x)
    dt_z = np.asarray(got["dt_z"], np.float64)
    target = np.tanh(chunk(k, 3) + chunk(r, 2))
    np.testing.assert_allclose(z_new, (1 - dt_z) * z + dt_z * target, rtol=1e-5, atol=1e-6)
    stats = dg.gate_stats(cell, params, xs, carry)
    assert set(stats) == {"dt_z", "dt_y"} and stats["dt_z"].shape == (T,)


# ------------------------------------------------------------ bounded dynamics


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _energy_excess(step, params, xs, carry, dt, gamma, c):
    """The largest ``E_n - E_0 - n dt / (2 c)`` over units, examples and steps, with
    ``E = gamma y^2 + z^2``: at most 0 for a step that keeps the derived energy bound.
    ``step(params, (y, z), x) -> (y, z)``; ``xs [T, B, I]``."""

    def energy(y, z):
        return gamma * y**2 + z**2

    def body(state, x):
        state = step(params, state, x)
        return state, energy(*state)

    _, energies = jax.lax.scan(body, (carry.y, carry.z), xs)
    n = jnp.arange(1, xs.shape[0] + 1, dtype=energies.dtype)[:, None, None]
    bound = energy(carry.y, carry.z)[None] + n * dt / (2 * c)
    return jnp.max(energies - bound), jnp.max(energies)


def _cornn_step(cell):
    def step(params, state, x):
        new, _ = cell.step(params, cornn.CoRNNCarry(*state), x)
        return new.y, new.z

    return step


def _forward_euler_step(dt, gamma, epsilon):
    """coRNN's equations with the position moved by the *old* velocity: plain explicit
    Euler on the same ODE."""

    def step(params, state, x):
        y, z = state
        drive = jnp.tanh(y @ params.w_y + z @ params.w_z + x @ params.w_x + params.b)
        return y + dt * z, z + dt * (drive - gamma * y - epsilon * z)

    return step


@pytest.mark.parametrize(
    "dt,gamma,epsilon",
    [
        (0.1, 10.0, 0.7),  # gamma dt > epsilon: forward Euler's linear part is unstable
        (cornn.DT, cornn.GAMMA, cornn.EPSILON),  # the authors' psMNIST setting, our default
        (0.06, 66.0, 15.0),  # their adding setting
    ],
)
def test_cornn_energy_stays_bounded_over_a_long_random_sequence(dt, gamma, epsilon):
    """The bound the paper's energy argument gives (derived in ``cornn``'s docstring):
    ``E_n <= E_0 + n dt / (2 c)`` per unit for any weights and inputs, ``c = eps -
    dt (gamma + eps^2) / 2`` (code form), ``eps - dt gamma / 2`` (implicit damping);
    checked at every step of 1,000 with large random weights and inputs. Where
    ``gamma dt > eps`` a forward-Euler step on the same weights breaks that bound by
    orders of magnitude (its linear part is unstable: the energy grows exponentially).
    At the authors' published settings its linear part is stable and it stays finite
    (it may still cross this bound by a little in the first steps): there the test
    claims no difference. (Their sMNIST setting also satisfies ``c > 0``.)"""
    steps, batch = 1000, 4
    with jax.enable_x64(True):
        rng = np.random.default_rng(11)
        base = cornn.cornn(8, dt=dt, gamma=gamma, epsilon=epsilon, param_dtype=jnp.float64)
        params, carry = _random(base, rng, scale=2.0, batch=(batch,), carry_scale=1.0)
        xs = jnp.asarray(3.0 * rng.normal(size=(steps, batch, I)), jnp.float64)
        c_code = epsilon - dt * (gamma + epsilon**2) / 2
        c_implicit = epsilon - dt * gamma / 2
        assert c_code > 0 and c_implicit > 0  # the settings the bound covers
        excess, _ = _energy_excess(_cornn_step(base), params, xs, carry, dt, gamma, c_code)
        assert float(excess) <= 1e-9
        implicit = cornn.cornn(
            8, dt=dt, gamma=gamma, epsilon=epsilon, implicit_damping=True, param_dtype=jnp.float64
        )
        excess, _ = _energy_excess(_cornn_step(implicit), params, xs, carry, dt, gamma, c_implicit)
        assert float(excess) <= 1e-9
        euler = _forward_euler_step(dt, gamma, epsilon)
        excess, top = _energy_excess(euler, params, xs, carry, dt, gamma, c_code)
        if gamma * dt > epsilon:
            assert float(excess) > 0 and float(top) > 1e6  # far past the bound
        else:
            assert np.isfinite(float(top))


def test_lem_states_stay_in_the_unit_interval():
    """With ``dt <= 1`` each update is a convex combination of the old state and a tanh
    (*derived* from the equations): states starting in [-1, 1] stay there, for large
    random weights and inputs over 300 steps (and they do move: not a trivial pass)."""
    steps = 300
    cell = lem.lem(8, dt=1.0)
    rng = np.random.default_rng(12)
    params, _ = _random(cell, rng, scale=3.0)
    xs = jnp.asarray(5.0 * rng.normal(size=(steps, 4, I)), jnp.float32)
    carry = lem.LEMCarry(*(jnp.asarray(rng.uniform(-1, 1, (4, 8)), jnp.float32) for _ in "yz"))

    @jax.jit
    def extremes(params, xs, carry):
        def body(carry, x):
            new, _ = cell.step(params, carry, x)
            return new, new

        _, states = jax.lax.scan(body, carry, xs)
        return [(jnp.max(jnp.abs(a)), jnp.std(a)) for a in states]

    for top, spread in extremes(params, xs, carry):
        assert float(top) <= 1.0 and float(spread) > 0.1


# ------------------------------------------------------------ dtypes, layers, options


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_runs_close_to_float32(name):
    """A bfloat16 cell (bfloat16 params, compute and carry) on bfloat16-representable
    weights and inputs, against the float32 cell: within 2% of the outputs' scale."""
    cell32 = ENTRIES[name].make(H)
    cell16 = ENTRIES[name].make(H, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    rng = np.random.default_rng(0)
    p16, _ = _random(cell16, rng, scale=0.6)
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p16)
    xs = jnp.asarray(rng.normal(size=(2, T, I)), jnp.bfloat16)
    final16, ys16 = rnnjax.scan(cell16, p16, xs)
    _, ys32 = rnnjax.scan(cell32, p32, xs.astype(jnp.float32))
    assert ys16.dtype == jnp.bfloat16
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(final16))
    err = float(jnp.max(jnp.abs(ys16.astype(jnp.float32) - ys32)))
    assert err < 2e-2 * float(jnp.max(jnp.abs(ys32)))


@pytest.mark.parametrize("name", NAMES)
def test_a_stacked_bidirectional_layer_and_a_model_read_y(name):
    """``make_layer`` by name (two bidirectional layers) equals the stack by hand from
    ``rnnjax.scan``; ``SequenceModel``'s last-state head reads the position ``y``."""
    from rnnjax.modules import SequenceModel

    cell, _, xs, _ = _problem(name)
    lengths = jnp.array([T, 2, 0])
    with in_catalogue(name):
        layer = rnnjax.make_layer(name, H, num_layers=2, bidirectional=True)
        p = layer.init(jax.random.key(1), I)
        _, ys = layer.apply(p, xs, lengths=lengths)
        _, y_f = rnnjax.scan(cell, p[0].forward, xs, lengths=lengths)
        _, y_b = rnnjax.scan(cell, p[0].backward, xs, lengths=lengths, reverse=True)
        x1 = jnp.concatenate([y_f, y_b], -1)
        _, z_f = rnnjax.scan(cell, p[1].forward, x1, lengths=lengths)
        _, z_b = rnnjax.scan(cell, p[1].backward, x1, lengths=lengths, reverse=True)
        np.testing.assert_allclose(ys, jnp.concatenate([z_f, z_b], -1), rtol=1e-5, atol=1e-6)

        model = SequenceModel(rnnjax.make_layer(name, H), num_outputs=2, head="last")
        variables = model.init(jax.random.key(2), xs, lengths)
        out = model.apply(variables, xs, lengths)
    final, _ = rnnjax.scan(cell, variables["params"]["rnn"]["layer"][0], xs, lengths=lengths)
    w, b = variables["params"]["head"]["readout"]
    np.testing.assert_allclose(out, final.y @ w + b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make,options,argument",
    [
        (cornn.cornn, {"dt": 0.0}, "dt"),
        (cornn.cornn, {"dt": -0.1}, "dt"),
        (cornn.cornn, {"dt": float("nan")}, "dt"),
        (cornn.cornn, {"gamma": -1.0}, "gamma"),
        (cornn.cornn, {"epsilon": "15"}, "epsilon"),
        (cornn.cornn, {"epsilon": True}, "epsilon"),
        (cornn.cornn, {"implicit_damping": 1}, "implicit_damping"),
        (lem.lem, {"dt": 0.0}, "dt"),
        (lem.lem, {"dt": 1.5}, "dt"),
        (lem.lem, {"dt": None}, "dt"),
    ],
)
def test_bad_options_name_the_argument(make, options, argument):
    with pytest.raises(ValueError, match=f"^{argument} must be"):
        make(H, **options)
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        make(0)
