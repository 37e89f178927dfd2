"""The method registry: variants, counted names, aliases, task recipes, and that experiments name
no method of their own (a newly registered one runs through them unchanged)."""

import json
from pathlib import Path

import pytest
import torch

from hyperbayes import methods
from hyperbayes.experiments import bhn_product, toy_regression
from hyperbayes.experiments.common import checkpoint_key, methods_table, recipes_used
from hyperbayes.guides import FlowGuide, ImplicitGuide, MeanField
from hyperbayes.models import MLP, Gaussian, priors

RESULTS = Path(__file__).parents[1] / "docs" / "results"


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test are undone after it."""
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    monkeypatch.setattr(methods, "_ALIASES", dict(methods._ALIASES))


def _setup(name, family="regression", sizes=(1, 8, 1), prior=None, **options):
    return methods.setup(name, family, list(sizes), prior or priors.Normal(1.0),
                         Gaussian(scale=0.1), **options)


def test_mle_is_map_under_a_flat_prior_in_every_family():
    for family in methods.FAMILIES:
        model, guide, _, _ = _setup("mle", family, prior=priors.Normal(1.0))
        assert isinstance(model.prior, priors.Flat), family
    model, _, _ = methods.build("mle", MLP([1, 4, 1]), priors.Normal(1.0), Gaussian(scale=0.1))
    assert isinstance(model.prior, priors.Flat)
    assert methods.get("mle").base == "map"


def test_counted_names_set_the_count_option():
    model, guide, _, _ = _setup("flow-3")
    assert isinstance(guide, FlowGuide) and guide.num_flows == 3 and guide.flow == "iaf"
    _, guide, _, _ = _setup("flow_realnvp-2")
    assert guide.num_flows == 2 and guide.flow == "realnvp"
    assert methods.get("flow-8").recipe("classification").options["over"] == "scales"
    with pytest.raises(ValueError, match=r"unknown method 'meanfield-3'.*flow-<K>"):
        methods.get("meanfield-3")  # mean field has no count option


def test_variants_keep_their_options_over_the_base_recipe():
    # flow's regression recipe is IAF; the RealNVP variant's options survive it
    _, guide, _, _ = _setup("flow_realnvp")
    assert guide.flow == "realnvp" and guide.num_flows == 8
    _, guide, loss, _ = _setup("bbh_nn")
    assert isinstance(guide, ImplicitGuide) and type(loss).__name__ == "NearestNeighbourELBO"
    assert loss.num_particles == 16  # its own regression recipe
    _, guide, _, _ = _setup("metaprior_onehot", "classification", (4, 3, 2))
    assert guide.__class__.__name__ == "Delta"  # one-hot codes: the hyperprior is a point
    # the caller's options still win over the variant's
    _, guide, _, _ = _setup("flow_realnvp", num_flows=1)
    assert guide.num_flows == 1


def test_aliases_are_the_papers_names():
    assert methods.get("gaussian_lv") is methods.get("metaprior")
    assert methods.get("gaussian_oh") is methods.get("metaprior_onehot")
    assert methods.aliases() == {"gaussian_lv": "metaprior", "gaussian_oh": "metaprior_onehot"}


def test_task_recipes_fall_back_to_their_family():
    flow = methods.get("flow")
    assert flow.recipe("regression/product").options["init_loc"] == 0.0
    assert flow.recipe("regression/bhn-toy") is flow.recipe("regression")
    with pytest.raises(ValueError, match="unknown task family 'vision/x'"):
        flow.recipe("vision/x")
    _, guide, _, _ = _setup("flow", "regression/product", (1, 1, 1), activation="identity",
                            bias=False)
    assert torch.all(guide.affine_loc == 0)  # symmetric between the two modes


def test_the_suite_runs_base_methods_only():
    base = methods.available(variants=False)
    assert "mle" not in base and "flow_realnvp" not in base and "map" in base
    assert set(base) < set(methods.available())


def test_names_cannot_be_registered_twice_or_shadow_counted_forms(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        methods.register_variant("mle", "map", "again")
    with pytest.raises(ValueError, match="cannot end in -<digits>"):
        methods.register_variant("meanfield-2", "meanfield", "no")
    with pytest.raises(ValueError, match="already a method or alias"):
        methods.register_alias("map", "meanfield")


def test_a_new_method_runs_through_the_experiments_unchanged(scratch_registry, tmp_path):
    """Experiments hold no method tables: a method registered here is set up by its recipe in
    the toy study and the product toy, and its recipe is recorded in metrics.json."""
    methods.register_variant("wide_meanfield", "meanfield", "mean field started wide",
                             options={"init_scale": 0.3},
                             recipes={"regression": methods.Recipe({"init_scale": 0.3},
                                                                   fit={"lr": 5e-3})})
    settings = toy_regression.Settings(hidden=8, vi_steps=20, pred_samples=20, iw_samples=20)
    data = toy_regression.datasets.load("cubic", seed=0)
    toy = toy_regression.study(data, ["wide_meanfield"], settings, device="cpu", progress=False)
    model, guide = toy.fitted["wide_meanfield"]
    assert isinstance(guide, MeanField)
    assert "std_ratio_in_data" not in toy.results["wide_meanfield"]  # no NUTS asked for
    assert toy.results["wide_meanfield"]["rmse"] > 0
    result = bhn_product.run(["wide_meanfield"], settings=bhn_product.Settings(
        steps=20, particles=2, draws=50), out=tmp_path, device="cpu", progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["recipes"]["wide_meanfield"]["options"]["init_scale"] == 0.3
    # the base's product recipe, with the variant's options laid over it
    assert saved["recipes"]["wide_meanfield"]["fit"] == methods.get("meanfield").recipe(
        "regression/product").fit
    assert list(result.metrics["methods"]) == ["wide_meanfield"]


def test_recipes_used_and_checkpoint_keys_follow_the_recipe(scratch_registry):
    used = recipes_used(["nuts", "mle", "flow-4"], "classification", {"flow-4": {"hidden": 7}})
    assert set(used) == {"mle", "flow-4"}
    assert used["mle"]["prior"] == "Flat()" and used["flow-4"]["options"]["hidden"] == 7
    before = checkpoint_key("flow-4", {"epochs": 1}, 0, "data")
    assert checkpoint_key("flow-4", {"epochs": 1}, 0, "data", options={"hidden": 7}) != before
    assert checkpoint_key("flow-4", {"epochs": 1}, 0, "other data") != before
    assert checkpoint_key("flow-4", {"epochs": 1}, 0, "data") == before


def test_a_data_fingerprint_changes_with_any_change_to_the_data():
    from hyperbayes.datasets import Split
    from hyperbayes.experiments.common import data_fingerprint

    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(50, 4, 4, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    base = data_fingerprint(Split(x, y))
    assert data_fingerprint(Split(x.clone(), y.clone())) == base
    variants = {  # each keeps every sum, the shapes and the labels of the original
        "flipped": Split(x.flip(-1), y),
        "pixels shuffled": Split(x.reshape(50, 16)[:, torch.randperm(16, generator=gen)]
                                 .reshape(50, 4, 4), y),
        "flattened": Split(x.reshape(50, 16), y),
        "float64": Split(x.double(), y),
        "a non-contiguous view": Split(x.transpose(1, 2), y),
        "labels moved": Split(x, y.roll(1)),
    }
    for what, split in variants.items():
        assert data_fingerprint(split) != base, what


def _labels(payload: dict) -> list[str]:
    """Method labels of a metrics.json: its ``methods`` keys (bhn-toy's nested per toy,
    bhn-mnist's after the ``Nk-H/`` prefix) and the ``method`` cells of its tables, less the
    papers' own rows."""
    found = payload.get("methods")
    keys = list(found) if isinstance(found, dict) else []
    if payload.get("experiment") == "bhn-toy":
        keys = [name for toy in found.values() for name in toy]
    rows = [row["method"] for table in payload.get("tables") or []
            for row in table.get("rows", []) if isinstance(row, dict) and "method" in row]
    return [label.split("/")[-1] for label in keys + rows
            if isinstance(label, str) and not label.startswith("paper:")]


def test_every_label_in_the_committed_results_is_a_listed_name():
    files = sorted(RESULTS.rglob("*.json"))
    assert files, "no results under docs/results"
    for path in files:
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict):
            continue
        for label in _labels(payload):
            if label != methods.REFERENCE:
                methods.get(label)  # raises, naming the label, if it is not listed


