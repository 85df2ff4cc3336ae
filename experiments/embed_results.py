"""Copy generated result files into the README between their markers.

    python experiments/embed_results.py            # rewrite README.md in place
    python experiments/embed_results.py --check    # exit 1 if README.md is out of date

A block ``<!-- results/X -->`` ... ``<!-- end results/X -->`` receives the file
``results/X`` (without its first-level title; relative links re-rooted at the README),
so no result is typed by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- (results/\S+) -->\n)(.*?)(<!-- end \2 -->)", re.S)


def body(path: str) -> str:
    text = (ROOT / path).read_text()
    if text.startswith("# "):  # the file's own title; the README has its section heading
        text = text.split("\n", 1)[1].lstrip("\n")
    # Links relative to the file become relative to the README.
    folder = str(Path(path).parent)
    text = re.sub(r"\]\((?!https?:|/)([^)]+)\)", lambda m: f"]({folder}/{m.group(1)})", text)
    return text.rstrip("\n") + "\n"


def embed(readme: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + body(m.group(2)) + m.group(4), readme)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = embed(text)
    if "--check" in argv:
        if new != text:
            print("README.md is out of date: run python experiments/embed_results.py")
            return 1
        return 0
    readme.write_text(new)
    print(f"embedded {len(BLOCK.findall(text))} result file(s) into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
