"""The vectorized NUTS sampler, complete ArviZ data and the trust warnings, on known answers."""

import math
import warnings

import numpy as np
import pyro
import pytest
import torch

import hyperbayes as hb
from hyperbayes.inference import diagnostics, hmc, trust
from hyperbayes.inference.mcmc import NutsResult, compile_value_and_grad, potential_energy
from hyperbayes.models import conjugate_regression


def _gaussian_potential(mean, cov):
    precision = torch.linalg.inv(cov)

    def potential(z):
        d = z - mean
        return 0.5 * ((d @ precision) * d).sum(-1)

    return potential


def test_warmup_windows_follow_stan():
    # Stan's defaults for 1,000 warm-up iterations: 75 + 25, 50, 100, 200, 500 (to 950)
    assert hmc.warmup_windows(1000) == [99, 149, 249, 449, 949]
    # short warm-ups: 15% / 75% / 10%
    assert hmc.warmup_windows(100) == [89]
    assert hmc.warmup_windows(10) == []


def test_tree_checkpoints_check_every_aligned_subtree():
    """At each odd leaf the checkpoints close exactly the aligned blocks of 2, 4, … leaves
    ending there, and each block's first leaf was stored in the slot that is read."""
    leaves = 64
    stored = {}
    for n in range(leaves):
        lo, hi = hmc._checkpoints(n)
        if n % 2 == 0:
            stored[hi] = n
            continue
        checked = {stored[i] for i in range(lo, hi + 1)}
        expected = {n + 1 - size for size in (2 ** k for k in range(1, 7))
                    if (n + 1) % size == 0}
        assert checked == expected, n


