"""What every experiment script shares: config from the command line, the run folder,
the resumable unit cache, the environment record, the figures' matplotlib, and small
statistics helpers."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# The environment record and the allocator setting are shared with benchmarks/: they
# live in the library (rnnjax.lab), re-exported here for the scripts.
from rnnjax.lab import KEEP_BYTES, KEPT, environment, keep_freed_memory  # noqa: F401


def parse_config(
    cls, argv=None, *, presets: dict[str, dict] | None = None, description="", with_given=False
):
    """A dataclass instance from defaults, an optional ``--preset``, then ``--field value``.

    Every field of ``cls`` becomes a flag (booleans as ``--x`` / ``--no-x``); unknown
    flags, values of the wrong type and values ``cls.validate()`` refuses are errors
    that name the flag (argparse's: the message, exit status 2). ``cls.check_given``,
    if any, sees the set of fields given on the command line. Returns ``(config,
    preset)``, and that set too with ``with_given``.
    """
    parser = argparse.ArgumentParser(
        description=description,
        allow_abbrev=False,
    )
    helps = field_help(cls)
    choices = {k: tuple(v() if callable(v) else v) for k, v in getattr(cls, "CHOICES", {}).items()}
    if presets:
        parser.add_argument(
            "--preset",
            choices=sorted(presets),
            default=None,
            help="a named configuration (e.g. the literature's sizes); "
            "flags given beside it override its fields",
        )
    for field in dataclasses.fields(cls):
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()  # e.g. the cells in the catalogue now
        flag = f"--{field.name}"
        text = helps.get(field.name, "")
        among = choices.get(field.name)
        if isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None,
                help=f"{text} (default: {'on' if default else 'off'})".strip(),
            )  # fmt: skip
        elif isinstance(default, (list, tuple)):
            elem = type(default[0]) if default else str
            parser.add_argument(
                flag,
                type=_list_of(elem, among),
                default=None,
                metavar=field.name.upper(),
                help=f"{text}; comma-separated"
                + (f", from {{{','.join(among)}}}" if among else "")
                + f" (default: {','.join(map(str, default))})",
            )
        else:
            parser.add_argument(
                flag, type=type(default), default=None, choices=among,
                help=f"{text} (default: {default!r})".strip(),
            )  # fmt: skip
    args = vars(parser.parse_args(argv))
    values = {}
    preset = args.pop("preset", None)
    if preset:
        values.update(presets[preset])
    given = {k: v for k, v in args.items() if v is not None}
    values.update(given)
    config = cls(**values)
    with usage_errors(parser.prog):
        if hasattr(config, "validate"):
            config.validate()
        if hasattr(config, "check_given"):
            config.check_given(set(given))
    return (config, preset, set(given)) if with_given else (config, preset)


def build(cfg, build_task, build_model):
    """The run's task, model, optimizer, learning-rate schedule and clipping threshold
    (``None``: off), from ``cfg``'s shared training fields; before any run folder
    exists, so a bad option the library finds is a usage error and leaves nothing."""
    from rnnjax import train as tr

    clip = cfg.clip_norm if cfg.clip_norm > 0 else None
    with usage_errors():
        task = build_task(cfg)
        model = build_model(cfg, task)
        optimizer, schedule = tr.make_optimizer(
            cfg.optimizer,
            cfg.learning_rate,
            clip_norm=clip,
            schedule=cfg.schedule,
            total_steps=max(cfg.steps, 1),
            warmup_steps=cfg.warmup_steps,
        )
    return task, model, optimizer, schedule, clip


@contextlib.contextmanager
def usage_errors(prog: str | None = None):
    """Turn a ``ValueError`` (a bad option, found by the config or by the library while
    the run is set up) into argparse's error: the message and exit status 2, no
    traceback."""
    try:
        yield
    except ValueError as err:
        name = prog or Path(sys.argv[0]).name
        print(f"{name}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _list_of(elem, among=None):
    def parse(text: str):
        try:
            values = tuple(elem(v) for v in text.split(",") if v.strip())
        except ValueError as err:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {elem.__name__}s: {err}"
            ) from None
        bad = [v for v in values if among is not None and v not in among]
        if bad:
            raise argparse.ArgumentTypeError(
                f"{', '.join(map(repr, bad))} not among {{{','.join(among)}}}"
            )
        return values

    return parse


def field_help(cls) -> dict[str, str]:
    """Each field's ``--help`` text: the comment on its line in the class body, else the
    comment lines just above it (the config's source is its documentation)."""
    import inspect
    import re
    import textwrap

    helps, pending = {}, []
    for line in textwrap.dedent(inspect.getsource(cls)).splitlines():
        stripped = line.strip()
        field = re.match(r"^    (\w+): [^=]+=(.*)$", line)
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
        elif field:
            name, rest = field.groups()
            trailing = rest.split("  # ", 1)[1].strip() if "  # " in rest else ""
            text = trailing or " ".join(pending)
            if text:
                helps[name] = text
            pending = []
        else:
            pending = []
    return helps


def join_processes() -> bool:
    """Start of every experiment's ``main``: join a multi-process run when the
    environment describes one (:func:`rnnjax.distributed.initialize`), and keep the
    other processes' stdout quiet, since process 0 speaks for the run. Returns whether
    this is process 0."""
    from rnnjax import distributed

    distributed.initialize()
    primary = distributed.is_primary()
    if not primary:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the life of the process)
    return primary


# The version of every JSON a run folder holds (config.json, summary.json): 2 added the
# field itself, the per-seed CSV beside it and the bootstrap interval (ci_low, ci_high)
# in every mean_spread; a file without the field is version 1.
SCHEMA_VERSION = 2


class RunDir:
    """One run's folder: ``config.json``, JSONL logs, ``summary.json``, plots, checkpoints.

    Only the primary process (process 0 of a multi-process run) writes; on the others
    every write is a no-op, so a shared folder gets each line once.
    """

    def __init__(self, path: str | Path, *, primary: bool | None = None):
        from rnnjax import distributed

        self.path = Path(path)
        self.primary = distributed.is_primary() if primary is None else primary
        # The wall time of the run's earlier segments (start_or_resume; None: unknown).
        self.earlier_wall_s: float | None = 0.0
        self.path.mkdir(parents=True, exist_ok=True)

    def write_json(self, name: str, obj) -> Path:
        """``obj`` as ``<run>/<name>``, atomically; a dict gets ``schema_version`` first
        (:data:`SCHEMA_VERSION`)."""
        target = self.path / name
        if not self.primary:
            return target
        if isinstance(obj, dict):
            obj = {"schema_version": SCHEMA_VERSION, **obj}
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")
        os.replace(tmp, target)  # atomic: a reader never sees half a file
        return target

    def write_csv(self, name: str, rows: list[dict]) -> Path:
        """``rows`` (dicts with the same keys) as CSV with a header: raw numbers beside
        the JSON, for a reader's own statistics. Floats keep every digit (``repr``)."""
        target = self.path / name
        if not self.primary:
            return target
        keys = list(rows[0]) if rows else []
        for i, r in enumerate(rows):
            if list(r) != keys:
                raise ValueError(f"rows[{i}] must have the columns {keys}; got {list(r)}.")

        def cell(v):
            return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)

        lines = [",".join(keys)] + [",".join(cell(r[k]) for k in keys) for r in rows]
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, target)
        return target

    def write_seed_csv(self, name: str, seeds, metrics: dict) -> Path:
        """Per-seed final metrics as CSV, ``seed,<metric>,...``, one row per seed."""
        columns = {k: np.asarray(v, np.float64).reshape(-1) for k, v in metrics.items()}
        for k, c in columns.items():
            if c.size != len(seeds):
                raise ValueError(
                    f"metrics[{k!r}] must hold one value per seed ({len(seeds)}); got {c.size}."
                )
        rows = [
            {"seed": int(seed), **{k: float(c[i]) for k, c in columns.items()}}
            for i, seed in enumerate(seeds)
        ]
        return self.write_csv(name, rows)

    # Set by open_tensorboard: every JSONL row then also goes to TensorBoard.
    board: TensorBoard | None = None

    def open_tensorboard(self, seeds, start_step: int) -> None:
        """Mirror the JSONL logs to TensorBoard under ``<run>/tensorboard`` (primary
        process only); ``start_step``: a resumed run's first step (TensorBoard drops
        the earlier segment's points from there on, as the JSONL logs were cut)."""
        if self.primary:
            self.board = TensorBoard(self.path / "tensorboard", seeds, start_step)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None

    def append_jsonl(self, name: str, row: dict) -> None:
        if not self.primary:
            return
        with open(self.path / name, "a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
        if self.board is not None:
            self.board.log(Path(name).stem, row)

    def read_jsonl(self, name: str) -> list[dict]:
        target = self.path / name
        if not target.exists():
            return []
        return [json.loads(line) for line in target.read_text().splitlines() if line.strip()]

    def truncate_jsonl(self, name: str, max_step: int) -> None:
        """Drop rows past ``max_step`` (after a resume, those steps are redone)."""
        if not self.primary:
            return
        rows = [r for r in self.read_jsonl(name) if r.get("step", 0) <= max_step]
        target = self.path / name
        tmp = target.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, target)


