"""Train a Seq2Seq model on a generated task; held-out exact match, greedy and beam.

    python experiments/seq2seq.py --task addition --digits 3 --attention bahdanau
    python experiments/seq2seq.py --task dates --cell gru --attention luong_general
    python experiments/seq2seq.py --task reversal --seq_len 20 --attention none
    python experiments/seq2seq.py --task addition --resume      # continue a run

Any task (addition | reversal | dates) x cell x attention (none | bahdanau |
luong_dot | luong_general), several seeds at once (vmap). Writes ``<out>/<name>/``:
``config.json``, ``metrics.jsonl`` (per update: loss, token accuracy, grad norm before
clipping, steps/s; one value per seed), ``eval.jsonl`` (held-out loss, token accuracy
and greedy exact match), ``summary.json`` (final held-out exact match with greedy and
beam decoding, mean and spread over seeds, sample decodes, wall time, environment),
``curves.png``, ``attention.png`` (attention models) and ``checkpoints/``.
The held-out set never overlaps the training split (see ``rnnjax.tasks.translation``).
Exit status: 0 done, 1 non-finite loss or a gradient norm past --max_grad_norm (diverged),
130 interrupted (checkpoint written).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import common
import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from rnnjax import distributed, lab
from rnnjax import train as tr
from rnnjax.attention import ATTENTIONS
from rnnjax.checkpoint import Checkpointer
from rnnjax.modules import count_params, make_seq2seq
from rnnjax.tasks.base import masked_accuracy, masked_xent, step_mask
from rnnjax.tasks.translation import addition, dates, reversal

TASKS = ("addition", "reversal", "dates")


@dataclasses.dataclass
class Config:
    task: str = "addition"  # the task (rnnjax.tasks; REFERENCE.md defines each)
    digits: int = 3  # addition: operand digits
    seq_len: int = 10  # reversal: longest sequence
    min_len: int = 0  # reversal: shortest (0: seq_len, i.e. fixed length)
    num_symbols: int = 10  # reversal: alphabet size
    cell: str = "lstm"  # the cell of encoder and decoder, by its catalogue name
    hidden_size: int = 128  # H of each recurrent layer
    embed_dim: int = 64  # token embedding width
    encoder_layers: int = 1  # stacked encoder layers
    decoder_layers: int = 1  # stacked decoder layers
    # A bidirectional encoder (measured: 3-digit addition 0.105 against 0.006 exact
    # match at step 500 unidirectional).
    bidirectional: bool = True
    decoder_cell: str = ""  # the decoder's cell if it differs; default: --cell
    attention: str = "bahdanau"  # the decoder's attention over encoder outputs, or none
    # How the encoder's final state starts the decoder: auto, copy, dense or zeros.
    bridge: str = "auto"
    dropout: float = 0.0  # dropout between stacked layers
    sampling_rate: float = 0.0  # scheduled sampling: feed a model sample at this rate
    optimizer: str = "adam"  # the Optax optimizer
    learning_rate: float = 3e-3  # the peak learning rate
    schedule: str = "cosine"  # the learning-rate schedule over --steps
    warmup_steps: int = 0  # linear warm-up steps (with --schedule warmup_cosine)
    clip_norm: float = 1.0  # clip the global gradient norm to this; <= 0: no clipping
    max_grad_norm: float = 0.0  # stop a diverging run when the gradient norm passes this; 0: never
    batch_size: int = 128  # examples per update, per seed
    steps: int = 3000  # updates in the whole run (a resumed run continues to this)
    seeds: int = 1  # independent seeds trained at once (vmap)
    seed: int = 0  # the first seed; the seeds are seed, seed+1, ...
    eval_every: int = 500  # held-out evaluation every this many updates
    eval_size: int = 1000  # distinct held-out examples
    beam_width: int = 4  # beam search width for the held-out decodes
    alpha: float = 0.0  # beam length penalty exponent (GNMT); 0: raw log probability
    save_every: int = 1000  # checkpoint every this many updates (0: only at the end)
    keep: int = 2  # checkpoints kept
    resume: bool = False  # continue the run in the folder from its latest checkpoint
    out: str = "runs"  # the parent folder of run folders
    name: str = ""  # the run folder's name; default: s2s-<task>[-T<seq_len>]-<cell>-<attention>
    progress: bool = True  # a progress bar
    # Also log every metric to TensorBoard while the run goes (<run>/tensorboard, one
    # folder per seed; tensorboard --logdir <out>)
    tensorboard: bool = False
    # CPU, glibc: keep freed memory in the process for reuse (experiments/train.py has
    # the same flag; benchmarks/README.md, "The allocator").
    keep_freed_memory: bool = False
    # CPU: the host devices JAX makes when it starts (0: one per core, so --parallel auto
    # splits the batch or the seeds over every core; 1: one device). A GPU or TPU run is
    # not changed by it. An XLA_FLAGS that sets the count already wins over 0.
    host_devices: int = 0
    devices: int = 0  # how many of the devices JAX sees to use; 0: all
    # How the run uses several devices: auto, none, data (batch split), sharded (params
    # split too) or seeds (one seed per device).
    parallel: str = "auto"

    # --help lists these; a value outside them is a usage error before any work.
    CHOICES = {
        "task": TASKS,
        "cell": rnnjax.cells.names,
        "attention": ("none", *ATTENTIONS),
        "bridge": ("auto", "copy", "dense", "zeros"),
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
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {TASKS}; got {self.task!r}.")
        for cell in (self.cell, self.decoder_cell or self.cell):
            if cell not in rnnjax.cells.names():
                raise ValueError(
                    f"--cell must be one of {list(rnnjax.cells.names())}; got {cell!r}."
                )
        if self.attention not in ("none",) + ATTENTIONS:
            raise ValueError(
                f"--attention must be one of {('none',) + ATTENTIONS}; got {self.attention!r}."
            )
        if self.attention == "luong_dot" and self.bidirectional:
            raise ValueError(
                "--attention luong_dot scores the decoder's state against the encoder's "
                "outputs by a dot product, so their widths must agree; the bidirectional "
                f"encoder's outputs are 2 x {self.hidden_size} wide and the decoder's state "
                f"{self.hidden_size}: add --no-bidirectional, or use --attention "
                "luong_general or bahdanau."
            )
        for field in (
            "digits", "seq_len", "hidden_size", "embed_dim", "encoder_layers",
            "decoder_layers", "batch_size", "seeds", "eval_size", "beam_width", "keep",
        ):  # fmt: skip
            if getattr(self, field) < 1:
                raise ValueError(f"--{field} must be >= 1; got {getattr(self, field)}.")
        for field in (
            "steps", "eval_every", "save_every", "warmup_steps", "seed", "min_len",
            "host_devices",
        ):  # fmt: skip
            if getattr(self, field) < 0:
                raise ValueError(f"--{field} must be >= 0; got {getattr(self, field)}.")
        if not 0.0 <= self.sampling_rate <= 1.0:
            raise ValueError(f"--sampling_rate must lie in [0, 1]; got {self.sampling_rate}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must lie in [0, 1); got {self.dropout}.")

    def check_given(self, given: set[str]) -> None:
        """An option given for another task is an error (it would be recorded in
        config.json as if it had applied)."""
        applies = {"digits": "addition", "seq_len": "reversal", "min_len": "reversal"}
        applies["num_symbols"] = "reversal"
        for field, task in applies.items():
            if field in given and self.task != task:
                raise ValueError(
                    f"--{field} applies to --task {task} only; got --task {self.task}."
                )
        if "alpha" in given and self.beam_width == 1:
            raise ValueError("--alpha (the beam's length penalty) needs --beam_width > 1.")

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        size = {"addition": f"-D{self.digits}", "reversal": f"-T{self.seq_len}"}.get(self.task, "")
        return f"s2s-{self.task}{size}-{self.cell}-{self.attention}"


def build_task(cfg: Config):
    if cfg.task == "addition":
        return addition(cfg.digits)
    if cfg.task == "reversal":
        return reversal(cfg.seq_len, min_len=cfg.min_len or None, num_symbols=cfg.num_symbols)
    return dates()


def build_model(cfg: Config, task):
    return make_seq2seq(
        task.vocab.size,
        cell=cfg.cell,
        hidden_size=cfg.hidden_size,
        encoder_layers=cfg.encoder_layers,
        decoder_layers=cfg.decoder_layers,
        bidirectional=cfg.bidirectional,
        decoder_cell=cfg.decoder_cell or None,
        embed_dim=cfg.embed_dim,
        attention=None if cfg.attention == "none" else cfg.attention,
        bridge=cfg.bridge,
        dropout_rate=cfg.dropout,
    )


def seq2seq_loss(logits, batch):
    """Masked cross-entropy over target tokens (EOS included, PAD excluded), token
    accuracy and exact match of the whole teacher-forced target."""
    mask = step_mask(batch.tgt_lengths, batch.tgt_out.shape[-1])
    hits = (jnp.argmax(logits, -1) == batch.tgt_out) | ~mask
    return masked_xent(logits, batch.tgt_out, mask), {
        "token_accuracy": masked_accuracy(logits, batch.tgt_out, mask),
        "exact_tf": jnp.mean(jnp.all(hits, axis=-1)),
    }


def exact_match(vocab, tokens, pairs) -> tuple[np.ndarray, list[str]]:
    """Per example: does the decoded text (up to EOS) equal the target exactly?"""
    texts = [vocab.decode(row) for row in np.asarray(tokens)]
    return np.array([t == tgt for t, (_, tgt) in zip(texts, pairs)]), texts


def main(argv=None) -> int:
    cfg, _ = common.parse_config(Config, argv, description=__doc__.split("\n")[0])
    if cfg.keep_freed_memory:  # before JAX starts its threads
        common.keep_freed_memory()
    lab.use_host_devices(cfg.host_devices)  # before JAX starts: every core a device
    common.join_processes()  # before any other JAX call: a multi-process run, if launched as one
    task, model, optimizer, schedule, clip = common.build(cfg, build_task, build_model)
    run = common.RunDir(Path(cfg.out) / cfg.run_name)
    max_len = task.max_tgt_len + 1  # the target and its EOS

    seeds = np.arange(cfg.seed, cfg.seed + cfg.seeds)
    root = jax.random.key(0)
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(jnp.asarray(seeds))
    init_keys, train_keys = jax.vmap(lambda k: jax.random.split(k, 2), out_axes=1)(seed_keys)
    example = task.sample(jax.random.key(0), 2)

    def init_one(init_key, train_key):
        params = model.init(init_key, example.src, example.src_lengths, example.tgt_in)["params"]
        return tr.init_state(params, optimizer, train_key)

    state = jax.vmap(init_one)(init_keys, train_keys)
    n_params = count_params(jax.tree.map(lambda a: a[0], state.params))

    def loss_fn(params, batch, key):
        k_dropout, k_sampling = jax.random.split(key)
        logits, _ = model.apply(
            {"params": params},
            batch.src,
            batch.src_lengths,
            batch.tgt_in,
            sampling_rate=cfg.sampling_rate,
            deterministic=cfg.dropout == 0.0,
            rngs={"dropout": k_dropout, "sampling": k_sampling},
        )
        return seq2seq_loss(logits, batch)

    one_seed = tr.make_train_step(loss_fn, optimizer, clip_norm=clip, schedule=schedule)
    train_step, place, placement = common.on_devices(tr.vmap_seeds(one_seed), cfg)

    def batch_fn(step):
        # Every seed trains on its own stream; the batch depends on the step alone.
        batches = [
            task.sample(jax.random.fold_in(jax.random.key(1000 + int(s)), step), cfg.batch_size)
            for s in seeds
        ]
        return jax.tree.map(lambda *xs: np.stack(xs), *batches)

    pairs, held = task.eval_set(cfg.eval_size)

    @jax.jit
    def evaluate(params):
        def one(p):
            logits, _ = model.apply({"params": p}, held.src, held.src_lengths, held.tgt_in)
            loss, aux = seq2seq_loss(logits, held)
            decoded = model.apply(
                {"params": p}, held.src, held.src_lengths, method="greedy", max_len=max_len
            )
            return {"loss": loss, **aux}, decoded.tokens

        return jax.vmap(one)(params)

    @jax.jit
    def beam_decode(params):
        def one(p):
            best, _ = model.apply(
                {"params": p},
                held.src,
                held.src_lengths,
                method="beam",
                beam_width=cfg.beam_width,
                max_len=max_len,
                alpha=cfg.alpha,
            )
            return best.tokens

        return jax.vmap(one)(params)

    ckpt = Checkpointer(run.path / "checkpoints", max_to_keep=cfg.keep)
    state = common.start_or_resume(run, ckpt, place(state), cfg)
    if cfg.tensorboard:
        run.open_tensorboard(seeds, tr.current_step(state))
    run.write_json(
        "config.json",
        {
            "config": dataclasses.asdict(cfg),
            "task": task.info,
            "vocab": list(task.vocab.symbols),
            "params_per_seed": n_params,
            "seeds": seeds.tolist(),
            "placement": placement,
        },
    )
    print(
        f"{cfg.run_name}: {task.name} {task.info}, {cfg.cell} H={cfg.hidden_size}, "
        f"attention={cfg.attention}, {n_params} params/seed, {cfg.seeds} seed(s), "
        f"{cfg.steps} steps on {placement['devices']} {jax.devices()[0].platform} device(s)"
        f" ({placement['parallel']})"
    )

    def log_eval(step, state):
        metrics, tokens = distributed.to_host(evaluate(state.params))
        exact = np.array([exact_match(task.vocab, t, pairs)[0].mean() for t in tokens])
        row = {"step": step, **{k: np.asarray(v).tolist() for k, v in metrics.items()}}
        row["exact_greedy"] = exact.tolist()
        run.append_jsonl("eval.jsonl", row)
        return row, tokens

    outcome = common.train_loop(
        run, cfg, state, train_step, batch_fn, checkpointer=ckpt, log_eval=log_eval,
        metric_keys=("loss", "token_accuracy", "grad_norm", "clipped"),
    )  # fmt: skip
    state, status, message, done_steps, wall = (
        outcome.state, outcome.status, outcome.message, outcome.steps, outcome.wall_s
    )  # fmt: skip

    summary = {
        **outcome.record(),
        "params_per_seed": n_params,
        "seeds": seeds.tolist(),
        "placement": placement,
        "task": task.info,
        "eval_size": len(pairs),
        "config": dataclasses.asdict(cfg),
        "environment": common.environment(),
    }
    if status == "done":
        t_eval = time.perf_counter()
        row, greedy_tokens = log_eval(done_steps, state)
        greedy_s = time.perf_counter() - t_eval
        t_beam = time.perf_counter()
        beam_tokens = distributed.to_host(beam_decode(state.params))
        beam_s = time.perf_counter() - t_beam
        greedy_exact = np.array(
            [exact_match(task.vocab, t, pairs)[0].mean() for t in greedy_tokens]
        )
        beam_exact = np.array([exact_match(task.vocab, t, pairs)[0].mean() for t in beam_tokens])
        _, greedy_text = exact_match(task.vocab, greedy_tokens[0], pairs)
        _, beam_text = exact_match(task.vocab, beam_tokens[0], pairs)
        summary["final"] = {
            "exact_greedy": {"per_seed": greedy_exact.tolist(), **common.mean_spread(greedy_exact)},
            f"exact_beam{cfg.beam_width}": {
                "per_seed": beam_exact.tolist(),
                **common.mean_spread(beam_exact),
            },
            **{
                k: {"per_seed": np.asarray(row[k]).tolist(), **common.mean_spread(row[k])}
                for k in ("loss", "token_accuracy", "exact_tf")
            },
        }
        summary["decode_seconds"] = {"greedy_and_metrics": greedy_s, "beam": beam_s}
        summary["samples"] = [
            {"source": s, "target": t, "greedy": g, "beam": b}
            for (s, t), g, b in list(zip(pairs, greedy_text, beam_text))[:12]
        ]
        errors = [
            {"source": s, "target": t, "greedy": g}
            for (s, t), g in zip(pairs, greedy_text)
            if g != t
        ]
        summary["greedy_errors_seed0"] = {"count": len(errors), "first": errors[:12]}
    run.write_json("summary.json", summary)
    if status == "done":
        per_seed = {k: v["per_seed"] for k, v in summary["final"].items()}
        run.write_seed_csv("final.csv", summary["seeds"], per_seed)
    if status == "done" and cfg.attention != "none":
        params0 = jax.tree.map(lambda a: a[0], distributed.to_host(state.params))
    if run.primary:
        plot_curves(run, cfg)
        if status == "done" and cfg.attention != "none":
            plot_attention(run, model, params0, task, pairs[:4])
    if status == "done":
        final = summary["final"]
        beam_key = f"exact_beam{cfg.beam_width}"
        print(
            f"Held-out exact match ({len(pairs)} examples, {cfg.seeds} seed(s), mean ± std): "
            f"greedy {common.fmt_mean_std(final['exact_greedy'], 4)}, beam k={cfg.beam_width} "
            f"{common.fmt_mean_std(final[beam_key], 4)}; {wall:.0f} s"
        )
        for s in summary["samples"][:6]:
            mark = "ok" if s["greedy"] == s["target"] else "WRONG"
            print(f"  {s['source']!r:32} -> {s['greedy']!r:16} (beam {s['beam']!r}) {mark}")
    else:
        print(f"Stopped: {message}")
    run.close()
    print(f"Wrote {run.path}")
    return outcome.exit_code


def plot_curves(run: common.RunDir, cfg: Config) -> None:
    plt = common.pyplot()

    rows = run.read_jsonl("metrics.jsonl")
    if not rows:
        return
    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    evals = run.read_jsonl("eval.jsonl")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for s in range(loss.shape[1]):
        axes[0].plot(steps, loss[:, s], lw=0.6, alpha=0.8, label=f"seed {cfg.seed + s}")
    axes[0].set(title="training loss (nats / target token)", xlabel="update", yscale="log")
    axes[0].legend(fontsize=7)
    if evals:
        e_steps = [r["step"] for r in evals]
        for key, label in (
            ("exact_greedy", "exact match, greedy"),
            ("token_accuracy", "token acc."),
        ):
            values = np.array([r[key] for r in evals])
            axes[1].plot(e_steps, values.mean(1), marker="o", label=label)
            axes[1].fill_between(e_steps, values.min(1), values.max(1), alpha=0.2)
        axes[1].legend()
    axes[1].set(title="held-out (band: min-max over seeds)", xlabel="update", ylim=(0, 1.02))
    fig.suptitle(f"{cfg.run_name}: {cfg.cell} H={cfg.hidden_size}, attention={cfg.attention}")
    fig.tight_layout()
    fig.savefig(run.path / "curves.png", dpi=110)
    plt.close(fig)


def plot_attention(run: common.RunDir, model, params, task, pairs) -> None:
    """Attention weights of seed 0 on held-out examples, teacher-forced on the target."""
    plt = common.pyplot()

    batch = task.batch(pairs)
    _, weights = model.apply({"params": params}, batch.src, batch.src_lengths, batch.tgt_in)
    weights = np.asarray(weights)
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.8))
    for ax, (src, tgt), w, n_src, n_tgt in zip(
        np.atleast_1d(axes), pairs, weights, batch.src_lengths, batch.tgt_lengths
    ):
        ax.imshow(w[:n_tgt, :n_src], cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(n_src), list(src), fontsize=7)
        ax.set_yticks(range(n_tgt), list(tgt) + ["<eos>"], fontsize=7)
        ax.set(xlabel="source", ylabel="output step")
    fig.suptitle(f"{run.path.name}: attention weights (rows sum to 1)")
    fig.tight_layout()
    fig.savefig(run.path / "attention.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
