"""FlowGuide (Bayesian hypernetworks): exact log q, conjugate posteriors, scales-only flows."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

import hyperbayes as hb
from hyperbayes.guides import FlowGuide, MeanField
from hyperbayes.guides.flows import SoftClampedConditioner
from hyperbayes.inference.elbo import ELBO
from hyperbayes.models import BNN, MLP, Categorical, Gaussian, priors
from tests.common import assert_close


def _perturb(guide, seed=0):
    """Move every flow parameter off its identity initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in guide.flow_layers.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        guide.affine_log_scale.fill_(-1.0)


@pytest.mark.parametrize("flow", ["iaf", "realnvp"])
def test_log_q_matches_a_direct_change_of_variables(flow):
    model = BNN(MLP([2, 3, 1]), priors.Normal(1.0), Gaussian(0.5))
    guide = FlowGuide(model, flow=flow, num_flows=3, hidden=8, over="weights")
    _perturb(guide)
    q = guide.distribution()
    eps = torch.randn(5, guide.flow_dim)
    x, log_det = eps, torch.zeros(5)
    for transform in q.transforms:
        y = transform(x)
        log_det = log_det + transform.log_abs_det_jacobian(x, y).reshape(5, -1).sum(-1)
        x = y
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(-1) - log_det
    # a copy of z defeats the transforms' caches: log_prob must invert every layer
    assert_close(q.log_prob(x.detach().clone()), expected, atol=1e-3, rtol=1e-4)


def test_identity_initialisation_starts_at_the_point_estimate():
    model = BNN(MLP([2, 3, 1]), priors.Normal(1.0), Gaussian(0.5))
    guide = FlowGuide(model, flow="realnvp", num_flows=2, hidden=8, over="weights",
                      init_scale=1e-4)
    draws = hb.inference.sample_posterior(model, guide, 50)
    init = model.net.init_params(torch.Generator().manual_seed(0))
    for name, value in draws.items():
        assert_close(value.mean(0), init[name], atol=1e-3, rtol=0)
        assert float(value.std(0).max()) < 1e-3


def test_flow_elbo_matches_pyro_trace_elbo():
    x, y = torch.randn(12, 2), torch.randint(0, 3, (12,))
    model = BNN(MLP([2, 4, 3]), priors.Normal(1.0), Categorical())
    guide = FlowGuide(model, flow="iaf", num_flows=2, hidden=8, over="weights")
    _perturb(guide)
    values, grads = [], []
    for loss in (ELBO(), Trace_ELBO()):
        pyro.set_rng_seed(3)
        value = loss.differentiable_loss(model, guide, x, y, 120)
        values.append(value.detach())
        grads.append(torch.autograd.grad(value, list(guide.parameters())))
    assert_close(values[0], values[1], rtol=1e-5, atol=1e-3)
    for a, b in zip(*grads, strict=True):
        assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("flow", ["iaf", "realnvp"])
def test_weights_flow_recovers_the_conjugate_posterior(flow):
    g = torch.Generator().manual_seed(0)
    n, noise = 40, 0.5
    x = torch.randn(n, 2, generator=g)
    y = (x @ torch.tensor([1.5, -0.7]) + 0.3 + noise * torch.randn(n, generator=g)).unsqueeze(-1)
    design = torch.cat([x, torch.ones(n, 1)], 1).double()
    cov = torch.linalg.inv(torch.eye(3, dtype=torch.float64) + design.T @ design / noise ** 2)
    mean = cov @ design.T @ y.double()[:, 0] / noise ** 2
    model = BNN(MLP([2, 1]), priors.Normal(1.0), Gaussian(noise))
    guide = FlowGuide(model, flow=flow, num_flows=2, hidden=16, over="weights", init_scale=0.1)
    loss = Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    hb.inference.fit(model, guide, (x, y), steps=1500, lr=1e-2, loss=loss, lr_schedule="cosine")
    draws = hb.inference.sample_posterior(model, guide, 20_000)
    flat = torch.cat([draws["fc0.weight"].reshape(-1, 2), draws["fc0.bias"]], 1).double()
    assert_close(flat.mean(0), mean, atol=0.03, rtol=0)
    assert_close(torch.cov(flat.T), cov, atol=0.003, rtol=0.25)


def test_scales_flow_covers_one_scalar_per_unit():
    net = MLP([6, 5, 4, 3], weight_norm=True)
    prior = priors.by_name({"*.scale": priors.Normal(1.0), "*": priors.Flat()})
    model = BNN(net, prior, Categorical())
    guide = FlowGuide(model, flow="realnvp", num_flows=2, hidden=8)
    assert guide.over == "scales" and guide.flow_dim == 5 + 4 + 3
    assert {s.name for s in guide.point_sites} == {
        f"fc{i}.{k}" for i in range(3) for k in ("direction", "bias")}
    hb.inference.fit(model, guide, (torch.randn(20, 6), torch.randint(0, 3, (20,))), steps=5)
    pred = hb.inference.predict(model, guide, torch.randn(7, 6), num_samples=9)
    assert pred.probs.shape == (9, 7, 3)
    draws = hb.inference.sample_posterior(model, guide, 9)
    assert draws["fc0.direction"].stride(0) == 0  # a shared point estimate, not 9 copies


