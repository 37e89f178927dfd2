"""Tests for hyperbayes.models.nets: batched evaluation, weight norm, dropout, LRT and errors."""

import math

import pytest
import torch

from hyperbayes.models.nets import CNN, MLP, gaussian_weights, local_reparameterization
from tests.common import assert_close


def _batched_params(net, s, scale=0.5, generator=None):
    return {k: torch.randn(s, *spec.shape, generator=generator) * scale
            for k, spec in net.param_specs.items()}


def _sample(params, i):
    return {k: v[i] for k, v in params.items()}


def _small_cnn(**kwargs):
    return CNN(in_channels=2, image_size=8, channels=(3, 4), kernel_size=3, hidden=(5,),
               num_outputs=3, **kwargs)


# ------------------------------------------------------------------------------------------------
# Batched evaluation equals a loop over samples
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu", "elu", "softplus",
                                        "sigmoid"])
def test_mlp_batched_equals_loop(activation):
    net = MLP([3, 7, 5, 2], activation)
    params = _batched_params(net, 4)
    x = torch.randn(6, 3)
    out = net(params, x)
    assert out.shape == (4, 6, 2)
    for i in range(4):
        assert_close(out[i], net(_sample(params, i), x), atol=1e-5)


def test_mlp_unbatched_shape_and_image_inputs_are_flattened():
    net = MLP([12, 4, 2])
    params = net.init_params()
    x = torch.randn(5, 3, 2, 2)
    out = net(params, x)
    assert out.shape == (5, 2)
    assert_close(out, net(params, x.reshape(5, 12)), atol=0)


def test_mlp_multidim_sample_shape():
    net = MLP([3, 4, 2])
    params = {k: torch.randn(2, 3, *s.shape) for k, s in net.param_specs.items()}
    x = torch.randn(5, 3)
    out = net(params, x)
    assert out.shape == (2, 3, 5, 2)
    assert_close(out[1, 2], net({k: v[1, 2] for k, v in params.items()}, x), atol=1e-5)


def test_cnn_batched_equals_loop():
    net = _small_cnn()
    params = _batched_params(net, 3)
    x = torch.randn(4, 2, 8, 8)
    out = net(params, x)
    assert out.shape == (3, 4, 3)
    for i in range(3):
        assert_close(out[i], net(_sample(params, i), x), atol=1e-5)


def test_cnn_unbatched_matches_torch_layers():
    net = _small_cnn(activation="tanh")
    p = net.init_params(torch.Generator().manual_seed(1))
    p = {k: v + 0.1 * torch.randn_like(v) for k, v in p.items()}
    x = torch.randn(4, 2, 8, 8)
    h = x
    for i in range(2):
        h = torch.tanh(torch.nn.functional.conv2d(h, p[f"conv{i}.weight"], p[f"conv{i}.bias"],
                                                  padding=1))
        h = torch.nn.functional.max_pool2d(h, 2)
    h = torch.tanh(torch.nn.functional.linear(h.flatten(1), p["fc0.weight"], p["fc0.bias"]))
    expected = torch.nn.functional.linear(h, p["fc1.weight"], p["fc1.bias"])
    assert_close(net(p, x), expected, atol=1e-5)


def test_mlp_matches_torch_linear_stack():
    torch.manual_seed(3)
    layers = [torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6), torch.nn.Tanh(),
              torch.nn.Linear(6, 3)]
    reference = torch.nn.Sequential(*layers)
    linears = [m for m in layers if isinstance(m, torch.nn.Linear)]
    params = {}
    for i, lin in enumerate(linears):
        params[f"fc{i}.weight"] = lin.weight.detach()
        params[f"fc{i}.bias"] = lin.bias.detach()
    net = MLP([4, 8, 6, 3], "tanh")
    assert set(params) == set(net.param_specs)
    x = torch.randn(10, 4)
    with torch.no_grad():
        assert_close(net(params, x), reference(x), atol=1e-6)


