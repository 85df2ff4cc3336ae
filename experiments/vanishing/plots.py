"""The study's figures, one function each, written as PNG files into the study's
folder. A figure of a section no chosen cell takes is not drawn."""

from __future__ import annotations

import math
from pathlib import Path

import common
import numpy as np

import rnnjax

from .config import FORGET_CELL, Config, clip_cells, sweep_cells

LOG10 = 1 / math.log(10)


def plot(cfg: Config, results: dict, out: Path) -> None:
    """Every figure: ``grad_vs_distance.png`` and ``singular_values.png`` (one panel
    per family, so many cells stay readable), ``scale_sweep.png`` (cells with a
    recurrent scale), ``final_loss.png`` and ``clipping.png`` (the clipping study's
    cells)."""
    plt = common.pyplot()
    colors = {}
    for names in families(cfg).values():  # colours repeat across panels, not within one
        colors.update({name: f"C{i}" for i, name in enumerate(names)})
    for figure in (grad_vs_distance, singular_values, scale_sweep, final_loss, clipping):
        fig = figure(plt, cfg, results, colors)
        if fig is None:
            continue
        fig.tight_layout()
        fig.savefig(out / f"{figure.__name__}.png", dpi=110)
        plt.close(fig)


def families(cfg: Config) -> dict[str, list[str]]:
    """The chosen cells by the catalogue's family, in catalogue order."""
    out: dict[str, list[str]] = {}
    for name in cfg.cells:
        out.setdefault(rnnjax.cells.get(name).family or "other", []).append(name)
    return out


def _panels(plt, n: int, rows_per: int = 1, width: float = 3.6, height: float = 2.9):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows * rows_per, cols, figsize=(width * cols, height * rows * rows_per), squeeze=False
    )
    return fig, axes, cols


