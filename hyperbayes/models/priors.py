"""Declarative weight priors: which distribution each parameter of a net gets, chosen by name.

A :class:`Prior` runs inside a Pyro model and samples every parameter of a net as its own
``pyro.sample`` site, named as the net names the parameter (``"fc0.weight"``, ...), so guides,
NUTS and diagnostics all see the same sites. Most priors factorize over parameters
(:class:`ElementwisePrior`); hierarchical priors such as the MetaPrior subclass :class:`Prior`.

Example::

    import pyro.distributions as dist
    from hyperbayes.models import priors

    prior = priors.by_name({
        "*.bias": dist.Normal(0.0, 10.0),        # a Pyro distribution, broadcast to the shape
        "fc0.*": priors.FanInNormal(1.0),        # N(0, 1/fan_in): Neal's scaling
        "*": lambda spec: dist.StudentT(3.0, 0.0, 1.0),   # any callable spec -> distribution
    })
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable, Mapping

import pyro
import pyro.distributions as dist
import torch

from .nets import ParamSpec

__all__ = [
    "Prior",
    "ElementwisePrior",
    "Normal",
    "FanInNormal",
    "ScaleMixture",
    "Laplace",
    "Flat",
    "ByName",
    "by_name",
    "on_device",
]


class Prior:
    """Base class: samples every parameter of a net inside a Pyro model.

    Subclasses implement :meth:`sample`. ``guided_sites`` names the sites a guide approximates
    (all by default; a hierarchical prior may draw some sites from conditionals instead).
    """

    def sample(self, specs: Mapping[str, ParamSpec], device: torch.device) -> dict:
        """Sample each parameter as a ``pyro.sample`` site; return ``{name: value}``."""
        raise NotImplementedError

    def guided_sites(self, specs: Mapping[str, ParamSpec]) -> list[str] | None:
        """Names of the sites a guide should cover, or None for every latent site."""
        return None

    def bind(self, specs: Mapping[str, ParamSpec]) -> None:
        """Called once by the model with its net's parameters: a prior that depends on the net's
        structure checks and records it here (a ValueError names what does not fit)."""

    def init_values(self, specs: Mapping[str, ParamSpec],
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Starting values for guided sites that are not the net's parameters (e.g. codes)."""
        return {}


class ElementwisePrior(Prior):
    """A prior that factorizes over parameters: subclasses give :meth:`distribution` per spec.

    A user-defined prior is a few lines::

        class Horseshoe(ElementwisePrior):
            def distribution(self, spec):
                return dist.Normal(0.0, 1.0 / spec.fan_in ** 0.5)
    """

    def distribution(self, spec: ParamSpec) -> dist.Distribution:
        """The distribution of one scalar (or of the whole parameter) of ``spec``."""
        raise NotImplementedError

    def site_distribution(self, spec: ParamSpec, device) -> dist.Distribution:
        """The distribution of the whole parameter: event shape == ``spec.shape``."""
        return _as_site(on_device(self.distribution(spec), device), spec)

    def sample(self, specs, device):
        """Sample each parameter as a site with event shape equal to the parameter's shape."""
        return {
            name: pyro.sample(name, self.site_distribution(spec, device))
            for name, spec in specs.items()
        }

    def __call__(self, spec: ParamSpec) -> dist.Distribution:
        return self.distribution(spec)


def _as_site(d: dist.Distribution, spec: ParamSpec) -> dist.Distribution:
    """Broadcast ``d`` to the parameter's shape and declare that shape the event shape."""
    shape = torch.Size(spec.shape)
    event = d.event_shape
    if event == shape:
        return d
    if event:
        raise ValueError(
            f"prior for {spec.name!r} has event shape {tuple(event)}; expected () or {spec.shape}")
    try:
        return d.expand(shape).to_event(len(shape))
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"prior for parameter {spec.name!r} has batch shape "
                         f"{tuple(d.batch_shape)}, which does not broadcast to the parameter's "
                         f"shape {spec.shape}") from err


def on_device(d: dist.Distribution, device) -> dist.Distribution:
    """Return ``d`` with its tensor parameters on ``device`` (rebuilt only when needed)."""
    if device is None:
        return d
    device = torch.device(device)
    if isinstance(d, dist.MixtureSameFamily):  # its tensors live in its two components
        return type(d)(on_device(d.mixture_distribution, device),
                       on_device(d.component_distribution, device))
    if isinstance(d, dist.Independent):
        return dist.Independent(on_device(d.base_dist, device), d.reinterpreted_batch_ndims)
    tensors = {k: d.__dict__[k] for k in d.arg_constraints
               if torch.is_tensor(d.__dict__.get(k))}
    if not tensors:  # parameters exposed as properties (e.g. LogNormal's loc and scale)
        tensors = {k: getattr(d, k) for k in d.arg_constraints
                   if torch.is_tensor(getattr(d, k, None))}
    if "probs" in tensors and "logits" in tensors:  # both cached; the constructor takes one
        tensors.pop("probs")
    if all(v.device == device for v in tensors.values()):
        return d
    signature = inspect.signature(type(d).__init__).parameters
    kwargs = {k: v.to(device) for k, v in tensors.items() if k in signature}
    try:
        return type(d)(**kwargs)
    except Exception as err:  # a distribution whose constructor we cannot infer
        raise ValueError(
            f"cannot move prior {d} to {device}; give a callable spec -> distribution instead"
        ) from err