def test_flow_guide_rejects_bad_settings():
    model = BNN(MLP([2, 3, 1]), priors.Normal(1.0), Gaussian(1.0))
    with pytest.raises(ValueError, match="unknown flow 'maf'"):
        FlowGuide(model, flow="maf")
    with pytest.raises(ValueError, match="weight-norm net"):
        FlowGuide(model, over="scales")


def _product_fractions(guide, model):
    draws = hb.inference.sample_posterior(model, guide, 4000)
    a, b = draws["fc0.weight"].reshape(-1), draws["fc1.weight"].reshape(-1)
    return float(((a > 0) & (b > 0)).float().mean()), float(((a < 0) & (b < 0)).float().mean())


def test_iaf_flow_covers_both_modes_of_the_product_toy():
    """ŷ = a·b·x on y = x + noise: modes a = b = 1 and a = b = −1 (BHN paper, Fig. 2)."""
    data = hb.datasets.load("product", seed=0)

    def product_model():
        return BNN(MLP([1, 1, 1], activation="identity", bias=False), priors.Normal(1.0),
                   Gaussian(data.info["noise_std"]))

    model = product_model()
    guide = FlowGuide(model, flow="iaf", num_flows=4, hidden=32, over="weights", init_scale=1.0)
    with torch.no_grad():
        guide.affine_loc.zero_()  # start symmetric between the modes
    hb.inference.fit(model, guide, data.train, steps=1500, lr=5e-3,
                     loss=ELBO(num_particles=64), kl_schedule="temper", seed=0)
    pos, neg = _product_fractions(guide, model)
    assert pos >= 0.25 and neg >= 0.25, (pos, neg)

    model = product_model()
    meanfield = hb.guides.MeanField(model, init_scale=1.0)
    hb.inference.fit(model, meanfield, data.train, steps=1500, lr=5e-3,
                     loss=ELBO(num_particles=64), kl_schedule="temper", seed=0)
    assert max(_product_fractions(meanfield, model)) > 0.95  # one mode only


def test_permutations_are_saved_with_the_guide():
    model = BNN(MLP([3, 4, 1]), priors.Normal(1.0), Gaussian(0.5))
    guide = FlowGuide(model, flow="realnvp", num_flows=3, hidden=8, over="weights", seed=1)
    _perturb(guide)
    other = FlowGuide(model, flow="realnvp", num_flows=3, hidden=8, over="weights", seed=2)
    other.load_state_dict(guide.state_dict())
    eps = torch.randn(4, guide.flow_dim)
    z = guide.distribution().transforms
    w = other.distribution().transforms
    a, b = eps, eps
    for ta, tb in zip(z, w, strict=True):
        a, b = ta(a), tb(b)
    assert_close(a, b, atol=1e-6, rtol=0)


def test_noise_groups_elbo_matches_pyro_and_averages_the_kl():
    """One draw per example group: our ELBO equals Pyro's Trace_ELBO (value and gradient) on the
    same draws, and with a point-mass guide (every draw the same) it equals the one-draw ELBO."""
    x, y = torch.randn(12, 2), torch.randint(0, 3, (12,))
    prior = priors.by_name({"*.scale": priors.Normal(1.0), "*": priors.Normal(2.0)})
    model = BNN(MLP([2, 4, 3], weight_norm=True), prior, Categorical(), noise_groups=3)
    guide = FlowGuide(model, flow="realnvp", num_flows=2, hidden=8, over="scales",
                      init_scale=0.3)
    _perturb(guide)
    values, grads = [], []
    for loss in (ELBO(), Trace_ELBO()):
        pyro.set_rng_seed(3)
        value = loss.differentiable_loss(model, guide, x, y, 120)
        values.append(value.detach())
        grads.append(torch.autograd.grad(value, list(guide.parameters())))
    assert_close(values[0], values[1], rtol=1e-5, atol=1e-3)
    for a, b in zip(*grads, strict=True):
        assert_close(a, b, rtol=1e-4, atol=1e-4)
    # a (numerically) point-mass flow: G identical draws give the one-draw loss exactly
    with torch.no_grad():
        guide.affine_log_scale.fill_(-30.0)
    single = BNN(model.net, prior, Categorical())
    one = FlowGuide(single, flow="realnvp", num_flows=2, hidden=8, over="scales")
    one.load_state_dict(guide.state_dict())
    assert_close(ELBO(analytic_kl=False).differentiable_loss(model, guide, x, y, 120),
                 ELBO(analytic_kl=False).differentiable_loss(single, one, x, y, 120), rtol=1e-6)


