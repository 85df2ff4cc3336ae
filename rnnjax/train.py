"""Training: optimizer by name with clipping, a pure train step, and the loop around it.

The train step is a pure function ``(TrainState, Batch) -> (TrainState, metrics)``; the
loop (:func:`fit`) feeds it ``batch_fn(step)``, a pure function of the step, so a run
interrupted at step k and resumed from its checkpoint ends bit-identical to one that
never stopped. Several seeds train at once by ``vmap``-ing the step over a leading
seed axis of the state (see :func:`vmap_seeds`).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax.checkpoint import Checkpointer
from rnnjax.distributed import to_host

Array = jax.Array
PyTree = Any

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear")


class TrainState(NamedTuple):
    """Everything a run needs to continue exactly: a pytree of arrays (checkpointable).

    ``key`` holds raw key data (``jax.random.key_data``), so plain array checkpoints
    can store it; :func:`state_key` wraps it back into a typed key.
    """

    step: Array  # int32 [], number of updates applied
    params: PyTree
    opt_state: PyTree
    key: Array  # uint32 key data


class NonFiniteError(FloatingPointError):
    """The loss or the gradient became NaN or infinite; ``step``: the last good step."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class GradientCeilingError(NonFiniteError):
    """The gradient norm of an update passed ``fit``'s ``max_grad_norm``: a run
    diverging, stopped before its numbers overflow. ``step``: the last good step."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; the state at ``step`` was checkpointed first.

    ``signum`` is ``None`` in a process that stopped because another process of the run
    was signalled."""

    def __init__(self, step: int, signum: int | None):
        cause = f"signal {signum}" if signum is not None else "a signal to another process"
        super().__init__(f"interrupted by {cause} after step {step}")
        self.step, self.signum = step, signum


