"""The uncertainty suite end to end: every task, every registered method, at smoke sizes (the
``suite_run`` fixture in conftest.py)."""

import json

import pytest

from hyperbayes import methods
from hyperbayes.cli import main
from hyperbayes.experiments import EXPERIMENTS, active_learning, suite


def _cells(tables) -> set[str]:
    """Every string in a task's tables: column names and cell values."""
    found = set()
    for t in tables:
        found |= set(t["columns"])
        for row in t["rows"]:
            found |= {v for v in row.values() if isinstance(v, str)}
    return found


def test_every_task_is_registered():
    assert set(suite.TASKS) <= set(EXPERIMENTS)


def test_suite_has_a_table_for_every_task_with_every_method(suite_run):
    payload = json.loads((suite_run.out_dir / "results.json").read_text())
    assert list(payload["tasks"]) == list(suite.TASKS)
    for task, entry in payload["tasks"].items():
        assert entry["tables"], task
        assert entry["wall_time_s"] > 0 and entry["seeds"], task
        cells = _cells(entry["tables"])
        left_out = active_learning.EXCLUDED if task == "active-learning" else {}
        missing = [m for m in methods.available(variants=False)
                   if m not in left_out and not any(m in c for c in cells)]
        assert not missing, (task, missing)
        assert (suite_run.out_dir / task / "report.md").exists()
    text = (suite_run.out_dir / "results.md").read_text()
    for task in suite.TASKS:
        assert f"## {task}" in text
    assert "paper" in text  # papers' numbers beside ours


def test_suite_models_are_trained_once(suite_run):
    # calibration trained the zoo; ood and adversarial reused it
    for task in ("ood", "adversarial"):
        metrics = json.loads((suite_run.out_dir / task / "metrics.json").read_text())
        assert all(m.get("reused", True) for m in metrics["methods"].values()), task


def test_suite_rejects_unknown_tasks(tmp_path):
    with pytest.raises(ValueError, match="unknown suite task"):
        suite.run(["calibrate"], out=tmp_path)
    assert main(["suite", "--tasks", "calibrate", "--out", str(tmp_path)]) == 2


def test_table_rejects_cells_outside_its_columns():
    with pytest.raises(ValueError, match="not among the columns"):
        suite.table("t", ["method", "accuracy"], [{"method": "map", "acc": 0.9}])
    md = suite.render_tables([suite.table("t", ["method", "accuracy"],
                                          [{"method": "map"}], note="a note")])
    assert "| map | – |" in md and "a note" in md


def test_gather_rebuilds_the_summary_from_task_folders_run_apart(suite_run, tmp_path):
    """Tasks run separately (here: copied task folders) gather into one results.md, nothing
    trained; a named task that has not run, or a metrics.json without tables, is an error."""
    import shutil

    for task in ("calibration", "fidelity"):
        shutil.copytree(suite_run.out_dir / task, tmp_path / task)
    assert main(["suite", "--gather", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["gathered"] and payload["suite"] == ["calibration", "fidelity"]
    original = json.loads((suite_run.out_dir / "results.json").read_text())["tasks"]
    for task in ("calibration", "fidelity"):
        assert payload["tasks"][task]["tables"] == original[task]["tables"]
        assert payload["tasks"][task]["device"] == "cpu"
    text = (tmp_path / "results.md").read_text()
    assert "## calibration" in text and "## fidelity" in text and "## ood" not in text
    assert "gathered from task folders" in text and "device cpu" in text
    with pytest.raises(ValueError, match="'ood' has not been run"):
        suite.gather(tmp_path, ["calibration", "ood"])
    (tmp_path / "fidelity" / "metrics.json").write_text('{"seeds": [0]}')
    with pytest.raises(ValueError, match="not a finished task's metrics.json"):
        suite.gather(tmp_path)
    with pytest.raises(ValueError, match="no task folder"):
        suite.gather(tmp_path / "empty")


def test_a_changed_recipe_prior_changes_the_key_of_trained_models(monkeypatch):
    from dataclasses import replace

    from hyperbayes.experiments.common import checkpoint_key
    from hyperbayes.models import priors

    method = methods.get("mcdropout")
    before = checkpoint_key("mcdropout", {}, 0)
    recipe = method.recipe("classification")
    monkeypatch.setitem(method.recipes, "classification",
                        replace(recipe, prior=lambda: priors.Normal(0.5)))
    assert checkpoint_key("mcdropout", {}, 0) != before  # a stale model is not reused
    monkeypatch.setitem(method.recipes, "classification", recipe)
    assert checkpoint_key("mcdropout", {}, 0) == before
