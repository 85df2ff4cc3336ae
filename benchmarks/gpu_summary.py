"""The GPU folder's README.md, generated from the runs under it.

    python benchmarks/gpu_summary.py results/gpu-h200

Reads the benchmark records (``*/benchmark.json``, from ``benchmarks/run.py``) and the
Pallas probe (``probe/pallas_probe.json``) under the folder and writes ``README.md``:
the best time of each backend at every configuration, cell and mode; rnnjax's speed-up
over PyTorch/cuDNN (the per-round median ratio within one run); what ``unroll=8`` and
XLA's command buffers did; the probe's kernels. Nothing in it is typed in by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = {"small": 0, "medium": 1, "large": 2, "tiny": -1}
UNROLL = "rnnjax (unroll=8)"
CUDNN = "jax.experimental.rnn (cuDNN)"


def load(folder: Path) -> dict[str, dict]:
    return {
        p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/benchmark.json"))
    }


def _rows(records: dict[str, dict], names: list[str]):
    """``(config, cell, mode) -> (run name, row)`` from the first run in ``names`` that
    timed both rnnjax and torch there."""
    out = {}
    for name in names:
        for row in records.get(name, {}).get("rows", []):
            key = (row["config"], row["cell"], row["mode"])
            if key not in out and {"rnnjax", "torch"} <= set(row["times"]):
                out[key] = (name, row)
    return out


def _ms(row, backend) -> str:
    t = row["times"].get(backend)
    return "–" if not t or "median_s" not in t else f"{1e3 * t['median_s']:.2f}"


def _ratio(row, peer) -> float | None:
    s = row["speedup"].get(peer)
    return None if s is None else s["median"]


def _x(v) -> str:
    return "–" if v is None else f"{v:.2f}x"


def speed_table(records) -> list[str]:
    main = _rows(records, ["bench", "bench-large"])
    unrolled = _rows(records, ["unroll", "bench-large"])
    lines = [
        "| config | cell | mode | PyTorch (cuDNN) ms | jax.experimental.rnn ms | rnnjax ms "
        "| rnnjax over PyTorch | rnnjax, unroll=8, ms | unroll=8 over PyTorch | run(s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(main, key=lambda k: (ORDER.get(k[0], 9), k[1], k[2] != "train")):
        run, row = main[key]
        u_run, u_row = unrolled.get(key, (None, None))
        if u_row is not None and UNROLL in u_row["times"]:
            # t_torch / t_unroll = (t_torch / t_rnnjax) / (t_unroll / t_rnnjax), per run.
            torch_over, unroll_over = _ratio(u_row, "torch"), _ratio(u_row, UNROLL)
            u_speed = torch_over / unroll_over if torch_over and unroll_over else None
            u_ms = _ms(u_row, UNROLL)
        else:
            u_speed, u_ms = None, "–"
        runs = run if u_run in (None, run) else f"{run}, {u_run}"
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {_ms(row, 'torch')} | {_ms(row, CUDNN)} "
            f"| {_ms(row, 'rnnjax')} | {_x(_ratio(row, 'torch'))} | {u_ms} | {_x(u_speed)} "
            f"| {runs} |"
        )
    return lines


def lever_table(records) -> list[str]:
    base = _rows(records, ["bench"])
    lines = [
        "| config | cell | mode | XLA flags | rnnjax ms | rnnjax over PyTorch, same run "
        "| without the flags (run `bench`) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("levers-graph", "levers-graph-unrolled"):
        if name not in records:
            continue
        flags = "+WHILE,+CONDITIONAL" + (", unroll_loops" if name.endswith("unrolled") else "")
        for row in records[name]["rows"]:
            key = (row["config"], row["cell"], row["mode"])
            ref = base.get(key, (None, None))[1]
            lines.append(
                f"| {key[0]} | {key[1]} | {key[2]} | {flags} | {_ms(row, 'rnnjax')} "
                f"| {_x(_ratio(row, 'torch'))} | {_x(_ratio(ref, 'torch')) if ref else '–'} |"
            )
    return lines


def probe_table(folder: Path) -> list[str]:
    path = folder / "probe" / "pallas_probe.json"
    if not path.exists():
        return []
    probe = json.loads(path.read_text())
    b, t, i, h = probe["shape_BTIH"]
    lines = [
        f"Shape B={b}, T={t}, I={i}, H={h}; inference (forward only); jax {probe['jax']}. "
        "`max err` is the largest absolute difference from `rnnjax.scan` (outputs and final "
        "carry).",
        "",
        "| cell | kernel or backend | median ms | max err |",
        "|---|---|---|---|",
    ]
    for cell, entry in probe["cells"].items():
        errs = entry["max_abs_err"]
        for name, r in entry.get("times", {}).items():
            variant = name.split("(")[1].split(",")[0] if name.startswith("pallas") else None
            err = errs.get(variant, "") if variant else ""
            err = f"{err:.1e}" if isinstance(err, float) else ""
            value = f"{r['median_ms']:.3f}" if "median_ms" in r else "failed: " + r["error"][:90]
            lines.append(f"| {cell} | {name} | {value} | {err} |")
        if "times" not in entry:
            lines.append(f"| {cell} | (not timed: the step's limit) | – | {errs} |")
    return lines


def environment(records) -> list[str]:
    rec = next(iter(records.values()))
    env = rec["environment"]
    gpu = env.get("gpu") or env.get("device_kind")
    v = env.get("versions", {})
    return [
        f"Machine: {gpu}; jax {v.get('jax')}, flax {v.get('flax')}, torch "
        f"{env.get('torch')}, CUDA "
        f"{env.get('cuda')}, cuDNN {env.get('cudnn')}; float32 with TF32 off in every backend.",
    ]


def write(folder: Path) -> Path:
    folder = Path(folder)
    records = load(folder)
    text = [
        "# rnnjax on an NVIDIA H200",
        "",
        "Generated by `python benchmarks/gpu_summary.py "
        f"{folder.as_posix()}` from the runs in this folder; each run's own `benchmark.md` "
        "has its command, machine and every sample, and `log-run*.txt` the whole output.",
        "",
        *environment(records),
        "",
    ]
    for name, rec in records.items():
        text.append(f"- `{name}/`: {rec.get('note', '')} Command: `{rec['command']}`.")
    text += [
        "",
        "### Training step and inference, median ms",
        "",
        "Speed-ups are PyTorch's time over rnnjax's, the median of the per-round ratio in "
        "one run; the unroll=8 column comes from the run that timed it beside PyTorch.",
        "",
        *speed_table(records),
        "",
        "### XLA's command buffers (the while loop as a CUDA graph)",
        "",
        "Each flag setting ran in its own process; compare the ratios to PyTorch, which "
        "the flags do not touch.",
        "",
        *lever_table(records),
        "",
        "### The persistent Pallas loop, first probe (`benchmarks/pallas_probe.py`)",
        "",
        *probe_table(folder),
        "",
    ]
    out = folder / "README.md"
    out.write_text("\n".join(text))
    return out


if __name__ == "__main__":
    print(f"Wrote {write(Path(sys.argv[1] if len(sys.argv) > 1 else 'results/gpu-h200'))}")
