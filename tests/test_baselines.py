"""The baselines users would pick instead: deep ensembles, the Laplace approximation and SWAG,
checked against closed forms and against MAP."""

import pytest
import torch

import hyperbayes as hb
from hyperbayes.guides import Delta, Ensemble, LaplaceGuide, SWAGGuide
from hyperbayes.guides.swag import swag_moments
from hyperbayes.models import BNN, MLP, Categorical, Gaussian, conjugate_regression, priors

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit_map(model, guide, data, steps=3000):
    return hb.inference.fit(model, guide, data, steps=steps, lr=2e-2, lr_schedule="cosine",
                            progress=False, seed=0)


def test_laplace_is_exact_on_the_conjugate_regression():
    """On a linear-Gaussian model the log posterior is quadratic: Laplace is the posterior."""
    problem = conjugate_regression(n=40, d=3, noise=0.5, prior_scale=1.0)
    guide = LaplaceGuide(problem.model, hessian="full", prior_precision="model")
    _fit_map(problem.model, guide, problem.data)
    assert guide.fitted
    posterior = guide.get_extra_state()["posterior"]
    torch.testing.assert_close(posterior["mean"].double(), problem.mean, atol=2e-4, rtol=0)
    tril = posterior["scale_tril"].double()
    torch.testing.assert_close(tril @ tril.T, problem.cov, atol=1e-6, rtol=1e-3)
    draws = problem.flatten(hb.inference.sample_posterior(problem.model, guide, 40_000))
    torch.testing.assert_close(draws.mean(0), problem.mean, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), problem.cov, atol=3e-4, rtol=0.05)


def test_laplace_with_a_kl_weight_is_the_tempered_posteriors_gaussian():
    """ŵ maximizes log p(y | w) + β log p(w); with the model's prior precision the Laplace
    covariance is that objective's, (XᵀX/σ² + β/σ_p²)⁻¹: exact for a linear-Gaussian model."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(30, 2, generator=gen)
    y = x @ torch.tensor([[0.8], [-0.4]]) + 0.5 * torch.randn(30, 1, generator=gen)
    beta = 0.1
    model = BNN(MLP([2, 1], bias=False), priors.Normal(0.3), Gaussian(0.5))
    guide = LaplaceGuide(model, hessian="full", prior_precision="model")
    hb.inference.fit(model, guide, (x, y), steps=3000, lr=2e-2, lr_schedule="cosine",
                     progress=False, seed=0, loss=hb.inference.ELBO(kl_weight=beta))
    precision = beta * torch.eye(2, dtype=torch.float64) / 0.3 ** 2 \
        + x.T.double() @ x.double() / 0.5 ** 2
    cov = torch.linalg.inv(precision)
    mean = cov @ x.T.double() @ y.double()[:, 0] / 0.5 ** 2
    posterior = guide.get_extra_state()["posterior"]
    torch.testing.assert_close(posterior["mean"].double(), mean, atol=2e-4, rtol=0)
    tril = posterior["scale_tril"].double()
    torch.testing.assert_close(tril @ tril.T, cov, atol=1e-6, rtol=1e-3)
    unweighted = LaplaceGuide(model, hessian="full", prior_precision="model")
    before = [p.detach().clone() for p in unweighted.parameters()]
    with pytest.raises(ValueError, match="kl_weight 0.0: ŵ would be trained without the prior"):
        hb.inference.fit(model, unweighted, (x, y), steps=5, progress=False,
                         loss=hb.inference.ELBO(kl_weight=0.0))
    for value, start in zip(unweighted.parameters(), before, strict=True):  # before any step
        torch.testing.assert_close(value.detach(), start)
    # a schedule's last weight counts, not its first: warm-up from 0 ends at 1
    hb.inference.fit(model, unweighted, (x, y), steps=5, progress=False, kl_schedule="warmup")
    assert unweighted.fitted


def test_kfac_laplace_is_exact_on_a_linear_model_without_bias():
    """KFAC drops the weight-bias cross terms; without a bias, on one output, it is exact."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=gen)
    y = x @ torch.tensor([[1.0], [-0.5], [0.3]]) + 0.4 * torch.randn(50, 1, generator=gen)
    model = BNN(MLP([3, 1], bias=False), priors.Normal(1.0), Gaussian(0.4))
    guide = LaplaceGuide(model, hessian="kron", prior_precision=1.0)
    _fit_map(model, guide, (x, y))
    precision = torch.eye(3, dtype=torch.float64) + x.T.double() @ x.double() / 0.4 ** 2
    cov = torch.linalg.inv(precision)
    mean = cov @ x.T.double() @ y.double()[:, 0] / 0.4 ** 2
    draws = hb.inference.sample_posterior(model, guide, 40_000)["fc0.weight"].reshape(
        -1, 3).double()
    torch.testing.assert_close(guide.get_extra_state()["posterior"]["mean"].double(), mean,
                               atol=2e-4, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), cov, atol=2e-5, rtol=0.05)