def tensorboard_available() -> None:
    """A ``ValueError`` (a usage error) unless the TensorBoard writer is installed."""
    import importlib.util

    if importlib.util.find_spec("tensorboardX") is None:
        raise ValueError(
            "--tensorboard writes with tensorboardX (no TensorFlow needed): "
            "pip install 'rnnjax[experiments]' (or pip install tensorboardX)."
        )


class TensorBoard:
    """A run's logs as TensorBoard scalars: one event folder per seed
    (``seed<k>``, so the seeds' curves overlay) for per-seed values, and ``all`` for
    values shared by the seeds (learning rate, steps/s); the tag is
    ``<log>/<key>`` (``metrics/loss``, ``eval/accuracy``).

    Written with tensorboardX: event files without a TensorFlow dependency (the
    ``tensorboard`` package itself only reads them; ``tensorboard --logdir runs``)."""

    def __init__(self, folder: Path, seeds, start_step: int):
        from tensorboardX import SummaryWriter

        self.folder = Path(folder)
        self.seeds = [int(s) for s in seeds]
        purge = start_step if start_step > 0 else None

        def writer(name):
            return SummaryWriter(str(self.folder / name), purge_step=purge, flush_secs=5)

        self.writers = {"all": writer("all")}
        self.writers.update({s: writer(f"seed{s}") for s in self.seeds})

    def log(self, log: str, row: dict) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key == "step":
                continue
            tag = f"{log}/{key}"
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writers["all"].add_scalar(tag, float(value), step)
            elif (
                isinstance(value, list)
                and len(value) == len(self.seeds)
                and all(isinstance(v, (int, float)) for v in value)
            ):
                for seed, v in zip(self.seeds, value):
                    self.writers[seed].add_scalar(tag, float(v), step)
            # Anything else (texts, nested arrays) stays in the JSONL only.

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


