"""The uncertainty suite: every method on the same tasks, one results table per task.

``hyperbayes suite [--quick] [--device auto] [--methods ...] [--out DIR]`` runs the tasks
below one after another (they share trained models through :mod:`~hyperbayes.experiments.zoo`)
and writes ``DIR/results.md`` and ``DIR/results.json``; each task also writes its own folder
``DIR/<task>/`` (metrics.json, figures, report.md).

A task is an experiment (``hyperbayes run <task>``) whose metrics.json carries ``"tables"``: a
list of :func:`table` dicts, method rows first and the papers' rows (``"paper: …"``) after
them. The suite only renders those tables; it has no per-method or per-task code.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

from .common import ExperimentResult, machine_info, markdown_table, write_json, write_text

__all__ = ["TASKS", "run", "table", "render_tables"]

TASKS = ("calibration", "ood", "unseen-class", "adversarial", "active-learning", "fidelity")


def table(title: str, columns: list[str], rows: list[dict], note: str = "",
          digits: int = 3) -> dict:
    """One results table: ``rows`` are dicts keyed by ``columns`` (the first is the row label,
    e.g. ``"method"``); missing cells print as "–". ``note`` says how to read it."""
    unknown = sorted({k for r in rows for k in r} - set(columns))
    if unknown:
        raise ValueError(f"table {title!r}: row keys {unknown} are not among the columns "
                         f"{columns}")
    return {"title": title, "columns": list(columns), "rows": [dict(r) for r in rows],
            "note": note, "digits": digits}


def render_tables(tables: list[dict]) -> str:
    """Markdown for a task's tables (a heading, the table, then its note)."""
    parts = []
    for t in tables:
        rows = [{c: r.get(c, "–") for c in t["columns"]} for r in t["rows"]]
        parts += [f"#### {t['title']}", "",
                  markdown_table(rows, t["columns"], digits=t.get("digits", 3)), ""]
        if t.get("note"):
            parts += [t["note"], ""]
    return "\n".join(parts)


def run(tasks=TASKS, *, methods_to_run=None, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/suite", progress: bool | None = None,
        settings: dict | None = None) -> ExperimentResult:
    """Run each task into ``out/<task>`` and gather their tables into results.md / results.json.

    Args:
        tasks: task names (default: all of :data:`TASKS`).
        methods_to_run: method names (default: every registered method).
        quick: each task's small settings.
        device, seed, progress: passed to every task.
        out: the output folder.
        settings: ``{task: Settings}`` overrides (tests use tiny ones).
    """
    from . import EXPERIMENTS  # the registry imports this module

    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown suite task(s) {unknown}; choose from {list(TASKS)}")
    settings = settings or {}
    out = Path(out)
    start = time.perf_counter()
    payload = {"suite": list(tasks), "seed": seed, "quick": quick, "device": str(device),
               "methods": methods_to_run, "machine": machine_info(), "tasks": {}}
    for task in tasks:
        runner = EXPERIMENTS[task]
        kwargs = {"quick": quick, "device": device, "seed": seed, "out": out / task,
                  "progress": progress}
        if task in settings:
            kwargs["settings"] = settings[task]
        if methods_to_run is not None:
            kwargs["methods_to_run"] = methods_to_run
        if "checkpoints" in inspect.signature(runner).parameters:
            kwargs["checkpoints"] = out / "zoo"
        t0 = time.perf_counter()
        result = runner(**kwargs)
        payload["tasks"][task] = {"tables": result.metrics.get("tables", []),
                                  "wall_time_s": time.perf_counter() - t0,
                                  "seeds": result.metrics.get("seeds", [seed]),
                                  "report": str(Path(task) / "report.md")}
        payload["wall_time_s"] = time.perf_counter() - start
        write_json(out / "results.json", payload)
        write_text(out / "results.md", _results_md(payload))
    payload["wall_time_s"] = time.perf_counter() - start
    write_json(out / "results.json", payload)
    write_text(out / "results.md", _results_md(payload))
    return ExperimentResult("suite", payload, out, [], payload["wall_time_s"])


def _results_md(payload: dict) -> str:
    """results.md: one section per task with its tables, seeds and wall time."""
    m = payload["machine"]
    lines = ["# hyperbayes uncertainty suite", "",
             f"Tasks {', '.join(payload['suite'])}; methods "
             f"{', '.join(payload['methods']) if payload['methods'] else 'all registered'}; "
             f"quick={payload['quick']}, device {payload['device']}, seed {payload['seed']}; "
             f"{m.get('platform', '')}, {m.get('cpu_count', '?')} CPUs, torch "
             f"{m.get('torch', '?')}; total wall time {payload.get('wall_time_s', 0):.0f} s.", ""]
    for task, entry in payload["tasks"].items():
        lines += [f"## {task}", "",
                  f"Seeds {entry['seeds']}; wall time {entry['wall_time_s']:.0f} s; details in "
                  f"`{entry['report']}`.", "", render_tables(entry["tables"])]
    return "\n".join(lines)
