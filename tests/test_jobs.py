"""The suite as (method, seed) jobs over torchrun processes: two processes share the jobs through
the process group's counter, each job runs once, and the merged task table has the rows one
process writes for the same methods, then the papers' rows once."""

import json
from pathlib import Path

import pytest
import torch

from hyperbayes.experiments import adversarial, calibration, jobs
from hyperbayes.inference import distributed

TASKS, METHODS = ("calibration",), ["map", "meanfield"]


def _run_jobs(out: str) -> None:
    jobs.run_jobs(TASKS, METHODS, (0,), device="cpu", out=out, progress=False,
                  settings={"calibration": calibration.Settings.smoke()})


def _claim_twice(out: str) -> None:
    """Two run_jobs calls in one process group, jobs recorded instead of run (rank 1's take a
    second each, so rank 0 waits for them before it merges)."""
    import time

    from hyperbayes.experiments import suite

    rank = distributed.rank()
    ran = []

    def record(job, *args, **kwargs):
        time.sleep(1.0 if rank == 1 else 0.0)
        ran.append(job.method)

    jobs._run_job = record
    jobs.merge_task = lambda folders, target: None
    suite.gather = lambda target, tasks: None
    for call in range(2):
        jobs.run_jobs(TASKS, ["a", "b", "c"], (0,), out=out)
        Path(out, f"rank{rank}-call{call}.json").write_text(json.dumps(ran))
        ran.clear()


def test_every_run_jobs_call_runs_each_job_once_across_processes(tmp_path):
    distributed.launch_local(_claim_twice, 2, str(tmp_path))
    for call in range(2):
        ran = [method for rank in (0, 1) for method in
               json.loads((tmp_path / f"rank{rank}-call{call}.json").read_text())]
        assert sorted(ran) == ["a", "b", "c"], (call, ran)  # the second call too


@pytest.mark.slow  # ≈ 25 s on 2 cores (two processes importing torch); the merge is tested
def test_two_processes_share_the_jobs_and_merge_what_one_process_writes(tmp_path, mnist):
    distributed.launch_local(_run_jobs, 2, str(tmp_path / "jobs"))  # by default below
    merged = json.loads((tmp_path / "jobs" / "calibration" / "metrics.json").read_text())
    ran = [(j["method"], j["rank"]) for j in merged["jobs"]]
    assert sorted(m for m, _ in ran) == METHODS and {r for _, r in ran} <= {0, 1}
    _assert_same_rows(merged, _one_run(tmp_path / "one"))


def test_jobs_in_one_process_merge_into_what_one_run_writes(tmp_path, mnist):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each job process runs
    try:
        _run_jobs(str(tmp_path / "jobs"))
        alone = _one_run(tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    merged = json.loads((tmp_path / "jobs" / "calibration" / "metrics.json").read_text())
    assert [j["method"] for j in merged["jobs"]] == METHODS
    assert set(merged["methods"]) == set(METHODS)
    assert "## calibration" in (tmp_path / "jobs" / "results.md").read_text()
    assert "merged from 2 jobs" in (tmp_path / "jobs" / "calibration" / "report.md").read_text()
    _assert_same_rows(merged, alone)


def test_several_seeds_get_a_folder_each(tmp_path, mnist):
    first = jobs.run_jobs(TASKS, ["map"], (0, 1), device="cpu", out=tmp_path, progress=False,
                          settings={"calibration": calibration.Settings.smoke()})
    assert first.out_dir == tmp_path / "seed0"
    seeds = [json.loads((tmp_path / f"seed{s}" / "calibration" / "metrics.json").read_text())
             ["jobs"][0]["seed"] for s in (0, 1)]
    assert seeds == [0, 1]
    assert jobs.plan(METHODS, (0, 1)) == [jobs.Job("map", 0), jobs.Job("meanfield", 0),
                                          jobs.Job("map", 1), jobs.Job("meanfield", 1)]


def test_claims_comparing_the_methods_are_recomputed_when_jobs_merge(tmp_path, mnist,
                                                                     one_thread):
    """The adversarial paper claims compare the flow (BHN) with MC dropout: each job alone has
    no such claim; merged, the claims are what one run of both methods writes."""
    methods, smoke = ["flow", "mcdropout"], adversarial.Settings.smoke()
    jobs.run_jobs(("adversarial",), methods, (0,), device="cpu", out=tmp_path / "jobs",
                  progress=False, settings={"adversarial": smoke})
    merged = json.loads((tmp_path / "jobs" / "adversarial" / "metrics.json").read_text())
    alone = adversarial.run(methods, device="cpu", out=tmp_path / "one", progress=False,
                            settings=smoke).metrics
    each = json.loads((tmp_path / "jobs" / "jobs" / "seed0" / "adversarial" / "flow" /
                       "metrics.json").read_text())["paper_claims"]
    compared = [c["claim"] for c in alone["paper_claims"] if "dropout" in c["claim"]]
    assert compared and not [c for c in each if c["claim"] in compared]
    assert merged["paper_claims"] == alone["paper_claims"]
    _assert_same_rows(merged, alone)


def _one_run(out: Path) -> dict:
    return calibration.run(METHODS, device="cpu", out=out, progress=False,
                           settings=calibration.Settings.smoke()).metrics


def _assert_same_rows(merged: dict, alone: dict) -> None:
    """The merged tables have one process's rows: methods in order, papers last, same numbers
    (timings aside)."""
    for mine, theirs in zip(merged["tables"], alone["tables"], strict=True):
        assert mine["columns"] == theirs["columns"]
        label = mine["columns"][0]
        assert [r[label] for r in mine["rows"]] == [r[label] for r in theirs["rows"]]
        for a, b in zip(mine["rows"], theirs["rows"], strict=True):
            for column, value in b.items():
                if isinstance(value, float) and not column.endswith(" s"):  # not timings
                    assert abs(a[column] - value) <= 1e-4 * max(1.0, abs(value)), (column, a, b)


def test_a_table_with_a_column_per_method_merges_by_columns(tmp_path):
    """unseen-class's per-digit tables hold one column per method: merged, each job's column
    sits beside the others on the rows of the same digit, the papers' columns once."""
    def job(method, values):
        folder = tmp_path / method
        folder.mkdir()
        rows = [{"metric": "ROC", "held-out digit": str(d), method: v, "paper: MLP": 90.0 + d}
                for d, v in enumerate(values)]
        payload = {"experiment": "unseen-class", "methods": [method],
                   "recipes": {method: {"method": method}}, "wall_time_s": 1.0,
                   "tables": [{"title": "by digit", "columns": ["metric", "held-out digit",
                                                                method, "paper: MLP"],
                               "rows": rows, "note": ""},
                              {"title": "mean", "columns": ["method", "ROC"],
                               "rows": [{"method": method, "ROC": sum(values) / 2},
                                        {"method": "paper: MLP", "ROC": 90.5}], "note": ""}]}
        (folder / "metrics.json").write_text(json.dumps(payload))
        return folder

    merged = jobs.merge_task([job("map", [95.0, 96.0]), job("flow", [97.0, 98.0])],
                             tmp_path / "out")
    by_digit, mean = merged["tables"]
    assert by_digit["columns"] == ["metric", "held-out digit", "map", "flow", "paper: MLP"]
    assert [(r["map"], r["flow"], r["paper: MLP"]) for r in by_digit["rows"]] == [
        (95.0, 97.0, 90.0), (96.0, 98.0, 91.0)]
    assert [r["method"] for r in mean["rows"]] == ["map", "flow", "paper: MLP"]
    assert merged["methods"] == ["map", "flow"]
