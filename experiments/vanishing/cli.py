"""``main(argv)``: the study from the command line, into its folder: the config, the
resumable units (``<out>/units``, :class:`common.UnitCache`), ``summary.json``, the
figures, ``report.md`` and ``findings.md``."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import common

import vanishing

from . import parallel, plots, report, sections
from .config import FULL, Config, command_line
from .measure import jacobian_method


def main(argv=None) -> int:
    cfg, _, given = common.parse_config(
        Config, argv, description=vanishing.__doc__.split("\n")[0], with_given=True
    )
    if cfg.full:  # the paper sizes, under every flag given on the command line
        picked = {k: getattr(cfg, k) for k in given}
        cfg = Config(**{**dataclasses.asdict(Config()), **FULL, **picked})
        with common.usage_errors():
            cfg.validate()
    out = Path(cfg.out)
    units = common.UnitCache(out / "units", resume=cfg.resume)
    if cfg.resume:
        common.check_same_config(common.RunDir(out, primary=False), cfg)
    else:  # a new study, or a finished one run again: start over
        units.start_over(
            finished=(out / "summary.json").exists(), what="study", unit="measurements"
        )
        (out / "summary.json").unlink(missing_ok=True)
    run_dir = common.RunDir(out)
    env = common.environment()
    run_dir.write_json(
        "config.json", {"config": dataclasses.asdict(cfg), "command": command_line(cfg)}
    )
    workers = cfg.workers or parallel.default_workers(env["backend"])
    mine = parallel.outside_catalogue(cfg)
    if workers > 1 and mine:
        print(
            f"--workers {workers}: {', '.join(mine)} is registered by this program, not by "
            "rnnjax, so a worker process could not build it; the study runs in this process."
        )
        workers = 1
    print(
        f"Vanishing-gradient study: cells {', '.join(cfg.cells)}, H={cfg.hidden_size}, "
        f"{cfg.seeds} seeds, on {env['backend']} ({env['device_kind']}), "
        + (f"{workers} worker processes" if workers > 1 else "one process")
    )
    t0 = time.perf_counter()
    try:
        if workers > 1:
            results, worker_s = parallel.run(cfg, units, workers)
            results["timing"] = worker_s
        else:
            results = sections.run(cfg, units)
    except KeyboardInterrupt:
        print(
            f"\nInterrupted after {time.perf_counter() - t0:.0f} s, with {len(units.saved())} "
            f"measurements saved in {units.folder}: the same command with --resume continues "
            "the study.",
            file=sys.stderr,
        )
        return 130
    if units.reused:
        print(f"Resumed: {units.reused} measurements read back from {units.folder}.")
    wall = time.perf_counter() - t0
    summary = report.summarise(cfg, results)
    summary.update(
        config=dataclasses.asdict(cfg),
        jacobian_method=jacobian_method(cfg),
        units_resumed=units.reused,  # read back from an earlier, stopped process
        workers=workers,
        wall_s=wall,
        environment=env,
        command=command_line(cfg),
    )
    run_dir.write_json("summary.json", summary)
    run_dir.write_csv("trained.csv", report.trained_rows(cfg, results))
    plots.plot(cfg, results, out)
    text = report.write_report(cfg, results, summary, out, wall, env)
    print(text.split("## What the numbers show")[1].strip())
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in results["timing"].items())
    per = f"{workers} workers' seconds" if workers > 1 else "seconds"
    print(f"\nWrote {out}/report.md, figures, summary.json ({wall / 60:.1f} min; {per}: {phases})")
    return 0
