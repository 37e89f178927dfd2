"""The MetaPrior experiments at tiny sizes: metaprior-moons and metaprior-toy."""

import json
from dataclasses import replace

import pytest

from hyperbayes.cli import main
from hyperbayes.experiments import metaprior_moons, metaprior_toy
from hyperbayes.experiments.toy_regression import Settings as ToySettings


def test_metaprior_moons_quick_writes_accuracies_and_figures(tmp_path):
    settings = replace(metaprior_moons.Settings.quick(), steps=200, n_train=150, n_test=150)
    result = metaprior_moons.run(settings=settings, out=tmp_path, device="cpu", progress=False)
    rows = json.loads((tmp_path / "metrics.json").read_text())["methods"]
    assert list(rows) == ["metaprior", "meanfield", "map"]
    for name, row in rows.items():
        assert 0.7 < row["test_accuracy"] <= 1.0, name   # the moons are far from chance
    assert rows["metaprior"]["paper_accuracy"] == 0.955
    assert rows["metaprior"]["accuracy_minus_map"] == pytest.approx(
        rows["metaprior"]["test_accuracy"] - rows["map"]["test_accuracy"])
    assert {f.name for f in result.figures} == {"uncertainty.png", "weight_correlations.png"}
    assert all(f.stat().st_size > 10_000 for f in result.figures)
    with pytest.raises(ValueError, match="unknown method 'flw'"):
        metaprior_moons.run(["flw"], settings=settings, out=tmp_path)


def test_metaprior_toy_without_nuts_draws_functions(tmp_path):
    settings = replace(ToySettings.quick(), vi_steps=150, pred_samples=30)
    result = metaprior_toy.run(("metaprior", "meanfield"), settings=settings, out=tmp_path,
                               device="cpu", progress=False)
    assert {f.name for f in result.figures} == {"bands.png", "codes.png", "function_draws.png"}
    methods = json.loads((tmp_path / "metrics.json").read_text())["methods"]
    assert set(methods) == {"metaprior", "meanfield"}
    assert methods["metaprior"]["rmse_in_data"] > 0
    assert "std_ratio_out_of_data" not in methods["metaprior"]   # no NUTS, no comparison


def test_cli_knows_the_metaprior_method_and_experiments(capsys):
    assert main(["methods"]) == 0
    assert "metaprior" in capsys.readouterr().out
    try:
        code = main(["run", "metaprior-nope"])
    except SystemExit as exit_:   # argparse's own exit
        code = exit_.code
    assert code == 2
    assert "metaprior-moons" in capsys.readouterr().err


def test_metaprior_mnist_experiments_write_their_tables(mnist, tmp_path):
    from hyperbayes.experiments import metaprior_mnist

    settings = replace(metaprior_mnist.Settings.quick(), hidden=16,
                       train_limit=300, eval_limit=200, shots=(10,), illation_steps=(2, 4))
    small = {"gaussian_lv": {"code_dim": 3}, "gaussian_oh": {"code_dim": 3}}
    result = metaprior_mnist.run_mnist(settings=settings, data=mnist, out=tmp_path / "m",
                                       device="cpu", progress=False, overrides=small)
    assert result.metrics["recipes"]["gaussian_lv"]["options"]["code_dim"] == 3
    assert set(result.metrics["methods"]) == {"gaussian_lv", "gaussian_oh", "meanfield"}
    assert all(0 <= v["test_accuracy"] <= 1 for v in result.metrics["methods"].values())
    assert {f.name for f in result.figures} == {"codes_tsne.png", "input_codes.png"}
    surgery = metaprior_mnist.run_surgery(settings=settings, data=mnist, out=tmp_path / "s",
                                          device="cpu", progress=False, overrides=small)
    rows = json.loads((tmp_path / "s" / "metrics.json").read_text())["methods"]
    for method in ("gaussian_lv", "meanfield"):
        for task in ("pixels", "labels", "both"):
            entry = rows[method][task]["10"]
            assert set(entry) == {"permuted_accuracy", "clean_accuracy", "by_steps"}
            assert set(entry["by_steps"]) == {"2", "4"}
    assert surgery.figures[0].name == "adaptation.png"
