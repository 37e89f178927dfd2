"""A user's torch.nn.Module as a hyperbayes net (TorchNet) through every guide and registered
method, and the API's refusal of bad input."""

import math

import pyro
import pytest
import torch
from torch import nn

import hyperbayes as hb
from hyperbayes.guides import Delta, FlowGuide, ImplicitGuide, MeanField
from hyperbayes.inference import fit, nuts, predict
from hyperbayes.inference.checkpoint import CheckpointError
from hyperbayes.models import BNN, MLP, Categorical, Gaussian, TorchNet, priors
from hyperbayes.models.module import _replayed as _real_replayed

pytestmark = pytest.mark.usefixtures("one_thread")


class Block(nn.Module):
    """conv → BatchNorm with a residual connection."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class TinyResNet(nn.Module):
    """A small residual conv net with a normalization layer, for 1×8×8 images."""

    def __init__(self, classes=3):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = Block(4)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.pool(self.block(torch.relu(self.stem(x)))).flatten(1))


def _images(n=48, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    x[torch.arange(n), 0, y * 2, y * 2] += 3.0  # a class-dependent bright pixel
    return x, y


def _regression(n=40):
    x = torch.linspace(-2, 2, n).unsqueeze(-1)
    noise = torch.randn(n, 1, generator=torch.Generator().manual_seed(1))
    return x, torch.sin(2 * x) + 0.05 * noise


def _sequential():
    return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 1))


# ------------------------------------------------------------------------------------------------
# sites, roles, batched evaluation
# ------------------------------------------------------------------------------------------------


def test_sites_are_named_as_named_parameters_with_roles_and_fan_in():
    net = TorchNet(TinyResNet())
    specs = net.param_specs
    assert list(specs) == [n for n, _ in TinyResNet().named_parameters()]
    assert specs["block.conv.weight"].role == "weight"
    assert specs["block.conv.weight"].fan_in == 4 * 3 * 3
    assert specs["block.conv.bias"].role == "bias" and specs["block.conv.bias"].fan_in == 36
    assert specs["block.bn.weight"].role == "norm_scale"
    assert specs["block.bn.bias"].role == "norm_shift"
    assert specs["fc.weight"].fan_in == 16 and specs["fc.weight"].fan_out == 3
    # priors written for the library's nets apply by name and fan-in
    prior = priors.by_name({"*.bn.weight": priors.Normal(1.0, loc=1.0),
                            "*": priors.FanInNormal(1.0)})
    model = BNN(net, prior, Categorical())
    sites = {s.name: s for s in hb.guides.model_sites(model)}
    assert sites["fc.weight"].prior.base_dist.scale.max() == pytest.approx(1 / 4)
    assert sites["block.bn.weight"].prior.base_dist.loc.min() == 1.0


@pytest.mark.parametrize("make", [TinyResNet, _sequential], ids=["resnet", "sequential"])
def test_batched_samples_equal_separate_calls(make):
    torch.manual_seed(0)
    module = make().eval()
    net = TorchNet(module, sample_chunk=None)
    net.eval()
    s = 5
    params = {n: v + 0.1 * torch.randn(s, *v.shape) for n, v in net.init_params().items()}
    x = torch.randn(6, 1, 8, 8) if make is TinyResNet else torch.randn(6, 1)
    batched = net(params, x)
    separate = torch.stack([net({n: v[i] for n, v in params.items()}, x) for i in range(s)])
    assert batched.shape == separate.shape
    torch.testing.assert_close(batched, separate, atol=1e-5, rtol=1e-5)
    # and the module itself gives the same with those weights loaded
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name][2])
    torch.testing.assert_close(module(x), batched[2], atol=1e-5, rtol=1e-5)
    # one sample per vmap chunk gives the same numbers
    chunked = TorchNet(module, sample_chunk=1).eval()
    torch.testing.assert_close(chunked(params, x), batched, atol=1e-5, rtol=1e-5)


def test_batchnorm_running_stats_are_the_sample_average_and_eval_uses_them():
    torch.manual_seed(0)
    net = TorchNet(TinyResNet()).train()
    x = torch.randn(16, 1, 8, 8)
    params = {n: v + 0.2 * torch.randn(3, *v.shape) for n, v in net.init_params().items()}
    expected = []
    for i in range(3):  # each sample's own running-stat update on a copy of the module
        single = TorchNet(TinyResNet()).train()
        single.module.load_state_dict(net.module.state_dict())
        single({n: v[i] for n, v in params.items()}, x)
        expected.append(single.module.block.bn.running_mean)
    net(params, x)
    torch.testing.assert_close(net.module.block.bn.running_mean, torch.stack(expected).mean(0))
    assert int(net.module.block.bn.num_batches_tracked) == 1
    net.eval()
    before = net.module.block.bn.running_mean.clone()
    net(params, x)
    assert torch.equal(before, net.module.block.bn.running_mean)


def test_caller_module_is_not_changed_and_frozen_and_hidden_parameters():
    module = TinyResNet()
    original = {k: v.clone() for k, v in module.state_dict().items()}
    x, y = _images()
    net = TorchNet(module, bayesian="fc.*", frozen="stem.*")
    assert set(net.param_specs) == {"fc.weight", "fc.bias"}
    model = BNN(net, priors.FanInNormal(1.0), Categorical())
    guide = MeanField(model)
    fit(model, guide, (x, y), steps=15, lr=0.05)
    for k, v in module.state_dict().items():  # the caller's module is untouched
        assert torch.equal(v, original[k]), k
    trained = net.module.state_dict()
    assert torch.equal(trained["stem.weight"], original["stem.weight"])  # frozen
    assert not torch.equal(trained["block.conv.weight"], original["block.conv.weight"])  # point
    # the Bayesian weights are the guide's, not the module's
    assert not torch.equal(guide.locs()["fc.weight"], original["fc.weight"])
    with pytest.raises(ValueError, match="matches no parameter"):
        TorchNet(module, bayesian="head.*")
    with pytest.raises(ValueError, match="both bayesian and frozen"):
        TorchNet(module, bayesian="fc.*", frozen="fc.weight")


def test_guides_start_at_the_trained_weights_of_the_module():
    module = _sequential()
    model = BNN(TorchNet(module), priors.Normal(1.0), Gaussian(0.1))
    weights = {n: p.detach() for n, p in module.named_parameters()}
    for guide in (Delta(model), MeanField(model), ImplicitGuide(model, hidden=(8,)),
                  FlowGuide(model, over="weights", num_flows=1, hidden=8, init_scale=1e-3)):
        samples = hb.inference.sample_posterior(model, guide, 200)
        for name, w in weights.items():
            draws = samples[name].detach()
            mean, spread = draws.mean(0), float(draws.std(0).max())
            torch.testing.assert_close(mean, w, atol=0.05 * w.abs().max().item() + 1e-3,
                                       rtol=0, msg=f"{type(guide).__name__} {name}")
            assert spread < 0.2 * float(w.abs().max()) + 1e-2
    reset = TorchNet(module, init="reset").init_params(torch.Generator().manual_seed(3))
    assert not torch.equal(reset["0.weight"], weights["0.weight"])


def test_weight_norm_keeps_the_function_and_gives_scale_sites():
    torch.manual_seed(0)
    module = TinyResNet().eval()
    net = TorchNet(module, weight_norm=True).eval()
    assert net.param_specs["block.conv.scale"].shape == (4,)
    assert net.param_specs["block.conv.direction"].role == "direction"
    assert net.param_specs["block.bn.weight"].role == "norm_scale"  # norms keep their roles
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(net(net.init_params(), x), module(x), atol=1e-5, rtol=1e-5)
    torch_wn = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(3, 4)), nn.ReLU(),
                             nn.Linear(4, 1))
    roles = {n: s.role for n, s in TorchNet(torch_wn).param_specs.items()}
    assert roles["0.parametrizations.weight.original0"] == "scale"
    assert roles["0.parametrizations.weight.original1"] == "direction"


# ------------------------------------------------------------------------------------------------
# every guide, every registered method, NUTS
# ------------------------------------------------------------------------------------------------


GUIDES = {
    "delta": lambda m: Delta(m),
    "meanfield": lambda m: MeanField(m),
    "flow-weights": lambda m: FlowGuide(m, over="weights", num_flows=1, hidden=8),
    "implicit": lambda m: ImplicitGuide(m),
    "autonormal": lambda m: pyro.infer.autoguide.AutoNormal(m),
}


@pytest.mark.parametrize("guide_name", list(GUIDES))
def test_every_guide_trains_a_residual_conv_net(guide_name):
    x, y = _images()
    model = BNN(TinyResNet(), priors.FanInNormal(1.0), Categorical())
    guide = GUIDES[guide_name](model)
    result = fit(model, guide, (x, y), steps=40, batch_size=24, lr=0.02)
    assert all(math.isfinite(v) for v in result.losses)
    pred = predict(model, guide, x, num_samples=4)
    assert pred.probs.shape == (4, len(x), 3)
    assert torch.allclose(pred.probs.sum(-1), torch.ones(4, len(x)))


def test_local_reparameterization_on_linear_layers_fits_a_sequential():
    x, y = _regression()
    model = BNN(_sequential(), priors.Normal(1.0), Gaussian(0.1))
    guide = MeanField(model, local_reparameterization=True)
    result = fit(model, guide, (x, y), steps=400, lr=0.02)
    assert result.losses[-1] < 0.2 * result.losses[0]
    pred = predict(model, guide, x, 30)
    assert float(((pred.mean() - y.squeeze(-1)) ** 2).mean()) < 0.05


@pytest.mark.parametrize("name", hb.methods.available(variants=False))
def test_every_registered_method_runs_on_a_users_module(name):
    """By its recipe alone: no per-method code (the recipe says which parameters a method makes
    Bayesian on a module and which build options change)."""
    x, y = _images()
    model, guide, loss, fit_options = hb.methods.setup(
        name, "classification", TinyResNet(), priors.Normal(1.0), Categorical())
    fit_options = {k: v for k, v in fit_options.items() if k != "lr"}
    result = fit(model, guide, (x, y), steps=6, batch_size=24, loss=loss, lr=1e-3,
                 **fit_options)
    assert all(math.isfinite(v) for v in result.losses)
    assert predict(model, guide, x[:5], num_samples=3).probs.shape == (3, 5, 3)


def test_recipes_adapt_to_a_module_and_diversity_refuses_gauge_fixing_by_name():
    model, *_ = hb.methods.setup("metaprior", "classification", TinyResNet(), priors.Normal(1.0),
                                 Categorical())
    assert set(model.net.param_specs) == {"fc.weight", "fc.bias"}  # the MetaPrior's dense part
    assert model.net.bayesian == ("fc.*",)
    *_, loss, _ = hb.methods.setup("diversity", "classification", TinyResNet(),
                                   priors.Normal(1.0), Categorical())
    assert loss.gauge is False
    with pytest.raises(ValueError, match="gauge=False for a TorchNet"):
        hb.methods.build("diversity", TorchNet(TinyResNet()), priors.Normal(1.0), Categorical())


def test_nuts_samples_a_small_module():
    x, y = _regression(12)
    model = BNN(nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 1)), priors.Normal(1.0),
                Gaussian(0.2))
    result = nuts(model, (x, y), num_samples=20, warmup=20, num_chains=1, max_tree_depth=5,
                  warn=False)
    assert result.samples["0.weight"].shape == (20, 3, 1)
    assert result.predict(model, x).f.shape == (20, 12)


def test_mc_dropout_on_a_module_gives_independent_masks_per_sample():
    net = TorchNet(_sequential()).with_dropout(0.3)
    model = BNN(net, priors.Normal(1.0), Gaussian(0.1))
    guide = Delta(model)
    pred = predict(model, guide, torch.randn(7, 1), num_samples=10)
    assert pred.f.std(0).min() > 0  # samples differ although the weights are shared
    with pytest.raises(ValueError, match="needs an nn.Linear layer after the first"):
        TorchNet(nn.Sequential(nn.Linear(1, 1))).with_dropout(0.2)


class _NoisyBody(nn.Module):
    """conv body → a draw in the module's own forward → a dense head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.mid = nn.Linear(256, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.body(x)
        h = h + 0.1 * torch.randn_like(h)  # every sample must see its own noise
        return self.head(torch.relu(self.mid(h)))