# Fields that may differ between a run and its resume: they change where and how the
# run is shown, saved or placed, not what it computes.
RESUMABLE = frozenset(
    {
        "resume", "progress", "out", "name", "eval_every", "save_every", "keep",
        "devices", "host_devices", "parallel", "keep_freed_memory", "sample_chars", "tensorboard",
        "workers",
    }
)  # fmt: skip


def start_or_resume(run: RunDir, ckpt, state, cfg, logs=("metrics.jsonl", "eval.jsonl")):
    """The state to train from: with ``cfg.resume`` the latest checkpoint (its logs cut
    back to that step), else ``state``.

    Without ``resume`` a folder that already holds checkpoints is an error, so no run's
    work is overwritten. With it, the config must be the one in ``config.json`` but for
    :data:`RESUMABLE` fields (and ``steps`` where the schedule is constant), so the
    record describes the whole run; ``steps`` below the checkpoint is an error, and a
    run already complete (its summary says done) is left as it is (exit 0). Sets
    ``run.earlier_wall_s``: the wall time of the segment that ended at the checkpoint
    (from its summary), or ``None`` where unknown.
    """
    run.earlier_wall_s = 0.0
    if not cfg.resume:
        if ckpt.steps():
            raise SystemExit(
                f"{ckpt.directory} already holds checkpoints {ckpt.steps()}: pass "
                "--resume to continue that run, or --name / --out for a new one."
            )
        _clear(run, logs)
        return state
    if ckpt.steps():
        check_same_config(run, cfg)
    restored = ckpt.restore_latest(state)
    if restored is None:
        print(f"--resume: no usable checkpoint in {ckpt.directory}; starting from step 0")
        _clear(run, logs)
        return state
    step0, state, _ = restored
    if step0 > cfg.steps:
        raise SystemExit(
            f"--steps {cfg.steps} is below the step of the latest checkpoint, {step0}, in "
            f"{ckpt.directory}: a resumed run cannot train backwards."
        )
    summary = _read_json(run.path / "summary.json")
    if step0 == cfg.steps and summary.get("status") == "done" and summary.get("steps") == step0:
        print(f"{run.path} is complete at step {step0}; nothing to resume.")
        raise SystemExit(0)
    print(f"Resumed from step {step0} in {ckpt.directory}")
    for name in logs:
        # The final evaluation (at cfg.steps) is redone, if the run got that far.
        run.truncate_jsonl(
            name, step0 - 1 if name == "eval.jsonl" and step0 == cfg.steps else step0
        )
    ended_here = summary.get("status") == "interrupted" and summary.get("steps") == step0
    run.earlier_wall_s = summary.get("wall_s") if ended_here else (None if step0 else 0.0)
    return state


