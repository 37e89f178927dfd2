"""Tests for hyperbayes priors, likelihoods and the BNN model: sites, closed-form log densities."""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

import hyperbayes as hb
from hyperbayes.guides import Delta, MeanField, model_sites
from hyperbayes.models import BNN, MLP, Categorical, Gaussian, priors
from tests.common import assert_close


def _normal_logpdf(x, scale):
    return -0.5 * (x / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)


def _trace_params(model):
    return poutine.trace(model.sample_params).get_trace()


def _closed_form(prior_name, value, spec):
    x = value.double()
    if prior_name == "normal":  # Normal(scale=2.0, loc=0.5)
        return _normal_logpdf(x - 0.5, 2.0).sum()
    if prior_name == "fan_in":  # FanInNormal(3.0)
        return _normal_logpdf(x, 3.0 / math.sqrt(spec.fan_in)).sum()
    if prior_name == "mixture":  # ScaleMixture(0.25, 1.5, 0.1)
        a = 0.25 * torch.exp(_normal_logpdf(x, 1.5))
        b = 0.75 * torch.exp(_normal_logpdf(x, 0.1))
        return torch.log(a + b).sum()
    if prior_name == "laplace":  # Laplace(0.7)
        return (-math.log(2 * 0.7) - x.abs() / 0.7).sum()
    raise AssertionError(prior_name)


PRIORS = {
    "normal": lambda: priors.Normal(2.0, loc=0.5),
    "fan_in": lambda: priors.FanInNormal(3.0),
    "mixture": lambda: priors.ScaleMixture(0.25, 1.5, 0.1),
    "laplace": lambda: priors.Laplace(0.7),
}


# ------------------------------------------------------------------------------------------------
# Built-in priors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_prior_sites_and_closed_form_log_prob(name):
    net = MLP([3, 4, 2])
    model = BNN(net, PRIORS[name](), Gaussian(1.0))
    trace = _trace_params(model)
    latent = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
    assert latent == list(net.param_specs)
    for pname, spec in net.param_specs.items():
        node = trace.nodes[pname]
        fn = node["fn"]
        assert tuple(fn.event_shape) == spec.shape
        assert tuple(fn.batch_shape) == ()
        assert tuple(node["value"].shape) == spec.shape
        # evaluate at a fixed point, not only at the prior's own draw
        point = torch.linspace(-2.0, 2.0, spec.numel).reshape(spec.shape)
        expected = _closed_form(name, point, spec)
        assert_close(fn.log_prob(point), expected, atol=1e-4, rtol=1e-5, msg=pname)
    # the trace's total log density is the sum over parameters (checked at the drawn values)
    trace.compute_log_prob()
    drawn = sum(_closed_form(name, trace.nodes[p]["value"], s) for p, s in net.param_specs.items())
    assert_close(sum(trace.nodes[p]["log_prob_sum"] for p in net.param_specs), drawn, atol=1e-3)


def test_fan_in_normal_std():
    torch.manual_seed(0)
    net = MLP([100, 4, 1])
    model = BNN(net, priors.FanInNormal(2.0), Gaussian(1.0))
    samples = [_trace_params(model).nodes["fc0.weight"]["value"] for _ in range(20)]
    std = torch.stack(samples).std().item()
    assert std == pytest.approx(2.0 / math.sqrt(100), rel=0.03)
    base = _trace_params(model).nodes["fc1.weight"]["fn"].base_dist
    assert_close(base.scale, torch.full((1, 4), 2.0 / math.sqrt(4)))


def test_scale_mixture_matches_hand_written_mixture():
    prior = priors.ScaleMixture(pi=0.3, scale1=1.0, scale2=math.exp(-6))
    spec = MLP([2, 1]).param_specs["fc0.weight"]
    x = torch.tensor([-1.0, -1e-3, 0.0, 2e-3, 0.5, 3.0], dtype=torch.float64)
    d = prior.distribution(spec)
    n1 = dist.Normal(0.0, 1.0).log_prob(x).exp()
    n2 = dist.Normal(0.0, math.exp(-6)).log_prob(x).exp()
    expected = torch.log(0.3 * n1 + 0.7 * n2)
    assert_close(d.log_prob(x.float()), expected, atol=1e-4, rtol=1e-5)


def test_prior_constructors_validate():
    with pytest.raises(ValueError, match="scale must be positive"):
        priors.Normal(0.0)
    with pytest.raises(ValueError, match="scale must be positive"):
        priors.FanInNormal(-1.0)
    with pytest.raises(ValueError, match="0 < pi < 1"):
        priors.ScaleMixture(pi=1.0)
    with pytest.raises(ValueError, match="scale must be positive"):
        priors.Laplace(0.0)


