"""The Bayesian-hypernetwork experiments at tiny sizes: bhn-mnist, bhn-correlations, bhn-toy."""

import json
from dataclasses import replace

import pytest
import torch

from hyperbayes import methods
from hyperbayes.cli import main
from hyperbayes.experiments import bhn_correlations, bhn_mnist, bhn_toy
from hyperbayes.experiments.toy_regression import Settings as ToySettings


def test_pearson_pvalues_match_scipy():
    from scipy import stats

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(50, 4, generator=gen, dtype=torch.double)
    base[:, 1] += base[:, 0]  # one correlated pair
    r, p = bhn_correlations.pearson_pvalues(base)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    assert len(r) == len(p) == len(pairs)
    for k, (i, j) in enumerate(pairs):
        expected = stats.pearsonr(base[:, i].numpy(), base[:, j].numpy())
        assert r[k].item() == pytest.approx(expected.statistic, rel=1e-9)
        assert p[k].item() == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)
    assert p[0] < 0.01  # the correlated pair
    with pytest.raises(ValueError, match="constant"):
        bhn_correlations.pearson_pvalues(torch.ones(10, 3))
    with pytest.raises(ValueError, match="n ≥ 3"):
        bhn_correlations.pearson_pvalues(torch.randn(2, 3))


def test_bhn_mnist_configuration_names():
    flow = bhn_mnist.parse_config("5k-1200/flow-12")
    assert (flow.method, flow.subset, flow.hidden) == ("flow-12", 5000, 1200)
    assert methods.get(flow.method).recipe("classification").options["num_flows"] == 12
    assert bhn_mnist.parse_config("dropout").subset is None
    assert all(bhn_mnist.parse_config(c) for c in bhn_mnist.DEFAULT_CONFIGS)
    assert set(bhn_mnist.DEFAULT_CONFIGS) - {"mle"} <= set(bhn_mnist.PAPER_ACCURACY)
    for bad in ("5k/flow-8", "a/b/flow"):
        with pytest.raises(ValueError, match="unknown bhn-mnist configuration"):
            bhn_mnist.parse_config(bad)
    for bad in ("flow-x", "bayes"):
        with pytest.raises(ValueError, match="unknown method"):
            bhn_mnist.parse_config(bad)


def test_bhn_mnist_tiny_run_reports_the_table_and_resumes(mnist, tmp_path):
    settings = replace(bhn_mnist.Settings.quick(), hidden=32, train_limit=600,
                       eval_limit=500, test_samples=10, epochs=10, epochs_subset=10, lr=3e-3)
    configs = ("flow-2", "mle", "5k-24/flow-0")
    small = {"hidden": 16}
    first = bhn_mnist.run(configs, settings=settings, data=mnist, out=tmp_path, device="cpu",
                          progress=False, overrides={"flow-2": small, "flow-0": small})
    rows = json.loads((tmp_path / "metrics.json").read_text())["methods"]
    assert list(rows) == list(configs)
    for name, row in rows.items():
        assert 0.5 < row["test_accuracy"] <= 1.0, name  # far above chance (0.1)
        assert 0 < row["test_nll"] < 2.3, name          # better than uniform (log 10)
        assert row["train_examples"] == 600
    assert rows["flow-2"]["paper_accuracy"] == 98.39 and rows["mle"]["paper_accuracy"] is None
    assert rows["5k-24/flow-0"]["hidden"] == 24
    report = (tmp_path / "report.md").read_text()
    assert "98.39" in report and "accuracy.png" in report
    (table,) = first.metrics["tables"]  # one schema: the paper's figure beside ours, in a table
    assert [r["configuration"] for r in table["rows"]] == list(configs)
    flow = table["rows"][0]
    assert flow["paper %"] == 98.39
    assert flow["difference (points)"] == pytest.approx(flow["test accuracy %"] - 98.39)
    assert (tmp_path / "accuracy.png").stat().st_size > 5_000
    # a second run resumes every configuration from its finished checkpoint: same numbers
    again = bhn_mnist.run(configs, settings=settings, data=mnist, out=tmp_path, device="cpu",
                          progress=False, overrides={"flow-2": small, "flow-0": small})
    for name in configs:
        assert again.metrics["methods"][name]["test_accuracy"] == first.metrics["methods"][
            name]["test_accuracy"]
        # the training time is the checkpoint's recorded total, not the resumed call's (which
        # only loads it); the first call's time after its last save is not in that record
        assert again.metrics["methods"][name]["train_s"] >= 0.5 * first.metrics["methods"][
            name]["train_s"]


def test_bhn_correlations_flow_correlates_scales_diagonal_does_not(mnist, tmp_path):
    settings = replace(bhn_correlations.Settings.quick(), draws=400)
    result = bhn_correlations.run(settings=settings, data=mnist, out=tmp_path, device="cpu",
                                  progress=False)
    flow, diagonal = result.metrics["methods"]["flow-8"], result.metrics["methods"]["flow-0"]
    # a diagonal Gaussian has independent scales: p-values uniform, ~5% below 0.05
    assert 0.03 < diagonal["fraction_p_below_0.05"] < 0.08
    assert flow["fraction_p_below_0.05"] > diagonal["fraction_p_below_0.05"]
    assert flow["num_pairs"] == flow["num_scales"] * (flow["num_scales"] - 1) // 2
    for figure in ("pvalues.png", "scatter.png"):
        assert (tmp_path / figure).stat().st_size > 5_000
    with pytest.raises(ValueError, match="runs flow guides"):
        bhn_correlations.run(["meanfield"], data=mnist, out=tmp_path)


def test_bhn_toy_tiny_run_compares_flows_with_nuts(tmp_path):
    settings = ToySettings(vi_steps=150, pred_samples=100, nuts_chains=2, nuts_warmup=30,
                           nuts_samples=30, nuts_max_tree_depth=4)
    result = bhn_toy.run(("nuts", "flow", "meanfield"), settings=settings, out=tmp_path,
                         device="cpu", progress=False)
    for toy in ("blundell", "cubic"):
        methods = result.metrics["methods"][toy]
        assert set(methods) == {"nuts", "flow", "meanfield"}
        for name in ("flow", "meanfield"):
            for key in ("std_ratio_in_data", "std_ratio_out_of_data", "predictive_distance",
                        "test_log_likelihood"):
                assert isinstance(methods[name][key], float), (toy, name, key)
    assert (tmp_path / "bands.png").stat().st_size > 10_000
    assert "## blundell" in (tmp_path / "report.md").read_text()
    assert main(["run", "bhn-toy", "--methods", "mpa"]) == 2
