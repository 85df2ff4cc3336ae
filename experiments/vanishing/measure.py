"""The study's measurements of one cell: gradient flow from one backward pass, the
Jacobian spectra, gate statistics and training on the adding problem, and the variants
of a cell's initial params (recurrent scale, forget bias) they are taken at."""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from rnnjax import diagnostics as dg
from rnnjax import train as tr
from rnnjax.modules import SequenceModel
from rnnjax.tasks import make_task

from .config import FORGET_CELL, Config, get_cell


def make_model(cell, regularizer=None) -> SequenceModel:
    layer = rnnjax.recurrent(cell, regularizer=regularizer)
    return SequenceModel(rnnjax.stack([layer]), num_outputs=1, head="last")


def variant(
    params,
    cell: rnnjax.Cell,
    *,
    scale: float | None = None,
    forget: str = "1",
    max_timescale: int = 100,
    key=None,
):
    """Initial params of a variant of ``cell`` (the model's params, seeds leading): the
    recurrence scaled by ``g`` as the cell declares (``cell.recurrent_scale``;
    ``W_h <- g W_h`` for the classic cells); the LSTM's forget-gate bias set to 0, 1
    or chrono (Tallec & Ollivier 2018)."""
    cell_params = params["rnn"]["layer"][0]
    if scale is not None:
        if cell.recurrent_scale is None:
            raise ValueError(
                f"the {cell.name} cell declares no recurrent scale (cell.recurrent_scale)."
            )
        cell_params = cell.recurrent_scale(cell_params, scale)
    if cell.name == FORGET_CELL and forget != "1":
        H = cell.hidden_size
        seeds = cell_params.b.shape[:-1]
        if forget == "0":
            b = cell_params.b.at[..., H : 2 * H].set(0.0)
        else:
            init = rnnjax.chrono_bias_init(max_timescale)
            keys = jax.random.split(jax.random.key(0) if key is None else key, int(np.prod(seeds)))
            b = jax.vmap(lambda k: init(k, (4 * H,)))(keys).reshape(cell_params.b.shape)
        cell_params = cell_params._replace(b=b)
    return {**params, "rnn": {"layer": (cell_params,)}}


def init_params(model, task, keys):
    example = task.sample(jax.random.key(0), 2)
    return jax.vmap(lambda k: model.init(k, example.inputs, example.lengths)["params"])(keys)


def adding_loss_on_state(cell, readout_params, targets):
    """The adding loss as a function of (ys, final_carry) for the diagnostics; the
    readout reads the output the final carry stands for (``cell.output``)."""

    def loss(ys, final):
        pred = rnnjax.readout(readout_params, cell.output(final))
        return jnp.mean((pred - targets) ** 2)

    return loss


TINY = float(np.finfo(np.float64).tiny)  # an exactly zero norm (dead relu units) counts as this