def test_mlp_without_bias():
    net = MLP([3, 2], bias=False)
    assert set(net.param_specs) == {"fc0.weight"}
    w = torch.randn(2, 3)
    x = torch.randn(4, 3)
    assert_close(net({"fc0.weight": w}, x), x @ w.T, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Weight norm
# ------------------------------------------------------------------------------------------------


def test_weight_norm_mlp_equals_plain_mlp():
    wn = MLP([3, 6, 2], "tanh", weight_norm=True)
    assert {s.role for s in wn.param_specs.values()} == {"direction", "scale", "bias"}
    assert wn.param_specs["fc0.scale"].shape == (6,)
    params = {k: torch.randn(*s.shape) for k, s in wn.param_specs.items()}
    v, g = params["fc0.direction"], params["fc0.scale"]
    w0 = g[:, None] * v / v.norm(dim=1, keepdim=True)  # per output row
    v1, g1 = params["fc1.direction"], params["fc1.scale"]
    w1 = g1[:, None] * v1 / v1.norm(dim=1, keepdim=True)
    plain = {"fc0.weight": w0, "fc0.bias": params["fc0.bias"],
             "fc1.weight": w1, "fc1.bias": params["fc1.bias"]}
    x = torch.randn(7, 3)
    assert_close(wn(params, x), MLP([3, 6, 2], "tanh")(plain, x), atol=1e-5)
    # the result is invariant to rescaling a direction row
    scaled = dict(params, **{"fc0.direction": v * torch.rand(6, 1).add(0.5)})
    assert_close(wn(scaled, x), wn(params, x), atol=1e-5)


def test_weight_norm_batched_scales_shared_directions_equals_loop():
    """The Bayesian-hypernetwork case: scales sampled (S, out), directions point estimates."""
    net = MLP([3, 5, 4, 2], "relu", weight_norm=True)
    s = 6
    params = {}
    for k, spec in net.param_specs.items():
        shape = spec.shape if spec.role == "direction" else (s, *spec.shape)
        params[k] = torch.randn(*shape)
    x = torch.randn(8, 3)
    out = net(params, x)
    assert out.shape == (s, 8, 2)
    for i in range(s):
        single = {k: (v if net.param_specs[k].role == "direction" else v[i])
                  for k, v in params.items()}
        assert_close(out[i], net(single, x), atol=1e-5)
    # and the same as every tensor carrying its own copy of the directions
    copies = {k: (v.expand(s, *v.shape).clone() if v.dim() == len(net.param_specs[k].shape)
                  else v) for k, v in params.items()}
    assert_close(net(copies, x), out, atol=1e-5)


def test_weight_norm_cnn_batched_scales_shared_directions_equals_loop():
    net = _small_cnn(weight_norm=True)
    s = 3
    params = {k: torch.randn(*(spec.shape if spec.role == "direction" else (s, *spec.shape)))
              for k, spec in net.param_specs.items()}
    x = torch.randn(2, 2, 8, 8)
    out = net(params, x)
    assert out.shape == (s, 2, 3)
    for i in range(s):
        single = {k: (v if net.param_specs[k].role == "direction" else v[i])
                  for k, v in params.items()}
        assert_close(out[i], net(single, x), atol=1e-5)


def test_weight_norm_cnn_equals_plain_cnn():
    wn = _small_cnn(weight_norm=True)
    params = {k: torch.randn(*s.shape) for k, s in wn.param_specs.items()}
    plain = {}
    for k in params:
        if k.endswith(".direction"):
            prefix = k.rsplit(".", 1)[0]
            v, g = params[k], params[f"{prefix}.scale"]
            norm = v.reshape(v.shape[0], -1).norm(dim=1)
            plain[f"{prefix}.weight"] = v * (g / norm).reshape(-1, *([1] * (v.dim() - 1)))
        elif k.endswith(".bias"):
            plain[k] = params[k]
    x = torch.randn(3, 2, 8, 8)
    assert_close(wn(params, x), _small_cnn()(plain, x), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Expanded (stride-0) parameters and MC dropout
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: MLP([3, 5, 2]), _small_cnn,
                                  lambda: MLP([3, 5, 2], weight_norm=True)])
