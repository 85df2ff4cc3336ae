"""The vanishing-gradient laboratory: how gradients flow back through time in each cell.

    python experiments/vanishing_gradients.py            # ~5 min on a 2-core CPU
    python experiments/vanishing_gradients.py --full     # paper-size, for an accelerator

Compares every cell of the catalogue (``rnnjax.cells.names()``) on the adding problem (REFERENCE.md 2, 4):

1. at initialisation, over sequence lengths and seeds: ``||dL/dh_t||`` against the
   distance ``T - t`` (one backward pass), its per-step decay factor, the ratio
   ``||dL/dh_1|| / ||dL/dh_T||``, and the theory's prediction for the tanh RNN;
2. the singular values of ``dh_T/dh_t`` against the distance;
3. a sweep of the recurrent scale ``g`` (``W_h = g x orthogonal``);
4. the LSTM forget-bias ablation (0, 1, chrono);
5. gradient clipping on / off where gradients explode (g > 1) and vanish (g < 1);
6. training on the adding problem per cell and length: the outcome, and the gradient
   flow after training.

Writes ``<out>/``: ``report.md``, PNG figures, ``summary.json``, ``config.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pickle
import sys
import time
from pathlib import Path

import common
import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from rnnjax import diagnostics as dg
from rnnjax import train as tr
from rnnjax.modules import SequenceModel
from rnnjax.tasks import make_task


@dataclasses.dataclass
class Config:
    cells: tuple = tuple(rnnjax.cells.names())  # every cell in the catalogue
    hidden_size: int = 64
    lengths: tuple = (50, 100, 200, 400)  # gradient flow at initialisation
    seeds: int = 3
    batch_size: int = 32  # examples per gradient measurement
    scales: tuple = (0.5, 0.9, 1.0, 1.1, 1.5)  # W_h = g x orthogonal
    sweep_len: int = 100  # T of the scale sweep, the Jacobians and the clipping study
    forget_biases: tuple = ("0", "1", "chrono")
    train_lengths: tuple = (50, 100)
    train_steps: int = 800
    train_batch: int = 32
    learning_rate: float = 2e-3
    forget_train: bool = False  # also train each forget-bias variant (on in --full)
    clip_norm: float = 1.0
    clip_steps: int = 200
    clip_scales: tuple = (0.5, 1.5)
    eval_size: int = 500
    full: bool = False
    out: str = "runs/vanishing_gradients"
    progress: bool = True
    # Continue a study that stopped: every measurement already in <out>/units is read
    # back instead of recomputed (each is a function of the config alone).
    resume: bool = False

    def validate(self) -> None:
        unknown = set(self.cells) - set(rnnjax.cells.names())
        if unknown or not self.cells:
            raise ValueError(
                f"--cells must be names from {list(rnnjax.cells.names())}; got {list(self.cells)}."
            )
        bad = [f for f in self.forget_biases if f not in ("0", "1", "chrono")]
        if bad:
            raise ValueError(f"--forget_biases must be from 0, 1, chrono; got {bad}.")
        for name in ("hidden_size", "seeds", "batch_size", "train_batch", "eval_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1; got {getattr(self, name)}.")
        if self.sweep_len < 2:  # the adding problem needs a marker in each half
            raise ValueError(f"--sweep_len must be >= 2; got {self.sweep_len}.")
        for name in ("lengths", "train_lengths", "scales", "clip_scales", "forget_biases"):
            if not getattr(self, name):
                raise ValueError(f"--{name} must name at least one value; got none.")
        for name in ("lengths", "train_lengths"):
            if any(t < 2 for t in getattr(self, name)):
                raise ValueError(f"--{name} must all be >= 2; got {list(getattr(self, name))}.")
        if any(g <= 0 for g in self.scales) or any(g <= 0 for g in self.clip_scales):
            raise ValueError("--scales and --clip_scales must be > 0.")
        if self.train_steps < 0 or self.clip_steps < 0:
            raise ValueError("--train_steps and --clip_steps must be >= 0.")
        for name in ("learning_rate", "clip_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0; got {getattr(self, name)}.")

    def check_given(self, given: set[str]) -> None:
        """Options given for a section that the chosen cells skip are errors, not
        silently recorded: the forget-bias ablation needs the LSTM, the clipping study
        an ungated cell (rnn_tanh / rnn_relu)."""
        if "lstm" not in self.cells:
            named = sorted(given & {"forget_biases", "forget_train"})
            if named:
                raise ValueError(
                    f"--{', --'.join(named)}: the forget-bias ablation needs lstm in --cells; "
                    f"got {list(self.cells)}."
                )
        if all(rnnjax.make_cell(n, 1).gated for n in self.cells):
            named = sorted(given & {"clip_norm", "clip_steps", "clip_scales"})
            if named:
                raise ValueError(
                    f"--{', --'.join(named)}: the clipping study needs rnn_tanh or rnn_relu in "
                    f"--cells; got {list(self.cells)}."
                )


FULL = dict(
    hidden_size=128,
    lengths=(100, 200, 400, 800, 1000),
    seeds=5,
    batch_size=128,
    sweep_len=200,
    train_lengths=(100, 200, 400, 600),
    train_steps=10000,
    train_batch=64,
    learning_rate=1e-3,
    clip_steps=2000,
    eval_size=2000,
    forget_train=True,
)


# ---------------------------------------------------------------------------- cells
#
# Variants that differ only in initial *values* (the recurrent scale g, the forget bias)
# share one cell object and one compiled program: the variant is applied to the
# params after init. Compilation, not arithmetic, dominates a small study on a CPU.


@functools.cache
def get_cell(name: str, hidden_size: int):
    return rnnjax.make_cell(name, hidden_size)


def make_model(cell) -> SequenceModel:
    return SequenceModel(rnnjax.stack([rnnjax.recurrent(cell)]), num_outputs=1, head="last")


def variant(
    params,
    name: str,
    *,
    scale: float | None = None,
    forget: str = "1",
    max_timescale: int = 100,
    key=None,
):
    """Initial params of a variant: the recurrence scaled by ``g`` as the cell declares
    (``cell.recurrent_scale``; ``W_h <- g W_h`` for the classic cells); the LSTM's
    forget-gate bias set to 0, 1 or chrono (Tallec & Ollivier 2018)."""
    cell_params = params["rnn"]["layer"][0]
    if scale is not None:
        cell = get_cell(name, cell_params.w_h.shape[-2] if hasattr(cell_params, "w_h") else 1)
        if cell.recurrent_scale is None:
            raise ValueError(f"the {name} cell declares no recurrent scale (cell.recurrent_scale).")
        cell_params = cell.recurrent_scale(cell_params, scale)
    if name == "lstm" and forget != "1":
        H = cell_params.w_h.shape[-2]
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


def adding_loss_on_state(readout_params, targets):
    """The adding loss as a function of (ys, final_carry) for the diagnostics."""

    def loss(ys, final):
        pred = rnnjax.readout(readout_params, rnnjax.final_hidden(final))
        return jnp.mean((pred - targets) ** 2)

    return loss


TINY = float(np.finfo(np.float64).tiny)  # an exactly zero norm (dead relu units) counts as this


@functools.cache
def _grad_flow_fn(cell):
    """jit(vmap over seeds) of: per-step ||dL/dh_t|| (batch-mean of logs) and its decay."""

    def one(params, batch):
        cell_params = params["rnn"]["layer"][0]
        loss_fn = adding_loss_on_state(params["head"]["readout"], batch.targets)
        _, grads = dg.hidden_grads(cell, cell_params, batch.inputs, loss_fn)
        norms = dg.grad_norms(grads)
        h_norms = norms.h if isinstance(norms, rnnjax.LSTMCarry) else norms  # [T, B]
        c_norms = norms.c if isinstance(norms, rnnjax.LSTMCarry) else norms  # the cell state
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


# --------------------------------------------------------------------------- training


@functools.cache
def trainer(
    name: str,
    hidden_size: int,
    T: int,
    clip: float | None,
    learning_rate: float,
    batch_size: int,
    eval_size: int,
):
    """Compiled pieces for training one cell at one length, shared by every variant."""
    cell = get_cell(name, hidden_size)
    model = make_model(cell)
    task = make_task("adding", seq_len=T, eval_size=eval_size)
    optimizer, schedule = tr.make_optimizer("adam", learning_rate, clip_norm=clip)

    def loss_fn(p, batch, key):
        return task.loss(model.apply({"params": p}, batch.inputs, batch.lengths), batch), {}

    step = jax.jit(
        tr.vmap_seeds(tr.make_train_step(loss_fn, optimizer, clip_norm=clip, schedule=schedule))
    )
    init_state = jax.jit(jax.vmap(lambda p, k: tr.init_state(p, optimizer, k)))

    @jax.jit
    def batch_fn(data_keys, s):
        return jax.vmap(lambda k: task.sample(jax.random.fold_in(k, s), batch_size))(data_keys)

    eval_batch = task.eval_set()
    evaluate = jax.jit(
        jax.vmap(
            lambda p: task.loss(
                model.apply({"params": p}, eval_batch.inputs, eval_batch.lengths), eval_batch
            )
        )
    )
    return cell, model, task, step, init_state, batch_fn, evaluate


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
):
    cell, model, task, step, init_state, batch_fn, evaluate = trainer(
        name, cfg.hidden_size, T, clip, cfg.learning_rate, cfg.train_batch, cfg.eval_size
    )
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(1), s))(jnp.asarray(seeds))
    init_keys, data_keys, train_keys = jax.vmap(lambda k: jax.random.split(k, 3), out_axes=1)(keys)
    params = variant(
        init_params(model, task, init_keys), name, scale=scale, forget=forget, max_timescale=T
    )
    state = init_state(params, train_keys)
    history = {"grad_norm": [], "clipped": [], "loss": []}

    def on_step(done, metrics, _):
        for k in history:
            history[k].append(np.asarray(metrics[k]))

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
    hist = {k: np.stack(v) if v else np.zeros((0, len(seeds))) for k, v in history.items()}
    return {
        "params": state.params,
        "mse": np.asarray(evaluate(state.params)),
        "history": hist,
        "wall_s": wall,
        "status": status,
        "cell": cell,
    }


# ---------------------------------------------------------------------------- study


class Units:
    """Each finished measurement of the study saved under ``<out>/units`` (a pickle
    written atomically), so a stopped study resumes where it stopped. Every unit is a
    function of the config alone (its keys are fixed), so a resumed study's numbers are
    an uninterrupted one's."""

    def __init__(self, folder: Path | None, resume: bool):
        self.folder, self.resume, self.reused = folder, resume, 0
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, key: str, compute):
        path = None if self.folder is None else self.folder / f"{key}.pkl"
        if path is not None and self.resume and path.exists():
            self.reused += 1
            return pickle.loads(path.read_bytes())
        value = compute()
        if path is not None:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(value))
            os.replace(tmp, path)
        return value


