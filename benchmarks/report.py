"""``benchmark.md`` and the figures, from the record ``benchmarks/run.py`` writes.

python benchmarks/report.py results/benchmarks/benchmark.json   # rewrite md + plots
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from peers import is_ours

MODES = {
    "train": "Training step (forward over the whole sequence, loss, backward for all weights)",
    "infer": "Inference (forward only)",
}


def _mib(b) -> str:
    return "–" if b is None else f"{b / 2**20:.1f}"


def _memory(m: dict) -> str:
    parts = []
    if m.get("xla_program_bytes") is not None:
        parts.append(f"XLA {_mib(m['xla_program_bytes'])}")
    if m.get("rss_growth_bytes") is not None:
        parts.append(f"RSS +{_mib(m['rss_growth_bytes'])}")
    if m.get("torch_cuda_peak_bytes") is not None:
        parts.append(f"CUDA {_mib(m['torch_cuda_peak_bytes'])}")
    return ", ".join(parts) or "–"


def _shape(s: dict) -> str:
    return f"{s['batch']}, {s['steps']}, {s['inputs']}, {s['hidden']}"


def tables(record: dict) -> list[str]:
    lines = []
    for mode, title in MODES.items():
        rows = [r for r in record["rows"] if r["mode"] == mode]
        if not rows:
            continue
        lines += [
            f"## {title}",
            "",
            "| config (B, T, I, H) | cell | backend | median ms (IQR) | min ms | first call s "
            "| tokens/s | GFLOP/s | % of matmul peak | memory MiB | rnnjax speed-up (IQR) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            order = sorted(r["times"].items(), key=lambda kv: kv[1]["median_s"])
            for name, t in order:
                s = r["speedup"].get(name)
                speed = "–" if s is None else f"{s['median']:.2f}x ({s['q1']:.2f}-{s['q3']:.2f})"
                lines.append(
                    f"| {r['config']} ({_shape(r['shape'])}) | {r['cell']} | {name} | "
                    f"{t['median_s'] * 1e3:.2f} ({t['q1_s'] * 1e3:.2f}-{t['q3_s'] * 1e3:.2f}) | "
                    f"{t['min_s'] * 1e3:.2f} | {t['compile_and_first_call_s']:.2f} | "
                    f"{t['tokens_per_s']:,.0f} | {t['gflops']:.1f} | "
                    f"{100 * t['fraction_of_peak']:.0f}% | {_memory(t['memory'])} | {speed} |"
                )
        lines.append("")
    return lines


def targets(record: dict) -> list[str]:
    goal, goal_peak = (
        record["targets"]["train_speedup_over_best_peer"],
        record["targets"]["large_fraction_of_peak"],
    )
    lines = [
        "## Targets",
        "",
        f"Training step: rnnjax at least {goal}x faster than the best peer; inference at "
        f"least as fast (1.00x). Speed-up = the best peer's time / rnnjax's, per round, "
        "median.",
        "",
        "| config | cell | mode | best peer | its median ms | rnnjax ms | speed-up | target "
        "| met | the target needs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    peak = (record.get("matmul_peak") or {}).get("peak_gflops")
    beyond = []
    for r in record["rows"]:
        target = goal if r["mode"] == "train" else 1.0
        if "rnnjax" not in r["times"]:  # failed the gate (or crashed): not timed
            why = failed_gate(record, r).get("rnnjax", "not timed")
            lines.append(
                f"| {r['config']} | {r['cell']} | {r['mode']} | | | {why} | | "
                f"{target:.2f}x | no | |"
            )
            continue
        peers = [n for n in r["speedup"] if not is_ours(n)]
        if not peers:
            continue
        best = min(peers, key=lambda n: r["times"][n]["median_s"])
        s = r["speedup"][best]["median"]
        needs = needed_fraction_of_peak(r, r["times"][best]["median_s"] / target, peak)
        if needs is not None and needs > 1:
            beyond.append(f"{r['config']} {r['cell']} {r['mode']}")
        lines.append(
            f"| {r['config']} | {r['cell']} | {r['mode']} | {best} | "
            f"{r['times'][best]['median_s'] * 1e3:.2f} | "
            f"{r['times']['rnnjax']['median_s'] * 1e3:.2f} | {ratio_text(s, target)} | "
            f"{target:.2f}x | {'yes' if s >= target else 'no'} | "
            f"{'n/a' if needs is None else f'{100 * needs:.0f}%'} |"
        )
    lines += [
        "",
        "*The target needs*: the share of the matmul peak measured in this run that "
        "rnnjax's step would have to run at to meet the target: the matmul FLOPs the step "
        "cannot do without (`least_matmul_flops` in `benchmarks/report.py`; for a "
        "training step 5/6 of the stated 3x count when I = H, as the step does not take "
        "the input's gradient) over the time the target allows "
        "(the best peer's median / the target). Above 100%, meeting it takes the step's "
        "matmuls, the small per-step ones included, running faster than the large square "
        "matmul that set the peak.",
    ]
    if peak:
        top = {}
        for r in record["rows"]:
            for n, t in r["times"].items():
                f = needed_fraction_of_peak(r, t["median_s"], peak)
                if f > top.get(r["mode"], (0,))[0]:
                    top[r["mode"]] = (f, n, r)
        found = [
            f"{'training step' if mode == 'train' else 'inference'} {100 * f:.0f}% "
            f"({n}, {r['config']} {r['cell']})"
            for mode, (f, n, r) in sorted(top.items(), reverse=True)
        ]
        lines += [
            "",
            "Counted the same way (the least work), the highest any backend ran at here: "
            + "; ".join(found)
            + ".",
        ]
    if beyond:
        lines += ["", f"Rows that need more than the measured peak: {', '.join(beyond)}."]
    for r in record["rows"]:
        if r["config"] == "large" and r["mode"] == "train" and "rnnjax" not in r["times"]:
            lines.append(
                f"\nLarge {r['cell']} training step: rnnjax not timed "
                f"({failed_gate(record, r).get('rnnjax', 'no timing')}); target "
                f"{100 * goal_peak:.0f}%: not met."
            )
        if r["config"] == "large" and r["mode"] == "train" and "rnnjax" in r["times"]:
            f = r["times"]["rnnjax"]["fraction_of_peak"]
            lines.append(
                f"\nLarge {r['cell']} training step: rnnjax reaches {100 * f:.0f}% of the "
                f"measured matmul peak, by the stated 3x count (target {100 * goal_peak:.0f}%: "
                f"{'met' if f >= goal_peak else 'not met'})."
            )
    lines += variant_targets(record)
    lines += gpu_targets(record)
    lines += excluded(record)
    lines.append("")
    return lines


def ratio_text(value: float, target: float) -> str:
    """A speed-up to two decimals, or four where two would round up to a target it
    misses (1.2496x shown as 1.25x beside "no")."""
    if round(value, 2) >= target > value:
        return f"{value:.4f}x"
    return f"{value:.2f}x"


def failed_gate(record: dict, row: dict) -> dict[str, str]:
    """``{backend: why}`` for the backends of ``row``'s config and cell that failed the
    correctness gate (so were not timed)."""
    out = {}
    for g in record.get("gates", []):
        if g["config"] != row["config"] or g["cell"] != row["cell"]:
            continue
        for name, r in g["backends"].items():
            if not r.get("ok"):
                out[name] = "failed the gate: " + (
                    r.get("error")
                    or f"output error {r['max_abs_output_error']:.1e}, gradient error "
                    f"{r['max_rel_grad_error']:.1e}"
                )
    return out


def excluded(record: dict) -> list[str]:
    """The backends left out of the tables above, and why: a failed gate (not timed,
    not a candidate for the best peer) or not available here."""
    lines = []
    seen = set()
    for r in record["rows"]:
        key = (r["config"], r["cell"])
        if key in seen:
            continue
        seen.add(key)
        for name, why in failed_gate(record, r).items():
            lines.append(f"- {r['config']} {r['cell']}: {name} {why}.")
    if lines:
        lines = ["", "Not timed, so not in the best peer or the speed-ups:", ""] + lines
    if record.get("skipped"):
        lines += [
            "",
            "Skipped (not installed, no such cell, needs a GPU, or an option the cell "
            "cannot take):",
            "",
        ]
        lines += [f"- {k}: {v}" for k, v in sorted(record["skipped"].items())]
    return lines


def least_matmul_flops(row: dict) -> float:
    """The matmul FLOPs a row's call cannot do without: what ``run.py`` recorded in the
    row (``least_matmul_flops``, from the cell catalogue's ``matmul_flops``:
    ``run.least_flops_per_call``). Forward: the input and the recurrent matmuls,
    ``2 G H (I + H)`` per token for a cell of G gates (the stated count). A training
    step adds the weights' gradients (``2 G H (I + H)``) and the carry's gradient
    through the recurrent matmul (``2 G H H``): ``2 G H (2I + 3H)`` in all. The stated
    3x count also holds the input's gradient (``2 G H I``), which the step does not
    take.

    A row from a run before the field (whose cells, the LSTM, GRU and Elman RNN, all
    count ``2 G H (I + H)``): derived from its stated count the same way."""
    if row.get("least_matmul_flops") is not None:
        return float(row["least_matmul_flops"])
    shape = row["shape"]
    inputs, hidden = shape["inputs"], shape["hidden"]
    if row["mode"] != "train":
        return float(row["flops_per_call"])
    forward = row["flops_per_call"] / 3
    return forward * (2 * inputs + 3 * hidden) / (inputs + hidden)


def needed_fraction_of_peak(row: dict, seconds: float, peak_gflops: float | None):
    """The share of the matmul peak at which ``least_matmul_flops`` take ``seconds``
    (``None`` without a measured peak)."""
    if not peak_gflops:
        return None
    return least_matmul_flops(row) / seconds / (peak_gflops * 1e9)


def _ratio(record_row: dict, peer: str, variant: str) -> float:
    """The peer's time / the variant's, per round, median."""
    t = record_row["times"]
    return float(np.median(np.array(t[peer]["samples_s"]) / np.array(t[variant]["samples_s"])))


def variant_targets(record: dict) -> list[str]:
    """rnnjax's variants against the same best peer and target as rnnjax itself (an
    option a user turns on, so not the default the targets judge)."""
    goal = record["targets"]["train_speedup_over_best_peer"]
    lines = []
    for r in record["rows"]:
        peers = [n for n in r["times"] if not is_ours(n)]
        variants = [n for n in r["times"] if is_ours(n) and n != "rnnjax"]
        if not peers or not variants:
            continue
        best = min(peers, key=lambda n: r["times"][n]["median_s"])
        target = goal if r["mode"] == "train" else 1.0
        for v in variants:
            s = _ratio(r, best, v)
            lines.append(
                f"| {r['config']} | {r['cell']} | {r['mode']} | {v} | {best} | "
                f"{r['times'][v]['median_s'] * 1e3:.2f} | {s:.2f}x | {target:.2f}x | "
                f"{'yes' if s >= target else 'no'} |"
            )
    if not lines:
        return []
    return [
        "",
        "rnnjax's variants (options, not the default) against the same best peer:",
        "",
        "| config | cell | mode | variant | best peer | variant ms | speed-up | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
        *lines,
    ]


def gpu_targets(record: dict) -> list[str]:
    """On a GPU: the LSTM within the target factor of cuDNN (the faster of
    ``jax.experimental.rnn`` and PyTorch, both cuDNN there) and the target speed-up
    over Flax ``nn.RNN`` (its fastest cell)."""
    if record["environment"].get("backend") != "gpu":
        return []
    within = record["targets"].get("gpu_lstm_within_cudnn", 1.2)
    over = record["targets"].get("gpu_lstm_speedup_over_flax", 2.0)
    lines = [
        "",
        f"GPU, LSTM: rnnjax within {within}x of cuDNN (t_rnnjax / t_cuDNN at most {within}, "
        f"against the faster of jax.experimental.rnn and PyTorch) and at least {over}x faster "
        "than Flax nn.RNN (its fastest cell); per-round ratios, median.",
        "",
        "| config | mode | cuDNN (fastest) | t_rnnjax / t_cuDNN | met | Flax (fastest) "
        "| speed-up over Flax | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        if r["cell"] != "lstm" or "rnnjax" not in r["times"]:
            continue
        cudnn = [n for n in r["speedup"] if n == "torch" or "cuDNN" in n]
        flax = [n for n in r["speedup"] if n.startswith("flax/")]
        cells = [r["config"], r["mode"]]
        if cudnn:
            best = min(cudnn, key=lambda n: r["times"][n]["median_s"])
            # The per-round t_rnnjax / t_cuDNN, then the median (with an even number of
            # rounds, 1 / the median of the inverse differs).
            rounds = np.array(r["times"]["rnnjax"]["samples_s"]) / np.array(
                r["times"][best]["samples_s"]
            )
            slower = float(np.median(rounds))
            cells += [best, f"{slower:.2f}", "yes" if slower <= within else "no"]
        else:
            cells += ["–", "–", "–"]
        if flax:
            best = min(flax, key=lambda n: r["times"][n]["median_s"])
            s = r["speedup"][best]["median"]
            cells += [best, f"{s:.2f}x", "yes" if s >= over else "no"]
        else:
            cells += ["–", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def sweep_table(record: dict) -> list[str]:
    if not record.get("sweep"):
        return []
    p0 = record["sweep"][0]
    names = sorted({n for p in record["sweep"] for n in p["backends"]})
    lines = [
        f"## Memory against sequence length (LSTM training step, B={p0['batch']}, "
        f"I={p0['inputs']}, H={p0['hidden']}; MiB)",
        "",
        "| T | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for p in record["sweep"]:
        cells = [_memory(p["backends"][n]) if n in p["backends"] else "–" for n in names]
        lines.append(f"| {p['steps']} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _tolerances(r: dict) -> str:
    """The gate's tolerances for one backend, saying where float32 rounding of the
    reference itself set them (records before the rounding floor: blank)."""
    if "output_tolerance" not in r:
        return ""
    text = f"{r['output_tolerance']:.1e}, {r['grad_tolerance']:.1e}"
    if r.get("rounding_floor"):
        text += (
            f" ({r['rounding_margin']:g}x the float32 reference's "
            f"{r['float32_reference_output_error']:.1e}, {r['float32_reference_grad_error']:.1e})"
        )
    short = r.get("short")
    if short and "error" not in short:
        text += (
            f"; first {short['steps']} steps at the fixed tolerances: "
            f"{short['max_abs_output_error']:.1e}, {short['max_rel_grad_error']:.1e}"
        )
    return text


def gate_table(record: dict) -> list[str]:
    lines = [
        "## Correctness gate (run before any timing)",
        "",
        "| config | cell | backend | max abs output error | max rel gradient error "
        "| gradient reference | tolerances (output, gradient) | passed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in record["gates"]:
        for name, r in g["backends"].items():
            if "error" in r:
                lines.append(f"| {g['config']} | {g['cell']} | {name} | {r['error']} | | | | no |")
                continue
            lines.append(
                f"| {g['config']} | {g['cell']} | {name} | {r['max_abs_output_error']:.1e} | "
                f"{r['max_rel_grad_error']:.1e} | {r.get('grad_reference', '')} | "
                f"{_tolerances(r)} | {'yes' if r['ok'] else 'NO'} |"
            )
    lines.append("")
    return lines


def allocator_text(alloc: dict) -> str:
    """``run.allocator()``'s record in words: the C library, the variables the process
    started with, and what ``lab.keep_freed_memory`` set with ``mallopt``."""
    parts = [f"{k}={v}" for k, v in alloc.items() if k not in ("libc", "mallopt")]
    if alloc.get("mallopt"):
        kept = ", ".join(f"{k}={v}" for k, v in alloc["mallopt"].items())
        parts.append(f"set in the process with mallopt: {kept}")
    return f"{alloc.get('libc') or 'unknown C library'}, " + (
        ", ".join(parts) or "its default settings"
    )


def header(record: dict) -> list[str]:
    env = record["environment"]
    v = env["versions"]
    device = env.get("gpu") or f"{env['cpu']} ({env['cpu_count']} cores)"
    peak = record["matmul_peak"]
    lines = [
        "# rnnjax against Flax, Equinox and PyTorch",
        "",
        f"Command: `{record['command']}`, started {env.get('date_utc', 'at an unrecorded date')}"
        + ("" if record.get("complete", True) else " (interrupted: these rows are all it timed)")
        + ".",
        f"Machine: {device}, JAX backend {env['backend']}; jax {v['jax']}, flax {v['flax']}, "
        f"equinox {v.get('equinox')}, torch {env.get('torch')} ({env.get('torch_threads')} "
        f"threads); commit {str(env['git_commit'])[:10]}"
        f"{' (with uncommitted edits)' if env.get('git_dirty') else ''}.",
    ]
    if "allocator" in env:  # runs before the allocator was recorded have no such line
        lines.append(f"Allocator: {allocator_text(env['allocator'])}.")
    if env.get("load_average"):  # recorded since the load could be read
        start = ", ".join(f"{v:.2f}" for v in env["load_average"])
        end = env.get("load_average_end")
        lines.append(
            f"Load average (1, 5, 15 min) at the start: {start}"
            + (f"; at the end: {', '.join(f'{v:.2f}' for v in end)}" if end else "")
            + f" ({env.get('cpu_count')} cores)."
        )
    if peak:
        torch_peak = peak.get("torch_gflops")
        lines.append(
            f"Matmul peak measured in the same run: {peak['peak_gflops']:.1f} GFLOP/s "
            f"({peak['n']}x{peak['n']} float32; JAX {peak['jax_gflops']:.1f}"
            + (f", PyTorch {torch_peak:.1f}" if torch_peak else "")
            + ")."
        )
    lines += [
        f"{record['args']['rounds']} interleaved rounds of at least "
        f"{record['args']['min_sample']} s per backend; {_precision(record)}; FLOPs: "
        "2 G H (I + H) per token forward for a cell of G gates (the cell catalogue's "
        "`matmul_flops`), 3x that for a training step.",
    ]
    if record["args"].get("host_devices"):
        lines.append(
            f"JAX saw {record['args']['host_devices']} host devices "
            "(`--host_devices`): the rnnjax-devices variant splits the batch over them; "
            "every other JAX backend runs on one, as it would by default."
        )
    if record.get("note"):
        lines.append(f"Note: {record['note']}")
    lines.append("")
    return lines


def _precision(record: dict) -> str:
    precision = record["args"].get("precision", "float32")
    if record["environment"].get("backend") == "cpu":
        return "float32"
    if precision == "tf32":
        return "float32 data, TF32 matmuls (every backend)"
    return "float32, TF32 off in every backend"


def plot(record: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    modes = [m for m in MODES if any(r["mode"] == m and r["speedup"] for r in record["rows"])]
    if modes:
        fig, axes = plt.subplots(1, len(modes), figsize=(7 * len(modes), 4.5), squeeze=False)
        for ax, mode in zip(axes[0], modes):
            rows = [r for r in record["rows"] if r["mode"] == mode and r["speedup"]]
            names = sorted({n for r in rows for n in r["speedup"]})
            width = 0.8 / max(len(names), 1)
            for k, name in enumerate(names):
                xs, ys, lo, hi = [], [], [], []
                for i, r in enumerate(rows):
                    s = r["speedup"].get(name)
                    if s:
                        xs.append(i + k * width)
                        ys.append(s["median"])
                        lo.append(s["median"] - s["q1"])
                        hi.append(s["q3"] - s["median"])
                ax.bar(xs, ys, width, yerr=[lo, hi], label=name)
            ax.axhline(1.0, color="k", lw=1)
            if mode == "train":
                goal = record["targets"]["train_speedup_over_best_peer"]
                ax.axhline(goal, color="r", ls="--", lw=1, label=f"target {goal}x")
            ax.set_xticks(
                np.arange(len(rows)) + 0.4 - width / 2,
                [f"{r['config']}\n{r['cell']}" for r in rows],
                fontsize=8,
            )
            ax.set(
                title=f"{mode}: rnnjax speed-up over each peer (IQR)", ylabel="t_peer / t_rnnjax"
            )
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "speedup.png", dpi=110)
        plt.close(fig)
    if record.get("sweep"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        names = sorted({n for p in record["sweep"] for n in p["backends"]})
        for name in names:
            for key, style in (("xla_program_bytes", "-o"), ("rss_growth_bytes", "--s")):
                pts = [
                    (p["steps"], p["backends"][name].get(key))
                    for p in record["sweep"]
                    if name in p["backends"] and p["backends"][name].get(key)
                ]
                if pts:
                    t, b = zip(*pts)
                    label = f"{name} ({'XLA program' if key.startswith('xla') else 'RSS growth'})"
                    ax.plot(t, np.array(b) / 2**20, style, label=label)
        ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="MiB")
        ax.set_title("LSTM training step: memory against sequence length")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "memory.png", dpi=110)
        plt.close(fig)


def write(record: dict, out: Path) -> None:
    """``benchmark.md`` (everything), ``summary.md`` (the header and the targets, which
    the README embeds) and the figures."""
    out = Path(out)
    text = header(record) + targets(record) + tables(record) + sweep_table(record)
    text += gate_table(record)
    (out / "benchmark.md").write_text("\n".join(text))
    summary = header(record) + targets(record)[2:]  # without the "## Targets" heading
    summary.append("All timings, memory and the gate: [benchmark.md](benchmark.md).\n")
    (out / "summary.md").write_text("\n".join(summary))
    plot(record, out)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "results/benchmarks/benchmark.json")
    write(json.loads(path.read_text()), path.parent)
    print(f"Wrote {path.parent / 'benchmark.md'}")
