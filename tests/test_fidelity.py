"""The fidelity task and method recipes: every registered method on the toys against NUTS."""

import json
import math
from dataclasses import replace

import pytest

from hyperbayes import methods
from hyperbayes.experiments import EXPERIMENTS, fidelity
from hyperbayes.models import Categorical, Gaussian, priors

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family", methods.FAMILIES)
def test_every_method_sets_up_by_its_recipe(family):
    sizes, lik = (([64, 8, 10], Categorical()) if family == "classification"
                  else ([1, 8, 1], Gaussian(scale=0.1)))
    task_prior = priors.Normal(1.0)
    for name in methods.available():
        model, guide, loss, fit_options = methods.setup(name, family, sizes, task_prior, lik)
        recipe = methods.get(name).recipe(family)
        assert model.net.weight_norm == recipe.weight_norm
        assert set(recipe.fit) <= set(fit_options)
        if recipe.prior is not None or name.startswith("metaprior"):  # the prior was replaced
            assert model.prior is not task_prior
        else:
            assert model.prior is task_prior


def test_setup_options_override_the_recipe():
    _, _, loss, _ = methods.setup("diversity", "regression", [1, 8, 1], priors.Normal(1.0),
                                  Gaussian(scale=0.1), lam=3.0)
    assert loss.lam == 3.0
    _, _, loss, _ = methods.setup("diversity", "regression", [1, 8, 1], priors.Normal(1.0),
                                  Gaussian(scale=0.1))
    assert loss.lam is None  # the dataset size: the negative ELBO under a flat prior


def test_unknown_family_is_an_error():
    with pytest.raises(ValueError, match="unknown task family 'vision'"):
        methods.get("map").recipe("vision")


def test_fidelity_has_a_row_per_method_and_toy(suite_run):
    assert EXPERIMENTS["fidelity"] is fidelity.run
    out = suite_run.out_dir / "fidelity"  # every registered method, cubic and product toys
    names = methods.available(variants=False)
    regression, quality, checks, product = json.loads(
        (out / "metrics.json").read_text())["tables"]
    assert [(r["toy"], r["method"]) for r in regression["rows"]] == [("cubic", n) for n in names]
    assert [r["method"] for r in product["rows"]] == ["nuts", *names]
    for row in regression["rows"]:
        assert math.isfinite(row["W₁ to NUTS"]) and row["W₁ to NUTS"] >= 0
        assert row["std ratio in data"] >= 0
    by_name = {r["method"]: r for r in regression["rows"]}
    assert by_name["map"]["std ratio in data"] == 0  # a point estimate has no spread
    assert by_name["meanfield"]["std ratio in data"] > 0
    # VI quality for every guide with a density; the rest say they have none
    scored = {r["method"]: r for r in quality["rows"]}
    assert list(scored) == names
    for name in ("meanfield", "flow", "metaprior"):
        row = scored[name]
        assert row["IWAE"] >= row["ELBO"] and math.isfinite(row["PSIS k̂"]), row
        assert row["reading"] in ("good", "fair", "unreliable")
    for name in ("map", "mcdropout", "bbh", "diversity"):
        assert scored[name]["reading"] == "no density" and "ELBO" not in scored[name]
    # the implicit guides' KL estimates against a lower bound of their KL instead
    checked = {r["method"]: r for r in checks["rows"]}
    assert list(checked) == ["bbh", "diversity"]
    assert checked["diversity"]["KL estimate of the loss"] is None  # no KL term of its own
    for row in checked.values():
        assert math.isfinite(row["KL ≥"]) and row["ELBO ≤"] < 0
        assert row["estimate below bound"] in ("yes", "no", "–")
    for row in product["rows"]:
        assert 0 <= row["mass near a = b = 1"] + row["mass near a = b = −1"] <= 1 + 1e-9
        assert row["modes covered"] in (0, 1, 2)
    files = {p.name for p in out.iterdir()}
    assert {"metrics.json", "report.md", "fidelity.png"} <= files
    assert "Product toy" in (out / "report.md").read_text()


def test_fidelity_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'bayes'"):
        fidelity.run(["bayes"], settings=fidelity.Settings.smoke(), out=tmp_path)
    with pytest.raises(ValueError, match="unknown toy"):
        fidelity.run(["map"], settings=replace(fidelity.Settings.smoke(), toys=("moons",)),
                     out=tmp_path)
