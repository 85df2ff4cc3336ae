"""The study's sections. Each is a function over the catalogue cells it applies to,
chosen by what each cell declares (:mod:`vanishing.config`), never by its name or the
names of its params' fields:

1. :func:`init_flow`: gradient flow at initialisation, over lengths and seeds (every cell);
2. :func:`spectra`: the singular values of ``dh_T/dh_t`` (every cell);
   :func:`gate_statistics`: mean gate activations (cells that declare ``gates``);
3. :func:`scale_sweep`: the recurrent scale ``g`` (cells that declare
   ``recurrent_scale``; the others are listed in the report as having none);
4. :func:`forget_bias`: the forget-bias variants 0, 1, chrono (the LSTM);
5. :func:`clipping`: clipping on and off at ``g < 1`` and ``g > 1`` (ungated cells
   with a recurrent scale);
6. :func:`training`: the outcome of training on the adding problem, and the gradient
   flow after it (every cell); the memory horizon is read from it and section 1;
7. :func:`regularizers`: training with each regulariser (zoneout, recurrent dropout,
   weight drop) against without (``--reg_cells``, cells that declare their recurrent
   matmul).

Every measurement is a unit of :class:`common.UnitCache`, named by a fixed key and a
function of the config alone, so a study stopped part way resumes to the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import common
import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.tasks import make_task

from . import measure
from .config import (
    REGULARIZERS,
    Config,
    clip_cells,
    forget_cells,
    gate_cells,
    get_cell,
    reg_cells,
    regularizer,
    sweep_cells,
)


@dataclasses.dataclass
class Study:
    """What every section reads: the config, the unit cache, the seeds and their
    initialisation keys, and ``tick(desc)``, called after each measurement (progress
    bar and per-phase timing; the phase is the first word of ``desc``)."""

    cfg: Config
    units: common.UnitCache
    tick: Callable[[str], None]

    def __post_init__(self):
        self.seeds = np.arange(self.cfg.seeds)
        self.seed_keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(0), s))(
            jnp.asarray(self.seeds)
        )

    def cell(self, name: str):
        return get_cell(name, self.cfg.hidden_size)

    def first_seed_params(self, name: str, task):
        """Seed 0's initial params of the cell ``name`` alone (no readout)."""
        params = measure.init_params(measure.make_model(self.cell(name)), task, self.seed_keys[:1])
        return jax.tree.map(lambda a: a[0], params)["rnn"]["layer"][0]


def init_flow(study: Study) -> dict:
    """1. Gradient flow at initialisation, per cell and length: ``{(name, T): flow}``."""
    cfg, out = study.cfg, {}
    for name in cfg.cells:
        cell = study.cell(name)
        for T in cfg.lengths:

            def measure_it(cell=cell, T=T):
                task = make_task("adding", seq_len=T)
                params = measure.init_params(measure.make_model(cell), task, study.seed_keys)
                batch = task.sample(jax.random.key(10_000 + T), cfg.batch_size)
                return measure.grad_flow(cell, params, batch)

            out[(name, T)] = study.units(f"init-{name}-T{T}", measure_it)
            study.tick(f"init {name} T={T}")
    return out


def spectra(study: Study) -> dict:
    """2. Singular values of ``dh_T/dh_t`` at ``T = sweep_len`` (seed 0, one example),
    per cell: ``{name: jacobian}``."""
    cfg, out = study.cfg, {}
    task = make_task("adding", seq_len=cfg.sweep_len)
    x0 = task.sample(jax.random.key(7), 1).inputs[0]
    method = measure.jacobian_method(cfg)
    for name in cfg.cells:

        def measure_it(name=name):
            p0 = study.first_seed_params(name, task)
            return measure.jacobians(study.cell(name), p0, x0, method)

        out[name] = study.units(f"jacobians-{name}", measure_it)
        study.tick(f"jacobians {name}")
    return out


def gate_statistics(study: Study) -> dict:
    """2. Mean gate activations at initialisation (seed 0, ``T = sweep_len``), for the
    cells that declare their gates: ``{name: {gate: mean}}``."""
    cfg, out = study.cfg, {}
    task = make_task("adding", seq_len=cfg.sweep_len)
    for name in gate_cells(cfg):

        def measure_it(name=name):
            inputs = task.sample(jax.random.key(8), cfg.batch_size).inputs
            p0 = study.first_seed_params(name, task)
            return measure.gate_means(study.cell(name), p0, inputs)

        out[name] = study.units(f"gates-{name}", measure_it)
        study.tick(f"gates {name}")
    return out


