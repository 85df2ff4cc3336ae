"""The train step, clipping, non-finite handling, checkpoints and exact resume."""

import os
import signal
import warnings
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import train as tr
from rnnjax.checkpoint import Checkpointer, CheckpointWarning
from rnnjax.modules import SequenceModel
from rnnjax.tasks import make_task


def setup(cell="lstm", *, optimizer="adam", lr=1e-2, clip=1.0, dropout=0.0, T=12):
    task = make_task("adding", seq_len=T)
    layers = 2 if dropout else 1
    model = SequenceModel(
        rnnjax.make_layer(cell, 8, num_layers=layers, dropout_rate=dropout), 1, head="last"
    )
    example = task.sample(jax.random.key(0), 2)
    params = model.init(jax.random.key(1), example.inputs, example.lengths)["params"]
    opt, sched = tr.make_optimizer(optimizer, lr, clip_norm=clip)

    def loss_fn(p, batch, key):
        out = model.apply(
            {"params": p},
            batch.inputs,
            batch.lengths,
            deterministic=not dropout,
            rngs={"dropout": key},
        )
        return task.loss(out, batch), {}

    step = jax.jit(tr.make_train_step(loss_fn, opt, clip_norm=clip, schedule=sched))
    state = tr.init_state(params, opt, jax.random.key(2))
    data_key = jax.random.key(3)
    batch_fn = lambda s: task.sample(jax.random.fold_in(data_key, s), 16)  # noqa: E731
    return state, step, batch_fn, loss_fn


@pytest.mark.parametrize("cell", list(rnnjax.cells.names()))
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(cell):
    state, step, batch_fn, loss_fn = setup(cell)
    batch = batch_fn(0)
    loss = jax.jit(lambda p: loss_fn(p, batch, jax.random.key(0))[0])  # one compile, not eager
    before = float(loss(state.params))
    # 25 steps: the gated AntisymmetricRNN moves its state by at most eps = 0.01 a step,
    # and at 15 it had lowered the loss by 29.6%.
    for _ in range(25):
        state, metrics = step(state, batch)
    after = float(loss(state.params))
    assert after < 0.7 * before, (before, after)
    assert int(state.step) == 25


