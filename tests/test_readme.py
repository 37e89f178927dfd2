"""Every ```python block of the README runs, in order, at small sizes (so the first example
a user copies never breaks)."""

import re
import warnings
from pathlib import Path

import matplotlib

from hyperbayes.inference.trust import PosteriorWarning

README = Path(__file__).resolve().parents[1] / "README.md"

#: sizes cut to keep the test fast: keyword → largest value kept
SMALL = {"steps": 40, "num_samples": 30, "warmup": 30, "epochs": 1}


def _blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def _shrink(code: str) -> str:
    def cut(match):
        key, value = match.group(1), float(match.group(2))
        return f"{key}={min(value, SMALL[key]):g}"

    return re.sub(r"\b(" + "|".join(SMALL) + r")=([0-9_.]+)", cut, code)


def test_readme_has_python_examples():
    assert len(_blocks(README.read_text())) >= 5


def test_every_readme_python_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    matplotlib.use("Agg")
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(_blocks(README.read_text())):
        code = _shrink(block)
        with warnings.catch_warnings():
            # tiny runs cannot mix; the trust checks saying so is the expected behaviour
            warnings.simplefilter("ignore", PosteriorWarning)
            try:
                exec(compile(code, f"README.md block {i + 1}", "exec"), namespace)
            except Exception as err:  # name the block in the failure
                raise AssertionError(f"README block {i + 1} failed:\n{code}") from err
