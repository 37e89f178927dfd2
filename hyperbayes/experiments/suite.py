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
import json
import time
from pathlib import Path

from .common import ExperimentResult, machine_info, markdown_table, write_json, write_text

__all__ = ["TASKS", "run", "gather", "table", "render_tables"]

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
        settings: dict | None = None, overrides: dict | None = None) -> ExperimentResult:
    """Run each task into ``out/<task>`` and gather their tables into results.md / results.json.

    Args:
        tasks: task names (default: all of :data:`TASKS`).
        methods_to_run: method names (default: every registered method).
        quick: each task's small settings.
        device, seed, progress: passed to every task.
        out: the output folder.
        settings: ``{task: Settings}`` overrides (tests use tiny ones).
        overrides: ``{method: {option: value}}`` laid over the methods' recipes in every task
            (``--option METHOD.KEY=VALUE``).
    """
    from . import EXPERIMENTS  # the registry imports this module

    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown suite task(s) {unknown}; choose from {list(TASKS)}")
    settings = settings or {}
    out = Path(out)
    start = time.perf_counter()
    payload = {"suite": list(tasks), "seed": seed, "quick": quick, "device": str(device),
               "methods": methods_to_run, "overrides": overrides or {},
               "machine": machine_info(), "tasks": {}}
    for task in tasks:
        runner = EXPERIMENTS[task]
        kwargs = {"quick": quick, "device": device, "seed": seed, "out": out / task,
                  "progress": progress}
        if task in settings:
            kwargs["settings"] = settings[task]
        if methods_to_run is not None:
            kwargs["methods_to_run"] = methods_to_run
        if overrides:
            kwargs["overrides"] = overrides
        if "checkpoints" in inspect.signature(runner).parameters:
            kwargs["checkpoints"] = out / "zoo"
        t0 = time.perf_counter()
        result = runner(**kwargs)
        payload["tasks"][task] = _task_entry(task, result.metrics, time.perf_counter() - t0)
        payload["wall_time_s"] = time.perf_counter() - start
        write_json(out / "results.json", payload)
        write_text(out / "results.md", _results_md(payload))
    payload["wall_time_s"] = time.perf_counter() - start
    write_json(out / "results.json", payload)
    write_text(out / "results.md", _results_md(payload))
    return ExperimentResult("suite", payload, out, [], payload["wall_time_s"])


def gather(out: str | Path, tasks=None) -> ExperimentResult:
    """results.md / results.json from task folders already run, training nothing.

    For a suite whose tasks ran separately (in other processes, sessions or machines, e.g. one
    task on a GPU): each ``out/<task>/metrics.json`` written by ``hyperbayes run <task> --out
    out/<task>`` (or by an earlier suite) is read, and its tables, seeds, wall time, device and
    machine go into the summary as they were recorded.

    Args:
        out: the suite folder holding one folder per task.
        tasks: the tasks to gather, in this order (default: every task of :data:`TASKS` that
            has a folder); a named task without a readable metrics.json is an error.
    """
    out = Path(out)
    names = list(tasks) if tasks is not None else [
        t for t in TASKS if (out / t / "metrics.json").exists()]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown suite task(s) {unknown}; choose from {list(TASKS)}")
    if not names:
        raise ValueError(f"no task folder with a metrics.json in {out} (expected "
                         f"{out}/<task>/metrics.json for a task of {list(TASKS)})")
    payload = {"suite": names, "gathered": True, "tasks": {}}
    for task in names:
        path = out / task / "metrics.json"
        try:
            metrics = json.loads(path.read_text())
            metrics["tables"]  # a finished task's metrics.json has its tables
        except FileNotFoundError as err:
            raise ValueError(f"task {task!r} has not been run into {out}: {path} is "
                             "missing") from err
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a finished task's metrics.json ({err})") from err
        payload["tasks"][task] = _task_entry(task, metrics,
                                             float(metrics.get("wall_time_s", 0.0)))
    payload["wall_time_s"] = sum(e["wall_time_s"] for e in payload["tasks"].values())
    write_json(out / "results.json", payload)
    write_text(out / "results.md", _results_md(payload))
    return ExperimentResult("suite", payload, out, [], payload["wall_time_s"])


def _task_entry(task: str, metrics: dict, wall_time_s: float) -> dict:
    """A task's entry in results.json, from its metrics.json dict and its wall time."""
    return {"tables": metrics.get("tables", []), "wall_time_s": wall_time_s,
            "compute_s": metrics.get("compute_s"),
            "seeds": metrics.get("seeds", [metrics.get("seed", 0)]),
            "report": str(Path(task) / "report.md"), "quick": metrics.get("quick"),
            "device": metrics.get("device"), "machine": metrics.get("machine", {})}


def _machine_line(machine: dict) -> str:
    """'<platform>, N CPUs[, GPU], torch V' from :func:`machine_info`'s dict."""
    gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
    return (f"{machine.get('platform', '')}, {machine.get('cpu_count', '?')} CPUs{gpu}, torch "
            f"{machine.get('torch', '?')}")


def _results_md(payload: dict) -> str:
    """results.md: one section per task with its tables, seeds and wall time."""
    if payload.get("gathered"):
        lines = ["# hyperbayes uncertainty suite", "",
                 f"Tasks {', '.join(payload['suite'])}, gathered from task folders run "
                 "separately (`hyperbayes suite --gather`); each task's settings, device and "
                 f"machine are its own; wall times add up to {payload['wall_time_s']:.0f} s.", ""]
    else:
        lines = ["# hyperbayes uncertainty suite", "",
                 f"Tasks {', '.join(payload['suite'])}; methods "
                 f"{', '.join(payload['methods']) if payload['methods'] else 'all registered'};"
                 f" quick={payload['quick']}, device {payload['device']}, seed "
                 f"{payload['seed']}; {_machine_line(payload['machine'])}; total wall time "
                 f"{payload.get('wall_time_s', 0):.0f} s.", ""]
    for task, entry in payload["tasks"].items():
        where = (f"; quick={entry['quick']}, device {entry['device']}, "
                 f"{_machine_line(entry['machine'])}" if payload.get("gathered") else "")
        work = (f" ({entry['compute_s']:.0f} s of training and scoring, reused results "
                "included)" if entry.get("compute_s") else "")
        lines += [f"## {task}", "",
                  f"Seeds {entry['seeds']}; wall time {entry['wall_time_s']:.0f} s{work}{where}; "
                  f"details in `{entry['report']}`.", "", render_tables(entry["tables"])]
    return "\n".join(lines)