def test_expanded_params_equal_batched_copies(make):
    net = make()
    single = {k: torch.randn(*s.shape) for k, s in net.param_specs.items()}
    x = torch.randn(4, 3) if isinstance(net, MLP) else torch.randn(4, 2, 8, 8)
    s = 5
    expanded = {k: v.expand(s, *v.shape) for k, v in single.items()}
    assert all(v.stride(0) == 0 for v in expanded.values())
    copies = {k: v.clone() for k, v in expanded.items()}
    out = net(expanded, x)
    assert out.shape == (s, 4, net(single, x).shape[-1])
    assert_close(out, net(copies, x), atol=1e-5)
    assert_close(out, net(single, x).expand_as(out), atol=1e-5)


def test_mc_dropout_differs_per_sample_with_expanded_params():
    net = MLP([3, 32, 32, 2], dropout=0.5)
    single = {k: torch.randn(*s.shape) for k, s in net.param_specs.items()}
    expanded = {k: v.expand(8, *v.shape) for k, v in single.items()}
    x = torch.randn(5, 3)
    out = net(expanded, x)
    assert out.shape == (8, 5, 2)
    for i in range(1, 8):
        assert not torch.allclose(out[0], out[i])
    # dropout is always on (MC dropout): two calls differ, too
    assert not torch.allclose(net(single, x), net(single, x))


def test_cnn_mc_dropout_differs_per_sample_with_expanded_params():
    net = CNN(in_channels=1, image_size=8, channels=(3,), kernel_size=3, hidden=(16,),
              num_outputs=2, dropout=0.5)
    single = {k: torch.randn(*s.shape) for k, s in net.param_specs.items()}
    out = net({k: v.expand(4, *v.shape) for k, v in single.items()}, torch.randn(3, 1, 8, 8))
    assert out.shape == (4, 3, 2)
    assert not torch.allclose(out[0], out[1])


def test_no_dropout_gives_identical_samples_with_expanded_params():
    net = MLP([3, 16, 16, 2], dropout=0.0)
    single = {k: torch.randn(*s.shape) for k, s in net.param_specs.items()}
    out = net({k: v.expand(6, *v.shape) for k, v in single.items()}, torch.randn(5, 3))
    assert out.shape == (6, 5, 2)
    for i in range(1, 6):
        assert torch.equal(out[0], out[i])


def test_dropout_scales_kept_units():
    """Inverted dropout keeps the expected activation: mean over many samples ≈ no dropout."""
    torch.manual_seed(0)
    net = MLP([1, 400, 1], "relu", dropout=0.5)
    params = {"fc0.weight": torch.ones(400, 1), "fc0.bias": torch.zeros(400),
              "fc1.weight": torch.ones(1, 400) / 400, "fc1.bias": torch.zeros(1)}
    x = torch.ones(1, 1)
    out = net({k: v.expand(2000, *v.shape) for k, v in params.items()}, x)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)
    assert out.std().item() > 0.02


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_wrong_input_feature_count():
    net = MLP([3, 4, 1])
    with pytest.raises(ValueError, match="expects 3 input features, got 4"):
        net(net.init_params(), torch.randn(5, 4))


def test_cnn_wrong_image_shape():
    net = _small_cnn()
    with pytest.raises(ValueError, match="CNN expects images"):
        net(net.init_params(), torch.randn(5, 1, 8, 8))


def test_wrong_param_shape():
    net = MLP([3, 4, 1])
    params = net.init_params()
    params["fc0.weight"] = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"parameter 'fc0.weight' has shape \(4, 2\)"):
        net(params, torch.randn(5, 3))


def test_inconsistent_sample_shapes():
    net = MLP([3, 4, 1])
    params = {k: torch.randn(2, *s.shape) for k, s in net.param_specs.items()}
    params["fc1.bias"] = torch.randn(3, 1)
    with pytest.raises(ValueError, match="sample shape"):
        net(params, torch.randn(5, 3))


