"""The study's numbers and words: ``summary.json``'s sections (:func:`summarise`),
``report.md`` (:func:`write_report`) and ``findings.md``, whose sentences
(:func:`findings`) are computed from the measurements."""

from __future__ import annotations

from pathlib import Path

import common
import numpy as np

import rnnjax

from .config import (
    FORGET_CELL,
    REGULARIZERS,
    Config,
    clip_cells,
    clippable_names,
    command_line,
    forget_cells,
    get_cell,
    reg_cells,
    sweep_cells,
    unscaled_cells,
)

THEORY_CELL = "rnn_tanh"  # the theory check: J_t = diag(1 - h_t^2) W_h^T


def ms(values, digits=3):
    """The mean over seeds and its 95% bootstrap interval: ``"0.776 [0.757, 0.807]"``."""
    from rnnjax import stats

    return stats.fmt_ci(common.mean_spread(values), digits)


def trained_rows(cfg: Config, results: dict) -> list[dict]:
    """Every trained network's outcome, one row per seed (``trained.csv``): the cell,
    the regulariser (``none``), T, the seed, the test MSE and the log10 gradient ratio
    and per-step factor after training."""
    rows = []
    runs = [((name, "none", T), r) for (name, T), r in results["train"].items()]
    runs += [
        ((name, kind, max(cfg.train_lengths)), r)
        for (name, kind), r in results.get("reg", {}).items()
    ]
    for (name, kind, T), r in runs:
        after = r["after"]
        for i in range(len(r["mse"])):
            rows.append({
                "cell": name, "regularizer": kind, "T": int(T), "seed": i,  # seeds 0..n-1
                "mse": float(r["mse"][i]),
                "log10_ratio_after": float(after["log10_ratio"][i]),
                "factor_after": float(after["factor"][i]) if "factor" in after else float("nan"),
            })  # fmt: skip
    return rows


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
        }
        if name == THEORY_CELL:  # the theory check's prediction holds for the tanh RNN only
            s["init"][f"{name}/T{T}"]["predicted_factor"] = common.mean_spread(
                np.exp(r["log_tanh_prime_rms"])
            )
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
    for (name, kind), r in results.get("reg", {}).items():
        s.setdefault("reg", {})[f"{name}/{kind}"] = {
            "mse": common.mean_spread(r["mse"]),
            "mse_per_seed": r["mse"].tolist(),
            "log10_ratio_after": common.mean_spread(r["after"]["log10_ratio"]),
            "rate": cfg.reg_rate,
            "T": max(cfg.train_lengths),
            "status": r["status"],
        }
    s["horizon"] = horizon(cfg, results)
    for name, r in results["jacobian"].items():
        s["jacobian"][name] = {k: np.asarray(v).tolist() for k, v in r.items()}
    return s