@pytest.mark.parametrize("case", ["mc_dropout", "last_layer", "point", "draw_in_forward"])
def test_chunked_samples_replay_the_shared_start_exactly(case, monkeypatch):
    """Sample by sample (convolutions on the CPU), what all samples share runs once and is
    replayed: the outputs equal those of S full passes with the same random numbers, samples
    still differ where they should, and a draw in the module's own forward stops the replay."""
    from hyperbayes.models import module

    S, x = 6, _images(n=10)[0]
    if case == "draw_in_forward":
        net = TorchNet(_NoisyBody(), bayesian="head.*")
    elif case == "last_layer":
        net = TorchNet(TinyResNet(), bayesian="fc.*")
    else:
        net = TorchNet(TinyResNet())
        net = net.with_dropout(0.5) if case == "mc_dropout" else net
    gen = torch.Generator().manual_seed(3)
    values = dict(net.module.named_parameters())
    params = {n: (values[n].detach().expand(S, *s.shape) if case in ("mc_dropout", "point")
                  else values[n].detach() + 0.1 * torch.randn(S, *s.shape, generator=gen))
              for n, s in net.param_specs.items()}
    net.eval()
    recorded = []
    real = module._deterministic_prefix
    monkeypatch.setattr(module, "_deterministic_prefix",
                        lambda *a: recorded.append(real(*a)) or recorded[-1])
    torch.manual_seed(0)
    replayed = net(params, x)
    monkeypatch.setattr(module, "_deterministic_prefix", lambda *a: {})
    torch.manual_seed(0)
    full = net({n: v.contiguous().clone() for n, v in params.items()}, x)
    assert replayed.shape == full.shape == (S, 10, 3)
    assert torch.allclose(replayed, full, atol=1e-6)
    differ = (replayed[0] - replayed[-1]).abs().max()
    assert differ == 0 if case == "point" else differ > 1e-3
    expected = {"mc_dropout": {"stem", "block", "pool"}, "last_layer": {"stem", "block", "pool"},
                "point": None, "draw_in_forward": {"body"}}[case]
    if expected is None:  # a point estimate's expanded draws are one value: a single pass
        assert recorded == []
    else:
        assert set(recorded[0]) == expected