def test_missing_param():
    net = MLP([3, 4, 1])
    params = net.init_params()
    del params["fc1.bias"]
    with pytest.raises(KeyError, match="missing parameter 'fc1.bias'"):
        net(params, torch.randn(5, 3))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLP([3, 1], "swish")
    with pytest.raises(ValueError, match="unknown activation 'gelu2'"):
        CNN(activation="gelu2")
    with pytest.raises(ValueError, match="MLP sizes"):
        MLP([3])
    with pytest.raises(ValueError, match="MLP sizes"):
        MLP([3, 0, 1])
    with pytest.raises(ValueError, match="dropout must be in"):
        MLP([3, 1], dropout=1.0)


# ------------------------------------------------------------------------------------------------
# Parameter bookkeeping and gradients
# ------------------------------------------------------------------------------------------------


def test_cnn_default_parameter_count():
    net = CNN()
    assert net.num_params == 20_018
    assert net.dense_sizes == [784, 8, 10]
    assert sum(v.numel() for v in net.init_params().values()) == 20_018
    out = net(net.init_params(), torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_param_specs_metadata():
    net = MLP([3, 5, 2])
    spec = net.param_specs["fc1.weight"]
    assert (spec.shape, spec.role, spec.layer, spec.fan_in, spec.fan_out) == ((2, 5), "weight",
                                                                               1, 5, 2)
    assert net.param_specs["fc0.bias"].fan_in == 3
    assert net.num_params == 3 * 5 + 5 + 5 * 2 + 2
    cnn = _small_cnn()
    assert cnn.param_specs["conv1.weight"].fan_in == 3 * 3 * 3
    assert cnn.param_specs["fc0.weight"].shape == (5, 4 * 2 * 2)


def test_init_params_shapes_and_values():
    net = MLP([4, 9, 3], weight_norm=True)
    params = net.init_params(torch.Generator().manual_seed(0))
    assert set(params) == set(net.param_specs)
    for name, spec in net.param_specs.items():
        assert tuple(params[name].shape) == spec.shape
    assert params["fc0.direction"].abs().max() <= 1 / math.sqrt(4)
    assert params["fc1.direction"].abs().max() <= 1 / math.sqrt(9)
    assert params["fc0.direction"].std() > 0
    assert torch.equal(params["fc0.scale"], torch.ones(9))
    assert torch.equal(params["fc1.bias"], torch.zeros(3))
    again = net.init_params(torch.Generator().manual_seed(0))
    assert all(torch.equal(params[k], again[k]) for k in params)


@pytest.mark.parametrize("make", [lambda: MLP([3, 5, 2], "tanh"), lambda: _small_cnn(
    activation="tanh"), lambda: MLP([3, 5, 2], "tanh", weight_norm=True)])
def test_gradients_flow_to_every_param(make):
    net = make()
    params = {k: (torch.randn(3, *s.shape) * 0.5).requires_grad_()
              for k, s in net.param_specs.items()}
    x = torch.randn(4, 3) if isinstance(net, MLP) else torch.randn(4, 2, 8, 8)
    (net(params, x) ** 2).sum().backward()
    for name, p in params.items():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if net.param_specs[name].role in ("weight", "direction", "scale"):
            for i in range(3):
                assert p.grad[i].abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------
# Local reparameterization
# ------------------------------------------------------------------------------------------------


def test_local_reparameterization_moments():
    torch.manual_seed(0)
    net = MLP([3, 2], bias=False)
    loc = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
    scale = torch.tensor([[0.3, 0.1, 0.2], [0.05, 0.4, 0.25]])
    value = torch.zeros(2, 3)  # the registered draw itself is not used by the layer
    rows = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.3, 1.2]])
    reps = 20_000
    x = rows.repeat_interleave(reps, dim=0)
    with local_reparameterization():
        gaussian_weights.register(value, loc, scale)
        assert gaussian_weights.lookup(value) is not None
        out = net({"fc0.weight": value}, x).reshape(2, reps, 2)
    expected_mean = rows @ loc.T
    expected_var = (rows ** 2) @ (scale ** 2).T
    assert_close(out.mean(1), expected_mean, atol=0.02, rtol=0)
    assert_close(out.var(1), expected_var, atol=0, rtol=0.05)
    # outside the scope the same tensor is an ordinary (deterministic) weight
    assert gaussian_weights.lookup(value) is None
    assert torch.equal(net({"fc0.weight": value}, x), torch.zeros(len(x), 2))