def run(cfg: Config, units: Units | None = None) -> dict:
    units = units or Units(None, False)
    seeds = np.arange(cfg.seeds)
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(0), s))(jnp.asarray(seeds))
    results: dict = {
        "init": {},
        "sweep": {},
        "forget": {},
        "clip": {},
        "train": {},
        "jacobian": {},
        "gates": {},
    }
    jobs = (
        len(cfg.cells) * (len(cfg.lengths) + len(cfg.scales) + 1 + len(cfg.train_lengths))
        + ("lstm" in cfg.cells) * len(cfg.forget_biases) * (len(cfg.lengths) + cfg.forget_train)
        + len(cfg.clip_scales) * 2 * len(clip_cells(cfg))
    )
    bar = _bar(cfg.progress, jobs)

    clock = {"last": time.perf_counter()}
    results["timing"] = {}

    def tick(desc):
        now = time.perf_counter()
        phase = desc.split(" ")[0]
        results["timing"][phase] = results["timing"].get(phase, 0.0) + now - clock["last"]
        clock["last"] = now
        if bar is not None:
            bar.set_description(desc)
            bar.update(1)

    # 1. Gradient flow at initialisation, per cell and length.
    for name in cfg.cells:
        cell = get_cell(name, cfg.hidden_size)
        for T in cfg.lengths:

            def measure(cell=cell, T=T):
                task = make_task("adding", seq_len=T)
                params = init_params(make_model(cell), task, seed_keys)
                batch = task.sample(jax.random.key(10_000 + T), cfg.batch_size)
                return grad_flow(cell, params, batch)

            results["init"][(name, T)] = units(f"init-{name}-T{T}", measure)
            tick(f"init {name} T={T}")

    # 2. Singular values of dh_T/dh_t at T = sweep_len (seed 0, one example).
    task = make_task("adding", seq_len=cfg.sweep_len)
    x0 = task.sample(jax.random.key(7), 1).inputs[0]
    for name in cfg.cells:
        cell = get_cell(name, cfg.hidden_size)

        def spectra(cell=cell):
            params = init_params(make_model(cell), task, seed_keys[:1])
            p0 = jax.tree.map(lambda a: a[0], params)["rnn"]["layer"][0]
            method = jacobian_method(cfg)
            with jax.enable_x64(True):  # float64: singular values far below 1e-38 stay resolved
                p64, x64 = to_f64(p0), to_f64(x0)
                jac = jax.jit(
                    lambda p, x, c=cell, m=method: dg.jacobian_products(c, p, x, method=m)
                )(p64, x64)
                steps_j = jax.jit(lambda p, x, c=cell: dg.step_jacobians(c, p, x)["spectral_norm"])(
                    p64, x64
                )
                jacobian = {k: np.asarray(v) for k, v in jac.items()}
                jacobian["step_spectral_norm"] = np.asarray(steps_j)
            gates = None
            if cell.gates is not None:
                inputs = task.sample(jax.random.key(8), cfg.batch_size).inputs
                stats = dg.gate_stats(cell, p0, inputs)
                gates = {k: float(np.mean(v)) for k, v in stats.items()}
            return jacobian, gates

        results["jacobian"][name], gates = units(f"jacobians-{name}", spectra)
        if gates is not None:
            results["gates"][name] = gates
        tick(f"jacobians {name}")

    # 3. Recurrent-scale sweep at T = sweep_len.
    batch = task.sample(jax.random.key(11), cfg.batch_size)
    for name in cfg.cells:
        cell = get_cell(name, cfg.hidden_size)
        base = functools.cache(lambda cell=cell: init_params(make_model(cell), task, seed_keys))
        for g in cfg.scales:
            results["sweep"][(name, g)] = units(
                f"sweep-{name}-g{g}",
                lambda cell=cell, name=name, g=g, base=base: grad_flow(
                    cell, variant(base(), name, scale=g), batch
                ),
            )
            tick(f"sweep {name} g={g}")

    # 4. LSTM forget-bias ablation: gradient flow over lengths, and training at the
    #    longest training length.
    t_long = max(cfg.train_lengths)
    if "lstm" in cfg.cells:
        cell = get_cell("lstm", cfg.hidden_size)
        for forget in cfg.forget_biases:
            for T in cfg.lengths:

                def ablation(forget=forget, T=T):
                    task_t = make_task("adding", seq_len=T)
                    params = variant(
                        init_params(make_model(cell), task_t, seed_keys),
                        "lstm",
                        forget=forget,
                        max_timescale=T,
                    )
                    b = task_t.sample(jax.random.key(10_000 + T), cfg.batch_size)
                    return grad_flow(cell, params, b)

                results["forget"][(forget, T)] = units(f"forget-{forget}-T{T}", ablation)
                tick(f"forget bias {forget} T={T}")
            if cfg.forget_train:

                def trained_forget(forget=forget):
                    trained = train_cell(
                        "lstm",
                        t_long,
                        cfg,
                        seeds,
                        steps=cfg.train_steps,
                        clip=cfg.clip_norm,
                        forget=forget,
                    )
                    return {"mse": trained["mse"], "wall_s": trained["wall_s"]}

                results["forget"][(forget, "train")] = units(
                    f"forget-{forget}-train-T{t_long}", trained_forget
                )
                tick(f"forget bias {forget}: train T={t_long}")

    # 5. Clipping on / off where gradients vanish (g < 1) and explode (g > 1), for the
    #    ungated cells (the gates' saturation already bounds the gated ones).
    for name in clip_cells(cfg):
        for g in cfg.clip_scales:
            for clip in (cfg.clip_norm, None):

                def clipping(name=name, g=g, clip=clip):
                    trained = train_cell(
                        name, cfg.sweep_len, cfg, seeds, steps=cfg.clip_steps, clip=clip, scale=g
                    )
                    h = trained["history"]
                    return {
                        "mse": trained["mse"],
                        "status": trained["status"],
                        "grad_norm": h["grad_norm"],
                        "clip_fraction": clip_fraction(h, cfg.clip_norm, len(seeds)),
                    }

                on = "on" if clip else "off"
                results["clip"][(name, g, clip is not None)] = units(
                    f"clip-{name}-g{g}-{on}", clipping
                )
                tick(f"clip {name} g={g} {on}")

    # 6. Training outcome by cell and length, and gradient flow after training.
    for name in cfg.cells:
        for T in cfg.train_lengths:

            def outcome(name=name, T=T):
                trained = train_cell(name, T, cfg, seeds, steps=cfg.train_steps, clip=cfg.clip_norm)
                task_t = make_task("adding", seq_len=T)
                b = task_t.sample(jax.random.key(20_000 + T), cfg.batch_size)
                return {
                    "mse": trained["mse"],
                    "after": grad_flow(trained["cell"], trained["params"], b),
                    "wall_s": trained["wall_s"],
                    "status": trained["status"],
                    "clip_fraction": clip_fraction(trained["history"], cfg.clip_norm, len(seeds)),
                }

            results["train"][(name, T)] = units(f"train-{name}-T{T}", outcome)
            tick(f"train {name} T={T}")
    if bar is not None:
        bar.close()
    return results


