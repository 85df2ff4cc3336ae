"""Train any task x cell x size, several seeds at once (vmap), into its own run folder.

    python experiments/train.py --task adding --cell lstm --seq_len 100 --steps 3000
    python experiments/train.py --preset adding_full        # the literature's sizes
    python experiments/train.py --task adding --cell lstm --resume   # continue a run

Writes ``<out>/<name>/``: ``config.json`` (resolved), ``metrics.jsonl`` (per update:
loss, grad norm before clipping, clipped, learning rate, steps/s; one value per seed),
``eval.jsonl`` (held-out metrics), ``summary.json`` (final metrics with mean, spread
and 95% bootstrap interval over seeds, wall time, versions, device), ``final.csv`` (the
final metrics, one row per seed), PNG plots and ``checkpoints/``.
Exit status: 0 done, 1 non-finite loss or a gradient norm past --max_grad_norm (diverged),
130 interrupted (checkpoint written).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import common
import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from rnnjax import diagnostics, distributed, lab
from rnnjax import train as tr
from rnnjax.checkpoint import Checkpointer
from rnnjax.modules import SequenceModel, count_params
from rnnjax.tasks import make_task


@dataclasses.dataclass
class Config:
    task: str = "adding"  # the task (rnnjax.tasks; REFERENCE.md defines each)
    cell: str = "lstm"  # the recurrent cell, by its catalogue name (rnnjax.cells)
    hidden_size: int = 64  # H, the width of each recurrent layer
    num_layers: int = 1  # stacked recurrent layers
    bidirectional: bool = False  # each layer reads the sequence both ways
    dropout: float = 0.0  # dropout between stacked layers (needs --num_layers > 1)
    # Zoneout (Krueger et al. 2017): each carry unit keeps its previous value with this
    # probability at every step (any cell)
    zoneout: float = 0.0
    # Variational recurrent dropout (Gal & Ghahramani 2016) on the state entering the
    # recurrent matmul, one mask per sequence (cells that declare it: cell.fused)
    recurrent_dropout: float = 0.0
    # DropConnect on the recurrent weight, one mask per update (AWD-LSTM's weight drop)
    weight_drop: float = 0.0
    # Long sequences: recompute the backward in chunks of this many steps; -1: sqrt(T).
    remat: int = 0
    embed_dim: int = 0  # token tasks: embedding width; 0: the hidden size
    forget_bias: float = 1.0  # the LSTM's initial forget-gate bias
    seq_len: int = 100  # adding: T; copy: the delay T; charlm: window length
    permuted: bool = False  # digits: a fixed random permutation of the pixel order
    # mnist1d: the package's spatially shuffled variant (one fixed order of the 40 steps)
    shuffle_seq: bool = False
    # mnist1d --shuffle_seq: the generator's order (package) or the one of the README's
    # GRU number (notebook: np.random.seed(42), permutation(40))
    shuffle_order: str = "package"
    # Classification: read out from the last state (last) or from every step's output
    # at once (all: a linear layer on the T outputs flattened, the MNIST-1D paper's GRU)
    readout: str = "last"
    data_path: str = ""  # digits: local MNIST .npz/IDX folder; charlm: a text file
    optimizer: str = "adam"  # the Optax optimizer
    learning_rate: float = 1e-3  # the peak learning rate
    schedule: str = "constant"  # the learning-rate schedule over --steps
    warmup_steps: int = 0  # linear warm-up steps (with --schedule warmup_cosine)
    clip_norm: float = 1.0  # clip the global gradient norm to this; <= 0: no clipping
    max_grad_norm: float = 0.0  # stop a diverging run when the gradient norm passes this; 0: never
    batch_size: int = 64  # examples per update, per seed
    steps: int = 2000  # updates in the whole run (a resumed run continues to this)
    seeds: int = 3  # independent seeds trained at once (vmap)
    seed: int = 0  # the first seed; the seeds are seed, seed+1, ...
    eval_every: int = 250  # held-out evaluation every this many updates (0: at the end)
    eval_size: int = 1000  # held-out examples (generated tasks)
    save_every: int = 500  # checkpoint every this many updates (0: only at the end)
    keep: int = 3  # checkpoints kept
    resume: bool = False  # continue the run in the folder from its latest checkpoint
    out: str = "runs"  # the parent folder of run folders
    name: str = ""  # the run folder's name; default: <task>-<cell>-T<seq_len>
    progress: bool = True  # a progress bar
    # CPU: the host devices JAX makes when it starts (0: one per core, so --parallel auto
    # splits the batch or the seeds over every core; 1: one device). A GPU or TPU run is
    # not changed by it. An XLA_FLAGS that sets the count already wins over 0.
    host_devices: int = 0
    devices: int = 0  # how many of the devices JAX sees to use; 0: all
    # How the run uses several devices: auto, none, data (batch split), sharded (params
    # split too) or seeds (one seed per device).
    parallel: str = "auto"
    sample_chars: int = 300  # charlm: characters to sample at the end
    # Also log every metric to TensorBoard while the run goes (<run>/tensorboard, one
    # folder per seed; tensorboard --logdir <out>)
    tensorboard: bool = False
    # CPU, glibc: keep freed memory in the process (one malloc arena, high mmap and trim
    # thresholds) so a step's temporaries do not page-fault on every call; the resident
    # set stays at its peak. rnnjax's benchmark training steps: 1.11-1.31x faster on this
    # project's CPU, all but the smallest (benchmarks/README.md, "The allocator").
    keep_freed_memory: bool = False

    # --help lists these; a value outside them is a usage error before any work.
    CHOICES = {
        "task": ("adding", "copy", "digits", "charlm", "hello", "mnist1d"),
        "readout": ("last", "all"),
        "shuffle_order": ("package", "notebook"),
        "cell": rnnjax.cells.names,  # the catalogue when the command line is parsed
        "optimizer": tr.OPTIMIZERS,
        "schedule": tr.SCHEDULES,
        "parallel": common.PARALLEL,
    }

    def validate(self) -> None:
        if self.tensorboard:
            common.tensorboard_available()
        if not (self.max_grad_norm >= 0 and math.isfinite(self.max_grad_norm)):
            raise ValueError(
                f"--max_grad_norm must be a finite number >= 0 (0: no ceiling); got "
                f"{self.max_grad_norm}."
            )
        for field in ("hidden_size", "num_layers", "batch_size", "seeds", "eval_size", "keep"):
            value = getattr(self, field)
            if value < 1:
                raise ValueError(f"--{field} must be >= 1; got {value}.")
        for field in (
            "steps", "eval_every", "save_every", "warmup_steps", "embed_dim", "seed",
            "host_devices",
        ):  # fmt: skip
            if getattr(self, field) < 0:
                raise ValueError(f"--{field} must be >= 0; got {getattr(self, field)}.")
        if self.seq_len < 1:
            raise ValueError(f"--seq_len must be >= 1; got {self.seq_len}.")
        if self.remat < -1:
            raise ValueError(
                f"--remat must be -1 (sqrt(T)), 0 (off) or a chunk length; got {self.remat}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must lie in [0, 1); got {self.dropout}.")
        for name in ("zoneout", "recurrent_dropout", "weight_drop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"--{name} must lie in [0, 1); got {getattr(self, name)}.")
        if (self.recurrent_dropout or self.weight_drop) and rnnjax.make_cell(
            self.cell, 2
        ).fused is None:
            raise ValueError(
                f"--recurrent_dropout and --weight_drop act on the recurrent matmul h W_h, "
                f"which the {self.cell} cell does not declare (cell.fused); use --zoneout."
            )
        if self.dropout and self.num_layers == 1:
            raise ValueError(
                f"--dropout {self.dropout} acts between stacked layers and --num_layers is 1: "
                "give --num_layers 2 or more, or no --dropout."
            )
        if self.cell not in rnnjax.cells.names():
            raise ValueError(
                f"--cell must be one of {list(rnnjax.cells.names())}; got {self.cell!r}."
            )

    # The tasks each task-specific option reaches (build_task, build_model).
    APPLIES = {
        "permuted": ("digits",),
        "shuffle_seq": ("mnist1d",),
        "shuffle_order": ("mnist1d",),
        "readout": ("digits", "mnist1d"),
        "data_path": ("digits", "charlm"),
        "sample_chars": ("charlm",),
        "embed_dim": ("copy", "charlm", "hello"),  # token inputs
        "seq_len": ("adding", "copy", "charlm"),
        "eval_size": ("adding", "copy", "charlm"),
    }

    def check_given(self, given: set[str]) -> None:
        """An option given that the task or cell would ignore is an error (it would be
        recorded in config.json as if it had applied)."""
        for field, tasks in self.APPLIES.items():
            if field in given and self.task not in tasks:
                raise ValueError(
                    f"--{field} does not apply to --task {self.task} (only to {', '.join(tasks)})."
                )
        if "forget_bias" in given and self.cell != "lstm":
            raise ValueError(f"--forget_bias applies to --cell lstm only; got --cell {self.cell}.")

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        if self.task == "digits":
            return f"digits{'_permuted' if self.permuted else ''}-{self.cell}"
        if self.task == "hello":
            return f"hello-{self.cell}"
        if self.task == "mnist1d":
            return (
                f"mnist1d{'_shuffled' if self.shuffle_seq else ''}"
                f"{'_notebook' if self.shuffle_order == 'notebook' else ''}-{self.cell}"
                f"{'-bi' if self.bidirectional else ''}"
                f"{'-readout_all' if self.readout == 'all' else ''}"
            )
        return f"{self.task}-{self.cell}-T{self.seq_len}"


# Full-size configurations from the literature (REFERENCE.md), for accelerators.
# Held-out examples behind each evaluation's grad_decay (one backward pass per seed).
GRAD_DECAY_EXAMPLES = 64


def input_grad_decay(model, task, params, batch):
    """The per-step factor of ``||dL/dx_t||`` against the distance ``T - t``
    (:func:`rnnjax.diagnostics.decay_rate`), ``x_t`` the float input at step ``t`` (the
    recurrent layer's input: the tasks it applies to have no embedding): gradient flow
    through the trained recurrence, measured at every evaluation and logged as
    ``grad_decay`` (and to TensorBoard)."""

    def loss(inputs):
        return task.loss(model.apply({"params": params}, inputs, batch.lengths), batch)

    grads = jax.grad(loss)(batch.inputs)  # [B, T, I]
    norms = jnp.linalg.norm(grads, axis=-1)
    return diagnostics.decay_rate(jnp.moveaxis(norms, -1, 0))[1]


PRESETS = {
    # Bai et al. 2018 (TCN), adding T=600 with about 70K parameters: LSTM H=130.
    "adding_full": dict(
        task="adding",
        seq_len=600,
        hidden_size=130,
        steps=20000,
        batch_size=64,
        learning_rate=2e-3,
        clip_norm=1.0,
        seeds=5,
        eval_size=5000,
    ),
    # TCN copy memory, T=1000, 16K parameters: GRU H=64 / LSTM H=50 land near it.
    "copy_full": dict(
        task="copy",
        seq_len=1000,
        hidden_size=64,
        steps=20000,
        batch_size=64,
        learning_rate=1e-3,
        seeds=5,
    ),
    # Sequential / permuted MNIST from a local file (T=784), ~70K parameters: LSTM H=130.
    "smnist_full": dict(
        task="digits",
        data_path="mnist.npz",
        hidden_size=130,
        steps=60000,
        batch_size=64,
        learning_rate=1e-3,
        seeds=3,
        eval_every=2000,
    ),
    # Karpathy's min-char-rnn: tanh RNN H=100, sequences of 25, Adagrad 0.1, clip 5.
    "charlm_karpathy": dict(
        task="charlm",
        cell="rnn_tanh",
        hidden_size=100,
        seq_len=25,
        optimizer="adagrad",
        learning_rate=0.1,
        clip_norm=5.0,
        batch_size=1,
        steps=100000,
        seeds=1,
    ),
}


def build_task(cfg: Config):
    if cfg.task == "adding":
        return make_task("adding", seq_len=cfg.seq_len, eval_size=cfg.eval_size)
    if cfg.task == "copy":
        return make_task("copy", delay=cfg.seq_len, eval_size=cfg.eval_size)
    if cfg.task == "digits":
        return make_task("digits", permuted=cfg.permuted, path=cfg.data_path or None)
    if cfg.task == "mnist1d":
        return make_task("mnist1d", shuffle_seq=cfg.shuffle_seq, shuffle_order=cfg.shuffle_order)
    if cfg.task == "charlm":
        return make_task(
            "charlm", seq_len=cfg.seq_len, path=cfg.data_path or None, eval_size=cfg.eval_size
        )
    return make_task(cfg.task)


def regularizer(cfg: Config) -> rnnjax.Regularizer | None:
    reg = rnnjax.Regularizer(cfg.zoneout, cfg.recurrent_dropout, cfg.weight_drop)
    return reg if reg.active else None


def build_model(cfg: Config, task) -> SequenceModel:
    options = {"forget_bias": cfg.forget_bias} if cfg.cell == "lstm" else {}
    layer = rnnjax.make_layer(
        cfg.cell,
        cfg.hidden_size,
        num_layers=cfg.num_layers,
        bidirectional=cfg.bidirectional,
        dropout_rate=cfg.dropout,
        regularizer=regularizer(cfg),
        remat=True if cfg.remat == -1 else (cfg.remat or None),
        **options,
    )
    head = "flatten" if task.head == "last" and cfg.readout == "all" else task.head
    return SequenceModel(
        layer,
        task.num_outputs,
        head=head,
        vocab_size=task.vocab_size,
        embed_dim=cfg.embed_dim or None,
    )


def main(argv=None) -> int:
    cfg, preset = common.parse_config(
        Config, argv, presets=PRESETS, description=__doc__.split("\n")[0]
    )
    if cfg.keep_freed_memory:  # before JAX starts its threads
        common.keep_freed_memory()
    lab.use_host_devices(cfg.host_devices)  # before JAX starts: every core a device
    common.join_processes()  # before any other JAX call: a multi-process run, if launched as one
    task, model, optimizer, schedule, clip = common.build(cfg, build_task, build_model)
    run = common.RunDir(Path(cfg.out) / cfg.run_name)

    seeds = np.arange(cfg.seed, cfg.seed + cfg.seeds)
    root = jax.random.key(0)
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(jnp.asarray(seeds))
    init_keys, data_keys, train_keys = jax.vmap(lambda k: jax.random.split(k, 3), out_axes=1)(
        seed_keys
    )

    example = task.sample(jax.random.key(0), 2)

    def init_one(init_key, train_key):
        params = model.init(init_key, example.inputs, example.lengths)["params"]
        return tr.init_state(params, optimizer, train_key)

    state = jax.vmap(init_one)(init_keys, train_keys)
    n_params = count_params(jax.tree.map(lambda a: a[0], state.params))

    def loss_fn(params, batch, key):
        outputs = model.apply(
            {"params": params},
            batch.inputs,
            batch.lengths,
            deterministic=cfg.dropout == 0.0 and regularizer(cfg) is None,
            rngs={"dropout": key},
        )
        return task.loss(outputs, batch), {}

    one_seed = tr.make_train_step(loss_fn, optimizer, clip_norm=clip, schedule=schedule)
    train_step, place, placement = common.on_devices(tr.vmap_seeds(one_seed), cfg)

    @jax.jit
    def batch_fn(step):
        return jax.vmap(lambda k: task.sample(jax.random.fold_in(k, step), cfg.batch_size))(
            data_keys
        )

    eval_batch = task.eval_set()

    @jax.jit
    def evaluate(params):
        def one(p):
            return task.metrics(
                model.apply({"params": p}, eval_batch.inputs, eval_batch.lengths), eval_batch
            )

        metrics = jax.vmap(one)(params)
        if grad_decay_applies:
            metrics["grad_decay"] = jax.vmap(
                lambda p: input_grad_decay(model, task, p, decay_batch)
            )(params)
        return metrics

    decay_batch = jax.tree.map(lambda a: a[:GRAD_DECAY_EXAMPLES], eval_batch)
    # A loss on the last state, every sequence full length (padding would bend the fit).
    full = eval_batch.lengths is None or bool(
        np.all(np.asarray(eval_batch.lengths) == np.shape(eval_batch.inputs)[1])
    )
    floats = jnp.issubdtype(jnp.result_type(eval_batch.inputs), jnp.floating)
    grad_decay_applies = model.head == "last" and full and floats

    ckpt = Checkpointer(run.path / "checkpoints", max_to_keep=cfg.keep)
    state = common.start_or_resume(run, ckpt, place(state), cfg)
    if cfg.tensorboard:
        run.open_tensorboard(seeds, tr.current_step(state))
    run.write_json(
        "config.json",
        {
            "config": dataclasses.asdict(cfg),
            "preset": preset,
            "task": task.info,
            "params_per_seed": n_params,
            "seeds": seeds.tolist(),
            "placement": placement,
        },
    )
    print(
        f"{cfg.run_name}: {task.name} {task.info.get('seq_len', '')}, {cfg.cell} "
        f"H={cfg.hidden_size} x{cfg.num_layers}, {n_params} params/seed, {cfg.seeds} seeds, "
        f"{cfg.steps} steps on {placement['devices']} {jax.devices()[0].platform} device(s)"
        f" ({placement['parallel']})"
    )

    def log_eval(step, state):
        metrics = distributed.to_host(evaluate(state.params))
        run.append_jsonl(
            "eval.jsonl", {"step": step, **{k: v.tolist() for k, v in metrics.items()}}
        )
        return metrics

    outcome = common.train_loop(
        run, cfg, state, train_step, batch_fn, checkpointer=ckpt, log_eval=log_eval,
        metric_keys=("loss", "grad_norm", "clipped"),
    )  # fmt: skip
    state, status, message, done_steps, wall = (
        outcome.state, outcome.status, outcome.message, outcome.steps, outcome.wall_s
    )  # fmt: skip

    final = log_eval(done_steps, state) if status == "done" else None
    summary = {
        **outcome.record(),
        "params_per_seed": n_params,
        "seeds": seeds.tolist(),
        "placement": placement,
        "baseline": task.baseline,
        "final": None
        if final is None
        else {k: {"per_seed": v.tolist(), **common.mean_spread(v)} for k, v in final.items()},
        "config": dataclasses.asdict(cfg),
        "environment": common.environment(),
    }
    if status == "done" and task.name == "charlm" and cfg.sample_chars:
        params0 = jax.tree.map(lambda a: a[0], distributed.to_host(state.params))
        summary["sample"] = sample_text(model, params0, task, cfg.sample_chars)
        print("Sample (seed 0):\n" + summary["sample"])
    run.write_json("summary.json", summary)
    if final is not None:
        run.write_seed_csv("final.csv", seeds, final)
    if run.primary:
        plot_run(run, cfg, task)
    if final is not None:
        shown = ", ".join(
            f"{k} {common.fmt_mean_std(common.mean_spread(v), 4)}" for k, v in final.items()
        )
        print(
            f"Final held-out ({cfg.seeds} seeds, mean ± std): {shown}; baseline loss "
            f"{task.baseline:.4g}; {wall:.0f} s"
        )
    else:
        print(f"Stopped: {message}")
    run.close()
    print(f"Wrote {run.path}")
    return outcome.exit_code


def sample_text(model, params, task, num_chars: int, prompt: str = "The ", seed: int = 0) -> str:
    """Sample characters from the language model, one step at a time from its carry."""
    chars = task.info["chars"]
    ids = jnp.array([[chars.index(c) for c in prompt if c in chars]], jnp.int32)
    logits, carry = model.apply({"params": params}, ids, return_carry=True)

    def step(state, key):
        carry, last = state  # last: [1, V] logits of the newest position
        token = jax.random.categorical(key, last)
        logits, carry = model.apply(
            {"params": params}, token[:, None], initial_carry=carry, return_carry=True
        )
        return (carry, logits[:, -1]), token[0]

    keys = jax.random.split(jax.random.key(seed), num_chars)
    _, tokens = jax.lax.scan(step, (carry, logits[:, -1]), keys)
    return prompt + "".join(chars[int(t)] for t in tokens)


def plot_run(run: common.RunDir, cfg: Config, task) -> None:
    plt = common.pyplot()

    rows = run.read_jsonl("metrics.jsonl")
    if not rows:
        return
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    gnorm = np.array([r["grad_norm"] for r in rows])
    evals = run.read_jsonl("eval.jsonl")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for s in range(loss.shape[1]):
        axes[0].plot(steps, loss[:, s], lw=0.6, alpha=0.7, label=f"seed {cfg.seed + s}")
        axes[1].plot(steps, gnorm[:, s], lw=0.6, alpha=0.7)
    if task.baseline is not None:
        axes[0].axhline(task.baseline, color="k", ls="--", lw=1, label="baseline")
    if cfg.clip_norm > 0:
        axes[1].axhline(cfg.clip_norm, color="r", ls="--", lw=1, label="clip threshold")
        axes[1].legend()
    axes[0].set(title="training loss", xlabel="update", yscale="log")
    axes[0].legend(fontsize=7)
    axes[1].set(title="global gradient norm (before clipping)", xlabel="update", yscale="log")
    if evals:
        e_steps = [r["step"] for r in evals]
        keys = [k for k in evals[0] if k != "step"]
        for k in keys:
            values = np.array([r[k] for r in evals])
            axes[2].plot(e_steps, values.mean(1), marker="o", label=f"{k} (mean)")
            axes[2].fill_between(e_steps, values.min(1), values.max(1), alpha=0.2)
        axes[2].legend()
    axes[2].set(title="held-out metrics (band: min-max over seeds)", xlabel="update")
    fig.suptitle(f"{cfg.run_name}: {cfg.cell} H={cfg.hidden_size}, {cfg.seeds} seeds")
    fig.tight_layout()
    fig.savefig(run.path / "curves.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