def test_cli_sets_settings_and_options_and_checks_them_first(tmp_path, capsys):
    from hyperbayes.cli import main

    out = tmp_path / "toy"
    assert main(["run", "toy-regression", "--methods", "meanfield", "--set", "vi_steps=30",
                 "--set", "pred_samples=20", "--set", "hidden=8", "--set", "iw_samples=20",
                 "--option", "meanfield.init_scale=0.2", "--out", str(out),
                 "--device", "cpu"]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["settings"]["vi_steps"] == 30 and saved["settings"]["hidden"] == 8
    assert saved["tables"], "every metrics.json has tables"
    capsys.readouterr()
    # bad input fails before any work, naming the problem
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["run", "toy-regression", "--out", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["run", "toy-regression", "--set", "vi_step=3", "--out", str(out)]) == 2
    assert "unknown setting(s) vi_step" in capsys.readouterr().err
    assert main(["run", "toy-regression", "--set", "vi_steps=many", "--out", str(out)]) == 2
    assert "vi_steps='many': expected int" in capsys.readouterr().err
    assert main(["run", "toy-regression", "--option", "mfield.init_scale=1",
                 "--out", str(out)]) == 2
    assert "unknown method 'mfield'" in capsys.readouterr().err
    # a suite task checks an option by building the method before it trains anything
    assert main(["run", "calibration", "--option", "map.x=1", "--out", str(out)]) == 2
    assert "--option map: " in capsys.readouterr().err and not (out.parent / "zoo").exists()
    assert main(["run", "diversity-toy", "--option", "diversity.x=1", "--out", str(out)]) == 2
    assert "takes no method --option" in capsys.readouterr().err


def test_a_new_base_method_joins_every_method_experiment(scratch_registry, tmp_path):
    """A base method registered here, with no edit elsewhere, is one of the methods the
    "every method" experiments run, and comes out in their tables."""
    from hyperbayes.experiments import adversarial, zoo

    base = methods.get("map")
    methods.register(methods.Method("point_copy", "a second MAP, registered by a test",
                                    base.build, recipes=dict(base.recipes)))
    assert "point_copy" in zoo.suite_methods()
    digits = toy_regression.datasets.load("digits")
    result = adversarial.run(settings=adversarial.Settings.smoke(), data=digits,
                             out=tmp_path / "adv", device="cpu", progress=False)  # every method
    assert "point_copy" in result.metrics["methods"]
    rows = [row["method"] for row in result.metrics["tables"][0]["rows"]]
    assert "point_copy" in rows and "map" in rows


def test_a_methods_metric_group_becomes_columns_not_a_method_row():
    """An experiment's default table: a method's nested numbers (e.g. its ``vi_quality``) are
    ``group.metric`` columns of its row; only a grouping without numbers of its own (toy →
    method) gives ``toy/method`` rows, so every row is a method."""
    table = methods_table({"meanfield": {"rmse": 1.0, "vi_quality": {"elbo": -3.0}},
                                  "nuts": {"rmse": 0.5}})
    assert [r["method"] for r in table["rows"]] == ["meanfield", "nuts"]
    assert table["rows"][0]["vi_quality.elbo"] == -3.0
    grouped = methods_table({"cubic": {"flow": {"rmse": 1.0}}})
    assert [r["method"] for r in grouped["rows"]] == ["cubic/flow"]