def jacobian_method(cfg: Config) -> str:
    """Exact Jacobian products up to H = 256, matrix-free (power iteration) above."""
    return "exact" if cfg.hidden_size <= 256 else "matrix_free"


def clip_cells(cfg: Config) -> list[str]:
    return [n for n in cfg.cells if not get_cell(n, cfg.hidden_size).gated]


def clip_fraction(history, threshold, num_seeds):
    norms = history["grad_norm"]
    return (norms > threshold).mean(0) if len(norms) else np.zeros(num_seeds)


def _bar(enabled, total):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, dynamic_ncols=True)


# --------------------------------------------------------------------------- report


def ms(values, digits=3):
    return common.fmt_mean_std(common.mean_spread(values), digits)


def summarise(cfg: Config, results: dict) -> dict:
    s = {
        "init": {},
        "sweep": {},
        "forget": {},
        "clip": {},
        "train": {},
        "jacobian": {},
        "gates": results["gates"],
    }
    for (name, T), r in results["init"].items():
        s["init"][f"{name}/T{T}"] = {
            "factor": common.mean_spread(r["factor"]),
            "log10_ratio": common.mean_spread(r["log10_ratio"]),
            "log10_ratio_c": common.mean_spread(r["log10_ratio_c"]),
            "predicted_factor": common.mean_spread(np.exp(r["log_tanh_prime_rms"])),
        }
    for (name, g), r in results["sweep"].items():
        s["sweep"][f"{name}/g{g}"] = {
            "factor": common.mean_spread(r["factor"]),
            "log10_ratio": common.mean_spread(r["log10_ratio"]),
            "predicted_factor": common.mean_spread(g * np.exp(r["log_tanh_prime_rms"])),
        }
    for (forget, T), r in results["forget"].items():
        key = f"{forget}/{T}"
        if T == "train":
            s["forget"][key] = {"mse": common.mean_spread(r["mse"])}
        else:
            s["forget"][key] = {
                "factor": common.mean_spread(r["factor"]),
                "log10_ratio": common.mean_spread(r["log10_ratio"]),
            }
    for (name, g, on), r in results["clip"].items():
        norms = r["grad_norm"]
        s["clip"][f"{name}/g{g}/{'on' if on else 'off'}"] = {
            "mse": common.mean_spread(r["mse"]),
            "clip_fraction": common.mean_spread(r["clip_fraction"]),
            "max_grad_norm": float(np.max(norms)) if norms.size else float("nan"),
            "median_grad_norm": float(np.median(norms)) if norms.size else float("nan"),
            "status": r["status"],
        }
    for (name, T), r in results["train"].items():
        s["train"][f"{name}/T{T}"] = {
            "mse": common.mean_spread(r["mse"]),
            "mse_per_seed": r["mse"].tolist(),
            "log10_ratio_after": common.mean_spread(r["after"]["log10_ratio"]),
            "factor_after": common.mean_spread(r["after"]["factor"]),
            "clip_fraction": common.mean_spread(r["clip_fraction"]),
            "wall_s": r["wall_s"],
            "status": r["status"],
        }
    for name, r in results["jacobian"].items():
        s["jacobian"][name] = {k: np.asarray(v).tolist() for k, v in r.items()}
    return s