def _clear(run: RunDir, logs) -> None:
    if run.primary:
        for name in logs:
            (run.path / name).unlink(missing_ok=True)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def check_same_config(run: RunDir, cfg) -> None:
    saved = _read_json(run.path / "config.json").get("config")
    if saved is None:
        return
    now = json.loads(json.dumps(dataclasses.asdict(cfg), default=_jsonable))
    skip = set(RESUMABLE) | (
        {"steps"} if getattr(cfg, "schedule", "constant") == "constant" else set()
    )
    changed = [
        f"--{k} {saved[k]!r} -> {v!r}"
        for k, v in now.items()
        if k in saved and k not in skip and saved[k] != v
    ]
    if changed:
        why = (
            " (the learning-rate schedule depends on --steps)"
            if any(c.startswith("--steps ") for c in changed)
            else ""
        )
        raise SystemExit(
            f"--resume with a changed config: {', '.join(changed)}{why}. What is saved in "
            f"{run.path} continues the run its config.json describes: resume with the same "
            "options, or start a new run (--name / --out)."
        )


class UnitCache:
    """An experiment's finished units of work, each saved as it completes, so that a
    run stopped part way (Ctrl-C, a signal, a crash) continues where it stopped.

    A unit is a key (a file name: letters, digits, ``-``, ``.``, ``=``) and a function
    of the run's config alone that computes its value (any picklable object). Calling
    ``units(key, compute)`` returns ``compute()``, saved as ``<folder>/<key>.pkl``
    (written to a temporary file, then renamed: a unit is whole or absent); with
    ``resume`` a unit already saved is read back instead, and counted in
    :attr:`reused`. Since every unit depends on the config alone, a resumed run ends
    with the numbers of an uninterrupted one, provided the config is the same
    (:func:`check_same_config`). ``folder=None`` keeps nothing (a run in memory).

    The pickles are the experiment's own cache: read back only from a folder the
    experiment wrote (pickle runs code when loading), never from elsewhere.

    Typical use::

        units = UnitCache(out / "units", resume=cfg.resume)
        if cfg.resume:
            check_same_config(RunDir(out, primary=False), cfg)
        else:
            units.start_over(finished=(out / "summary.json").exists())
        value = units(f"train-{name}-T{T}", lambda: train(name, T))
    """

    SUFFIX = ".pkl"

    def __init__(self, folder: str | Path | None, resume: bool = False):
        self.folder = None if folder is None else Path(folder)
        self.resume = resume
        self.reused = 0  # units read back rather than computed, in this process

    def __call__(self, key: str, compute):
        path = self._path(key)
        if path is not None and self.resume and path.exists():
            self.reused += 1
            return pickle.loads(path.read_bytes())
        value = compute()
        if path is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(value))
            os.replace(tmp, path)
        return value

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}{self.SUFFIX}"

    def saved(self) -> list[Path]:
        """The units saved in the folder, sorted by name."""
        if self.folder is None or not self.folder.exists():
            return []
        return sorted(self.folder.glob(f"*{self.SUFFIX}"))

    def start_over(self, *, finished: bool, what: str = "run", unit: str = "units") -> None:
        """Before a run that does not resume: units an unfinished run left are an error
        (``SystemExit`` naming ``--resume``), so no work is lost by running the same
        command without it; those of a finished run are removed (it starts over)."""
        done = self.saved()
        if done and not finished:
            where = self.folder.parent
            raise SystemExit(
                f"{where} holds an unfinished {what} ({len(done)} {unit} in {self.folder}): "
                "pass --resume to continue it, or another --out to start a new one."
            )
        for path in done:
            path.unlink()


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: the experiments write their figures to
    files and never open a window (no display is needed, on a server or in CI).
    matplotlib is imported here, at the first figure, not when a script starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