def test_laplace_posterior_is_saved_with_the_guide_and_marglik_tunes_the_prior():
    data = hb.datasets.load("digits")
    model = BNN(MLP([64, 16, 10]), priors.Normal(1.0), Categorical())
    guide = LaplaceGuide(model, hessian="diag", prior_precision="marglik")
    hb.inference.fit(model, guide, data.train, steps=150, lr=1e-2, progress=False, seed=0)
    state = guide.state_dict()
    assert float(state["_extra_state"]["posterior"]["prior_precision"]) != 1.0  # tuned
    fresh = LaplaceGuide(BNN(MLP([64, 16, 10]), priors.Normal(1.0), Categorical()),
                         hessian="diag")
    assert not fresh.fitted
    fresh.load_state_dict(state)
    assert fresh.fitted
    fresh.eval()
    torch.manual_seed(0)
    a = hb.inference.sample_posterior(model, guide, 5)
    torch.manual_seed(0)
    b = hb.inference.sample_posterior(model, fresh, 5)
    for name in a:
        torch.testing.assert_close(a[name], b[name])
        assert a[name].std(0).max() > 0  # draws differ: a posterior, not a point


def test_laplace_last_layer_leaves_the_rest_at_the_map():
    data = hb.datasets.load("digits")
    model, guide, loss, _ = hb.methods.setup("laplace", "classification",
                                             [64, 16, 10], priors.Normal(1.0), Categorical())
    hb.inference.fit(model, guide, data.train, steps=100, lr=1e-2, loss=loss, progress=False)
    draws = hb.inference.sample_posterior(model, guide, 20)
    assert draws["fc0.weight"].std(0).max() == 0
    assert draws["fc1.weight"].std(0).max() > 0
    with pytest.raises(ValueError, match="without weight norm"):
        LaplaceGuide(BNN(MLP([4, 3, 2], weight_norm=True), priors.Normal(1.0), Categorical()))
    with pytest.raises(ValueError, match="unknown hessian"):
        LaplaceGuide(model, hessian="block")


def test_an_ensemble_of_identical_seeds_is_one_map_net():
    problem = conjugate_regression(n=30, d=3)
    data = problem.data
    net = MLP([3, 8, 1])
    ensemble_model = BNN(net, priors.Normal(1.0), Gaussian(0.5))
    ensemble = Ensemble(ensemble_model, seeds=[3, 3, 3])
    hb.inference.fit(ensemble_model, ensemble, data, steps=200, lr=1e-2, progress=False, seed=0)
    map_model = BNN(MLP([3, 8, 1]), priors.Normal(1.0), Gaussian(0.5))
    point = Delta(map_model, seed=3)
    hb.inference.fit(map_model, point, data, steps=200, lr=1e-2, progress=False, seed=0)
    expected = point.point_estimate()
    for k in range(3):
        for name, value in ensemble.member(k).items():
            torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=1e-5)


def test_an_ensemble_predicts_with_every_member_equally():
    model, guide, loss, _ = hb.methods.setup("ensemble", "regression", [1, 8, 1],
                                             priors.Normal(1.0), Gaussian(0.1), members=4)
    assert guide.members == 4 and loss.num_particles == 4
    members = [guide.member(k)["fc0.weight"] for k in range(4)]
    assert not torch.equal(members[0], members[1])  # different initialisations
    draws = hb.inference.sample_posterior(model, guide, 8)["fc0.weight"]
    for i in range(8):
        torch.testing.assert_close(draws[i], members[i % 4])
    with pytest.raises(ValueError, match="members ≥ 1"):
        Ensemble(model, members=0)


def test_an_ensemble_of_a_torch_module_starts_its_members_apart():
    """A TorchNet starts guides at its module's values; an ensemble's members must not all
    start (and so stay) there: each is a fresh PyTorch initialisation of the module."""
    from torch import nn

    module = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    model, guide, _, _ = hb.methods.setup("ensemble", "regression", module, priors.Normal(1.0),
                                          Gaussian(0.1), members=3)
    firsts = [guide.member(k)["0.weight"] for k in range(3)]
    assert not torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[1], firsts[2])
    assert model.net.init == "module"  # the net itself is left as it was


