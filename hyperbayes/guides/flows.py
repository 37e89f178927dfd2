"""Normalizing-flow guides: Bayesian hypernetworks (Krueger et al., 2017).

A Bayesian hypernetwork draws ε ~ N(0, I) and pushes it through an invertible, differentiable
map h (the hypernetwork) to the primary net's parameters; the change of variables gives the
exact log q (the paper's Eq. 3), so the ordinary ELBO (Eq. 2) applies. As in the authors' code,
h is an elementwise affine layer whose log-scale starts very small (so training starts near a
point estimate) followed by normalizing-flow layers: IAF (affine autoregressive, MADE) or
RealNVP (affine coupling, with random permutations between layers), from
``pyro.distributions.transforms``. Each flow layer's output layer starts at zero, so every
layer starts as the identity.

``over="scales"`` (the paper's choice for large nets) puts the flow on the weight-norm scales g,
one per unit, so the flow's size grows linearly with the number of units; directions v and
biases are point estimates in the same guide. ``over="weights"`` puts it on every parameter.

As in the paper, one noise sample serves a whole minibatch by default; a model built with
``BNN(..., noise_groups=G)`` gets one sample per group of examples instead (the guide draws G
in the model's ``noise_groups`` plate). Softmax clipping is ``Categorical(clip=True)`` and
gradient clipping ``fit(clip_norm=...)``.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro import poutine

from .base import SiteGuide, concat_init, param_key, split_sites

__all__ = ["FlowGuide", "FLOWS", "SoftClampedConditioner"]

FLOWS = ("iaf", "realnvp")
LOG_SCALE_CLAMPS = ("soft", "hard")


class SoftClampedConditioner(torch.nn.Module):
    """Wrap a flow layer's conditioner so its log-scale output is bounded smoothly.

    Pyro's affine flow layers clamp the log-scale to [-5, 3] with straight-through gradients
    (``clamp_preserve_gradients``): once a log-scale is clamped, the ELBO's entropy term keeps
    pushing its pre-activation upward although the value no longer moves, the conditioner's
    shared hidden layer grows, and its shift output eventually explodes. On bhn-mnist this
    made every coupling flow diverge (flow-8 at step 3,610 of 7,820). Here the log-scale is
    ``b·tanh(raw/b)`` with ``b`` the upper bound for raw > 0 and the lower one for raw < 0: the
    identity near 0 (slope 1), bounded, and with a vanishing gradient at the bounds.

    Args:
        net: the conditioner (a Pyro ``DenseNN`` or ``AutoRegressiveNN``) returning
            ``(shift, log_scale)``.
        low, high: the bounds of the log-scale (low < 0 < high).
    """

    def __init__(self, net: torch.nn.Module, low: float = -5.0, high: float = 3.0):
        super().__init__()
        if not low < 0 < high:
            raise ValueError(f"need low < 0 < high for the log-scale bounds, got {low}, {high}")
        self.net, self.low, self.high = net, float(low), float(high)

    @property
    def permutation(self):
        """The wrapped autoregressive network's variable order (IAF inverts through it)."""
        return self.net.permutation

    def forward(self, x):
        """``(shift, bounded log-scale)`` of the wrapped conditioner."""
        shift, raw = self.net(x)
        return shift, torch.where(raw > 0, self.high * torch.tanh(raw / self.high),
                                  -self.low * torch.tanh(raw / -self.low))


def _zero_last_layer(transform) -> None:
    """Make an affine flow layer the identity at initialisation (zero shift and log-scale)."""
    net = getattr(transform, "arn", None) or getattr(transform, "nn", None)
    last = net.layers[-1] if net is not None and hasattr(net, "layers") else None
    if isinstance(last, torch.nn.Linear):
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)


