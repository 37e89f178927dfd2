"""The adversarial task: one-sample FGS gradients for any guide, attack metrics, every method."""

import json
from dataclasses import replace

import pytest
import torch

from hyperbayes.experiments import adversarial, zoo
from hyperbayes.inference import metrics, sample_posterior
from hyperbayes.inference.attacks import fgsm, input_gradient

pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(**changes):
    """Smoke settings with a map that learns something (≈ 2/3 right on MNIST)."""
    smoke = adversarial.Settings.smoke()
    return replace(smoke, zoo=replace(smoke.zoo, epochs=10, lr=1e-2), **changes)


def _trained(name, images, settings, tmp_path):
    train, val, _ = zoo.mnist_splits(settings.zoo, images)
    return zoo.train(name, settings.zoo, train, val, device="cpu", seed=0,
                     checkpoint_dir=tmp_path, progress=False)


def test_fgsm_moves_within_eps_inside_the_pixel_range():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 4, 4, generator=gen)
    x[:, :, 0] = 0.0  # pixels at the bounds stay inside them
    x[:, :, 1] = 1.0
    grad = torch.randn(20, 1, 4, 4, generator=gen)
    grad[:, :, 2, 0] = 0.0  # no gradient: no move
    assert torch.equal(fgsm(x, grad, 0.0), x)
    for eps in (0.01, 0.1, 0.5):
        adv = fgsm(x, grad, eps)
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert torch.equal(adv[:, :, 2, 0], x[:, :, 2, 0])
        inner = (x > eps) & (x < 1 - eps) & (grad != 0)
        # a step up the loss −log p is a step down the log-likelihood's gradient
        assert torch.allclose((adv - x)[inner], -eps * grad.sign()[inner], atol=1e-6)
    with pytest.raises(ValueError, match="≥ 0"):
        fgsm(x, grad, -0.1)
    with pytest.raises(ValueError, match="shape"):
        fgsm(x, grad[:, :, :2], 0.1)
    # targeted: a step up the target's log-likelihood, the mirror image of the untargeted step
    towards = fgsm(x, grad, 0.1, targeted=True)
    inner = (x > 0.1) & (x < 0.9) & (grad != 0)
    assert torch.allclose((towards - x)[inner], 0.1 * grad.sign()[inner], atol=1e-6)


def test_one_sample_gradient_raises_the_likelihood_and_draws_one_sample(images, tmp_path):
    settings = _settings()
    fitted = {name: _trained(name, images, settings, tmp_path) for name in ("map", "meanfield")}
    x, y = images.test.x[:50], images.test.y[:50]
    model, guide = fitted["map"].model, fitted["map"].guide
    grad = input_gradient(model, guide, x, y, batch_size=16)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    # a point estimate: every draw is the same, so the gradient is deterministic
    assert torch.equal(grad, input_gradient(model, guide, x, y, batch_size=16))
    with pytest.raises(ValueError, match="50 examples and y 3"):
        input_gradient(model, guide, x, y[:3])
    with pytest.raises(ValueError, match="batch_size"):
        input_gradient(model, guide, x, y, batch_size=0)

    def log_lik(images_):
        probs = zoo.sample_probs(fitted["map"], images_, 1)[0]
        return probs.gather(1, y[:, None]).log().squeeze(1)

    step = 1e-3 * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    assert (log_lik(x + step) >= log_lik(x) - 1e-5).float().mean() > 0.95
    # a mean-field posterior: one fresh weight draw per batch, so two calls differ
    mf = fitted["meanfield"]
    g1 = input_gradient(mf.model, mf.guide, x, y)
    g2 = input_gradient(mf.model, mf.guide, x, y)
    assert not torch.equal(g1, g2)
    assert sample_posterior(mf.model, mf.guide, 1)["fc0.weight"].shape[0] == 1


def test_attack_metrics_known_answers():
    y = torch.tensor([0, 1, 0, 1])
    confident = torch.tensor([[0.99, 0.01], [0.01, 0.99], [0.99, 0.01], [0.01, 0.99]])
    clean = confident.expand(3, 4, 2)
    # attacked: two images flipped and uncertain, with disagreeing samples
    attacked = clean.clone()
    attacked[:, 2] = torch.tensor([[0.2, 0.8], [0.1, 0.9], [0.5, 0.5]])
    attacked[:, 3] = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.5, 0.5]])
    out = adversarial.attack_metrics(clean, attacked, y)
    assert out["accuracy"] == 50.0 and out["errors"] == 2
    assert out["mean"]["bald"] == pytest.approx(float(metrics.bald(attacked).mean()))
    for score in adversarial.SCORES:
        # the two flipped images are the most uncertain of all eight
        assert out["adversarial_roc"][score] == pytest.approx(75.0)
        assert out["error_roc"][score] == pytest.approx(100.0)
    same = adversarial.attack_metrics(clean, clean, y)
    assert same["accuracy"] == 100.0
    assert all(v == 50.0 for v in same["adversarial_roc"].values())
    assert all(v is None for v in same["error_roc"].values())  # no error to detect