def test_clipping_bounds_the_applied_update_and_reports_pre_clip_norm():
    clip = 0.05
    state, step, batch_fn, loss_fn = setup(optimizer="sgd", lr=1.0, clip=clip)
    batch = batch_fn(0)
    # Second route for the pre-clip norm: jax.grad and optax.global_norm by hand.
    grads = jax.grad(lambda p: loss_fn(p, batch, jax.random.key(0))[0])(state.params)
    norm = float(optax.tree.norm(grads))
    assert norm > clip  # the case under test
    new, metrics = step(state, batch)
    np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-5)
    assert bool(metrics["clipped"])
    update = jax.tree.map(lambda a, b: a - b, new.params, state.params)
    # SGD with lr 1 applies -g_clipped: its norm is exactly the threshold.
    np.testing.assert_allclose(float(optax.tree.norm(update)), clip, rtol=1e-4)
    # Below the threshold nothing is clipped and the update is the raw gradient.
    state2, step2, _, _ = setup(optimizer="sgd", lr=1.0, clip=10 * norm)
    new2, m2 = step2(state2, batch)
    assert not bool(m2["clipped"])
    update2 = jax.tree.map(lambda a, b: a - b, new2.params, state2.params)
    chex.assert_trees_all_close(update2, jax.tree.map(jnp.negative, grads), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", tr.OPTIMIZERS)
def test_every_optimizer_runs(name):
    state, step, batch_fn, _ = setup(optimizer=name, lr=1e-3)
    new, metrics = step(state, batch_fn(0))
    assert np.isfinite(metrics["loss"]) and float(metrics["lr"]) == pytest.approx(1e-3)
    assert not np.allclose(new.params["head"]["readout"].w, state.params["head"]["readout"].w)


def test_schedules():
    _, cosine = tr.make_optimizer("adam", 1.0, schedule="cosine", total_steps=10)
    _, warm = tr.make_optimizer(
        "adam", 1.0, schedule="warmup_cosine", total_steps=10, warmup_steps=4
    )
    assert float(cosine(0)) == 1.0 and float(cosine(10)) == pytest.approx(0.0, abs=1e-7)
    assert float(warm(0)) == 0.0 and float(warm(4)) == pytest.approx(1.0)
    _, numpy_total = tr.make_optimizer("adam", 1.0, schedule="cosine", total_steps=np.int64(10))
    assert float(numpy_total(5)) == float(cosine(5))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"name": "adamax"}, r"optimizer must be one of \['sgd', 'momentum', 'adam'"),
        ({"clip_norm": 0.0}, "clip_norm must be > 0 or None"),
        ({"learning_rate": -1.0}, "learning_rate must be a finite number > 0"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"schedule": "cosine"}, "schedule 'cosine' needs total_steps >= 1"),
        # Silently ignored before: a run's config said warm-up, and none ran.
        (
            {"schedule": "cosine", "total_steps": 100, "warmup_steps": 50},
            "warmup_steps applies only to schedule 'warmup_cosine'; got warmup_steps=50",
        ),
        ({"warmup_steps": 5}, "with schedule 'constant', which would ignore it"),
    ],
)
def test_bad_optimizer_options(kw, match):
    with pytest.raises(ValueError, match=match):
        tr.make_optimizer(**kw)


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    state, step, batch_fn, _ = setup()
    bad_from = 7

    def poisoned(s):
        batch = batch_fn(s)
        return batch._replace(inputs=batch.inputs * (jnp.nan if s >= bad_from else 1.0))

    with Checkpointer(tmp_path, max_to_keep=5) as ckpt:
        with pytest.raises(
            tr.NonFiniteError, match="non-finite loss or gradient at update 8 .*step 7"
        ):
            tr.fit(
                state, step, poisoned, num_steps=20, checkpointer=ckpt, save_every=3, progress=False
            )
        assert ckpt.steps() == [3, 6]
        restored_step, restored, _ = ckpt.restore_latest(state)
        assert restored_step == 6
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(restored.params))


def _run(state, step, batch_fn, n, ckpt=None, **kw):
    return tr.fit(state, step, batch_fn, num_steps=n, checkpointer=ckpt, progress=False, **kw)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_is_bit_identical(tmp_path, dropout):
    state0, step, batch_fn, _ = setup(dropout=dropout)
    straight = _run(state0, step, batch_fn, 25)
    with Checkpointer(tmp_path) as ckpt:
        _run(state0, step, batch_fn, 11, ckpt, save_every=5)
    # A fresh process would rebuild state0 and restore: do the same.
    with Checkpointer(tmp_path) as ckpt:
        k, restored, _ = ckpt.restore_latest(state0)
        assert k == 11
        resumed = _run(restored, step, batch_fn, 25, ckpt, save_every=5)
    chex.assert_trees_all_equal(resumed, straight)


def test_sigint_mid_training_checkpoints_then_resumes_exactly(tmp_path):
    # What the handler was before (SIG_IGN, not Python's default, when a shell started
    # the process in the background): the loop must put back exactly that.
    before = signal.getsignal(signal.SIGINT)
    state0, step, batch_fn, _ = setup()
    straight = _run(state0, step, batch_fn, 20)

    def interrupt_at_7(done, metrics, state):
        if done == 7:
            os.kill(os.getpid(), signal.SIGINT)

    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(tr.TrainingInterrupted) as info:
            _run(state0, step, batch_fn, 20, ckpt, save_every=5, on_step=interrupt_at_7)
        assert info.value.step == 7 and info.value.signum == signal.SIGINT
        assert ckpt.steps() == [5, 7]
    with Checkpointer(tmp_path) as ckpt:
        _, restored, _ = ckpt.restore_latest(state0)
        resumed = _run(restored, step, batch_fn, 20, ckpt)
    chex.assert_trees_all_equal(resumed, straight)
    assert signal.getsignal(signal.SIGINT) is before


