"""The base class of hyperbayes guides (the site machinery itself is :mod:`hyperbayes.sites`)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from ..sites import Site, concat_init, model_sites, param_key, split_sites

__all__ = ["Site", "SiteGuide", "model_sites", "param_key", "split_sites", "concat_init"]


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
        """Split a (..., D) tensor into per-site unconstrained values of shape ``(..., *shape)``."""
        return split_sites(self.sites, flat)

    @staticmethod
    def sample_point(site: Site, unconstrained: torch.Tensor) -> torch.Tensor:
        """Sample ``site`` as a point mass at ``unconstrained`` mapped into the site's support."""
        value = unconstrained if site.transform is None else site.transform(unconstrained)
        return pyro.sample(site.name, dist.Delta(value, event_dim=len(site.shape)))

    def flat_init(self) -> torch.Tensor:
        """The concatenated unconstrained initial values (D,)."""
        return concat_init(self.sites)
