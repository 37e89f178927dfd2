"""Tests for hyperbayes guides: site discovery, Delta (MAP) and MeanField on a conjugate model."""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import hyperbayes as hb
from hyperbayes.guides import Delta, MeanField, model_sites
from hyperbayes.models import BNN, MLP, Categorical, Gaussian, nets, priors
from tests.common import assert_close, conjugate_linear_regression

SIGMA, PRIOR_SCALE = 0.5, 1.0


@pytest.fixture(scope="module")
def conjugate():
    """Bayesian linear regression y = x·w + b + N(0, σ²), w, b ~ N(0, 1), and its posterior."""
    return conjugate_linear_regression(SIGMA, PRIOR_SCALE)


def _linear_model():
    return BNN(MLP([2, 1]), priors.Normal(PRIOR_SCALE), Gaussian(SIGMA))


def _flat(values):
    """[w_1, w_2, b] from a dict of fc0.weight (1, 2) and fc0.bias (1,)."""
    return torch.cat([values["fc0.weight"].reshape(-1), values["fc0.bias"]]).detach().double()


# ------------------------------------------------------------------------------------------------
# Site discovery
# ------------------------------------------------------------------------------------------------


def test_model_sites_lists_every_parameter():
    net = MLP([3, 4, 2], weight_norm=True)
    model = BNN(net, priors.Normal(1.0), Categorical())
    sites = model_sites(model, torch.Generator().manual_seed(5))
    assert [s.name for s in sites] == list(net.param_specs)
    init = net.init_params(torch.Generator().manual_seed(5))
    for site in sites:
        spec = net.param_specs[site.name]
        assert site.shape == spec.shape and site.role == spec.role
        assert site.is_real and site.transform is None
        assert torch.equal(site.init, init[site.name])
    assert sum(s.numel for s in sites) == net.num_params


def test_model_sites_includes_learned_noise():
    model = BNN(MLP([3, 2, 1]), priors.Normal(1.0), Gaussian(scale=None))
    sites = model_sites(model)
    assert [s.name for s in sites] == [*model.net.param_specs, "noise_scale"]
    noise = sites[-1]
    assert noise.shape == () and noise.role == ""
    assert not noise.is_real
    # initialised at the prior mean exp(1/2) of LogNormal(0, 1), in unconstrained space
    assert float(noise.transform(noise.init)) == pytest.approx(math.exp(0.5), rel=1e-5)
    # a fixed noise scale is no site
    fixed = BNN(MLP([3, 2, 1]), priors.Normal(1.0), Gaussian(0.1))
    assert "noise_scale" not in [s.name for s in model_sites(fixed)]


def test_model_sites_errors():
    with pytest.raises(TypeError, match="has no sample_params"):
        model_sites(torch.nn.Linear(2, 1))

    class NoLatents(torch.nn.Module):
        def sample_params(self):
            return {}

    with pytest.raises(ValueError, match="no latent sites"):
        model_sites(NoLatents())

    class BatchedSite(torch.nn.Module):
        def sample_params(self):
            return {"w": pyro.sample("w", dist.Normal(torch.zeros(3), 1.0))}

    with pytest.raises(ValueError, match="batch shape"):
        model_sites(BatchedSite())


def test_guided_sites_restrict_the_guide():
    class Partial(priors.Normal):
        def guided_sites(self, specs):
            return [n for n in specs if n.endswith("weight")]

    model = BNN(MLP([2, 3, 1]), Partial(1.0), Gaussian(1.0))
    assert [s.name for s in model_sites(model)] == ["fc0.weight", "fc1.weight"]
    guide = MeanField(model)
    assert set(poutine.trace(guide).get_trace().stochastic_nodes) == {"fc0.weight", "fc1.weight"}
    # unguided sites are drawn from the prior under the sample plate
    samples = hb.inference.sample_posterior(model, guide, 6)
    assert samples["fc0.bias"].shape == (6, 3) and samples["fc0.bias"].std() > 0


def test_split_and_flat_init_roundtrip():
    model = BNN(MLP([3, 4, 2]), priors.Normal(1.0), Gaussian(1.0))
    guide = Delta(model)
    flat = guide.flat_init()
    assert flat.shape == (guide.num_latent,) and guide.num_latent == model.net.num_params
    parts = guide.split(flat)
    for site in guide.sites:
        assert torch.equal(parts[site.name], site.init)
    batched = guide.split(torch.randn(5, guide.num_latent))
    assert batched["fc0.weight"].shape == (5, 4, 3) and batched["fc1.bias"].shape == (5, 2)


def test_split_with_scalar_site():
    """A scalar site (the learned noise scale) splits to shape () and (S,)."""
    model = BNN(MLP([3, 4, 2]), priors.Normal(1.0), Gaussian(scale=None))
    guide = Delta(model)
    assert guide.num_latent == model.net.num_params + 1
    batched = guide.split(torch.randn(5, guide.num_latent))
    assert batched["noise_scale"].shape == (5,)
    parts = guide.split(guide.flat_init())
    assert parts["noise_scale"].shape == ()
    for site in guide.sites:
        assert torch.equal(parts[site.name], site.init)