def test_an_ensemble_predicts_every_member_alike_when_draws_come_in_groups():
    """predict draws a large net's samples in groups; each group is a multiple of K, so draw
    i is member i mod K across groups (not member 0 again at every group's start)."""
    model, guide, _, _ = hb.methods.setup("ensemble", "regression", [1, 8, 1],
                                          priors.Normal(1.0), Gaussian(0.1), members=5)
    x = torch.linspace(-1, 1, 7)[:, None]
    small = model.net.num_params * 3  # room for 3 samples a group: raised to 5
    outputs = hb.inference.predict(model, guide, x, 10, max_sample_floats=small).f
    for i in range(10):
        member = {k: v[None] for k, v in guide.member(i % 5).items()}
        torch.testing.assert_close(outputs[i], model.net(member, x)[0, :, 0])


def _tanh_data(n=40):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=generator)
    return x, torch.tanh(x[:, :1]) + 0.1 * torch.randn(n, 1, generator=generator)


@pytest.mark.parametrize("hessian", ["full", "diag", "kron"])
def test_laplace_over_a_module_with_fixed_layers_is_conditional_on_them(hessian):
    """Only the Bayesian parameters get curvature: the posterior is that of the model whose
    latents they are, the frozen layer held at its values (not the marginal of a Gaussian over
    every parameter)."""
    from torch import nn

    x, y = _tanh_data()
    body = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1))
    model = BNN(hb.models.TorchNet(body, bayesian="2.*", frozen="0.*"), priors.Normal(1.0),
                Gaussian(0.1))
    guide = LaplaceGuide(model, subset="all", hessian=hessian, prior_precision=1.0)
    _fit_map(model, guide, (x, y), steps=300)
    post = guide.get_extra_state()["posterior"]
    assert post["mean"].numel() == 7 and post["covered"] == ["2.weight", "2.bias"]
    if hessian == "full":  # the exact posterior precision of the linear last layer
        features = torch.cat([torch.tanh(body[0](x)).detach(), torch.ones(len(x), 1)], 1)
        precision = features.T @ features / 0.1 ** 2 + torch.eye(7)
        covariance = post["scale_tril"] @ post["scale_tril"].T
        torch.testing.assert_close(covariance, torch.linalg.inv(precision), rtol=1e-3,
                                   atol=1e-6)


def test_laplace_refuses_a_last_layer_without_bayesian_weights_and_takes_flat_targets():
    from torch import nn

    x, y = _tanh_data()
    body = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1))
    model = BNN(hb.models.TorchNet(body, bayesian="0.*"), priors.Normal(1.0), Gaussian(0.1))
    with pytest.raises(ValueError, match="last nn.Linear \\('2'\\) has no Bayesian"):
        LaplaceGuide(model, subset="last_layer")
    # (N,) regression targets, as the likelihood accepts them, and a float64 model
    model = BNN(MLP([2, 6, 1]), priors.Normal(1.0), Gaussian(0.1)).double()
    guide = LaplaceGuide(model, hessian="full", prior_precision=1.0).double()
    _fit_map(model, guide, (x.double(), y[:, 0].double()), steps=50)
    assert guide.fitted and guide.get_extra_state()["posterior"]["mean"].dtype == torch.float64
    guide.float()  # the built posterior follows the guide's parameters
    assert guide.get_extra_state()["posterior"]["mean"].dtype == torch.float32


def test_swag_moments_are_the_snapshots_moments():
    gen = torch.Generator().manual_seed(0)
    snapshots = torch.randn(30, 6, generator=gen, dtype=torch.float64) * 2 + 1
    moments = swag_moments(snapshots, rank=5)
    torch.testing.assert_close(moments["mean"], snapshots.mean(0))
    torch.testing.assert_close(moments["variance"], snapshots.var(0, unbiased=False))
    assert moments["deviations"].shape == (6, 5)
    torch.testing.assert_close(moments["deviations"], (snapshots[-5:] - snapshots.mean(0)).T)
    assert torch.linalg.matrix_rank(moments["deviations"]) == 5
    with pytest.raises(ValueError, match="at least two snapshots"):
        swag_moments(snapshots[:1], rank=5)


