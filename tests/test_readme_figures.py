"""README.md's benchmark figures are the recorded results', made by
benchmarks/readme_figures.py, not typed by hand."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("readme_figures",
                                                  ROOT / "benchmarks" / "readme_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_figures_are_the_recorded_results():
    mod = _module()
    text = (ROOT / "README.md").read_text()
    assert mod.updated(text) == text, "run python benchmarks/readme_figures.py"


def test_every_row_names_an_existing_results_file():
    mod = _module()
    rows = mod.rows()
    assert rows, "no recorded result found"
    for what, where, figs, path, cmd in rows:
        assert (ROOT / "benchmarks" / "results" / path).is_file(), path
        assert where and figs and cmd, what