def make_schedule(
    name: str, learning_rate: float, *, total_steps: int | None = None, warmup_steps: int = 0
) -> optax.Schedule:
    """``"constant"``, ``"cosine"`` (to 0 at ``total_steps``), ``"warmup_cosine"``
    (linear warm-up over ``warmup_steps``, then cosine) or ``"linear"`` (to 0)."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}; got {name!r}.")
    if not 0 < learning_rate < math.inf:
        raise ValueError(f"learning_rate must be a finite number > 0; got {learning_rate!r}.")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, numbers.Integral):
        raise ValueError(f"warmup_steps must be an int; got {warmup_steps!r}.")
    if warmup_steps and name != "warmup_cosine":
        raise ValueError(
            f"warmup_steps applies only to schedule 'warmup_cosine'; got warmup_steps="
            f"{warmup_steps!r} with schedule {name!r}, which would ignore it."
        )
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    if (
        isinstance(total_steps, bool)
        or not isinstance(total_steps, numbers.Integral)
        or total_steps < 1
    ):
        raise ValueError(f"schedule {name!r} needs total_steps >= 1; got {total_steps!r}.")
    total_steps = int(total_steps)
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    if name == "linear":
        return optax.linear_schedule(learning_rate, 0.0, total_steps)
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must lie in [0, total_steps); got {warmup_steps!r}.")
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, total_steps)


def make_optimizer(
    name: str = "adam",
    learning_rate: float = 1e-3,
    *,
    clip_norm: float | None = None,
    schedule: str = "constant",
    total_steps: int | None = None,
    warmup_steps: int = 0,
    momentum: float | None = None,
    weight_decay: float | None = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``clip_by_global_norm(clip_norm)`` (if given) chained with the named optimizer.

    Returns ``(optimizer, schedule)``; the schedule maps a step to its learning rate.
    Pascanu et al. (2013) clip: if ``||g|| > clip_norm``, ``g <- clip_norm g / ||g||``.
    ``momentum`` (``"momentum"`` only; default 0.9, in ``[0, 1)``) and ``weight_decay``
    (``"adamw"`` only; default 1e-4, ``>= 0``) given to another optimizer are errors.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}; got {name!r}.")
    for option, value, owner in (
        ("momentum", momentum, "momentum"),
        ("weight_decay", weight_decay, "adamw"),
    ):
        if value is not None and name != owner:
            raise ValueError(
                f"{option} applies to optimizer {owner!r} only; got {option}={value!r} "
                f"with {name!r}, which would ignore it."
            )
    momentum = 0.9 if momentum is None else momentum
    weight_decay = 1e-4 if weight_decay is None else weight_decay
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must lie in [0, 1); got {momentum!r}.")
    if not 0.0 <= weight_decay < math.inf:
        raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay!r}.")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0 or None (no clipping); got {clip_norm!r}.")
    lr = make_schedule(
        name=schedule,
        learning_rate=learning_rate,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
    )
    base = {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=momentum),
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr, weight_decay=weight_decay),
        "rmsprop": lambda: optax.rmsprop(lr),
        "adagrad": lambda: optax.adagrad(lr),
    }[name]()
    parts = ([optax.clip_by_global_norm(clip_norm)] if clip_norm is not None else []) + [base]
    return optax.chain(*parts), lr


def init_state(params: PyTree, optimizer: optax.GradientTransformation, key: Array) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        key=jax.random.key_data(key),
    )


def state_key(state: TrainState) -> Array:
    return jax.random.wrap_key_data(state.key)


def make_train_step(
    loss_fn: Callable[..., tuple[Array, dict]],
    optimizer: optax.GradientTransformation,
    *,
    clip_norm: float | None = None,
    schedule: optax.Schedule | None = None,
) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
    """A pure train step (not yet jitted; jit or vmap it).

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> (loss, aux)``; ``key`` is this step's
        randomness (dropout), ``fold_in(state.key, state.step)``; ``aux`` a dict of
        scalars to report.
      optimizer: from :func:`make_optimizer` (the clipping lives in it).
      clip_norm: the optimizer's threshold, to report whether this step clipped.
      schedule: to report the learning rate of this step.

    Returns:
      ``step(state, batch) -> (state, metrics)``; metrics: ``loss``, ``grad_norm`` (the
      global norm *before* clipping), ``clipped`` (``grad_norm > clip_norm``), ``lr``
      and ``aux``.
    """

    def step(state: TrainState, batch) -> tuple[TrainState, dict]:
        # The batch is whatever loss_fn takes (time-major inputs with [B] lengths, a
        # scalar option): its arrays' shapes are loss_fn's to check.
        key = jax.random.fold_in(state_key(state), state.step)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
        chex.assert_shape(loss, ())
        chex.assert_trees_all_equal_shapes(grads, state.params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "clipped": grad_norm > clip_norm if clip_norm is not None else jnp.array(False),
            "lr": schedule(state.step) if schedule is not None else jnp.array(jnp.nan),
            **aux,
        }
        return TrainState(state.step + 1, params, opt_state, state.key), metrics

    return step


def vmap_seeds(fn: Callable) -> Callable:
    """Map a ``(state, batch)`` step over a leading seed axis of both."""
    return jax.vmap(fn)


@contextlib.contextmanager
def _catch_signals(enabled: bool):
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps."""
    caught: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def current_step(state: TrainState) -> int:
    steps = to_host(state.step).reshape(-1)
    if steps.size and not np.all(steps == steps[0]):
        raise ValueError(f"seeds of state are at different steps: {steps.tolist()}")
    return int(steps[0])