def test_a_u_turn_across_the_halves_of_a_tree_stops_it():
    """Stan's extra checks: on a 100-d standard normal at step sizes where the halves of a tree
    each pass the no-U-turn criterion but their join turns, the trajectory used to run to the
    maximum depth (1,023 leapfrog steps every transition); it now stops within a few."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        chains, dim = 3, 100
        sampler = hmc._Sampler(lambda z: 0.5 * (z ** 2).sum(-1), torch.Generator().manual_seed(1),
                               10, 1000.0)
        sampler.inv_mass = torch.ones(chains, dim)
        z = torch.randn(chains, dim, generator=torch.Generator().manual_seed(0))
        u, grad = sampler.value_and_grad(z)
        point = torch.stack((z, torch.zeros_like(z), grad), 1)
        step_size = torch.tensor([0.392, 0.771, 1.449])
        steps = []
        for _ in range(5):
            point, u, stats = sampler.transition(point, u, step_size)
            steps.append(stats["n_steps"])
            # treedepth as Stan counts it: the subtrees merged, not the one that turned
            assert (stats["tree_depth"] < 10).all()
        assert torch.stack(steps).max() < 1023
    finally:
        torch.set_default_dtype(dtype)


def test_sample_nuts_recovers_a_correlated_gaussian():
    torch.manual_seed(0)
    a = torch.randn(5, 5, dtype=torch.float64)
    cov = a @ a.T + 0.2 * torch.eye(5, dtype=torch.float64)
    mean = torch.linspace(-2, 2, 5, dtype=torch.float64)
    out = hmc.sample_nuts(_gaussian_potential(mean, cov), torch.zeros(4, 5, dtype=torch.float64),
                          num_samples=600, warmup=400, seed=1)
    assert out.z.shape == (4, 600, 5)
    draws = out.z.reshape(-1, 5)
    ess = np.array([float(diagnostics.az.ess(out.z[..., k].numpy(), method="bulk"))
                    for k in range(5)])
    mcse = cov.diagonal().sqrt() / torch.from_numpy(ess).sqrt()
    assert ((draws.mean(0) - mean).abs() < 4 * mcse).all()
    assert torch.allclose(torch.cov(draws.T), cov, rtol=0.2, atol=0.15 * float(cov.max()))
    assert set(out.stats) == set(hmc.STAT_NAMES)
    assert not out.stats["diverging"].any()
    assert 0.7 < float(out.stats["acceptance_rate"].mean()) < 0.99
    # the adapted inverse mass approximates the marginal variances
    assert torch.allclose(out.inverse_mass.mean(0), cov.diagonal(), rtol=0.5)


def test_compiled_value_and_grad_equals_autograd():
    problem = conjugate_regression()
    with pyro.validation_enabled(False):  # as nuts() traces it: no support checks in the graph
        _, potential = potential_energy(problem.model, problem.x, problem.y)
        traced = compile_value_and_grad(potential, (3, 4), "cpu")
    assert traced is not None
    z = torch.randn(3, 4)
    for a, b in zip(traced(z), hmc.potential_and_grad(potential, z), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_nuts_matches_the_closed_form_posterior_within_monte_carlo_error():
    problem = conjugate_regression()  # 4 parameters, 40 points, known noise
    result = hb.inference.nuts(problem.model, problem.data, num_samples=500, warmup=500,
                               num_chains=4, seed=2)
    assert result.backend == "vectorized" and not result.warnings
    flat = problem.flatten(result.samples)
    chains = flat.reshape(4, 500, -1).numpy()
    ess = np.array([float(diagnostics.az.ess(chains[..., k], method="bulk"))
                    for k in range(flat.shape[1])])
    mcse = problem.cov.diagonal().sqrt() / torch.from_numpy(ess).sqrt()
    assert ((flat.mean(0) - problem.mean).abs() < 4 * mcse).all()
    # the covariance's Monte Carlo error: sd(σ̂²) ≈ σ²·√(2 / ESS)
    tolerance = 4 * problem.cov.diagonal() * math.sqrt(2 / ess.min())
    assert ((torch.cov(flat.T).diagonal() - problem.cov.diagonal()).abs() < tolerance).all()
    assert result.divergences == [0, 0, 0, 0]
    assert result.sample_stats["energy"].shape == (4, 500)


def test_pyro_backend_samples_the_same_posterior():
    problem = conjugate_regression()
    result = hb.inference.nuts(problem.model, problem.data, num_samples=300, warmup=200,
                               num_chains=1, backend="pyro", warn=False)
    flat = problem.flatten(result.samples)
    assert result.backend == "pyro" and set(result.sample_stats) == {"diverging"}
    assert ((flat.mean(0) - problem.mean).abs() < 5 * problem.cov.diagonal().sqrt()
            / math.sqrt(50)).all()


def test_nuts_rejects_bad_settings():
    problem = conjugate_regression()
    for kwargs, match in (({"backend": "stan"}, "unknown backend"),
                          ({"target_accept": 1.2}, "target_accept"),
                          ({"max_tree_depth": 0}, "max_tree_depth")):
        with pytest.raises(ValueError, match=match):
            hb.inference.nuts(problem.model, problem.data, num_samples=5, warmup=5, **kwargs)


def test_inference_data_is_complete_for_nuts_and_guides():
    problem = conjugate_regression(d=2)
    result = hb.inference.nuts(problem.model, problem.data, num_samples=200, warmup=200,
                               num_chains=2, seed=0, warn=False)
    idata = diagnostics.nuts_inference_data(result, model=problem.model, prior_samples=50)
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive",
                  "observed_data", "constant_data", "prior", "prior_predictive"):
        assert group in idata.groups(), group
    assert idata.posterior["fc0.weight"].dims == ("chain", "draw", "fc0_out", "fc0_in")
    assert idata.posterior["fc0.bias"].dims == ("chain", "draw", "fc0_out")
    assert idata.log_likelihood["y"].shape == (2, 200, 40)
    assert idata.posterior_predictive["y"].shape == (2, 200, 40)
    for stat in ("energy", "diverging", "tree_depth", "step_size", "acceptance_rate", "lp"):
        assert stat in idata.sample_stats, stat
    # the log likelihood is the model's: Gaussian with the known noise, per observation
    w = problem.flatten(result.samples)[:1]
    design = torch.cat([problem.x, torch.ones(40, 1)], 1).double()
    expected = torch.distributions.Normal(design @ w[0], 0.5).log_prob(problem.y[:, 0].double())
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0, 0], expected.numpy(),
                               rtol=1e-4, atol=1e-4)

    guide = hb.guides.MeanField(problem.model)
    hb.inference.fit(problem.model, guide, problem.data, steps=600, lr=0.05, seed=0)
    gdata = diagnostics.guide_inference_data(problem.model, guide, num_samples=200,
                                             data=problem.data)
    assert {"posterior", "log_likelihood", "posterior_predictive",
            "observed_data"} <= set(gdata.groups())
    # what the user could not do: LOO, compare, BFMI, energy and PPC plots
    loo = diagnostics.loo(idata)
    assert np.isfinite(loo.elpd_loo)
    ranking = diagnostics.compare_loo({"nuts": idata, "meanfield": gdata})
    assert set(ranking.index) == {"nuts", "meanfield"}
    assert np.all(diagnostics.az.bfmi(idata) > 0.3)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # ArviZ 0.23's own use of a deprecated matplotlib call
        warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
        diagnostics.az.plot_energy(idata)
        diagnostics.az.plot_ppc(idata, num_pp_samples=20)
        diagnostics.az.plot_ppc(gdata, num_pp_samples=20)
    plt.close("all")
    assert np.isfinite(diagnostics.az.waic(gdata).elpd_waic)


def test_a_bad_sampler_setting_warns():
    problem = conjugate_regression()
    # one leapfrog step per draw and almost no warm-up: chains barely move from their starts
    with pytest.warns(trust.PosteriorWarning) as caught:
        result = hb.inference.nuts(problem.model, problem.data, num_samples=40, warmup=5,
                                   num_chains=4, max_tree_depth=1, seed=0)
    text = " ".join(str(w.message) for w in caught)
    assert "R-hat" in text and "bulk ESS" in text
    assert result.warnings and all(m in text for m in result.warnings)


def test_divergences_warn():
    # Neal's funnel-like horseshoe on a tiny net, hardly any warm-up and a large target step
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 12).unsqueeze(-1)
    y = torch.sin(3 * x)
    model = hb.models.BNN(hb.models.MLP([1, 6, 1]), hb.models.priors.Horseshoe(),
                          hb.models.Gaussian(0.1))
    with pytest.warns(trust.PosteriorWarning) as caught:
        result = hb.inference.nuts(model, (x, y), num_samples=60, warmup=20, num_chains=2,
                                   target_accept=0.3, seed=0)
    assert sum(result.divergences) > 0
    assert any("diverged" in str(w.message) for w in caught)


def test_low_bfmi_warns():
    """E-BFMI under 0.3 (energies that move slowly between draws) is reported."""
    torch.manual_seed(0)
    steps = torch.randn(2, 300).cumsum(1) * 0.05 + torch.randn(2, 300) * 0.01  # a random walk
    samples = {"w": torch.randn(2, 300)}
    result = NutsResult(samples, [[], []], 10, 1.0, [0.1, 0.1],
                        {"energy": steps, "diverging": torch.zeros(2, 300, dtype=torch.bool)})
    messages = diagnostics.nuts_warnings(None, result)
    assert any("E-BFMI" in m for m in messages)


def test_loss_trend_check():
    g = torch.Generator().manual_seed(0)
    flat = (100 + torch.randn(500, generator=g)).tolist()
    assert trust.loss_trend_problem(flat) is None
    falling = (torch.linspace(200, 100, 500) + torch.randn(500, generator=g)).tolist()
    assert trust.loss_trend_problem(falling) is None
    rising = flat[:400] + (torch.linspace(100, 110, 100)
                           + torch.randn(100, generator=g)).tolist()
    assert "rose" in trust.loss_trend_problem(rising)
    assert trust.loss_trend_problem(rising[-20:]) is None  # too short to judge


def test_fit_warns_when_the_loss_rises():
    problem = conjugate_regression()
    guide = hb.guides.MeanField(problem.model)
    # the KL weight jumps tenfold for the last 10% of the steps: the reported loss rises
    with pytest.warns(trust.PosteriorWarning, match="loss rose"):
        result = hb.inference.fit(problem.model, guide, problem.data, steps=400, lr=0.05,
                                  kl_schedule=lambda step: 1.0 if step < 360 else 10.0, seed=0)
    assert any("loss rose" in w for w in result.warnings)
    guide = hb.guides.MeanField(problem.model)  # the same fit without the jump: no warning
    result = hb.inference.fit(problem.model, guide, problem.data, steps=400, lr=0.05, seed=0)
    assert result.warnings == []


def test_spread_collapse_check():
    before = {"w": torch.full((10,), 0.5), "point": torch.zeros(4)}
    assert trust.spread_collapse_problem(before, {"w": torch.full((10,), 0.4),
                                                  "point": torch.zeros(4)}) is None
    collapsed = {"w": torch.cat([torch.full((8,), 1e-6), torch.full((2,), 0.5)]),
                 "point": torch.zeros(4)}
    assert "collapsed" in trust.spread_collapse_problem(before, collapsed)


@pytest.mark.slow
def test_diagnose_writes_one_page(tmp_path):
    from hyperbayes import cli

    out = tmp_path / "diag"
    (tmp_path / "file").write_text("x")
    assert cli.main(["diagnose", "--out", str(tmp_path / "file"), "--quick"]) == 2  # refused
    from hyperbayes.inference.diagnose import diagnose_toy

    # fit and NUTS problems are written on the page, not raised
    result = diagnose_toy("meanfield", "cubic", steps=300, nuts_draws=60, out=out, device="cpu")
    for name in ("report.md", "diagnostics.json", "energy.png", "rank.png", "ppc_nuts.png",
                 "ppc_meanfield.png"):
        assert (out / name).exists(), name
    assert result["vi_quality"]["iwae"] >= result["vi_quality"]["elbo"] - 1e-6
    assert {r["method"] for r in result["loo_ranking"]} == {"meanfield", "nuts"}
    assert result["function_space"]["std_ratio_in_data"] > 0
    text = (out / "report.md").read_text()
    assert "PSIS-LOO" in text and "NUTS reference" in text

