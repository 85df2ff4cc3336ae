"""The study's options, their checks, the ``--full`` sizes, and which cells each
section takes (read from what each catalogue cell declares, when the study runs)."""

from __future__ import annotations

import dataclasses
import functools

import rnnjax

FORGET_BIASES = ("0", "1", "chrono")
# The forget-bias variants set a bias block of the LSTM's gate layout (i, f, g, o).
FORGET_CELL = "lstm"


def catalogue_cells() -> tuple[str, ...]:
    """Every cell in the catalogue now (a cell registered after import included)."""
    return tuple(rnnjax.cells.names())


@dataclasses.dataclass
class Config:
    # The cells studied: every cell in the catalogue when the config is made (not when
    # this file is imported)
    cells: tuple = dataclasses.field(default_factory=catalogue_cells)
    hidden_size: int = 64  # H of every cell
    lengths: tuple = (50, 100, 300, 1000)  # gradient flow at initialisation
    seeds: int = 3  # initialisations (and training seeds) per measurement
    batch_size: int = 32  # examples per gradient measurement
    scales: tuple = (0.5, 0.9, 1.0, 1.1, 1.5)  # W_h = g x orthogonal
    sweep_len: int = 100  # T of the scale sweep, the Jacobians and the clipping study
    forget_biases: tuple = FORGET_BIASES  # the LSTM's forget-bias variants (0, 1, chrono)
    train_lengths: tuple = (50, 100)  # T of the adding problem each cell is trained on
    train_steps: int = 800  # Adam updates per training run
    train_batch: int = 16  # examples per training update (32 until the study passed 8 min)
    learning_rate: float = 2e-3  # Adam's learning rate
    forget_train: bool = False  # also train each forget-bias variant (on in --full)
    clip_norm: float = 1.0  # the clipping study's gradient-norm threshold
    clip_steps: int = 200  # updates per clipping-study run
    clip_scales: tuple = (0.5, 1.5)  # recurrent scales g of the clipping study
    # The clipping study over every ungated cell with a recurrent scale (on in --full);
    # off: the classic family's only, to keep the default run short
    clip_all: bool = False
    # The regulariser ablation's cells, trained at the longest T: the GRU, which solves
    # T=100 in the default budget (the LSTM, ("lstm",) until 38b03c0, no longer does, and
    # an ablation of a cell that learns nothing compares nothing)
    reg_cells: tuple = ("gru",)
    reg_rate: float = 0.1  # the rate of each regulariser in the ablation
    # The memory horizon's rule: a cell solves the adding problem at T when its mean test
    # MSE over seeds is below this (6% of the 0.167 baseline of always predicting 1)
    solve_mse: float = 0.01
    eval_size: int = 500  # held-out examples of each trained cell's test MSE
    full: bool = False  # the paper-size study (for an accelerator); flags given still apply
    out: str = "runs/vanishing_gradients"  # the study's folder
    progress: bool = True  # a progress bar
    tensorboard: bool = False  # log each training run and its dL/dh_t decay to <out>/tensorboard
    # Continue a study that stopped: every measurement already in <out>/units is read
    # back instead of recomputed (each is a function of the config alone).
    resume: bool = False
    # Processes the measurements run in: 0, one per CPU core on a CPU and one on an
    # accelerator; 1, this process alone. Each measurement's value is the same either way.
    workers: int = 0

    # --help lists these; a value outside them is a usage error before any work.
    CHOICES = {"cells": catalogue_cells, "forget_biases": FORGET_BIASES}

    def validate(self) -> None:
        if self.tensorboard:
            from common import tensorboard_available

            tensorboard_available()
        known = catalogue_cells()
        unknown = set(self.cells) - set(known)
        if unknown or not self.cells:
            raise ValueError(f"--cells must be names from {list(known)}; got {list(self.cells)}.")
        bad = [f for f in self.forget_biases if f not in FORGET_BIASES]
        if bad:
            raise ValueError(f"--forget_biases must be from 0, 1, chrono; got {bad}.")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0 (0: one per CPU core); got {self.workers}.")
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
        for name in reg_cells(self):
            if get_cell(name, 2).fused is None:
                raise ValueError(
                    f"--reg_cells: {name} declares no recurrent matmul (cell.fused), which "
                    "recurrent dropout and weight drop act on; choose from "
                    f"{[n for n in self.cells if get_cell(n, 2).fused is not None]}."
                )
        if not 0.0 < self.reg_rate < 1.0:
            raise ValueError(f"--reg_rate must lie in (0, 1); got {self.reg_rate}.")
        for name in ("learning_rate", "clip_norm", "solve_mse"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0; got {getattr(self, name)}.")

    def check_given(self, given: set[str]) -> None:
        """Options given for a section that the chosen cells skip are errors, not
        silently recorded: the forget-bias ablation needs the LSTM, the clipping study
        an ungated cell with a recurrent scale (:func:`clippable`)."""
        if not forget_cells(self):
            named = sorted(given & {"forget_biases", "forget_train"})
            if named:
                raise ValueError(
                    f"--{', --'.join(named)}: the forget-bias ablation needs {FORGET_CELL} in "
                    f"--cells; got {list(self.cells)}."
                )
        bad = set(self.reg_cells) - set(self.cells)
        if "reg_cells" in given and bad:
            raise ValueError(
                f"--reg_cells must be among --cells {list(self.cells)}; got {sorted(bad)}."
            )
        if not clip_cells(self):
            named = sorted(given & {"clip_norm", "clip_steps", "clip_scales"})
            if named:
                raise ValueError(
                    f"--{', --'.join(named)}: the clipping study needs {clippable_names(self)} in "
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
    clip_all=True,
    reg_cells=("lstm", "gru"),
)


def command_line(cfg: Config) -> str:
    """The command that reproduces ``cfg``: the options that differ from the defaults."""
    defaults = dataclasses.asdict(Config())
    parts = ["python experiments/vanishing_gradients.py"]
    for k, v in dataclasses.asdict(cfg).items():
        if k in ("progress", "workers", "tensorboard") or defaults[k] == v:
            continue
        if isinstance(v, bool):
            parts.append(f"--{k}" if v else f"--no-{k}")
        elif isinstance(v, tuple):
            parts.append(f"--{k} {','.join(map(str, v))}")
        else:
            parts.append(f"--{k} {v}")
    return " ".join(parts)


# ------------------------------------------------------------------ cells
#
# Variants that differ only in initial *values* (the recurrent scale g, the forget bias)
# share one cell object and one compiled program: the variant is applied to the
# params after init. Compilation, not arithmetic, dominates a small study on a CPU.


def get_cell(name: str, hidden_size: int) -> rnnjax.Cell:
    """The catalogue cell ``name`` of size ``hidden_size``: one object per catalogue
    entry and size, so the compiled programs cached on it are reused."""
    return _made(rnnjax.cells.get(name).make, hidden_size)


@functools.cache
def _made(make, hidden_size: int) -> rnnjax.Cell:
    # Keyed by the entry's factory, not its name: an entry registered again under the
    # same name (as tests do) gets its own cell.
    return make(hidden_size)


def _cells(cfg: Config, wanted) -> list[str]:
    return [n for n in cfg.cells if wanted(get_cell(n, cfg.hidden_size))]


def sweep_cells(cfg: Config) -> list[str]:
    """The recurrent-scale sweep: the cells that declare what scale ``g`` means
    (``cell.recurrent_scale``)."""
    return _cells(cfg, lambda c: c.recurrent_scale is not None)


def unscaled_cells(cfg: Config) -> list[str]:
    """The cells the sweep leaves out: they declare no recurrent scale."""
    return _cells(cfg, lambda c: c.recurrent_scale is None)


def gate_cells(cfg: Config) -> list[str]:
    """Gate statistics: the cells that declare their gates (``cell.gates``)."""
    return _cells(cfg, lambda c: c.gates is not None)


def clippable(cell: rnnjax.Cell) -> bool:
    """Whether the clipping study applies: an ungated cell (``not cell.gated``; the
    gates' saturation already bounds the gated ones) that declares a recurrent scale
    (the study trains it at the scales ``g`` of ``--clip_scales``)."""
    return not cell.gated and cell.recurrent_scale is not None


def clip_cells(cfg: Config) -> list[str]:
    """The clipping study's cells (:func:`clippable`); without ``clip_all``, those of
    the classic family (the catalogue's ``Entry.family``) alone."""
    classic = lambda n: rnnjax.cells.get(n).family == "classic"  # noqa: E731
    return [n for n in _cells(cfg, clippable) if cfg.clip_all or classic(n)]


REGULARIZERS = ("zoneout", "recurrent_dropout", "weight_drop")


def reg_cells(cfg: Config) -> list[str]:
    """The regulariser ablation's cells: ``--reg_cells`` among the chosen cells."""
    return [n for n in cfg.reg_cells if n in cfg.cells]


def regularizer(kind: str, rate: float) -> rnnjax.Regularizer | None:
    """The ablation's regulariser ``kind`` at ``rate`` (``"none"``: ``None``)."""
    return None if kind == "none" else rnnjax.Regularizer(**{kind: rate})


def forget_cells(cfg: Config) -> list[str]:
    """The forget-bias ablation: the LSTM."""
    return [FORGET_CELL] if FORGET_CELL in cfg.cells else []


def clippable_names(cfg: Config | None = None) -> str:
    """The catalogue's cells the clipping study would take (with ``cfg.clip_all``: every
    clippable one; else the classic family's), for messages: ``"rnn_tanh or
    rnn_relu"``."""
    every = cfg is not None and cfg.clip_all
    return " or ".join(
        n
        for n in catalogue_cells()
        if clippable(get_cell(n, 2)) and (every or rnnjax.cells.get(n).family == "classic")
    )