@functools.cache
def _grad_flow_fn(cell):
    """jit(vmap over seeds) of: per-step ||dL/dh_t|| (batch-mean of logs) and its decay."""

    def one(params, batch):
        cell_params = params["rnn"]["layer"][0]
        loss_fn = adding_loss_on_state(cell, params["head"]["readout"], batch.targets)
        _, grads = dg.hidden_grads(cell, cell_params, batch.inputs, loss_fn)
        norms = dg.grad_norms(grads)  # the carry's structure, [T, B] per field
        h_norms = cell.output(norms)  # the output's (h) field of the carry
        c_norms = norms.c if isinstance(norms, rnnjax.LSTMCarry) else h_norms  # the cell state
        log_h = jnp.log(jnp.maximum(h_norms, TINY)).mean(1)
        log_c = jnp.log(jnp.maximum(c_norms, TINY)).mean(1)
        slope, factor = dg.decay_rate(h_norms)
        # Theory (tanh RNN): J_t = diag(1 - h_t^2) W_h^T, so a random direction shrinks
        # by about g * rms(1 - h_t^2) per step.
        _, hs = rnnjax.scan(cell, cell_params, batch.inputs)
        tanh_prime_rms = jnp.sqrt(jnp.mean((1 - hs**2) ** 2, axis=(0, 2)))  # [T]
        return {
            "log_norm": log_h,
            "log_norm_c": log_c,
            "slope": slope,
            "factor": factor,
            "log_tanh_prime_rms": jnp.mean(jnp.log(jnp.maximum(tanh_prime_rms[1:], TINY))),
        }

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def to_f64(tree):
    return jax.tree.map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def grad_flow(cell, params, batch) -> dict[str, np.ndarray]:
    """Measured in float64: in float32 a gradient that shrinks by 0.78 per step underflows
    (below 1e-38) after about 350 steps, which would floor every long-T number."""
    with jax.enable_x64(True):
        out = _grad_flow_fn(cell)(to_f64(params), to_f64(batch))
        out = {k: np.asarray(v) for k, v in out.items()}
    out["log10_ratio"] = (out["log_norm"][:, 0] - out["log_norm"][:, -1]) / math.log(10)
    # dL/dc_T is zero (the loss reads h_T, which c_T's perturbation no longer reaches), so
    # the cell state's ratio is taken against the step before the last.
    out["log10_ratio_c"] = (out["log_norm_c"][:, 0] - out["log_norm_c"][:, -2]) / math.log(10)
    return out


def jacobian_method(cfg: Config) -> str:
    """Exact Jacobian products up to H = 256, matrix-free (power iteration) above."""
    return "exact" if cfg.hidden_size <= 256 else "matrix_free"


def jacobians(cell, params, x, method: str) -> dict[str, np.ndarray]:
    """Singular values of ``dh_T/dh_t`` against the distance, and each step's Jacobian
    spectral norm, for one sequence ``x [T, I]``; in float64, so singular values far
    below 1e-38 stay resolved."""
    with jax.enable_x64(True):
        p64, x64 = to_f64(params), to_f64(x)
        jac = jax.jit(lambda p, x: dg.jacobian_products(cell, p, x, method=method))(p64, x64)
        steps = jax.jit(lambda p, x: dg.step_jacobians(cell, p, x)["spectral_norm"])(p64, x64)
        out = {k: np.asarray(v) for k, v in jac.items()}
        out["step_spectral_norm"] = np.asarray(steps)
    return out


def gate_means(cell, params, inputs) -> dict[str, float]:
    """Each declared gate's mean activation over steps, examples and units
    (:func:`rnnjax.diagnostics.gate_stats`; the cell must declare ``gates``)."""
    stats = dg.gate_stats(cell, params, inputs)
    return {k: float(np.mean(v)) for k, v in stats.items()}


# --------------------------------------------------------------------------- training


@functools.cache
def seed_batches(T: int, batch_size: int):
    """jit of ``(data_keys, step) -> one adding-problem batch per seed``: one compiled
    sampler per length and batch size, shared by every cell trained there (compiling
    the vmapped sampler took 1.5 s, a tenth of a short training unit, per cell)."""
    task = make_task("adding", seq_len=T, eval_size=1)

    @jax.jit
    def batch_fn(data_keys, s):
        return jax.vmap(lambda k: task.sample(jax.random.fold_in(k, s), batch_size))(data_keys)

    return batch_fn


@functools.cache
def trainer(
    cell: rnnjax.Cell,
    T: int,
    clip: float | None,
    learning_rate: float,
    batch_size: int,
    eval_size: int,
    regularizer=None,
):
    """Compiled pieces for training one cell at one length, shared by every variant.
    With a ``regularizer`` the training loss draws its masks from the step's key; the
    evaluation is deterministic."""
    model = make_model(cell, regularizer)
    task = make_task("adding", seq_len=T, eval_size=eval_size)
    optimizer, schedule = tr.make_optimizer("adam", learning_rate, clip_norm=clip)

    def loss_fn(p, batch, key):
        out = model.apply(
            {"params": p},
            batch.inputs,
            batch.lengths,
            deterministic=regularizer is None,
            rngs={"dropout": key},
        )
        return task.loss(out, batch), {}

    step = jax.jit(
        tr.vmap_seeds(tr.make_train_step(loss_fn, optimizer, clip_norm=clip, schedule=schedule))
    )
    init_state = jax.jit(jax.vmap(lambda p, k: tr.init_state(p, optimizer, k)))

    batch_fn = seed_batches(T, batch_size)
    eval_batch = task.eval_set()
    evaluate = jax.jit(
        jax.vmap(
            lambda p: task.loss(
                model.apply({"params": p}, eval_batch.inputs, eval_batch.lengths), eval_batch
            )
        )
    )
    return model, task, step, init_state, batch_fn, evaluate


