"""The documentation site: every tutorial runs as written, the site builds offline
under ``--strict``, and the API reference covers every public name of every module.

Each tutorial page's Python blocks run in order in one namespace, as a reader would
run them; the build runs mkdocs with every proxy pointed at a closed port, so a plugin
that reached for the network would fail it."""

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import rnnjax

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
PAGES = [DOCS / "index.md", *TUTORIALS]  # the pages whose code is the reader's to run
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
NAV = re.compile(r":\s+(\S+\.md)\s*$", re.M)


def test_every_tutorial_has_code_and_is_in_the_nav():
    nav = set(NAV.findall((ROOT / "mkdocs.yml").read_text()))
    assert len(TUTORIALS) >= 8
    for page in TUTORIALS:
        assert f"tutorials/{page.name}" in nav, page.name
        assert BLOCK.findall(page.read_text()), f"{page.name} has no python block"


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_tutorial_runs_as_written(page):
    namespace = {"__name__": f"docs.{page.stem}"}
    for index, block in enumerate(BLOCK.findall(page.read_text())):
        exec(compile(block, f"{page.relative_to(ROOT)} block {index}", "exec"), namespace)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", HTTP_PROXY=closed, HTTPS_PROXY=closed)
    env.update(http_proxy=closed, https_proxy=closed, NO_PROXY="", no_proxy="")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    run = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def test_the_site_builds_offline_with_every_page_and_figure(site):
    for page in TUTORIALS:
        html = (site / "tutorials" / page.stem / "index.html").read_text()
        for figure in re.findall(r"\.\./figures/([^)\s]+\.png)", page.read_text()):
            assert (ROOT / "results" / figure).exists(), f"{page.name}: {figure}"
            assert (site / "figures" / figure).exists(), f"{page.name}: {figure}"
        assert "<pre" in html, page.name
    assert "rnnjax.nnx.SequenceModel" in (site / "api" / "modules" / "index.html").read_text()


def _inventory(site: Path) -> set[str]:
    """The object names in the site's ``objects.inv`` (Sphinx's format: four header
    lines, then zlib-compressed ``name domain:role priority uri dispname`` lines)."""
    raw = (site / "objects.inv").read_bytes()
    body = raw.split(b"\n", 4)[4]
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}


def _modules() -> list[str]:
    names = ["rnnjax"]
    for info in pkgutil.walk_packages(rnnjax.__path__, "rnnjax."):
        names.append(info.name)
    return names


def _public(module) -> list[str]:
    """``__all__``, else the public functions and classes the module defines."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and getattr(value, "__module__", None) == module.__name__
    ]


def test_the_reference_documents_every_public_name(site):
    inventory = _inventory(site)
    missing = []
    for name in _modules():
        if name not in inventory:
            missing.append(name)
            continue
        module = importlib.import_module(name)
        missing += [f"{name}.{n}" for n in _public(module) if f"{name}.{n}" not in inventory]
    assert not missing, f"not in the API reference: {missing}"