def scale_sweep(study: Study) -> dict:
    """3. Recurrent-scale sweep at ``T = sweep_len``, for the cells that declare a
    recurrent scale: ``{(name, g): flow}``."""
    cfg, out = study.cfg, {}
    task = make_task("adding", seq_len=cfg.sweep_len)
    batch = task.sample(jax.random.key(11), cfg.batch_size)
    for name in sweep_cells(cfg):
        cell = study.cell(name)
        base = functools.cache(
            lambda cell=cell: measure.init_params(measure.make_model(cell), task, study.seed_keys)
        )
        for g in cfg.scales:
            out[(name, g)] = study.units(
                f"sweep-{name}-g{g}",
                lambda cell=cell, g=g, base=base: measure.grad_flow(
                    cell, measure.variant(base(), cell, scale=g), batch
                ),
            )
            study.tick(f"sweep {name} g={g}")
    return out


def forget_bias(study: Study) -> dict:
    """4. The LSTM forget-bias ablation: gradient flow over lengths, and (with
    ``--forget_train``) training at the longest training length:
    ``{(forget, T): flow}`` and ``{(forget, "train"): {"mse", "wall_s"}}``."""
    cfg, out = study.cfg, {}
    t_long = max(cfg.train_lengths)
    for name in forget_cells(cfg):
        cell = study.cell(name)
        for forget in cfg.forget_biases:
            for T in cfg.lengths:

                def ablation(cell=cell, forget=forget, T=T):
                    task_t = make_task("adding", seq_len=T)
                    params = measure.variant(
                        measure.init_params(measure.make_model(cell), task_t, study.seed_keys),
                        cell,
                        forget=forget,
                        max_timescale=T,
                    )
                    b = task_t.sample(jax.random.key(10_000 + T), cfg.batch_size)
                    return measure.grad_flow(cell, params, b)

                out[(forget, T)] = study.units(f"forget-{forget}-T{T}", ablation)
                study.tick(f"forget bias {forget} T={T}")
            if cfg.forget_train:

                def trained_forget(name=name, forget=forget):
                    trained = measure.train_cell(
                        name,
                        t_long,
                        cfg,
                        study.seeds,
                        steps=cfg.train_steps,
                        clip=cfg.clip_norm,
                        forget=forget,
                        log_name=f"forget-{forget}-train-T{t_long}",
                    )
                    return {"mse": trained["mse"], "wall_s": trained["wall_s"]}

                out[(forget, "train")] = study.units(
                    f"forget-{forget}-train-T{t_long}", trained_forget
                )
                study.tick(f"forget bias {forget}: train T={t_long}")
    return out


def clipping(study: Study) -> dict:
    """5. Clipping on / off where gradients vanish (g < 1) and explode (g > 1), for the
    ungated cells with a recurrent scale: ``{(name, g, clipped): record}``."""
    cfg, out = study.cfg, {}
    for name in clip_cells(cfg):
        for g in cfg.clip_scales:
            for clip in (cfg.clip_norm, None):

                def clipped_run(name=name, g=g, clip=clip):
                    trained = measure.train_cell(
                        name,
                        cfg.sweep_len,
                        cfg,
                        study.seeds,
                        steps=cfg.clip_steps,
                        clip=clip,
                        scale=g,
                        log_name=f"clip-{name}-g{g}-{'on' if clip else 'off'}",
                    )
                    h = trained["history"]
                    return {
                        "mse": trained["mse"],
                        "status": trained["status"],
                        "grad_norm": h["grad_norm"],
                        "clip_fraction": measure.clip_fraction(h, cfg.clip_norm, len(study.seeds)),
                    }

                on = "on" if clip else "off"
                out[(name, g, clip is not None)] = study.units(
                    f"clip-{name}-g{g}-{on}", clipped_run
                )
                study.tick(f"clip {name} g={g} {on}")
    return out