def _largest_file(folder: Path) -> Path:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    state0, step, batch_fn, _ = setup()
    with Checkpointer(tmp_path) as ckpt:
        at10 = _run(state0, step, batch_fn, 10, ckpt, save_every=10)
        _run(at10, step, batch_fn, 20, ckpt, save_every=10)
        assert ckpt.steps() == [10, 20]
    victim = _largest_file(tmp_path / "20" / "state")
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        victim.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    with Checkpointer(tmp_path) as ckpt:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            k, restored, _ = ckpt.restore_latest(state0)
    assert k == 10
    chex.assert_trees_all_equal(restored, at10)
    assert any(
        issubclass(w.category, CheckpointWarning) and "step 20" in str(w.message) for w in caught
    )


@pytest.mark.parametrize("save_every", [10, 0])
def test_resume_past_a_damaged_checkpoint_saves_over_it(tmp_path, save_every):
    """Step 20 unreadable: the run resumes from 10 and, reaching 20 again, saves over
    the damaged step. Before, saving there raised orbax's StepAlreadyExistsError (the
    trained state lost), or, with only the final save, fit took the existing step for
    its own and wrote nothing."""
    state0, step, batch_fn, _ = setup()
    straight = _run(state0, step, batch_fn, 20)
    with Checkpointer(tmp_path) as ckpt:
        at10 = _run(state0, step, batch_fn, 10, ckpt, save_every=10)
        _run(at10, step, batch_fn, 20, ckpt, save_every=10)
    victim = _largest_file(tmp_path / "20" / "state")
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with Checkpointer(tmp_path) as ckpt:
        with pytest.warns(CheckpointWarning, match="step 20"):
            k, restored, _ = ckpt.restore_latest(state0)
        assert k == 10
        _run(restored, step, batch_fn, 20, ckpt, save_every=save_every)
    with Checkpointer(tmp_path) as ckpt:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # step 20 reads cleanly now
            k, restored, _ = ckpt.restore_latest(state0)
    assert k == 20
    chex.assert_trees_all_equal(restored, straight)


def test_restore_into_a_wrong_template_is_an_error_not_damage(tmp_path):
    """A like of other dtypes or shapes used to read as a checksum failure, and
    restore_latest skipped every step and returned None: a run would quietly start
    afresh. Now it raises, naming the leaf."""
    from rnnjax.checkpoint import CheckpointMismatchError

    state = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, metadata={"note": "x"})
        assert ckpt.metadata(1)["note"] == "x"
        half = jax.tree.map(lambda a: a.astype(jnp.bfloat16), state)
        with pytest.raises(
            CheckpointMismatchError, match=r"\['b'\]: saved float32\[3\], like bfloat16\[3\]"
        ):
            ckpt.restore(1, half)
        bigger = {"w": jnp.zeros((2, 4)), "b": jnp.ones(3)}
        with pytest.raises(
            CheckpointMismatchError, match=r"\['w'\]: saved float32\[2, 3\], like float32\[2, 4\]"
        ):
            ckpt.restore_latest(bigger)
        fewer = {"w": jnp.zeros((2, 3))}
        with pytest.raises(CheckpointMismatchError, match="saved 2 leaves, like 1"):
            ckpt.restore_latest(fewer)
        _, restored, _ = ckpt.restore_latest(state)
        chex.assert_trees_all_equal(restored, state)
        for key in ("step", "checksum", "leaves"):
            with pytest.raises(ValueError, match=rf"metadata must not use the keys.*'{key}'"):
                ckpt.save(2, state, metadata={key: 99})


