"""NUTS reference, ArviZ diagnostics and VI-versus-NUTS comparison, checked on known answers."""

import math

import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal

import hyperbayes as hb
from hyperbayes.inference.compare import compare, in_range_mask, wasserstein1
from hyperbayes.inference.diagnostics import (
    function_space_diagnostics,
    guide_inference_data,
    nuts_inference_data,
    weight_diagnostics,
)
from hyperbayes.inference.mcmc import nuts, potential_energy
from hyperbayes.inference.predict import Prediction
from hyperbayes.models import (
    BNN,
    MLP,
    ConjugateRegression,
    Gaussian,
    conjugate_regression,
    priors,
)
from tests.common import assert_close


def _linear_regression(n=40, d=2, noise=0.5, prior_scale=1.0, seed=0):
    """Conjugate Bayesian linear regression y = x·w + b + ε with its closed-form posterior."""
    p = conjugate_regression(n, d, noise=noise, prior_scale=prior_scale, seed=seed)
    return p.model, p.data, p.mean, p.cov


_stack = ConjugateRegression.flatten


def test_potential_energy_matches_pyro_log_joint():
    model, (x, y), _, _ = _linear_regression()
    sites, potential = potential_energy(model, x, y)
    z = torch.randn(sum(s.numel for s in sites))
    params = dict(zip([s.name for s in sites], torch.split(z, [s.numel for s in sites]),
                      strict=True))
    params = {s.name: params[s.name].reshape(s.shape) for s in sites}
    import pyro.poutine as poutine

    trace = poutine.trace(poutine.condition(model, data=params)).get_trace(x, y)
    assert_close(-potential(z), trace.log_prob_sum(), atol=1e-3)


def test_nuts_recovers_conjugate_posterior():
    model, data, mean, cov = _linear_regression()
    result = nuts(model, data, num_samples=400, warmup=300, num_chains=2, seed=1)
    draws = _stack(result.samples)
    assert draws.shape == (800, 3)
    assert_close(draws.mean(0), mean, atol=0.05, rtol=0)
    assert_close(torch.cov(draws.T), cov, atol=0.01, rtol=0.25)
    diag = weight_diagnostics(result)
    assert diag["max_rhat_weights"] < 1.05
    assert diag["divergences"] == 0


def test_full_covariance_guide_recovers_conjugate_posterior():
    model, (x, y), mean, cov = _linear_regression()
    guide = AutoMultivariateNormal(model)
    loss = Trace_ELBO(num_particles=32, vectorize_particles=True, max_plate_nesting=1)
    hb.inference.fit(model, guide, (x, y), steps=1000, lr=0.03, loss=loss, lr_schedule="cosine",
                     seed=0)
    draws = _stack(hb.inference.sample_posterior(model, guide, 40_000))
    assert_close(draws.mean(0), mean, atol=0.02, rtol=0)
    assert_close(torch.cov(draws.T), cov, atol=0.002, rtol=0.15)


def _gaussian_kl(mean1, cov1, mean0, cov0):
    """KL(N(mean1, cov1) ‖ N(mean0, cov0)) in nats."""
    precision, diff = torch.linalg.inv(cov0), mean0 - mean1
    return 0.5 * (torch.trace(precision @ cov1) + diff @ precision @ diff - len(mean0)
                  + torch.logdet(cov0) - torch.logdet(cov1))


def test_flow_guide_over_all_weights_recovers_the_correlated_posterior():
    """An IAF over the 4 weights matches the closed-form mean and covariance (correlations up to
    ±0.38); the same guide without flow layers (mean field) cannot, which shows the check bites."""
    problem = conjugate_regression()
    kls = {}
    for num_flows in (2, 0):
        guide = hb.guides.FlowGuide(problem.model, flow="iaf", num_flows=num_flows, hidden=16,
                                    over="weights", init_scale=0.1)
        hb.inference.fit(problem.model, guide, problem.data, steps=1000, lr=0.01,
                         lr_schedule="cosine", seed=0)
        draws = problem.flatten(hb.inference.sample_posterior(problem.model, guide, 20_000))
        kls[num_flows] = _gaussian_kl(draws.mean(0), torch.cov(draws.T), problem.mean,
                                      problem.cov).item()
    assert kls[2] < 0.06, kls
    assert kls[0] > 0.12, kls


def test_nuts_handles_a_learned_noise_scale():
    torch.manual_seed(0)
    x = torch.randn(60, 1)
    y = 2 * x + 0.4 * torch.randn(60, 1)
    model = BNN(MLP([1, 1]), priors.Normal(3.0), Gaussian(scale=None,
                                                           scale_prior=dist.LogNormal(0., 1.)))
    result = nuts(model, (x, y), num_samples=200, warmup=200, num_chains=1, warn=False)
    sigma = result.samples["noise_scale"]
    assert (sigma > 0).all()
    assert 0.3 < float(sigma.mean()) < 0.55