def grad_vs_distance(plt, cfg: Config, results: dict, colors: dict):
    """Two rows per row of families: at initialisation (longest T) and after training
    (longest training T); the tanh RNN in grey in every panel, for reference."""
    T_max = max(cfg.lengths)
    t_train = max(cfg.train_lengths)
    fams = families(cfg)
    fig, axes, cols = _panels(plt, len(fams), rows_per=2)
    base = "rnn_tanh" if "rnn_tanh" in cfg.cells else None
    for i, (fam, names) in enumerate(fams.items()):
        top, bottom = axes[2 * (i // cols)][i % cols], axes[2 * (i // cols) + 1][i % cols]
        shown = names if base is None or base in names else [base, *names]
        for name in shown:
            color = colors[name] if name in names else "0.6"
            r = results["init"][(name, T_max)]["log_norm"] * LOG10  # [S, T]
            d = np.arange(r.shape[1])[::-1]
            top.plot(d, r.mean(0), color=color, label=name)
            top.fill_between(d, r.min(0), r.max(0), color=color, alpha=0.2)
            if name == FORGET_CELL:
                c = results["init"][(name, T_max)]["log_norm_c"] * LOG10
                # dL/dc_T is exactly 0 (the loss reads h_T): plot from distance 1 on.
                top.plot(d[1:], c.mean(0)[:-1], color=color, ls="--", label=f"{name}, dL/dc_t")
            a = results["train"][(name, t_train)]["after"]["log_norm"] * LOG10
            d2 = np.arange(a.shape[1])[::-1]
            bottom.plot(d2, a.mean(0), color=color, label=name)
            bottom.fill_between(d2, a.min(0), a.max(0), color=color, alpha=0.2)
        top.set(title=f"{fam}: at initialisation, T={T_max}", xlabel="distance T - t")
        bottom.set(title=f"{fam}: after training, T={t_train}", xlabel="distance T - t")
        top.legend(fontsize=7)
        if i % cols == 0:
            top.set_ylabel("log10 ||dL/dh_t||")
            bottom.set_ylabel("log10 ||dL/dh_t||")
    for k in range(len(fams), axes.shape[1] * (axes.shape[0] // 2)):
        axes[2 * (k // cols)][k % cols].axis("off")
        axes[2 * (k // cols) + 1][k % cols].axis("off")
    fig.suptitle(
        f"Gradient reaching step t on the adding problem (H={cfg.hidden_size}; band: min-max "
        f"over {cfg.seeds} seeds; grey: rnn_tanh; training: {cfg.train_steps} steps)"
    )
    return fig


def singular_values(plt, cfg: Config, results: dict, colors: dict):
    fams = families(cfg)
    fig, axes, cols = _panels(plt, len(fams))
    for i, (fam, names) in enumerate(fams.items()):
        ax = axes[i // cols][i % cols]
        for name in names:
            j = results["jacobian"][name]
            ax.semilogy(j["distance"], j["sigma_max"], color=colors[name], label=f"{name} max")
            ax.semilogy(
                j["distance"], np.maximum(j["sigma_min"], 1e-38), color=colors[name], ls=":"
            )
        ax.set(title=f"{fam} (dotted: sigma_min)", xlabel="distance T - t")
        ax.set_ylim(bottom=1e-30, top=10)
        ax.legend(fontsize=7)
    for k in range(len(fams), axes.size):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(f"singular values of dh_T/dh_t (T={cfg.sweep_len}, seed 0)")
    return fig


def scale_sweep(plt, cfg: Config, results: dict, colors: dict):
    cells = sweep_cells(cfg)
    if not cells:  # no chosen cell declares a recurrent scale
        return None
    grid = np.array(
        [[np.mean(results["sweep"][(n, g)]["log10_ratio"]) for g in cfg.scales] for n in cells]
    )
    fig, ax = plt.subplots(figsize=(1.3 * len(cfg.scales) + 2, 0.6 * len(cells) + 1.6))
    lim = max(1.0, float(np.nanmax(np.abs(np.clip(grid, -40, 40)))))
    im = ax.imshow(np.clip(grid, -lim, lim), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(cfg.scales)), [f"g={g}" for g in cfg.scales])
    ax.set_yticks(range(len(cells)), cells)
    for i in range(len(cells)):
        for k in range(len(cfg.scales)):
            ax.text(k, i, f"{grid[i, k]:.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, label="log10 ||dL/dh_1|| / ||dL/dh_T||")
    ax.set_title(f"recurrent scale sweep, T={cfg.sweep_len} (blue: vanishing, red: exploding)")
    return fig


def final_loss(plt, cfg: Config, results: dict, colors: dict):
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    Ts = list(cfg.train_lengths)
    styles = {}
    for k, names in enumerate(families(cfg).values()):  # a marker per family
        styles.update({n: "osD^vP*X"[k % 8] for n in names})
    for name in cfg.cells:
        m = np.array([results["train"][(name, T)]["mse"] for T in Ts])  # [len, S]
        ax.errorbar(
            Ts,
            m.mean(1),
            yerr=m.std(1, ddof=1) if m.shape[1] > 1 else None,
            marker=styles[name],
            color=colors[name],
            label=f"{name} ({rnnjax.cells.get(name).family})",
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
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def clipping(plt, cfg: Config, results: dict, colors: dict):
    cells = clip_cells(cfg)
    if not cells:  # no chosen cell the clipping study takes: nothing to draw
        return None
    fig, axes = plt.subplots(1, len(cells), figsize=(4 * len(cells), 3.6), squeeze=False)
    g = max(cfg.clip_scales)
    for ax, name in zip(axes[0], cells):
        for on, style in ((False, "-"), (True, "--")):
            norms = results["clip"][(name, g, on)]["grad_norm"]
            if norms.size:
                ax.semilogy(np.median(norms, axis=1), style, label=f"clip {'on' if on else 'off'}")
        ax.axhline(cfg.clip_norm, color="r", lw=0.8)
        ax.set(title=f"{name}, g={g}", xlabel="update")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("global grad norm (median over seeds)")
    return fig
