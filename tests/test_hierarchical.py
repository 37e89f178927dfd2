"""Hierarchical priors: hyper-latents declared once, drawn as sites, inferred by every guide and
NUTS, returned with the posterior samples."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import hyperbayes as hb
from hyperbayes.guides import Delta, FlowGuide, ImplicitGuide, MeanField
from hyperbayes.inference import fit, nuts, sample_posterior
from hyperbayes.models import BNN, MLP, Gaussian, TorchNet, priors

pytestmark = pytest.mark.usefixtures("one_thread")


class LayerScale(priors.HierarchicalPrior):
    """A user's hierarchical prior: one learned scale per parameter, s ~ LogNormal(0, 1),
    w ~ N(0, s² / fan_in)."""

    def hyper_latents(self, specs):
        return {f"{name}_s": dist.LogNormal(0.0, 1.0) for name in specs}

    def distribution(self, spec, hyper):
        s = priors.scalar(hyper[f"{spec.name}_s"], spec)
        return dist.Normal(torch.zeros(()), s / math.sqrt(spec.fan_in))


PRIORS = {
    "horseshoe": lambda: priors.by_name({"*.bias": priors.Normal(1.0), "*": priors.Horseshoe()}),
    "ard": lambda: priors.by_name({"*.bias": priors.Normal(1.0), "*": priors.ARD()}),
    "user": LayerScale,
}
HYPER = {
    "horseshoe": {"horseshoe_tau": (), "fc0.weight_lambda": (8,), "fc1.weight_lambda": (1,)},
    "ard": {"fc0.weight_ard_scale": (1,), "fc1.weight_ard_scale": (8,)},
    "user": {"fc0.weight_s": (), "fc0.bias_s": (), "fc1.weight_s": (), "fc1.bias_s": ()},
}
GUIDES = {
    "delta": Delta,
    "meanfield": MeanField,
    "meanfield-lrt": lambda m: MeanField(m, local_reparameterization=True),
    "flow": lambda m: FlowGuide(m, over="weights", num_flows=1, hidden=8),
    "implicit": lambda m: ImplicitGuide(m),
    "autonormal": pyro.infer.autoguide.AutoNormal,
}


def _data():
    x = torch.linspace(-2, 2, 20).unsqueeze(-1)
    return x, torch.sin(x)


@pytest.mark.parametrize("guide_name", list(GUIDES))
@pytest.mark.parametrize("prior_name", list(PRIORS))
def test_every_guide_fits_hierarchical_priors_and_returns_hyper_latents(prior_name, guide_name):
    model = BNN(MLP([1, 8, 1]), PRIORS[prior_name](), Gaussian(0.1))
    guide = GUIDES[guide_name](model)
    result = fit(model, guide, _data(), steps=25, lr=1e-2)
    assert all(math.isfinite(v) for v in result.losses)
    samples = sample_posterior(model, guide, 5)
    for name, shape in HYPER[prior_name].items():
        assert samples[name].shape == (5, *shape), name
        assert (samples[name] > 0).all(), name  # scales stay in their support
    assert samples["fc0.weight"].shape == (5, 8, 1)


@pytest.mark.parametrize("prior_name", list(PRIORS))
def test_nuts_samples_hierarchical_priors(prior_name):
    model = BNN(MLP([1, 8, 1]), PRIORS[prior_name](), Gaussian(0.1))
    result = nuts(model, _data(), num_samples=15, warmup=15, num_chains=1, max_tree_depth=4,
                  warn=False)
    for name, shape in HYPER[prior_name].items():
        assert result.samples[name].shape == (15, *shape), name


def test_horseshoe_log_density_is_the_hierarchical_formula():
    net = MLP([3, 4, 2])
    prior = priors.Horseshoe(global_scale=0.5)
    trace = pyro.poutine.trace(prior.sample).get_trace(net.param_specs, torch.device("cpu"))
    values = {n: s["value"] for n, s in trace.nodes.items() if s["type"] == "sample"}
    tau = values["horseshoe_tau"]
    expected = dist.HalfCauchy(0.5).log_prob(tau)
    for name, spec in net.param_specs.items():
        lam = values[f"{name}_lambda"]
        expected = expected + dist.HalfCauchy(1.0).log_prob(lam).sum()
        scale = tau * (lam.reshape(-1, 1) if len(spec.shape) == 2 else lam)
        expected = expected + dist.Normal(0.0, scale / math.sqrt(spec.fan_in)).expand(
            spec.shape).log_prob(values[name]).sum()
    torch.testing.assert_close(trace.log_prob_sum(), expected)


def test_ard_shares_one_scale_per_input_and_runs_on_a_conv_module():
    module = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 1))
    prior = priors.by_name({"*.bias": priors.Normal(1.0), "*": priors.ARD()})
    model = BNN(TorchNet(module), prior, Gaussian(0.1))
    draws = hb.inference.sample_prior(model, 4000)
    assert draws["0.weight_ard_scale"].shape == (4000, 2)  # per input channel
    # w / (s_j / √fan_in) is standard normal whatever s_j is
    w, s = draws["0.weight"], draws["0.weight_ard_scale"]
    z = w / (s[:, None, :, None, None] / math.sqrt(2 * 9))
    assert z.std().item() == pytest.approx(1.0, abs=0.03)
    x = torch.randn(10, 2, 6, 6)
    fit(model, MeanField(model), (x, torch.randn(10, 1)), steps=3)


def test_hyper_latent_names_that_break_autoguides_are_refused():
    class Dotted(LayerScale):
        def hyper_latents(self, specs):
            return {f"{name}.s": dist.LogNormal(0.0, 1.0) for name in specs}

        def distribution(self, spec, hyper):
            return super().distribution(spec, {f"{spec.name}_s": hyper[f"{spec.name}.s"]})

    with pytest.raises(ValueError, match=r"named under parameter 'fc0.weight'.*'fc0.weight_s'"):
        BNN(MLP([1, 2, 1]), Dotted(), Gaussian(0.1))  # refused when the model is built


def test_sample_based_losses_needing_marginal_prior_draws_refuse_hierarchical_priors():
    model = BNN(MLP([1, 4, 1]), PRIORS["horseshoe"](), Gaussian(0.1))
    guide = ImplicitGuide(model, hidden=(32,))
    with pytest.raises(ValueError, match="hierarchical prior .* use EntropyELBO"):
        fit(model, guide, _data(), steps=1,
            loss=hb.inference.NearestNeighbourELBO(num_particles=4))


def test_readme_hierarchical_prior_example_runs():
    """The getting-started page's "Hierarchical priors" example, as written, fits and returns
    its sites."""
    from pathlib import Path

    text = Path(__file__).parents[1].joinpath("docs", "getting-started.md").read_text()
    code = text.split("## Hierarchical priors", 1)[1].split("```python\n", 1)[1]
    namespace = {"priors": priors, "dist": dist}
    exec(compile(code.split("```", 1)[0], "getting-started.md", "exec"), namespace)  # noqa: S102
    model = BNN(MLP([1, 4, 1]), namespace["LayerScale"](), Gaussian(0.1))
    guide = MeanField(model)
    fit(model, guide, _data(), steps=3)
    assert sample_posterior(model, guide, 2)["fc1.bias_s"].shape == (2,)
    assert "horseshoe_tau" in hb.inference.sample_prior(
        BNN(MLP([1, 4, 1]), namespace["prior"], Gaussian(0.1)), 2)


def test_one_hierarchical_prior_under_several_patterns_shares_its_hyper_latents():
    shared = priors.Horseshoe()
    prior = priors.by_name({"fc0.*": shared, "fc1.*": shared})
    model = BNN(MLP([1, 3, 1]), prior, Gaussian(0.1))
    draws = hb.inference.sample_prior(model, 2)
    assert {"horseshoe_tau", "fc0.weight_lambda", "fc1.bias_lambda"} <= set(draws)