PARALLEL = ("auto", "none", "data", "sharded", "seeds")


def on_devices(step, cfg):
    """Compile a seed-vmapped train step for the devices JAX sees, as ``cfg`` (the
    experiment's Config) asks: reads ``cfg.devices``, ``parallel``, ``seeds`` and
    ``batch_size``.

    ``parallel``: ``"none"`` (one device), ``"data"`` (each seed's batch split over the
    devices, state replicated), ``"sharded"`` (as ``"data"`` with the parameters and
    optimizer state split too), ``"seeds"`` (whole seeds per device), or ``"auto"``
    (``"seeds"`` when the device count divides the seeds, else ``"data"`` when it divides
    the batch, else an error). ``devices``: how many to use, 0 for all.

    Returns ``(train_step, place, info)``: the compiled step, a function placing a state
    where the step expects it, and ``{"devices": n, "parallel": layout}`` for the record.
    """
    import jax

    from rnnjax import distributed

    devices, parallel, seeds, batch_size = cfg.devices, cfg.parallel, cfg.seeds, cfg.batch_size
    if parallel not in PARALLEL:
        raise ValueError(f"--parallel must be one of {PARALLEL}; got {parallel!r}.")
    mesh = distributed.data_mesh(devices or None)
    n = mesh.size
    if parallel == "auto":
        if n == 1:
            parallel = "none"
        elif seeds % n == 0:
            parallel = "seeds"
        elif batch_size % n == 0:
            parallel = "data"
        else:
            raise ValueError(
                f"{n} devices divide neither --seeds {seeds} nor --batch_size {batch_size}; "
                "choose --devices, --seeds or --batch_size so that one of them divides."
            )
    if parallel == "none" or n == 1:
        return jax.jit(step), (lambda state: state), {"devices": 1, "parallel": "none"}
    size = seeds if parallel == "seeds" else batch_size
    if size % n:
        flag = "--seeds" if parallel == "seeds" else "--batch_size"
        raise ValueError(f"--parallel {parallel} needs {flag} ({size}) divisible by {n} devices.")
    train_step = distributed.parallel_step(step, mesh, parallel, batch_axis=1)
    place = lambda state: distributed.place_state(state, mesh, parallel)  # noqa: E731
    return train_step, place, {"devices": n, "parallel": parallel}


