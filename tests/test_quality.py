"""VI quality: the ELBO, the importance-weighted bound and PSIS k̂ against closed forms."""

import math

import pyro
import pytest
import torch
from pyro.infer.autoguide import AutoMultivariateNormal

import hyperbayes as hb
from hyperbayes.guides import Delta, ImplicitGuide, MeanField
from hyperbayes.inference.quality import KHAT_GOOD, KHAT_UNRELIABLE, vi_quality
from hyperbayes.models import BNN, MLP, Gaussian, priors
from tests.common import conjugate_linear_regression

SIGMA, PRIOR_SCALE = 0.5, 1.0


@pytest.fixture(scope="module")
def linear():
    """Bayesian linear regression y = x·w + b + N(0, σ²), w, b ~ N(0, 1): posterior and log Z."""
    return conjugate_linear_regression(SIGMA, PRIOR_SCALE)


def _model():
    return BNN(MLP([2, 1]), priors.Normal(PRIOR_SCALE), Gaussian(SIGMA))


def test_the_exact_posterior_gives_log_z_and_a_small_khat(linear):
    pyro.set_rng_seed(0)
    model = _model()
    guide = AutoMultivariateNormal(model)
    guide(linear["x"], linear["y"])
    chol = torch.linalg.cholesky(linear["cov"]).float()
    with torch.no_grad():  # q = the closed-form posterior: every importance weight equals Z
        guide.loc.copy_(linear["mean"].float())
        guide.scale = chol.diagonal().clone()
        guide.scale_tril = chol / chol.diagonal()[:, None]
    quality = vi_quality(model, guide, (linear["x"], linear["y"]), 1000, device="cpu")
    assert quality["elbo"] == pytest.approx(linear["log_z"], abs=1e-4)
    assert quality["iwae"] == pytest.approx(linear["log_z"], abs=1e-4)
    assert quality["khat"] < KHAT_GOOD and quality["khat_reading"] == "good"
    assert quality["ess_fraction"] > 0.99


def test_iwae_is_above_the_elbo_and_reaches_log_z_and_a_collapse_is_flagged(linear):
    torch.manual_seed(0)
    model = _model()
    guide = MeanField(model)
    data = (linear["x"], linear["y"])
    hb.inference.fit(model, guide, data, steps=1500, lr=0.05, progress=False, seed=0)
    fitted = vi_quality(model, guide, data, 4000, device="cpu")
    # mean field misses the posterior's correlations: its ELBO is below log Z; IWAE with 4,000
    # draws closes the gap (up to its Monte Carlo error) and k̂ says q is usable
    assert fitted["elbo"] < linear["log_z"] - 0.05
    assert fitted["iwae"] > fitted["elbo"] and fitted["kl_lower_bound"] > 0.05
    assert abs(fitted["iwae"] - linear["log_z"]) < 0.05
    assert fitted["khat"] < KHAT_UNRELIABLE
    # the ELBO from the importance weights is the ELBO: the loss fit minimises, averaged
    with torch.no_grad():
        losses = [hb.inference.ELBO(num_particles=100).differentiable_loss(model, guide,
                                                                           *data).item()
                  for _ in range(100)]
    assert -sum(losses) / len(losses) == pytest.approx(fitted["elbo"], abs=0.05)
    with torch.no_grad():  # collapse q: 20 times narrower than the fitted mean field
        for log_scale in guide.log_scale_params.values():
            log_scale.sub_(math.log(20.0))
    collapsed = vi_quality(model, guide, data, 4000, device="cpu")
    assert collapsed["khat"] > KHAT_UNRELIABLE and collapsed["khat_reading"] == "unreliable"
    assert collapsed["elbo"] < fitted["elbo"] - 1 and collapsed["ess_fraction"] < 0.05


def test_guides_without_a_density_are_reported_not_scored(linear):
    data = (linear["x"], linear["y"])
    model = _model()
    for guide, word in ((Delta(model), "point estimate"), (ImplicitGuide(model), "implicit")):
        quality = vi_quality(model, guide, data, 100, device="cpu")
        assert quality["available"] is False and word in quality["reason"]


