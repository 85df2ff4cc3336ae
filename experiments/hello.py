"""The "hello" Elman RNN of REFERENCE.md section 1, step by step, then trained.

Vocabulary {h, e, l, o}, one-hot inputs, hidden size 3 (``W_x`` is 3x4 in column-vector
form; ``[4, 3]`` here, row-vector form), ``h_0 = 0``. Feeding h, e, l, l, the network
reads the distribution of the next letter after each one; after training, "o" follows
"hell". The same input "l" must give "l" once and "o" once: only the hidden state tells
them apart.

    python experiments/hello.py [--seed 0] [--learning_rate 0.05] [--max_steps 2000]
                                [--tensorboard]
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import common
import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax

VOCAB = "helo"
WORD = "hello"


@dataclasses.dataclass
class Config:
    seed: int = 0  # the PRNG seed of the initial weights
    hidden_size: int = 3  # H (REFERENCE.md section 1: 3)
    learning_rate: float = 0.05  # Adam's step size
    max_steps: int = 2000  # stop here if the letters are not learned by then
    target_prob: float = 0.9  # train until every next letter has at least this probability
    out_dir: str = "runs/hello"  # where summary.json (and tensorboard/) go
    # mirror each update's loss and gradient norm to TensorBoard (tensorboardX) under
    # <out_dir>/tensorboard
    tensorboard: bool = False

    def validate(self) -> None:
        for name in ("hidden_size", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1; got {getattr(self, name)}.")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0; got {self.learning_rate}.")
        if not 0.0 < self.target_prob < 1.0:
            raise ValueError(f"--target_prob must lie in (0, 1); got {self.target_prob}.")


def one_hot(text: str) -> jax.Array:
    unknown = sorted(set(text) - set(VOCAB))
    if unknown:
        raise ValueError(f"text must use only the letters {list(VOCAB)}; got {unknown}.")
    return jax.nn.one_hot(jnp.array([VOCAB.index(ch) for ch in text]), len(VOCAB))


def init(config: Config):
    cell = rnnjax.elman(config.hidden_size, activation="tanh")
    cell_key, out_key = jax.random.split(jax.random.key(config.seed))
    params = {
        "cell": cell.init(cell_key, len(VOCAB)),
        "out": rnnjax.readout_init(out_key, config.hidden_size, len(VOCAB)),
    }
    return cell, params


def forward(cell, params, xs):
    """Logits ``[T, V]`` for inputs ``[T, V]``: the library's scan, then the readout."""
    _, hs = rnnjax.scan(cell, params["cell"], xs)
    return rnnjax.readout(params["out"], hs)


def intermediates(cell, params, xs) -> dict[str, np.ndarray]:
    """The table of section 1: per step t, x W_x, h_{t-1} W_h + b, h_t, y_t, softmax(y_t).

    ``h_t`` and ``y_t`` come from the library (``rnnjax.scan``, ``rnnjax.readout``);
    the two pre-activation terms are the pieces of ``h_t`` shown separately.
    """
    p = params["cell"]
    _, hs = rnnjax.scan(cell, p, xs)
    h_prev = jnp.concatenate([cell.initial_carry()[None], hs[:-1]])
    ys = rnnjax.readout(params["out"], hs)
    return {
        "x W_x": np.asarray(xs @ p.w_x),
        "h W_h + b": np.asarray(h_prev @ p.w_h + p.b),
        "h_t": np.asarray(hs),
        "y_t": np.asarray(ys),
        "softmax(y_t)": np.asarray(jax.nn.softmax(ys)),
    }


def print_table(table: dict[str, np.ndarray], text: str, file=sys.stdout) -> None:
    fmt = lambda row: "[" + ", ".join(f"{v:+.3f}" for v in row) + "]"  # noqa: E731
    for t, ch in enumerate(text):
        print(f"step {t + 1}: input {ch!r}", file=file)
        for name, values in table.items():
            print(f"  {name:<13} {fmt(values[t])}", file=file)
        best = VOCAB[int(np.argmax(table["softmax(y_t)"][t]))]
        print(f"  predicted next letter: {best!r}", file=file)