class _AddOneInPlace(nn.Module):
    def forward(self, x):
        return x.add_(1.0)


class _InPlaceHead(nn.Module):
    """A conv body whose output the (sampled) head changes in place."""

    def __init__(self, in_place: bool):
        super().__init__()
        self.body = nn.Conv2d(1, 2, 3)
        self.head = nn.Sequential(_AddOneInPlace() if in_place else nn.Identity(), nn.Flatten(),
                                  nn.Linear(2 * 6 * 6, 3))

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("in_place", [True, False])
def test_a_replayed_output_changed_in_place_is_not_replayed_again(mode, in_place, monkeypatch):
    """A head that changes the replayed body output in place would hand the next sample a
    changed input: the replay sees it (version counters; copies in inference mode) and the
    outputs stay those of S full passes. Without the change the replay goes on."""
    from hyperbayes.models import module

    torch.manual_seed(0)
    net = TorchNet(_InPlaceHead(in_place), bayesian="head.*").eval()
    values = dict(net.module.named_parameters())
    params = {n: values[n].detach() + 0.1 * torch.randn(4, *s.shape)
              for n, s in net.param_specs.items()}
    x = torch.rand(5, 1, 8, 8)
    made = []
    monkeypatch.setattr(module, "_replayed",
                        lambda *a: made.append(_real_replayed(*a)) or made[-1])
    with torch.no_grad() if mode == "no_grad" else torch.inference_mode():
        replayed = net(params, x)
        net.replay_shared = False
        full = net(params, x)
    assert torch.allclose(replayed, full, atol=1e-6)
    assert replayed[0].ne(replayed[1]).any()  # the head's samples differ
    assert made[0].prefix  # the body was recorded
    assert made[0].stale == (in_place and mode == "no_grad")