def test_an_implicit_guides_kl_lower_bound_is_its_kl_when_q_is_gaussian():
    """A generator without hidden layers maps Gaussian noise linearly: q = N(μ, J Jᵀ) over the
    one generated site, whose KL to the N(0, 1) prior is closed form, and the Gaussian bound is
    then exact."""
    model = BNN(MLP([2, 3, 1]), priors.Normal(PRIOR_SCALE), Gaussian(SIGMA))
    guide = ImplicitGuide(model, over=["fc0.weight"], hidden=(), init_spread=0.5)  # D = 6
    zero = torch.zeros(guide.noise_dim)
    jacobian = torch.autograd.functional.jacobian(guide.generate_flat, zero).double()
    q = torch.distributions.MultivariateNormal(guide.generate_flat(zero).detach().double(),
                                               jacobian @ jacobian.T)
    p = torch.distributions.MultivariateNormal(torch.zeros(6, dtype=torch.float64),
                                               PRIOR_SCALE ** 2 * torch.eye(6).double())
    exact = torch.distributions.kl_divergence(q, p).item()
    pyro.set_rng_seed(0)
    bound = hb.inference.implicit_kl_lower_bound(guide, 20_000, device="cpu")
    assert bound["dim"] == bound["support_dim"] == 6
    tolerance = 0.15 + 3 * bound["standard_error"]
    assert bound["kl_lower_bound"] == pytest.approx(exact, abs=tolerance)
    narrow = ImplicitGuide(model, noise_dim=5)  # q on a 5-dimensional manifold: KL infinite
    infinite = hb.inference.implicit_kl_lower_bound(narrow, device="cpu")
    assert infinite["kl_lower_bound"] == math.inf and infinite["support_dim"] == 5
    with pytest.raises(TypeError, match="not an implicit guide"):
        hb.inference.implicit_kl_lower_bound(MeanField(model))
    with pytest.raises(ValueError, match="num_samples"):
        hb.inference.implicit_kl_lower_bound(guide, 5, device="cpu")  # D + 2 at least


def test_a_few_sample_kl_estimate_in_high_dimension_is_caught_below_the_bound(linear):
    """With S = 200 draws in 6 dimensions the entropy estimate matches the exact bound of a
    Gaussian q; with S = 5 in 91 dimensions (a 1-30-1 net) it falls hundreds of nats short of a
    lower bound of the KL it estimates. The diversity objective has no KL term to check."""
    from hyperbayes.inference import DiversityObjective, EntropyELBO

    data = (linear["x"], linear["y"])
    model = _model()
    pyro.set_rng_seed(0)
    gaussian = ImplicitGuide(model, over=["fc0.weight"], hidden=(), init_spread=0.5)
    check = hb.inference.implicit_kl_check(model, gaussian, EntropyELBO(num_particles=200), data,
                                           device="cpu")
    assert check["below_bound"] is False
    assert check["loss_estimate"] == pytest.approx(check["kl_lower_bound"], abs=0.5)
    assert check["elbo_upper_bound"] < check["expected_log_likelihood"]
    wide = BNN(MLP([2, 30, 1]), priors.Normal(PRIOR_SCALE), Gaussian(SIGMA))
    guide = ImplicitGuide(wide)
    check = hb.inference.implicit_kl_check(wide, guide, EntropyELBO(num_particles=5), data,
                                           repeats=10, device="cpu")
    assert check["dim"] == 121 and check["below_bound"] is True
    assert check["kl_lower_bound"] - check["loss_estimate"] > 100
    paper = hb.inference.implicit_kl_check(wide, guide, DiversityObjective(num_particles=5,
                                                                           gauge=False),
                                           data, repeats=2, device="cpu")
    assert paper["loss_estimate"] is None and paper["below_bound"] is None
    with pytest.raises(TypeError, match="not a sample-based loss"):
        hb.inference.implicit_kl_check(wide, guide, hb.inference.ELBO(), data, device="cpu")