def test_bnn_rejects_raw_distribution_prior():
    with pytest.raises(TypeError, match="wrap a distribution"):
        BNN(MLP([2, 1]), dist.Normal(0.0, 1.0), Gaussian(1.0))
    with pytest.raises(TypeError, match="hyperbayes Net or a torch.nn.Module"):
        BNN(lambda x: x, priors.Normal(), Gaussian(1.0))
    with pytest.raises(TypeError, match="Likelihood"):
        BNN(MLP([2, 1]), priors.Normal(), dist.Normal(0.0, 1.0))


def test_prior_with_wrong_event_shape_raises():
    prior = priors.by_name({"*": dist.Normal(torch.zeros(7), 1.0).to_event(1)})
    model = BNN(MLP([2, 1]), prior, Gaussian(1.0))
    with pytest.raises(ValueError, match="event shape"):
        _trace_params(model)


# ------------------------------------------------------------------------------------------------
# by_name
# ------------------------------------------------------------------------------------------------


def test_by_name_first_pattern_wins_and_accepts_distributions_and_callables():
    net = MLP([3, 4, 2])
    prior = priors.by_name({
        "fc1.bias": dist.Laplace(0.0, 2.0),  # a raw pyro distribution
        "*.bias": priors.Normal(10.0),  # would match fc1.bias too: the first pattern wins
        "fc0.*": lambda spec: dist.Normal(0.0, 1.0 / spec.fan_in),  # callable spec -> dist
        "*": priors.Normal(0.5),
    })
    trace = _trace_params(BNN(net, prior, Gaussian(1.0)))
    fns = {n: trace.nodes[n]["fn"].base_dist for n in net.param_specs}
    assert isinstance(fns["fc1.bias"], dist.Laplace)
    assert float(fns["fc1.bias"].scale.unique()) == 2.0
    assert isinstance(fns["fc0.bias"], dist.Normal)
    assert float(fns["fc0.bias"].scale.unique()) == 10.0
    assert float(fns["fc0.weight"].scale.unique()) == pytest.approx(1 / 3)
    assert float(fns["fc1.weight"].scale.unique()) == 0.5
    for n, spec in net.param_specs.items():
        assert tuple(trace.nodes[n]["fn"].event_shape) == spec.shape


def test_by_name_unmatched_parameter_raises_naming_it():
    prior = priors.by_name({"*.weight": priors.Normal(1.0), "fc0.bias": priors.Normal(1.0)})
    model = BNN(MLP([3, 4, 2]), prior, Gaussian(1.0))
    with pytest.raises(ValueError, match="no prior pattern matches parameter 'fc1.bias'"):
        _trace_params(model)


def test_by_name_pattern_matching_nothing_raises_naming_it():
    prior = priors.by_name({"fc7.*": priors.Normal(1.0), "*": priors.Normal(1.0)})
    model = BNN(MLP([3, 4, 2]), prior, Gaussian(1.0))
    with pytest.raises(ValueError, match=r"prior pattern 'fc7\.\*' matches no parameter"):
        _trace_params(model)


def test_by_name_rejects_empty_rules_and_bad_callables():
    with pytest.raises(ValueError, match="at least one pattern"):
        priors.by_name({})
    model = BNN(MLP([2, 1]), priors.by_name({"*": lambda spec: 3.0}), Gaussian(1.0))
    with pytest.raises(TypeError, match="expected a pyro.distributions.Distribution"):
        _trace_params(model)


# ------------------------------------------------------------------------------------------------
# A user-defined prior works with every guide
# ------------------------------------------------------------------------------------------------


class StudentT(priors.ElementwisePrior):
    """A heavy-tailed user prior in a few lines."""

    def __init__(self, df=3.0):
        self.df = df

    def distribution(self, spec):
        return dist.StudentT(self.df, 0.0, 1.0 / math.sqrt(spec.fan_in))


def _toy_regression(n=24):
    g = torch.Generator().manual_seed(1)
    x = torch.linspace(-2, 2, n).unsqueeze(-1)
    y = torch.sin(x) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


