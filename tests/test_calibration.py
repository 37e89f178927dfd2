"""The calibration task: every registered method, its metrics, reliability bins and paper rows."""

import json
import math
from dataclasses import replace

import pytest
import torch

import hyperbayes as hb
from hyperbayes import methods
from hyperbayes.experiments import calibration, ood, zoo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    """8×8 digits (1,000 training, 297 validation, 500 test images): always available."""
    return hb.datasets.load("digits")


@pytest.fixture(scope="module")
def smoke_run(digits, tmp_path_factory):
    """Every registered method at smoke settings on the digits."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("suite") / "calibration"
    return calibration.run(settings=calibration.Settings.smoke(), data=digits, out=out,
                           device="cpu", seed=0, progress=False)


def test_every_method_has_a_row_and_sane_metrics(smoke_run):
    names = methods.available(variants=False)
    saved = json.loads((smoke_run.out_dir / "metrics.json").read_text())
    assert list(saved["methods"]) == names
    (tab,) = saved["tables"]
    labels = [r["method"] for r in tab["rows"]]
    assert labels[:len(names)] == names              # our rows first, then the papers'
    assert all(label.startswith("paper: ") for label in labels[len(names):])
    assert len(labels) == len(names) + len(calibration.PAPER_ACCURACY)
    n_test = calibration.Settings.smoke().zoo.eval_limit
    for name, row in saved["methods"].items():
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["ece"] <= 1, name
        assert 0 <= row["brier"] <= 2 and row["nll"] > 0, name
        assert row["train_s"] > 0 and row["reused"] is False, name
        counts = row["reliability"]["counts"]
        assert len(counts) == 15 and sum(counts) == n_test, name
        # ECE is the count-weighted gap of the reliability bins it is drawn from
        rel = row["reliability"]
        gap = sum(c * abs(a - f) for c, a, f in zip(counts, rel["accuracy"], rel["confidence"],
                                                     strict=True) if c)
        assert math.isclose(gap / n_test, row["ece"], rel_tol=1e-9, abs_tol=1e-12), name
    table_rows = {r["method"]: r for r in tab["rows"]}
    assert table_rows["map"]["test accuracy %"] == pytest.approx(
        100 * saved["methods"]["map"]["accuracy"])
    assert saved["seeds"] == [0]
    assert (smoke_run.out_dir / "reliability.png").stat().st_size > 10_000


def test_report_sets_paper_accuracies_beside_ours(smoke_run):
    report = (smoke_run.out_dir / "report.md").read_text()
    for label, (_, accuracy, net) in calibration.PAPER_ACCURACY.items():
        assert label in report and f"{accuracy:.3f}" in report and net in report
    # smoke models are near chance: every paper row is reported as beaten by the paper
    worse = smoke_run.metrics["worse_than_paper"]
    assert {w["paper"] for w in worse} == set(calibration.PAPER_ACCURACY)
    assert "Worse than the paper" in report and "reliability.png" in report


def test_paper_rows_name_registered_methods():
    for ours, accuracy, _ in calibration.PAPER_ACCURACY.values():
        assert ours in methods.available()
        assert 98 < accuracy < 99


def test_calibration_and_ood_train_the_same_models():
    """The two tasks share checkpoints only if they train identically: same zoo settings."""
    for make in ("__call__", "quick", "smoke"):
        cal = calibration.Settings() if make == "__call__" else getattr(calibration.Settings,
                                                                        make)()
        det = ood.Settings() if make == "__call__" else getattr(ood.Settings, make)()
        assert cal.zoo == det.zoo, make
    assert calibration.Settings.quick().zoo == zoo.ZooSettings.quick()


def test_unknown_method_is_an_error(digits, tmp_path):
    with pytest.raises(ValueError, match="unknown method 'mapp'.*available: .*meanfield"):
        calibration.run(["mapp"], settings=calibration.Settings.smoke(), data=digits,
                        out=tmp_path / "calibration", device="cpu", progress=False)
    assert not (tmp_path / "calibration").exists()  # refused before any training


def test_a_trained_point_estimate_is_accurate(digits, tmp_path):
    settings = replace(calibration.Settings.smoke(),
                       zoo=zoo.ZooSettings(hidden=(32,), epochs=20, lr=3e-3, val_samples=2,
                                           validations=1, test_samples=2, eval_limit=200))
    result = calibration.run(["map"], settings=settings, data=digits, out=tmp_path / "c",
                             device="cpu", progress=False)
    row = result.metrics["methods"]["map"]
    assert row["accuracy"] > 0.8
    assert row["nll"] < math.log(10) and row["brier"] < 0.5


def test_an_option_override_is_recorded_and_trains_its_own_checkpoint(digits, tmp_path):
    def run(overrides=None):
        return calibration.run(["laplace"], settings=calibration.Settings.smoke(), data=digits,
                               out=tmp_path / "calibration", device="cpu", progress=False,
                               checkpoints=tmp_path / "zoo", overrides=overrides)

    with pytest.raises(ValueError, match="--option laplace"):  # before anything is trained
        run({"laplace": {"hesian": "diag"}})
    assert not (tmp_path / "zoo").exists()
    diag = run({"laplace": {"hessian": "diag"}})
    assert diag.metrics["recipes"]["laplace"]["options"]["hessian"] == "diag"
    assert diag.metrics["settings"]["zoo"]["options"] == {"laplace": {"hessian": "diag"}}
    recipe = run()
    assert recipe.metrics["recipes"]["laplace"]["options"].get("hessian") != "diag"
    assert not recipe.metrics["methods"]["laplace"]["reused"]  # not the diagonal's checkpoint
    assert len(list((tmp_path / "zoo").glob("laplace-*.pt"))) == 2