@pytest.mark.parametrize("method", ["flow", "metaprior", "meanfield"])
def test_every_density_guide_of_the_registry_is_scored(method):
    # flows (an auxiliary latent vector split into sites) and the MetaPrior (weights drawn from
    # P(W | Z) with the density masked: q = p there) pass through the same weights
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 16).unsqueeze(-1)
    y = x.pow(3) + 0.1 * torch.randn_like(x)
    model, guide, loss, options = hb.methods.setup(method, "regression", [1, 8, 1],
                                                   priors.Normal(1.0), Gaussian(0.1))
    hb.inference.fit(model, guide, (x, y), loss=loss, progress=False, seed=0,
                     **hb.methods.fit_options(options, 30))
    quality = vi_quality(model, guide, (x, y), 64, chunk=20, device="cpu")
    assert quality["available"], quality
    assert math.isfinite(quality["elbo"]) and quality["iwae"] >= quality["elbo"]
    with torch.no_grad():
        losses = [loss.differentiable_loss(model, guide, x, y).item() for _ in range(40)]
    spread = torch.tensor(losses).std().item()
    assert -sum(losses) / len(losses) == pytest.approx(quality["elbo"],
                                                       abs=4 * spread / math.sqrt(64) + 1.0)


def test_vi_quality_checks_its_inputs(linear):
    model = _model()
    guide = MeanField(model)
    with pytest.raises(ValueError, match="num_samples"):
        vi_quality(model, guide, (linear["x"], linear["y"]), 1, device="cpu")
    with pytest.raises(ValueError, match="x"):
        vi_quality(model, guide, (linear["x"][:, :1], linear["y"]), 10, device="cpu")


def test_a_pyro_autoguide_is_scored(linear):
    # AutoNormal draws auxiliary unconstrained sites and Delta sites on top: scored as a density
    from pyro.infer.autoguide import AutoNormal

    pyro.clear_param_store()
    model = _model()
    guide = AutoNormal(model)
    data = (linear["x"], linear["y"])
    hb.inference.fit(model, guide, data, steps=1500, lr=0.05, progress=False, seed=0,
                     loss=hb.inference.ELBO(analytic_kl=False))
    quality = vi_quality(model, guide, data, 2000, device="cpu")
    assert quality["available"] and quality["elbo"] < quality["iwae"]
    assert abs(quality["iwae"] - linear["log_z"]) < 0.05


def test_a_learned_noise_scale_is_one_per_particle_under_a_particle_plate():
    """With σ a latent site, K particles drawn in one plate (vectorized ELBO particles, the
    importance draws of vi_quality) each use their own σ: the observations' batch shape is
    (K, N), not (K, K, N), and the importance weights do not depend on how draws are
    chunked."""
    from hyperbayes.inference.elbo import replayed_traces
    from hyperbayes.inference.quality import log_importance_weights

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2, generator=generator)
    y = x @ torch.tensor([1.0, -1.0]) + 0.3 * torch.randn(20, generator=generator)
    model = BNN(MLP([2, 1]), priors.Normal(1.0), Gaussian(scale=None))
    guide = MeanField(model)
    hb.inference.fit(model, guide, (x, y), steps=300, lr=0.05, progress=False, seed=0)
    with torch.no_grad(), pyro.plate("particles", 3, dim=-2):
        model_trace, _ = replayed_traces(model, guide, x, y[:, None])
    assert tuple(model_trace.nodes["obs"]["fn"].batch_shape) == (3, 20)
    means = []
    for chunk in (1, 50):
        torch.manual_seed(1)
        means.append(log_importance_weights(model, guide, x, y[:, None], 400,
                                            chunk=chunk).mean().item())
    assert abs(means[0] - means[1]) < 0.5  # ± MC error; it was 160 nats apart
