"""The ood task: every method scored in vs out, AUC orientation, paper rows, shared models."""

import json
from dataclasses import replace

import pytest
import torch

import hyperbayes as hb
from hyperbayes import methods
from hyperbayes.datasets import Split
from hyperbayes.experiments import calibration, ood, zoo

NOISE_ONLY = ("uniform", "gaussian")  # the digits are 8×8: Fashion-MNIST does not fit them


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    """8×8 digits (1,000 training, 297 validation, 500 test images): always available."""
    return hb.datasets.load("digits")


def _test_split(data, settings):
    return zoo.mnist_splits(settings.zoo, data)[2]


@pytest.fixture(scope="module")
def smoke_run(digits, tmp_path_factory):
    """Every registered method at smoke settings; the test images are also scored against an
    exact copy of themselves (``itself``)."""
    torch.set_num_threads(1)
    settings = replace(ood.Settings.smoke(), ood_sets=NOISE_ONLY)
    out = tmp_path_factory.mktemp("suite") / "ood"
    return ood.run(settings=settings, data=digits, out=out, device="cpu", seed=0,
                   progress=False, ood_data={"itself": _test_split(digits, settings)})


def test_every_method_in_every_table(smoke_run):
    names = methods.available(variants=False)
    sets = [*NOISE_ONLY, "itself"]
    saved = json.loads((smoke_run.out_dir / "metrics.json").read_text())
    assert list(saved["methods"]) == names and saved["seeds"] == [0]
    main, *full = saved["tables"]
    assert [t["title"].split(" against ")[1].split(":")[0] for t in full] == [
        "uniform noise", "Gaussian noise", "itself"]
    ours = [r for r in main["rows"] if not r["method"].startswith("paper: ")]
    assert [r["method"] for r in ours] == names
    for tab, ood_set in zip(full, sets, strict=True):
        rows = [r for r in tab["rows"] if not r["method"].startswith("paper: ")]
        assert [(r["method"], r["score"]) for r in rows] == [
            (n, ood.SCORE_LABELS[s]) for n in names for s in ood.SCORES]
        paper = [r for r in tab["rows"] if r["method"].startswith("paper: ")]
        assert len(paper) == (len(ood.PAPER_TABLE2) if ood_set in NOISE_ONLY else 0)
        assert ("no number" in tab["note"]) == (ood_set == "itself")
    for name, row in saved["methods"].items():
        assert row["reused"] is False
        for ood_set in sets:
            for score in ood.SCORES:
                for value in row["detection"][ood_set][score].values():
                    assert 0 <= value <= 100, (name, ood_set, score)
    for figure in ("ood_roc.png", "ood_scores.png"):
        assert (smoke_run.out_dir / figure).stat().st_size > 10_000


def test_the_test_set_against_itself_is_chance(smoke_run):
    """Identical in and out sets: no score can tell them apart (ROC ≈ 50); a point estimate
    gives identical scores, so exactly 50."""
    rows = smoke_run.metrics["methods"]
    for score in ood.SCORES:
        assert rows["map"]["detection"]["itself"][score]["roc"] == pytest.approx(50, abs=1e-6)
        for name, row in rows.items():
            assert abs(row["detection"]["itself"][score]["roc"] - 50) < 15, (name, score)


def test_a_point_estimate_has_no_spread_score(smoke_run):
    """map's samples all agree: mean std and BALD are exactly 0 everywhere, so they rank
    nothing."""
    for ood_set in NOISE_ONLY:
        for score in ("mean_std", "bald"):
            auc = smoke_run.metrics["methods"]["map"]["detection"][ood_set][score]
            assert auc == pytest.approx({"roc": 50, "pr_plus": 50, "pr_minus": 50}), score


def test_hypernetworks_are_every_method_but_the_baselines(smoke_run):
    results = smoke_run.metrics["methods"]
    assert smoke_run.metrics["hypernet_beats_map_fashion_roc"] is None  # no Fashion-MNIST here
    claim = ood.hypernets_against_map(results, "uniform")
    suite = set(methods.available(variants=False))
    assert set(claim["difference_points"]) == suite - set(ood.BASELINES)
    base = results["map"]["detection"]["uniform"]["max_prob"]["roc"]
    assert claim["map_roc"] == base
    for name, diff in claim["difference_points"].items():
        assert diff == pytest.approx(results[name]["detection"]["uniform"]["max_prob"]["roc"]
                                     - base)
        assert (name in claim["beats"]) == (diff > 0)
    assert claim["any"] == bool(claim["beats"])
    assert ood.hypernets_against_map({k: v for k, v in results.items() if k != "map"}) is None


def test_report_has_paper_numbers_and_shortfalls(smoke_run):
    report = (smoke_run.out_dir / "report.md").read_text()
    for _, paper in ood.PAPER_TABLE2.values():
        for roc, pr_plus, pr_minus in paper.values():
            assert f"{roc:.2f}" in report and f"{pr_plus:.2f}" in report
            assert f"{pr_minus:.2f}" in report
    # smoke models are far from the paper: every compared number is listed as worse
    worse = smoke_run.metrics["worse_than_paper"]
    assert len(worse) == sum(3 * len(p) for _, p in ood.PAPER_TABLE2.values())
    assert "Worse than BHN Table 2" in report and "no Fashion-MNIST row" in report


