"""Every ```python block of the README, the getting-started page and the CLI page runs, in
order, at small sizes (so the first example a user copies never breaks), and the README names
only registered methods."""

import re
import warnings
from pathlib import Path

import matplotlib
import pytest

import hyperbayes as hb
from hyperbayes.inference.trust import PosteriorWarning

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: documents whose python blocks are run, each in a fresh namespace
DOCUMENTS = [README, ROOT / "docs" / "getting-started.md", ROOT / "docs" / "cli.md"]

#: sizes cut to keep the test fast: keyword → largest value kept
SMALL = {"steps": 40, "num_samples": 30, "warmup": 30, "epochs": 1}
#: NUTS's tree depth in these runs: 30 warm-up draws cannot adapt the step size, and at the
#: default depth (10) each draw can take a thousand leapfrog steps
SMALL_TREE_DEPTH = 4


def _blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def _shrink(code: str) -> str:
    def cut(match):
        key, value = match.group(1), float(match.group(2))
        return f"{key}={min(value, SMALL[key]):g}"

    return re.sub(r"\b(" + "|".join(SMALL) + r")=([0-9_.]+)", cut, code)


def test_readme_is_a_users_page():
    text = README.read_text()
    assert len(text.splitlines()) < 250
    assert _blocks(text)


def test_readme_methods_table_names_registered_methods():
    text = README.read_text()
    table = text.split("## Methods", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"^\| `([a-z_-]+)` \|", table, flags=re.M)
    assert names
    known = set(hb.methods.available()) | {hb.methods.REFERENCE}
    assert set(names) <= known, set(names) - known


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_python_block_runs(document, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nuts = hb.inference.nuts
    monkeypatch.setattr(hb.inference, "nuts", lambda *args, **kwargs: nuts(
        *args, **{"max_tree_depth": SMALL_TREE_DEPTH} | kwargs))
    matplotlib.use("Agg")
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(_blocks(document.read_text())):
        code = _shrink(block)
        with warnings.catch_warnings():
            # tiny runs cannot mix; the trust checks saying so is the expected behaviour
            warnings.simplefilter("ignore", PosteriorWarning)
            try:
                exec(compile(code, f"{document.name} block {i + 1}", "exec"), namespace)
            except Exception as err:  # name the block in the failure
                raise AssertionError(f"{document.name} block {i + 1} failed:\n{code}") from err
