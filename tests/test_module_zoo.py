"""module-zoo: a torch.nn LeNet-5 through every registered method beside the MLP (smoke sizes)."""

import json
from dataclasses import replace

import pytest
import torch

import hyperbayes as hb
from hyperbayes.experiments import module_zoo, zoo
from hyperbayes.models.architectures import LeNet5

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lenet5_is_lenet5():
    net = LeNet5()
    assert sum(p.numel() for p in net.parameters()) == 61_706
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 12×12"):
        LeNet5(image_size=8)


def test_every_method_on_both_nets_writes_the_table(mnist, tmp_path):
    settings = replace(module_zoo.Settings.smoke(), skip=("mlp/diversity",))
    settings = replace(settings, zoo=replace(settings.zoo, train_limit=100, eval_limit=60))
    result = module_zoo.run(device="cpu", out=tmp_path / "out", settings=settings,
                            checkpoints=tmp_path / "zoo")
    runs = result.metrics["runs"]
    suite = hb.methods.available(variants=False)
    expected = {f"{net}/{m}" for net in ("lenet5", "mlp") for m in suite}
    assert set(runs) == expected - {"mlp/diversity"}
    assert result.metrics["skipped"] == ["mlp/diversity"]
    for key, r in runs.items():
        assert 0 <= r["accuracy"] <= 1 and r["nll"] > 0 and 0 <= r["fashion_roc"] <= 100, key
    assert runs["lenet5/map"]["parameters"] == 61_706
    assert runs["lenet5/metaprior"]["parameters"] == 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [row["method"] for row in saved["tables"][0]["rows"]] == suite
    assert (tmp_path / "out" / "module_zoo.png").stat().st_size > 0
    assert "Not run here" in (tmp_path / "out" / "report.md").read_text()
    # a second run reuses every trained model
    again = module_zoo.run(device="cpu", out=tmp_path / "out", settings=settings,
                           checkpoints=tmp_path / "zoo")
    assert all(r["reused"] for r in again.metrics["runs"].values())


def test_a_net_other_than_the_mlp_needs_a_tag(mnist):
    settings = zoo.ZooSettings.smoke()
    train, val, _ = zoo.mnist_splits(settings)
    with pytest.raises(ValueError, match="needs a tag"):
        zoo.train("map", settings, train, val, net=LeNet5())


def test_out_pointing_at_a_file_fails_before_training(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(ValueError, match="is a file"):
        module_zoo.run(out=path, quick=True)
