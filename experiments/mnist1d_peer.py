"""The MNIST-1D paper's GRU in PyTorch, on our data: the reference route for our row.

    python experiments/mnist1d_peer.py --shuffle_order notebook --out results/mnist1d/peer

The setting of the paper's notebook (``notebooks/models.py`` ``GRUBase``,
``notebooks/train.py``, ``mnist1d-classification.ipynb``; written here from reading
them, not copied): ``nn.GRU(1, 6, bidirectional=True)`` with PyTorch's default
initialisation, a ``Linear`` on all 40 outputs flattened (5,134 parameters), Adam 1e-2,
batches of 100 taken in order through the training set (no reshuffling), 6,000 steps,
the test accuracy at the end. The data are ``rnnjax.tasks.mnist_1d``'s (the package's
generator), so a difference from ``train.py --readout all`` is the model and the
training loop, not the data. Writes ``<out>/<name>/summary.json`` (per seed: the final
and the best test accuracy over the evaluations, every 250 steps) and ``final.csv``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import common

from rnnjax import stats
from rnnjax.tasks import mnist_1d


@dataclasses.dataclass
class Config:
    shuffle_order: str = "none"  # none (the data as generated), package or notebook
    seeds: int = 5  # torch.manual_seed(seed) for seed = seed0, seed0 + 1, ...
    seed: int = 0  # the first seed (the notebook uses 42, once)
    steps: int = 6000  # updates (the notebook's classification run)
    batch_size: int = 100  # sequences per update, taken in order through the training set
    learning_rate: float = 1e-2  # Adam's learning rate (constant)
    hidden_size: int = 6  # units per direction (the notebook's GRUBase default)
    eval_every: int = 250  # test accuracy every this many updates (and at the end)
    threads: int = 0  # torch's intra-op threads; 0: its default
    out: str = "runs/mnist1d_peer"  # the parent folder of run folders
    name: str = ""  # default: gru-bi-readout_all-<shuffle_order>

    CHOICES = {"shuffle_order": ("none", "package", "notebook")}

    def validate(self) -> None:
        for field in ("seeds", "steps", "batch_size", "hidden_size", "eval_every"):
            if getattr(self, field) < 1:
                raise ValueError(f"--{field} must be >= 1; got {getattr(self, field)}.")
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be > 0; got {self.learning_rate}.")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0: torch's default); got {self.threads}.")

    @property
    def run_name(self) -> str:
        return self.name or f"gru-bi-readout_all-{self.shuffle_order}"


def data(cfg: Config):
    if cfg.shuffle_order == "notebook":
        arrays, _ = mnist_1d.load(False)
        order = mnist_1d.notebook_order(arrays["x"].shape[1])
        arrays = {**arrays, "x": arrays["x"][:, order], "x_test": arrays["x_test"][:, order]}
    else:
        arrays, _ = mnist_1d.load(cfg.shuffle_order == "package")
    return arrays


def train_one(cfg: Config, arrays, seed: int) -> dict:
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class Model(nn.Module):
        def __init__(self, hidden: int, steps: int):
            super().__init__()
            self.gru = nn.GRU(1, hidden, batch_first=True, bidirectional=True)
            self.linear = nn.Linear(2 * hidden * steps, 10)

        def forward(self, x):  # x [B, T]
            out, _ = self.gru(x[..., None])  # zero initial state, as the notebook's 0 * randn
            return self.linear(out.reshape(out.shape[0], -1))

    x = torch.tensor(arrays["x"], dtype=torch.float32)
    y = torch.tensor(arrays["y"], dtype=torch.long)
    x_test = torch.tensor(arrays["x_test"], dtype=torch.float32)
    y_test = torch.tensor(arrays["y_test"], dtype=torch.long)
    model = Model(cfg.hidden_size, x.shape[1])
    opt = torch.optim.Adam(model.parameters(), cfg.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    evals = []
    for step in range(cfg.steps + 1):  # the notebook's loop runs total_steps + 1 updates
        start = (step * cfg.batch_size) % len(x)
        xb, yb = x[start : start + cfg.batch_size], y[start : start + cfg.batch_size]
        loss = loss_fn(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad():
                acc = float((model(x_test).argmax(-1) == y_test).float().mean())
            evals.append((step, acc))
    params = sum(p.numel() for p in model.parameters())
    best_step, best = max(evals, key=lambda e: e[1])
    return {"final": evals[-1][1], "best": best, "best_step": best_step, "params": params}


def main(argv=None) -> int:
    cfg, _ = common.parse_config(Config, argv, description=__doc__.split("\n")[0])
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    arrays = data(cfg)
    run = common.RunDir(Path(cfg.out) / cfg.run_name)
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    t0 = time.perf_counter()
    results = []
    for seed in seeds:
        r = train_one(cfg, arrays, seed)
        results.append(r)
        print(
            f"seed {seed}: final test accuracy {100 * r['final']:.1f}%, best "
            f"{100 * r['best']:.1f}% at step {r['best_step']} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    wall = time.perf_counter() - t0
    final = {k: [r[k] for r in results] for k in ("final", "best", "best_step")}
    summary = {
        "config": dataclasses.asdict(cfg),
        "seeds": seeds,
        "params_per_seed": results[0]["params"],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "final": {k: {"per_seed": v, **common.mean_spread(v)} for k, v in final.items()},
        "wall_s": wall,
        "environment": common.environment(),
    }
    run.write_json("summary.json", summary)
    run.write_seed_csv(
        "final.csv",
        seeds,
        {
            "accuracy": final["final"],
            "best_accuracy": final["best"],
            "best_step": final["best_step"],
        },
    )
    pct = stats.summarize([100 * v for v in final["final"]])
    print(
        f"{cfg.run_name}: final test accuracy {stats.fmt_ci(pct, 3)}% (mean [95% CI over "
        f"seeds]) over {len(seeds)} seeds; {wall:.0f} s; wrote {run.path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