def test_swag_on_a_quadratic_loss_centres_on_the_optimum_with_its_covariance():
    """On the conjugate regression the loss is quadratic: SGD iterates scatter around its
    minimum (the posterior mean), and SWAG's draws have the covariance its moments say,
    ½·diag + ½·D Dᵀ/(K − 1), of rank ≤ K in its low-rank part."""
    problem = conjugate_regression(n=40, d=3, noise=0.5)
    model = problem.model
    guide = SWAGGuide(model, rank=4, snapshots=60, steps_between=5, swa_lr=5e-3)
    _fit_map(model, guide, problem.data, steps=2000)
    post = guide.get_extra_state()["posterior"]
    mean = post["mean"].double()
    spread = problem.cov.diagonal().sqrt()
    assert ((mean - problem.mean).abs() / spread).max() < 0.5  # within half a posterior std
    deviations = post["deviations"].double()
    assert deviations.shape == (4, 4) and torch.linalg.matrix_rank(deviations) <= 4
    expected = 0.5 * torch.diag(post["variance"].double()) + 0.5 * deviations @ deviations.T / 3
    draws = problem.flatten(hb.inference.sample_posterior(model, guide, 50_000))
    torch.testing.assert_close(torch.cov(draws.T), expected, atol=2e-4, rtol=0.1)


def test_swag_collects_on_minibatches_where_full_batch_sgd_has_no_noise():
    # the cubic toy (20 points) trained full-batch: SGD from the MAP point without minibatch
    # noise barely moves, so the SWAG posterior collapses; a fifth of the data per step spreads
    data = hb.datasets.load("cubic")
    train = (data.train.x / 4, data.train.y / data.train.y.std())
    spread = {}
    for fraction in (None, 0.2):
        model = BNN(MLP([1, 16, 1]), priors.Normal(1.0), Gaussian(0.3))
        guide = SWAGGuide(model, rank=5, snapshots=10, swa_lr=1e-3, batch_fraction=fraction)
        hb.inference.fit(model, guide, train, steps=600, lr=1e-2, progress=False, warn=False)
        guide.eval()
        functions = hb.inference.predict(model, guide, train[0], 100).f
        spread[fraction] = float(functions.std(0).mean())  # predictive spread at the data
    assert spread[0.2] > 5 * spread[None], spread
    with pytest.raises(ValueError, match="not both"):
        SWAGGuide(model, batch_size=4, batch_fraction=0.2)
    with pytest.raises(ValueError, match="batch_fraction must be"):
        SWAGGuide(model, batch_fraction=1.5)


def test_exact_laplace_has_the_evidence_as_every_importance_weight():
    """Where Laplace is the posterior, log p(y|w) + log p(w) − log q(w) = log p(y) for every
    draw: the ELBO and IWAE both equal the closed-form evidence and their gap is zero."""
    problem = conjugate_regression(n=40, d=3, noise=0.5, prior_scale=1.0)
    guide = LaplaceGuide(problem.model, hessian="full", prior_precision="model")
    assert "until fit builds its posterior" in guide.density_reason()
    _fit_map(problem.model, guide, problem.data)
    assert guide.density_reason() is None
    design = torch.cat([problem.x, torch.ones(40, 1)], 1).double()
    evidence = torch.distributions.MultivariateNormal(
        torch.zeros(40, dtype=torch.float64),
        0.25 * torch.eye(40, dtype=torch.float64) + design @ design.T).log_prob(
            problem.y.double()[:, 0])
    quality = hb.inference.vi_quality(problem.model, guide, problem.data, 200)
    assert quality["available"]
    assert abs(quality["elbo"] - float(evidence)) < 0.02, (quality, float(evidence))
    assert abs(quality["kl_lower_bound"]) < 1e-3 and quality["ess_fraction"] > 0.99
    # each importance draw is its own: a diagonal Laplace, not the posterior, has a gap
    diagonal = LaplaceGuide(problem.model, hessian="diag", prior_precision="model")
    _fit_map(problem.model, diagonal, problem.data)
    quality = hb.inference.vi_quality(problem.model, diagonal, problem.data, 500)
    assert quality["kl_lower_bound"] > 0.05 and quality["ess_fraction"] < 0.9, quality


