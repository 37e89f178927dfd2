"""The site machinery shared by models, guides and inference: a model's latent sites, their
shapes, supports and starting values, and flat-vector layouts over them.

It sits below :mod:`hyperbayes.guides` and :mod:`hyperbayes.inference` (both import it; it
imports neither), so the two never import each other at module level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import biject_to, transform_to
from pyro.infer.autoguide.initialization import InitMessenger

__all__ = ["Site", "model_sites", "param_key", "split_sites", "concat_init", "scalar_normal"]


@dataclass(frozen=True)
class Site:
    """One latent site of a model, as a guide sees it.

    Attributes:
        name: the site name (e.g. ``"fc0.weight"``).
        shape: shape of one sample (the site's event shape).
        transform: maps unconstrained reals to the site's support (identity for weights).
        init: an unconstrained initial value (the net's standard initialisation for weights).
        role: the net's role for the parameter (``weight``, ``bias``, ``scale``, ...) or ``""``.
        prior: the site's prior distribution as traced (on the CPU; for inspection).
    """

    name: str
    shape: tuple[int, ...]
    transform: object
    init: torch.Tensor
    role: str = ""
    prior: object = None

    @property
    def numel(self) -> int:
        """Number of scalars in one sample."""
        return math.prod(self.shape)

    @property
    def is_real(self) -> bool:
        """True when the site's support is all of R^shape (no transform)."""
        return self.transform is None


def param_key(site_name: str) -> str:
    """A module-attribute-safe key for a site name (``fc0.weight`` → ``fc0__weight``)."""
    return site_name.replace(".", "__")


def split_sites(sites: list[Site], flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a (..., D) tensor into per-site unconstrained values of shape ``(..., *shape)``."""
    lead = tuple(flat.shape[:-1])
    chunks = torch.split(flat, [s.numel for s in sites], dim=-1)
    return {s.name: c.reshape(lead + tuple(s.shape)) for s, c in zip(sites, chunks, strict=True)}


def concat_init(sites: list[Site]) -> torch.Tensor:
    """The sites' unconstrained initial values concatenated into one (D,) vector."""
    return torch.cat([s.init.reshape(-1) for s in sites])


def _feasible_value(site) -> torch.Tensor:
    """A point in the site's support, found without sampling (flat priors cannot be sampled)."""
    fn = site["fn"]
    try:
        return transform_to(fn.support)(torch.zeros(fn.shape()))
    except (NotImplementedError, RuntimeError, ValueError):
        return fn.sample().detach()


def model_sites(model, generator: torch.Generator | None = None, *,
                fresh: bool = False) -> list[Site]:
    """Trace ``model.sample_params`` once (no data needed) and describe each guided latent site.

    ``fresh``: the initial values are a fresh initialisation drawn from ``generator`` even where
    the net would start at given values (a TorchNet's module; see ``init_params``)."""
    if not hasattr(model, "sample_params"):
        raise TypeError(f"{type(model).__name__} has no sample_params(); hyperbayes guides work "
                        "with hyperbayes.models.BNN-like models")
    # Feasible values instead of prior draws: an improper (flat) prior cannot be sampled.
    with torch.no_grad(), poutine.block(), pyro.validation_enabled(False), \
            InitMessenger(_feasible_value):
        trace = poutine.trace(model.sample_params).get_trace()
    guided = model.guided_sites() if hasattr(model, "guided_sites") else None
    specs = getattr(getattr(model, "net", None), "param_specs", {})
    if not specs:
        net_init = {}
    else:  # only asked of nets that can start elsewhere; any net draws from the generator
        net_init = (model.net.init_params(generator, fresh=True) if fresh
                    else model.net.init_params(generator))
    prior = getattr(model, "prior", None)
    if prior is not None and hasattr(prior, "init_values"):
        net_init.update(prior.init_values(specs, generator))
    sites = []
    for name, node in trace.nodes.items():
        if node["type"] != "sample" or node["is_observed"]:
            continue
        if guided is not None and name not in guided:
            continue
        fn = node["fn"]
        value = node["value"]
        shape = tuple(value.shape)
        if tuple(fn.event_shape) != shape:
            raise ValueError(f"site {name!r} has batch shape {tuple(fn.batch_shape)}: hyperbayes "
                             "guides expect parameter sites whose event shape is the whole value")
        support = fn.support
        while hasattr(support, "base_constraint"):  # independent(...), mixture supports
            support = support.base_constraint
        transform = None if support is constraints.real else biject_to(fn.support)
        if name in net_init:
            init = net_init[name]
        else:
            try:
                start = fn.mean
                if not torch.isfinite(start).all():
                    raise ValueError
            except (NotImplementedError, ValueError):
                start = value
            init = start if transform is None else transform.inv(start)
        role = specs[name].role if name in specs else ""
        sites.append(Site(name, shape, transform, init.detach().to(torch.get_default_dtype()),
                          role, fn))
    if not sites and guided != []:  # [] : the prior draws every latent itself (one-hot codes)
        raise ValueError("the model has no latent sites to guide")
    return sites


def scalar_normal(d) -> tuple[float, float] | None:
    """(loc, scale) when ``d`` is a Normal (possibly ``expand``-ed / ``to_event``-ed) with one
    scalar loc and scale, else None."""
    while isinstance(d, dist.Independent | torch.distributions.Independent):
        d = d.base_dist
    if type(d) not in (dist.Normal, torch.distributions.Normal):
        return None
    loc, scale = d.loc, d.scale
    if loc.numel() == 1 or all(s == 0 for s in loc.stride()):
        if scale.numel() == 1 or all(s == 0 for s in scale.stride()):
            return loc.reshape(-1)[0], scale.reshape(-1)[0]
    return None
