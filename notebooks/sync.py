"""Build each notebook (.ipynb) from its paired percent-format script (.py) in this folder.

    python notebooks/sync.py            # rewrite the .ipynb files whose code changed
    python notebooks/sync.py --check    # exit 1 if any .ipynb's cells differ from its script
    python notebooks/sync.py --execute  # sync, then run every notebook and keep its outputs

The .py file is the source of truth: review and edit it, then run this script. A notebook is
compared with its script by its cells' sources only, so the outputs committed with it (written by
``--execute``, which ``make notebooks`` runs) survive a sync that changes nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent


def script_to_notebook(text: str) -> nbformat.NotebookNode:
    """Split a ``# %%`` / ``# %% [markdown]`` script into notebook cells."""
    cells, kind, lines = [], None, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                             for line in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif kind == "code" and body:
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    for index, cell in enumerate(cells):  # stable ids, so --check compares content only
        cell["id"] = f"cell-{index:02d}"
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    return notebook


def cell_sources(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """What a notebook says, without its outputs: (cell type, source) per cell."""
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def execute(path: Path, timeout: int = 3600) -> float:
    """Run ``path`` top to bottom in a scratch folder and save it with its outputs; seconds."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ.pop("MPLBACKEND", None)  # figures inline, even where a shell set Agg
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": scratch}}).execute()
    path.write_text(nbformat.writes(notebook))
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    """Write (or with --check, verify; with --execute, also run) every notebook."""
    stale = []
    for script in sorted(HERE.glob("[0-9]*.py")):
        target = script.with_suffix(".ipynb")
        fresh = script_to_notebook(script.read_text())
        same = target.exists() and cell_sources(
            nbformat.read(target, as_version=4)) == cell_sources(fresh)
        if "--check" in argv:
            if not same:
                stale.append(target.name)
        elif not same:
            target.write_text(nbformat.writes(fresh))
    if stale:
        print("out of date (run python notebooks/sync.py):", ", ".join(stale))
        return 1
    if "--execute" in argv:
        for target in sorted(HERE.glob("[0-9]*.ipynb")):
            print(f"{target.name}: executed in {execute(target):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