@pytest.mark.parametrize("hessian", ["kron", "diag"])
def test_laplace_density_is_the_gaussian_it_draws_from(hessian):
    """KFAC and diagonal Laplace evaluate log q through their factors; on a one-output linear
    model without bias both are N(ŵ, Σ) with Σ known, whose log density they must give."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=gen)
    y = x @ torch.tensor([[1.0], [-0.5], [0.3]]) + 0.4 * torch.randn(50, 1, generator=gen)
    model = BNN(MLP([3, 1], bias=False), priors.Normal(1.0), Gaussian(0.4))
    guide = LaplaceGuide(model, hessian=hessian, prior_precision=1.0)
    _fit_map(model, guide, (x, y), steps=300)
    precision = torch.eye(3, dtype=torch.float64) + x.T.double() @ x.double() / 0.4 ** 2
    if hessian == "diag":
        precision = torch.diag(precision.diagonal())
    post = guide.get_extra_state()["posterior"]
    exact = torch.distributions.MultivariateNormal(post["mean"].double(),
                                                   precision_matrix=precision)
    draws = hb.inference.sample_posterior(model, guide, 64)
    log_q = guide.joint_log_density(draws).double()
    torch.testing.assert_close(log_q, exact.log_prob(draws["fc0.weight"].reshape(64, 3).double()),
                               atol=1e-3, rtol=1e-4)


def test_swag_density_is_its_low_rank_gaussian_and_last_layer_laplace_has_none():
    problem = conjugate_regression(n=40, d=3, noise=0.5)
    guide = SWAGGuide(problem.model, rank=4, snapshots=60, steps_between=5, swa_lr=5e-3)
    _fit_map(problem.model, guide, problem.data, steps=500)
    post = guide.get_extra_state()["posterior"]
    deviations = post["deviations"].double()
    cov = 0.5 * torch.diag(post["variance"].double()) + 0.5 * deviations @ deviations.T / 3
    draws = hb.inference.sample_posterior(problem.model, guide, 64)
    exact = torch.distributions.MultivariateNormal(post["mean"].double(), cov)
    torch.testing.assert_close(guide.joint_log_density(draws).double(),
                               exact.log_prob(problem.flatten(draws)), atol=2e-3, rtol=1e-4)
    quality = hb.inference.vi_quality(problem.model, guide, problem.data, 100)
    assert quality["available"] and quality["kl_lower_bound"] > 1e-3, quality
    data = hb.datasets.load("digits")
    model, last, loss, _ = hb.methods.setup("laplace", "classification",
                                            [64, 8, 10], priors.Normal(1.0), Categorical())
    hb.inference.fit(model, last, data.train, steps=20, lr=1e-2, loss=loss, progress=False,
                     warn=False)
    quality = hb.inference.vi_quality(model, last, data.train, 10)
    assert not quality["available"] and "covers only some weights" in quality["reason"]


def test_glm_predictive_is_the_net_linearized_at_the_map():
    """predict with predictive="glm" evaluates f(x; ŵ) + J(x)(w − ŵ) per draw: checked against
    torch.autograd's Jacobian on a tanh net, and equal to the net itself on a linear model."""
    torch.manual_seed(0)
    data = (torch.linspace(-2, 2, 20)[:, None], torch.sin(torch.linspace(-2, 2, 20))[:, None])
    model = BNN(MLP([1, 4, 1], activation="tanh"), priors.Normal(1.0), Gaussian(0.2))
    guide = LaplaceGuide(model, hessian="full", prior_precision=1.0)
    _fit_map(model, guide, data, steps=300)
    around = guide.linearize_at()
    draws = hb.inference.sample_posterior(model, guide, 3)
    x = torch.tensor([[-3.0], [0.5]])
    glm = hb.inference.predict_from_samples(model, draws, x, linearize_at=around).f
    names = list(around)
    for s in range(3):
        def net(*values):
            return model.net({n: v.unsqueeze(0) for n, v in zip(names, values, strict=True)},
                             x).reshape(-1)
        jacobians = torch.autograd.functional.jacobian(net, tuple(around[n] for n in names))
        change = sum(j.reshape(2, -1) @ (draws[n][s] - around[n]).reshape(-1)
                     for j, n in zip(jacobians, names, strict=True))
        torch.testing.assert_close(glm[s].reshape(-1), net(*around.values()) + change,
                                   atol=1e-5, rtol=1e-4)
    nonlinear = hb.inference.predict_from_samples(model, draws, x).f
    assert (nonlinear - glm).abs().max() > 1e-3  # the linearization differs on a tanh net
    problem = conjugate_regression(n=40, d=3)
    linear = {}
    for predictive in ("glm", "nn"):
        guide = LaplaceGuide(problem.model, hessian="full", prior_precision="model",
                             predictive=predictive)
        _fit_map(problem.model, guide, problem.data, steps=500)
        torch.manual_seed(1)
        linear[predictive] = hb.inference.predict(problem.model, guide, problem.x[:5], 50).f
    torch.testing.assert_close(linear["glm"], linear["nn"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown predictive"):
        LaplaceGuide(problem.model, predictive="probit")