def training(study: Study) -> dict:
    """6. Training outcome by cell and length, and the gradient flow after training:
    ``{(name, T): record}``."""
    cfg, out = study.cfg, {}
    for name in cfg.cells:
        for T in cfg.train_lengths:

            def outcome(name=name, T=T):
                trained = measure.train_cell(
                    name,
                    T,
                    cfg,
                    study.seeds,
                    steps=cfg.train_steps,
                    clip=cfg.clip_norm,
                    log_name=f"train-{name}-T{T}",
                )
                task_t = make_task("adding", seq_len=T)
                b = task_t.sample(jax.random.key(20_000 + T), cfg.batch_size)
                history = trained["history"]
                return {
                    "mse": trained["mse"],
                    "after": measure.grad_flow(trained["cell"], trained["params"], b),
                    "wall_s": trained["wall_s"],
                    "status": trained["status"],
                    "clip_fraction": measure.clip_fraction(
                        history, cfg.clip_norm, len(study.seeds)
                    ),
                }

            out[(name, T)] = study.units(f"train-{name}-T{T}", outcome)
            study.tick(f"train {name} T={T}")
    return out


def regularizers(study: Study) -> dict:
    """7. The regulariser ablation: each ``--reg_cells`` cell trained at the longest
    training length with each regulariser at ``--reg_rate`` (without one: the training
    section's run): ``{(name, kind): record}``."""
    cfg, out = study.cfg, {}
    T = max(cfg.train_lengths)
    for name in reg_cells(cfg):
        for kind in REGULARIZERS:

            def outcome(name=name, kind=kind):
                trained = measure.train_cell(
                    name,
                    T,
                    cfg,
                    study.seeds,
                    steps=cfg.train_steps,
                    clip=cfg.clip_norm,
                    regularizer=regularizer(kind, cfg.reg_rate),
                    log_name=f"reg-{name}-{kind}-r{cfg.reg_rate}-T{T}",
                )
                b = make_task("adding", seq_len=T).sample(
                    jax.random.key(20_000 + T), cfg.batch_size
                )
                return {
                    "mse": trained["mse"],
                    "after": measure.grad_flow(trained["cell"], trained["params"], b),
                    "wall_s": trained["wall_s"],
                    "status": trained["status"],
                }

            out[(name, kind)] = study.units(f"reg-{name}-{kind}-r{cfg.reg_rate}-T{T}", outcome)
            study.tick(f"reg {name} {kind}")
    return out


def num_units(cfg: Config) -> int:
    """How many measurements :func:`run` takes (the progress bar's total)."""
    forget = len(forget_cells(cfg)) * len(cfg.forget_biases) * (len(cfg.lengths) + cfg.forget_train)
    return (
        len(cfg.cells) * (len(cfg.lengths) + 1 + len(cfg.train_lengths))
        + len(gate_cells(cfg))
        + len(sweep_cells(cfg)) * len(cfg.scales)
        + forget
        + len(clip_cells(cfg)) * len(cfg.clip_scales) * 2
        + len(reg_cells(cfg)) * len(REGULARIZERS)
    )


def run(cfg: Config, units: common.UnitCache | None = None) -> dict:
    """Every section in turn. Returns ``{"init", "sweep", "forget", "clip", "train",
    "reg", "jacobian", "gates", "timing"}``: each section's measurements keyed as its
    function says, and the seconds spent per phase."""
    units = units or common.UnitCache(None)
    bar = _bar(cfg.progress, num_units(cfg))
    timing: dict[str, float] = {}
    clock = {"last": time.perf_counter()}

    def tick(desc):
        now = time.perf_counter()
        phase = desc.split(" ")[0]
        timing[phase] = timing.get(phase, 0.0) + now - clock["last"]
        clock["last"] = now
        if bar is not None:
            bar.set_description(desc)
            bar.update(1)

    study = Study(cfg, units, tick)
    init = init_flow(study)
    jacobian = spectra(study)
    gates = gate_statistics(study)
    sweep = scale_sweep(study)
    forget = forget_bias(study)
    clip = clipping(study)
    train = training(study)
    reg = regularizers(study)
    if bar is not None:
        bar.close()
    return {
        "init": init,
        "sweep": sweep,
        "forget": forget,
        "clip": clip,
        "train": train,
        "reg": reg,
        "jacobian": jacobian,
        "gates": gates,
        "timing": timing,
    }


def _bar(enabled, total):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, dynamic_ncols=True)
