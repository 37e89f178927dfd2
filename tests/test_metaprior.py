"""MetaPrior: factorized hyperprior, per-unit weight sharing, the ELBO without P(W|Z), illation."""

import math

import pyro
import pytest
import torch

import hyperbayes as hb
from hyperbayes.inference import ELBO, fit, fit_em, illate
from hyperbayes.models import BNN, CNN, MLP, Categorical, Gaussian
from hyperbayes.models.metaprior import Hyperprior, MetaPrior


def _model(sizes=(3, 5, 2), variant="gaussian", **kwargs):
    prior = MetaPrior(code_dim=2, hidden=8, variant=variant, **kwargs)
    likelihood = Gaussian(scale=0.5) if sizes[-1] == 1 else Categorical()
    return BNN(MLP(list(sizes)), prior, likelihood)


@pytest.mark.parametrize("global_dim,noise_dim,depth", [(0, 0, 1), (3, 0, 2), (2, 1, 1)])
def test_factorized_hyperprior_equals_naive_concatenation(global_dim, noise_dim, depth):
    torch.manual_seed(0)
    g = Hyperprior(4, hidden=16, outputs=2, global_dim=global_dim, noise_dim=noise_dim,
                   depth=depth, activation="tanh" if depth == 2 else "relu")
    z_out, z_in = torch.randn(3, 7, 4), torch.randn(3, 5, 4)   # sample dim 3
    z_global = torch.randn(3, global_dim) if global_dim else None
    noise = torch.randn(3, 7, 5, noise_dim) if noise_dim else None
    fast = g(z_out, z_in, z_global, noise)
    assert fast.shape == (3, 7, 5, 2)
    torch.testing.assert_close(fast, g.naive(z_out, z_in, z_global, noise), rtol=1e-5,
                               atol=1e-6)
    bias_noise = torch.randn(3, 7, noise_dim) if noise_dim else None   # biases: zero input code
    torch.testing.assert_close(g(z_out, None, z_global, bias_noise),
                               g.naive(z_out, None, z_global, bias_noise), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("noise_dim,global_dim", [(0, 0), (1, 2)])
def test_factorized_hyperprior_gradients_equal_naive(noise_dim, global_dim):
    """The chunked pairwise head recomputes activations in its backward: same gradients
    (in float64: float32 sums over 840,000 pairs in different orders differ by ~1e-3)."""
    torch.manual_seed(1)
    torch.set_default_dtype(torch.float64)
    try:
        _compare_gradients(noise_dim, global_dim)
    finally:
        torch.set_default_dtype(torch.float32)


def _compare_gradients(noise_dim, global_dim):
    g = Hyperprior(3, hidden=8, outputs=2, global_dim=global_dim, noise_dim=noise_dim,
                   activation="tanh")
    z_out = torch.randn(2, 600, 3, requires_grad=True)   # > 1 chunk of receiving units
    z_in = torch.randn(1, 700, 3, requires_grad=True)    # broadcast over the sample dim
    z_global = torch.randn(2, global_dim, requires_grad=True) if global_dim else None
    noise = torch.randn(2, 600, 700, noise_dim) if noise_dim else None
    weights = torch.randn(2, 600, 700, 2)
    leaves = [z_out, z_in, *g.parameters()] + ([z_global] if global_dim else [])
    fast = torch.autograd.grad((g(z_out, z_in, z_global, noise) * weights).sum(), leaves)
    slow = torch.autograd.grad((g.naive(z_out, z_in, z_global, noise) * weights).sum(), leaves)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("global_dim", [0, 2])
def test_sin_hyperprior_as_matrix_product_equals_naive(global_dim):
    """sin(a + b) = sin a cos b + cos a sin b: the rank-2H product gives g exactly, gradients
    included (float64)."""
    torch.manual_seed(2)
    g = Hyperprior(3, hidden=8, outputs=2, global_dim=global_dim, activation="sin").double()
    z_out = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    z_in = torch.randn(1, 11, 3, dtype=torch.float64, requires_grad=True)
    z_global = torch.randn(2, global_dim, dtype=torch.float64) if global_dim else None
    weights = torch.randn(2, 9, 11, 2, dtype=torch.float64)
    fast, slow = g(z_out, z_in, z_global), g.naive(z_out, z_in, z_global)
    assert fast.shape == (2, 9, 11, 2)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    leaves = [z_out, z_in, *g.parameters()]
    for a, b in zip(torch.autograd.grad((fast * weights).sum(), leaves),
                    torch.autograd.grad((slow * weights).sum(), leaves), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("codes", ["latent", "onehot"])
def test_rescaled_start_has_the_asked_spread(codes):
    """init_frequency / init_mean_scale: over random starting codes g's pre-activations and the
    weight means have the asked standard deviations, and every weight's σ starts equal."""
    prior = MetaPrior(code_dim=4, hidden=64, activation="sin", codes=codes, init_frequency=3.0,
                      init_mean_scale=0.5, init_weight_scale=0.02, seed=3)
    model = BNN(MLP([30, 40, 5]), prior, Categorical())
    g = model.prior.g
    torch.manual_seed(4)   # fresh codes, not the ones the rescaling measured on
    z_out, z_in, _, _ = prior._typical_inputs(g.code_dim, pairs=200)
    pre = g.first(g._pair_inputs(z_out, z_in, None, None))
    assert pre.std().item() == pytest.approx(3.0, rel=0.15)
    out = g(z_out, z_in)
    assert out[..., 0].std().item() == pytest.approx(0.5, rel=0.15)
    assert abs(out[..., 0].mean().item()) < 0.1
    scale = torch.nn.functional.softplus(out[..., 1])
    torch.testing.assert_close(scale, torch.full_like(scale, 0.02))


def test_hyperprior_rejects_wrong_inputs():
    g = Hyperprior(2, hidden=4)
    with pytest.raises(ValueError, match="codes must have 2 coordinates"):
        g(torch.randn(3, 5), torch.randn(4, 2))
    with pytest.raises(ValueError, match="global_dim=0"):
        g(torch.randn(3, 2), torch.randn(4, 2), torch.randn(1))
    with pytest.raises(ValueError, match="code_dim must be an integer"):
        Hyperprior(0)


@pytest.mark.parametrize("variant", ["gaussian", "implicit"])
def test_sampled_shapes_and_sites(variant):
    model = _model(variant=variant, global_dim=3)
    assert model.guided_sites() == ["codes.0", "codes.1", "codes.2", "codes.global"]
    with pyro.plate("samples", 4, dim=-1):
        trace = pyro.poutine.trace(model.sample_params).get_trace()
    assert trace.nodes["codes.0"]["value"].shape == (4, 3, 2)
    assert trace.nodes["codes.1"]["value"].shape == (4, 5, 2)
    assert trace.nodes["codes.global"]["value"].shape == (4, 3)
    params = trace.nodes["_RETURN"]["value"]
    assert params["fc0.weight"].shape == (4, 5, 3) and params["fc1.bias"].shape == (4, 2)
    weight_site = "fc0.weight" if variant == "gaussian" else "fc0.weight.noise"
    assert trace.nodes[weight_site]["mask"] is False          # drawn from P(W|Z), no density
    out = model.net(params, torch.randn(6, 3))
    assert out.shape == (4, 6, 2)


def test_one_code_moves_exactly_its_units_weights():
    """Perturbing hidden unit u's code changes row u of the incoming weights, column u of the
    outgoing weights and bias u; nothing else."""
    model = _model(sizes=(3, 5, 4))
    codes = model.prior.init_values(model.net.param_specs, torch.Generator().manual_seed(1))
    before = model.prior.generate(codes, mean=True)
    moved = dict(codes)
    moved["codes.1"] = codes["codes.1"].clone()
    moved["codes.1"][2] += torch.tensor([0.7, -0.4])
    after = model.prior.generate(moved, mean=True)
    changed = {n: (after[n] != before[n]) for n in before}
    assert changed["fc0.weight"][2].all() and not changed["fc0.weight"][[0, 1, 3, 4]].any()
    assert changed["fc1.weight"][:, 2].all() and not changed["fc1.weight"][:, [0, 1, 3, 4]].any()
    assert changed["fc0.bias"].tolist() == [False, False, True, False, False]
    assert not changed["fc1.bias"].any()
    # an input unit's code moves only that input's column of the first layer
    moved = dict(codes)
    moved["codes.0"] = codes["codes.0"] + torch.tensor([[0.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    after = model.prior.generate(moved, mean=True)
    assert (after["fc0.weight"] != before["fc0.weight"]).nonzero()[:, 1].unique().tolist() == [1]
    assert torch.equal(after["fc1.weight"], before["fc1.weight"])


@pytest.mark.parametrize("variant", ["gaussian", "implicit"])
def test_elbo_has_no_weight_density_term(variant):
    """−ELBO = −log p(y | W) + KL(Q(Z) ‖ P(Z)) on the same draws: P(W | Z) cancels."""
    torch.manual_seed(0)
    model = _model(sizes=(2, 6, 1), variant=variant)
    guide = hb.guides.MeanField(model, init_scale=0.3)
    x, y = torch.randn(10, 2), torch.randn(10, 1)
    loss = ELBO()
    pyro.set_rng_seed(3)
    value = loss.differentiable_loss(model, guide, x, y, 10)
    pyro.set_rng_seed(3)
    model_trace, guide_trace = loss.traces(model, guide, x, y, 10)
    assert set(n for n, s in guide_trace.nodes.items() if s["type"] == "sample") == set(
        model.guided_sites())
    log_lik = model_trace.nodes["obs"]["fn"].log_prob(model_trace.nodes["obs"]["value"]).sum()
    kl = 0.0
    for site in guide.sites:
        loc = guide.loc_params[site.name.replace(".", "__")]
        scale = guide.log_scale_params[site.name.replace(".", "__")].exp()
        kl = kl + torch.distributions.kl_divergence(
            torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, 1.0)).sum()
    assert value.item() == pytest.approx((-log_lik + kl).item(), rel=1e-5)
    # and the weights really were random given Z: a second draw differs
    again = loss.traces(model, guide, x, y, 10)[0]
    site = "fc0.weight" if variant == "gaussian" else "fc0.weight.noise"
    assert not torch.equal(again.nodes[site]["value"], model_trace.nodes[site]["value"])


def test_joint_training_fits_data_and_moves_codes_and_hyperprior():
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 40).unsqueeze(-1)
    y = torch.sin(2 * x) + 0.05 * torch.randn_like(x)
    # a narrow initial P(w | z): at 0.1 the weight noise swamps the 0.1 observation noise of
    # 20 summed units and training first flattens the function (measured RMSE 0.65 after 1,500
    # steps); at 0.01 it fits within 3,000 steps
    model = BNN(MLP([1, 20, 1], activation="tanh"),
                MetaPrior(code_dim=2, hidden=16, init_weight_scale=0.01), Gaussian(scale=0.1))
    guide = hb.guides.MeanField(model, init_scale=0.1)
    g_before = [p.detach().clone() for p in model.prior.parameters()]
    codes_before = guide.locs()
    result = fit(model, guide, (x, y), steps=3000, lr=1e-2, progress=False)
    assert result.losses[-1] < 0.1 * result.losses[0]
    pred = hb.inference.predict(model, guide, x, 50)
    rmse = (pred.mean() - y.squeeze(-1)).pow(2).mean().sqrt().item()
    assert rmse < 0.25, rmse   # sin(2x) has std 0.7 on this grid
    assert any(not torch.equal(a, b)
               for a, b in zip(g_before, model.prior.parameters(), strict=True))
    assert not torch.equal(codes_before["codes.1"], guide.locs()["codes.1"])


def test_onehot_codes_leave_nothing_to_infer():
    model = _model(codes="onehot")
    assert model.guided_sites() == []
    guide = hb.guides.Delta(model)
    assert list(guide.parameters()) == []
    assert model.prior.g.code_dim == 3 + 5 + 2
    x, y = torch.randn(30, 3), torch.randint(0, 2, (30,))
    result = fit(model, guide, (x, y), steps=200, lr=1e-2, progress=False)
    assert sum(result.losses[-20:]) < sum(result.losses[:20])
    pred = hb.inference.predict(model, guide, x, 5)
    assert pred.probs.shape == (5, 30, 2) and pred.mean().shape == (30, 2)


def test_metaprior_rejects_nets_it_cannot_generate():
    with pytest.raises(ValueError, match="role 'direction'"):
        BNN(MLP([2, 3, 1], weight_norm=True), MetaPrior(), Gaussian())
    with pytest.raises(ValueError, match="dense layers only"):
        BNN(CNN(), MetaPrior(), Categorical())
    with pytest.raises(ValueError, match="unknown MetaPrior variant"):
        MetaPrior(variant="flow")
    prior = MetaPrior()
    BNN(MLP([2, 3, 1]), prior, Gaussian())
    with pytest.raises(ValueError, match="bound to a net with units"):
        BNN(MLP([2, 4, 1]), prior, Gaussian())


def _trained_classifier(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(60, 4)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = _model(sizes=(4, 6, 2))
    guide = hb.guides.MeanField(model, init_scale=0.1)
    fit(model, guide, (x, y), steps=100, lr=1e-2, progress=False)
    return model, guide, x, y


def test_illate_changes_only_the_chosen_codes():
    model, guide, x, y = _trained_classifier()
    g_before = [p.detach().clone() for p in model.prior.parameters()]
    before = guide.locs()
    new_guide, result = illate(model, guide, (x, 1 - y), sites="outputs", steps=50,
                               progress=False)
    after = new_guide.locs()
    assert torch.equal(after["codes.0"], before["codes.0"])
    assert torch.equal(after["codes.1"], before["codes.1"])
    assert not torch.equal(after["codes.2"], before["codes.2"])
    assert torch.equal(new_guide.scales()["codes.1"], guide.scales()["codes.1"])
    assert all(torch.equal(a, b)
               for a, b in zip(g_before, model.prior.parameters(), strict=True))
    assert torch.equal(guide.locs()["codes.2"], before["codes.2"])   # the original is untouched
    assert all(p.requires_grad for p in model.parameters())          # freezing is undone
    assert result.steps == 50


def test_illate_with_posterior_anchor_restores_the_prior():
    model, guide, x, y = _trained_classifier()
    new_guide, _ = illate(model, guide, (x, y), sites=["codes.0"], anchor="posterior", steps=5,
                          progress=False)
    assert model.prior.code_priors == {}
    with pytest.raises(ValueError, match="unknown site group 'middle'"):
        illate(model, guide, (x, y), sites="middle")
    with pytest.raises(ValueError, match="unknown code sites"):
        illate(model, guide, (x, y), sites=["fc0.weight"])
    flow = hb.guides.FlowGuide(model, num_flows=1, hidden=4)
    with pytest.raises(ValueError, match="per-site parameters"):
        illate(model, flow, (x, y), sites="outputs", steps=1)


def test_fit_em_alternates_codes_and_hyperprior():
    model, guide, x, y = _trained_classifier()
    snapshots = []

    def snap():
        return ([p.detach().clone() for p in model.prior.parameters()],
                [p.detach().clone() for p in guide.parameters()])

    snapshots.append(snap())
    results = fit_em(model, guide, (x, y), rounds=1, e_steps=5, m_steps=5, progress=False,
                     callback=lambda step, loss: snapshots.append(snap()) and False)
    assert len(results) == 2
    e_end, m_end = snapshots[5], snapshots[10]   # E: ξ fixed, Φ moves; M: the reverse
    assert all(torch.equal(a, b) for a, b in zip(snapshots[0][0], e_end[0], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(snapshots[0][1], e_end[1], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(e_end[1], m_end[1], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(e_end[0], m_end[0], strict=True))


def test_prediction_groups_samples_by_hyperprior_work():
    model = _model(sizes=(3, 5, 2))
    guide = hb.guides.MeanField(model)
    assert model.prior.work_per_param == 8 + 2
    pred = hb.inference.predict(model, guide, torch.randn(7, 3), 9, max_sample_floats=200)
    assert pred.probs.shape == (9, 7, 2) and pred.num_samples == 9
    assert math.isfinite(pred.probs.sum().item())
