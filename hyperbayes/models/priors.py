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
    "HierarchicalPrior",
    "Horseshoe",
    "ARD",
    "ByName",
    "by_name",
    "on_device",
    "per_unit",
    "per_input",
    "scalar",
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

        class FanInStudentT(ElementwisePrior):
            def distribution(self, spec):
                return dist.StudentT(3.0, 0.0, 1.0 / spec.fan_in ** 0.5)

    Priors with hyper-latents (a scale shared by a layer, a global shrinkage) subclass
    :class:`HierarchicalPrior`.
    """

    def distribution(self, spec: ParamSpec) -> dist.Distribution:
        """The distribution of one scalar (or of the whole parameter) of ``spec``."""
        raise NotImplementedError

    def hyper_latents(self, specs: Mapping[str, ParamSpec]) -> dict[str, dist.Distribution]:
        """The hyper-latent sites this prior draws before the parameters (none here)."""
        return {}

    def bind(self, specs: Mapping[str, ParamSpec]) -> None:
        """Check the hyper-latents' names once, when the model is built (not on every draw)."""
        _check_hyper_names(self.hyper_latents(specs), specs)

    def site_distribution(self, spec: ParamSpec, device, hyper: Mapping | None = None
                          ) -> dist.Distribution:
        """The distribution of the whole parameter: event shape == ``spec.shape``."""
        return _as_site(on_device(self.distribution(spec), device), spec)

    def sample(self, specs, device):
        """Sample the hyper-latents, then each parameter as a site with event shape equal to the
        parameter's shape; returns every sampled value (hyper-latents included)."""
        out = {name: pyro.sample(name, _whole_value(on_device(d, device)))
               for name, d in self.hyper_latents(specs).items()}
        hyper = dict(out)
        for name, spec in specs.items():
            out[name] = pyro.sample(name, self.site_distribution(spec, device, hyper))
        return out

    def __call__(self, spec: ParamSpec) -> dist.Distribution:
        return self.distribution(spec)


def _as_site(d: dist.Distribution, spec: ParamSpec, *, lead: bool = False
             ) -> dist.Distribution:
    """Broadcast ``d`` to the parameter's shape and declare that shape the event shape.

    With ``lead=True`` (a distribution built from drawn hyper-latents) batch dims left of the
    parameter's are kept as leading sample dims: batch ``lead + spec.shape``.
    """
    shape = torch.Size(spec.shape)
    event = d.event_shape
    if event == shape:
        return d
    if event:
        raise ValueError(
            f"prior for {spec.name!r} has event shape {tuple(event)}; expected () or {spec.shape}")
    batch = d.batch_shape
    leading = batch[:len(batch) - len(shape)] if lead and len(batch) > len(shape) else ()
    try:
        return d.expand(torch.Size(leading) + shape).to_event(len(shape))
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"prior for parameter {spec.name!r} has batch shape "
                         f"{tuple(batch)}, which does not broadcast to the parameter's "
                         f"shape {spec.shape}" + (" (after any leading sample dims)" if lead
                                                  else "")) from err


def _whole_value(d: dist.Distribution) -> dist.Distribution:
    """``d`` with its whole value as the event (hyperbayes guides expect such sites)."""
    return d.to_event(len(d.batch_shape)) if d.batch_shape else d


def _check_hyper_names(declared: Mapping, specs: Mapping[str, ParamSpec]) -> None:
    """Hyper-latent names must not be parameters or dotted children of parameters."""
    for name in declared:
        if name in specs:
            raise ValueError(f"hyper-latent {name!r} has the name of a parameter of the net")
        parent = next((p for p in specs if name.startswith(p + ".")), None)
        if parent is not None:
            raise ValueError(
                f"hyper-latent {name!r} is named under parameter {parent!r}: Pyro's autoguides "
                f"nest dotted names, so name it e.g. {parent + '_' + name[len(parent) + 1:]!r}")


