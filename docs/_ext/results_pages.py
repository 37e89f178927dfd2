"""Sphinx extension: writes one results page per experiment from the metrics.json files and figures
under docs/results, so no result in the docs is typed by hand.

Sources, found by scanning ``docs/results`` at every build:

* a folder holding ``metrics.json`` (a task folder of the uncertainty suite, ``module_zoo``, ...):
  one page, with the folder's PNG figures;
* files named ``<experiment>_metrics_<YYYY-MM-DD>.json``: one page per experiment, showing the
  latest date; the PNGs named ``<experiment>_*.png`` are its figures; earlier dates are listed;
* ``results.md`` of a gathered suite run: included as it is (``hyperbayes suite --gather``
  generates it);
* benchmark JSON files (``<benchmark>_<machine>_<YYYY-MM-DD>.json``): one page each.

A page renders the payload's ``tables`` (the experiments' one table schema: title, columns, rows,
note) where it has them, and otherwise every per-method scalar, as a table with one column per
method. A hand-written interpretation in ``docs/notes/<page>.md`` is included under the tables.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import defaultdict
from pathlib import Path

from hyperbayes.experiments.suite import render_tables

DATED = re.compile(r"^(?P<name>.+?)_metrics_(?P<date>\d{4}-\d{2}-\d{2})$")
BENCHMARK = re.compile(r"^(?P<name>.+?)_(?P<date>\d{4}-\d{2}-\d{2})$")
HEADER_KEYS = ("experiment", "dataset", "seed", "seeds", "quick", "device", "wall_time_s",
               "compute_s")  # compute_s: the work a gathered run stands for


def _cell(value) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"
    text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _scalars(value, prefix: str = "", depth: int = 0) -> dict:
    """Flatten nested dicts to ``{"a.b": scalar}`` (lists and deeper nesting are left out)."""
    out = {}
    if isinstance(value, dict) and depth < 3:
        for key, inner in value.items():
            out.update(_scalars(inner, f"{prefix}{key}.", depth + 1))
    elif isinstance(value, (int, float, str, bool)) or value is None:
        out[prefix.rstrip(".")] = value
    return out


def _table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def method_table(methods: dict) -> str:
    """Every scalar each method reports, one row per metric and one column per method."""
    flat = {label: _scalars(values) for label, values in methods.items()
            if isinstance(values, dict)}
    if not flat:
        return ""
    metrics: list[str] = []
    for values in flat.values():
        metrics += [m for m in values if m not in metrics]
    rows = [[m] + [flat[label].get(m) for label in flat] for m in metrics]
    return _table(["metric", *flat], rows)


def _header(payload: dict, source: str) -> str:
    facts = [f"**{key}**: {_cell(payload[key])}" for key in HEADER_KEYS if key in payload]
    machine = payload.get("machine") or {}
    if machine:
        where = ", ".join(str(machine[k]) for k in ("gpu", "processor", "cpu_count", "torch")
                          if machine.get(k))
        facts.append(f"**machine**: {where}")
    lines = [" · ".join(facts), "", f"Generated from `{source}`."]
    settings = payload.get("settings")
    if isinstance(settings, dict) and settings:
        flat = _scalars(settings)
        lines += ["", "#### Settings", "",
                  _table(["setting", "value"], [[k, v] for k, v in flat.items()])]
    return "\n".join(lines)


def _body(payload: dict) -> str:
    if payload.get("tables"):
        return render_tables(payload["tables"])
    if isinstance(payload.get("methods"), dict):
        return "#### Every method's numbers\n\n" + method_table(payload["methods"])
    parts = []
    rest = {}
    for key, value in payload.items():
        if key in ("settings", "machine"):
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            rows = [_scalars(v) for v in value]
            columns: list[str] = []
            for row in rows:
                columns += [c for c in row if c not in columns]
            parts += [f"#### {key}", "", _table(columns, [[r.get(c) for c in columns]
                                                          for r in rows]), ""]
        else:
            rest[key] = value
    flat = _scalars(rest)
    if flat:
        parts = ["#### Numbers", "", _table(["quantity", "value"],
                                            [[k, v] for k, v in flat.items()]), "", *parts]
    return "\n".join(parts)


def _figures(paths: list[Path], page_dir: Path) -> str:
    parts = []
    for path in sorted(paths):
        rel = Path(_relative(path, page_dir))
        caption = path.stem.replace("_", " ")
        parts += [f"```{{figure}} {rel.as_posix()}", f":alt: {caption}", "", caption, "```", ""]
    return "\n".join(parts)


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)


def _page(title: str, payload: dict, source: Path, figures: list[Path], note: Path | None,
          page_dir: Path, extra: str = "", root: Path | None = None) -> str:
    shown = source.relative_to(root) if root else source
    parts = [f"# {title}", "", _header(payload, shown.as_posix()), "", _body(payload), ""]
    if figures:
        parts += ["## Figures", "", _figures(figures, page_dir)]
    if extra:
        parts += [extra, ""]
    if note is not None and note.exists():
        parts += ["## Reading the results", "", f"```{{include}} {_relative(note, page_dir)}",
                  "```", ""]
    return "\n".join(parts)


def collect(results: Path) -> dict[str, dict]:
    """The pages to write: ``{slug: {"title", "payload", "source", "figures", ...}}``."""
    pages: dict[str, dict] = {}
    for metrics in sorted(results.rglob("metrics.json")):
        folder = metrics.parent
        if folder.name == "parts" or any(p.name == "parts" for p in folder.parents):
            continue
        slug = folder.relative_to(results).as_posix().replace("/", "-").replace("_", "-")
        payload = json.loads(metrics.read_text())
        title = f"{payload.get('experiment', folder.name)} ({folder.relative_to(results)})"
        pages[slug] = {"title": title, "payload": payload, "source": metrics,
                       "figures": sorted(folder.glob("*.png")), "kind": "experiment"}
    dated: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    benchmarks: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for path in sorted(results.glob("*.json")):
        if match := DATED.match(path.stem):
            dated[match["name"]].append((match["date"], path))
        elif match := BENCHMARK.match(path.stem):
            benchmarks[match["name"]].append((match["date"], path))
    for name, runs in list(benchmarks.items()):
        for date, path in list(runs):  # a run of an experiment or of the suite, not a benchmark
            payload = json.loads(path.read_text())
            summary = path.with_suffix(".md")
            if isinstance(payload, dict) and "tasks" in payload and summary.exists():
                pages[name.replace("_", "-") + "-" + date] = {"markdown": summary,
                                                               "kind": "suite"}
            elif isinstance(payload, dict) and "methods" in payload:
                dated[name].append((date, path))
            else:
                continue
            runs.remove((date, path))
    for name, runs in dated.items():
        runs.sort()
        date, latest = runs[-1]
        payload = json.loads(latest.read_text())
        earlier = [f"- {d}: `{p.relative_to(results).as_posix()}`" for d, p in runs[:-1]]
        extra = ("## Earlier runs\n\n" + "\n".join(earlier)) if earlier else ""
        pages[name.replace("_", "-")] = {
            "title": f"{payload.get('experiment', name)}, measured {date}", "payload": payload,
            "source": latest, "figures": sorted(results.glob(f"{name}_*.png")),
            "extra": extra, "kind": "experiment"}
    for name, runs in benchmarks.items():
        for date, path in sorted(runs):
            payload = json.loads(path.read_text())
            if not isinstance(payload, dict):
                continue
            slug = "benchmark-" + name.replace("_", "-") + "-" + date
            pages[slug] = {"title": f"Benchmark {name}, {date}", "payload": payload,
                           "source": path, "figures": [], "kind": "benchmark"}
    for summary in sorted(results.rglob("results.md")):
        slug = summary.parent.relative_to(results).as_posix().replace("_", "-") + "-summary"
        pages[slug] = {"markdown": summary, "kind": "suite"}
    return pages


def write_pages(results: Path, notes: Path, out: Path) -> list[str]:
    """Write every results page and an index under ``out``; returns the page slugs."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pages = collect(results)
    sections = {"suite": [], "experiment": [], "benchmark": []}
    for slug, page in sorted(pages.items()):
        target = out / f"{slug}.md"
        if page["kind"] == "suite":
            # a gathered suite run's results.md is already generated; figures live in task folders
            rel = _relative(page["markdown"], out)
            text = page["markdown"].read_text()
            title = text.splitlines()[0].lstrip("# ").strip() if text else slug
            source = page["markdown"].relative_to(results.parent).as_posix()
            note = notes / f"{slug}.md"
            reading = (f"\n## Reading the results\n\n```{{include}} {_relative(note, out)}\n```\n"
                       if note.exists() else "")
            target.write_text(f"# {title}: {slug.removesuffix('-summary')}\n\nGenerated from "
                              f"`{source}`.\n\n```{{include}} {rel}\n:heading-offset: 1\n"
                              f":start-line: 1\n```\n{reading}")
        else:
            target.write_text(_page(page["title"], page["payload"], page["source"],
                                    page["figures"], notes / f"{slug}.md", out,
                                    page.get("extra", ""), results.parent))
        sections[page["kind"]].append(slug)
    for note in sorted(notes.glob("*.md")):
        if note.stem in pages:
            continue
        if note.read_text().startswith("# "):  # a note with its own title: a page of its own
            (out / note.name).write_text(f"```{{include}} {_relative(note, out)}\n```\n")
        else:  # a run whose metrics.json was not kept: its note only
            (out / note.name).write_text(
                f"# {note.stem}\n\nNo metrics file of this run is in `docs/results`; what "
                f"follows is the note written with it.\n\n```{{include}} "
                f"{_relative(note, out)}\n```\n")
        sections["experiment"].append(note.stem)
    index = ["# Results", "",
             "Every page here is generated at build time from the metrics.json files and figures "
             "under `docs/results/` (written by `hyperbayes run ...`, `hyperbayes suite` and "
             "`make bench`). Paper numbers appear as rows named `paper: ...` beside ours.", ""]
    for kind, heading in (("experiment", "Experiments"), ("suite", "Uncertainty suite runs"),
                          ("benchmark", "Benchmarks")):
        index += ["```{toctree}", f":caption: {heading}", ":maxdepth: 1", "",
                  *sections[kind], "```", ""]
    (out / "index.md").write_text("\n".join(index))
    return sorted(pages)


