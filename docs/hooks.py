"""mkdocs hook: the committed result figures (``results/**.png``) appear in the site under
``figures/`` (``results/vanishing_gradients/scale_sweep.png`` is
``figures/vanishing_gradients/scale_sweep.png``), so the tutorials show the library's own
runs without a second copy of any image in ``docs/``."""

from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parents[1] / "results"


def on_files(files, config):
    for png in sorted(RESULTS.rglob("*.png")):
        uri = "figures/" + png.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files