@pytest.mark.parametrize("guide_name", ["delta", "meanfield", "meanfield_lrt", "autonormal"])
def test_user_prior_works_with_every_guide(guide_name):
    x, y = _toy_regression()
    model = BNN(MLP([1, 8, 1], "tanh"), StudentT(4.0), Gaussian(0.3))
    trace = _trace_params(model)
    assert isinstance(trace.nodes["fc0.weight"]["fn"].base_dist, dist.StudentT)
    if guide_name == "delta":
        guide = Delta(model)
    elif guide_name == "meanfield":
        guide = MeanField(model)
    elif guide_name == "meanfield_lrt":
        guide = MeanField(model, local_reparameterization=True)
    else:
        guide = AutoNormal(model)
        guide(x, y)  # creates the guide's parameters
    result = hb.inference.fit(model, guide, (x, y), steps=20, lr=0.01)
    assert result.steps == 20 and len(result.losses) == 20
    assert all(math.isfinite(v) for v in result.losses)
    pred = hb.inference.predict(model, guide, x, num_samples=7)
    assert pred.outputs.shape == (7, len(x), 1)
    assert torch.isfinite(pred.outputs).all()
    assert torch.isfinite(pred.mean()).all() and torch.isfinite(pred.std()).all()


# ------------------------------------------------------------------------------------------------
# on_device
# ------------------------------------------------------------------------------------------------


def _mixture():
    return dist.MixtureSameFamily(dist.Categorical(probs=torch.tensor([0.3, 0.7])),
                                  dist.Normal(torch.zeros(2), torch.tensor([1.0, 0.1])))


@pytest.mark.parametrize("make", [lambda: dist.Normal(0.5, 2.0), lambda: dist.LogNormal(0.2, 0.7),
                                  _mixture])
def test_on_device_cpu_is_equivalent(make):
    d = make()
    moved = priors.on_device(d, "cpu")
    assert type(moved) is type(d)
    x = torch.tensor([0.05, 0.3, 1.2, 2.5])
    assert_close(moved.log_prob(x), d.log_prob(x), atol=1e-6)
    assert priors.on_device(d, None) is d


@pytest.mark.parametrize("make", [lambda: dist.Normal(0.5, 2.0), lambda: dist.LogNormal(0.2, 0.7),
                                  _mixture])
def test_on_device_moves_every_tensor(make):
    """Moving to another device (here the shape-only 'meta' device) moves every parameter.

    ScaleMixture priors are MixtureSameFamily distributions: if they are not moved, a model on
    CUDA mixes CPU and GPU tensors.
    """
    d = make()
    with pyro.validation_enabled(False):
        moved = priors.on_device(d, "meta")
    if isinstance(d, dist.MixtureSameFamily):
        tensors = [moved.mixture_distribution.logits, moved.component_distribution.loc,
                   moved.component_distribution.scale]
    else:
        tensors = [moved.loc, moved.scale]
    assert [t.device.type for t in tensors] == ["meta"] * len(tensors)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_scale_mixture_prior_on_cuda():  # pragma: no cover - GPU only
    model = BNN(MLP([2, 3, 1]), priors.ScaleMixture(), Gaussian(1.0)).to("cuda")
    trace = poutine.trace(model).get_trace(torch.randn(4, 2, device="cuda"),
                                           torch.randn(4, 1, device="cuda"))
    assert torch.isfinite(trace.log_prob_sum())


# ------------------------------------------------------------------------------------------------
# Likelihoods and the BNN model
# ------------------------------------------------------------------------------------------------


def _conditioned(model, params):
    return poutine.condition(model, data=params)


def test_gaussian_fixed_noise_log_prob_and_minibatch_scaling():
    net = MLP([2, 1])
    model = BNN(net, priors.Normal(1.0), Gaussian(0.4))
    params = {"fc0.weight": torch.tensor([[1.0, -2.0]]), "fc0.bias": torch.tensor([0.5])}
    x = torch.randn(6, 2)
    y = torch.randn(6)
    f = x @ params["fc0.weight"].T + params["fc0.bias"]
    trace = poutine.trace(_conditioned(model, params)).get_trace(x, y)
    obs = trace.nodes["obs"]
    assert obs["is_observed"]
    expected = _normal_logpdf(y.double() - f[:, 0].double(), 0.4).sum()
    assert_close(obs["fn"].log_prob(obs["value"]).sum(), expected, atol=1e-4)
    # a minibatch of a 60-example dataset: the likelihood is scaled by 60 / 6
    trace = poutine.trace(_conditioned(model, params)).get_trace(x, y, 60)
    trace.compute_log_prob()
    assert_close(trace.nodes["obs"]["log_prob_sum"], 10 * expected, atol=1e-3)
    # y given as (N, 1) is the same
    trace2 = poutine.trace(_conditioned(model, params)).get_trace(x, y.unsqueeze(-1))
    assert_close(trace2.nodes["obs"]["fn"].log_prob(trace2.nodes["obs"]["value"]).sum(),
                 expected, atol=1e-4)
    # predictive
    pred = model.likelihood.predictive(f, {})
    assert pred.event_shape == (1,) and torch.allclose(pred.base_dist.scale, torch.tensor(0.4))