# ------------------------------------------------------------------------------------------------
# Delta
# ------------------------------------------------------------------------------------------------


def test_delta_initialisation_is_seeded():
    model = BNN(MLP([3, 4, 1]), priors.Normal(1.0), Gaussian(1.0))
    a, b, c = Delta(model, seed=1), Delta(model, seed=1), Delta(model, seed=2)
    pa, pb, pc = a.point_estimate(), b.point_estimate(), c.point_estimate()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(pa["fc0.weight"], pc["fc0.weight"])
    assert torch.equal(pa["fc0.bias"], torch.zeros(4))


def test_delta_guide_samples_point_masses():
    model = BNN(MLP([2, 3, 1]), priors.Normal(1.0), Gaussian(scale=None))
    guide = Delta(model)
    trace = poutine.trace(guide).get_trace()
    estimate = guide.point_estimate()
    for site in guide.sites:
        node = trace.nodes[site.name]
        assert isinstance(node["fn"], dist.Delta)
        assert node["fn"].event_shape == site.shape
        assert torch.equal(node["value"].detach(), estimate[site.name])
    assert estimate["noise_scale"] == pytest.approx(math.exp(0.5), rel=1e-5)


def test_delta_converges_to_map_of_conjugate_model(conjugate):
    model = _linear_model()
    guide = Delta(model)
    result = hb.inference.fit(model, guide, (conjugate["x"], conjugate["y"]), steps=200, lr=0.1,
                              loss=Trace_ELBO())
    # MAP = posterior mean for a Gaussian posterior
    assert_close(_flat(guide.point_estimate()), conjugate["mean"], atol=1e-2, rtol=0)
    # the loss is -log p(y, w_MAP) (a Delta has zero entropy): check it at the optimum
    w = _flat(guide.point_estimate())
    resid = conjugate["y"].double() - conjugate["design"] @ w
    n = len(resid)
    log_lik = (-0.5 * (resid / SIGMA) ** 2).sum() - n * math.log(SIGMA * math.sqrt(2 * math.pi))
    log_prior = (-0.5 * w**2).sum() - 3 * 0.5 * math.log(2 * math.pi)
    assert result.losses[-1] == pytest.approx(float(-(log_lik + log_prior)), abs=1e-3)


# ------------------------------------------------------------------------------------------------
# MeanField
# ------------------------------------------------------------------------------------------------


def test_meanfield_initialisation():
    model = BNN(MLP([3, 4, 1]), priors.Normal(1.0), Gaussian(scale=None))
    guide = MeanField(model, init_scale=0.02)
    for name, scale in guide.scales().items():
        assert_close(scale, torch.full_like(scale, 0.02), atol=1e-7)
        assert scale.shape == guide.loc_params[name.replace(".", "__")].shape
    init = model.net.init_params(torch.Generator().manual_seed(0))
    assert torch.equal(guide.loc_params["fc0__weight"].detach(), init["fc0.weight"])
    trace = poutine.trace(guide).get_trace()
    assert trace.nodes["noise_scale"]["value"] > 0  # sampled through the exp transform
    assert trace.nodes["fc0.weight"]["fn"].event_shape == (4, 3)
    with pytest.raises(ValueError, match="init_scale must be positive"):
        MeanField(model, init_scale=0.0)


def test_meanfield_local_reparameterization_registers_only_in_training():
    model = BNN(MLP([3, 4, 1], weight_norm=False), priors.Normal(1.0), Gaussian(1.0))
    guide = MeanField(model, local_reparameterization=True)
    with nets.local_reparameterization():
        out = guide()
        assert nets.gaussian_weights.lookup(out["fc0.weight"]) is not None
        assert nets.gaussian_weights.lookup(out["fc1.weight"]) is not None
        assert nets.gaussian_weights.lookup(out["fc0.bias"]) is None
        loc, scale = nets.gaussian_weights.lookup(out["fc0.weight"])
        assert torch.equal(loc, guide.loc_params["fc0__weight"])
        guide.eval()
        out = guide()
        assert nets.gaussian_weights.lookup(out["fc0.weight"]) is None
    guide.train()  # outside a scope the guide draws whole weights, registering nothing
    out = guide()
    assert out["fc0.weight"].shape == (4, 3) and not nets.gaussian_weights.in_scope()


def _analytic_neg_elbo(guide, conjugate):
    """-ELBO of a mean-field Gaussian q on the conjugate model, in closed form."""
    mu = _flat({k: guide.loc_params[k.replace(".", "__")] for k in ("fc0.weight", "fc0.bias")})
    tau2 = _flat(guide.scales()) ** 2
    design, y = conjugate["design"], conjugate["y"].double()
    n = len(y)
    expected_sq = ((y - design @ mu) ** 2).sum() + (design**2 @ tau2).sum()
    log_lik = -expected_sq / (2 * SIGMA**2) - n * math.log(SIGMA * math.sqrt(2 * math.pi))
    kl = (math.log(PRIOR_SCALE) - 0.5 * tau2.log() + (tau2 + mu**2) / (2 * PRIOR_SCALE**2)
          - 0.5).sum()
    return float(kl - log_lik)