@dataclasses.dataclass
class Outcome:
    """How :func:`train_loop` ended: ``status`` is ``"done"``, ``"nonfinite"``,
    ``"diverged"`` (the gradient norm passed ``--max_grad_norm``) or ``"interrupted"``;
    ``exit_code`` 0, 1 (non-finite or diverged) or 130; ``steps`` the updates applied."""

    state: Any
    status: str
    message: str
    exit_code: int
    steps: int
    start_step: int
    wall_s: float  # this process's training
    earlier_wall_s: float | None = 0.0  # segments before a resume (None: not known)

    @property
    def steps_per_s(self):
        return (self.steps - self.start_step) / self.wall_s if self.wall_s > 0 else None

    def record(self) -> dict:
        """The fields every ``summary.json`` starts with. ``wall_s`` covers every
        segment of a resumed run where their times are known (``wall_s_complete``);
        ``steps_per_s`` is this process's."""
        known = self.earlier_wall_s is not None
        return {
            "status": self.status,
            "message": self.message,
            "steps": self.steps,
            "wall_s": self.wall_s + (self.earlier_wall_s or 0.0),
            "wall_s_complete": known,
            "wall_s_this_process": self.wall_s,
            "steps_per_s": self.steps_per_s,
        }


def train_loop(
    run: RunDir,
    cfg,
    state,
    train_step,
    batch_fn,
    *,
    checkpointer,
    log_eval,
    metric_keys=("loss", "grad_norm", "clipped"),
) -> Outcome:
    """``rnnjax.train.fit`` with the experiments' logging: one ``metrics.jsonl`` row per
    update (``metric_keys`` per seed, learning rate, steps/s), ``log_eval(step, state)``
    every ``cfg.eval_every`` updates but the last, and a non-finite loss or a signal
    turned into an :class:`Outcome` instead of an exception. Reads ``cfg.steps``,
    ``save_every``, ``eval_every``, ``progress``, ``run_name`` and ``max_grad_norm``. Closes
    ``checkpointer``."""
    num_steps, eval_every = cfg.steps, cfg.eval_every
    from rnnjax import train as tr

    start_step = tr.current_step(state)
    clock = {"t": time.perf_counter(), "step": start_step}

    def on_step(step, metrics, state):
        now = time.perf_counter()
        rate = (step - clock["step"]) / max(now - clock["t"], 1e-9)
        clock.update(t=now, step=step)
        row = {"step": step, **{k: np.asarray(metrics[k]).tolist() for k in metric_keys}}
        row["lr"] = float(np.asarray(metrics["lr"]).reshape(-1)[0])
        row["steps_per_s"] = rate
        run.append_jsonl("metrics.jsonl", row)
        if eval_every and step % eval_every == 0 and step != num_steps:
            log_eval(step, state)

    earlier = run.earlier_wall_s
    t0 = time.perf_counter()
    status, message, exit_code, done = "done", "", 0, num_steps
    try:
        state = tr.fit(
            state,
            train_step,
            batch_fn,
            num_steps=num_steps,
            checkpointer=checkpointer,
            save_every=cfg.save_every,
            on_step=on_step,
            progress=cfg.progress and run.primary,
            desc=cfg.run_name,
            max_grad_norm=cfg.max_grad_norm or None,
        )
    except tr.GradientCeilingError as err:
        status, message, exit_code, done = "diverged", str(err), 1, err.step
    except tr.NonFiniteError as err:
        status, message, exit_code, done = "nonfinite", str(err), 1, err.step
    except tr.TrainingInterrupted as err:
        status, message, exit_code, done = "interrupted", str(err), 130, err.step
    finally:
        checkpointer.close()
    wall = time.perf_counter() - t0
    return Outcome(state, status, message, exit_code, done, start_step, wall, earlier)


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return str(obj)


def mean_spread(values) -> dict[str, float]:
    """Mean, sample standard deviation, min, max, ``n`` and the 95% bootstrap interval
    of the mean (``ci_low``, ``ci_high``) over seeds: :func:`rnnjax.stats.summarize`."""
    from rnnjax import stats

    return stats.summarize(values)


def fmt_mean_std(stats: dict[str, float], digits: int = 3) -> str:
    if not math.isfinite(stats["mean"]):
        return "nan"
    return f"{stats['mean']:.{digits}g} ± {stats['std']:.{digits - 1}g}"