def write_report(
    cfg: Config, results: dict, summary: dict, out: Path, wall: float, env: dict
) -> str:
    cells, L = cfg.cells, cfg.lengths
    lines = [
        "# Vanishing gradients: the cells compared",
        "",
        f"Command: `{command_line(cfg)}`  ",
        f"Machine: {env['cpu']} ({env['cpu_count']} cores), backend `{env['backend']}` "
        f"({env['device_kind']}), jax {env['versions']['jax']}, commit `{str(env['git_commit'])[:10]}`; "
        f"wall time {wall / 60:.1f} min"
        + (
            f" (this process; {summary['units_resumed']} measurements read back from the run "
            "it resumed)"
            if summary.get("units_resumed")
            else ""
        )
        + ".  ",
        f"Task: the adding problem (REFERENCE.md 2). Hidden size {cfg.hidden_size}, {cfg.seeds} seeds "
        f"(mean ± sample std over seeds), {cfg.batch_size} sequences per gradient measurement. "
        "Recurrent weights orthogonal (gain 1) unless a scale g is named; LSTM forget bias 1 unless "
        "named. `||dL/dh_t||` comes from one backward pass through a zero perturbation of each "
        "step's state, computed in float64 (in float32 the long-T gradients underflow below "
        "1e-38); an exactly zero norm (dead relu units) is counted as 2.2e-308.",
        "",
        "## 1. Gradient flow at initialisation",
        "",
        "Per-step factor: exp of the least-squares slope of `ln ||dL/dh_t||` against the distance "
        "`T - t` (< 1 vanishing, > 1 exploding). log10 ratio: `log10(||dL/dh_1|| / ||dL/dh_T||)`, "
        "how many orders of magnitude the gradient loses from the last step back to the first.",
        "",
        "| cell | "
        + " | ".join(f"factor T={T}" for T in L)
        + " | "
        + " | ".join(f"log10 ratio T={T}" for T in L)
        + " |",
        "|---|" + "---|" * (2 * len(L)),
    ]
    for name in cells:
        f = [ms(results["init"][(name, T)]["factor"], 4) for T in L]
        r = [ms(results["init"][(name, T)]["log10_ratio"]) for T in L]
        lines.append(f"| {name} | " + " | ".join(f) + " | " + " | ".join(r) + " |")
    if "lstm" in cells:
        lines += [
            "",
            "LSTM cell state: log10 `||dL/dc_1|| / ||dL/dc_(T-1)||` (`dL/dc_T` is 0: the loss "
            "reads `h_T`) "
            + ", ".join(f"T={T}: {ms(results['init'][('lstm', T)]['log10_ratio_c'])}" for T in L)
            + ".",
        ]
    t_ref = cfg.sweep_len if cfg.sweep_len in L else L[len(L) // 2]
    if "rnn_tanh" in cells and ("rnn_tanh", t_ref) in results["init"]:
        r = results["init"][("rnn_tanh", t_ref)]
        lines += [
            "",
            f"Theory check (tanh RNN, T={t_ref}): the one-step Jacobian is "
            "`diag(1 - h_t^2) W_h^T`; with `W_h` orthogonal (g = 1) a random direction "
            "shrinks per step by about `g * rms(1 - h_t^2)` = "
            f"{ms(np.exp(r['log_tanh_prime_rms']), 4)} (geometric mean over t); measured "
            f"factor {ms(r['factor'], 4)}.",
        ]
    lines += [
        "",
        "![gradient norm against distance](grad_vs_distance.png)",
        "",
        "## 2. Singular values of dh_T/dh_t",
        "",
        f"One sequence of length {cfg.sweep_len}, seed 0. For the LSTM the Jacobian is taken with "
        "respect to the whole state (h, c). Step norm: the spectral norm of the one-step "
        "Jacobian `dh_t/dh_(t-1)`, averaged over t.",
        "",
        "| cell | sigma_max at distance 10 | at 50 | at T-1 | sigma_min at 10 | mean step norm |",
        "|---|---|---|---|---|---|",
    ]
    for name in cells:
        j = results["jacobian"][name]
        d = j["distance"]

        def at(k, key="sigma_max", j=j, d=d):
            idx = np.where(d == min(k, d.max()))[0][0]
            return f"{j[key][idx]:.3g}"

        lines.append(
            f"| {name} | {at(10)} | {at(50)} | {at(d.max())} | {at(10, 'sigma_min')} | "
            f"{np.mean(j['step_spectral_norm']):.3g} |"
        )
    if results["gates"]:
        lines += [
            "",
            "Mean gate activations at initialisation: "
            + "; ".join(
                f"{n}: " + ", ".join(f"{k} {v:.3f}" for k, v in g.items())
                for n, g in results["gates"].items()
            )
            + ".",
        ]
    lines += [
        "",
        "![singular values](singular_values.png)",
        "",
        f"## 3. Recurrent scale sweep (W_h = g x orthogonal, T={cfg.sweep_len})",
        "",
        "log10 ratio `||dL/dh_1|| / ||dL/dh_T||` (per-step factor in brackets).",
        "",
        "| cell | " + " | ".join(f"g={g}" for g in cfg.scales) + " |",
        "|---|" + "---|" * len(cfg.scales),
    ]
    for name in cells:
        row = [
            f"{ms(results['sweep'][(name, g)]['log10_ratio'])} ({np.mean(results['sweep'][(name, g)]['factor']):.3f})"
            for g in cfg.scales
        ]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    if "rnn_tanh" in cells:
        pred = [
            f"g={g}: {np.mean(g * np.exp(results['sweep'][('rnn_tanh', g)]['log_tanh_prime_rms'])):.3f}"
            for g in cfg.scales
        ]
        lines += [
            "",
            "tanh RNN, predicted per-step factor `g * rms(1 - h_t^2)`: " + ", ".join(pred) + ".",
        ]
    lines += [
        "",
        "![scale sweep](scale_sweep.png)",
        "",
        "## 4. LSTM forget-bias ablation",
        "",
        "| forget bias | "
        + " | ".join(f"log10 ratio T={T}" for T in L)
        + f" | test MSE after training, T={max(cfg.train_lengths)} |",
        "|---|" + "---|" * (len(L) + 1),
    ]
    if "lstm" not in cfg.cells:
        lines.append("| (not run: no lstm in --cells) |" + " |" * (len(L) + 1))
    for forget in cfg.forget_biases if "lstm" in cfg.cells else ():
        row = [ms(results["forget"][(forget, T)]["log10_ratio"]) for T in L]
        trained = results["forget"].get((forget, "train"))
        mse = ms(trained["mse"], 3) if trained else "not run (--forget_train)"
        lines.append(f"| {forget} | " + " | ".join(row) + f" | {mse} |")
    lines += [
        "",
        f"## 5. Gradient clipping (threshold {cfg.clip_norm}), T={cfg.sweep_len}, "
        f"{cfg.clip_steps} Adam steps",
        "",
        "| cell | g | clipping | fraction of steps over threshold | median grad norm | max grad norm | test MSE | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if not clip_cells(cfg):
        lines.append("| (not run: no rnn_tanh or rnn_relu in --cells) |" + " |" * 7)
    for name in clip_cells(cfg):
        for g in cfg.clip_scales:
            for on in (True, False):
                c = summary["clip"][f"{name}/g{g}/{'on' if on else 'off'}"]
                lines.append(
                    f"| {name} | {g} | {'on' if on else 'off'} | {ms(results['clip'][(name, g, on)]['clip_fraction'])} "
                    f"| {c['median_grad_norm']:.3g} | {c['max_grad_norm']:.3g} | {ms(results['clip'][(name, g, on)]['mse'])} | {c['status']} |"
                )
    lines += [
        "",
        "![clipping](clipping.png)" if clip_cells(cfg) else "",
        "",
        f"## 6. Training outcome ({cfg.train_steps} Adam steps, lr {cfg.learning_rate}, clip {cfg.clip_norm}, batch {cfg.train_batch})",
        "",
        "Test MSE on held-out sequences (baseline: always predicting 1 scores 0.167), and the "
        "gradient flow of the trained network (log10 ratio).",
        "",
        "| cell | "
        + " | ".join(f"MSE T={T}" for T in cfg.train_lengths)
        + " | "
        + " | ".join(f"log10 ratio after, T={T}" for T in cfg.train_lengths)
        + " |",
        "|---|" + "---|" * (2 * len(cfg.train_lengths)),
    ]
    for name in cells:
        m = [ms(results["train"][(name, T)]["mse"]) for T in cfg.train_lengths]
        a = [ms(results["train"][(name, T)]["after"]["log10_ratio"]) for T in cfg.train_lengths]
        lines.append(f"| {name} | " + " | ".join(m) + " | " + " | ".join(a) + " |")
    lines += ["", "![final loss](final_loss.png)", "", "## What the numbers show", ""]
    found = findings(cfg, results)
    lines += found
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    # The findings alone, for the README to embed (experiments/embed_results.py): the
    # run that made them first, then its sentences.
    made_by = (
        f"From `{command_line(cfg)}`: {wall / 60:.1f} min on {env['cpu']} "
        f"({env['cpu_count']} cores), backend `{env['backend']}`, jax "
        f"{env['versions']['jax']}, commit `{str(env['git_commit'])[:10]}`."
    )
    (out / "findings.md").write_text("\n".join([made_by, "", *found]) + "\n")
    return text


def findings(cfg: Config, results: dict) -> list[str]:
    """Sentences computed from the measurements: every number and every comparison in
    them comes from ``results`` (nothing here is typed in after looking at a run)."""
    out = []
    T_max = max(cfg.lengths)
    t_train = max(cfg.train_lengths)
    init, train = results["init"], results["train"]
    mean = lambda r, k: float(np.mean(r[k]))  # noqa: E731

    def trend(f):
        return "decays" if f < 1 else "grows"

    if "rnn_tanh" in cfg.cells:
        r = init[("rnn_tanh", T_max)]
        f, ratio = mean(r, "factor"), mean(r, "log10_ratio")
        out.append(
            f"- At initialisation the tanh RNN's gradient {trend(f)} geometrically, by a factor "
            f"{f:.3f} per step: over T={T_max} steps `||dL/dh_1||` is {abs(ratio):.1f} orders of "
            f"magnitude {'below' if ratio < 0 else 'above'} `||dL/dh_T||`."
        )
        meas = [mean(results["sweep"][("rnn_tanh", g)], "factor") for g in cfg.scales]
        pred = [
            float(np.mean(g * np.exp(results["sweep"][("rnn_tanh", g)]["log_tanh_prime_rms"])))
            for g in cfg.scales
        ]
        worst = max(abs(m - p) / p for m, p in zip(meas, pred))
        out.append(
            "- The rate is set by the recurrent scale and the tanh derivative: for g = "
            f"{', '.join(map(str, cfg.scales))} the measured per-step factor is "
            f"{', '.join(f'{m:.3f}' for m in meas)}; the prediction `g * rms(1 - h_t^2)` is "
            f"{', '.join(f'{p:.3f}' for p in pred)} (largest relative gap {worst:.1%})."
        )
    base = "rnn_tanh" if "rnn_tanh" in cfg.cells else None
    for name in cfg.cells:
        if name == base:
            continue
        r0 = mean(init[(name, T_max)], "log10_ratio")
        a = mean(train[(name, t_train)]["after"], "log10_ratio")
        text = (
            f"- {name}: over T={T_max} at initialisation the gradient changes by "
            f"{r0:+.1f} orders of magnitude (factor {mean(init[(name, T_max)], 'factor'):.3f} per step)"
        )
        if base is not None:
            rb = mean(init[(base, T_max)], "log10_ratio")
            ab = mean(train[(base, t_train)]["after"], "log10_ratio")
            text += (
                f", against {rb:+.1f} for the tanh RNN; after training at T={t_train} it changes by "
                f"{a:+.1f} from the last step to the first, against {ab:+.1f} for the tanh RNN "
                f"({'more' if a > ab else 'less'} gradient reaches the first step)."
            )
        else:
            text += f"; after training at T={t_train}: {a:+.1f}."
        out.append(text)
    if "lstm" in cfg.cells and len(cfg.forget_biases) > 1:
        parts = [
            f"{f}: {mean(results['forget'][(f, T_max)], 'log10_ratio'):+.1f}"
            for f in cfg.forget_biases
        ]
        mses = [
            f"{f}: {mean(results['forget'][(f, 'train')], 'mse'):.3g}"
            for f in cfg.forget_biases
            if (f, "train") in results["forget"]
        ]
        out.append(
            f"- LSTM forget bias: log10 gradient ratio at initialisation, T={T_max}, "
            + ", ".join(parts)
            + (f"; test MSE after training at T={t_train}: " + ", ".join(mses) if mses else "")
            + "."
        )
    g_hi, g_lo = max(cfg.clip_scales), min(cfg.clip_scales)
    for name in clip_cells(cfg):
        on, off = results["clip"][(name, g_hi, True)], results["clip"][(name, g_hi, False)]
        lo_on, lo_off = results["clip"][(name, g_lo, True)], results["clip"][(name, g_lo, False)]
        peak = np.max(off["grad_norm"]) if off["grad_norm"].size else float("nan")
        if on["status"] != "done" and off["status"] != "done":
            out.append(
                f"- Clipping, {name}: at g={g_hi} the loss was already non-finite at the first "
                f"update with and without clipping ({on['status']}): the forward pass overflows "
                "(the state grows by about g per step), and clipping the gradient cannot repair "
                f"a forward pass. At g={g_lo} clipping moved the test MSE from "
                f"{np.mean(lo_off['mse']):.3g} to {np.mean(lo_on['mse']):.3g}."
            )
            continue
        out.append(
            f"- Clipping, {name}: at g={g_hi} the unclipped run's gradient norm peaked at {peak:.3g} "
            f"({off['status']}, test MSE {np.mean(off['mse']):.3g}); with clipping at {cfg.clip_norm}, "
            f"{np.mean(on['clip_fraction']):.0%} of steps were clipped (test MSE {np.mean(on['mse']):.3g}). "
            f"At g={g_lo}, where the gradient vanishes, {np.mean(lo_on['clip_fraction']):.0%} of steps reached "
            f"the threshold and clipping moved the test MSE from {np.mean(lo_off['mse']):.3g} to "
            f"{np.mean(lo_on['mse']):.3g}."
        )
    for T in cfg.train_lengths:
        parts = [f"{n} {np.mean(train[(n, T)]['mse']):.3g}" for n in cfg.cells]
        near = [n for n in cfg.cells if np.mean(train[(n, T)]["mse"]) > 0.5 / 6]
        out.append(
            f"- Adding problem, T={T}, test MSE after {cfg.train_steps} steps: "
            + ", ".join(parts)
            + " (predicting 1 scores 0.167); "
            + (
                f"not below half the baseline: {', '.join(near)}."
                if near
                else "every cell is below half the baseline."
            )
        )
    order_mse = sorted(cfg.cells, key=lambda n: np.mean(train[(n, t_train)]["mse"]))
    order_grad = sorted(cfg.cells, key=lambda n: -mean(train[(n, t_train)]["after"], "log10_ratio"))
    out.append(
        f"- At T={t_train}, cells ranked by test MSE (best first): {', '.join(order_mse)}; ranked by how "
        f"much gradient reaches the first step after training: {', '.join(order_grad)}."
    )
    return out


def command_line(cfg: Config) -> str:
    defaults = dataclasses.asdict(Config())
    parts = ["python experiments/vanishing_gradients.py"]
    for k, v in dataclasses.asdict(cfg).items():
        if k in ("progress",) or defaults[k] == v:
            continue
        if isinstance(v, bool):
            parts.append(f"--{k}" if v else f"--no-{k}")
        elif isinstance(v, tuple):
            parts.append(f"--{k} {','.join(map(str, v))}")
        else:
            parts.append(f"--{k} {v}")
    return " ".join(parts)


# ---------------------------------------------------------------------------- plots


def plot(cfg: Config, results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {name: f"C{i}" for i, name in enumerate(cfg.cells)}
    T_max = max(cfg.lengths)
    t_train = max(cfg.train_lengths)
    log10 = 1 / math.log(10)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=False)
    for name in cfg.cells:
        r = results["init"][(name, T_max)]["log_norm"] * log10  # [S, T]
        d = np.arange(r.shape[1])[::-1]
        axes[0].plot(d, r.mean(0), color=colors[name], label=name)
        if name == "lstm":
            c = results["init"][(name, T_max)]["log_norm_c"] * log10
            # dL/dc_T is exactly 0 (the loss reads h_T): plot from distance 1 on.
            axes[0].plot(d[1:], c.mean(0)[:-1], color=colors[name], ls="--", label="lstm, dL/dc_t")
        axes[0].fill_between(d, r.min(0), r.max(0), color=colors[name], alpha=0.2)
        a = results["train"][(name, t_train)]["after"]["log_norm"] * log10
        d2 = np.arange(a.shape[1])[::-1]
        axes[1].plot(d2, a.mean(0), color=colors[name], label=name)
        axes[1].fill_between(d2, a.min(0), a.max(0), color=colors[name], alpha=0.2)
    axes[0].set(
        title=f"at initialisation, T={T_max}", xlabel="distance T - t", ylabel="log10 ||dL/dh_t||"
    )
    axes[1].set(
        title=f"after {cfg.train_steps} training steps, T={t_train}", xlabel="distance T - t"
    )
    axes[0].legend()
    fig.suptitle(
        f"Gradient reaching step t on the adding problem (H={cfg.hidden_size}; band: min-max over {cfg.seeds} seeds)"
    )
    fig.tight_layout()
    fig.savefig(out / "grad_vs_distance.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in cfg.cells:
        j = results["jacobian"][name]
        ax.semilogy(j["distance"], j["sigma_max"], color=colors[name], label=f"{name} max")
        ax.semilogy(
            j["distance"],
            np.maximum(j["sigma_min"], 1e-38),
            color=colors[name],
            ls=":",
            label=f"{name} min",
        )
    ax.set(title=f"singular values of dh_T/dh_t (T={cfg.sweep_len})", xlabel="distance T - t")
    ax.set_ylim(bottom=1e-30)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "singular_values.png", dpi=110)
    plt.close(fig)

    grid = np.array(
        [[np.mean(results["sweep"][(n, g)]["log10_ratio"]) for g in cfg.scales] for n in cfg.cells]
    )
    fig, ax = plt.subplots(figsize=(1.3 * len(cfg.scales) + 2, 0.6 * len(cfg.cells) + 1.6))
    lim = max(1.0, float(np.nanmax(np.abs(np.clip(grid, -40, 40)))))
    im = ax.imshow(np.clip(grid, -lim, lim), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(cfg.scales)), [f"g={g}" for g in cfg.scales])
    ax.set_yticks(range(len(cfg.cells)), cfg.cells)
    for i in range(len(cfg.cells)):
        for k in range(len(cfg.scales)):
            ax.text(k, i, f"{grid[i, k]:.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, label="log10 ||dL/dh_1|| / ||dL/dh_T||")
    ax.set_title(f"recurrent scale sweep, T={cfg.sweep_len} (blue: vanishing, red: exploding)")
    fig.tight_layout()
    fig.savefig(out / "scale_sweep.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    Ts = list(cfg.train_lengths)
    for name in cfg.cells:
        m = np.array([results["train"][(name, T)]["mse"] for T in Ts])  # [len, S]
        ax.errorbar(
            Ts,
            m.mean(1),
            yerr=m.std(1, ddof=1) if m.shape[1] > 1 else None,
            marker="o",
            color=colors[name],
            label=name,
            capsize=3,
        )
    ax.axhline(1 / 6, color="k", ls="--", lw=1, label="predict 1 (0.167)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="sequence length T",
        ylabel="test MSE",
        title=f"adding problem after {cfg.train_steps} steps",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "final_loss.png", dpi=110)
    plt.close(fig)

    rnn_cells = [n for n in cfg.cells if (n, max(cfg.clip_scales), True) in results["clip"]]
    if not rnn_cells:  # no ungated cell chosen: no clipping study to draw
        return
    fig, axes = plt.subplots(1, len(rnn_cells), figsize=(4 * len(rnn_cells), 3.6), squeeze=False)
    g = max(cfg.clip_scales)
    for ax, name in zip(axes[0], rnn_cells):
        for on, style in ((False, "-"), (True, "--")):
            norms = results["clip"][(name, g, on)]["grad_norm"]
            if norms.size:
                ax.semilogy(np.median(norms, axis=1), style, label=f"clip {'on' if on else 'off'}")
        ax.axhline(cfg.clip_norm, color="r", lw=0.8)
        ax.set(title=f"{name}, g={g}", xlabel="update")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("global grad norm (median over seeds)")
    fig.tight_layout()
    fig.savefig(out / "clipping.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    cfg, _, given = common.parse_config(
        Config, argv, description=__doc__.split("\n")[0], with_given=True
    )
    if cfg.full:  # the paper sizes, under every flag given on the command line
        picked = {k: getattr(cfg, k) for k in given}
        cfg = Config(**{**dataclasses.asdict(Config()), **FULL, **picked})
        with common.usage_errors():
            cfg.validate()
    out = Path(cfg.out)
    folder = out / "units"
    done = sorted(folder.glob("*.pkl")) if folder.exists() else []
    if cfg.resume:
        common.check_same_config(common.RunDir(out, primary=False), cfg)
    elif done and not (out / "summary.json").exists():
        raise SystemExit(
            f"{out} holds an unfinished study ({len(done)} measurements in {folder}): pass "
            "--resume to continue it, or another --out to start a new one."
        )
    else:  # a new study, or a finished one run again: start over
        for path in done:
            path.unlink()
        (out / "summary.json").unlink(missing_ok=True)
    run_dir = common.RunDir(out)
    env = common.environment()
    run_dir.write_json(
        "config.json", {"config": dataclasses.asdict(cfg), "command": command_line(cfg)}
    )
    print(
        f"Vanishing-gradient study: cells {', '.join(cfg.cells)}, H={cfg.hidden_size}, "
        f"{cfg.seeds} seeds, on {env['backend']} ({env['device_kind']})"
    )
    units = Units(folder, cfg.resume)
    t0 = time.perf_counter()
    try:
        results = run(cfg, units)
    except KeyboardInterrupt:
        kept = len(list(folder.glob("*.pkl")))
        print(
            f"\nInterrupted after {time.perf_counter() - t0:.0f} s, with {kept} measurements "
            f"saved in {folder}: the same command with --resume continues the study.",
            file=sys.stderr,
        )
        return 130
    if units.reused:
        print(f"Resumed: {units.reused} measurements read back from {folder}.")
    wall = time.perf_counter() - t0
    summary = summarise(cfg, results)
    summary.update(
        config=dataclasses.asdict(cfg),
        jacobian_method=jacobian_method(cfg),
        units_resumed=units.reused,  # read back from an earlier, stopped process
        wall_s=wall,
        environment=env,
        command=command_line(cfg),
    )
    run_dir.write_json("summary.json", summary)
    plot(cfg, results, out)
    text = write_report(cfg, results, summary, out, wall, env)
    print(text.split("## What the numbers show")[1].strip())
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in results["timing"].items())
    print(f"\nWrote {out}/report.md, figures, summary.json ({wall / 60:.1f} min: {phases})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