def test_checkpointer_keeps_the_last_k(tmp_path):
    state0, step, batch_fn, _ = setup()
    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        _run(state0, step, batch_fn, 9, ckpt, save_every=2)
        assert ckpt.steps() == [8, 9]
    with pytest.raises(ValueError, match="max_to_keep must be an int >= 1"):
        Checkpointer(tmp_path, max_to_keep=0)


def test_vmapped_seeds_equal_separate_runs():
    state0, step, batch_fn, loss_fn = setup()
    opt, _ = tr.make_optimizer("adam", 1e-2, clip_norm=1.0)
    raw = tr.make_train_step(loss_fn, opt, clip_norm=1.0)
    states = jax.tree.map(
        lambda a, b: jnp.stack([a, b]),
        state0,
        state0._replace(key=jax.random.key_data(jax.random.key(9))),
    )
    batches = jax.tree.map(lambda a, b: jnp.stack([a, b]), batch_fn(0), batch_fn(1))
    new, metrics = jax.jit(tr.vmap_seeds(raw))(states, batches)
    for s in range(2):
        one, m = jax.jit(raw)(
            jax.tree.map(lambda a: a[s], states), jax.tree.map(lambda a: a[s], batches)
        )
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[s], new), one, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(metrics["loss"][s], m["loss"], rtol=1e-6)


def test_train_step_takes_any_batch_the_loss_takes():
    """A time-major batch ([T, B, I] inputs with [B] lengths) and a scalar option: the
    step refused both (it demanded one leading size for every array)."""
    cell = rnnjax.lstm(4)
    params = cell.init(jax.random.key(0), 3)
    opt, sched = tr.make_optimizer("adam", 1e-2)

    def loss_fn(p, batch, key):
        ys = rnnjax.scan(cell, p, batch["xs"], lengths=batch["lengths"], time_major=True)[1]
        return batch["scale"] * jnp.mean(ys**2), {}

    batch = {
        "xs": jax.random.normal(jax.random.key(1), (5, 2, 3)),
        "lengths": jnp.array([5, 3]),
        "scale": jnp.float32(2.0),
    }
    step = jax.jit(tr.make_train_step(loss_fn, opt, schedule=sched))
    state, metrics = step(tr.init_state(params, opt, jax.random.key(2)), batch)
    want = jax.grad(lambda p: loss_fn(p, batch, None)[0])(params)
    assert float(metrics["grad_norm"]) == pytest.approx(float(optax.tree.norm(want)), rel=1e-6)


def _fake_run(nan_seed=None, seeds=3):
    """A vmapped-looking state and a step whose loss is NaN for ``nan_seed``."""
    state = tr.TrainState(jnp.zeros((seeds,), jnp.int32), {"w": jnp.zeros(seeds)}, (), None)

    def step(state, batch):
        loss = jnp.ones(seeds)
        if nan_seed is not None:
            loss = loss.at[nan_seed].set(jnp.nan)
        metrics = {"loss": loss, "grad_norm": jnp.ones(seeds)}
        return state._replace(step=state.step + 1), metrics

    return state, step


def test_fit_checks_num_steps_and_names_the_seed_that_diverged(tmp_path):
    state, step = _fake_run()
    batch_fn = lambda s: None  # noqa: E731
    done = tr.fit(state, step, batch_fn, num_steps=np.int64(2), progress=False)
    assert tr.current_step(done) == 2
    with pytest.raises(ValueError, match=r"num_steps \(1\) is the run's total .* already made 2"):
        tr.fit(done, step, batch_fn, num_steps=1, progress=False)  # returned silently before
    with pytest.raises(ValueError, match="num_steps must be an int >= 0; got True"):
        tr.fit(state, step, batch_fn, num_steps=True, progress=False)
    state, step = _fake_run(nan_seed=1)
    with pytest.raises(tr.NonFiniteError, match=r"at update 1 .* in seeds \[1\] \(of 3"):
        tr.fit(state, step, batch_fn, num_steps=3, progress=False)


