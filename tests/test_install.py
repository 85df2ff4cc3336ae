"""The package installs plainly: the wheel, installed without extras into a fresh
virtual environment, imports every module and trains with ``fit`` (progress bar on).

Offline: the fresh environment sees this environment's packages (a ``.pth`` line) for
the wheel's core dependencies, and an import hook there refuses every module that only
an extra installs, so a hidden import of an extra fails the test as it would for a user.
"""

import ast
import re
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Distribution name -> the module it installs, where the two differ.
MODULES = {"scikit-learn": "sklearn", "pytest-xdist": "xdist", "orbax-checkpoint": "orbax"}

pytestmark = pytest.mark.slow


def _requires(metadata: str):
    core, extras = [], []
    for req in Parser().parsestr(metadata).get_all("Requires-Dist") or []:
        name = re.match(r"[A-Za-z0-9_.\-]+", req).group(0).lower()
        (extras if "extra ==" in req else core).append(name)
    return core, extras


def _module(dist: str) -> str:
    return MODULES.get(dist, dist.replace("-", "_"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (path,) = out.glob("rnnjax-*.whl")
    return path


def test_every_third_party_import_of_the_library_is_a_core_dependency(wheel):
    """Static: a top-level import of a package outside the standard library, anywhere
    in rnnjax, is one the wheel requires without extras (an extra's import is allowed
    only inside a function, where its ImportError names the extra)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        core, _ = _requires(z.read(meta).decode())
        sources = {n: z.read(n).decode() for n in z.namelist() if n.endswith(".py")}
    allowed = {_module(d) for d in core} | {"jaxlib", "rnnjax"} | set(sys.stdlib_module_names)
    for name, source in sources.items():
        for node in ast.parse(source).body:  # module level only
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                assert top in allowed, (
                    f"{name} imports {top} at module level; not a core dependency"
                )


def test_the_wheel_without_extras_imports_everything_and_fits(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        core, extras = _requires(z.read(meta).decode())
    assert "tqdm" in core and "scikit-learn" in extras and "torch" in extras
    blocked = sorted({_module(d) for d in extras} - {_module(d) for d in core})

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
         "--no-index", "--quiet", str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    # This environment's packages, after the fresh one's own (so its rnnjax is the wheel's).
    (site / "zz_outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(f"""
        import sys
        BLOCKED = {blocked!r}
        class _NoExtras:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (an extra)", name=name)
        sys.meta_path.insert(0, _NoExtras())
        """)
    )
    script = textwrap.dedent("""
        import importlib, pkgutil, jax, rnnjax
        assert "site-packages" in rnnjax.__file__ and "zz_outer" not in rnnjax.__file__
        mods = [m.name for m in pkgutil.walk_packages(rnnjax.__path__, "rnnjax.")]
        for m in mods:
            importlib.import_module(m)
        try:
            import sklearn  # noqa: F401
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("the extras are not blocked")
        try:
            rnnjax.tasks.make_task("digits")
        except ImportError as e:
            assert "rnnjax[experiments]" in str(e), e
        else:
            raise SystemExit("the digits task loaded without scikit-learn")
        from rnnjax import train as tr
        from rnnjax.modules import SequenceModel
        from rnnjax.tasks import make_task
        task = make_task("adding", seq_len=8)
        model = SequenceModel(rnnjax.make_layer("gru", 8), 1, head="last")
        ex = task.sample(jax.random.key(0), 2)
        params = model.init(jax.random.key(1), ex.inputs, ex.lengths)["params"]
        opt, sched = tr.make_optimizer("adam", 1e-2, clip_norm=1.0)
        def loss_fn(p, batch, key):
            return task.loss(model.apply({"params": p}, batch.inputs, batch.lengths), batch), {}
        step = jax.jit(tr.make_train_step(loss_fn, opt, clip_norm=1.0, schedule=sched))
        state = tr.init_state(params, opt, jax.random.key(2))
        batch_fn = lambda s: task.sample(jax.random.fold_in(jax.random.key(3), s), 8)
        state = tr.fit(state, step, batch_fn, num_steps=5, progress=True, handle_signals=False)
        assert int(state.step) == 5
        print("modules", len(mods), "ok")
    """)
    r = subprocess.run([str(py), "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout and "5/5" in r.stderr  # tqdm's bar reached the end