class Normal(ElementwisePrior):
    """Independent N(loc, scale²) on every scalar."""

    def __init__(self, scale: float = 1.0, loc: float = 0.0):
        if scale <= 0:
            raise ValueError(f"Normal prior scale must be positive, got {scale}")
        self.loc, self.scale = float(loc), float(scale)

    def distribution(self, spec):
        """N(loc, scale²)."""
        return dist.Normal(torch.tensor(self.loc), torch.tensor(self.scale))

    def __repr__(self):
        return f"Normal(scale={self.scale}, loc={self.loc})"


class FanInNormal(ElementwisePrior):
    """N(0, scale² / fan_in): Neal's (1996) width scaling, keeping pre-activations O(1)."""

    def __init__(self, scale: float = 1.0):
        if scale <= 0:
            raise ValueError(f"FanInNormal scale must be positive, got {scale}")
        self.scale = float(scale)

    def distribution(self, spec):
        """N(0, scale²/fan_in) with the fan-in of the parameter's layer."""
        return dist.Normal(torch.tensor(0.0), torch.tensor(self.scale / math.sqrt(spec.fan_in)))

    def __repr__(self):
        return f"FanInNormal(scale={self.scale})"


class ScaleMixture(ElementwisePrior):
    """π·N(0, σ₁²) + (1 − π)·N(0, σ₂²) (Blundell et al., 2015, Eq. 7); σ are standard deviations."""

    def __init__(self, pi: float = 0.5, scale1: float = 1.0, scale2: float = math.exp(-6)):
        if not 0 < pi < 1 or scale1 <= 0 or scale2 <= 0:
            raise ValueError(f"ScaleMixture needs 0 < pi < 1 and positive scales, got "
                             f"pi={pi}, scale1={scale1}, scale2={scale2}")
        self.pi, self.scale1, self.scale2 = float(pi), float(scale1), float(scale2)

    def distribution(self, spec):
        """A two-component zero-mean Gaussian mixture."""
        mix = dist.Categorical(probs=torch.tensor([self.pi, 1 - self.pi]))
        return dist.MixtureSameFamily(mix, dist.Normal(torch.zeros(2),
                                                       torch.tensor([self.scale1, self.scale2])))

    def __repr__(self):
        return f"ScaleMixture(pi={self.pi}, scale1={self.scale1}, scale2={self.scale2})"


class Laplace(ElementwisePrior):
    """Independent Laplace(0, scale) on every scalar (an L1 / sparsity prior)."""

    def __init__(self, scale: float = 1.0):
        if scale <= 0:
            raise ValueError(f"Laplace scale must be positive, got {scale}")
        self.scale = float(scale)

    def distribution(self, spec):
        """Laplace(0, scale)."""
        return dist.Laplace(torch.tensor(0.0), torch.tensor(self.scale))

    def __repr__(self):
        return f"Laplace(scale={self.scale})"


class Flat(ElementwisePrior):
    """An improper flat prior (log density 0): the parameter is a point estimate's free variable.

    Bayesian hypernetworks put no prior on weight-norm directions and biases (they are
    maximum-likelihood point estimates); NUTS needs a proper prior instead.
    """

    def distribution(self, spec):
        """ImproperUniform over the reals."""
        return dist.ImproperUniform(dist.constraints.real, (), ())

    def __repr__(self):
        return "Flat()"


class _FromCallable(ElementwisePrior):
    """Wraps a Pyro distribution or a callable ``spec -> distribution`` as a prior."""

    def __init__(self, source):
        self.source = source

    def distribution(self, spec):
        """The wrapped distribution, or the callable's answer for ``spec``."""
        d = self.source(spec) if callable(self.source) and not isinstance(
            self.source, dist.Distribution) else self.source
        if not isinstance(d, torch.distributions.Distribution):
            raise TypeError(f"prior for {spec.name!r} returned {type(d).__name__}, "
                            "expected a pyro.distributions.Distribution")
        return d

    def __repr__(self):
        return repr(self.source)


PriorLike = ElementwisePrior | dist.Distribution | Callable[[ParamSpec], dist.Distribution]


class ByName(ElementwisePrior):
    """Choose a prior per parameter by glob pattern on its name; the first match wins.

    Every parameter must match some pattern, and every pattern must match some parameter
    (a typo would otherwise silently leave a default in place).
    """

    def __init__(self, rules: Mapping[str, PriorLike]):
        if not rules:
            raise ValueError("by_name needs at least one pattern, e.g. {'*': Normal(1.0)}")
        self.rules = [(pattern, r if isinstance(r, ElementwisePrior) else _FromCallable(r))
                      for pattern, r in rules.items()]

    def rule_for(self, spec: ParamSpec) -> ElementwisePrior:
        """The prior of the first pattern matching ``spec.name``."""
        for pattern, rule in self.rules:
            if fnmatch.fnmatchcase(spec.name, pattern):
                return rule
        raise ValueError(f"no prior pattern matches parameter {spec.name!r}; patterns: "
                         f"{[p for p, _ in self.rules]} (add a catch-all '*')")

    def distribution(self, spec):
        """The distribution given by the first matching pattern."""
        return self.rule_for(spec).distribution(spec)

    def site_distribution(self, spec, device):
        """The matched prior's distribution of the whole parameter."""
        return self.rule_for(spec).site_distribution(spec, device)

    def sample(self, specs, device):
        """Sample each parameter from its matched prior; unmatched patterns are an error."""
        for pattern, _ in self.rules:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in specs):
                raise ValueError(f"prior pattern {pattern!r} matches no parameter; the net has "
                                 f"{list(specs)}")
        return super().sample(specs, device)

    def __repr__(self):
        return "by_name({" + ", ".join(f"{p!r}: {r!r}" for p, r in self.rules) + "})"


def by_name(rules: Mapping[str, PriorLike]) -> ByName:
    """Build a :class:`ByName` prior from ``{glob pattern: prior}``; see the module example."""
    return ByName(rules)
