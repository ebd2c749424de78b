"""Sphinx configuration: `tox -e docs` builds the site into docs/_build/html.

autodoc imports hetnet from this checkout; the compiled kernels (every ``*.pyx``)
and pyopencl are stood in for by mocks, so the site builds without a compiler, a
GPU or an OpenCL platform.  A new page is a Markdown (MyST) or reST file here plus
one line in a toctree of index.md.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project = "hetnet"
author = "hetnet developers"
copyright = "2026, hetnet developers"


def _version():
    for line in (ROOT / "hetnet" / "_version.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise RuntimeError("hetnet/_version.py has no __version__")


release = version = _version()

extensions = ["sphinx.ext.autodoc", "numpydoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

# every compiled module (a .pyx anywhere in the package) and pyopencl
autodoc_mock_imports = ["pyopencl"] + [
    ".".join(p.relative_to(ROOT).with_suffix("").parts) for p in sorted((ROOT / "hetnet").rglob("*.pyx"))]
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False
# numpydoc lists members itself where asked; autodoc's :members: does it here
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"hetnet {release}"
html_theme_options = {"description": "A small, fast, understandable CNN/MLP trainer for "
                                      "heterogeneous machines"}