def _flow_layer(flow: str, dim: int, hidden: int, log_scale_clamp: str):
    """One IAF or affine-coupling layer over ``dim`` scalars that starts as the identity."""
    if flow == "iaf":  # MADE needs at least as many hidden units as inputs
        layer = T.affine_autoregressive(dim, hidden_dims=[max(hidden, dim)])
    else:
        layer = T.affine_coupling(dim, hidden_dims=[hidden])
    _zero_last_layer(layer)
    if log_scale_clamp == "soft":
        name = "arn" if flow == "iaf" else "nn"
        setattr(layer, name, SoftClampedConditioner(
            getattr(layer, name), layer.log_scale_min_clip, layer.log_scale_max_clip))
        # the tanh bounds the values; Pyro's clamp then never acts
        layer.log_scale_min_clip, layer.log_scale_max_clip = -math.inf, math.inf
    return layer


class FlowGuide(SiteGuide):
    """A normalizing-flow guide over all parameters or over the weight-norm scales.

    Args:
        model: a :class:`~hyperbayes.models.BNN`; ``over="scales"`` needs a weight-norm net
            (``MLP(..., weight_norm=True)``).
        flow: ``"iaf"`` or ``"realnvp"``.
        num_flows: number of flow layers after the elementwise affine layer (0 gives a
            diagonal Gaussian, i.e. mean field over the chosen sites).
        hidden: width of the hidden layer of each flow layer's conditioner network (for IAF at
            least the flow's dimension, which MADE requires).
        over: ``"scales"``, ``"weights"``, or ``"auto"`` (scales when the net has them).
        init_scale: initial σ of the elementwise affine layer (the BHN code uses e^-7).
        init_loc: initial location of the elementwise affine layer: None (the net's
            initialisation) or a number for every flowed scalar (0 starts a flow over a
            sign-symmetric posterior halfway between its modes).
        log_scale_clamp: how each flow layer bounds its log-scale to [-5, 3]: ``"soft"``
            (default, a tanh: see :class:`SoftClampedConditioner`) or ``"hard"`` (Pyro's clamp
            with straight-through gradients, which diverged on bhn-mnist).
        seed: seeds the point-estimate initialisation and the RealNVP permutations.

    Example::

        net = MLP([784, 800, 800, 10], weight_norm=True)
        prior = priors.by_name({"*.scale": priors.Normal(1.0), "*": priors.Flat()})
        model = BNN(net, prior, Categorical())
        guide = FlowGuide(model, flow="realnvp", num_flows=8, over="scales")
    """

    def __init__(self, model, *, flow: str = "realnvp", num_flows: int = 4, hidden: int = 200,
                 over: str = "auto", init_scale: float = math.exp(-7),
                 init_loc: float | None = None, log_scale_clamp: str = "soft",
                 seed: int | None = 0):
        super().__init__(model, seed=seed)
        if flow not in FLOWS:
            raise ValueError(f"unknown flow {flow!r}; choose from {FLOWS}")
        if log_scale_clamp not in LOG_SCALE_CLAMPS:
            raise ValueError(f"unknown log_scale_clamp {log_scale_clamp!r}; choose from "
                             f"{LOG_SCALE_CLAMPS}")
        if num_flows < 0 or hidden < 1 or not init_scale > 0:
            raise ValueError("need num_flows ≥ 0, hidden ≥ 1 and init_scale > 0")
        has_scales = any(s.role == "scale" for s in self.sites)
        if over == "auto":
            over = "scales" if has_scales else "weights"
        if over == "scales" and not has_scales:
            raise ValueError("over='scales' needs a weight-norm net (MLP(..., weight_norm=True))")
        if over not in ("scales", "weights"):
            raise ValueError(f"over must be 'scales', 'weights' or 'auto', got {over!r}")
        self.over, self.flow, self.num_flows, self.hidden = over, flow, num_flows, hidden
        self.noise_groups = getattr(model, "noise_groups", 1)
        self.flow_sites = [s for s in self.sites if over == "weights" or s.role == "scale"]
        self.point_sites = [s for s in self.sites if s not in self.flow_sites]
        dim = sum(s.numel for s in self.flow_sites)
        if num_flows and dim < 2:
            raise ValueError("a flow needs at least two flowed scalars")
        self.flow_dim = dim
        init = concat_init(self.flow_sites)
        if init_loc is not None:
            init = torch.full_like(init, float(init_loc))
        self.affine_loc = torch.nn.Parameter(init)
        self.affine_log_scale = torch.nn.Parameter(torch.full((dim,), math.log(init_scale)))
        self.point_values = torch.nn.ParameterDict(
            {param_key(s.name): torch.nn.Parameter(s.init.clone()) for s in self.point_sites})
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        layers, modules = [], []
        order = torch.arange(dim)  # where each output coordinate comes from, after permutations
        for i in range(num_flows):
            # the conditioners' initial weights (and MADE's orders) come from ``seed`` too, not
            # from whatever state the global generator is in
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(generator.initial_seed() + 1 + i)
                layer = _flow_layer(flow, dim, hidden, log_scale_clamp)
            layers.append(layer)
            modules.append(layer)
            if flow == "realnvp":
                if i < num_flows - 1:
                    perm = torch.randperm(dim, generator=generator)
                else:  # undo the permutations so the whole flow starts as the identity
                    perm = order.argsort()
                # a buffer, so the permutation is saved in state_dict and moves with .to()
                self.register_buffer(f"permutation{i}", perm)
                layers.append(T.Permute(perm))
                order = order[perm]
        self.flow_layers = torch.nn.ModuleList(modules)
        self._layers = layers
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def default_loss(self):
        """:class:`~hyperbayes.inference.ELBO` (log q from the flow's change of variables)."""
        from ..inference.elbo import ELBO  # inference builds on guides: import late

        return ELBO()

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._sync_permutations()
        return out

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._sync_permutations()

    def _sync_permutations(self):
        """Point each Permute layer at its buffer (after .to() or loading a state dict)."""
        buffers = iter(getattr(self, name) for name, _ in self.named_buffers()
                       if name.startswith("permutation"))
        for layer in self._layers:
            if isinstance(layer, T.Permute):
                layer.permutation = next(buffers)
                layer.__dict__.pop("inv_permutation", None)

    def distribution(self) -> dist.TransformedDistribution:
        """q over the flowed scalars (event shape (D,)): base N(0, I), affine layer, flows."""
        base = dist.Normal(self._zero.expand(self.flow_dim), 1.0).to_event(1)
        affine = T.AffineTransform(self.affine_loc, self.affine_log_scale.exp(), event_dim=1)
        return dist.TransformedDistribution(base, [affine, *self._layers])

    def forward(self, *args, **kwargs):
        """Sample the flow once and every site from it (or its point estimate).

        Called on a minibatch of a model with ``noise_groups`` G > 1, it draws G samples, one
        per example group, in the model's ``noise_groups`` plate (weighted 1/G); called without
        data (prediction) it draws one.
        """
        if self.noise_groups > 1 and args:
            with pyro.plate("noise_groups", self.noise_groups, dim=-1), \
                    poutine.scale(scale=1.0 / self.noise_groups):
                return self._sample_sites()
        return self._sample_sites()

    def _sample_sites(self):
        z = pyro.sample("_flow_latent", self.distribution(), infer={"is_auxiliary": True})
        unconstrained = split_sites(self.flow_sites, z)
        out = {}
        for site in self.flow_sites:
            u = unconstrained[site.name]
            if site.transform is None:
                value, log_density = u, 0.0
            else:
                value = site.transform(u)
                log_density = -site.transform.log_abs_det_jacobian(u, value).reshape(
                    *z.shape[:-1], -1).sum(-1)
            out[site.name] = pyro.sample(site.name, dist.Delta(
                value, log_density=log_density, event_dim=len(site.shape)))
        for site in self.point_sites:
            out[site.name] = self.sample_point(site, self.point_values[param_key(site.name)])
        return out