def fit(
    state: TrainState,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict]],
    batch_fn: Callable[[int], Any],
    *,
    num_steps: int,
    checkpointer: Checkpointer | None = None,
    save_every: int = 0,
    on_step: Callable[[int, dict, TrainState], None] | None = None,
    progress: bool = True,
    desc: str = "train",
    handle_signals: bool = True,
    max_grad_norm: float | None = None,
) -> TrainState:
    """Train from ``state.step`` up to ``num_steps`` updates.

    Args:
      state: where to start (fresh, or restored from a checkpoint).
      train_step: jitted ``(state, batch) -> (state, metrics)``.
      batch_fn: ``batch_fn(step) -> batch``; must depend on ``step`` alone for resumes
        to be exact.
      num_steps: total number of updates of the run.
      checkpointer: saves every ``save_every`` updates (0: only at the end) and at the end.
      on_step: called after every update with ``(step, metrics, state)``, ``metrics`` on
        the host as NumPy; ``step`` counts updates applied.
      progress: show a tqdm bar with loss and speed.
      handle_signals: on SIGINT/SIGTERM, finish the update in flight, checkpoint it and
        raise :class:`TrainingInterrupted`.
      max_grad_norm: a ceiling on ``metrics["grad_norm"]`` (the norm before clipping):
        an update whose norm passes it (any seed's, in a vmapped run) stops the run as a
        non-finite one does. None: no ceiling.

    Raises:
      NonFiniteError: the loss or gradient norm of an update was NaN or inf; that update
        is discarded and nothing is saved, so the last good checkpoint stays the latest.
      GradientCeilingError: (a ``NonFiniteError``) the gradient norm passed
        ``max_grad_norm``; the same: the update is discarded, nothing saved.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 0:
        raise ValueError(f"num_steps must be an int >= 0; got {num_steps!r}.")
    num_steps = int(num_steps)
    if max_grad_norm is not None and (
        isinstance(max_grad_norm, bool)
        or not isinstance(max_grad_norm, numbers.Real)
        or not math.isfinite(max_grad_norm)
        or max_grad_norm <= 0
    ):
        raise ValueError(
            f"max_grad_norm must be a finite number > 0 or None; got {max_grad_norm!r}."
        )
    start = current_step(state)
    if start > num_steps:
        raise ValueError(
            f"num_steps ({num_steps}) is the run's total number of updates, and the state "
            f"has already made {start}: nothing to train (a smaller total cannot be "
            "reached by training)."
        )
    # Steps this call saved. A step already in the directory from before (one that was
    # unreadable, so the run resumed from an earlier one) is saved again, replacing it.
    saved: set[int] = set()
    bar = _progress(progress, start, num_steps, desc)
    t_last, last_step = time.perf_counter(), start
    with _catch_signals(handle_signals) as caught:
        for step in range(start, num_steps):
            new_state, metrics = train_step(state, batch_fn(step))
            metrics = to_host(metrics)  # gathered from every process holding a part
            try:
                chex.assert_tree_all_finite(
                    {"loss": metrics["loss"], "grad_norm": metrics["grad_norm"]}
                )
            except AssertionError:
                raise NonFiniteError(
                    f"non-finite loss or gradient at update {step + 1} (from state at step "
                    f"{step}){_which_seeds(metrics)}: loss={metrics['loss']}, "
                    f"grad_norm={metrics['grad_norm']}. The update was discarded (for every "
                    "seed of a vmapped run); the last checkpoint is untouched.",
                    step,
                ) from None
            if max_grad_norm is not None:
                over = np.asarray(metrics["grad_norm"]) > max_grad_norm
                if np.any(over):
                    raise GradientCeilingError(
                        f"gradient norm {metrics['grad_norm']} passed max_grad_norm="
                        f"{max_grad_norm} at update {step + 1} (from state at step {step})"
                        f"{_which_seeds(metrics, over)}: the run is diverging. The update was "
                        "discarded; the last checkpoint is untouched.",
                        step,
                    )
            state = new_state
            done = step + 1
            if on_step is not None:
                on_step(done, metrics, state)
            if bar is not None:
                now = time.perf_counter()
                if now - t_last > 0.5 or done == num_steps:
                    rate = (done - last_step) / max(now - t_last, 1e-9)
                    bar.set_postfix(loss=f"{np.mean(metrics['loss']):.4g}", it_s=f"{rate:.1f}")
                    t_last, last_step = now, done
                bar.update(1)
            if checkpointer is not None and save_every and done % save_every == 0:
                checkpointer.save(done, state)
                saved.add(done)
            if _any_process(bool(caught)):
                if checkpointer is not None and done not in saved:
                    checkpointer.save(done, state)
                if bar is not None:
                    bar.close()
                raise TrainingInterrupted(done, caught[0] if caught else None)
        # The final save under the same signal handling: a signal that arrives during
        # it lets it finish, then stops the run as one between updates does.
        if checkpointer is not None and num_steps > start and num_steps not in saved:
            checkpointer.save(num_steps, state)
        if bar is not None:
            bar.close()
        if _any_process(bool(caught)):
            raise TrainingInterrupted(num_steps, caught[0] if caught else None)
    return state


def _which_seeds(metrics: dict, bad=None) -> str:
    """`` in seeds [i, ...] (of n)`` where the loss is one per seed (vmap_seeds): the
    seeds ``bad`` marks, by default those with a non-finite loss or gradient norm."""
    if bad is None:
        bad = ~(
            np.isfinite(np.asarray(metrics["loss"])) & np.isfinite(np.asarray(metrics["grad_norm"]))
        )
    if bad.ndim != 1:
        return ""
    return f" in seeds {np.flatnonzero(bad).tolist()} (of {bad.size}, counted from 0)"


def _any_process(flag: bool) -> bool:
    """``flag`` of any process (one process: ``flag``). A signal reaches the processes of
    a run at different updates; agreeing every update makes them all stop, and save,
    at the same one instead of waiting on each other in a collective."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def _progress(enabled: bool, start: int, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=start,
        desc=desc,
        dynamic_ncols=True,
        leave=True,
        smoothing=0.1,
        mininterval=0.5,
    )
