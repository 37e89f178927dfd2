"""Gauge fixing of ReLU nets: same function, canonical unit norms, centred logits, idempotent."""

import pytest
import torch

from hyperbayes.models import CNN, MLP, gauge
from hyperbayes.models.gauge import gauge_fix


def _random_params(net, sample_shape=(), scale=1.0, seed=0):
    """Parameters with varied per-unit scales, so that the gauge has something to fix."""
    generator = torch.Generator().manual_seed(seed)
    return {name: scale * torch.randn(*sample_shape, *spec.shape, generator=generator)
            * torch.empty(*sample_shape, *spec.shape).uniform_(0.2, 3.0, generator=generator)
            for name, spec in net.param_specs.items()}


def _assert_same_function(net, params, fixed, x):
    logits, fixed_logits = net(params, x), net(fixed, x)
    torch.testing.assert_close(fixed_logits.softmax(-1), logits.softmax(-1), atol=1e-5, rtol=1e-4)
    # logits move by one constant per sample and input: their differences are unchanged
    torch.testing.assert_close(fixed_logits - fixed_logits[..., :1], logits - logits[..., :1],
                               atol=1e-4, rtol=1e-4)


def _assert_gauge(net, fixed, unit_dims):
    """Hidden units have (row, bias) squared norm fan_in + 1; the output biases sum to zero."""
    # param_specs lists the layers in evaluation order
    prefixes = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in net.param_specs))
    for prefix in prefixes[:-1]:
        weight, bias = fixed[f"{prefix}.weight"], fixed[f"{prefix}.bias"]
        dims = tuple(range(-unit_dims[prefix[:2]], 0))
        squared_norm = weight.pow(2).sum(dims) + bias.pow(2)
        fan_in = net.param_specs[f"{prefix}.weight"].fan_in
        torch.testing.assert_close(squared_norm, torch.full_like(squared_norm, fan_in + 1.0))
    output_bias = fixed[f"{prefixes[-1]}.bias"]
    torch.testing.assert_close(output_bias.sum(-1), torch.zeros(output_bias.shape[:-1]),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("sizes", [[4, 7, 3], [4, 6, 5, 3]], ids=["1-hidden", "2-hidden"])
@pytest.mark.parametrize("sample_shape", [(), (5,), (2, 3)], ids=["no-sample", "S", "S1xS2"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_mlp_gauge_keeps_function_and_fixes_norms(sizes, sample_shape, activation):
    net = MLP(sizes, activation)
    params = _random_params(net, sample_shape)
    fixed = gauge_fix(params, net)
    assert set(fixed) == set(params)
    for name, value in fixed.items():
        assert value.shape == params[name].shape
    _assert_same_function(net, params, fixed, torch.randn(32, sizes[0]) * 3)
    _assert_gauge(net, fixed, {"fc": 1})
    # idempotent: fixing again changes nothing
    again = gauge_fix(fixed, net)
    for name in fixed:
        torch.testing.assert_close(again[name], fixed[name])


def test_mlp_gauge_with_shared_and_sampled_parameters():
    # a shared (sample-free) weight next to sampled ones becomes sample-shaped
    net = MLP([3, 4, 2])
    params = _random_params(net, (6,))
    params["fc0.weight"] = params["fc0.weight"][0]
    fixed = gauge_fix(params, net)
    assert fixed["fc0.weight"].shape == (6, 4, 3)
    _assert_same_function(net, params, fixed, torch.randn(10, 3))
    _assert_gauge(net, fixed, {"fc": 1})


def test_gauge_is_differentiable_and_leaves_input_alone():
    net = MLP([3, 5, 2])
    params = {name: value.requires_grad_() for name, value in _random_params(net, (4,)).items()}
    originals = {name: value.detach().clone() for name, value in params.items()}
    fixed = gauge_fix(params, net)
    sum(value.square().sum() for value in fixed.values()).backward()
    for name, value in params.items():
        assert value.grad is not None and torch.isfinite(value.grad).all(), name
        torch.testing.assert_close(value.detach(), originals[name])


def test_dead_units_are_left_alone():
    net = MLP([3, 4, 2])
    params = _random_params(net)
    params["fc0.weight"][1] = 0.0
    params["fc0.bias"][1] = 0.0
    params = {name: value.requires_grad_() for name, value in params.items()}
    fixed = gauge_fix(params, net)
    assert fixed["fc0.weight"][1].abs().sum() == 0
    torch.testing.assert_close(fixed["fc1.weight"][:, 1], params["fc1.weight"][:, 1])
    sum(value.sum() for value in fixed.values()).backward()
    assert all(torch.isfinite(value.grad).all() for value in params.values())
    _assert_same_function(net, params, fixed, torch.randn(8, 3))


def test_regression_output_not_centred_on_request():
    net = MLP([2, 5, 1])
    params = _random_params(net, (3,))
    fixed = gauge_fix(params, net, center_output_bias=False)
    x = torch.randn(16, 2)
    torch.testing.assert_close(net(fixed, x), net(params, x), atol=1e-5, rtol=1e-4)


def test_mlp_without_bias_rescales_rows_to_fan_in():
    net = MLP([3, 4, 2], bias=False)
    params = _random_params(net, (2,))
    fixed = gauge_fix(params, net)
    torch.testing.assert_close(fixed["fc0.weight"].pow(2).sum(-1), torch.full((2, 4), 3.0))
    x = torch.randn(8, 3)
    torch.testing.assert_close(net(fixed, x), net(params, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sample_shape", [(), (3,)], ids=["no-sample", "S"])
def test_cnn_gauge_keeps_function_and_fixes_norms(sample_shape):
    net = CNN(in_channels=2, image_size=8, channels=(3, 4), kernel_size=3, hidden=(5,),
              num_outputs=4)
    params = _random_params(net, sample_shape)
    fixed = gauge_fix(params, net)
    _assert_same_function(net, params, fixed, torch.randn(6, 2, 8, 8))
    _assert_gauge(net, fixed, {"co": 3, "fc": 1})
    again = gauge_fix(fixed, net)
    for name in fixed:
        torch.testing.assert_close(again[name], fixed[name])


@pytest.mark.parametrize("net, centre", [
    (MLP([2, 4, 3, 2]), True), (MLP([2, 4, 3, 2]), False), (MLP([1, 6, 1]), False),
    (CNN(in_channels=1, image_size=6, channels=(2,), kernel_size=3, hidden=(3,),
         num_outputs=3), True)], ids=["mlp-centred", "mlp", "toy", "cnn"])
def test_gauge_fixed_weights_span_d_minus_the_constraints(net, centre):
    """The Jacobian of the gauge map has rank D − gauge_constraints: the fixed weights lie on a
    manifold of that dimension (what an entropy estimate over them must use)."""
    params = _random_params(net, seed=1)
    names = list(net.param_specs)
    flat = torch.cat([params[n].reshape(-1) for n in names]).double()
    sizes = [params[n].numel() for n in names]

    def fixed_flat(vector):
        parts = dict(zip(names, (v.reshape(net.param_specs[n].shape)
                                 for n, v in zip(names, vector.split(sizes), strict=True)),
                         strict=True))
        fixed = gauge_fix(parts, net, center_output_bias=centre)
        return torch.cat([fixed[n].reshape(-1) for n in names])

    jacobian = torch.autograd.functional.jacobian(fixed_flat, flat)
    rank = int(torch.linalg.matrix_rank(jacobian))
    assert rank == flat.numel() - gauge.gauge_constraints(net, center_output_bias=centre)
    with pytest.raises(ValueError, match="MLP and CNN"):
        gauge.gauge_constraints(object())


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "elu"])
def test_non_homogeneous_activations_are_rejected(activation):
    net = MLP([3, 4, 2], activation)
    with pytest.raises(ValueError, match="positively homogeneous"):
        gauge_fix(_random_params(net), net)
    cnn = CNN(image_size=8, channels=(2,), kernel_size=3, activation=activation)
    with pytest.raises(ValueError, match=activation):
        gauge_fix(_random_params(cnn), cnn)


def test_bad_nets_and_parameters_are_rejected():
    net = MLP([3, 4, 2], weight_norm=True)
    with pytest.raises(ValueError, match="weight-norm"):
        gauge_fix(_random_params(net), net)
    net = MLP([3, 4, 2])
    params = _random_params(net)
    del params["fc1.bias"]
    with pytest.raises(ValueError, match=r"missing parameters \['fc1.bias'\]"):
        gauge_fix(params, net)
    params = _random_params(net)
    params["fc0.weight"] = torch.randn(4, 4)
    with pytest.raises(ValueError, match="fc0.weight"):
        gauge_fix(params, net)
    with pytest.raises(ValueError, match="MLP and CNN"):
        gauge_fix(params, object())


def test_exported_from_models():
    import hyperbayes.models as models

    assert models.gauge is gauge
