"""The suite's (method, seed) jobs spread over the processes ``torchrun`` starts, on one machine
or many: each process takes the next job from a counter in the process group's store, every job
writes its own folder, and rank 0 merges them into the task folders ``suite --gather`` reads.

Why torchrun: it is already how hyperbayes trains data-parallel, needs no service or extra
package (Ray and Dask each bring a cluster runtime), starts processes on N nodes with one
command, and its c10d store gives an atomic counter, which is the whole scheduler: a job goes
to whichever process is free, so long and short jobs balance themselves. The home-made part
is only the mapping of (method, seed) jobs onto that counter and the merge of their tables.

A job runs every task for one method and seed (``out/jobs/seed<k>/<task>/<method>/``); tasks
of one method reuse its trained models through the seed's zoo folder, as in one process.
"""

from __future__ import annotations

import inspect
import json
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..inference import distributed
from .common import ExperimentResult, write_json, write_text

__all__ = ["Job", "plan", "run_jobs", "merge_task"]

log = logging.getLogger(__name__)

#: the store key of the next job's index
_COUNTER = "hyperbayes/suite/next_job"
_DONE = "hyperbayes/suite/done"
_CALLS = 0  # run_jobs calls in this process


@dataclass(frozen=True)
class Job:
    """One method at one seed, over every task of the suite."""

    method: str
    seed: int


def plan(methods, seeds) -> list[Job]:
    """The jobs, every method for each seed (seed-major, so the first results are complete)."""
    return [Job(m, int(s)) for s in seeds for m in methods]


def _job_dir(out: Path, job: Job, task: str) -> Path:
    return out / "jobs" / f"seed{job.seed}" / task / job.method


def _run_job(job: Job, tasks, *, quick, device, out: Path, settings, progress,
             overrides) -> None:
    """Every task for one (method, seed) into its own folders, training in this process."""
    from . import EXPERIMENTS

    rank = distributed.rank()
    for task in tasks:
        runner = EXPERIMENTS[task]
        folder = _job_dir(out, job, task)
        kwargs = {"quick": quick, "device": device, "seed": job.seed, "out": folder,
                  "progress": progress, "methods_to_run": [job.method]}
        if job.method in overrides:
            kwargs["overrides"] = {job.method: overrides[job.method]}
        if task in settings:
            kwargs["settings"] = settings[task]
        if "checkpoints" in inspect.signature(runner).parameters:
            kwargs["checkpoints"] = out / "jobs" / f"seed{job.seed}" / "zoo"
        start = time.perf_counter()
        log.info("job %s seed %d: %s into %s", job.method, job.seed, task, folder)
        with distributed.independent():
            runner(**kwargs)
        log.info("job %s seed %d: %s done in %.0f s", job.method, job.seed, task,
                 time.perf_counter() - start)
        write_json(folder / "job.json", {"method": job.method, "seed": job.seed, "task": task,
                                         "rank": rank, "host": socket.gethostname(),
                                         "wall_time_s": time.perf_counter() - start})


def _is_paper_row(table: dict, row: dict) -> bool:
    return str(row.get(table["columns"][0], "")).startswith("paper")


def _part_methods(part: dict) -> list[str]:
    """The methods one job's metrics.json ran: its recipes' names, else its ``methods``."""
    names = part.get("recipes") or part.get("methods") or {}
    return list(names)


def _merge_rows(table: dict, tables: list[dict]) -> dict:
    """A table with one row per method: every job's method rows, then the papers' rows once."""
    rows = [row for part in tables for row in part["rows"] if not _is_paper_row(table, row)]
    rows += [row for row in table["rows"] if _is_paper_row(table, row)]
    return {**table, "rows": rows}


def _merge_columns(table: dict, tables: list[dict], methods: list[list[str]]) -> dict:
    """A table with one column per method (e.g. unseen-class's per-digit tables): rows matched
    on the columns before the first method's, every job's method columns side by side, the
    remaining (papers') columns once."""
    columns = table["columns"]
    first = min(columns.index(m) for m in methods[0] if m in columns)
    keys = columns[:first]
    own = [m for names in methods for m in names]
    merged_columns = keys + own + [c for c in columns[first:] if c not in methods[0]]
    rows = [dict(row) for row in table["rows"]]
    index = {tuple(str(row.get(k)) for k in keys): row for row in rows}
    for part, names in zip(tables[1:], methods[1:], strict=True):
        for row in part["rows"]:
            target = index.get(tuple(str(row.get(k)) for k in keys))
            if target is not None:
                target.update({m: row.get(m) for m in names})
    return {**table, "columns": merged_columns, "rows": rows}


def _merge_tables(parts: list[dict], methods: list[list[str]]) -> list[dict]:
    """The jobs' tables side by side: by columns where a table has one per method, else by
    rows (each job's method rows, then the papers' rows once)."""
    tables = []
    for i, table in enumerate(parts[0]["tables"]):
        each = [part["tables"][i] for part in parts]
        if any(m in table["columns"] for m in methods[0]):
            tables.append(_merge_columns(table, each, methods))
        else:
            tables.append(_merge_rows(table, each))
    return tables


