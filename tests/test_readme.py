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
    import sys

    sys.path.insert(0, str(README.parent / "experiments"))
    import embed_results

    text = README.read_text()
    assert embed_results.BLOCK.findall(text), "no generated result blocks found"
    assert embed_results.embed(text) == text, "run python experiments/embed_results.py"
