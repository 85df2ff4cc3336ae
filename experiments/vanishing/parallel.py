"""The study's measurements in worker processes, one per CPU core.

On a CPU, XLA compiles on one core and runs a small recurrent step's ops mostly on one,
so one study process leaves cores idle much of the time (``make run`` here: 656.8 s on
two workers, against 734.7 s in one process with T=1000 left out; README). :func:`run` starts ``workers``
processes (``spawn``: no state forked from a process that has started XLA), each of
which walks the whole study in the order one process would (:func:`sections.run`) and
computes only the units it *claims*: a unit goes to the first worker that creates its
claim file (``os.open`` with ``O_EXCL``, atomic on a local file system), and a unit
already saved is skipped. Every unit is a function of the config alone and is saved as
it completes (:class:`common.UnitCache`), so which process computed it does not change
its value. When the workers are done, the study runs once more in this process with
``resume``: every unit is read back (a unit a worker did not finish is computed here),
and the report is made from the values a single process would have computed.

Processes, not threads: two threads each running a training step's XLA program on this
2-core CPU deadlocked inside a training step's metrics (f19c22a, reverted; CHANGELOG).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import signal
import tempfile
import time
from pathlib import Path

import common

from . import sections
from .config import Config


class ClaimedUnits(common.UnitCache):
    """A worker's view of the study's units: a unit already saved, or claimed by
    another worker, is skipped (``None``: the worker discards the study's values);
    the others are claimed, computed and saved. Records each computed unit's seconds
    by phase (the key's first word)."""

    def __init__(self, folder: Path, claims: Path):
        super().__init__(folder, resume=False)
        self.claims = Path(claims)
        self.seconds: dict[str, float] = {}
        self.computed: list[str] = []
        self.parent = os.getppid()

    def __call__(self, key, compute):
        if os.getppid() != self.parent:  # the study's process is gone: stop, not orphaned
            raise SystemExit(f"study worker {os.getpid()}: the study's process ended")
        if self._path(key).exists() or not self._claim(key):
            return None
        t0 = time.perf_counter()
        value = super().__call__(key, compute)
        phase = key.split("-")[0]
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0
        self.computed.append(key)
        return value

    def _claim(self, key: str) -> bool:
        try:
            os.close(os.open(self.claims / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


def default_workers(backend: str) -> int:
    """One worker per CPU core this process may use on a CPU; one process (no workers)
    on an accelerator, where the processes would share one device's memory."""
    if backend != "cpu":
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def outside_catalogue(cfg: Config) -> list[str]:
    """The studied cells a fresh ``import rnnjax`` does not register (a cell registered
    by a script or a test): a worker process could not build them."""
    import rnnjax

    return [n for n in cfg.cells if not rnnjax.cells.get(n).make.__module__.startswith("rnnjax.")]


def _work(cfg: Config, units: str, claims: str, log: str, record: str) -> None:
    """One worker (the spawned process's target): output to ``log``, every unit it
    claims computed and saved; ``record`` gets its seconds by phase and the units it
    computed (JSON). Ctrl-C is
    the study's process's to handle (it stops the workers), so a worker ignores it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(log, "ab", buffering=0) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    mine = ClaimedUnits(Path(units), Path(claims))
    sections.run(dataclasses.replace(cfg, progress=False), mine)
    Path(record).write_text(json.dumps({"seconds": mine.seconds, "units": mine.computed}))


def run(cfg: Config, units: common.UnitCache, workers: int) -> tuple[dict, dict]:
    """The study's units computed by ``workers`` processes into ``units.folder``, then
    the study read back in this process. Returns :func:`sections.run`'s results and
    ``{phase: worker-seconds}`` (the seconds the workers spent per phase, summed).

    A worker that fails stops the others; its log's tail is raised as
    ``SystemExit`` (the units saved so far stay, for ``--resume``). Ctrl-C stops them
    all and raises ``KeyboardInterrupt`` here."""
    folder = Path(units.folder)
    folder.mkdir(parents=True, exist_ok=True)
    logs = folder.parent / "logs"
    logs.mkdir(exist_ok=True)
    total = sections.num_units(cfg)
    before = len(units.saved())
    units.reused = before if units.resume else 0  # from an earlier, stopped process
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="claims-", dir=folder.parent) as claims:
        procs = []
        for i in range(workers):
            log = logs / f"worker-{i}.log"
            log.write_text("")
            (logs / f"worker-{i}.json").unlink(missing_ok=True)  # an earlier run's
            args = (cfg, str(folder), claims, str(log), str(logs / f"worker-{i}.json"))
            procs.append(ctx.Process(target=_work, args=args, name=f"study-worker-{i}"))
        bar = sections._bar(cfg.progress, total)
        if bar is not None:
            bar.set_description(f"{workers} worker processes")
            bar.update(before)
        try:
            for i, p in enumerate(procs):
                with _worker_environment(i):
                    p.start()
            _wait(procs, units, bar, logs)
        except BaseException:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join()
            raise
        finally:
            if bar is not None:
                bar.close()
    seconds: dict[str, float] = {}
    for i in range(workers):
        record = json.loads((logs / f"worker-{i}.json").read_text())
        for phase, s in record["seconds"].items():
            seconds[phase] = seconds.get(phase, 0.0) + s
    # Every unit is saved now: read back (a unit no worker finished is computed here).
    results = sections.run(
        dataclasses.replace(cfg, progress=False), common.UnitCache(folder, resume=True)
    )
    return results, seconds


@contextlib.contextmanager
def _worker_environment(i: int):
    """While worker ``i`` starts (it copies this process's environment): a persistent
    XLA compilation cache this process was given (``JAX_COMPILATION_CACHE_DIR``, as the
    tests set) becomes a folder of worker ``i``'s own, since JAX's cache takes no lock
    between processes (``tests/conftest.py``).

    XLA's threading is left as it is. Measured on this 2-core machine (``make run`` at
    28cb41a plus this change): two workers at XLA's default threads, 656.8 s; the same
    two with XLA on one thread each (``--xla_cpu_multi_thread_eigen=false
    intra_op_parallelism_threads=1``), 643.8 s, no faster, and their numbers differed
    from a one-process run's in the last digits (a thread count changes the order of
    a matmul's sums). At the default threads every unit's value is the same whichever
    process computes it, which the resume test holds."""
    saved = {k: os.environ.get(k) for k in ("JAX_COMPILATION_CACHE_DIR",)}
    if saved["JAX_COMPILATION_CACHE_DIR"]:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(
            saved["JAX_COMPILATION_CACHE_DIR"], f"study-worker-{i}"
        )
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait(procs, units, bar, logs: Path) -> None:
    done = len(units.saved())
    while True:
        alive = [p for p in procs if p.is_alive()]
        now = len(units.saved())
        if bar is not None and now > done:
            bar.update(now - done)
        done = now
        failed = [p for p in procs if p.exitcode not in (None, 0)]
        if failed:
            p = failed[0]
            i = procs.index(p)
            tail = (logs / f"worker-{i}.log").read_text().strip().splitlines()[-15:]
            raise SystemExit(
                f"study worker {i} failed (exit code {p.exitcode}); {len(units.saved())} "
                f"measurements are saved in {units.folder} (--resume continues). The end of "
                f"{logs / f'worker-{i}.log'}:\n" + "\n".join(tail)
            )
        if not alive:
            return
        time.sleep(0.5)
