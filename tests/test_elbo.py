"""hb.inference.ELBO equals Pyro's ELBOs on the same draws, in value and in gradient."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import hyperbayes as hb
from hyperbayes.guides import Delta, MeanField
from hyperbayes.guides.meanfield import normal_kl
from hyperbayes.inference.elbo import ELBO, log_prob_sum
from hyperbayes.models import BNN, MLP, Categorical, Gaussian, priors
from tests.common import assert_close


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)


def _assert_same_estimate(ours, reference, model, guide, x, y, *, value_tol, grad_tol):
    """Our ELBO and a reference ELBO agree, in value and in every guide gradient, on the same
    draws; the tolerances are (rtol, atol) pairs."""
    value, grads = _loss_and_grads(ours, model, guide, x, y)
    ref_value, ref_grads = _loss_and_grads(reference, model, guide, x, y)
    assert_close(value, ref_value, rtol=value_tol[0], atol=value_tol[1])
    for a, b in zip(grads, ref_grads, strict=True):
        assert_close(a, b, rtol=grad_tol[0], atol=grad_tol[1])


def _loss_and_grads(loss, model, guide, x, y, seed=0):
    pyro.set_rng_seed(seed)
    value = loss.differentiable_loss(model, guide, x, y, 160)
    params = list(guide.parameters())
    return value.detach(), torch.autograd.grad(value, params)


@pytest.mark.parametrize("prior, analytic, reference", [
    (priors.Normal(0.7), True, TraceMeanField_ELBO()),    # our fused closed form vs torch's
    (priors.by_name({"*.bias": priors.Normal(2.0), "*": priors.FanInNormal(1.0)}), True,
     TraceMeanField_ELBO()),
    (priors.Laplace(0.5), True, TraceMeanField_ELBO()),   # torch's KL(Normal ‖ Laplace)
    (priors.ScaleMixture(), True, Trace_ELBO()),          # no closed form: one-sample estimate
    (priors.Laplace(0.5), False, Trace_ELBO()),
    (priors.Normal(0.7), False, Trace_ELBO()),
])
def test_mean_field_elbo_matches_pyro(prior, analytic, reference):
    x, y = _data()
    model = BNN(MLP([3, 5, 2]), prior, Categorical())
    guide = MeanField(model, init_scale=0.3)
    _assert_same_estimate(ELBO(analytic_kl=analytic), reference, model, guide, x, y,
                          value_tol=(1e-5, 1e-4), grad_tol=(1e-4, 1e-4))


def test_delta_elbo_is_the_negative_log_joint():
    x, y = _data()
    model = BNN(MLP([3, 5, 2]), priors.Normal(1.5), Categorical())
    guide = Delta(model)
    _assert_same_estimate(ELBO(), Trace_ELBO(), model, guide, x, y,
                          value_tol=(1e-6, 1e-4), grad_tol=(1e-5, 1e-5))


def test_learned_noise_site_uses_the_monte_carlo_term():
    x = torch.randn(10, 2)
    y = torch.randn(10, 1)
    model = BNN(MLP([2, 1]), priors.Normal(1.0), Gaussian(scale=None))
    guide = MeanField(model, init_scale=0.2)
    ours, _ = _loss_and_grads(ELBO(), model, guide, x, y)
    theirs, _ = _loss_and_grads(TraceMeanField_ELBO(), model, guide, x, y)
    assert_close(ours, theirs, rtol=1e-5, atol=1e-4)


def test_normal_kl_value_and_gradient():
    g = torch.Generator().manual_seed(1)
    loc = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    log_scale = (0.3 * torch.randn(7, 3, generator=g, dtype=torch.float64)).requires_grad_()
    q = torch.distributions.Normal(loc, log_scale.exp())
    p = torch.distributions.Normal(torch.tensor(0.4, dtype=torch.float64),
                                   torch.tensor(1.7, dtype=torch.float64))
    expected = torch.distributions.kl_divergence(q, p).sum()
    value = normal_kl(loc, log_scale, 0.4, 1.7)
    assert_close(value, expected, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(lambda m, s: normal_kl(m, s, 0.4, 1.7), (loc, log_scale))


def test_log_prob_sum_fast_path_matches_log_prob():
    d = pyro.distributions.Normal(0.3, 2.0).expand([4, 5]).to_event(2)
    v = torch.randn(4, 5)
    assert_close(log_prob_sum(d, v), d.log_prob(v), rtol=1e-6, atol=1e-5)


def test_kl_weight_scales_only_the_kl():
    x, y = _data()
    model = BNN(MLP([3, 4, 2]), priors.Normal(1.0), Categorical())
    guide = MeanField(model, init_scale=0.1)
    full, _ = _loss_and_grads(ELBO(kl_weight=1.0), model, guide, x, y)
    half, _ = _loss_and_grads(ELBO(kl_weight=0.5), model, guide, x, y)
    none, _ = _loss_and_grads(ELBO(kl_weight=0.0), model, guide, x, y)
    assert_close(full - none, 2 * (half - none), rtol=1e-5, atol=1e-4)


def test_local_reparameterization_needs_a_closed_form_kl_for_stand_ins():
    x, y = _data()
    model = BNN(MLP([3, 4, 2]), priors.Normal(1.0), Categorical())
    guide = MeanField(model, local_reparameterization=True)
    assert guide.lrt_standin_sites == {"fc0.weight", "fc1.weight"}
    with pytest.raises(ValueError, match="stand-in"):
        ELBO(analytic_kl=False).differentiable_loss(model, guide, x, y, 16)
    # with a prior that has no closed form the weights are drawn, so any estimator works
    model = BNN(MLP([3, 4, 2]), priors.ScaleMixture(), Categorical())
    guide = MeanField(model, local_reparameterization=True)
    assert not guide.lrt_standin_sites
    assert torch.isfinite(ELBO().differentiable_loss(model, guide, x, y, 16))


def test_local_reparameterization_gives_the_same_expected_loss():
    x, y = _data()
    model = BNN(MLP([3, 4, 2]), priors.Normal(1.0), Categorical())
    plain = MeanField(model, init_scale=0.5, seed=3)
    lrt = MeanField(model, init_scale=0.5, seed=3, local_reparameterization=True)
    with torch.no_grad():
        a = torch.stack([ELBO().differentiable_loss(model, plain, x, y, 16) for _ in range(3000)])
        b = torch.stack([ELBO().differentiable_loss(model, lrt, x, y, 16) for _ in range(3000)])
    # same expectation (LRT is exact per example); LRT has lower variance
    assert abs(float(a.mean() - b.mean())) < 4 * float((a.var() / 3000 + b.var() / 3000).sqrt())
    assert float(b.var()) < float(a.var())


def test_particles_of_a_point_mass_change_nothing():
    x, y = _data()
    model = BNN(MLP([3, 5, 2]), priors.Normal(1.5), Categorical())
    guide = Delta(model)
    one, _ = _loss_and_grads(ELBO(), model, guide, x, y)
    many, _ = _loss_and_grads(ELBO(num_particles=8), model, guide, x, y)
    assert_close(many, one, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("analytic, reference", [
    (True, TraceMeanField_ELBO(num_particles=6, vectorize_particles=True, max_plate_nesting=1)),
    (False, Trace_ELBO(num_particles=6, vectorize_particles=True, max_plate_nesting=1)),
])
def test_vectorized_particles_match_pyro(analytic, reference):
    x, y = _data()
    model = BNN(MLP([3, 5, 2]), priors.Normal(0.8), Categorical())
    guide = MeanField(model, init_scale=0.3)
    _assert_same_estimate(ELBO(analytic_kl=analytic, num_particles=6), reference, model, guide,
                          x, y, value_tol=(1e-5, 1e-3), grad_tol=(1e-4, 1e-4))


def test_kl_schedules_set_and_restore_the_weight():
    x, y = torch.randn(10, 2), torch.randn(10, 1)
    model = BNN(MLP([2, 1]), priors.Normal(1.0), Gaussian(0.5))
    guide = MeanField(model)
    loss = ELBO()
    seen = []
    hb.inference.fit(model, guide, (x, y), steps=9, loss=loss, kl_schedule="warmup",
                     callback=lambda step, value: seen.append(loss.kl_weight))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    assert loss.kl_weight == 1.0
    seen.clear()
    hb.inference.fit(model, guide, (x, y), steps=10, loss=loss, kl_schedule="temper",
                     callback=lambda step, value: seen.append(loss.kl_weight))
    assert seen[0] == 1000.0 and seen[-1] == 1.0 and seen == sorted(seen, reverse=True)
    with pytest.raises(ValueError, match="unknown kl_schedule"):
        hb.inference.fit(model, guide, (x, y), steps=2, loss=loss, kl_schedule="cosine")
    with pytest.raises(ValueError, match="needs a loss with a kl_weight"):
        hb.inference.fit(model, guide, (x, y), steps=2, loss=Trace_ELBO(), kl_schedule="warmup")


class _HierarchicalPrior(priors.Prior):
    """w ~ N(0, τ²) with τ ~ LogNormal(0, 1): a prior whose scale is itself a latent."""

    def sample(self, specs, device):
        tau = pyro.sample("tau", pyro.distributions.LogNormal(torch.zeros((), device=device), 1.0))
        return {n: pyro.sample(n, pyro.distributions.Normal(torch.zeros((), device=device), tau)
                               .expand(s.shape).to_event(len(s.shape))) for n, s in specs.items()}


def test_gradients_reach_a_latent_prior_scale():
    x, y = _data()
    model = BNN(MLP([3, 4, 2]), _HierarchicalPrior(), Categorical())
    guide = MeanField(model, init_scale=0.3)
    _assert_same_estimate(ELBO(), TraceMeanField_ELBO(), model, guide, x, y,
                          value_tol=(1e-5, 1e-3), grad_tol=(1e-4, 1e-4))


def test_local_reparameterization_survives_vectorized_particles():
    x, y = _data()
    model = BNN(MLP([3, 5, 2]), priors.Normal(1.0), Categorical())
    guide = MeanField(model, init_scale=1.0, local_reparameterization=True)
    with torch.no_grad():
        one = torch.stack([ELBO().differentiable_loss(model, guide, x, y, 16)
                           for _ in range(400)])
        four = torch.stack([ELBO(num_particles=4).differentiable_loss(model, guide, x, y, 16)
                            for _ in range(400)])
    # same expectation: the layers still sample pre-activations under the particle plate
    se = float((one.var() / 400 + four.var() / 400).sqrt())
    assert abs(float(one.mean() - four.mean())) < 4 * se


def test_fit_refuses_pyro_losses_for_lrt_stand_ins():
    model = BNN(MLP([2, 3, 1]), priors.Normal(1.0), Gaussian(1.0))
    guide = MeanField(model, local_reparameterization=True)
    with pytest.raises(ValueError, match="needs hb.inference.ELBO"):
        hb.inference.fit(model, guide, (torch.randn(5, 2), torch.randn(5, 1)), steps=1,
                         loss=Trace_ELBO())


def test_local_reparameterization_draws_every_particle_its_own_noise():
    """K particles share the data but not the noise: the first layer's pre-activations of a
    net without hidden layers or bias used to be one draw for all K (K equal outputs)."""
    from hyperbayes.inference import ELBO

    x, y = torch.randn(5, 3), torch.randn(5, 1)
    model = BNN(MLP([3, 1], bias=False), priors.Normal(1.0), Gaussian(0.5))
    guide = MeanField(model, init_scale=1.0, local_reparameterization=True)
    model_trace, _ = ELBO(num_particles=4).traces(model, guide, x, y)
    out = model_trace.nodes["_RETURN"]["value"]
    assert out.shape == (4, 5, 1)
    assert not torch.allclose(out[0], out[1])


def test_local_reparameterization_where_no_layer_can_use_it_is_refused():
    """Weight norm (directions and scales) or convolutions only: asking for local
    reparameterization used to train plain mean field without a word; a recipe's option
    applies where the net has dense weights."""
    from torch import nn

    model = BNN(MLP([3, 4, 1], weight_norm=True), priors.Normal(1.0), Gaussian(0.5))
    with pytest.raises(ValueError, match="no site is a dense layer's weight matrix"):
        MeanField(model, local_reparameterization=True)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    _, guide, _, _ = hb.methods.setup("meanfield", "classification", conv, priors.Normal(1.0),
                                      Categorical())
    assert not guide.lrt_sites
    with pytest.raises(ValueError, match="prior_samples must be an integer above k=1"):
        hb.inference.NearestNeighbourELBO(prior_samples=0)
