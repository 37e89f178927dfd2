"""Implicit generator guides and their sample-based losses (Bayes by Hypernet, diversity nets)."""

import pyro
import pytest
import torch

from hyperbayes.guides import DiversityGuide, ImplicitGuide
from hyperbayes.inference import (
    ELBO,
    AdversarialELBO,
    DiversityObjective,
    EntropyELBO,
    NearestNeighbourELBO,
    fit,
    predict,
    sample_posterior,
)
from hyperbayes.models import BNN, CNN, MLP, Categorical, Gaussian, priors


def cubic(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 8 - 4
    return x, x[:, 0] ** 3 + 3 * torch.randn(n, generator=g)


def linear_regression(n=10):
    """Bayesian linear regression y = a·x + b + N(0, 0.5²), prior N(0, 1): posterior closed form."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, generator=g)
    y = 0.7 * x[:, 0] - 0.3 + 0.5 * torch.randn(n, generator=g)
    model = BNN(MLP([1, 1], activation="identity"), priors.Normal(1.0), Gaussian(scale=0.5))
    design = torch.cat([x, torch.ones(n, 1)], 1)
    cov = torch.linalg.inv(torch.eye(2) + design.T @ design / 0.25)
    return model, (x, y), cov @ design.T @ y / 0.25, cov.diagonal().sqrt()


def fitted_moments(model, data, loss, steps):
    pyro.set_rng_seed(0)
    guide = ImplicitGuide(model, noise_dim=2, hidden=(32, 32), init_spread=1.0)
    fit(model, guide, data, steps=steps, lr=3e-3, loss=loss, progress=False)
    s = sample_posterior(model, guide, 4000)
    w = torch.cat([s["fc0.weight"].reshape(-1, 1), s["fc0.bias"].reshape(-1, 1)], 1)
    return w.mean(0), w.std(0)


def test_entropy_elbo_recovers_the_gaussian_posterior():
    model, data, mean, std = linear_regression()
    got_mean, got_std = fitted_moments(model, data, EntropyELBO(num_particles=16), 1000)
    assert torch.allclose(got_mean, mean, atol=0.05), (got_mean, mean)
    assert torch.allclose(got_std, std, rtol=0.15), (got_std, std)


@pytest.mark.parametrize("loss", [
    NearestNeighbourELBO(num_particles=16, prior_samples=512),
    AdversarialELBO(num_particles=16, discriminator_steps=3, hidden_sizes=(32, 32),
                    pretrain_steps=100, discriminator_lr=3e-3, discriminator_batch=64)],
    ids=["nearest-neighbour", "adversarial"])
def test_sample_based_kl_elbos_land_near_the_gaussian_posterior(loss):
    model, data, mean, std = linear_regression()
    got_mean, got_std = fitted_moments(model, data, loss, 1000)
    assert torch.allclose(got_mean, mean, atol=0.1), (got_mean, mean)
    assert torch.allclose(got_std, std, rtol=0.3), (got_std, std)


def test_diversity_objective_is_the_negative_entropy_elbo_for_lambda_n_and_flat_prior():
    x, y = cubic()
    model = BNN(MLP([1, 30, 1]), priors.Flat(), Gaussian(scale=3.0))
    guide = ImplicitGuide(model)
    values = []
    for loss in (EntropyELBO(num_particles=6), DiversityObjective(gauge=False, num_particles=6),
                 DiversityObjective(lam=100.0, gauge=False, num_particles=6)):
        pyro.set_rng_seed(3)
        values.append(loss.differentiable_loss(model, guide, x, y, 100))
    elbo, diversity, explicit_n = values
    assert torch.allclose(diversity, elbo, rtol=1e-6)
    assert torch.allclose(explicit_n, elbo, rtol=1e-5)  # λ = N = 100 given explicitly


@pytest.mark.parametrize("kl_weight", [1.0, 0.3])
@pytest.mark.parametrize("over", ["weights", ["fc0.*"]], ids=["every-site", "point-sites"])
def test_diversity_objective_with_prior_is_the_negative_entropy_elbo_under_that_prior(
        over, kl_weight):
    x, y = cubic()
    model = BNN(MLP([1, 30, 1]), priors.Normal(1.0), Gaussian(scale=3.0))
    guide = ImplicitGuide(model, over=over)
    values = []
    for loss in (EntropyELBO(num_particles=6, kl_weight=kl_weight),
                 DiversityObjective(gauge=False, num_particles=6, with_prior=True,
                                    kl_weight=kl_weight),
                 DiversityObjective(gauge=False, num_particles=6, kl_weight=kl_weight)):
        pyro.set_rng_seed(3)
        values.append(loss.differentiable_loss(model, guide, x, y, 100))
    elbo, with_prior, without = values
    # annealed too, the point-estimated sites' prior included: the same objective
    assert torch.allclose(with_prior, elbo, rtol=1e-6)
    pyro.set_rng_seed(3)
    draws = EntropyELBO(num_particles=6).draw(model, guide, x, y, 100)
    assert (draws.point_penalty != 0) == (over != "weights")
    # the paper's objective: no prior term for any site, generated or point-estimated
    assert torch.allclose(without, elbo + kl_weight * (draws.log_prior - draws.point_penalty),
                          rtol=1e-6)
    assert "with_prior=True" in repr(DiversityObjective(with_prior=True))


def test_the_gauged_entropy_is_taken_in_the_dimension_of_the_gauge_manifold():
    from hyperbayes.inference.estimators import entropy_kl
    from hyperbayes.models.gauge import gauge_constraints, gauge_fix

    x, y = cubic()
    model = BNN(MLP([1, 30, 1]), priors.Flat(), Gaussian(scale=3.0))
    guide = ImplicitGuide(model)  # D = 91 generated from 91-dimensional noise
    loss = DiversityObjective(lam=1.0, num_particles=6)
    pyro.set_rng_seed(3)
    draws = loss.draw(model, guide, x, y, 20)
    pyro.set_rng_seed(3)
    value = loss.differentiable_loss(model, guide, x, y, 20)
    fixed = guide.flatten(gauge_fix(draws.values, model.net, center_output_bias=False), 6)
    dim = 91 - gauge_constraints(model.net, center_output_bias=False)
    assert dim == 61  # one norm per hidden unit; a regression output is not centred
    expected = -draws.mean_log_likelihood - entropy_kl(fixed, 1, dim)
    torch.testing.assert_close(value, expected)


def test_gauge_changes_the_entropy_not_the_data_term():
    x, y = cubic()
    model = BNN(MLP([1, 30, 1]), priors.Flat(), Gaussian(scale=3.0))
    guide = ImplicitGuide(model)
    data_terms, losses = [], []
    for gauge in (False, True):
        loss = DiversityObjective(lam=1.0, gauge=gauge, num_particles=6)
        pyro.set_rng_seed(3)
        data_terms.append(loss.draw(model, guide, x, y, 20).mean_log_likelihood)
        pyro.set_rng_seed(3)
        losses.append(loss.differentiable_loss(model, guide, x, y, 20))
    assert torch.allclose(data_terms[0], data_terms[1])
    assert not torch.allclose(losses[0], losses[1])  # the entropy of gauged weights differs


def test_implicit_guide_shapes_slicing_and_point_sites():
    net = MLP([6, 5, 3], weight_norm=True)
    model = BNN(net, priors.by_name({"*.scale": priors.Normal(1.0), "*": priors.Flat()}),
                Categorical())
    guide = ImplicitGuide(model, over="scales", noise_dim=3, hidden=(8,))
    assert guide.generated_names == ["fc0.scale", "fc1.scale"]
    assert guide.head_size == 5 and guide.num_generated == 8
    noise = torch.randn(4, 3)
    values = guide.generate(noise)
    assert values["fc0.scale"].shape == (4, 5) and values["fc1.scale"].shape == (4, 3)
    # the 3-unit site reads the first 3 outputs of the shared head for its position code
    head = guide.generator(torch.cat([noise, guide.position_codes[1].expand(4, 2)], -1))
    expected = guide.offset[5:] + guide.spread[5:] * head[:, :3]
    assert torch.allclose(values["fc1.scale"], expected)
    draws = sample_posterior(model, guide, 7)
    assert draws["fc0.scale"].shape == (7, 5)
    assert draws["fc0.scale"].std(0).min() > 0  # generated: differ across samples
    assert torch.equal(draws["fc0.direction"][0], draws["fc0.direction"][6])  # point estimate
    assert guide.sample_generated(9).shape == (9, 8)
    assert predict(model, guide, torch.randn(11, 6), 7).probs.shape == (7, 11, 3)


def test_plain_elbo_refuses_an_implicit_guide():
    x, y = cubic()
    model = BNN(MLP([1, 10, 1]), priors.Normal(1.0), Gaussian(scale=3.0))
    with pytest.raises(TypeError, match="no tractable density"):
        ELBO().differentiable_loss(model, ImplicitGuide(model), x, y)


def test_sample_based_losses_check_their_inputs():
    x, y = cubic()
    with pytest.raises(ValueError, match="num_particles must be ≥ 2"):
        EntropyELBO(num_particles=1)
    flat = BNN(MLP([1, 10, 1]), priors.Flat(), Gaussian(scale=3.0))
    with pytest.raises(ValueError, match="cannot be sampled"):
        NearestNeighbourELBO(num_particles=4).differentiable_loss(flat, ImplicitGuide(flat), x, y)
    model = BNN(MLP([1, 10, 1]), priors.Normal(1.0), Gaussian(scale=3.0))
    from hyperbayes.guides import MeanField
    with pytest.raises(TypeError, match="not an implicit guide"):
        EntropyELBO().differentiable_loss(model, MeanField(model), x, y)


@pytest.mark.parametrize("make_loss", [
    lambda **kw: EntropyELBO(num_particles=4, **kw),
    lambda **kw: NearestNeighbourELBO(num_particles=4, **kw),
    lambda **kw: AdversarialELBO(pretrain_steps=5, **kw),
    lambda **kw: DiversityObjective(gauge=False, num_particles=4, **kw)])
def test_sample_based_losses_refuse_a_generator_that_cannot_cover_the_space(make_loss):
    # noise of 4 dimensions for 31 weights: q lives on a 4-dimensional manifold, KL(q‖p) = ∞
    x, y = cubic()
    model = BNN(MLP([1, 10, 1]), priors.Normal(1.0), Gaussian(scale=3.0))
    thin = ImplicitGuide(model, noise_dim=4)
    loss = make_loss()
    with pytest.raises(ValueError, match=r"D=31 scalars from noise of dimension 4, but its "
                                         r"samples span at most 4 dimensions.*noise_dim ≥ 31"):
        loss.differentiable_loss(model, thin, x, y)
    if isinstance(loss, AdversarialELBO):
        assert loss.discriminator is None  # refused before any pretraining
    # noise of D dimensions read through a narrower first layer spans no more than its width
    narrow = ImplicitGuide(model, hidden=(8, 64))
    assert narrow.noise_dim == 31 and narrow.support_dim == 8
    with pytest.raises(ValueError, match="span at most 8 dimensions"):
        make_loss().differentiable_loss(model, narrow, x, y)
    # opting in knowingly trains it; noise of D dimensions and a first layer at least D wide
    # (the default, 64 ≥ 31) need no opt-in
    assert torch.isfinite(make_loss(allow_degenerate=True).differentiable_loss(model, thin, x, y))
    full = ImplicitGuide(model)
    assert full.noise_dim == full.support_dim == 31
    assert torch.isfinite(make_loss().differentiable_loss(model, full, x, y))


def test_adversarial_elbo_trains_the_discriminator_apart_from_the_generator():
    x, y = cubic()
    model = BNN(MLP([1, 10, 1]), priors.Normal(1.0), Gaussian(scale=3.0))
    guide = ImplicitGuide(model)
    loss = AdversarialELBO(num_particles=2, discriminator_steps=3, pretrain_steps=20)
    loss.differentiable_loss(model, guide, x, y).backward()
    assert len(loss.discriminator_losses) == 23  # pre-training + the first step's updates
    before = [p.detach().clone() for p in loss.discriminator.parameters()]
    for p in loss.discriminator.parameters():
        p.grad = None
    value = loss.differentiable_loss(model, guide, x, y)
    value.backward()
    assert len(loss.discriminator_losses) == 26
    assert all(p.grad is None for p in loss.discriminator.parameters())  # frozen in the loss
    after = list(loss.discriminator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert guide.offset.grad is not None and guide.offset.grad.abs().sum() > 0


def test_diversity_guide_generates_the_cnn_target_unit_by_unit():
    net = CNN()  # the paper's 20,018-weight target
    model = BNN(net, priors.Flat(), Categorical())
    guide = DiversityGuide(model)
    assert guide.units == [32, 16, 8, 1]  # one code per hidden unit, one for the output layer
    noise = guide.noise_distribution().sample((4,))
    assert noise.abs().max() <= 1
    values = guide.generate(noise)
    for name, spec in net.param_specs.items():
        assert values[name].shape == (4, *spec.shape)
    assert sum(spec.numel for spec in net.param_specs.values()) == 20018
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss = DiversityObjective(lam=1000.0, num_particles=4, allow_degenerate=True)
    loss.differentiable_loss(model, guide, x, y, 100).backward()
    for module in (guide.extractor, *guide.layer_generators):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_diversity_guide_rejects_weight_norm_nets():
    net = MLP([4, 3, 2], weight_norm=True)
    model = BNN(net, priors.Flat(), Categorical())
    with pytest.raises(ValueError, match="weight-norm"):
        DiversityGuide(model)
