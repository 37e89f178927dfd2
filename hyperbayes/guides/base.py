"""Shared machinery of hyperbayes guides: discovering the model's latent sites and their layout."""

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

__all__ = ["Site", "SiteGuide", "model_sites", "param_key", "split_sites", "concat_init"]


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
    """Split a (..., D) tensor into per-site unconstrained values of shape (..., *shape)."""
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


def model_sites(model, generator: torch.Generator | None = None) -> list[Site]:
    """Trace ``model.sample_params`` once (no data needed) and describe each guided latent site."""
    if not hasattr(model, "sample_params"):
        raise TypeError(f"{type(model).__name__} has no sample_params(); hyperbayes guides work "
                        "with hyperbayes.models.BNN-like models")
    # Feasible values instead of prior draws: an improper (flat) prior cannot be sampled.
    with torch.no_grad(), poutine.block(), pyro.validation_enabled(False), \
            InitMessenger(_feasible_value):
        trace = poutine.trace(model.sample_params).get_trace()
    guided = model.guided_sites() if hasattr(model, "guided_sites") else None
    specs = getattr(getattr(model, "net", None), "param_specs", {})
    net_init = model.net.init_params(generator) if specs else {}
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


class SiteGuide(torch.nn.Module):
    """Base class of guides over a model's parameter sites.

    Subclasses create their parameters from ``self.sites`` in ``__init__`` and implement
    ``forward(*args, **kwargs)``, which samples every site and returns ``{name: value}``. The
    guide ignores the data: it is a posterior over the parameters, not an amortized encoder.
    """

    def __init__(self, model, *, seed: int | None = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.sites = model_sites(model, generator)
        self.site_names = [s.name for s in self.sites]
        prior = getattr(model, "prior", None)
        specs = getattr(getattr(model, "net", None), "param_specs", {})
        #: hyper-latent sites of a hierarchical prior (the parameters' priors depend on them)
        self.hyper_site_names = list(prior.hyper_latents(specs)) if hasattr(
            prior, "hyper_latents") else []

    @property
    def num_latent(self) -> int:
        """Total number of unconstrained scalars over all guided sites."""
        return sum(s.numel for s in self.sites)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a (..., D) tensor into per-site unconstrained values of shape (..., *shape)."""
        return split_sites(self.sites, flat)

    @staticmethod
    def sample_point(site: Site, unconstrained: torch.Tensor) -> torch.Tensor:
        """Sample ``site`` as a point mass at ``unconstrained`` mapped into the site's support."""
        value = unconstrained if site.transform is None else site.transform(unconstrained)
        return pyro.sample(site.name, dist.Delta(value, event_dim=len(site.shape)))

    def flat_init(self) -> torch.Tensor:
        """The concatenated unconstrained initial values (D,)."""
        return concat_init(self.sites)