def horizon(cfg: Config, results: dict) -> dict:
    """The memory horizon per cell: the gradient's per-step factor and the orders of
    magnitude it loses over the longest length at initialisation, and after training
    the longest length of ``train_lengths`` at which the cell solves the adding problem
    (mean test MSE over seeds below ``solve_mse``), with the seeds that do."""
    T_max = max(cfg.lengths)
    out = {}
    for name in cfg.cells:
        r = results["init"][(name, T_max)]
        solved = [
            T
            for T in cfg.train_lengths
            if np.mean(results["train"][(name, T)]["mse"]) < cfg.solve_mse
        ]
        longest = max(solved) if solved else None
        mse = results["train"][(name, longest or max(cfg.train_lengths))]["mse"]
        out[name] = {
            "family": rnnjax.cells.get(name).family or "-",
            "T_init": T_max,
            "factor": common.mean_spread(r["factor"]),
            "log10_lost": common.mean_spread(-r["log10_ratio"]),
            "solved_T": longest,
            "seeds_solving": int(np.sum(np.asarray(mse) < cfg.solve_mse)),
            "seeds": int(np.size(mse)),
            "mse_at": common.mean_spread(mse),
        }
    return out


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
        f"(every `mean [a, b]`: the mean over the n = {cfg.seeds} seeds and its 95% percentile-"
        "bootstrap interval, which with so few seeds reads as their spread, not a guarantee; "
        f"per-seed trained outcomes in trained.csv), {cfg.batch_size} sequences per gradient "
        "measurement. "
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
    if FORGET_CELL in cells:  # its carry's cell state c
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
    if not sweep_cells(cfg):
        lines.append(
            "| (not run: no cell in --cells declares a recurrent scale) |" + " |" * len(cfg.scales)
        )
    for name in sweep_cells(cfg):
        row = [
            f"{ms(results['sweep'][(name, g)]['log10_ratio'])} ({np.mean(results['sweep'][(name, g)]['factor']):.3f})"
            for g in cfg.scales
        ]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    if unscaled_cells(cfg):
        lines += [
            "",
            "No recurrent scale (the cell declares none, `Cell.recurrent_scale`), not swept: "
            + ", ".join(unscaled_cells(cfg))
            + ".",
        ]
    if "rnn_tanh" in sweep_cells(cfg):
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
        "![scale sweep](scale_sweep.png)" if sweep_cells(cfg) else "",
        "",
        "## 4. LSTM forget-bias ablation",
        "",
        "| forget bias | "
        + " | ".join(f"log10 ratio T={T}" for T in L)
        + f" | test MSE after training, T={max(cfg.train_lengths)} |",
        "|---|" + "---|" * (len(L) + 1),
    ]
    if not forget_cells(cfg):
        lines.append(f"| (not run: no {FORGET_CELL} in --cells) |" + " |" * (len(L) + 1))
    for forget in cfg.forget_biases if forget_cells(cfg) else ():
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
        lines.append(f"| (not run: no {clippable_names(cfg)} in --cells) |" + " |" * 7)
    for name in clip_cells(cfg):
        for g in cfg.clip_scales:
            for on in (True, False):
                c = summary["clip"][f"{name}/g{g}/{'on' if on else 'off'}"]
                lines.append(
                    f"| {name} | {g} | {'on' if on else 'off'} | {ms(results['clip'][(name, g, on)]['clip_fraction'])} "
                    f"| {c['median_grad_norm']:.3g} | {c['max_grad_norm']:.3g} | {ms(results['clip'][(name, g, on)]['mse'])} | {c['status']} |"
                )
    no_scale = [n for n in unscaled_cells(cfg) if not get_cell(n, cfg.hidden_size).gated]
    if no_scale:
        lines += [
            "",
            "Ungated, but with no recurrent scale to set g by, not run: "
            + ", ".join(no_scale)
            + ".",
        ]
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
    lines += ["", "![final loss](final_loss.png)", ""]
    lines += horizon_section(cfg, summary["horizon"])
    lines += regularizer_section(cfg, results)
    lines += ["", "## What the numbers show", ""]
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


def horizon_section(cfg: Config, table: dict) -> list[str]:
    T_max = max(cfg.lengths)
    lines = [
        "## 7. The memory horizon",
        "",
        f"Per cell: the gradient's per-step factor and the orders of magnitude it loses over "
        f"T={T_max} at initialisation (section 1), and the longest T of the training sweep "
        f"({', '.join(map(str, cfg.train_lengths))}) at which the trained cell solves the adding "
        f"problem. Rule: solved at T when the mean test MSE over the {cfg.seeds} seeds is below "
        f"{cfg.solve_mse:g} ({cfg.solve_mse / (1 / 6):.0%} of the 0.167 baseline of always "
        "predicting 1); seeds: how many of them are below it there (at the longest T when none "
        "solves).",
        "",
        f"| cell | family | factor per step | log10 lost over T={T_max} | solved up to T | seeds | test MSE there |",
        "|---|---|---|---|---|---|---|",
    ]
    order = sorted(
        table, key=lambda n: (-(table[n]["solved_T"] or 0), table[n]["log10_lost"]["mean"])
    )
    for name in order:
        h = table[name]
        lines.append(
            f"| {name} | {h['family']} | {common.fmt_mean_std(h['factor'], 4)} | "
            f"{common.fmt_mean_std(h['log10_lost'], 3)} | {h['solved_T'] or 'none'} | "
            f"{h['seeds_solving']}/{h['seeds']} | {common.fmt_mean_std(h['mse_at'], 3)} |"
        )
    return lines + [""]