def test_gaussian_without_y_samples_observations():
    model = BNN(MLP([2, 1]), priors.Normal(1.0), Gaussian(0.4))
    trace = poutine.trace(model).get_trace(torch.randn(5, 2))
    assert trace.nodes["obs"]["value"].shape == (5, 1)
    assert not trace.nodes["obs"]["is_observed"]


def test_gaussian_bad_scale_raises():
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="noise scale must be positive"):
            Gaussian(bad)


def test_learned_noise_site_is_guided():
    x, y = _toy_regression()
    model = BNN(MLP([1, 4, 1]), priors.Normal(1.0), Gaussian(scale=None))
    trace = _trace_params(model)
    assert "noise_scale" in trace.nodes
    assert isinstance(trace.nodes["noise_scale"]["fn"], dist.LogNormal)
    names = [s.name for s in model_sites(model)]
    assert names == [*model.net.param_specs, "noise_scale"]
    for guide in (Delta(model), MeanField(model)):
        gtrace = poutine.trace(guide).get_trace(x, y)
        assert gtrace.nodes["noise_scale"]["value"] > 0
        assert gtrace.nodes["noise_scale"]["value"].shape == ()
        before = {k: v.clone() for k, v in guide.state_dict().items()}
        hb.inference.fit(model, guide, (x, y), steps=10, lr=0.05, device="cpu")
        noise_keys = [k for k in before if "noise_scale" in k]
        assert noise_keys
        assert any(not torch.equal(before[k], guide.state_dict()[k]) for k in noise_keys)
        pred = hb.inference.predict(model, guide, x, num_samples=5)
        assert pred.noise_std.shape == (5,) and (pred.noise_std > 0).all()
    # the noise the model uses is the guided value
    model_trace = poutine.trace(poutine.replay(model, trace=gtrace)).get_trace(x, y)
    assert_close(model_trace.nodes["obs"]["fn"].base_dist.scale.unique(),
                 gtrace.nodes["noise_scale"]["value"].reshape(1))


def test_custom_noise_prior():
    model = BNN(MLP([1, 1]), priors.Normal(1.0),
                Gaussian(scale=None, scale_prior=dist.HalfNormal(0.5)))
    site = [s for s in model_sites(model) if s.name == "noise_scale"][0]
    assert site.transform is not None and not site.is_real
    assert float(site.transform(site.init)) > 0


def test_categorical_log_prob_unclipped():
    lik = Categorical()
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    expected = torch.log_softmax(logits, -1)[torch.arange(2), y]
    assert_close(lik.predictive(logits, {}).log_prob(y), expected, atol=1e-6)


def test_categorical_clip_bounds_loss_of_confident_mistakes():
    lik = Categorical(clip=True)
    logits = torch.tensor([[60.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, -40.0, 3.0]])
    y = torch.tensor([1, 1, 1])
    clipped = logits.softmax(-1).clamp(1e-3, 0.999)
    normalizer = clipped.sum(-1)
    lp = lik.predictive(logits, {}).log_prob(y)
    assert (lp >= math.log(1e-3) - normalizer.log() - 1e-5).all()
    assert_close(lp, torch.log(clipped[:, 1] / normalizer), atol=1e-5)
    # confident mistakes: exactly at the bound
    assert_close(lp[0], math.log(1e-3) - math.log(0.999 + 2e-3), atol=1e-5)
    # without clipping the loss is unbounded
    assert Categorical().predictive(logits, {}).log_prob(y)[0] < -50


def test_categorical_model_observation():
    net = MLP([2, 3])
    model = BNN(net, priors.Normal(1.0), Categorical())
    params = {k: torch.randn(*s.shape) for k, s in net.param_specs.items()}
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 1, 0])
    trace = poutine.trace(_conditioned(model, params)).get_trace(x, y)
    logits = net(params, x)
    expected = torch.log_softmax(logits, -1)[torch.arange(5), y].sum()
    assert_close(trace.nodes["obs"]["fn"].log_prob(y).sum(), expected, atol=1e-5)
    assert model.task == "classification"