def _payload_tables(task: str | None):
    """The task module's ``payload_tables`` (tables recomputed from a payload), if it has one."""
    from . import EXPERIMENTS

    runner = EXPERIMENTS.get(task) if task else None
    if runner is None:
        return None
    return getattr(inspect.getmodule(inspect.unwrap(runner)), "payload_tables", None)


def merge_task(folders: list[Path], out: Path) -> dict:
    """One task's metrics.json in ``out`` from the metrics.json of its per-method job
    ``folders`` (in method order): a table with one row per method gets each job's method
    rows, then the papers' rows once; a table with one column per method gets each job's
    method columns, rows matched on the columns before them; the per-method records side by
    side; wall times added. A task whose tables compare the methods with one another (its
    paper claims: adversarial, active learning) has them recomputed from the merged records
    by its ``payload_tables``, as one run of every method would write them."""
    parts = [json.loads((f / "metrics.json").read_text()) for f in folders]
    first = parts[0]
    methods = [_part_methods(part) for part in parts]
    merged = {key: value for key, value in first.items() if key not in ("tables", "methods")}
    merged.update({
        "methods": ({k: v for part in parts for k, v in part["methods"].items()}
                    if isinstance(first.get("methods"), dict) else
                    [m for names in methods for m in names]),
        "wall_time_s": sum(float(p.get("wall_time_s", 0.0)) for p in parts),
        "merged_from": [str(f) for f in folders],
        "jobs": [json.loads((f / "job.json").read_text()) for f in folders
                 if (f / "job.json").exists()]})
    recompute = _payload_tables(first.get("experiment"))
    if recompute is not None:
        merged["paper_claims"], merged["tables"] = recompute(merged)
    else:
        merged["tables"] = _merge_tables(parts, methods)
    write_json(out / "metrics.json", merged)
    from .suite import render_tables

    links = "\n".join(f"- `{f}/report.md`" for f in folders)
    write_text(out / "report.md", f"# {first.get('experiment', out.name)}: merged from "
               f"{len(folders)} jobs\n\n{render_tables(merged['tables'])}\nEach job's "
               f"report:\n\n{links}\n")
    return merged


def _store():
    """The process group's key-value store (the group is joined here: gloo)."""
    import torch.distributed as dist

    distributed.setup(torch.device("cpu"))
    if torch.cuda.is_available():
        distributed.local_device(torch.device("cuda"))
    return dist.distributed_c10d._get_default_store()


def _claimed(todo: list[Job], key: str):
    """The jobs this process takes, each from the store's atomic counter ``key`` (one key per
    :func:`run_jobs` call, so a second call in the same group starts from its first job)."""
    store = _store()
    while (index := store.add(key, 1) - 1) < len(todo):
        yield todo[index]


def _wait_for_all(key: str, poll_s: float = 1.0) -> None:
    """Return once every process of the group has reached this point. A counter in the store,
    read every ``poll_s`` seconds: unlike a barrier, it has no timeout, so a process whose
    jobs ended hours before the last one's waits as long as it takes."""
    store = _store()
    store.add(key, 1)
    while store.add(key, 0) < distributed.world_size():
        time.sleep(poll_s)


def run_jobs(tasks, methods, seeds=(0,), *, quick: bool = False, device="auto",
             out: str | Path = "results/suite", settings: dict | None = None,
             progress: bool | None = None,
             overrides: dict | None = None) -> ExperimentResult | None:
    """Run the suite as (method, seed) jobs over this process and any others ``torchrun``
    started with it, then (on rank 0) merge each seed's tasks and gather them: one seed into
    ``out/<task>/`` and ``out/results.md``, several into ``out/seed<k>/``. Returns the gathered
    result of the first seed on rank 0, None on the other ranks.

    Each job trains in its own process (no data parallelism inside it). On GPUs each process
    uses the GPU of its ``LOCAL_RANK``. ``overrides`` (``{method: {option: value}}``) are laid
    over the methods' recipes in every task.
    """
    from . import suite

    out = Path(out)
    settings = settings or {}
    overrides = overrides or {}
    todo = plan(methods, seeds)
    shared = distributed.launched()
    global _CALLS
    _CALLS += 1  # every process calls run_jobs alike: the same keys on all of them
    for job in _claimed(todo, f"{_COUNTER}/{_CALLS}") if shared else todo:
        _run_job(job, tasks, quick=quick, device=device, out=out, settings=settings,
                 progress=progress, overrides=overrides)
    if shared:
        _wait_for_all(f"{_DONE}/{_CALLS}")
        if not distributed.is_main():
            return None
    results = []
    for seed in sorted({job.seed for job in todo}):
        target = out if len(set(seeds)) == 1 else out / f"seed{seed}"
        for task in tasks:
            merge_task([_job_dir(out, Job(m, seed), task) for m in methods], target / task)
        results.append(suite.gather(target, tasks))
    return results[0]
