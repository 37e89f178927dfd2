"""Tests for hyperbayes.inference.metrics: exact known answers, hand computations, input errors."""

import math

import numpy as np
import pytest
import torch

from hyperbayes.inference import metrics as M


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _random_probs(s=5, n=7, c=4, dtype=torch.float64):
    return torch.softmax(torch.randn(s, n, c, dtype=dtype), dim=-1)


# ------------------------------------------------------------------------------------------------
# Classification: exact answers
# ------------------------------------------------------------------------------------------------


def test_perfect_onehot_predictions():
    y = torch.tensor([0, 2, 1, 2, 0])
    probs = torch.nn.functional.one_hot(y, 3).double().expand(4, -1, -1)
    assert M.accuracy(probs, y) == 1.0
    assert M.nll(probs, y) == pytest.approx(0.0, abs=1e-12)
    assert M.brier(probs, y) == 0.0
    assert M.ece(probs, y) == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(M.predictive_entropy(probs), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(M.bald(probs), torch.zeros(5, dtype=torch.float64))
    rep = M.classification_report(probs, y)
    assert set(rep) == {"accuracy", "nll", "ece", "brier", "mean_predictive_entropy"}
    assert rep["accuracy"] == 1.0 and rep["brier"] == 0.0
    assert rep["mean_predictive_entropy"] == pytest.approx(0.0, abs=1e-12)
    assert all(isinstance(v, float) for v in rep.values())


@pytest.mark.parametrize("c", [2, 3, 10])
def test_uniform_probs(c):
    probs = torch.full((3, 6, c), 1.0 / c)
    torch.testing.assert_close(M.predictive_entropy(probs), torch.full((6,), math.log(c)))
    torch.testing.assert_close(M.bald(probs), torch.zeros(6))
    torch.testing.assert_close(M.mean_std(probs), torch.zeros(6))
    torch.testing.assert_close(M.max_probability(probs), torch.full((6,), 1.0 / c))
    torch.testing.assert_close(M.variation_ratio(probs), torch.full((6,), 1.0 - 1.0 / c))
    y = torch.zeros(6, dtype=torch.long)
    assert M.nll(probs, y) == pytest.approx(math.log(c), rel=1e-6)
    assert M.brier(probs, y) == pytest.approx((1 - 1 / c) ** 2 + (c - 1) / c**2, rel=1e-6)


def test_bald_zero_when_all_samples_equal():
    p = torch.softmax(torch.randn(1, 8, 5, dtype=torch.float64), dim=-1).expand(6, -1, -1)
    torch.testing.assert_close(M.bald(p), torch.zeros(8, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(M.mean_std(p), torch.zeros(8, dtype=torch.float64))


def test_bald_opposite_confident_samples_is_log2():
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (S=2, N=1, C=2)
    torch.testing.assert_close(M.bald(probs), torch.tensor([math.log(2)]))
    torch.testing.assert_close(M.predictive_entropy(probs), torch.tensor([math.log(2)]))
    torch.testing.assert_close(M.mean_std(probs), torch.tensor([0.5]))  # population std
    torch.testing.assert_close(M.predictive_probs(probs), torch.tensor([[0.5, 0.5]]))


def test_bald_matches_definition_and_bounds():
    probs = _random_probs(s=9, n=11, c=6)
    pbar = probs.mean(0)
    h = lambda p: -(p * p.log()).sum(-1)  # noqa: E731
    expected = h(pbar) - h(probs).mean(0)
    torch.testing.assert_close(M.bald(probs), expected)
    assert bool((M.bald(probs) <= M.predictive_entropy(probs) + 1e-12).all())
    assert bool((M.predictive_entropy(probs) <= math.log(6) + 1e-12).all())


def test_nll_is_log_of_mean_and_jensen():
    probs = _random_probs(s=8, n=20, c=3)
    y = torch.randint(0, 3, (20,))
    expected = -probs.mean(0)[torch.arange(20), y].log().mean().item()
    assert M.nll(probs, y) == pytest.approx(expected, rel=1e-12)
    mean_of_nll = np.mean([M.nll(probs[s : s + 1], y) for s in range(8)])
    assert M.nll(probs, y) < mean_of_nll  # strict Jensen: samples disagree


def test_nll_eps_clamps_zero_probability():
    probs = torch.tensor([[[1.0, 0.0]]])
    assert M.nll(probs, torch.tensor([1])) == pytest.approx(-math.log(1e-12))
    assert M.nll(probs, torch.tensor([1]), eps=1e-3) == pytest.approx(-math.log(1e-3))
    # half-precision probabilities: the clamp is applied in float64, where 1e-12 exists
    assert M.nll(probs.half(), torch.tensor([1])) == pytest.approx(-math.log(1e-12))


def test_accuracy_and_brier_use_predictive_mean():
    # Sample 1 says class 0, sample 2 says class 1 more strongly: the mean picks class 1.
    probs = torch.tensor([[[0.6, 0.4]], [[0.0, 1.0]]], dtype=torch.float64)
    y = torch.tensor([1])
    assert M.accuracy(probs, y) == 1.0
    assert M.brier(probs, y) == pytest.approx(0.3**2 + 0.3**2)


def test_ece_hand_computed():
    # Predictive means (C=2); confidence, correctness and 5-bin membership ((lo, hi] bins):
    # n0 (.95,.05) y=0: conf .95 correct, bin 4
    # n1 (.85,.15) y=1: conf .85 wrong,   bin 4
    # n2 (.35,.65) y=1: conf .65 correct, bin 3
    # n3 (.55,.45) y=1: conf .55 wrong,   bin 2
    # n4 (.25,.75) y=0: conf .75 wrong,   bin 3
    # ECE = 2/5*|.5-.9| + 2/5*|.5-.7| + 1/5*|0-.55| = .16 + .08 + .11 = .35
    pbar = torch.tensor(
        [[0.95, 0.05], [0.85, 0.15], [0.35, 0.65], [0.55, 0.45], [0.25, 0.75]],
        dtype=torch.float64,
    )
    delta = torch.tensor([0.04, -0.04], dtype=torch.float64)
    probs = torch.stack([pbar + delta, pbar - delta])  # S=2, mean is pbar
    y = torch.tensor([0, 1, 1, 1, 0])
    assert M.ece(probs, y, num_bins=5) == pytest.approx(0.35, abs=1e-12)
    assert M.ece(probs, y, num_bins=1) == pytest.approx(abs(0.4 - 0.75), abs=1e-12)

    bins = M.reliability_bins(probs, y, num_bins=5)
    assert set(bins) == {"bin_edges", "bin_centers", "accuracy", "confidence", "counts"}
    np.testing.assert_array_equal(bins["counts"], [0, 0, 1, 2, 2])
    np.testing.assert_allclose(bins["bin_centers"], [0.1, 0.3, 0.5, 0.7, 0.9])
    np.testing.assert_allclose(bins["bin_edges"], np.linspace(0, 1, 6))
    np.testing.assert_allclose(bins["accuracy"][2:], [0.0, 0.5, 0.5])
    np.testing.assert_allclose(bins["confidence"][2:], [0.55, 0.7, 0.9])
    assert np.isnan(bins["accuracy"][:2]).all() and np.isnan(bins["confidence"][:2]).all()


def test_ece_bounds_random():
    probs = _random_probs(s=3, n=200, c=5)
    y = torch.randint(0, 5, (200,))
    e = M.ece(probs, y)
    assert 0.0 <= e <= 1.0
    assert M.reliability_bins(probs, y)["counts"].sum() == 200


def test_numpy_inputs_and_float_outputs():
    probs = _random_probs()
    y = torch.randint(0, 4, (7,))
    assert M.accuracy(probs.numpy(), y.numpy()) == M.accuracy(probs, y)
    assert M.nll(probs.numpy(), y.numpy().tolist()) == pytest.approx(M.nll(probs, y))
    readonly = probs.numpy().copy()
    readonly.flags.writeable = False
    assert isinstance(M.brier(readonly, y.numpy()), float)
    assert isinstance(M.predictive_entropy(probs.numpy()), torch.Tensor)
    assert M.predictive_entropy(probs.numpy()).shape == (7,)


def test_float32_softmax_accepted():
    probs = torch.softmax(torch.randn(30, 50, 10) * 5, dim=-1)
    y = torch.randint(0, 10, (50,))
    rep = M.classification_report(probs, y)
    assert 0.0 <= rep["accuracy"] <= 1.0 and rep["nll"] > 0


# ------------------------------------------------------------------------------------------------
# OOD detection
# ------------------------------------------------------------------------------------------------


def test_ood_auc_perfect_separation():
    res = M.ood_auc(torch.linspace(0, 1, 50), torch.linspace(2, 3, 30))
    assert set(res) == {"roc_auc", "pr_auc_in", "pr_auc_out"}
    assert all(isinstance(v, float) for v in res.values())
    assert res == pytest.approx({"roc_auc": 1.0, "pr_auc_in": 1.0, "pr_auc_out": 1.0}, abs=1e-12)
    rev = M.ood_auc(torch.linspace(2, 3, 50), torch.linspace(0, 1, 30))
    assert rev["roc_auc"] == 0.0


def test_ood_auc_identical_distributions():
    g = np.random.default_rng(0)
    res = M.ood_auc(g.normal(size=20000), g.normal(size=20000))
    assert res["roc_auc"] == pytest.approx(0.5, abs=0.01)
    assert res["pr_auc_in"] == pytest.approx(0.5, abs=0.01)
    assert res["pr_auc_out"] == pytest.approx(0.5, abs=0.01)


def test_ood_auc_pr_positive_class_conventions():
    # Base rates differ: with uninformative (constant) scores, AP equals the positive fraction.
    res = M.ood_auc(np.zeros(90), np.zeros(10))
    assert res["roc_auc"] == 0.5
    assert res["pr_auc_in"] == pytest.approx(0.9)
    assert res["pr_auc_out"] == pytest.approx(0.1)


@pytest.mark.parametrize("score", M.OOD_SCORES)
def test_ood_scores_confident_in_vs_uncertain_out(score):
    y = torch.randint(0, 4, (40,))
    confident = 0.96 * torch.nn.functional.one_hot(y, 4).double() + 0.01
    in_probs = confident.expand(6, -1, -1)
    # OOD: each sample confident in a random class -> disagreement, high entropy/BALD/std.
    out_probs = 0.96 * torch.nn.functional.one_hot(torch.randint(0, 4, (6, 30)), 4).double() + 0.01
    s_in, s_out = M.ood_scores(in_probs, out_probs, score=score)
    assert s_in.shape == (40,) and s_out.shape == (30,)
    assert M.ood_auc(s_in, s_out)["roc_auc"] > 0.95
    if score == "max_prob":
        torch.testing.assert_close(s_in, 1 - M.max_probability(in_probs))


# ------------------------------------------------------------------------------------------------
# Regression
# ------------------------------------------------------------------------------------------------


def test_gaussian_log_likelihood_single_sample_equals_normal_log_prob():
    f = torch.randn(1, 25, dtype=torch.float64)
    y = torch.randn(25, dtype=torch.float64)
    expected = torch.distributions.Normal(f[0], 0.3).log_prob(y).mean().item()
    assert M.gaussian_log_likelihood(f, y, 0.3) == pytest.approx(expected, rel=1e-12)
    assert M.gaussian_log_likelihood(f[..., None], y[:, None], 0.3) == pytest.approx(expected)


def test_gaussian_log_likelihood_logmeanexp():
    s, n = 12, 30
    f = torch.randn(s, n, dtype=torch.float64)
    y = torch.randn(n, dtype=torch.float64)
    sigma = 0.2 + torch.rand(s, n, dtype=torch.float64)
    dens = torch.exp(-0.5 * ((y - f) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    expected = dens.mean(0).log().mean().item()
    assert M.gaussian_log_likelihood(f, y, sigma) == pytest.approx(expected, rel=1e-10)
    # Far-away targets: naive density underflows, logsumexp stays finite.
    assert math.isfinite(M.gaussian_log_likelihood(f, y + 1e3, 0.01))


def test_gaussian_log_likelihood_noise_broadcasting():
    f = torch.randn(4, 10, dtype=torch.float64)
    y = torch.randn(10, dtype=torch.float64)
    scalar = M.gaussian_log_likelihood(f, y, 0.5)
    assert M.gaussian_log_likelihood(f, y, torch.tensor(0.5)) == pytest.approx(scalar)
    assert M.gaussian_log_likelihood(f, y, torch.full((1, 10), 0.5)) == pytest.approx(scalar)
    assert M.gaussian_log_likelihood(f, y, torch.full((4,), 0.5)) == pytest.approx(scalar)
    assert M.gaussian_log_likelihood(f, y, torch.full((4, 1), 0.5)) == pytest.approx(scalar)
    f3 = f[..., None]
    assert M.gaussian_log_likelihood(f3, y, torch.full((4, 10, 1), 0.5)) == pytest.approx(scalar)


def test_rmse_and_predictive_mean_std():
    f = torch.tensor([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    # mean = (2, 2, 0); errors (0, 2, -1)
    assert M.rmse(f, y) == pytest.approx(math.sqrt(5 / 3))
    mean, std = M.predictive_mean_std(f)
    torch.testing.assert_close(mean, torch.tensor([2.0, 2.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(std, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    _, std_n = M.predictive_mean_std(f[..., None], noise_std=0.5)
    torch.testing.assert_close(
        std_n, torch.tensor([math.sqrt(1.25), 0.5, 0.5], dtype=torch.float64)
    )
    rep = M.regression_report(f, y, 0.5)
    assert set(rep) == {"rmse", "test_log_likelihood"}
    assert rep["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert rep["test_log_likelihood"] == M.gaussian_log_likelihood(f, y, 0.5)


def test_a_1d_noise_std_is_one_per_sample_even_when_s_equals_n():
    """Prediction.noise_std holds one σ per sample (S,): read that way when S = N too, where
    broadcasting (S,) against (S, N) would silently pair σ_s with example s."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(3, 3, generator=g, dtype=torch.float64)
    y = torch.randn(3, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    per_sample = sum(torch.distributions.Normal(f[s], sigma[s]).log_prob(y).exp()
                     for s in range(3)) / 3
    assert M.gaussian_log_likelihood(f, y, sigma) == pytest.approx(per_sample.log().mean().item())
    assert M.gaussian_log_likelihood(f, y, sigma) == M.gaussian_log_likelihood(f, y, sigma[:, None])
    _, std = M.predictive_mean_std(f[..., None], noise_std=sigma)
    torch.testing.assert_close(std, (f.var(0, correction=0) + sigma.pow(2).mean()).sqrt())
    per_example = M.gaussian_log_likelihood(f, y, sigma[None, :])  # (1, N): one per example
    assert per_example != M.gaussian_log_likelihood(f, y, sigma)


def test_predictive_std_matches_mixture_variance_by_sampling():
    f = torch.randn(3, 2, dtype=torch.float64)
    _, std = M.predictive_mean_std(f, noise_std=0.7)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 3, (200000,), generator=g)
    draws = f[idx] + 0.7 * torch.randn(200000, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(std, draws.std(0), rtol=1e-2, atol=0)


# ------------------------------------------------------------------------------------------------
# Input validation
# ------------------------------------------------------------------------------------------------


def test_probs_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(S, N, C\).*probs\[None\]"):
        M.accuracy(torch.full((4, 3), 1 / 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(S, N, C\)"):
        M.predictive_entropy(torch.full((1, 2, 4, 3), 1 / 3))
    with pytest.raises(ValueError, match="non-empty"):
        M.bald(torch.empty(0, 3, 2))


def test_probs_nan_and_not_normalized():
    p = torch.full((2, 3, 2), 0.5)
    p[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        M.nll(p, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="sum to 1"):
        M.brier(torch.full((2, 3, 2), 0.4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.mean_std(torch.tensor([[[1.5, -0.5]]]))


def test_label_errors():
    p = torch.full((2, 3, 4), 0.25)
    with pytest.raises(ValueError, match="length mismatch"):
        M.accuracy(p, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        M.nll(p, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="out of range"):
        M.ece(p, torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match=r"y must have shape \(N,\)"):
        M.brier(p, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="non-integral"):
        M.accuracy(p, torch.tensor([0.0, 1.5, 2.0]))
    assert M.accuracy(p, np.array([0.0, 1.0, 2.0])) == 1 / 3  # integral floats accepted


def test_ece_num_bins_validation():
    p = torch.full((1, 3, 2), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="num_bins"):
            M.ece(p, y, num_bins=bad)


def test_ood_errors():
    p = torch.full((2, 3, 4), 0.25)
    with pytest.raises(ValueError, match="unknown score"):
        M.ood_scores(p, p, score="energy")
    with pytest.raises(ValueError, match="class count mismatch"):
        M.ood_scores(p, torch.full((2, 3, 5), 0.2))
    with pytest.raises(ValueError, match="out_probs must have shape"):
        M.ood_scores(p, torch.full((3, 5), 0.2))
    with pytest.raises(ValueError, match="in_scores contains non-finite"):
        M.ood_auc(torch.tensor([0.1, float("nan")]), torch.tensor([0.3]))
    with pytest.raises(ValueError, match=r"out_scores must have shape \(N,\)"):
        M.ood_auc(torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="out_scores must be non-empty"):
        M.ood_auc(torch.zeros(3), torch.zeros(0))


def test_regression_errors():
    f = torch.randn(4, 10)
    y = torch.randn(10)
    with pytest.raises(ValueError, match=r"f must have shape \(S, N\) or \(S, N, 1\)"):
        M.rmse(torch.randn(10), y)
    with pytest.raises(ValueError, match=r"f must have shape"):
        M.rmse(torch.randn(4, 10, 2), y)
    with pytest.raises(ValueError, match="length mismatch"):
        M.rmse(f, torch.randn(9))
    with pytest.raises(ValueError, match="f contains non-finite"):
        M.gaussian_log_likelihood(torch.full((4, 10), float("nan")), y, 1.0)
    with pytest.raises(ValueError, match="y contains non-finite"):
        M.gaussian_log_likelihood(f, torch.full((10,), float("inf")), 1.0)
    with pytest.raises(ValueError, match="noise_std must be > 0"):
        M.gaussian_log_likelihood(f, y, 0.0)
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        M.predictive_mean_std(f, noise_std=-1.0)
    with pytest.raises(ValueError, match=r"one σ per sample \(S = 4\).*got 3$"):
        M.gaussian_log_likelihood(f, y, torch.ones(3))
    with pytest.raises(ValueError, match=r"got 10: for one σ per example pass shape \(1, N\)"):
        M.gaussian_log_likelihood(f, y, torch.ones(10))
    with pytest.raises(ValueError, match="not broadcastable"):
        M.predictive_mean_std(f, noise_std=torch.ones(2, 4, 10))
