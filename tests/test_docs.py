"""The documentation site builds with no warnings, its results pages are generated from the
metrics files, and its pages render in a real headless browser (Debian's chromium)."""

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import results_pages  # noqa: E402  (the docs' own extension, not an installed module)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as `make docs` builds it (warnings are errors)."""
    out = tmp_path_factory.mktemp("site") / "html"
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                             "html", str(DOCS), str(out)], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "WARNING" not in result.stderr and "ERROR" not in result.stderr, result.stderr
    return out


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))


def _images(html: str) -> list[str]:
    parser = _Images()
    parser.feed(html)
    return parser.sources


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium: `apt-get install chromium` (make test does it where it can)")


def _render(page: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message the page logged."""
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    return result.stdout, console


def _check_page(page: Path, min_images: int) -> str:
    dom, console = _render(page)
    assert not console, console
    title = re.search(r"<title>(.*?)</title>", dom, flags=re.S)
    assert title and "hyperbayes" in title.group(1)
    sources = [s for s in _images(dom) if not s.startswith(("data:", "http"))]
    assert len(sources) >= min_images, (page.name, sources)
    for source in sources:  # every figure the page shows is a file in the built site
        image = (page.parent / source.split("#")[0]).resolve()
        assert image.is_file() and image.stat().st_size > 0, source
    return dom


def test_index_renders_in_a_browser(site):
    dom = _check_page(site / "index.html", min_images=0)
    for section in ("Getting started", "Concepts", "Tutorials", "Results", "API reference"):
        assert section in dom


def test_a_tutorial_renders_with_its_figures(site):
    dom = _check_page(site / "_generated" / "tutorials" / "01_bayesian_deep_learning_basics.html",
                      min_images=1)
    assert "NUTS" in dom


def test_every_tutorial_page_shows_figures(site):
    pages = sorted((site / "_generated" / "tutorials").glob("*.html"))
    assert len(pages) == 4
    for page in pages:
        assert _images(page.read_text()), f"{page.name} has no figures: run `make notebooks`"


def test_a_results_page_renders_with_its_figures(site):
    _check_page(site / "_generated" / "results" / "toy-regression.html", min_images=1)


def test_every_api_module_is_documented(site):
    api = (site / "api.html").read_text()
    for name in ("hyperbayes.inference.svi.fit", "hyperbayes.methods.build",
                 "hyperbayes.guides.flows.FlowGuide", "hyperbayes.models.bnn.BNN"):
        assert f'id="{name}"' in api, name


def _metrics(path: Path, value: float) -> None:
    path.write_text(json.dumps({"experiment": "demo", "seed": 0, "quick": False,
                                "device": "cpu", "settings": {"steps": 10},
                                "tables": [{"title": "Accuracy", "columns": ["method", "acc %"],
                                            "rows": [{"method": "map", "acc %": value}]}]}))


def test_results_pages_are_generated_from_the_metrics(tmp_path):
    results, notes, out = tmp_path / "results", tmp_path / "notes", tmp_path / "out"
    (results / "task").mkdir(parents=True)
    notes.mkdir()
    _metrics(results / "task" / "metrics.json", 97.25)  # a run folder with the tables schema
    (results / "task" / "curve.png").write_bytes(b"\x89PNG")
    for date, nll in (("2026-01-02", 0.5), ("2026-02-03", 0.75)):  # dated runs, no tables
        (results / f"demo_metrics_{date}.json").write_text(json.dumps(
            {"experiment": "demo", "methods": {"map": {"nll": nll}, "meanfield": {"nll": 0.25}}}))
    (notes / "demo.md").write_text("Our reading.\n")
    (notes / "costs.md").write_text("# What runs cost\n\nFigures.\n")  # a titled note: a page
    (notes / "lost-run.md").write_text("A run whose metrics were not kept.\n")
    assert results_pages.write_pages(results, notes, out) == ["demo", "task"]
    assert (out / "costs.md").read_text().startswith("```{include}")
    assert "No metrics file" in (out / "lost-run.md").read_text()
    assert "costs" in (out / "index.md").read_text()
    task = (out / "task.md").read_text()
    assert "| map | 97.250 |" in task and "curve.png" in task and "Accuracy" in task
    demo = (out / "demo.md").read_text()
    assert "| metric | map | meanfield |" in demo and "| nll | 0.750 | 0.250 |" in demo
    assert "demo_metrics_2026-01-02.json" in demo  # the earlier run is listed
    assert "{include}" in demo and "notes/demo.md" in demo  # the note is included
    _metrics(results / "task" / "metrics.json", 98.5)  # edit the metrics and regenerate
    results_pages.write_pages(results, notes, out)
    task = (out / "task.md").read_text()
    assert "| map | 98.500 |" in task and "97.250" not in task
    assert "task" in (out / "index.md").read_text()


def test_the_site_tests_run_in_one_worker_group(request):
    """Under `make test` (pytest-xdist, --dist loadgroup) every test of this file is sent to one
    worker, which alone builds the site in the source tree: the group must reach the test's
    id (pytest 9 with pytest-xdist 3.8 silently dropped it, and two workers raced)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run under pytest-xdist --dist loadgroup")
    assert request.node.nodeid.endswith("@test_docs"), request.node.nodeid
