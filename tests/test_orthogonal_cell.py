"""The orthogonal cell (expRNN, and scoRNN's scaled Cayley map as its option): against a
float64 transcription of the papers' equations (the catalogue's reference, its
exponential a Taylor series), ``W_h`` orthogonal after updates of the free parameter,
``expm`` and its derivative against an eigendecomposition, scoRNN's own gradient
formula, gradient norms kept through the recurrence, the authors' initialisations,
bfloat16, layers, ``W_h`` derived once per call (``Cell.prepare``) against once per
step, the fused backward over the derived weights, and the options' errors."""

import contextlib
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from jax.test_util import check_grads

import rnnjax
from rnnjax import diagnostics as dg
from rnnjax.cells import orthogonal
from rnnjax.cells.orthogonal import (
    ENTRY,
    OrthogonalParams,
    exprnn,
    recurrent_weight,
    skew,
)

I, H, T = 3, 6, 7
PARAMETRIZATIONS = ["exp", "cayley"]
# The float64 problems share their shapes, lengths and loss, so each compiled program
# with expm inside (the costly ones to compile) is compiled once per parametrisation.
LENGTHS = np.array([T, 4])


def _normal(rng, shape, dtype, scale=1.0):
    return jnp.asarray(scale * rng.standard_normal(shape), dtype)


def _problem(parametrization, dtype=jnp.float32, seed=0):
    """Random params (every entry, the unread lower triangle of ``a`` too; not the
    init), inputs, carry and loss weights, drawn by NumPy (no JAX RNG to compile)."""
    cell = exprnn(H, parametrization=parametrization, param_dtype=dtype)
    rng = np.random.default_rng(seed)
    params = OrthogonalParams(
        _normal(rng, (I, H), dtype, 0.6),
        _normal(rng, (H, H), dtype, 0.6),
        _normal(rng, H, dtype, 0.6),
    )
    xs = _normal(rng, (2, T, I), dtype)
    carry = _normal(rng, (2, H), dtype, 0.5)
    w = _normal(rng, (2, T, H), dtype)
    return cell, params, xs, carry, w


@functools.cache
def _cell64(parametrization):
    return exprnn(H, parametrization=parametrization, param_dtype=jnp.float64)


@functools.cache
def _run64(parametrization):
    cell = _cell64(parametrization)
    return jax.jit(
        lambda params, xs, carry, lengths, reverse: rnnjax.scan(
            cell, params, xs, carry, lengths=lengths, reverse=reverse
        ),
        static_argnames="reverse",
    )


@functools.cache
def _loss64(parametrization):
    """The float64 loss the gradient tests share: lengths, in reverse, every output
    and the final carry."""
    cell = _cell64(parametrization)

    @jax.jit
    def loss(params, xs, carry, w):
        final, ys = rnnjax.scan(cell, params, xs, carry, lengths=LENGTHS, reverse=True)
        return jnp.sum(jnp.sin(ys) * w) + jnp.sum(final**2)

    return loss


def _grads64(parametrization, params, xs, carry, w):
    """The gradients of :func:`_loss64` with respect to ``(params, xs, carry)``, by
    ``jax.vjp`` of the jitted loss, as ``check_grads`` takes them (one compilation)."""
    loss = _loss64(parametrization)
    _, vjp = jax.vjp(lambda p, x, c: loss(p, x, c, w), params, xs, carry)
    return vjp(jnp.ones((), jnp.float64))


def _reference_step(parametrization, xp=np):
    """The catalogue's reference step for this parametrisation; in NumPy, float64."""
    ref = functools.partial(ENTRY.reference, xp, parametrization=parametrization)
    if xp is not np:
        return ref

    def step(params, h, x):
        f64 = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float64), t)  # noqa: E731
        return ref(f64(params), f64(h), np.asarray(x, np.float64))

    return step


