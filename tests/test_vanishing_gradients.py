"""The main job end to end in a tiny configuration: every promised file, every cell."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnjax

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "vanishing_gradients.py"

TINY = [
    "--forget_train",
    "--hidden_size",
    "6",
    "--lengths",
    "8,16",
    "--seeds",
    "2",
    "--batch_size",
    "4",
    "--sweep_len",
    "10",
    "--train_lengths",
    "10",
    "--train_steps",
    "4",
    "--clip_steps",
    "3",
    "--eval_size",
    "8",
    "--scales",
    "0.5,1.5",
    "--no-progress",
]


def load():
    spec = importlib.util.spec_from_file_location("vanishing_gradients", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["vanishing_gradients"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_study_writes_report_figures_and_summary(tmp_path, capsys):
    out = tmp_path / "vg"
    assert load().main(TINY + ["--out", str(out)]) == 0
    for name in (
        "report.md",
        "findings.md",
        "summary.json",
        "config.json",
        "grad_vs_distance.png",
        "singular_values.png",
        "scale_sweep.png",
        "final_loss.png",
        "clipping.png",
    ):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.md").read_text()
    for cell in rnnjax.CELLS:  # every cell the library has, with no list to update
        assert f"| {cell} |" in report
        assert f"{cell}/T16" in summary["init"] and f"{cell}/T10" in summary["train"]
    assert set(summary["forget"]) >= {"0/8", "1/16", "chrono/16", "chrono/train"}
    assert set(summary["clip"]) == {
        f"{c}/g{g}/{o}" for c in ("rnn_tanh", "rnn_relu") for g in (0.5, 1.5) for o in ("on", "off")
    }
    # The report's numbers are the summary's: spot-check one cell of table 1.
    f = summary["init"]["lstm/T16"]["factor"]
    assert f"{f['mean']:.4g} ± {f['std']:.3g}" in report
    assert (
        "## What the numbers show" in report
        and "Command: `python experiments/vanishing_gradients.py" in report
    )
    for section in ("init", "sweep", "train"):
        for entry in summary[section].values():
            for stats in entry.values():
                if isinstance(stats, dict) and "mean" in stats:
                    assert np.isfinite(stats["mean"])
    assert "Wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--cells", "lstm,transformer"], "--cells must be names from"),
        (["--forget_biases", "2"], "--forget_biases must be from 0, 1, chrono"),
        (["--lengths", "1,8"], "--lengths must all be >= 2"),
        (["--scales", "0,1"], "--scales and --clip_scales must be > 0"),
        (["--lengths="], "--lengths must name at least one value"),
        (["--clip_scales="], "--clip_scales must name at least one value"),
        (["--sweep_len", "1"], "--sweep_len must be >= 2; got 1"),
        (["--clip_norm", "0"], "--clip_norm must be > 0; got 0.0"),
        (["--learning_rate", "0"], "--learning_rate must be > 0"),
        (["--seeds", "0"], "--seeds must be >= 1; got 0"),
        (["--cells", "gru", "--forget_train"], "the forget-bias ablation needs lstm in --cells"),
        (["--cells", "lstm,gru", "--clip_steps", "9"], "the clipping study needs rnn_tanh"),
    ],
)
def test_bad_config(argv, match, tmp_path, capsys):
    """Refused before the study starts (these failed after minutes of it, or ran with
    options the chosen cells ignore), with argparse's error: exit status 2."""
    with pytest.raises(SystemExit) as info:
        load().main(argv + ["--out", str(tmp_path / "vg")])
    assert info.value.code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "vg").exists()


def test_gated_cells_alone_skip_the_clipping_figure(tmp_path, monkeypatch):
    """With no ungated cell there is no clipping study: the report says so and no
    figure is drawn (the figure crashed the run at its very end)."""
    module = load()
    out = tmp_path / "vg"
    argv = [a for a in TINY if a != "--forget_train"]
    del argv[argv.index("--clip_steps") : argv.index("--clip_steps") + 2]
    argv += ["--cells", "gru", "--out", str(out)]
    assert module.main(argv) == 0
    report = (out / "report.md").read_text()
    assert "not run: no rnn_tanh or rnn_relu in --cells" in report
    assert "not run: no lstm in --cells" in report
    assert not (out / "clipping.png").exists() and (out / "final_loss.png").exists()
    assert json.loads((out / "summary.json").read_text())["jacobian_method"] == "exact"


def test_full_preset_sets_paper_sizes_and_keeps_overrides(monkeypatch, tmp_path):
    module = load()
    seen = {}
    monkeypatch.setattr(
        module,
        "run",
        lambda cfg, *_: seen.setdefault("cfg", cfg) and (_ for _ in ()).throw(SystemExit(0)),
    )
    with pytest.raises(SystemExit):
        module.main(["--full", "--seeds", "2", "--out", str(tmp_path)])
    cfg = seen["cfg"]
    assert cfg.hidden_size == 128 and max(cfg.lengths) == 1000 and cfg.seeds == 2
    # A flag given with the default's value still beats the paper size (it was dropped,
    # as indistinguishable from an unset flag).
    seen.clear()
    with pytest.raises(SystemExit):
        module.main(["--full", "--hidden_size", "64", "--no-forget_train", "--out", str(tmp_path)])
    cfg = seen["cfg"]
    assert cfg.hidden_size == 64 and cfg.forget_train is False and cfg.seeds == 5


def _without_timing(summary: dict) -> dict:
    drop = ("wall_s", "environment", "timing", "units_resumed", "command")
    out = {k: v for k, v in summary.items() if k not in drop}
    out["config"] = {k: v for k, v in out["config"].items() if k not in ("out", "resume")}
    for section in out.values():  # per-measurement wall times
        if isinstance(section, dict):
            for entry in section.values():
                if isinstance(entry, dict):
                    entry.pop("wall_s", None)
    return out


@pytest.mark.slow
def test_a_stopped_study_resumes_to_the_same_numbers(tmp_path, monkeypatch, capsys):
    """Every finished measurement is saved as it completes; --resume reads them back and
    computes the rest, and the summary equals an uninterrupted study's. Without
    --resume an unfinished study is not overwritten."""
    module = load()
    argv = [a for a in TINY if a != "--forget_train"] + ["--cells", "rnn_tanh,lstm"]
    assert module.main(argv + ["--out", str(tmp_path / "straight")]) == 0
    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())

    calls = {"n": 0}
    grad_flow = module.grad_flow

    def stop_at_the_fifth(*args, **kwargs):  # Ctrl-C in the middle of the study
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return grad_flow(*args, **kwargs)

    out = tmp_path / "cut"
    monkeypatch.setattr(module, "grad_flow", stop_at_the_fifth)
    assert module.main(argv + ["--out", str(out)]) == 130
    assert "with --resume continues" in capsys.readouterr().err
    saved = len(list((out / "units").glob("*.pkl")))
    assert saved >= 4 and not (out / "summary.json").exists()
    monkeypatch.setattr(module, "grad_flow", grad_flow)
    with pytest.raises(SystemExit, match="unfinished study"):
        module.main(argv + ["--out", str(out)])
    with pytest.raises(SystemExit, match="changed config: --hidden_size 6 -> 7"):
        module.main(argv + ["--out", str(out), "--resume", "--hidden_size", "7"])
    assert module.main(argv + ["--out", str(out), "--resume"]) == 0
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["units_resumed"] == saved
    assert _without_timing(resumed) == _without_timing(straight)
