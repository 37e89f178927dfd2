"""Functional primary networks (MLP, small CNN) evaluated for S weight samples in one batched pass.

A net here owns no parameters. It declares the parameters it needs as :class:`ParamSpec` s and
maps ``(params, x)`` to outputs, where ``params`` is a dict of tensors. Every tensor may carry the
same leading *sample* shape ``L`` (e.g. ``(S,)``) or none; the output is ``L + (N, ...)``.
Parameters without the sample shape (point estimates, e.g. the weight-norm directions of a
Bayesian hypernetwork) are shared across samples, and tensors that were merely ``expand``-ed along
the sample shape (stride 0, e.g. a MAP guide under a sample plate) are evaluated once.

Weight norm (Salimans & Kingma, 2016) is built in: with ``weight_norm=True`` a layer has a
``direction`` v and a ``scale`` g per output unit, w = g · v / ‖v‖, computed as
(x·vᵀ)·(g/‖v‖) so that sampled scales never materialize a sampled weight matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .noise import dropout_mask, normal_noise

__all__ = ["ParamSpec", "Net", "MLP", "CNN", "ACTIVATIONS", "gaussian_weights",
           "local_reparameterization"]

# Local reparameterization (Kingma et al., 2015): inside a `local_reparameterization()` scope
# (the ELBO opens one around each loss evaluation), a mean-field guide registers each sampled
# dense weight tensor with its Gaussian (loc, scale); a dense layer that receives exactly that
# tensor samples its pre-activations from their Gaussian marginal instead of using the weight
# sample. The registry belongs to the scope (a context variable), so nothing leaks between loss
# evaluations, threads or models, and outside a scope guides draw whole weights.
_LRT_SCOPE: ContextVar[dict | None] = ContextVar("hyperbayes_local_reparameterization",
                                                  default=None)


@contextmanager
def local_reparameterization():
    """A scope in which guides' Gaussian weight draws reach the layers that use them (local
    reparameterization); scopes nest, each with its own registry."""
    token = _LRT_SCOPE.set({})
    try:
        yield
    finally:
        _LRT_SCOPE.reset(token)


class gaussian_weights:
    """The registry of the current :func:`local_reparameterization` scope."""

    @staticmethod
    def in_scope() -> bool:
        """Whether a local-reparameterization scope is open."""
        return _LRT_SCOPE.get() is not None

    @staticmethod
    def register(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> None:
        """Mark ``value`` as a draw from N(loc, scale²) (same shapes); an error outside a
        scope (there the layer would use the value as an ordinary weight)."""
        table = _LRT_SCOPE.get()
        if table is None:
            raise RuntimeError("gaussian_weights.register outside a local_reparameterization() "
                               "scope")
        table[id(value)] = (value, loc, scale)

    @staticmethod
    def clear() -> None:
        """Forget every weight registered in the current scope."""
        table = _LRT_SCOPE.get()
        if table:
            table.clear()

    @staticmethod
    def active() -> bool:
        """Whether any weight is registered in the current scope."""
        return bool(_LRT_SCOPE.get())

    @staticmethod
    def lookup(value: torch.Tensor):
        """(loc, scale) when ``value`` is registered in the current scope, else None."""
        table = _LRT_SCOPE.get()
        entry = table.get(id(value)) if table else None
        return entry[1:] if entry is not None and entry[0] is value else None


ACTIVATIONS = {
    "identity": lambda h: h,
    "relu": F.relu,
    "tanh": torch.tanh,
    "leaky_relu": lambda h: F.leaky_relu(h, 0.1),
    "elu": F.elu,
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "sin": torch.sin,
}


@dataclass(frozen=True)
class ParamSpec:
    """What a net says about one of its parameters.

    Attributes:
        name: dotted name, e.g. ``"fc0.weight"``; priors select parameters by patterns on it.
        shape: the shape of one sample of the parameter.
        role: ``"weight"``, ``"bias"``, ``"direction"`` (weight-norm v) or ``"scale"``
            (weight-norm g).
        layer: index of the layer the parameter belongs to.
        fan_in: number of inputs of each unit of that layer.
        fan_out: number of units (output channels) of that layer.
    """

    name: str
    shape: tuple[int, ...]
    role: str
    layer: int
    fan_in: int
    fan_out: int

    @property
    def numel(self) -> int:
        """Number of scalars in one sample of the parameter."""
        return math.prod(self.shape)


def _sample_shape(params: Mapping[str, torch.Tensor], specs: Mapping[str, ParamSpec]):
    """The common leading sample shape of ``params`` (``()`` when no tensor has one)."""
    lead: tuple[int, ...] = ()
    for name, spec in specs.items():
        if name not in params:
            raise KeyError(f"missing parameter {name!r}; the net needs {sorted(specs)}")
        value = params[name]
        extra = value.dim() - len(spec.shape)
        if extra < 0 or tuple(value.shape[extra:]) != spec.shape:
            raise ValueError(
                f"parameter {name!r} has shape {tuple(value.shape)}; expected (..., "
                f"{', '.join(map(str, spec.shape))}) with an optional leading sample shape"
            )
        this = tuple(value.shape[:extra])
        if this and lead and this != lead:
            raise ValueError(f"parameter {name!r} has sample shape {this}, others have {lead}")
        lead = this or lead
    return lead


def _flatten_sample(value: torch.Tensor, ndim: int) -> torch.Tensor:
    """Flatten the leading sample shape to one dim; drop it when the tensor is only expanded."""
    extra = value.dim() - ndim
    if extra == 0:
        return value
    # size-1 dims count as broadcast whatever their stride (pyro's Delta.expand under a
    # (S, 1) particle plate gives the singleton a nonzero stride)
    if all(value.stride(i) == 0 or value.shape[i] == 1 for i in range(extra)):
        return value[(0,) * extra]
    return value.reshape(-1, *value.shape[extra:])


class Net:
    """Base class of functional nets: subclasses define ``param_specs`` and ``_forward``."""

    param_specs: dict[str, ParamSpec]
    dropout: float = 0.0

    def __call__(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, *,
                 grouped: bool = False) -> torch.Tensor:
        """Evaluate the net on inputs ``x`` (N, ...) for every sample of ``params``.

        Returns a tensor of shape ``L + (N, num_outputs)`` where ``L`` is the sample shape.
        With ``grouped=True``, ``x`` is (G, M, ...) and sample g of ``params`` (sample shape
        (G,)) is evaluated on group g only, giving (G, M, num_outputs) at the cost of one pass.
        """
        lead = _sample_shape(params, self.param_specs)
        if grouped and (len(lead) > 1 or (lead and lead[0] != x.shape[0])):
            raise ValueError(f"grouped evaluation needs one parameter sample per input group: "
                             f"sample shape {tuple(lead)}, {x.shape[0]} groups")
        flat = {}
        for name, spec in self.param_specs.items():
            value = params[name]
            flat[name] = _flatten_sample(value, len(spec.shape))
            if flat[name] is not value and gaussian_weights.active():
                gaussian = gaussian_weights.lookup(value)  # keep LRT through the reshape
                if gaussian is not None:
                    gaussian_weights.register(flat[name], *gaussian)
        num_samples = math.prod(lead) if lead else 0
        out = self._forward(flat, x, num_samples, grouped)
        if lead:
            if out.dim() == 2:  # every parameter was shared across samples and nothing random ran
                out = out.expand(num_samples, *out.shape)
            out = out.reshape(*lead, *out.shape[1:])
        return out

    def _forward(self, params, x, num_samples, grouped=False):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def num_params(self) -> int:
        """Total number of scalars in one sample of all parameters."""
        return sum(s.numel for s in self.param_specs.values())

    def init_params(self, generator: torch.Generator | None = None, *,
                    fresh: bool = False) -> dict[str, torch.Tensor]:
        """A standard deterministic-net initialisation (PyTorch's default for linear layers).

        Weights and directions ~ U(−1/√fan_in, 1/√fan_in); biases 0; weight-norm scales 1.
        Guides use it to initialise their locations. Always drawn from ``generator`` here
        (``fresh`` matters to nets that can also start at given values, e.g. a TorchNet).
        """
        params = {}
        for name, spec in self.param_specs.items():
            if spec.role in ("weight", "direction"):
                bound = 1.0 / math.sqrt(spec.fan_in)
                params[name] = (torch.rand(spec.shape, generator=generator) * 2 - 1) * bound
            elif spec.role == "scale":
                params[name] = torch.ones(spec.shape)
            else:
                params[name] = torch.zeros(spec.shape)
        return params

    def _dense_stack(self, h, params, num_layers: int, act, num_samples: int) -> torch.Tensor:
        """Dense layers ``fc0 … fc{num_layers-1}``: dropout before each but the first, the
        activation after each but the last."""
        for i in range(num_layers):
            if i > 0:
                h = self._dropout(h, num_samples)
            h = _linear(h, params, f"fc{i}", num_samples)
            if i < num_layers - 1:
                h = act(h)
        return h

    def with_dropout(self, p: float) -> Net:
        """A copy of this net with MC dropout probability ``p`` (same parameters)."""
        import copy

        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        clone = copy.copy(self)
        clone.dropout = float(p)
        return clone

    def _dropout(self, h: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Dropout that is always on (MC dropout); independent masks for every sample.

        ``h`` is a dense activation, (N, d) when shared by all samples or (S, N, d).
        """
        if self.dropout <= 0:
            return h
        if num_samples and h.dim() == 2:
            h = h.expand(num_samples, *h.shape)
        return h * dropout_mask(h, self.dropout)


def _layer_specs(prefix, layer, out_shape, fan_in, weight_norm, bias=True):
    """The ParamSpecs of one dense or conv layer."""
    fan_out = out_shape[0]
    if weight_norm:
        specs = [
            ParamSpec(f"{prefix}.direction", out_shape, "direction", layer, fan_in, fan_out),
            ParamSpec(f"{prefix}.scale", (fan_out,), "scale", layer, fan_in, fan_out),
        ]
    else:
        specs = [ParamSpec(f"{prefix}.weight", out_shape, "weight", layer, fan_in, fan_out)]
    if bias:
        specs.append(ParamSpec(f"{prefix}.bias", (fan_out,), "bias", layer, fan_in, fan_out))
    return specs


def _unit_multiplier(params, prefix):
    """For weight norm, g/‖v‖ per output unit (shape (S, out) or (out,)); None otherwise."""
    if f"{prefix}.scale" not in params:
        return None
    v = params[f"{prefix}.direction"]
    unit_dims = 1 if v.dim() in (2, 4) else 2  # (out, ...) or (S, out, ...)
    norm = v.reshape(*v.shape[:unit_dims], -1).norm(dim=-1)
    return params[f"{prefix}.scale"] / norm


def _sum_to(t: torch.Tensor, shape) -> torch.Tensor:
    """Sum the leading dims of a broadcast gradient ``t`` down to ``shape``."""
    while t.dim() > len(shape):
        t = t.sum(0)
    return t


class _WeightNormLinear(torch.autograd.Function):
    """y = (h·vᵀ)·(g/‖v‖) + b with one shared direction matrix v (out, in).

    h is (N, in) or (S, N, in); g and b are (out,) or (S, out). Autograd through ``norm`` and the
    product would make five passes over v in the backward (norm gradient, its masked fill,
    division, product, and accumulating the two gradient paths); here the gradient of v is
    one matmul plus one fused in-place multiply-add.
    """

    @staticmethod
    def forward(ctx, h, v, g, b):
        norm = torch.linalg.vector_norm(v, dim=1)
        mult = g / norm
        pre = torch.matmul(h, v.t())  # (…, N, out)
        out = pre * mult.unsqueeze(-2)
        if b is not None:
            out = out + (b.unsqueeze(-2) if b.dim() == 2 else b)
        ctx.save_for_backward(h, v, g, norm, mult, pre)
        ctx.has_bias = b is not None
        ctx.bias_shape = b.shape if b is not None else None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        h, v, g, norm, mult, pre = ctx.saved_tensors
        grad_pre = grad * mult.unsqueeze(-2)
        grad_h = grad_v = grad_g = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_h = torch.matmul(grad_pre, v)
        # d/d(g/‖v‖), per sample and unit
        grad_mult = (grad * pre).sum(-2)
        if ctx.needs_input_grad[1]:
            if h.dim() == grad_pre.dim():
                gp, hh = grad_pre.reshape(-1, v.shape[0]), h.reshape(-1, v.shape[1])
            else:  # h shared by all samples: sum the gradients over samples first
                gp, hh = _sum_to(grad_pre, grad_pre.shape[-2:]), h
            grad_v = torch.mm(gp.t(), hh)
            # the norm's share: ∂/∂v of g/‖v‖ is −g·v/‖v‖³ per row
            coeff = _sum_to(-(grad_mult * g), norm.shape) / (norm * norm * norm)
            grad_v.addcmul_(v, coeff.unsqueeze(-1))
        if ctx.needs_input_grad[2]:
            grad_g = _sum_to(grad_mult / norm, g.shape)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_b = grad.sum(-2)
            grad_b = _sum_to(grad_b, ctx.bias_shape)
        return grad_h, grad_v, grad_g, grad_b


def _linear(h: torch.Tensor, params, prefix: str, num_samples: int) -> torch.Tensor:
    """Batched dense layer. h: (N, in) or (S, N, in); weights (out, in) or (S, out, in)."""
    w = params.get(f"{prefix}.weight", params.get(f"{prefix}.direction"))
    b = params.get(f"{prefix}.bias")
    gaussian = gaussian_weights.lookup(w) if gaussian_weights.active() else None
    g = params.get(f"{prefix}.scale")
    if gaussian is None and g is not None and w.dim() == 2 and g.dim() <= 2 and (
            b is None or b.dim() <= 2):
        return _WeightNormLinear.apply(h, w, g, b)  # shared directions (BHN over scales)
    mult = _unit_multiplier(params, prefix)
    if gaussian is not None:  # local reparameterization: sample pre-activations
        loc, scale = gaussian
        mean = torch.matmul(h, loc.transpose(-1, -2))
        var = torch.matmul(h * h, (scale * scale).transpose(-1, -2))
        if num_samples > 1 and mean.dim() == 2:  # shared inputs (the first layer): S draws
            mean = mean.expand(num_samples, *mean.shape)
            var = var.expand(num_samples, *var.shape)
        out = mean + var.clamp_min(1e-16).sqrt() * normal_noise(mean)
    elif w.dim() == 2 and mult is None and (b is None or b.dim() == 1):
        return F.linear(h, w, b)  # shared weights and bias: one fused addmm
    else:
        out = torch.matmul(h, w.transpose(-1, -2))
    if mult is not None:
        out = out * mult.unsqueeze(-2)
    if b is not None:
        out = out + (b.unsqueeze(-2) if b.dim() == 2 else b)
    return out


class MLP(Net):
    """A fully connected net ``sizes[0] → … → sizes[-1]`` with a linear output layer.

    Args:
        sizes: layer widths, input first; inputs (N, ...) are flattened to (N, sizes[0]).
        activation: name in :data:`ACTIVATIONS`.
        weight_norm: parametrize each layer by directions and per-unit scales.
        dropout: probability of dropping each hidden activation, applied at training *and*
            prediction time (MC dropout, Gal & Ghahramani 2016); 0 disables it.
        bias: whether layers have biases.

    Example::

        net = MLP([1, 50, 1])
        params = {k: torch.randn(10, *s.shape) for k, s in net.param_specs.items()}
        net(params, torch.randn(20, 1)).shape   # torch.Size([10, 20, 1])
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu", *, weight_norm: bool = False,
                 dropout: float = 0.0, bias: bool = True):
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"MLP sizes must be ≥ 2 positive widths, got {list(sizes)}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.sizes = [int(s) for s in sizes]
        self.activation = activation
        self.weight_norm = weight_norm
        self.dropout = float(dropout)
        self.param_specs = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            for spec in _layer_specs(f"fc{i}", i, (fan_out, fan_in), fan_in, weight_norm, bias):
                self.param_specs[spec.name] = spec

    def __repr__(self):
        extras = (", weight_norm=True" if self.weight_norm else "") + (
            f", dropout={self.dropout}" if self.dropout else "")
        return f"MLP({self.sizes}, {self.activation!r}{extras})"

    def _forward(self, params, x, num_samples, grouped=False):
        h = x.reshape(*x.shape[:2], -1) if grouped else x.reshape(x.shape[0], -1)
        if h.shape[-1] != self.sizes[0]:
            raise ValueError(f"MLP expects {self.sizes[0]} input features, got {h.shape[-1]}")
        act = ACTIVATIONS[self.activation]
        return self._dense_stack(h, params, len(self.sizes) - 1, act, num_samples)


class CNN(Net):
    """A small conv net: [conv k×k 'same' → activation → max-pool] × len(channels) → MLP head.

    The default is the 4-layer target of *Generating Neural Networks with Neural Networks*
    (conv 5×5×32, pool, conv 5×5×16, pool, fc 784→8, fc 8→10: 20,018 parameters).
    S weight samples are evaluated in one grouped convolution.

    Args:
        in_channels, image_size: input images are (N, in_channels, image_size, image_size).
        channels: output channels of each conv layer.
        kernel_size, pool: conv kernel size ('same' padding) and max-pool size.
        hidden: widths of the dense hidden layers after flattening.
        num_outputs: width of the output layer.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels=(32, 16),
                 kernel_size: int = 5, pool: int = 2, hidden=(8,), num_outputs: int = 10,
                 activation: str = "relu", *, weight_norm: bool = False, dropout: float = 0.0):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        self.in_channels, self.image_size = in_channels, image_size
        self.channels, self.kernel_size, self.pool = tuple(channels), kernel_size, pool
        self.activation, self.weight_norm, self.dropout = activation, weight_norm, float(dropout)
        self.param_specs = {}
        c_in, size = in_channels, image_size
        for i, c_out in enumerate(self.channels):
            fan_in = c_in * kernel_size * kernel_size
            for spec in _layer_specs(f"conv{i}", i, (c_out, c_in, kernel_size, kernel_size), fan_in,
                                     weight_norm):
                self.param_specs[spec.name] = spec
            c_in, size = c_out, size // pool
        widths = [c_in * size * size, *hidden, num_outputs]
        offset = len(self.channels)
        for j, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            for spec in _layer_specs(f"fc{j}", offset + j, (fan_out, fan_in), fan_in, weight_norm):
                self.param_specs[spec.name] = spec
        self.dense_sizes = widths

    def __repr__(self):
        return (f"CNN(channels={self.channels}, hidden={tuple(self.dense_sizes[1:-1])}, "
                f"num_outputs={self.dense_sizes[-1]})")

    def _conv(self, h, params, prefix, num_samples):
        """Conv layer; h is (N, C, H, W) or (S, N, C, H, W)."""
        w = params.get(f"{prefix}.weight", params.get(f"{prefix}.direction"))
        pad = self.kernel_size // 2
        if w.dim() == 4:  # shared weights: fold samples into the batch
            lead = h.shape[:-3]
            out = F.conv2d(h.reshape(-1, *h.shape[-3:]), w, padding=pad)
            out = out.reshape(*lead, *out.shape[1:])
        else:  # S weight sets: one grouped convolution
            s = w.shape[0]
            if h.dim() == 4:
                h = h.expand(s, *h.shape)
            n = h.shape[1]
            grouped = h.permute(1, 0, 2, 3, 4).reshape(n, -1, *h.shape[-2:])
            out = F.conv2d(grouped, w.reshape(-1, *w.shape[2:]), padding=pad, groups=s)
            out = out.reshape(n, s, -1, *out.shape[-2:]).permute(1, 0, 2, 3, 4)
        mult = _unit_multiplier(params, prefix)
        if mult is not None:
            out = out * (mult[:, None, :, None, None] if mult.dim() == 2 else mult[:, None, None])
        b = params.get(f"{prefix}.bias")
        if b is not None:
            out = out + (b[:, None, :, None, None] if b.dim() == 2 else b[:, None, None])
        return out

    def _forward(self, params, x, num_samples, grouped=False):
        if grouped:
            raise NotImplementedError("grouped evaluation (noise_groups) supports MLP nets")
        if tuple(x.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(
                f"CNN expects images (N, {self.in_channels}, {self.image_size}, "
                f"{self.image_size}), got {tuple(x.shape)}")
        act = ACTIVATIONS[self.activation]
        h = x
        for i in range(len(self.channels)):
            h = act(self._conv(h, params, f"conv{i}", num_samples))
            lead = h.shape[:-3]
            h = F.max_pool2d(h.reshape(-1, *h.shape[-3:]), self.pool)
            h = h.reshape(*lead, *h.shape[1:])
        h = h.flatten(start_dim=h.dim() - 3)
        return self._dense_stack(h, params, len(self.dense_sizes) - 1, act, num_samples)