def test_a_forward_set_on_a_layer_instance_survives_replay_and_local_reparameterization():
    """The library swaps layer forwards for a pass (replaying a shared start; local
    reparameterization); a forward the user set on an instance is put back afterwards."""
    x, y = _images(n=10)
    net = TorchNet(TinyResNet(), bayesian="fc.*")
    stem, fc = net.module.stem, net.module.fc
    stem_forward, fc_forward = stem.forward, fc.forward  # bound methods, set on the instances
    stem.forward, fc.forward = stem_forward, fc_forward
    model = BNN(net, priors.Normal(1.0), Categorical())
    fit(model, MeanField(model, local_reparameterization=True), (x, y), steps=2)
    assert vars(fc)["forward"] is fc_forward
    predict(model, MeanField(model), x, 6)  # sample by sample: the stem's output is replayed
    assert vars(stem)["forward"] is stem_forward and vars(fc)["forward"] is fc_forward


# ------------------------------------------------------------------------------------------------
# the API refuses bad input before any work
# ------------------------------------------------------------------------------------------------


def _mlp_regression():
    model = BNN(MLP([1, 8, 1]), priors.Normal(1.0), Gaussian(0.1))
    return model, Delta(model)


@pytest.mark.parametrize("shape", [(30, 2), (30, 1, 1), (30, 30)])
def test_regression_targets_of_a_wrong_shape_are_refused(shape):
    model, guide = _mlp_regression()
    data = (torch.randn(30, 1), torch.randn(*shape))
    with pytest.raises(ValueError, match=r"regression targets have shape .* 1 output"):
        fit(model, guide, data, steps=1)
    with pytest.raises(ValueError, match=r"regression targets have shape .* 1 output"):
        nuts(model, data, num_samples=1, warmup=0, num_chains=1)