def test_max_grad_norm_stops_a_diverging_run_naming_update_and_seed(tmp_path):
    """A growing gradient norm (seed 2's passes the ceiling at update 4) stops the run
    before that update lands, and nothing is saved past the last good checkpoint."""
    seeds = 3
    state = tr.TrainState(jnp.zeros((seeds,), jnp.int32), {"w": jnp.zeros(seeds)}, (), None)
    growth = jnp.array([1.0, 1.5, 3.0])  # norms 1, 1.5**t, 3**t: 3**4 = 81 > 50

    def step(state, batch):
        t = state.step[0] + 1
        metrics = {"loss": jnp.ones(seeds), "grad_norm": growth**t}
        return state._replace(step=state.step + 1, params={"w": state.params["w"] + 1}), metrics

    with Checkpointer(tmp_path, max_to_keep=5) as ckpt:
        with pytest.raises(
            tr.GradientCeilingError,
            match=r"passed max_grad_norm=50.0 at update 4 \(from state at step 3\) in seeds \[2\]",
        ) as err:
            tr.fit(
                state, step, lambda s: None, num_steps=10, checkpointer=ckpt, save_every=2,
                progress=False, max_grad_norm=50.0,
            )  # fmt: skip
        assert err.value.step == 3 and isinstance(err.value, tr.NonFiniteError)
        assert ckpt.steps() == [2]
    # Below the ceiling all the way: the run finishes.
    done = tr.fit(state, step, lambda s: None, num_steps=3, progress=False, max_grad_norm=50.0)
    assert tr.current_step(done) == 3
    for bad in (0.0, -1.0, float("inf"), True, "5"):
        with pytest.raises(ValueError, match="max_grad_norm must be a finite number > 0 or None"):
            tr.fit(state, step, lambda s: None, num_steps=3, progress=False, max_grad_norm=bad)


def test_a_signal_during_the_final_save_still_saves_and_stops_cleanly(tmp_path):
    """The final checkpoint ran outside the signal handling: a Ctrl-C during it escaped
    as a bare KeyboardInterrupt and the last step was lost."""

    class InterruptedSave(Checkpointer):
        def save(self, step, state, **kw):
            if step == 5:
                os.kill(os.getpid(), signal.SIGINT)
            super().save(step, state, **kw)

    state0, step, batch_fn, _ = setup()
    with InterruptedSave(tmp_path) as ckpt:
        with pytest.raises(tr.TrainingInterrupted) as info:
            _run(state0, step, batch_fn, 5, ckpt, save_every=2)
        assert info.value.step == 5 and ckpt.steps() == [2, 4, 5]


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"name": "adam", "momentum": 0.5}, "momentum applies to optimizer 'momentum' only"),
        ({"name": "sgd", "weight_decay": 0.1}, "weight_decay applies to optimizer 'adamw' only"),
        ({"name": "momentum", "momentum": 1.5}, r"momentum must lie in \[0, 1\); got 1.5"),
        ({"name": "adamw", "weight_decay": -1.0}, "weight_decay must be a finite number >= 0"),
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number > 0"),
        (
            {"schedule": "warmup_cosine", "total_steps": 10, "warmup_steps": 1.5},
            "warmup_steps must be an int; got 1.5",
        ),
    ],
)
def test_optimizer_options_that_would_be_ignored_or_are_out_of_range(kw, match):
    with pytest.raises(ValueError, match=match):
        tr.make_optimizer(**kw)
    # Given to the optimizer that uses it, the option is the setting: optax's own.
    opt, _ = tr.make_optimizer("momentum", 0.1, momentum=0.5)
    ref = optax.sgd(0.1, momentum=0.5)
    params, grads = {"w": jnp.zeros(2)}, {"w": jnp.array([1.0, -2.0])}
    s_opt, s_ref = opt.init(params), ref.init(params)
    for _ in range(3):
        u_opt, s_opt = opt.update(grads, s_opt, params)
        u_ref, s_ref = ref.update(grads, s_ref, params)
    np.testing.assert_allclose(u_opt["w"], u_ref["w"], rtol=1e-6)
