"""The main job end to end in a tiny configuration: every promised file, every cell,
and a cell registered here (not in the library) through every section it declares
what it needs for."""

import csv
import json
import pickle
from typing import NamedTuple

import common
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import vanishing_gradients
from test_tensorboard import read_scalars
from vanishing import config, measure, sections

import rnnjax
from rnnjax.cells.base import Cell, Entry

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
    "--workers",  # one process: the worker processes have their own test
    "1",
]


def load():
    """The entry script (``experiments/vanishing_gradients.py``), whose ``main`` the
    tests call; the study itself lives in the package ``experiments/vanishing/``."""
    return vanishing_gradients


@pytest.mark.slow
def test_study_writes_report_figures_and_summary(tmp_path, capsys):
    """One cell of each kind the sections tell apart (ungated with a scale, the LSTM,
    a linear recurrence with a scale, a gated one without), to keep the test cheap: the
    study compiles a dozen programs per cell. That every catalogue cell joins is the
    default's (test_the_cell_list_is_the_catalogue_when_the_study_runs)."""
    out = tmp_path / "vg"
    cells = ["rnn_tanh", "lstm", "lru", "min_gru"]
    argv = TINY + ["--cells", ",".join(cells), "--clip_all", "--reg_cells", "lstm"]
    argv += ["--tensorboard", "--out", str(out)]
    assert load().main(argv) == 0
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
    for cell in cells:
        assert f"| {cell} |" in report
        assert f"{cell}/T16" in summary["init"] and f"{cell}/T10" in summary["train"]
    assert set(summary["forget"]) >= {"0/8", "1/16", "chrono/16", "chrono/train"}
    # The ungated cells that declare a recurrent scale; the gated ones' gate statistics.
    assert set(summary["clip"]) == {
        f"{c}/g{g}/{o}" for c in ("rnn_tanh", "lru") for g in (0.5, 1.5) for o in ("on", "off")
    }
    assert set(summary["gates"]) == {"lstm", "min_gru"}
    # The memory horizon (every cell) and the regulariser ablation (the LSTM).
    assert set(summary["horizon"]) == set(cells)
    h = summary["horizon"]["lstm"]
    mse = summary["train"]["lstm/T10"]["mse"]["mean"]
    assert h["solved_T"] == (10 if mse < 0.01 else None) and h["seeds"] == 2
    assert "## 7. The memory horizon" in report and "## 8. Regularisers" in report
    assert set(summary["reg"]) == {
        f"lstm/{k}" for k in ("zoneout", "recurrent_dropout", "weight_drop")
    }
    assert {k.split("/")[0] for k in summary["sweep"]} == {"rnn_tanh", "lstm", "lru"}
    # trained.csv: every trained network's outcome per seed, the summary's numbers.
    with open(out / "trained.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (len(summary["train"]) + len(summary["reg"]))  # 2 seeds
    for key, part, kind in [("lstm/T10", "train", "none"), ("lstm/zoneout", "reg", "zoneout")]:
        cell, T = "lstm", 10
        mine = [r for r in rows if (r["cell"], r["regularizer"], int(r["T"])) == (cell, kind, T)]
        assert [int(r["seed"]) for r in mine] == [0, 1]
        assert [float(r["mse"]) for r in mine] == summary[part][key]["mse_per_seed"]
    assert summary["schema_version"] == 2
    # The report's numbers are the summary's: spot-check one cell of table 1.
    f = summary["init"]["lstm/T16"]["factor"]
    assert f"{f['mean']:.4g} [{f['ci_low']:.4g}, {f['ci_high']:.4g}]" in report
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
    # --tensorboard: each training run (the unit's name) has one folder per seed with
    # its loss at every update and the decay factor of dL/dh_t at every evaluation (4
    # updates: each one); the last is the factor the summary reports after training.
    board = out / "tensorboard" / "train-rnn_tanh-T10"
    assert sorted(p.name for p in board.iterdir()) == ["all", "seed0", "seed1"]
    final = []
    for seed in (0, 1):
        got = read_scalars(board / f"seed{seed}")
        assert sorted(got["metrics/loss"]) == [1, 2, 3, 4]
        assert sorted(got["eval/grad_decay"]) == [1, 2, 3, 4]
        assert all(0.0 < v < 2.0 for v in got["eval/grad_decay"].values())
        final.append(got["eval/grad_decay"][4])
    after = summary["train"]["rnn_tanh/T10"]["factor_after"]
    assert sorted(final) == pytest.approx([after["min"], after["max"]], rel=1e-5)
    # The regulariser runs log too, under their unit names.
    assert (out / "tensorboard" / "reg-lstm-zoneout-r0.1-T10" / "seed0").is_dir()


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--cells", "lstm,transformer"], "argument --cells: 'transformer' not among"),
        (["--forget_biases", "2"], "argument --forget_biases: '2' not among"),
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
    """The config the study runs with. ``--workers 1``: the stub of ``sections.run``
    lives in this process, and worker processes would run the paper-size study."""
    module = load()
    seen = {}
    monkeypatch.setattr(
        sections,
        "run",
        lambda cfg, *_: seen.setdefault("cfg", cfg) and (_ for _ in ()).throw(SystemExit(0)),
    )
    with pytest.raises(SystemExit):
        module.main(["--full", "--seeds", "2", "--workers", "1", "--out", str(tmp_path)])
    cfg = seen["cfg"]
    assert cfg.hidden_size == 128 and max(cfg.lengths) == 1000 and cfg.seeds == 2
    # A flag given with the default's value still beats the paper size (it was dropped,
    # as indistinguishable from an unset flag).
    seen.clear()
    with pytest.raises(SystemExit):
        module.main(
            [
                "--full",
                "--hidden_size",
                "64",
                "--no-forget_train",
                "--workers",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
    cfg = seen["cfg"]
    assert cfg.hidden_size == 64 and cfg.forget_train is False and cfg.seeds == 5


def _without_timing(summary: dict) -> dict:
    drop = ("wall_s", "environment", "timing", "units_resumed", "command", "workers")
    out = {k: v for k, v in summary.items() if k not in drop}
    out["config"] = {
        k: v for k, v in out["config"].items() if k not in ("out", "resume", "workers")
    }
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
    argv = [a for a in TINY if a != "--forget_train"] + [
        "--cells",
        "rnn_tanh,lstm",
        "--reg_cells",
        "lstm",
    ]
    assert module.main(argv + ["--out", str(tmp_path / "straight")]) == 0
    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())

    calls = {"n": 0}
    grad_flow = measure.grad_flow

    def stop_at_the_fifth(*args, **kwargs):  # Ctrl-C in the middle of the study
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return grad_flow(*args, **kwargs)

    out = tmp_path / "cut"
    monkeypatch.setattr(measure, "grad_flow", stop_at_the_fifth)
    assert module.main(argv + ["--out", str(out)]) == 130
    assert "with --resume continues" in capsys.readouterr().err
    before = {p.stem for p in (out / "units").glob("*.pkl")}
    saved = len(before)
    assert saved >= 4 and not (out / "summary.json").exists()
    monkeypatch.setattr(measure, "grad_flow", grad_flow)
    with pytest.raises(SystemExit, match="unfinished study"):
        module.main(argv + ["--out", str(out)])
    with pytest.raises(SystemExit, match="changed config: --hidden_size 6 -> 7"):
        module.main(argv + ["--out", str(out), "--resume", "--hidden_size", "7"])
    # The rest on two worker processes (each claims units the other has not), then
    # read back here: the numbers of the one process that ran straight through.
    assert module.main(argv + ["--out", str(out), "--resume", "--workers", "2"]) == 0
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["units_resumed"] == saved and resumed["workers"] == 2
    assert _without_timing(resumed) == _without_timing(straight)
    done = [json.loads(p.read_text())["units"] for p in (out / "logs").glob("worker-*.json")]
    assert len(done) == 2 and all(done), done  # both workers computed some units
    every = {p.stem for p in (out / "units").glob("*.pkl")}
    assert len(every) == sections.num_units(config.Config(**resumed["config"]))
    assert sorted(done[0] + done[1]) == sorted(every - before)  # each unit once


# --------------------------------------------------- a cell registered by a test


class HalfParams(NamedTuple):  # field names the study has never seen
    kernel: jax.Array  # [I, H]
    loop: jax.Array  # [H, H]
    shift: jax.Array  # [H]


def half_tanh(hidden_size: int) -> Cell:
    """``h' = (tanh(x K + s + h L) + h) / 2``: the required core of the contract only
    (no gates, no recurrent scale, no fused backward)."""
    H = hidden_size

    def init(key, input_size):
        k1, k2 = jax.random.split(key)
        return HalfParams(
            jax.random.normal(k1, (input_size, H)) / np.sqrt(input_size),
            jax.nn.initializers.orthogonal()(k2, (H, H)),
            jnp.zeros((H,)),
        )

    def initial_carry(batch_shape=(), dtype=None):
        shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
        return jnp.zeros(shape + (H,), dtype or jnp.float32)

    def recur(params, h, xp):
        h_new = (0.5 * (jnp.tanh(xp + h @ params.loop) + h)).astype(h.dtype)
        return h_new, h_new

    return Cell(
        name="half_tanh",
        hidden_size=H,
        init=init,
        initial_carry=initial_carry,
        project=lambda params, xs: xs @ params.kernel + params.shift,
        recur=recur,
        output=lambda h: h,
    )


def half_tanh_reference(xp, params, h, x):
    kernel, loop, shift = params
    h_new = 0.5 * (xp.tanh(x @ kernel + shift + h @ loop) + h)
    return h_new, h_new


HALF_TANH = Entry(
    "half_tanh",
    half_tanh,
    half_tanh_reference,
    lambda i, h: 2 * h * (i + h),
    torch=None,
    family="test",
    summary="a core-only cell defined in a test",
)


def test_the_cell_list_is_the_catalogue_when_the_study_runs():
    """The default --cells is the catalogue at the time the config is made, not when
    the study's modules were imported; a name outside it is refused."""
    assert config.Config().cells == rnnjax.cells.names()
    with rnnjax.cells.registered(HALF_TANH):
        assert config.Config().cells == (*rnnjax.cells.names()[:-1], "half_tanh")
        cfg = config.Config(cells=("rnn_tanh", "half_tanh"))
        cfg.validate()
        # Sections are chosen by what each cell declares.
        assert config.sweep_cells(cfg) == ["rnn_tanh"]
        assert config.unscaled_cells(cfg) == ["half_tanh"]
        assert config.clip_cells(cfg) == ["rnn_tanh"]
        assert config.gate_cells(cfg) == [] and config.forget_cells(cfg) == []
        gated = ["lstm", "gru", "rg_lru", "min_gru", "min_lstm", "mgu", "ln_lstm", "ln_gru"]
        gated += ["lem", "antisymmetric_gated"]
        assert config.gate_cells(config.Config()) == gated
    assert "half_tanh" not in config.Config().cells
    with pytest.raises(ValueError, match="--cells must be names from"):
        config.Config(cells=("rnn_tanh", "half_tanh")).validate()


def test_a_registered_cell_runs_through_every_section_it_applies_to(tmp_path, capsys):
    """A cell defined and registered here joins the study with no study file edited:
    it is in every section for every cell (gradient flow, Jacobian spectra, training),
    in none that needs what it does not declare (gates, recurrent scale), and the
    report lists it as having no recurrent scale."""
    out = tmp_path / "vg"
    argv = [a for a in TINY if a != "--forget_train"]
    with rnnjax.cells.registered(HALF_TANH):
        assert load().main(argv + ["--cells", "rnn_tanh,half_tanh", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.md").read_text()
    assert summary["config"]["cells"] == ["rnn_tanh", "half_tanh"]
    for name in ("rnn_tanh", "half_tanh"):
        assert set(summary["init"]) >= {f"{name}/T8", f"{name}/T16"}
        assert f"{name}/T10" in summary["train"] and name in summary["jacobian"]
        for stats in [
            *summary["init"][f"{name}/T16"].values(),
            summary["train"][f"{name}/T10"]["mse"],
        ]:
            assert np.isfinite(stats["mean"])
        assert np.all(np.isfinite(summary["jacobian"][name]["sigma_max"]))
    assert set(summary["sweep"]) == {"rnn_tanh/g0.5", "rnn_tanh/g1.5"}
    assert set(summary["clip"]) == {f"rnn_tanh/g{g}/{o}" for g in (0.5, 1.5) for o in ("on", "off")}
    assert summary["gates"] == {} and summary["forget"] == {}
    # Table rows: gradient flow (1), singular values (2), training (6), the memory
    # horizon (7); not the sweep (3) nor clipping (5, two scales x on/off for rnn_tanh).
    assert report.count("| half_tanh |") == 4 and report.count("| rnn_tanh |") == 4 + 1 + 4
    assert "not swept: half_tanh." in report and "not run: half_tanh." in report
    assert "- half_tanh: over T=16 at initialisation the gradient changes by" in report
    f = summary["init"]["half_tanh/T16"]["factor"]
    first_row = next(r for r in report.splitlines() if r.startswith("| half_tanh | "))
    assert f"{f['mean']:.4g} [{f['ci_low']:.4g}, {f['ci_high']:.4g}]" in first_row  # the summary's
    assert "--cells rnn_tanh,half_tanh" in summary["command"]
    for name in ("grad_vs_distance", "singular_values", "scale_sweep", "final_loss", "clipping"):
        assert (out / f"{name}.png").stat().st_size > 0, name
    assert "half_tanh" not in rnnjax.cells.names()
    assert "Wrote" in capsys.readouterr().out


def test_a_cell_without_a_scale_is_refused_by_the_variant():
    """The recurrent scale is the cell's declaration; without one there is no guess."""
    cell = half_tanh(3)
    params = {"rnn": {"layer": (cell.init(jax.random.key(0), 2),)}}
    with pytest.raises(ValueError, match="declares no recurrent scale"):
        measure.variant(params, cell, scale=0.5)
    lstm = rnnjax.make_cell("lstm", 3)
    p = lstm.init(jax.random.key(0), 2)
    varied = measure.variant({"rnn": {"layer": (p,)}}, lstm, scale=2.0, forget="0")
    q = varied["rnn"]["layer"][0]
    np.testing.assert_allclose(q.w_h, 2 * p.w_h)
    np.testing.assert_array_equal(q.b[3:6], 0.0)  # the forget block, H = 3
    np.testing.assert_array_equal(q.b[:3], p.b[:3])


# ------------------------------------------------------------- the unit cache


def test_unit_cache_saves_each_unit_and_resumes(tmp_path):
    calls = []

    def compute(value):
        calls.append(value)
        return {"value": np.arange(value)}

    units = common.UnitCache(tmp_path / "units")
    assert units("a-T1", lambda: compute(1))["value"].tolist() == [0]
    units("b-g0.5", lambda: compute(2))
    assert [p.name for p in units.saved()] == ["a-T1.pkl", "b-g0.5.pkl"]
    assert pickle.loads((tmp_path / "units" / "b-g0.5.pkl").read_bytes())["value"].size == 2
    assert not list((tmp_path / "units").glob("*.tmp"))

    again = common.UnitCache(tmp_path / "units", resume=True)
    assert again("a-T1", lambda: compute(9))["value"].tolist() == [0]  # read back
    assert again("c", lambda: compute(3))["value"].size == 3  # computed
    assert calls == [1, 2, 3] and again.reused == 1

    fresh = common.UnitCache(tmp_path / "units")  # no resume: computed again
    fresh("a-T1", lambda: compute(4))
    assert calls[-1] == 4 and fresh.reused == 0

    with pytest.raises(SystemExit, match="unfinished study .3 measurements in"):
        fresh.start_over(finished=False, what="study", unit="measurements")
    assert len(fresh.saved()) == 3
    fresh.start_over(finished=True)  # a finished run starts over: its units go
    assert fresh.saved() == []
    common.UnitCache(tmp_path / "none").start_over(finished=False)  # nothing saved: fine

    in_memory = common.UnitCache(None, resume=True)
    assert in_memory("a", lambda: compute(5))["value"].size == 5 and in_memory.saved() == []


def test_the_scale_sweep_draws_vanishing_blue_and_exploding_red_as_its_title_says():
    """The heat map's colours and its title agree (the committed figure once drew
    vanishing red under a title that said blue)."""
    from vanishing import plots

    cfg = config.Config(cells=("rnn_tanh",), scales=(0.5, 1.5))
    results = {
        "sweep": {
            ("rnn_tanh", 0.5): {"log10_ratio": [-12.0]},
            ("rnn_tanh", 1.5): {"log10_ratio": [12.0]},
        }
    }
    plt = common.pyplot()
    fig = plots.scale_sweep(plt, cfg, results, {})
    try:
        (ax, *_) = fig.axes
        assert "blue: vanishing, red: exploding" in ax.get_title()
        (image,) = ax.images
        red, _, blue, _ = image.cmap(image.norm(-12.0))  # the g = 0.5 cell
        assert blue > 2 * red
        red, _, blue, _ = image.cmap(image.norm(12.0))
        assert red > 2 * blue
    finally:
        plt.close(fig)