def methods_page() -> str:
    """The registry as a page: every method and variant, what it is, its paper and recipes;
    the counted forms and the papers' names."""
    from hyperbayes import methods

    rows = []
    for name in methods.available():
        method = methods.get(name)
        rows.append([f"`{name}`", f"`{method.base}`" if method.base else "", method.summary,
                     method.reference or "", ", ".join(sorted(method.recipes)) or "–"])
    counted = [[f"`{name}-<K>`", f"`{name}` with `{methods.get(name).count_option}` = K"]
               for name in methods.available() if methods.get(name).count_option]
    aliases = [[f"`{alias}`", f"`{name}`"] for alias, name in methods.aliases().items()]
    return "\n".join([
        "# Methods", "",
        "Generated from the registry (`hb.methods`; `hyperbayes methods` prints the same list). "
        "A name is used in code (`hb.methods.build(name, ...)`, `hb.methods.setup(name, family, "
        "...)`), on the command line (`--methods`, `--option NAME.KEY=VALUE`) and in every "
        "`metrics.json`. A variant derives from a base method with some options fixed "
        "(`hb.methods.register_variant`); the uncertainty suite runs the base methods. A "
        "recipe is kept per task family (`classification`, `regression`) and, where one "
        "experiment's protocol differs, per task (`regression/product`). `nuts` is the "
        "reference sampler (`hb.inference.nuts`), not a guide.", "",
        _table(["name", "variant of", "what it is", "paper", "recipes"], rows), "",
        "## Counted names", "",
        "A method with a count option also answers to `<name>-<K>`:", "",
        _table(["name", "means"], counted), "",
        "## The papers' names", "",
        _table(["alias", "stands for"], aliases), ""])


def cli_page() -> str:
    """``hyperbayes --help`` and the help of each subcommand, as the parser prints them."""
    from hyperbayes.cli import build_parser

    parser = build_parser()
    parts = ["# Command-line help", "", "Generated from the argument parser at build time.", "",
             "```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._subparsers._group_actions:  # the subcommands, in order
        for name, sub in action.choices.items():
            parts += [f"## hyperbayes {name}", "", "```text", sub.format_help().rstrip(), "```",
                      ""]
    return "\n".join(parts)


def _on_config_inited(app, config) -> None:
    docs = Path(app.srcdir)
    generated = docs / "_generated"
    write_pages(docs / "results", docs / "notes", generated / "results")
    (generated / "methods.md").write_text(methods_page())
    (generated / "cli-help.md").write_text(cli_page())


def setup(app):
    """Register the generator with Sphinx (runs before sources are read)."""
    app.connect("config-inited", _on_config_inited)
    return {"parallel_read_safe": True, "version": "1"}