TB_EVALS = 10  # gradient-flow measurements per training run logged to TensorBoard


def _board(cfg: Config, log_name: str | None, seeds):
    if not (cfg.tensorboard and log_name):
        return None
    from pathlib import Path

    from common import TensorBoard

    return TensorBoard(Path(cfg.out) / "tensorboard" / log_name, seeds, 0)


def train_cell(
    name,
    T,
    cfg: Config,
    seeds: np.ndarray,
    *,
    steps: int,
    clip: float | None,
    scale: float | None = None,
    forget: str = "1",
    regularizer=None,
    log_name: str | None = None,
):
    """Train the catalogue cell ``name`` (a variant of its initial params) on the adding
    problem of length ``T``, every seed at once; a non-finite loss ends the run with
    its status, not an error.

    With ``cfg.tensorboard``, the run is logged under ``<cfg.out>/tensorboard/<log_name>``
    (one folder per seed): loss, gradient norm and clipped at every update, and the
    per-step decay factor of ``||dL/dh_t||`` (:func:`grad_flow` on a fixed batch) at
    :data:`TB_EVALS` evaluations spread over the run. Logging reads the state and
    changes no number."""
    cell = get_cell(name, cfg.hidden_size)
    model, task, step, init_state, batch_fn, evaluate = trainer(
        cell, T, clip, cfg.learning_rate, cfg.train_batch, cfg.eval_size, regularizer
    )
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(1), s))(jnp.asarray(seeds))
    init_keys, data_keys, train_keys = jax.vmap(lambda k: jax.random.split(k, 3), out_axes=1)(keys)
    params = variant(
        init_params(model, task, init_keys), cell, scale=scale, forget=forget, max_timescale=T
    )
    state = init_state(params, train_keys)
    history = {"grad_norm": [], "clipped": [], "loss": []}
    board = _board(cfg, log_name, seeds)
    every = max(1, steps // TB_EVALS)
    flow_batch = task.sample(jax.random.key(20_000 + T), cfg.batch_size) if board else None

    def on_step(done, metrics, state):
        for k in history:
            history[k].append(np.asarray(metrics[k]))
        if board is None:
            return
        board.log(
            "metrics", {"step": done, **{k: np.asarray(metrics[k]).tolist() for k in history}}
        )
        if done % every == 0 or done == steps:
            factor = grad_flow(cell, state.params, flow_batch)["factor"]
            board.log("eval", {"step": done, "grad_decay": factor.tolist()})

    t0 = time.perf_counter()
    status = "done"
    try:
        state = tr.fit(
            state,
            step,
            functools.partial(batch_fn, data_keys),
            num_steps=steps,
            on_step=on_step,
            progress=False,
            handle_signals=False,
        )
    except tr.NonFiniteError as err:
        status = f"nonfinite at update {err.step + 1}"
    wall = time.perf_counter() - t0
    if board is not None:
        board.close()
    hist = {k: np.stack(v) if v else np.zeros((0, len(seeds))) for k, v in history.items()}
    return {
        "params": state.params,
        "mse": np.asarray(evaluate(state.params)),
        "history": hist,
        "wall_s": wall,
        "status": status,
        "cell": cell,
    }


def clip_fraction(history, threshold, num_seeds):
    norms = history["grad_norm"]
    return (norms > threshold).mean(0) if len(norms) else np.zeros(num_seeds)
