"""Sphinx configuration of the hyperbayes documentation (``make docs`` builds it)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))

project = "hyperbayes"
author = "the hyperbayes developers"
copyright = "2026, the hyperbayes developers"

extensions = [
    "myst_nb",                 # Markdown pages and the notebooks, rendered with their outputs
    "sphinx.ext.autodoc",      # the API reference, from the docstrings
    "sphinx.ext.napoleon",     # Google-style docstrings (Args:, Returns:, Example::)
    "results_pages",           # results pages generated from docs/results/**/metrics.json
]

# The notebooks are executed by `make notebooks` and committed with their outputs; the site
# renders those outputs and never runs code (a docs build takes seconds, not minutes).
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# docs/results holds the raw metrics and reports that the generated pages include; notes are
# included into those pages, not pages of their own.
exclude_patterns = ["_build", "results/**", "notes/**", "_ext/**", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]

html_theme = "furo"
html_title = "hyperbayes"
html_static_path: list[str] = []


def _copy_tutorials(app, config) -> None:
    """Bring the executed notebooks into the source tree (they live in ../notebooks)."""
    target = DOCS / "_generated" / "tutorials"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for notebook in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        shutil.copy2(notebook, target / notebook.name)


def setup(app):
    """Copy the tutorials before Sphinx reads its sources."""
    app.connect("config-inited", _copy_tutorials)