def regularizer_section(cfg: Config, results: dict) -> list[str]:
    reg = results.get("reg", {})
    if not reg:
        return []
    T = max(cfg.train_lengths)
    lines = [
        f"## 8. Regularisers (rate {cfg.reg_rate}, T={T}, {cfg.train_steps} Adam steps)",
        "",
        "Zoneout (Krueger et al. 2017; every carry field), variational recurrent dropout "
        "(Gal & Ghahramani 2016; one mask per sequence on the state entering `h W_h`) and "
        "weight drop (DropConnect on `W_h`, Merity et al. 2018; one mask per update), each "
        "alone at the same rate, against the cell trained without (section 6). Test MSE "
        "deterministic (zoneout's expectation, the dropouts off).",
        "",
        "| cell | regulariser | test MSE | log10 ratio after training |",
        "|---|---|---|---|",
    ]
    for name in reg_cells(cfg):
        base = results["train"][(name, T)]
        lines.append(f"| {name} | none | {ms(base['mse'])} | {ms(base['after']['log10_ratio'])} |")
        for kind in REGULARIZERS:
            r = reg[(name, kind)]
            lines.append(f"| {name} | {kind} | {ms(r['mse'])} | {ms(r['after']['log10_ratio'])} |")
    return lines + [""]


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

    if "rnn_tanh" in sweep_cells(cfg):
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
    if forget_cells(cfg) and len(cfg.forget_biases) > 1:
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
    table = horizon(cfg, results)
    families: dict[str, list[str]] = {}
    for name in cfg.cells:
        families.setdefault(table[name]["family"] or "other", []).append(name)
    best = {
        fam: min(names, key=lambda n: table[n]["log10_lost"]["mean"])
        for fam, names in families.items()
    }
    ranked = sorted(best, key=lambda f: table[best[f]]["log10_lost"]["mean"])
    out.append(
        f"- Families by the gradient their best cell keeps over T={T_max} at initialisation "
        "(orders of magnitude lost, fewest first): "
        + ", ".join(f"{f} ({best[f]} {table[best[f]]['log10_lost']['mean']:.1f})" for f in ranked)
        + "."
    )
    solvers = sorted(
        (n for n in cfg.cells if table[n]["solved_T"]),
        key=lambda n: (-table[n]["solved_T"], table[n]["mse_at"]["mean"]),
    )
    unsolved = [n for n in cfg.cells if not table[n]["solved_T"]]
    out.append(
        f"- Memory horizon after {cfg.train_steps} steps (test MSE < {cfg.solve_mse:g}): "
        + (
            ", ".join(f"{n} up to T={table[n]['solved_T']}" for n in solvers)
            if solvers
            else "no cell solves any length"
        )
        + (
            f"; solving none of T = {', '.join(map(str, cfg.train_lengths))}: {', '.join(unsolved)}"
            if unsolved
            else ""
        )
        + "."
    )
    kept = [n for n in cfg.cells if table[n]["log10_lost"]["mean"] < 5]
    if kept:
        solved_kept = [n for n in kept if table[n]["solved_T"]]
        out.append(
            f"- Keeping the gradient at initialisation (under 5 orders lost over T={T_max}: "
            f"{', '.join(kept)}) "
            + (
                f"went with solving the task for {', '.join(solved_kept)}, not for "
                f"{', '.join(sorted(set(kept) - set(solved_kept))) or 'none'}"
                if solved_kept
                else "solved the task for none of them"
            )
            + ": a recurrence that carries gradient still has to compute the answer from what it carries."
        )
    for name in reg_cells(cfg):
        if (name, REGULARIZERS[0]) not in results.get("reg", {}):
            continue
        base = np.mean(train[(name, t_train)]["mse"])
        parts = [
            f"{kind} {np.mean(results['reg'][(name, kind)]['mse']):.3g}" for kind in REGULARIZERS
        ]
        out.append(
            f"- Regularisers on the {name} at rate {cfg.reg_rate}, T={t_train}: test MSE without "
            f"{base:.3g}; " + ", ".join(parts) + "."
        )
    order_mse = sorted(cfg.cells, key=lambda n: np.mean(train[(n, t_train)]["mse"]))
    order_grad = sorted(cfg.cells, key=lambda n: -mean(train[(n, t_train)]["after"], "log10_ratio"))
    out.append(
        f"- At T={t_train}, cells ranked by test MSE (best first): {', '.join(order_mse)}; ranked by how "
        f"much gradient reaches the first step after training: {', '.join(order_grad)}."
    )
    return out
