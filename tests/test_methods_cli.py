"""Baselines end to end (fit, predict, save, load), the method registry, the CLI, the main job."""

import json
import sys

import pytest
import torch

import hyperbayes as hb
from hyperbayes.cli import main
from hyperbayes.inference.checkpoint import CheckpointError, load_posterior, save_posterior
from hyperbayes.models import MLP, Categorical, priors


@pytest.fixture(scope="module")
def digits():
    data = hb.datasets.load("digits", seed=0)
    return hb.datasets.first_n(data, 300)


@pytest.mark.parametrize("name", ["map", "meanfield", "mcdropout"])
def test_baseline_fit_predict_save_load(name, digits, tmp_path):
    def build():
        return hb.methods.build(name, MLP([64, 32, 10]), priors.Normal(1.0), Categorical(), seed=0)

    model, guide, loss = build()
    result = hb.inference.fit(model, guide, digits, epochs=15, batch_size=50, lr=1e-2, loss=loss,
                              seed=0, val_samples=5)
    assert result.validation and result.best_step > 0
    pred = hb.inference.predict(model, guide, digits.test.x, num_samples=20)
    accuracy = hb.inference.metrics.accuracy(pred.probs, digits.test.y)
    assert accuracy > 0.8, f"{name} reached only {accuracy:.3f} on digits"

    path = save_posterior(tmp_path / f"{name}.pt", model, guide, method=name)
    model2, guide2, _ = build()
    meta = load_posterior(path, model2, guide2)
    assert meta["method"] == name
    for key, value in guide.state_dict().items():
        torch.testing.assert_close(guide2.state_dict()[key], value)
    torch.manual_seed(1)
    a = hb.inference.predict(model, guide, digits.test.x[:50], num_samples=5).probs
    torch.manual_seed(1)
    b = hb.inference.predict(model2, guide2, digits.test.x[:50], num_samples=5).probs
    torch.testing.assert_close(a, b)


def test_load_posterior_rejects_another_architecture(tmp_path):
    model, guide, _ = hb.methods.build("map", MLP([4, 8, 2]), priors.Normal(1.0), Categorical())
    path = save_posterior(tmp_path / "p.pt", model, guide)
    other, other_guide, _ = hb.methods.build("map", MLP([4, 9, 2]), priors.Normal(1.0),
                                             Categorical())
    with pytest.raises(CheckpointError, match="different architecture"):
        load_posterior(path, other, other_guide)


def test_mean_field_is_more_uncertain_than_map_far_from_data():
    x = torch.linspace(-1, 1, 30).unsqueeze(-1)
    y = torch.sin(3 * x)
    far = torch.full((5, 1), 4.0)
    stds = {}
    for name in ("map", "meanfield"):
        model, guide, loss = hb.methods.build(name, MLP([1, 30, 1]), priors.Normal(1.0),
                                              hb.models.Gaussian(0.1))
        hb.inference.fit(model, guide, (x, y), steps=800, lr=1e-2, loss=loss)
        stds[name] = float(hb.inference.predict(model, guide, far, 200).std().mean())
    assert stds["map"] == 0.0
    assert stds["meanfield"] > 0.1


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown method 'meanfeild' \(did you mean 'meanfield'"):
        hb.methods.get("meanfeild")


def test_cli_lists_methods_and_rejects_bad_input(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("map", "meanfield", "mcdropout", "nuts"):
        assert name in out
    assert main(["run", "toy-regression", "--methods", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["run", "no-such-experiment"]) == 2
    assert main(["datasets", "fetch", "cubic"]) == 2
    assert "nothing to fetch" in capsys.readouterr().err.lower()


def test_cli_logs_at_the_level_of_the_environment(capsys, monkeypatch):
    """The CLI sends the library's records to stderr (INFO by default), one handler however
    often it runs; an unknown level is refused before any work."""
    import logging

    logger = logging.getLogger("hyperbayes")
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))  # put back afterwards
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setenv("HYPERBAYES_LOG_LEVEL", "debug")
    assert main(["methods"]) == 0 and main(["methods"]) == 0
    assert logger.level == logging.DEBUG
    ours = [h for h in logger.handlers if getattr(h, "_hyperbayes_cli", False)]
    assert len(ours) == 1
    monkeypatch.setattr(ours[0], "stream", sys.stderr)  # capsys's stderr
    logging.getLogger("hyperbayes.experiments.zoo").info("a round finished")
    assert "hyperbayes.experiments.zoo: a round finished" in capsys.readouterr().err
    monkeypatch.setenv("HYPERBAYES_LOG_LEVEL", "chatty")
    assert main(["methods"]) == 2
    assert "HYPERBAYES_LOG_LEVEL='CHATTY'" in capsys.readouterr().err


def test_toy_regression_quick_writes_metrics_report_and_figure(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["run", "toy-regression", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    methods = metrics["methods"]
    assert set(methods) == {"map", "meanfield", "mcdropout", "nuts"}
    for name in ("map", "meanfield", "mcdropout"):
        for key in ("test_log_likelihood", "rmse", "std_ratio_in_data", "std_ratio_out_of_data",
                    "predictive_distance"):
            assert isinstance(methods[name][key], float), (name, key)
    assert methods["map"]["std_ratio_out_of_data"] == 0.0  # a point estimate has no spread
    for key in ("max_rhat", "max_rhat_weights", "min_ess_bulk", "divergences"):
        assert key in methods["nuts"]
    assert methods["nuts"]["max_rhat"] < 1.3
    assert (out / "bands.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "NUTS diagnostics" in report and "bands.png" in report


@pytest.mark.slow  # 80 s; the mode property itself is tested in test_flows.py (14 s)
def test_bhn_product_quick_reports_mode_fractions(tmp_path):
    out = tmp_path / "product"
    assert main(["run", "bhn-product", "--quick", "--out", str(out), "--device", "cpu",
                 "--methods", "nuts,flow,meanfield"]) == 0
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    for name in ("nuts", "flow", "meanfield"):
        assert {"mode_fraction_pos", "mode_fraction_neg"} <= set(methods[name])
    assert min(methods["nuts"]["mode_fraction_pos"], methods["nuts"]["mode_fraction_neg"]) > 0
    assert min(methods["flow"]["mode_fraction_pos"], methods["flow"]["mode_fraction_neg"]) >= 0.25
    assert max(methods["meanfield"]["mode_fraction_pos"],
               methods["meanfield"]["mode_fraction_neg"]) > 0.95
    assert (out / "scatter.png").stat().st_size > 10_000
    assert main(["run", "bhn-product", "--methods", "nope"]) == 2
