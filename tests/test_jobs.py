"""The suite as (method, seed) jobs over torchrun processes: two processes share the jobs through
the process group's counter, each job runs once, and the merged task table has the rows one
process writes for the same methods, then the papers' rows once."""

import json
from pathlib import Path

import torch

from hyperbayes.experiments import calibration, jobs
from hyperbayes.inference import distributed

TASKS, METHODS = ("calibration",), ["map", "meanfield"]


def _run_jobs(out: str) -> None:
    jobs.run_jobs(TASKS, METHODS, (0,), device="cpu", out=out, progress=False,
                  settings={"calibration": calibration.Settings.smoke()})


def test_two_processes_share_the_jobs_and_merge_what_one_process_writes(tmp_path, mnist):
    distributed.launch_local(_run_jobs, 2, str(tmp_path / "jobs"))
    merged = json.loads((tmp_path / "jobs" / "calibration" / "metrics.json").read_text())
    ran = [(j["method"], j["rank"]) for j in merged["jobs"]]
    assert sorted(m for m, _ in ran) == METHODS and {r for _, r in ran} <= {0, 1}
    assert set(merged["methods"]) == set(METHODS)
    text = (tmp_path / "jobs" / "results.md").read_text()
    assert "## calibration" in text and "merged from 2 jobs" in (
        tmp_path / "jobs" / "calibration" / "report.md").read_text()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each job process ran
    try:
        alone = calibration.run(METHODS, device="cpu", out=tmp_path / "one", progress=False,
                                settings=calibration.Settings.smoke())
    finally:
        torch.set_num_threads(threads)
    for mine, theirs in zip(merged["tables"], alone.metrics["tables"], strict=True):
        assert mine["columns"] == theirs["columns"]
        assert [r[mine["columns"][0]] for r in mine["rows"]] == [
            r[theirs["columns"][0]] for r in theirs["rows"]]  # methods in order, papers last
        for a, b in zip(mine["rows"], theirs["rows"], strict=True):
            for column, value in b.items():
                if isinstance(value, float) and not column.endswith(" s"):  # not timings
                    assert abs(a[column] - value) <= 1e-4 * max(1.0, abs(value)), (column, a, b)


def test_a_single_process_runs_every_job_and_several_seeds_get_their_own_folders(
        tmp_path, mnist, monkeypatch):
    ran = []
    monkeypatch.setattr(jobs, "_run_job", lambda job, *a, **k: ran.append(job))
    monkeypatch.setattr(jobs, "merge_task", lambda folders, out: Path(out))
    monkeypatch.setattr("hyperbayes.experiments.suite.gather", lambda out, tasks: out)
    first = jobs.run_jobs(TASKS, METHODS, (0, 1), out=tmp_path)
    assert ran == jobs.plan(METHODS, (0, 1)) and len(ran) == 4
    assert first == tmp_path / "seed0"
