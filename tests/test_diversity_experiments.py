"""The diversity-hypernetwork experiments at tiny sizes: diversity-toy and diversity-mnist."""

import json
from dataclasses import replace

import pytest
import torch

from hyperbayes.cli import main
from hyperbayes.experiments import EXPERIMENTS, diversity_mnist, diversity_toy
from hyperbayes.inference import metrics
from hyperbayes.inference.estimators import entropy_kl


def test_experiments_are_registered_and_refuse_methods():
    assert EXPERIMENTS["diversity-toy"] is diversity_toy.run_toy
    assert EXPERIMENTS["diversity-mnist"] is diversity_mnist.run_mnist
    assert main(["run", "diversity-toy", "--methods", "map"]) == 2


def test_batched_curve_entropy_matches_entropy_kl_and_its_gradient():
    points = torch.randn(3, 50, 2, dtype=torch.double, requires_grad=True)
    batched = diversity_toy.batched_curve_entropy(points)
    single = torch.stack([entropy_kl(p, 1, 1) for p in points])
    assert torch.allclose(batched, single)
    (g_batched,) = torch.autograd.grad(batched.sum(), points)
    (g_single,) = torch.autograd.grad(single.sum(), points)
    assert torch.allclose(g_batched, g_single)


def test_toy_lambda_warmup_schedule():
    s = diversity_toy.ToySettings(steps=100, lam_start=0.02, hold_fraction=0.3, ramp_fraction=0.4)
    assert diversity_toy._toy_lambda(s, 100.0, True, 0) == pytest.approx(0.02)
    assert diversity_toy._toy_lambda(s, 100.0, True, 30) == pytest.approx(0.02)
    assert diversity_toy._toy_lambda(s, 100.0, True, 50) == pytest.approx((0.02 * 100.0) ** 0.5)
    assert diversity_toy._toy_lambda(s, 100.0, True, 70) == pytest.approx(100.0)
    assert diversity_toy._toy_lambda(s, 0.01, True, 0) == pytest.approx(0.01)  # never above λ
    assert diversity_toy._toy_lambda(s, 100.0, False, 0) == 100.0


def test_majority_vote_and_disagreement():
    votes = torch.tensor([[0, 1, 2], [0, 1, 3], [1, 2, 3]])
    assert metrics.majority_vote(votes, 4).tolist() == [0, 1, 3]
    tie = torch.tensor([[0], [1]])
    voted = metrics.majority_vote(tie, 2, tie_break=torch.tensor([[0.2, 0.8]]))
    assert voted.tolist() == [1]
    # pairs (0,1), (0,2), (1,2): column-wise disagreements 2/3, 2/3, 2/3
    assert metrics.disagreement(votes, 4) == pytest.approx(2 / 3)
    assert metrics.disagreement(torch.zeros(4, 5, dtype=torch.long)) == 0.0
    with pytest.raises(ValueError, match="class indices"):
        metrics.majority_vote(votes.float(), 4)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        metrics.majority_vote(votes, 3)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.disagreement(votes[:1], 4)


def test_diversity_toy_small_lambda_spreads_large_lambda_collapses(tmp_path):
    result = diversity_toy.run_toy(quick=True, out=tmp_path, device="cpu")
    by_lambda = result.metrics["by_lambda"]
    small, large = by_lambda["1"], by_lambda["1000"]
    for entry in (small, large):
        for key in ("peaks_visited", "mean_log_density", "entropy", "near_peak_fraction"):
            assert isinstance(entry[key], float), key
        assert len(entry["peaks_visited_per_seed"]) == 2
    # small λ: a longer curve through more peaks, more entropy, lower mean density
    assert small["peaks_visited"] > large["peaks_visited"]
    assert all(s > b for s, b in zip(small["entropy_per_seed"], large["entropy_per_seed"],
                                     strict=True))
    assert small["mean_log_density"] < large["mean_log_density"]
    assert small["curve_length"] > large["curve_length"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["num_peaks"] == 6 and len(saved["runs"]) == 4
    for figure in ("curves.png", "lambda.png"):
        assert (tmp_path / figure).stat().st_size > 5_000
    assert "peaks visited" in (tmp_path / "report.md").read_text()


TINY = replace(diversity_mnist.MnistSettings.quick(), num_samples=6, batch_size=16, steps=150,
               lr=2e-3,
               train_limit=600, eval_limit=200, val_limit=100, val_nets=4, test_nets=12,
               ensemble_sizes=(1, 3, 12), ensemble_size=3, ensembles_per_size=4,
               attack_images=24, attack_nets=3, attack_ensemble_size=3, attack_ensembles=2,
               path_points=3, checkpoint_every=75)


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core machine two threads made this test ~10× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_diversity_mnist_tiny_run_learns_samples_different_nets_and_resumes(mnist, tmp_path,
                                                                           one_thread):
    first = diversity_mnist.run_mnist(settings=TINY, data=mnist, out=tmp_path, device="cpu",
                                progress=False)
    m = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("median_sample_accuracy", "ensemble_accuracy", "test_accuracy", "test_nll",
                "disagreement", "ensembles", "pca", "paths", "attack"):
        assert m[key] is not None, key
    assert m["target_parameters"] == 20018
    assert len(m["sample_accuracies"]) == TINY.test_nets
    assert m["test_accuracy"] > 0.25             # well above chance (0.1) after 150 steps
    assert 0 < m["test_nll"] < 2.3               # better than uniform (log 10)
    assert m["pca"]["min_pairwise_distance"] > 0  # no two sampled nets coincide
    assert m["disagreement"] > 0                  # and they classify differently
    assert set(m["ensembles"]) == {"1", "3", "12"}
    assert len(m["attack"]["ensemble"]) == len(TINY.attack_eps)
    assert len(m["paths"]["interpolated"]["mean"]) == TINY.path_points
    assert [r["step"] for r in m["training"]["single_net_validation"]] == [75, 150]
    for figure in ("accuracy_histogram.png", "ensembles.png", "pca.png", "paths.png",
                   "attacks.png", "training.png"):
        assert (tmp_path / figure).stat().st_size > 5_000, figure
    assert "Targeted FGSM" in (tmp_path / "report.md").read_text()
    # a second run reuses the finished checkpoint: no training, the same nets and numbers
    again = diversity_mnist.run_mnist(settings=TINY, data=mnist, out=tmp_path, device="cpu",
                                progress=False)
    assert again.metrics["training"]["resumed_from"] == TINY.steps
    assert again.metrics["sample_accuracies"] == first.metrics["sample_accuracies"]
    assert len(again.metrics["training"]["single_net_validation"]) == 2