def test_map_accuracy_falls_as_eps_grows(images, tmp_path):
    settings = _settings(epsilons=(0.0, 0.02, 0.1, 0.3), table_epsilons=(0.1, 0.3),
                         attack_examples=100)
    result = adversarial.run(["map"], settings=settings, data=images, out=tmp_path / "adv",
                             device="cpu", progress=False)
    row = result.metrics["methods"]["map"]
    acc = [row["epsilons"][str(e)]["accuracy"] for e in settings.epsilons]
    assert row["clean_accuracy"] > 40
    assert acc[0] == row["clean_accuracy"]  # ε = 0 changes nothing
    assert all(a >= b for a, b in zip(acc, acc[1:], strict=False))
    assert acc[-1] < acc[0] - 25
    for e in settings.epsilons:
        cell = row["epsilons"][str(e)]
        assert cell["linf"] <= e + 1e-6
        assert 0.0 <= cell["pixel_range"][0] and cell["pixel_range"][1] <= 1.0
    assert row["epsilons"]["0.0"]["linf"] == 0.0
    # a point estimate has no epistemic uncertainty: mean std and BALD detect nothing
    for e in settings.epsilons:
        assert row["epsilons"][str(e)]["mean"]["bald"] == pytest.approx(0.0, abs=1e-6)
        assert row["epsilons"][str(e)]["adversarial_roc"]["mean_std"] == 50.0
    # the model came from (and went to) the shared zoo folder
    assert any(p.name.startswith("map-") for p in (tmp_path / "zoo").iterdir())


def test_every_method_runs_through_adversarial(images, tmp_path):
    settings = adversarial.Settings.smoke()
    names = zoo.suite_methods()
    result = adversarial.run(settings=settings, data=images, out=tmp_path / "adv", device="cpu",
                             progress=False)
    saved = json.loads((tmp_path / "adv" / "metrics.json").read_text())
    assert list(saved["methods"]) == names
    assert saved["seeds"] == [0]
    tables = {t["title"]: t for t in saved["tables"]}
    accuracy = next(t for title, t in tables.items() if title.startswith("FGS attack"))
    assert [r["method"] for r in accuracy["rows"]] == names
    assert accuracy["columns"] == ["method", *(f"ε={e:g}" for e in settings.epsilons)]
    detection = next(t for title, t in tables.items() if title.startswith("Adversarial-input"))
    assert len(detection["rows"]) == len(names) * len(settings.table_epsilons)
    for name in names:
        for cell in saved["methods"][name]["epsilons"].values():
            for value in (*cell["adversarial_roc"].values(), *cell["error_roc"].values()):
                assert value is None or 0.0 <= value <= 100.0
            assert 0.0 <= cell["accuracy"] <= 100.0
    assert result.figures[0].stat().st_size > 20_000
    report = (tmp_path / "adv" / "report.md").read_text()
    assert "no table for this experiment" in report and "adversarial.png" in report


def test_smoke_models_are_calibrations():
    calibration = pytest.importorskip("hyperbayes.experiments.calibration")
    assert adversarial.Settings.smoke().zoo == calibration.Settings.smoke().zoo
    assert adversarial.Settings.quick().zoo == zoo.ZooSettings.quick()


def test_unknown_method_names_the_known_ones(images, tmp_path):
    with pytest.raises(ValueError, match="available: .*map"):
        adversarial.run(["mapp"], settings=adversarial.Settings.smoke(), data=images,
                        out=tmp_path, device="cpu")


def test_paper_claims_need_a_real_rise():
    def row(clean_acc, accs, balds, stds, roc):
        eps = {str(e): {"accuracy": a, "mean": {"bald": b, "mean_std": s},
                        "adversarial_roc": {"bald": roc, "mean_std": roc},
                        "error_roc": {"bald": roc, "mean_std": roc}}
               for e, a, b, s in zip((0.0, 0.1, 0.3), accs, balds, stds, strict=True)}
        return {"clean_accuracy": clean_acc, "epsilons": eps}

    results = {
        # a near-point posterior: BALD triples, but from 1e-6 (round-off): no rise
        "flow": row(90.0, (90.0, 40.0, 5.0), (1e-6, 2e-6, 3e-6), (0.01, 0.03, 0.05), 70.0),
        "mcdropout": row(88.0, (88.0, 50.0, 10.0), (0.05, 0.06, 0.07), (0.02, 0.02, 0.021),
                         60.0),
    }
    claims = {c["claim"]: c["holds"] for c in adversarial.paper_claims(
        results, ["flow", "mcdropout"], [0.0, 0.1, 0.3])}
    assert claims["accuracy drops as ε grows (every method)"] == "yes"
    assert claims["BALD rises with ε for BHNs (flow)"] == "no"
    assert claims["mean std rises with ε for BHNs (flow)"] == "yes"
    assert claims["... but not for dropout: BALD rises less for mcdropout than for flow"] == "no"
    assert claims["... but not for dropout: mean std rises less for mcdropout than for "
                  "flow"] == "yes"
    assert claims["BHNs detect adversarial examples better than dropout (BALD, mean ROC-AUC "
                  "over ε > 0)"] == "yes"
    # without the paper's methods only the accuracy claim is checked
    only_map = adversarial.paper_claims({"map": results["flow"]}, ["map"], [0.0, 0.1, 0.3])
    assert [c["claim"] for c in only_map] == ["accuracy drops as ε grows (every method)"]