@pytest.mark.parametrize("lrt", [False, True])
def test_meanfield_elbo_estimate_is_unbiased(conjugate, lrt):
    """The Monte Carlo -ELBO (with or without local reparameterization) matches closed form."""
    model = _linear_model()
    guide = MeanField(model, init_scale=0.3, local_reparameterization=lrt)
    loss = TraceMeanField_ELBO()
    x, y = conjugate["x"], conjugate["y"]
    with torch.no_grad(), nets.local_reparameterization():
        draws = torch.stack([loss.differentiable_loss(model, guide, x, y) for _ in range(300)])
    expected = _analytic_neg_elbo(guide, conjugate)
    stderr = float(draws.std()) / math.sqrt(len(draws))
    assert stderr > 0
    assert float(draws.mean()) == pytest.approx(expected, abs=4 * stderr)


def test_meanfield_converges_to_mean_field_optimum(conjugate):
    """q's means → posterior mean and q's variances → 1/diag(posterior precision)."""
    model = _linear_model()
    guide = MeanField(model)
    steps, locs, variances = 1000, [], []

    def average_iterates(step, _):  # Polyak averaging of the noisy SGD iterates
        if step > 400:
            locs.append(_flat({k: guide.loc_params[k.replace(".", "__")]
                               for k in ("fc0.weight", "fc0.bias")}))
            variances.append(_flat(guide.scales()) ** 2)

    hb.inference.fit(model, guide, (conjugate["x"], conjugate["y"]), steps=steps, lr=0.05,
                     loss=TraceMeanField_ELBO(), callback=average_iterates)
    expected_var = 1 / torch.diag(conjugate["precision"])
    assert_close(torch.stack(locs).mean(0), conjugate["mean"], atol=0.03, rtol=0)
    assert_close(torch.stack(variances).mean(0), expected_var, atol=0, rtol=0.15)
    # and the last iterate is a reasonable fit too (not only the average)
    assert_close(_flat(guide.scales()) ** 2, expected_var, atol=0, rtol=0.5)
    # mean-field under-estimates the marginal posterior variance (the diagonal of Λ⁻¹)
    marginal = torch.diag(torch.linalg.inv(conjugate["precision"]))
    assert (expected_var <= marginal + 1e-12).all()


def test_meanfield_default_loss_is_the_closed_form_kl_elbo():
    guide = MeanField(_linear_model())
    loss = hb.inference.svi.default_loss(guide)
    assert isinstance(loss, hb.inference.ELBO) and loss.analytic_kl


def test_vectorized_particles_elbo_equals_single_particle():
    """A deterministic (Delta) guide: the K-particle vectorized ELBO equals the 1-particle one.

    Under Pyro's particle plate the parameters carry batch shape (K, 1) (the 1 is the data
    plate's slot), and the likelihood must not be counted K times.
    """
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 2, generator=g), torch.randn(10, generator=g)
    model = _linear_model()
    guide = Delta(model)
    single = Trace_ELBO().differentiable_loss(model, guide, x, y)
    vectorized = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    assert_close(vectorized.differentiable_loss(model, guide, x, y), single, atol=1e-3)


def test_meanfield_scales_are_exp_of_log_scale():
    model = _linear_model()
    guide = MeanField(model)
    with torch.no_grad():
        guide.log_scale_params["fc0__bias"].fill_(0.3)
    assert_close(guide.scales()["fc0.bias"], torch.tensor([0.3]).exp(), atol=1e-7)
    site = guide.sites[1]
    q = guide.site_distribution(site, guide.loc_params["fc0__bias"], guide.scales()["fc0.bias"])
    assert_close(q.base_dist.scale, torch.tensor([0.3]).exp(), atol=1e-7)


def test_guides_satisfy_the_written_contract():
    from hyperbayes.guides import contract

    model = BNN(MLP([2, 3, 1]), priors.Normal(1.0), Gaussian(1.0))
    for guide in (Delta(model), MeanField(model), hb.guides.FlowGuide(model, num_flows=1)):
        assert isinstance(guide, contract.DensityGuide) and not contract.is_implicit(guide)
    implicit = hb.guides.ImplicitGuide(model, noise_dim=2, hidden=(4,))
    assert isinstance(implicit, contract.ImplicitGuideContract) and contract.is_implicit(implicit)
    auto = pyro.infer.autoguide.AutoNormal(model)
    assert isinstance(auto, contract.Guide) and not isinstance(auto, contract.SiteGuideContract)

    class HalfImplicit(torch.nn.Module):
        implicit = True

        def forward(self, *args):
            return {}

    with pytest.raises(TypeError, match=r"lacks \['sites'.*ImplicitGuideContract"):
        hb.inference.EntropyELBO(num_particles=2).differentiable_loss(
            model, HalfImplicit(), torch.randn(4, 2), torch.randn(4, 1))