@contextlib.contextmanager
def _in_the_catalogue():
    """The entry in the catalogue for the span of a ``with``; a no-op once the
    catalogue lists it (BUILTIN)."""
    if ENTRY.name in rnnjax.cells.names():
        assert rnnjax.cells.get(ENTRY.name) is ENTRY
        yield
    else:
        with rnnjax.cells.registered(ENTRY):
            yield


def _over_weights(cell):
    """The cell over its derived weights: ``prepare`` left to the caller (``init`` makes
    prepared weights, for the driver's shape checks). What the driver's loop runs."""
    return cell._replace(prepare=None, init=lambda key, i: cell.prepare(cell.init(key, i)))


def _weight(params, parametrization):
    rho = 0 if parametrization == "exp" else H // 2
    return recurrent_weight(params.a, parametrization=parametrization, negative_ones=rho)


def test_the_entry_and_what_the_cell_declares():
    assert ENTRY.name == "exprnn" and ENTRY.family == "orthogonal" and ENTRY.torch is None
    assert ENTRY.matmul_flops(3, 4) == 2 * 4 * (3 + 4)
    for parametrization in PARAMETRIZATIONS:
        cell = exprnn(H, parametrization=parametrization)
        assert cell.name == "exprnn"
        assert not cell.gated and cell.gates is None and cell.linear is None
        # W_h is derived once per call (prepare); the step's one recurrent matmul is
        # h W_h over the derived weights: the fused backward. Its singular values are 1
        # by construction: no recurrent scale (docstring).
        assert cell.prepare is not None and cell.recurrent_scale is None
        assert cell.fused.weight == "w_h" and cell.fused.reads == ("b",)
    with _in_the_catalogue():
        assert rnnjax.make_cell("exprnn", H, parametrization="cayley").name == "exprnn"
        cell = rnnjax.make_cell("exprnn", H)
        plan = rnnjax.plan(cell, cell.init(jax.random.key(0), I), jnp.zeros((2, T, I)))
        assert plan.backward == "fused" and plan.loop == "sequential"


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_step_and_scan_match_the_papers_equations_in_float64(parametrization):
    """Random params (not the init) and inputs; lengths T and 0, then two partial ones;
    both directions."""
    with jax.enable_x64(True):
        cell, params, xs, carry, _ = _problem(parametrization, jnp.float64)
        step = _reference_step(parametrization)
        got = jax.jit(cell.step)(params, carry, xs[:, 0])
        want = step(params, carry, xs[:, 0])
        np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)
        for reverse in (False, True):
            for lengths in (np.array([T, 0]), np.array([3, 6])):
                final, ys = _run64(parametrization)(params, xs, carry, lengths, reverse=reverse)
                finals, ys_ref = reference.run(
                    lambda c, x: step(params, c, x), carry, np.asarray(xs), lengths, reverse
                )
                np.testing.assert_allclose(ys, ys_ref, rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(final, np.stack(finals), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_gradients_by_finite_differences_and_against_the_reference(parametrization):
    """``check_grads`` on the loss through ``rnnjax.scan`` (lengths, reverse); the
    gradients against autodiff of the reference step (its own ``expm``, a Taylor
    series), looped by hand with the same lengths and direction."""
    with jax.enable_x64(True):
        _, params, xs, carry, w = _problem(parametrization, jnp.float64, seed=1)
        loss = _loss64(parametrization)
        check_grads(
            lambda p, x, c: loss(p, x, c, w),
            (params, xs, carry),
            order=1,
            modes=["rev"],
            atol=1e-6,
            rtol=1e-6,
        )
        step = _reference_step(parametrization, jnp)

        def ref_loss(params, xs, carry):
            def body(h, inputs):  # padded steps keep the state and emit zeros
                x, valid = inputs
                h_new, y = step(params, h, x)
                return jnp.where(valid, h_new, h), jnp.where(valid, y, 0.0)

            valid = (np.arange(T)[:, None] < LENGTHS)[..., None]  # [T, B, 1]
            h, ys = jax.lax.scan(body, carry, (jnp.swapaxes(xs, 0, 1), valid), reverse=True)
            return jnp.sum(jnp.sin(jnp.swapaxes(ys, 0, 1)) * w) + jnp.sum(h**2)

        value, grads = jax.jit(jax.value_and_grad(ref_loss, argnums=(0, 1, 2)))(params, xs, carry)
        np.testing.assert_allclose(loss(params, xs, carry, w), value, rtol=1e-12)
        chex.assert_trees_all_close(
            _grads64(parametrization, params, xs, carry, w), grads, rtol=1e-9, atol=1e-11
        )


def _eig_skew(A):
    """``A = V diag(i theta) V^*`` for a real skew-symmetric ``A``, from ``eigh(iA)``."""
    lam, V = np.linalg.eigh(1j * np.asarray(A))
    return -lam, V  # A v = -i lam v: A's eigenvalues are i theta with theta = -lam


def test_expm_is_accurate_and_differentiable_in_float64():
    """``jax.scipy.linalg.expm`` of a skew-symmetric ``A`` against the eigendecomposition
    ``V exp(i theta) V^*`` and the reference's Taylor series; its JVP against the
    Frechet derivative from the same eigendecomposition,
    ``L(A, E) = V [(V^* E V) o Phi] V^*``, ``Phi_jk = (e^{i theta_j} - e^{i theta_k}) /
    (i theta_j - i theta_k)``, written with ``sinc`` so equal angles are exact."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x = _normal(rng, (H, H), jnp.float64, 1.5)  # ||A||_2 about 5: squarings
        e = _normal(rng, (H, H), jnp.float64)
        A, E = np.asarray(skew(x)), np.asarray(skew(e))
        assert np.linalg.norm(A, 1) > 5.372  # beyond the float64 Pade's unscaled range
        theta, V = _eig_skew(A)
        exact = (V * np.exp(1j * theta)) @ V.conj().T
        assert np.abs(exact.imag).max() < 1e-13
        W = recurrent_weight(x)
        np.testing.assert_allclose(W, exact.real, atol=1e-12)
        np.testing.assert_allclose(W, orthogonal.expm_series(np, A), atol=1e-12)
        phi = np.exp(0.5j * (theta[:, None] + theta[None, :])) * np.sinc(
            (theta[:, None] - theta[None, :]) / (2 * np.pi)
        )
        frechet = V @ ((V.conj().T @ E @ V) * phi) @ V.conj().T
        _, jvp = jax.jit(lambda x, e: jax.jvp(recurrent_weight, (x,), (e,)))(x, e)
        np.testing.assert_allclose(jvp, frechet.real, atol=1e-10)
        # The lower triangle of the free parameter is not read.
        lower = jnp.tril(_normal(rng, (H, H), jnp.float64))
        np.testing.assert_array_equal(recurrent_weight(x + lower), W)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_w_h_stays_orthogonal_after_updates_of_the_free_parameter(parametrization):
    """Random steps and gradient steps on ``X``: ``W_h^T W_h = W_h W_h^T = I`` to 1e-10 in
    float64, ``det W_h = +1`` for ``expm`` (SO(H)) and ``(-1)^rho`` for the Cayley map."""
    with jax.enable_x64(True):
        _, params, xs, carry, w = _problem(parametrization, jnp.float64, seed=2)
        rho = 0 if parametrization == "exp" else H // 2
        rng = np.random.default_rng(4)
        for i in range(4):
            step = _normal(rng, (H, H), jnp.float64, 0.5)
            params = params._replace(a=params.a + step)
            params = jax.tree.map(
                lambda p, g: p - 0.3 * g, params, _grads64(parametrization, params, xs, carry, w)[0]
            )
            W = np.asarray(_weight(params, parametrization))
            assert np.linalg.norm(skew(params.a), 2) > 1.0 + i  # far from the identity
            np.testing.assert_allclose(W.T @ W, np.eye(H), atol=1e-10)
            np.testing.assert_allclose(W @ W.T, np.eye(H), atol=1e-10)
            np.testing.assert_allclose(np.linalg.det(W), (-1.0) ** rho, atol=1e-10)


def test_the_cayley_gradient_is_scorNNs_formula():
    """scoRNN's code forms ``dL/dA = U^T - U``, ``U = (I + A)^{-T} dL/dW (D + W^T)``, from
    ``dL/dW``; autodiff through ``A = triu(X, 1) - triu(X, 1)^T`` gives its strict upper
    triangle on ``X`` and zero elsewhere."""
    with jax.enable_x64(True):
        cell, params, xs, carry, w = _problem("cayley", jnp.float64, seed=5)
        prepare, wcell = cell.prepare, _over_weights(cell)

        def loss_w(weights):
            return jnp.sum(jnp.cos(rnnjax.scan(wcell, weights, xs, carry)[1]) * w)

        weights = jax.jit(prepare)(params)
        G = np.asarray(jax.jit(jax.grad(loss_w))(weights).w_h)
        A, W = np.asarray(skew(params.a)), np.asarray(weights.w_h)
        D = np.diag(np.r_[np.ones(H - H // 2), -np.ones(H // 2)])
        U = np.linalg.solve((np.eye(H) + A).T, G @ (D + W.T))
        formula = U.T - U
        got = np.asarray(jax.jit(jax.grad(lambda p: loss_w(prepare(p))))(params).a)
        np.testing.assert_allclose(got, np.triu(formula, 1), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_gradient_norms_survive_the_recurrence_while_every_unit_is_active(parametrization):
    """With ``b > 0`` modReLU has slope 1 everywhere, so ``dh_t/dh_{t-1} = W_h`` (row
    convention): ``||dL/dh_t||`` is the same at every ``t`` for a loss linear in
    ``h_T``, and ``dh_T/dh_0`` is orthogonal. With ``b < 0`` some units are cut and the
    norm falls, so the check can fail. Run over the derived weights (what the driver's
    loop reads), so the perturbation holds no ``expm`` to compile."""
    with jax.enable_x64(True):
        cell, params, xs, carry, _ = _problem(parametrization, jnp.float64, seed=6)
        prepare, cell = cell.prepare, _over_weights(cell)
        v = _normal(np.random.default_rng(8), (2, H), jnp.float64)

        def loss(ys, final):
            return jnp.sum(ys[:, -1] * v)

        def norms(weights):
            _, grads = dg.hidden_grads(cell, weights, xs, loss, carry)  # [T, B, H]
            return np.linalg.norm(np.asarray(grads), axis=-1)

        active = prepare(params._replace(b=jnp.full((H,), 0.3)))
        kept = norms(active)
        want = np.broadcast_to(np.linalg.norm(v, axis=-1), kept.shape)
        np.testing.assert_allclose(kept, want, rtol=1e-12)
        jac = jax.jacobian(lambda h: rnnjax.scan(cell, active, xs[0], h)[0])(carry[0])
        np.testing.assert_allclose(jac @ jac.T, np.eye(H), atol=1e-10)
        cut = norms(active._replace(b=jnp.full((H,), -1.0)))
        assert (cut[0] < 0.9 * cut[-1]).all()


def test_the_authors_initialisations():
    """``A`` block diagonal with 2x2 rotation blocks, stored skew-symmetric; Henaff's
    angles uniform in (-pi, pi) (both signs, mean |s| = pi/2), the Cayley init's
    ``s = -tan(u/2)``, ``u`` uniform in (0, pi/2) (mean pi/4); ``W_x`` and ``b`` as each
    parametrisation's authors. Defaults: ``"henaff"`` for ``"exp"``, ``"cayley"`` for
    ``"cayley"``."""
    n, inputs = 256, 64

    cells = [exprnn(n), exprnn(n, parametrization="cayley")]
    cells.append(exprnn(n, parametrization="cayley", init="henaff"))
    inits = jax.jit(lambda key: [c.init(key, inputs) for c in cells])(jax.random.key(0))
    exp_params, cay_params, henaff_cayley = inits
    for p in (exp_params, cay_params):
        a = np.asarray(p.a)
        np.testing.assert_array_equal(a, -a.T)
        blocks = np.zeros_like(a, bool)
        blocks[np.arange(0, n, 2), np.arange(1, n, 2)] = True
        blocks |= blocks.T
        assert not a[~blocks].any() and np.all(a[blocks] != 0)
    s_henaff = np.asarray(exp_params.a)[np.arange(0, n, 2), np.arange(1, n, 2)]
    s_cayley = np.asarray(cay_params.a)[np.arange(0, n, 2), np.arange(1, n, 2)]
    assert np.abs(s_henaff).max() <= math.pi and (s_henaff < 0).any() and (s_henaff > 0).any()
    assert abs(np.abs(s_henaff).mean() - math.pi / 2) < 0.3  # standard error 0.08
    assert (s_cayley <= 0).all() and s_cayley.min() >= -1.0
    u = 2 * np.arctan(-s_cayley)
    assert abs(u.mean() - math.pi / 4) < 0.15  # standard error 0.04
    # The Cayley map turns each plane by u (D flips columns): |cos| of the angle = cos u.
    c = np.asarray(
        jax.jit(recurrent_weight, static_argnames="parametrization")(
            cay_params.a, parametrization="cayley"
        )
    )
    np.testing.assert_allclose(c[np.arange(0, n, 2), np.arange(0, n, 2)], np.cos(u), atol=1e-5)
    np.testing.assert_allclose(jnp.std(exp_params.w_x), math.sqrt(2 / inputs), rtol=0.05)
    assert 0.0 < np.abs(exp_params.b).max() <= 0.01
    assert 0.009 < np.abs(cay_params.w_x).max() <= 0.01
    assert not np.asarray(cay_params.b).any()
    # The init option is A's alone: Henaff's angles under the Cayley parametrisation.
    np.testing.assert_array_equal(henaff_cayley.a, exp_params.a)
    odd = np.asarray(exprnn(5).init(jax.random.key(1), 3).a)
    assert not odd[4].any() and odd[0, 1] != 0 and odd[2, 3] != 0


def test_bfloat16_runs_close_to_the_float64_reference():
    """``dtype=bfloat16``: ``W_h`` is derived in float32 (expm has no bfloat16 kernel),
    the step runs in bfloat16. ``param_dtype=bfloat16`` (the Cayley map: nor has the
    solve): the params stored so, the same."""
    _, params, xs, carry, _ = _problem("exp")
    cell16 = exprnn(H, dtype=jnp.bfloat16)
    carry16 = carry.astype(jnp.bfloat16)
    _, ys16 = jax.jit(lambda p, x, c: rnnjax.scan(cell16, p, x, c))(params, xs, carry16)
    assert ys16.dtype == jnp.bfloat16
    step = _reference_step("exp")
    _, want = reference.run(lambda c, x: step(params, c, x), carry, np.asarray(xs))
    np.testing.assert_allclose(np.asarray(ys16, np.float32), want, atol=0.05)
    cell = exprnn(H, parametrization="cayley", param_dtype=jnp.bfloat16)
    p16 = cell.init(jax.random.key(0), I)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(p16))
    _, ys = jax.jit(lambda p, x: rnnjax.scan(cell, p, x))(p16, xs.astype(jnp.bfloat16))
    assert ys.dtype == jnp.bfloat16 and np.isfinite(np.asarray(ys, np.float32)).all()


def test_stacked_bidirectional_layer():
    with _in_the_catalogue():
        layer = rnnjax.make_layer(
            "exprnn", H, num_layers=2, bidirectional=True, parametrization="cayley"
        )
        cell = exprnn(H, parametrization="cayley")
        xs = _normal(np.random.default_rng(1), (2, T, I), jnp.float32)
        lengths = jnp.array([T, 3])
        p = layer.init(jax.random.key(1), I)
        _, ys = layer.apply(p, xs, lengths=lengths)
        _, y_f = rnnjax.scan(cell, p[0].forward, xs, lengths=lengths)
        _, y_b = rnnjax.scan(cell, p[0].backward, xs, lengths=lengths, reverse=True)
        x1 = jnp.concatenate([y_f, y_b], -1)
        _, z_f = rnnjax.scan(cell, p[1].forward, x1, lengths=lengths)
        _, z_b = rnnjax.scan(cell, p[1].backward, x1, lengths=lengths, reverse=True)
        np.testing.assert_allclose(ys, jnp.concatenate([z_f, z_b], -1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_w_h_derived_once_equals_w_h_derived_at_every_step(parametrization):
    """The catalogue cell (``W_h`` derived once per call by ``prepare``, the fused
    backward over it) against the same step deriving ``W_h`` inside every step (no
    ``prepare``, autodiff through ``expm`` at each step): outputs and the gradients
    with respect to the trainable params, inputs and carry (float64, lengths, both
    directions)."""
    with jax.enable_x64(True):
        cell, params, xs, carry, w = _problem(parametrization, jnp.float64, seed=7)
        per_step = cell._replace(
            prepare=None,
            fused=None,
            project=lambda p, x: cell.project(cell.prepare(p), x),
            recur=lambda p, h, xp: cell.recur(cell.prepare(p), h, xp),
        )

        def grads(c, reverse):
            def loss(params, xs, carry):
                final, ys = rnnjax.scan(c, params, xs, carry, lengths=LENGTHS, reverse=reverse)
                return jnp.sum(jnp.sin(ys) * w) + jnp.sum(final**2)

            return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(params, xs, carry)

        assert rnnjax.plan(cell, params, xs, carry).backward == "fused"
        assert rnnjax.plan(per_step, params, xs, carry).backward == "autodiff"
        for reverse in (False, True):
            chex.assert_trees_all_close(
                grads(cell, reverse), grads(per_step, reverse), rtol=1e-10, atol=1e-12
            )


def test_the_fused_backward_over_the_derived_weights_equals_autodiff():
    """``h W_h`` is the step's one recurrent matmul, ``b`` the one other field it reads:
    the fused backward equals JAX's, with lengths, both directions, the gradient taken
    through ``prepare``."""
    with jax.enable_x64(True):
        cell, params, xs, carry, w = _problem("exp", jnp.float64, seed=8)

        def grads(reverse, vjp):
            def loss(params, xs, carry):
                final, ys = rnnjax.scan(
                    cell, params, xs, carry, lengths=LENGTHS, reverse=reverse, vjp=vjp
                )
                return jnp.sum(jnp.sin(ys) * w) + jnp.sum(final**2)

            return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, xs, carry)

        for reverse in (False, True):
            chex.assert_trees_all_close(
                grads(reverse, "fused"), grads(reverse, "autodiff"), rtol=1e-10, atol=1e-12
            )


def test_bad_options_name_the_argument():
    with pytest.raises(ValueError, match="parametrization must be one of"):
        exprnn(H, parametrization="givens")
    with pytest.raises(ValueError, match="init must be None or one of"):
        exprnn(H, init="haar")
    with pytest.raises(ValueError, match="negative_ones .* applies to parametrization='cayley'"):
        exprnn(H, negative_ones=2)
    with pytest.raises(ValueError, match=r"negative_ones must be in \[0, hidden_size = 6\]"):
        exprnn(H, parametrization="cayley", negative_ones=7)
    with pytest.raises(ValueError, match="negative_ones must be None or an int"):
        exprnn(H, parametrization="cayley", negative_ones=1.5)
    with pytest.raises(ValueError, match="kernel_init must be None or an initialiser"):
        exprnn(H, kernel_init="normal")
    with pytest.raises(ValueError, match="hidden_size"):
        exprnn(0)
    with pytest.raises(ValueError, match="feature size 3"):
        cell = exprnn(H)
        cell.step(cell.init(jax.random.key(0), I), jnp.zeros((H,)), jnp.zeros((4,)))
