"""Every Python block in the README runs exactly as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index):
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "readme"})


def test_readme_results_are_the_generated_files():
    """Result tables in the README are copies of the generated files, not typed."""

    import embed_results

    text = README.read_text()
    assert embed_results.BLOCK.findall(text), "no generated result blocks found"
    assert embed_results.embed(text) == text, "run python experiments/embed_results.py"


DOCS = ("README.md", "benchmarks/README.md", "CHANGELOG.md")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(path: Path) -> list[str]:
    """The targets of ``path``'s markdown links that point into the repository."""
    found = LINK.findall(path.read_text())
    return [t.split("#")[0] for t in found if not re.match(r"[a-z]+:|#", t)]


def test_relative_links_find_their_files():
    root = README.parent
    checked, missing = 0, []
    for name in DOCS:
        doc = root / name
        for target in relative_links(doc):
            checked += 1
            if not (doc.parent / target).exists():
                missing.append(f"{name}: {target}")
    assert checked > 20, checked
    assert not missing, missing


def test_relative_links_sees_a_broken_link(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("[a](a.md) [b](https://x.org/b) [c](#c) [d](d/e.png#f)")
    assert relative_links(doc) == ["a.md", "d/e.png"]


def test_reference_is_the_teams():
    """REFERENCE.md is a copy of the team's shared reference, kept in the repository so
    that a clone has it; where the shared one sits beside the checkout, they agree."""
    shared = README.parents[1] / "shared" / "REFERENCE.md"
    if not shared.exists():
        pytest.skip("no shared/REFERENCE.md beside this checkout (a clone elsewhere)")
    assert (README.parent / "REFERENCE.md").read_text() == shared.read_text()
