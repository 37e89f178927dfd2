"""Build each notebook (.ipynb) from its paired percent-format script (.py) in this folder.

    python notebooks/sync.py          # rewrite the .ipynb files
    python notebooks/sync.py --check  # exit 1 if any .ipynb is out of date

The .py file is the source of truth: review and edit it, then run this script.
"""

from __future__ import annotations

import sys
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


def main(argv: list[str]) -> int:
    """Write (or with --check, verify) every notebook next to its script."""
    stale = []
    for script in sorted(HERE.glob("[0-9]*.py")):
        target = script.with_suffix(".ipynb")
        text = nbformat.writes(script_to_notebook(script.read_text()))
        if "--check" in argv:
            if not target.exists() or target.read_text() != text:
                stale.append(target.name)
        else:
            target.write_text(text)
    if stale:
        print("out of date (run python notebooks/sync.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