def print_probs(probs: np.ndarray, text: str, title: str, file=sys.stdout) -> None:
    print(title, file=file)
    print(
        "  after   " + "  ".join(f"{'p(' + c + ')':>5}" for c in VOCAB) + "   predicted", file=file
    )
    for t in range(len(text)):
        row = "  ".join(f"{v:.3f}" for v in probs[t])
        pred = VOCAB[int(np.argmax(probs[t]))]
        print(f"  {text[: t + 1]!r:<7} {row}   {pred!r}", file=file)


def train(config: Config, cell, params, xs, targets, board=None):
    """Adam until every next letter has ``target_prob`` (or ``max_steps``); with a
    ``board`` (:class:`common.TensorBoard`), each update's loss, gradient norm and
    learning rate go to it as ``metrics/*``."""
    opt = optax.adam(config.learning_rate)
    opt_state = opt.init(params)

    def loss_fn(params):
        logits = forward(cell, params, xs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @jax.jit
    def train_step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        probs = jax.nn.softmax(forward(cell, params, xs))
        target_probs = jnp.take_along_axis(probs, targets[:, None], axis=-1)[:, 0]
        learned = jnp.all(target_probs >= config.target_prob)
        grad_norm = optax.tree.norm(grads)
        return optax.apply_updates(params, updates), opt_state, loss, grad_norm, learned

    history = []
    for step in range(1, config.max_steps + 1):
        new_params, opt_state, loss, grad_norm, learned = train_step(params, opt_state)
        history.append(float(loss))
        if board is not None:
            board.log(
                "metrics",
                {
                    "step": step,
                    "loss": float(loss),
                    "grad_norm": float(grad_norm),
                    "lr": config.learning_rate,  # constant; the tag train.py uses
                },
            )
        if bool(learned):  # the params before this update already meet target_prob
            return params, step - 1, history
        params = new_params
    return params, config.max_steps, history


def main(argv=None) -> dict:
    config, _ = common.parse_config(Config, argv, description=__doc__.split("\n")[0])
    if config.tensorboard:
        with common.usage_errors():  # before any work, if tensorboardX is not installed
            common.tensorboard_available()

    inputs, targets_text = WORD[:-1], WORD[1:]  # h, e, l, l -> e, l, l, o
    xs = one_hot(inputs)
    targets = jnp.array([VOCAB.index(ch) for ch in targets_text])
    cell, params = init(config)

    print(
        f"Elman RNN, vocabulary {list(VOCAB)}, hidden size {config.hidden_size}, seed {config.seed}"
    )
    print("Forward pass at initialisation (row vectors: h_t = tanh(x W_x + h W_h + b)):")
    table = intermediates(cell, params, xs)
    print_table(table, inputs)
    before = table["softmax(y_t)"]
    print()
    print_probs(before, inputs, "Next-letter probabilities before training:")

    out = Path(config.out_dir)
    board = None
    if config.tensorboard:
        board = common.TensorBoard(out / "tensorboard", seeds=[], start_step=0)
    start = time.perf_counter()
    try:
        params, steps, history = train(config, cell, params, xs, targets, board)
    finally:
        if board is not None:
            board.close()
    wall = time.perf_counter() - start
    after = np.asarray(jax.nn.softmax(forward(cell, params, xs)))
    predicted = "".join(VOCAB[int(i)] for i in np.argmax(after, -1))
    print()
    print_probs(
        after, inputs, f"Next-letter probabilities after {steps} Adam steps ({wall:.1f} s):"
    )
    ok = predicted == targets_text
    print(
        f"\nPrediction after 'hell': {predicted[-1]!r} "
        f"({'correct' if ok else 'NOT learned within max_steps'}; all four: {predicted!r})"
    )

    summary = {
        "config": dataclasses.asdict(config),
        "steps": steps,
        "wall_s": wall,
        "solved": ok,
        "predicted": predicted,
        "loss_first": history[0] if history else None,
        "loss_last": history[-1] if history else None,
        "probs_before": before.tolist(),
        "probs_after": after.tolist(),
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"Wrote {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    summary = main()
    sys.exit(0 if summary["solved"] else 1)
