"""The unseen-class task: held-out digits, detection metrics, Table 3 layout, every method."""

import json
from dataclasses import replace

import pytest
import torch

from hyperbayes.experiments import unseen_class, zoo

pytestmark = pytest.mark.usefixtures("one_thread")


def test_split_by_digit_holds_the_digit_out(images):
    split = images.train.subset(slice(0, 500))
    kept, held = unseen_class.split_by_digit(split, 3)
    assert len(kept) + len(held) == len(split) and len(held) > 0
    assert not bool((kept.y == 3).any()) and bool((held.y == 3).all())
    assert set(torch.unique(kept.y).tolist()) == set(range(10)) - {3}
    only = split.subset(split.y != 3)
    assert unseen_class.split_by_digit(only, 3, require=False)[0] is only
    with pytest.raises(ValueError, match="cannot hold out digit 3"):
        unseen_class.split_by_digit(only, 3)


def test_detect_known_answers():
    # in-distribution: confident and agreeing samples; anomalies: uncertain, disagreeing
    inside = torch.tensor([0.97] + [0.03 / 9] * 9).expand(4, 6, 10)
    spread = torch.stack([torch.full((10,), 0.1), torch.tensor([0.5] + [0.5 / 9] * 9),
                          torch.tensor([0.5 / 9] + [0.5] + [0.5 / 9] * 8),
                          torch.full((10,), 0.1)])
    outside = spread[:, None].expand(4, 3, 10)
    probs = torch.cat([inside, outside], dim=1)
    is_anomaly = torch.tensor([False] * 6 + [True] * 3)
    out = unseen_class.detect(probs, is_anomaly)
    assert set(out) == set(unseen_class.SCORES)
    for score in unseen_class.SCORES:
        assert out[score]["roc_auc"] == pytest.approx(100.0)
        assert out[score]["pr_auc_in"] == pytest.approx(100.0)
        assert out[score]["pr_auc_out"] == pytest.approx(100.0)
    swapped = unseen_class.detect(probs, ~is_anomaly)  # the confident ones called anomalies
    assert swapped["entropy"]["roc_auc"] == pytest.approx(0.0)


def test_two_digits_table3_layout_and_held_out_digit_absent(images, tmp_path):
    settings = replace(unseen_class.Settings.smoke(), digits=(4, 7))
    names = ["map", "mcdropout", "flow"]
    result = unseen_class.run(names, settings=settings, data=images, out=tmp_path / "unseen",
                              device="cpu", progress=False)
    saved = json.loads((tmp_path / "unseen" / "metrics.json").read_text())
    assert saved["seeds"] == [0] and list(saved["digits"]) == ["4", "7"]
    for digit in (4, 7):
        for name in names:
            row = saved["digits"][str(digit)][name]
            assert digit not in row["train_digits"] and len(row["train_digits"]) == 9
            assert row["anomaly_examples"] > 0 and row["in_examples"] > row["anomaly_examples"]
            for score in unseen_class.SCORES:
                for value in row["detection"][score].values():
                    assert 0.0 <= value <= 100.0
        # a point estimate has no spread over samples: mean std and BALD rank nothing
        for score in ("mean_std", "bald"):
            assert saved["digits"][str(digit)]["map"]["detection"][score]["roc_auc"] == 50.0
    # checkpoints carry the held-out digit, apart from the full-data models
    stored = sorted(p.name for p in (tmp_path / "zoo").iterdir())
    assert len(stored) == 6 and all("-without-4-" in p or "-without-7-" in p for p in stored)
    tables = saved["tables"]
    summary = tables[0]
    assert [r["method"] for r in summary["rows"]] == [*names, "paper: MLP", "paper: MC dropout",
                                                      "paper: BHN 4", "paper: BHN 8"]
    paper_mlp = summary["rows"][len(names)]["max-prob"]
    assert paper_mlp == pytest.approx((89.08 + 92.46) / 2)  # Table 3, digits 4 and 7
    layout = {t["title"]: t for t in tables[1:5]}
    assert len(layout) == len(unseen_class.SCORES)
    by_max_prob = layout["Unseen-class detection by max-prob (Table 3 layout)"]
    assert by_max_prob["columns"] == ["metric", "held-out digit", *names, "paper: MLP",
                                      "paper: MC dropout", "paper: BHN 4", "paper: BHN 8"]
    # three blocks (ROC, PR(+), PR(−)), one row per held-out digit and a mean row each
    assert [(r["metric"], r["held-out digit"]) for r in by_max_prob["rows"]] == [
        (b, d) for b in ("ROC", "PR(+)", "PR(−)") for d in ("4", "7", "mean")]
    assert by_max_prob["rows"][0]["paper: BHN 8"] == 81.19
    assert by_max_prob["rows"][3]["paper: MC dropout"] == 93.93  # PR(+) of digit 4
    assert by_max_prob["rows"][0]["map"] == saved["digits"]["4"]["map"]["detection"][
        "max_prob"]["roc_auc"]
    by_entropy = layout["Unseen-class detection by entropy (Table 3 layout)"]
    assert not any(c.startswith("paper") for c in by_entropy["columns"])
    comparison = tables[-1]["rows"]
    assert {r["method"] for r in comparison} == set(names)
    assert {r["paper model"] for r in comparison} == {"MLP", "MC dropout", "BHN 8"}
    for figure in result.figures:
        assert figure.stat().st_size > 10_000
    assert "Table 3" in (tmp_path / "unseen" / "report.md").read_text()


def test_every_method_runs_through_unseen_class(images, tmp_path):
    result = unseen_class.run(settings=unseen_class.Settings.smoke(), data=images,
                              out=tmp_path / "unseen", device="cpu", progress=False)
    names = zoo.suite_methods()
    assert result.metrics["methods"] == names
    assert list(result.metrics["digits"]["3"]) == names
    assert [r["method"] for r in result.metrics["tables"][0]["rows"][:len(names)]] == names
    for name in names:
        assert 3 not in result.metrics["digits"]["3"][name]["train_digits"]
        for value in result.metrics["mean_roc"][name].values():
            assert 0.0 <= value <= 100.0


def test_bad_arguments(images, tmp_path):
    smoke = unseen_class.Settings.smoke()
    with pytest.raises(ValueError, match="available: .*map"):
        unseen_class.run(["mapp"], settings=smoke, data=images, out=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="outside the 10 classes"):
        unseen_class.run(["map"], settings=replace(smoke, digits=(10,)), data=images,
                         out=tmp_path, device="cpu")