def per_unit(value: torch.Tensor, spec: ParamSpec) -> torch.Tensor:
    """A hyper-latent with one entry per output unit, (..., fan_out), reshaped to broadcast
    against the parameter ``(..., *spec.shape)``: (..., fan_out, 1, ...)."""
    return value.reshape(*value.shape, *([1] * (len(spec.shape) - 1)))


def per_input(value: torch.Tensor, spec: ParamSpec) -> torch.Tensor:
    """A hyper-latent with one entry per input unit or channel, (..., spec.shape[1]), reshaped
    to broadcast against the parameter: (..., 1, in, 1, ...)."""
    if len(spec.shape) < 2:
        raise ValueError(f"{spec.name!r} has shape {spec.shape}: no input dimension")
    lead = value.shape[:-1]
    return value.reshape(*lead, 1, value.shape[-1], *([1] * (len(spec.shape) - 2)))


def scalar(value: torch.Tensor, spec: ParamSpec) -> torch.Tensor:
    """A scalar hyper-latent (with any leading sample dims) reshaped to broadcast against the
    parameter: (..., 1, ..., 1)."""
    return value.reshape(*value.shape, *([1] * len(spec.shape)))


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


class HierarchicalPrior(ElementwisePrior):
    """A prior whose parameters are drawn given hyper-latent sites (shared scales, shrinkage).

    Declare the hyper-latents in :meth:`hyper_latents` as ``{site name: distribution}`` and give
    each parameter's distribution given their drawn values in :meth:`distribution`. The prior's
    ``sample`` draws the hyper-latents first, as sites of their own that every guide and NUTS
    infer and that :func:`~hyperbayes.inference.sample_posterior` returns. Name a per-parameter
    hyper-latent ``"<parameter>_<what>"`` (``"fc0.weight_lambda"``), never
    ``"<parameter>.<what>"``: Pyro's autoguides nest dotted names. Drawn values carry any
    leading sample dims (a plate of S draws, ELBO particles): :func:`per_unit`,
    :func:`per_input` and :func:`scalar` reshape them to broadcast against the parameter.

    Example: :class:`Horseshoe`, :class:`ARD`; combine with others by name::

        prior = priors.by_name({"*.bias": priors.Normal(1.0), "*": priors.Horseshoe()})
    """

    def hyper_latents(self, specs):
        """``{site name: distribution}`` of the hyper-latents the parameters ``specs`` need."""
        raise NotImplementedError

    def distribution(self, spec: ParamSpec, hyper: Mapping[str, torch.Tensor]
                     ) -> dist.Distribution:
        """The distribution of ``spec``'s values given the drawn hyper-latents ``hyper``; its
        batch shape broadcasts to ``(..., *spec.shape)``."""
        raise NotImplementedError

    def site_distribution(self, spec, device, hyper=None):
        """The parameter's distribution given ``hyper`` (event shape == ``spec.shape``)."""
        if hyper is None:
            raise ValueError(f"{type(self).__name__} draws {spec.name!r} given hyper-latents; "
                             "sample it through the prior's sample()")
        return _as_site(self.distribution(spec, hyper), spec, lead=True)

    def __call__(self, spec: ParamSpec) -> dist.Distribution:
        raise TypeError(f"{type(self).__name__} needs its hyper-latents: use it as a prior "
                        "(or a by_name rule), not as a per-parameter distribution")


def _half_cauchy(scale, shape=()) -> dist.Distribution:
    return dist.HalfCauchy(torch.full(shape, float(scale)) if shape else torch.tensor(
        float(scale)))


