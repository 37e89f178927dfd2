"""Mean-field Gaussian guide: Bayes by Backprop (Blundell et al., 2015), optionally with the local
reparameterization trick (Kingma, Salimans & Welling, 2015)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import TraceMeanField_ELBO

from ..models.nets import gaussian_weights
from .base import SiteGuide, param_key

__all__ = ["MeanField"]


def _inverse_softplus(x: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(x))))


class MeanField(SiteGuide):
    """q(w) = Π N(w_i; μ_i, σ_i²) with σ = softplus(ρ), in each site's unconstrained space.

    Trained with :class:`pyro.infer.TraceMeanField_ELBO` (analytic KL where Pyro knows it, a
    Monte Carlo estimate otherwise), this is Bayes by Backprop. With
    ``local_reparameterization=True`` dense layers sample their pre-activations from
    N(x μᵀ, x² σ²ᵀ) during training, which lowers gradient variance; prediction (``.eval()``)
    samples whole weight sets so every test point sees the same network.

    Args:
        model: a :class:`~hyperbayes.models.BNN`.
        init_scale: initial σ of every site (small, so training starts near the MAP solution).
        local_reparameterization: use the local reparameterization trick in training.
        seed: seed of the initial locations (the net's standard initialisation).
    """

    def __init__(self, model, *, init_scale: float = 1e-3, local_reparameterization: bool = False,
                 seed: int | None = 0):
        super().__init__(model, seed=seed)
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        rho = _inverse_softplus(init_scale)
        self.local_reparameterization = local_reparameterization
        self.locs = torch.nn.ParameterDict(
            {param_key(s.name): torch.nn.Parameter(s.init.clone()) for s in self.sites})
        self.rhos = torch.nn.ParameterDict(
            {param_key(s.name): torch.nn.Parameter(torch.full(s.shape, rho)) for s in self.sites})

    def default_loss(self):
        """TraceMeanField_ELBO: analytic KL(q‖p) where Pyro knows it, Monte Carlo otherwise."""
        return TraceMeanField_ELBO()

    def site_distribution(self, site) -> dist.Distribution:
        """q for one site: an (optionally transformed) diagonal Normal with event = the shape."""
        key = param_key(site.name)
        q = dist.Normal(self.locs[key], F.softplus(self.rhos[key])).to_event(len(site.shape))
        return q if site.transform is None else dist.TransformedDistribution(q, site.transform)

    def forward(self, *args, **kwargs):
        """Sample every site from q; returns ``{name: value}``."""
        lrt = self.local_reparameterization and self.training
        if lrt:
            gaussian_weights.clear()
        out = {}
        for site in self.sites:
            q = self.site_distribution(site)
            value = pyro.sample(site.name, q)
            if lrt and site.role == "weight" and len(site.shape) == 2:
                base = q.base_dist
                gaussian_weights.register(value, base.loc, base.scale)
            out[site.name] = value
        return out

    def scales(self) -> dict[str, torch.Tensor]:
        """Posterior standard deviations σ per site (unconstrained space, detached)."""
        with torch.no_grad():
            return {s.name: F.softplus(self.rhos[param_key(s.name)]).clone() for s in self.sites}