def test_classification_labels_are_checked_everywhere():
    model = BNN(MLP([2, 4, 3]), priors.Normal(1.0), Categorical())
    guide = Delta(model)
    x = torch.randn(30, 2)
    y = torch.randint(0, 3, (30,))
    with pytest.raises(ValueError, match="squeeze"):
        fit(model, guide, (x, y.unsqueeze(1)), steps=1)
    with pytest.raises(ValueError, match="look one-hot"):
        fit(model, guide, (x, nn.functional.one_hot(y, 3).float()), steps=1)
    with pytest.raises(TypeError, match="integer class indices"):
        fit(model, guide, (x, y.float()), steps=1)
    late = y.clone()
    late[29] = 3  # out of range in the last example only: not in the first batch
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\).*y\[29\] = 3"):
        fit(model, guide, (x, late), steps=1, batch_size=5)
    with pytest.raises(ValueError, match=r"val: labels must be in"):
        fit(model, guide, (x, y), steps=1, val=(x, late))


def test_inputs_of_another_dtype():
    model, guide = _mlp_regression()
    x, y = torch.randn(20, 1, dtype=torch.float64), torch.randn(20, 1)
    fit(model, guide, (x, y), steps=2)  # float64 inputs are converted
    assert predict(model, guide, x, 2).f.dtype == torch.float32
    with pytest.raises(TypeError, match="dtype torch.int64; the net takes floating-point"):
        fit(model, guide, (torch.arange(20).unsqueeze(1), y), steps=1)
    with pytest.raises(ValueError, match="x is empty"):
        predict(model, guide, torch.zeros(0, 1))


@pytest.mark.parametrize("settings,message", [
    ({"lr": 0}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"batch_size": 0}, "batch_size must be an integer ≥ 1"),
    ({"steps": 2.5}, "steps must be an integer ≥ 1"),
    ({"steps": float("nan")}, "steps must be an integer ≥ 1"),
    ({"steps": None, "epochs": 0}, "epochs must be a finite number > 0"),
])
def test_bad_fit_settings_are_refused(settings, message):
    model, guide = _mlp_regression()
    kwargs = {"steps": 3, **settings}
    with pytest.raises(ValueError, match=message):
        fit(model, guide, (torch.randn(10, 1), torch.randn(10, 1)), **kwargs)


def test_a_prior_that_cannot_broadcast_names_the_parameter():
    prior = priors.by_name({"fc0.weight": pyro.distributions.Normal(torch.zeros(3), 1.0),
                            "*": priors.Normal(1.0)})
    model = BNN(MLP([1, 8, 1]), prior, Gaussian(0.1))
    with pytest.raises(ValueError, match=r"parameter 'fc0.weight' has batch shape \(3,\)"):
        Delta(model)