class Horseshoe(HierarchicalPrior):
    """The horseshoe (Carvalho et al. 2010), per unit as in Ghosh, Yao & Doshi-Velez (2019):
    τ ~ C⁺(0, global_scale) shared by every parameter it covers, λ ~ C⁺(0, 1) per output unit
    of each parameter, w ~ N(0, (τ λ_unit)² / fan_in).

    Hyper-latents: ``"<name>_tau"`` and ``"<parameter>_lambda"`` (shape (fan_out,)).

    Args:
        global_scale: scale of the half-Cauchy on τ.
        name: prefix of the global site (two horseshoes in one model need two names).
    """

    def __init__(self, global_scale: float = 1.0, name: str = "horseshoe"):
        if not global_scale > 0:
            raise ValueError(f"Horseshoe global_scale must be positive, got {global_scale}")
        self.global_scale, self.name = float(global_scale), str(name)

    def hyper_latents(self, specs):
        """τ, then one λ vector per parameter."""
        out = {f"{self.name}_tau": _half_cauchy(self.global_scale)}
        for name, spec in specs.items():
            out[f"{name}_lambda"] = _half_cauchy(1.0, (spec.shape[0] if spec.shape else 1,))
        return out

    def distribution(self, spec, hyper):
        """N(0, (τ λ)² / fan_in), λ per output unit."""
        tau = scalar(hyper[f"{self.name}_tau"], spec)
        lam = hyper[f"{spec.name}_lambda"]
        lam = per_unit(lam, spec) if spec.shape else lam.squeeze(-1)
        return dist.Normal(torch.zeros((), dtype=lam.dtype, device=lam.device),
                           tau * lam / math.sqrt(spec.fan_in))

    def __repr__(self):
        return f"Horseshoe(global_scale={self.global_scale}, name={self.name!r})"


class ARD(HierarchicalPrior):
    """Automatic relevance determination (MacKay 1994; Neal 1996): a learned scale per input
    unit (per input channel of a convolution) of each weight, s_j ~ ``scale_prior``,
    w_ij ~ N(0, s_j² / fan_in). An input whose scale shrinks is switched off.

    Hyper-latents: ``"<parameter>_ard_scale"`` (shape (inputs,)). Parameters need an input
    dimension (weights, not biases): give biases another prior with :func:`by_name`.

    Args:
        scale_prior: a positive scalar distribution (default LogNormal(0, 1)).
    """

    def __init__(self, scale_prior: dist.Distribution | None = None):
        self.scale_prior = scale_prior if scale_prior is not None else dist.LogNormal(0.0, 1.0)
        if self.scale_prior.event_shape or self.scale_prior.batch_shape:
            raise ValueError("ARD scale_prior must be a scalar distribution")

    def hyper_latents(self, specs):
        """One scale vector per parameter, over its inputs."""
        out = {}
        for name, spec in specs.items():
            if len(spec.shape) < 2:
                raise ValueError(f"ARD needs parameters with an input dimension; {name!r} has "
                                 f"shape {spec.shape} (give it another prior with by_name)")
            out[f"{name}_ard_scale"] = self.scale_prior.expand((spec.shape[1],))
        return out

    def distribution(self, spec, hyper):
        """N(0, s_j² / fan_in), s per input."""
        scale = per_input(hyper[f"{spec.name}_ard_scale"], spec)
        return dist.Normal(torch.zeros((), dtype=scale.dtype, device=scale.device),
                           scale / math.sqrt(spec.fan_in))

    def __repr__(self):
        return f"ARD(scale_prior={self.scale_prior})"


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

    def hyper_latents(self, specs):
        """Every rule's hyper-latents, each rule asked about the parameters it is first to
        match."""
        out: dict[str, dist.Distribution] = {}
        seen: list = []
        for pattern, rule in self.rules:
            if type(rule).hyper_latents is ElementwisePrior.hyper_latents:
                continue  # declares none: no pattern matching on every draw
            if any(rule is r for r in seen):  # one prior under several patterns: asked once
                continue
            seen.append(rule)
            mine = {n: s for n, s in specs.items() if self.rule_for(s) is rule}
            if not mine:
                continue
            for name, d in rule.hyper_latents(mine).items():
                if name in out:
                    raise ValueError(f"two rules declare hyper-latent {name!r}; the second is "
                                     f"{pattern!r}")
                out[name] = d
        return out

    def site_distribution(self, spec, device, hyper=None):
        """The matched prior's distribution of the whole parameter."""
        return self.rule_for(spec).site_distribution(spec, device, hyper)

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
