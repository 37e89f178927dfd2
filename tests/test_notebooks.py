"""The teaching notebooks are in sync with their scripts and run top to bottom (small settings)."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_notebooks_match_their_scripts():
    result = subprocess.run([sys.executable, str(NOTEBOOKS / "sync.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# The flow, MetaPrior and implicit-hypernetwork tutorials (≈75 s together on 2 cores) run with
# `make test-all`; the default run executes the first (NUTS beside every method) and checks
# every notebook against its script above.
SLOW_NOTEBOOKS = {"02_bayesian_hypernetworks.ipynb", "03_metaprior.ipynb",
                  "04_implicit_hypernetworks.ipynb"}


@pytest.mark.parametrize("name", [
    pytest.param(p.name, marks=[pytest.mark.slow] if p.name in SLOW_NOTEBOOKS else [])
    for p in sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))])
def test_notebook_executes(name, tmp_path, monkeypatch, request):
    if 'load("mnist")' in (NOTEBOOKS / name).read_text():
        request.getfixturevalue("mnist")  # fetched here, or the test skips without it
    monkeypatch.setenv("HYPERBAYES_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [out for cell in notebook.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