def test_resume_with_changed_settings_or_data_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    x, y = torch.randn(20, 1), torch.randn(20, 1)
    model, guide = _mlp_regression()
    fit(model, guide, (x, y), steps=5, lr=0.01, checkpoint=path)
    model, guide = _mlp_regression()
    assert fit(model, guide, (x, y), steps=8, lr=0.01, checkpoint=path).resumed_from == 5
    for change, message in [({"lr": 0.02}, "lr: 0.01 in the checkpoint, 0.02 now"),
                            ({"seed": 1}, "seed: 0 in the checkpoint, 1 now"),
                            ({"steps": 3}, "already trained 8 steps"),
                            ({"data": (x, y + 1)}, "training data differ")]:
        model, guide = _mlp_regression()
        kwargs = {"steps": 8, "lr": 0.01, **change}
        data = kwargs.pop("data", (x, y))
        with pytest.raises(CheckpointError, match=message):
            fit(model, guide, data, checkpoint=path, **kwargs)
    model, guide = _mlp_regression()  # an explicit override continues regardless
    assert fit(model, guide, (x, y), steps=9, lr=0.02, checkpoint=path,
               resume="force").resumed_from == 8
    other = BNN(MLP([1, 4, 1]), priors.Normal(1.0), Gaussian(0.1))
    with pytest.raises(CheckpointError,
                       match=r"run.pt: the guide was saved with a different architecture.*resumed"):
        fit(other, Delta(other), (x, y), steps=9, lr=0.02, checkpoint=path, resume="force")


def test_adversarial_discriminator_resumes_exactly(tmp_path):
    x, y = _regression(16)

    def run(steps, path):
        model = BNN(MLP([1, 4, 1]), priors.Normal(1.0), Gaussian(0.1))
        guide = ImplicitGuide(model)
        loss = hb.inference.AdversarialELBO(num_particles=2, pretrain_steps=3,
                                            hidden_sizes=(8,))
        fit(model, guide, (x, y), steps=steps, loss=loss, checkpoint=path)
        return guide, loss

    straight, straight_loss = run(6, tmp_path / "a.pt")
    run(3, tmp_path / "b.pt")
    resumed, resumed_loss = run(6, tmp_path / "b.pt")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(a, b, msg=name)
    for a, b in zip(straight_loss.discriminator.parameters(),
                    resumed_loss.discriminator.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert straight_loss.discriminator_losses == pytest.approx(resumed_loss.discriminator_losses)


def test_readme_own_network_example_runs():
    """The getting-started page's "Your own network" example, as written."""
    from pathlib import Path

    text = Path(__file__).parents[1].joinpath("docs", "getting-started.md").read_text()
    section = text.split("## Your own network", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {"hb": hb, "BNN": BNN, "priors": priors}
    exec(compile(code, "getting-started.md", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["probs"].shape == (50, 64, 10)


def test_numpy_settings_resume_and_a_double_model_takes_float64_inputs(tmp_path):
    import numpy as np

    x, y = torch.randn(12, 1), torch.randn(12, 1)
    model, guide = _mlp_regression()
    fit(model, guide, (x, y), steps=2, lr=np.float64(0.01), checkpoint=tmp_path / "c.pt")
    model, guide = _mlp_regression()
    assert fit(model, guide, (x, y), steps=3, lr=np.float64(0.01),
               checkpoint=tmp_path / "c.pt").resumed_from == 2
    double = BNN(TorchNet(_sequential()), priors.Normal(1.0), Gaussian(0.1)).double()
    guide = Delta(double).double()
    fit(double, guide, (x.double(), y.double()), steps=2)
    assert predict(double, guide, x.double(), 2).f.dtype == torch.float64


def test_layers_read_without_their_forward_refuse_local_reparameterization():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 1, batch_first=True)
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            h, _ = self.attn(x, x, x)
            return self.head(h.mean(1))

    x, y = torch.randn(8, 3, 4), torch.randn(8, 1)
    model = BNN(Attention(), priors.Normal(1.0), Gaussian(0.1))
    guide = MeanField(model, local_reparameterization=True)
    with pytest.raises(RuntimeError, match=r"\['attn.out_proj'\] are read without calling"):
        fit(model, guide, (x, y), steps=1)
    fit(model, MeanField(model), (x, y), steps=2)  # whole weights are fine
    assert TorchNet(Attention()).with_dropout(0.2)._dropout_layers == ["head"]


def test_transposed_convolutions_keep_plain_weights_under_weight_norm():
    net = TorchNet(nn.Sequential(nn.ConvTranspose1d(2, 5, 3), nn.Flatten(), nn.Linear(40, 1)),
                   weight_norm=True)
    assert net.param_specs["0.weight"].role == "weight"
    assert "2.scale" in net.param_specs
    assert net(net.init_params(), torch.randn(4, 2, 6)).shape == (4, 1)