def test_detection_is_oriented_anomalies_up():
    """Confident on the in-distribution set, uniform on the OOD set: every uncertainty score
    separates them perfectly; PR(+) treats the in-distribution images as positive (its chance
    level is their share), PR(−) the anomalies."""
    gen = torch.Generator().manual_seed(0)
    confident = torch.softmax(8 * torch.eye(10)[torch.randint(10, (40,), generator=gen)], -1)
    p_in = confident.expand(3, 40, 10)
    p_out = torch.softmax(0.1 * torch.randn(3, 60, 10, generator=gen), -1)
    result = ood.detection(p_in, p_out, scores=("max_prob", "entropy"))
    for score in ("max_prob", "entropy"):
        assert result[score] == pytest.approx({"roc": 100, "pr_plus": 100, "pr_minus": 100})
    reverse = ood.detection(p_out, p_in, scores=("max_prob",))["max_prob"]
    assert reverse["roc"] == pytest.approx(0)
    # same distribution in and out, 1 in : 3 out: chance ROC 50, PR(+) ≈ 25, PR(−) ≈ 75
    same = torch.softmax(torch.randn(1, 4000, 10, generator=gen), -1)
    chance = ood.detection(same[:, :1000], same[:, 1000:], scores=("max_prob",))["max_prob"]
    assert chance["roc"] == pytest.approx(50, abs=3)
    assert chance["pr_plus"] == pytest.approx(25, abs=3)
    assert chance["pr_minus"] == pytest.approx(75, abs=3)


def test_map_tells_noise_from_trained_digits(digits, tmp_path):
    settings = ood.Settings(zoo=zoo.ZooSettings(hidden=(32,), epochs=20, lr=3e-3,
                                                val_samples=2, validations=1, test_samples=2,
                                                eval_limit=200), ood_sets=NOISE_ONLY)
    result = ood.run(["map"], settings=settings, data=digits, out=tmp_path / "ood",
                     device="cpu", progress=False)
    row = result.metrics["methods"]["map"]
    assert row["in_accuracy"] > 0.8
    for ood_set in NOISE_ONLY:  # measured 92–98 over seeds 0–4
        assert row["detection"][ood_set]["max_prob"]["roc"] > 80, ood_set
        assert row["detection"][ood_set]["entropy"]["roc"] > 80, ood_set


def test_calibration_and_ood_reuse_each_others_models(digits, tmp_path):
    """Run one after the other into sibling folders: each reuses what the other trained."""
    cal_settings = calibration.Settings.smoke()
    ood_settings = replace(ood.Settings.smoke(), ood_sets=NOISE_ONLY)
    common = {"data": digits, "device": "cpu", "progress": False}
    first = ood.run(["map"], settings=ood_settings, out=tmp_path / "ood", **common)
    assert first.metrics["methods"]["map"]["reused"] is False
    second = calibration.run(["map", "meanfield"], settings=cal_settings,
                             out=tmp_path / "calibration", **common)
    assert second.metrics["methods"]["map"]["reused"] is True
    assert second.metrics["methods"]["meanfield"]["reused"] is False
    third = ood.run(["map", "meanfield"], settings=ood_settings, out=tmp_path / "ood", **common)
    assert all(r["reused"] for r in third.metrics["methods"].values())
    assert first.metrics["checkpoints"] == third.metrics["checkpoints"] == str(tmp_path / "zoo")
    # the reused model is the one trained first: the same in-distribution predictions
    assert third.metrics["methods"]["map"]["in_accuracy"] == first.metrics["methods"]["map"][
        "in_accuracy"]


def test_built_in_sets_match_the_test_images(digits):
    test = digits.test.subset(slice(0, 50))
    sets = ood.ood_sets(NOISE_ONLY, test, seed=3)
    for name, split in sets.items():
        assert split.x.shape == test.x.shape, name
        assert 0 <= split.x.min() and split.x.max() <= 1
    again = ood.ood_sets(NOISE_ONLY, test, seed=3)
    other = ood.ood_sets(NOISE_ONLY, test, seed=4)
    assert torch.equal(sets["uniform"].x, again["uniform"].x)
    assert not torch.equal(sets["uniform"].x, other["uniform"].x)
    with pytest.raises(ValueError, match="unknown OOD set 'omniglot'"):
        ood.ood_sets(("omniglot",), test)


def test_fashion_mnist_is_as_large_as_mnist_test():
    try:
        mnist = hb.datasets.load("mnist")
        hb.datasets.load("fashion_mnist")
    except hb.datasets.DatasetError as err:
        pytest.skip(f"MNIST or Fashion-MNIST is not available: {err}")
    test = mnist.test.subset(slice(0, 300))
    (fashion,) = ood.ood_sets(("fashion_mnist",), test).values()
    assert fashion.x.shape == test.x.shape
    with pytest.raises(ValueError, match="Fashion-MNIST images are"):
        ood.ood_sets(("fashion_mnist",), Split(torch.rand(5, 1, 8, 8), torch.zeros(5).long()))


def test_bad_arguments_are_errors(digits, tmp_path):
    settings = replace(ood.Settings.smoke(), ood_sets=NOISE_ONLY)
    with pytest.raises(ValueError, match="unknown method 'flows'"):
        ood.run(["map", "flows"], settings=settings, data=digits, out=tmp_path, device="cpu")
    test = _test_split(digits, settings)
    with pytest.raises(ValueError, match="'uniform' given twice"):
        ood.run(["map"], settings=settings, data=digits, out=tmp_path, device="cpu",
                ood_data={"uniform": test})
    with pytest.raises(ValueError, match="has inputs of shape"):
        ood.run(["map"], settings=settings, data=digits, out=tmp_path, device="cpu",
                ood_data={"big": Split(torch.rand(4, 1, 28, 28), torch.zeros(4).long())})
    assert not (tmp_path / "zoo").exists()  # refused before any training
