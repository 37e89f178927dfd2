"""Gauge fixing: one canonical representative of the weight symmetries of ReLU nets.

A ReLU unit is positively homogeneous, relu(c·h) = c·relu(h) for c > 0, so scaling a hidden
unit's incoming weights and bias by c and its outgoing weights by 1/c leaves the net's function
unchanged; adding a constant to every logit leaves the softmax unchanged. A generator of weights
(*Generating Neural Networks with Neural Networks*, Deutsch 2018) would waste capacity and entropy
on these directions, so its samples are mapped to a fixed gauge before use:

* every hidden unit's incoming (weight row, bias) vector is rescaled to squared norm fan_in + 1
  and the inverse factor moved into the next layer's weights for that unit's input;
* the output biases (logits) are shifted to sum to zero.

Max-pooling and dropout commute with positive per-unit scaling, so the same holds for the conv
layers of :class:`~hyperbayes.models.nets.CNN` (per output channel: filter and bias).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .nets import CNN, MLP, Net, _sample_shape

__all__ = ["gauge_fix", "gauge_constraints", "HOMOGENEOUS_ACTIVATIONS"]

#: activations with act(c·h) = c·act(h) for every c > 0, for which the rescaling is a symmetry
HOMOGENEOUS_ACTIVATIONS = ("relu", "leaky_relu", "identity")


def _layers(net: Net) -> list[tuple[str, str]]:
    """(prefix, kind) of every layer in evaluation order; kind is "conv" or "dense"."""
    if isinstance(net, MLP):
        return [(f"fc{i}", "dense") for i in range(len(net.sizes) - 1)]
    convs = [(f"conv{i}", "conv") for i in range(len(net.channels))]
    return convs + [(f"fc{j}", "dense") for j in range(len(net.dense_sizes) - 1)]


def gauge_fix(params: Mapping[str, torch.Tensor], net: Net, *,
              center_output_bias: bool = True) -> dict[str, torch.Tensor]:
    """Map ``params`` of ``net`` to the canonical gauge; the net's function is unchanged.

    For each hidden layer in order, every unit's incoming (weight row, bias) vector — for a conv
    layer, an output channel's filter and bias — is rescaled to squared norm fan_in + 1 (fan_in
    without a bias), and the next layer's weights reading that unit are divided by the same
    factor. Then the output biases are shifted to sum to zero: the logits all move by the same
    constant, so softmax probabilities and logit differences are unchanged.

    Args:
        params: the net's parameters; each may carry the same leading sample shape (e.g. (S,))
            or none, as for ``net(params, x)``. Entries the net does not declare are passed
            through. The rescaling is vectorized over samples and differentiable, so it can be
            applied to generator outputs inside a loss.
        net: an :class:`~hyperbayes.models.nets.MLP` or :class:`~hyperbayes.models.nets.CNN`
            with a positively homogeneous activation (relu, leaky_relu or identity) and without
            weight norm.
        center_output_bias: shift the output biases to sum to zero. This is a symmetry only of
            softmax (classification) outputs; pass False for regression nets, whose outputs
            the shift would change.

    Returns:
        A new dict with the gauge-fixed parameters; ``params`` is not modified. Units whose
        incoming weights and bias are all zero (constant output 0) are left as they are.

    Raises:
        ValueError: for other nets or activations, weight-norm nets, or missing or mis-shaped
            parameters.
    """
    if not isinstance(net, (MLP, CNN)):
        raise ValueError(f"gauge_fix supports MLP and CNN nets, got {type(net).__name__}")
    if net.activation not in HOMOGENEOUS_ACTIVATIONS:
        raise ValueError(
            f"gauge fixing needs a positively homogeneous activation "
            f"{HOMOGENEOUS_ACTIVATIONS}; {net!r} uses {net.activation!r}, for which rescaling "
            f"units changes the function")
    if net.weight_norm:
        raise ValueError("gauge_fix does not support weight-norm nets: their per-unit scales "
                         "are a different parametrisation of the same symmetry")
    missing = sorted(set(net.param_specs) - set(params))
    if missing:
        raise ValueError(f"missing parameters {missing} for {net!r}")
    _sample_shape(params, net.param_specs)  # checks shapes and a common sample shape

    fixed = dict(params)
    layers = _layers(net)
    for index, (prefix, kind) in enumerate(layers[:-1]):
        weight, bias = fixed[f"{prefix}.weight"], fixed.get(f"{prefix}.bias")
        unit_dims = 3 if kind == "conv" else 1  # (in, k, k) or (in,) per unit
        reduce_dims = tuple(range(-unit_dims, 0))
        squared_norm = weight.pow(2).sum(reduce_dims)
        fan_in = net.param_specs[f"{prefix}.weight"].fan_in
        if bias is not None:
            squared_norm = squared_norm + bias.pow(2)
        target = fan_in + (1 if bias is not None else 0)
        nonzero = squared_norm > 0
        safe_norm = torch.where(nonzero, squared_norm, torch.ones_like(squared_norm))
        scale = torch.where(nonzero, (target / safe_norm).sqrt(), torch.ones_like(squared_norm))
        fixed[f"{prefix}.weight"] = weight * scale[(...,) + (None,) * unit_dims]
        if bias is not None:
            fixed[f"{prefix}.bias"] = bias * scale

        next_prefix, next_kind = layers[index + 1]
        next_weight = fixed[f"{next_prefix}.weight"]
        if next_kind == "conv":  # (…, out, in, k, k): input channel is dim −3
            fixed[f"{next_prefix}.weight"] = next_weight / scale[..., None, :, None, None]
        else:
            if kind == "conv":  # flattened (C, H, W) features: each channel owns H·W columns
                scale = scale.repeat_interleave(net.dense_sizes[0] // net.channels[-1], dim=-1)
            fixed[f"{next_prefix}.weight"] = next_weight / scale[..., None, :]

    output_bias_name = f"{layers[-1][0]}.bias"
    if center_output_bias and output_bias_name in fixed:
        output_bias = fixed[output_bias_name]
        fixed[output_bias_name] = output_bias - output_bias.mean(-1, keepdim=True)
    return fixed


def gauge_constraints(net: Net, *, center_output_bias: bool = True) -> int:
    """How many dimensions :func:`gauge_fix` removes: one per hidden unit (its incoming norm is
    fixed) and one more for the output biases' zero sum when ``center_output_bias``. The
    gauge-fixed weights of ``net`` lie on a manifold of dimension D − this, where an entropy
    estimate must use that dimension (:class:`~hyperbayes.inference.DiversityObjective` does).
    """
    if not isinstance(net, (MLP, CNN)):
        raise ValueError(f"gauge_fix supports MLP and CNN nets, got {type(net).__name__}")
    layers = _layers(net)
    units = sum(net.param_specs[f"{prefix}.weight"].shape[0] for prefix, _ in layers[:-1])
    centred = center_output_bias and f"{layers[-1][0]}.bias" in net.param_specs
    return units + int(centred)