def test_nuts_rejects_dropout_nets():
    model = BNN(MLP([1, 5, 1], dropout=0.2), priors.Normal(1.0), Gaussian(1.0))
    with pytest.raises(ValueError, match="deterministic net"):
        nuts(model, (torch.zeros(3, 1), torch.zeros(3, 1)), num_samples=2, warmup=2)


def test_function_space_diagnostics_and_inference_data():
    model, data, _, _ = _linear_regression()
    result = nuts(model, data, num_samples=100, warmup=100, num_chains=2, seed=3, warn=False)
    grid = torch.linspace(-3, 3, 9).unsqueeze(-1).expand(9, 2)
    fs = function_space_diagnostics(model, result, grid)
    assert fs["max_rhat"] < 1.1 and fs["min_ess_bulk"] > 20
    idata = nuts_inference_data(result)
    assert set(idata.posterior.data_vars) == {"fc0.weight", "fc0.bias"}
    assert idata.posterior["fc0.weight"].shape == (2, 100, 1, 2)
    assert int(idata.sample_stats["diverging"].sum()) == sum(result.divergences)
    guide = hb.guides.MeanField(model)
    gdata = guide_inference_data(model, guide, num_samples=50, num_chains=2)
    assert gdata.posterior["fc0.bias"].shape == (2, 50, 1)


def test_wasserstein1_known_values():
    a = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0))
    assert float(wasserstein1(a, a).max()) == 0.0
    assert_close(wasserstein1(a, a + 2.0), torch.full((3,), 2.0), atol=1e-6)
    # W1 between N(0,1) and N(0,4): E|Z|·(2−1) = sqrt(2/π)
    b = 2 * torch.randn(4000, 3, generator=torch.Generator().manual_seed(1))
    assert_close(wasserstein1(a, b), torch.full((3,), math.sqrt(2 / math.pi)), atol=0.08)


def test_compare_std_ratios_in_and_out_of_data():
    grid = torch.linspace(-6, 6, 13).unsqueeze(-1)
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(5000, 13, 1, generator=g)
    inside = in_range_mask(grid, (-4, 4))
    scale = torch.where(inside, 1.0, 0.5).reshape(1, 13, 1)
    vi = torch.randn(5000, 13, 1, generator=g) * scale
    out = compare(Prediction(vi, "regression"), Prediction(ref, "regression"), grid, (-4, 4))
    assert abs(out["std_ratio_in_data"] - 1.0) < 0.05
    assert abs(out["std_ratio_out_of_data"] - 0.5) < 0.03
    assert out["predictive_distance"] > 0
    with pytest.raises(ValueError, match="grid has"):
        compare(Prediction(vi, "regression"), Prediction(ref, "regression"), grid[:5], (-4, 4))


def test_site_dims_never_give_one_name_two_sizes():
    """ArviZ pads a dimension shared by sites of different sizes with NaN (then R-hat reads
    inf): a transposed convolution's weight is (in, out, k), a module's own 1-d parameters need
    not match its outputs; such sites get names of their own."""
    import numpy as np
    from torch import nn

    from hyperbayes.inference.diagnostics import site_dims, to_inference_data

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.zeros(5))

        def forward(self, x):
            return x

    for module in (nn.Sequential(nn.Unflatten(1, (2, 1)), nn.ConvTranspose1d(2, 3, 1),
                                 nn.Flatten()),
                   nn.Sequential(Custom(), nn.Linear(2, 1))):
        model = BNN(hb.models.TorchNet(module), priors.Normal(1.0), Gaussian(1.0))
        specs = model.net.param_specs
        dims = site_dims(model, specs)
        sizes = {}
        for name, names in dims.items():
            for dim, size in zip(names, specs[name].shape, strict=True):
                assert sizes.setdefault(dim, size) == size, (name, dim)
        draws = {k: torch.randn(2, 10, *v.shape) for k, v in specs.items()}
        posterior = to_inference_data(draws, model=model).posterior
        assert not any(np.isnan(posterior[k].values).any() for k in specs)
    assert site_dims(BNN(MLP([2, 3, 1]), priors.Normal(1.0), Gaussian(1.0)),
                     ["fc0.weight", "fc0.bias"]) == {"fc0.weight": ["fc0_out", "fc0_in"],
                                                     "fc0.bias": ["fc0_out"]}