def test_local_reparameterization_only_for_the_registered_tensor():
    net = MLP([3, 2], bias=False)
    loc, scale = torch.randn(2, 3), torch.rand(2, 3)
    registered = torch.randn(2, 3)
    other = registered.clone()
    x = torch.randn(50, 3)
    with local_reparameterization():
        gaussian_weights.register(registered, loc, scale)
        assert gaussian_weights.lookup(other) is None
        assert_close(net({"fc0.weight": other}, x), x @ other.T, atol=1e-6)
        first = net({"fc0.weight": registered}, x)
        second = net({"fc0.weight": registered}, x)
        assert not torch.allclose(first, second)  # fresh pre-activation noise per call
        with local_reparameterization():  # a nested scope has its own registry
            assert gaussian_weights.lookup(registered) is None
        assert gaussian_weights.lookup(registered) is not None
    with pytest.raises(RuntimeError, match="outside a local_reparameterization"):
        gaussian_weights.register(registered, loc, scale)


def test_with_dropout_copies_the_net():
    net = MLP([3, 16, 2])
    dropped = net.with_dropout(0.5)
    assert dropped is not net and dropped.dropout == 0.5 and net.dropout == 0.0
    assert dropped.param_specs == net.param_specs
    params = {k: v.expand(4, *v.shape) for k, v in net.init_params().items()}
    x = torch.randn(5, 3)
    out = net(params, x)
    assert torch.equal(out[0], out[1])
    assert not torch.allclose(dropped(params, x)[0], dropped(params, x)[1])
    with pytest.raises(ValueError, match="dropout must be in"):
        net.with_dropout(1.0)


def test_identity_activation_without_bias_is_the_product_model():
    """MLP([1, 1, 1], 'identity', bias=False) computes ŷ = a·b·x (the BHN product toy)."""
    net = MLP([1, 1, 1], activation="identity", bias=False)
    assert set(net.param_specs) == {"fc0.weight", "fc1.weight"}
    params = {"fc0.weight": torch.tensor([[[2.0]], [[-1.0]]]),
              "fc1.weight": torch.tensor([[[3.0]], [[-1.0]]])}
    x = torch.tensor([[1.0], [-2.0]])
    out = net(params, x)
    torch.testing.assert_close(out[..., 0], torch.tensor([[6.0, -12.0], [1.0, -2.0]]))


@pytest.mark.parametrize("h_shape, g_shape, b_shape", [
    ((5, 4), (3,), (3,)),           # one scale sample, as in BHN training
    ((5, 4), (2, 3), (3,)),         # sampled scales, shared input and bias
    ((2, 5, 4), (2, 3), (2, 3)),    # per-sample inputs, scales and biases
    ((2, 5, 4), (3,), None),        # per-sample inputs, shared scales, no bias
])
def test_fused_weight_norm_layer_gradients_match_autograd(h_shape, g_shape, b_shape):
    """The fused weight-norm layer's hand-written backward equals autograd through
    (h·vᵀ)·(g/‖v‖) + b for every combination of shared and sampled operands."""
    from hyperbayes.models.nets import _WeightNormLinear

    gen = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.double).requires_grad_()

    h, v, g = leaf(*h_shape), leaf(3, 4), leaf(*g_shape)
    b = leaf(*b_shape) if b_shape else None
    inputs = [t for t in (h, v, g, b) if t is not None]
    assert torch.autograd.gradcheck(lambda *a: _WeightNormLinear.apply(*a, *([None] * (
        4 - len(a)))), tuple(inputs))
    reference = torch.matmul(h, v.t()) * (g / v.norm(dim=1)).unsqueeze(-2)
    if b is not None:
        reference = reference + (b.unsqueeze(-2) if b.dim() == 2 else b)
    assert_close(_WeightNormLinear.apply(h, v, g, b), reference, atol=1e-12)
