"""The Bayes by Hypernet experiments at tiny sizes: bbh-toy, bbh-mnist and bbh-rotated."""

import json
import math
from dataclasses import replace

import pytest
import torch

from hyperbayes import methods
from hyperbayes.cli import main
from hyperbayes.experiments import EXPERIMENTS, bbh_mnist, bbh_toy
from hyperbayes.experiments.toy_regression import Settings as ToySettings
from hyperbayes.guides import ImplicitGuide

RATIO_KEYS = ("std_ratio_in_data", "std_ratio_out_of_data", "predictive_distance",
              "test_log_likelihood", "rmse")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_bbh_experiments_are_registered():
    assert EXPERIMENTS["bbh-toy"] is bbh_toy.run
    assert EXPERIMENTS["bbh-mnist"] is bbh_mnist.run
    assert EXPERIMENTS["bbh-rotated"] is bbh_mnist.run_rotated
    recipe = methods.get("bbh_adversarial").recipe("regression")
    assert recipe.options["over"] == "weights" and recipe.options["kl"] == "adversarial"
    assert all(name == "nuts" or methods.get(name) for name in bbh_toy.DEFAULT_METHODS)
    assert main(["run", "bbh-toy", "--methods", "flw"]) == 2
    assert main(["run", "bbh-mnist", "--methods", "bayes"]) == 2


def test_bbh_toy_tiny_run_compares_with_nuts(tmp_path):
    settings = ToySettings(hidden=20, vi_steps=150, pred_samples=100, nuts_chains=2,
                           nuts_warmup=30, nuts_samples=30, nuts_max_tree_depth=4)
    names = ("nuts", "bbh_adversarial", "mle", "meanfield")
    small = {"hidden": (64,), "noise_dim": 61, "pretrain_steps": 20, "discriminator_steps": 1}
    result = bbh_toy.run(names, settings=settings, out=tmp_path, device="cpu", progress=False,
                         overrides={"bbh_adversarial": small})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    methods = saved["methods"]
    assert list(methods) == list(names)
    for name in names[1:]:
        for key in RATIO_KEYS:
            assert isinstance(methods[name][key], float), (name, key)
    # maximum likelihood is a point: no spread; Bayes by Hypernet's samples differ
    assert methods["mle"]["std_ratio_in_data"] == 0 == methods["mle"]["std_ratio_out_of_data"]
    assert methods["bbh_adversarial"]["std_ratio_in_data"] > 0.01
    assert methods["bbh_adversarial"]["std_ratio_out_of_data"] > 0.01
    assert saved["recipes"]["mle"]["prior"].startswith("Flat(")
    assert result.metrics["methods"]["nuts"]["num_chains"] == 2
    assert saved["recipes"]["bbh_adversarial"]["options"]["pretrain_steps"] == 20
    for figure in ("bands.png", "std.png"):
        assert (tmp_path / figure).stat().st_size > 10_000
    report = (tmp_path / "report.md").read_text()
    assert "mean field's" in report and "bands.png" in report


def test_bbh_mnist_and_rotated_reuse_the_trained_models(images, tmp_path):
    settings = replace(bbh_mnist.Settings.quick(), hidden=32, train_limit=600, eval_limit=300,
                       epochs=5, lr=3e-3, test_samples=10, validations=2,
                       angles=(0, 90, 180))
    small = {"bbh": {"pretrain_steps": 20}}
    first = bbh_mnist.run(settings=settings, data=images, out=tmp_path / "mnist",
                          device="cpu", progress=False, overrides=small)
    rows = json.loads((tmp_path / "mnist" / "metrics.json").read_text())["methods"]
    assert list(rows) == list(bbh_mnist.DEFAULT_METHODS)
    for name, row in rows.items():
        assert 0.3 < row["test_accuracy"] <= 1.0, name  # far above chance (0.1)
        assert 0 < row["test_nll"] < 2.3, name          # better than uniform (log 10)
        assert row["paper_accuracy"] == bbh_mnist.PAPER_ACCURACY[name]
        assert not row["reused_checkpoint"]
    assert "98.47" in (tmp_path / "mnist" / "report.md").read_text()
    for figure in ("accuracy.png", "validation.png"):
        assert (tmp_path / "mnist" / figure).stat().st_size > 5_000

    checkpoints = tmp_path / "mnist" / "checkpoints"
    rotated = bbh_mnist.run_rotated(settings=settings, data=images, out=tmp_path / "rotated",
                                    device="cpu", progress=False, checkpoints=checkpoints,
                                    overrides=small)
    results = rotated.metrics["methods"]
    for name, row in results.items():
        assert row["reused_checkpoint"], name  # no retraining: bbh-mnist's models
        mean = torch.as_tensor(row["mean_probs"])
        assert mean.shape == (3, 10)
        torch.testing.assert_close(mean.sum(-1), torch.ones(3))
    assert torch.as_tensor(results["mle"]["std_probs"]).abs().max() == 0  # a point estimate
    assert torch.as_tensor(results["bbh"]["std_probs"]).max() > 0      # samples differ
    assert torch.as_tensor(results["dropout"]["std_probs"]).max() > 0
    assert (tmp_path / "rotated" / "rotated.png").stat().st_size > 10_000
    assert "metrics.json" in {p.name for p in (tmp_path / "rotated").iterdir()}
    # the reused models are the ones bbh-mnist tested: same unrotated prediction as its ML net
    again = bbh_mnist.run(["mle"], settings=settings, data=images, out=tmp_path / "mnist",
                          device="cpu", progress=False, overrides=small)
    assert again.metrics["methods"]["mle"]["reused_checkpoint"]
    assert again.metrics["methods"]["mle"]["test_accuracy"] == first.metrics["methods"]["mle"][
        "test_accuracy"]


def test_bbh_paper_variant_generates_the_first_layer_with_dropout():
    from hyperbayes.inference import fit
    from hyperbayes.models import Gaussian, priors

    model, guide, loss, _ = methods.setup("bbh_paper", "regression", [1, 100, 1],
                                          priors.FanInNormal(1.0), Gaussian(scale=0.3),
                                          pretrain_steps=5)
    assert guide.generated_names == ["fc0.weight", "fc0.bias"]
    assert [s.name for s in guide.point_sites] == ["fc1.weight", "fc1.bias"]
    assert guide.noise_dim == guide.num_generated == 200  # q has a density over the layer
    assert model.net.dropout == 0.5
    x = torch.linspace(-1, 1, 20).unsqueeze(-1)
    result = fit(model, guide, (x, x ** 3), steps=5, loss=loss, progress=False, seed=0)
    assert all(math.isfinite(v) for v in result.losses)
    with pytest.raises(ValueError, match=r"no site matches \['fc9.\*'\]"):
        ImplicitGuide(model, over=["fc9.*"])