def test_noise_groups_evaluate_each_group_with_its_own_draw():
    x = torch.randn(8, 2)
    model = BNN(MLP([2, 5, 3], weight_norm=True),
                priors.by_name({"*.scale": priors.Normal(1.0), "*": priors.Flat()}),
                Categorical(), noise_groups=4)
    guide = FlowGuide(model, flow="iaf", num_flows=1, hidden=8, over="scales", init_scale=0.5)
    guide_trace = pyro.poutine.trace(guide).get_trace(x)
    outputs = pyro.poutine.replay(model, trace=guide_trace)(x)
    draws = {name: guide_trace.nodes[name]["value"] for name in model.net.param_specs}
    assert draws["fc0.scale"].shape == (4, 5)
    for g in range(4):
        single = {k: v[g] for k, v in draws.items()}
        assert_close(outputs[2 * g:2 * g + 2], model.net(single, x[2 * g:2 * g + 2]), atol=1e-6)
    assert guide().get("fc0.scale").shape == (5,)  # without data (prediction): one draw


def test_noise_groups_reject_what_they_cannot_serve():
    net, prior = MLP([2, 3, 2], weight_norm=True), priors.Normal(1.0)
    model = BNN(net, prior, Categorical(), noise_groups=2)
    x, y = torch.randn(5, 2), torch.randint(0, 2, (5,))
    with pytest.raises(ValueError, match="must divide the minibatch size"):
        ELBO().differentiable_loss(model, FlowGuide(model, num_flows=1, hidden=4), x, y)
    with pytest.raises(ValueError, match="one sample of .* per group"):
        ELBO().differentiable_loss(model, MeanField(model), x[:4], y[:4])
    with pytest.raises(ValueError, match="without latent sites"):
        BNN(net, prior, Gaussian(scale=None), noise_groups=2)  # a learned noise scale
    with pytest.raises(ValueError, match="positive integer"):
        BNN(net, prior, Categorical(), noise_groups=0)


def test_fit_lr_multipliers_slow_down_only_the_matched_parameters():
    x, y = torch.randn(16, 2), torch.randint(0, 3, (16,))
    model = BNN(MLP([2, 4, 3]), priors.Normal(1.0), Categorical())
    guide = FlowGuide(model, flow="realnvp", num_flows=2, hidden=8, over="weights")
    _perturb(guide)
    before = {k: v.detach().clone() for k, v in guide.named_parameters()}
    hb.inference.fit(model, guide, (x, y), steps=5, lr=1e-2,
                     lr_multipliers={"flow_layers": 1e-6}, progress=False)
    moved = {k: float((v.detach() - before[k]).abs().max()) for k, v in guide.named_parameters()}
    assert max(v for k, v in moved.items() if k.startswith("flow_layers")) < 1e-6
    assert moved["affine_loc"] > 1e-3
    with pytest.raises(ValueError, match="match no guide parameter"):
        hb.inference.fit(model, guide, (x, y), steps=1, lr_multipliers={"flows": 0.1})


def test_soft_clamp_bounds_the_log_scale_smoothly():
    """The tanh bound: identity near 0, inside (-5, 3), and no gradient push past the bounds
    (Pyro's hard clamp passes the gradient straight through, which let bhn-mnist diverge)."""

    class Raw(torch.nn.Module):
        def forward(self, x):
            return torch.zeros_like(x), x

    conditioner = SoftClampedConditioner(Raw(), low=-5.0, high=3.0)
    raw = torch.tensor([-100.0, -1e-3, 0.0, 1e-3, 100.0], requires_grad=True)
    _, log_scale = conditioner(raw)
    assert torch.all(log_scale >= -5.0) and torch.all(log_scale <= 3.0)
    _, moderate = conditioner(torch.tensor([-10.0, 10.0]))
    assert -5.0 < moderate[0].item() < -4.0 and 2.5 < moderate[1].item() < 3.0
    assert log_scale[1:4].tolist() == pytest.approx([-1e-3, 0.0, 1e-3], abs=1e-8)
    assert log_scale[0].item() == pytest.approx(-5.0) and log_scale[4].item() == pytest.approx(3.0)
    (grad,) = torch.autograd.grad(log_scale.sum(), raw)
    assert grad[[0, 4]].abs().max() < 1e-6 and grad[2].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="low < 0 < high"):
        SoftClampedConditioner(Raw(), low=1.0, high=3.0)


@pytest.mark.parametrize("flow", ["iaf", "realnvp"])
def test_flow_guide_is_seeded_and_clamps_softly_by_default(flow):
    model = BNN(MLP([3, 4, 2]), priors.Normal(1.0), Gaussian(1.0))
    first = FlowGuide(model, flow=flow, num_flows=2, hidden=16, seed=3)
    torch.manual_seed(123)  # the global generator's state must not matter
    second = FlowGuide(model, flow=flow, num_flows=2, hidden=16, seed=3)
    pairs = zip(first.state_dict().items(), second.state_dict().items(), strict=True)
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name
    conditioners = [m for m in first.modules() if isinstance(m, SoftClampedConditioner)]
    assert len(conditioners) == 2
    hard = FlowGuide(model, flow=flow, num_flows=2, hidden=16, log_scale_clamp="hard")
    assert not any(isinstance(m, SoftClampedConditioner) for m in hard.modules())
    z = first.distribution().rsample((5,))
    assert torch.isfinite(first.distribution().log_prob(z)).all()  # IAF inverts through it
    with pytest.raises(ValueError, match="unknown log_scale_clamp 'tanh'"):
        FlowGuide(model, flow=flow, log_scale_clamp="tanh")
