"""MAP (and MC dropout) guide: a point mass on every parameter site."""

from __future__ import annotations

import torch

from .base import SiteGuide, param_key

__all__ = ["Delta"]


class Delta(SiteGuide):
    """q(w) = δ(w − ŵ): maximizing the ELBO with this guide is MAP estimation.

    With a net that has ``dropout > 0`` it is MC dropout (Gal & Ghahramani, 2016): the dropout
    masks stay random at prediction time and the prior plays the role of weight decay.

    Args:
        model: a :class:`~hyperbayes.models.BNN`.
        seed: seed of the initial values (the net's standard initialisation for weights).
    """

    def __init__(self, model, *, seed: int | None = 0):
        super().__init__(model, seed=seed)
        self.values = torch.nn.ParameterDict(
            {param_key(s.name): torch.nn.Parameter(s.init.clone()) for s in self.sites})

    def default_loss(self):
        """:class:`~hyperbayes.inference.ELBO`: with a point mass it is the negative log joint."""
        from ..inference.elbo import ELBO

        return ELBO()

    def forward(self, *args, **kwargs):
        """Sample every site from its point mass; returns ``{name: value}``."""
        return {site.name: self.sample_point(site, self.values[param_key(site.name)])
                for site in self.sites}

    def point_estimate(self) -> dict[str, torch.Tensor]:
        """The current point estimate per site (constrained space, detached)."""
        with torch.no_grad():
            return {s.name: (self.values[param_key(s.name)] if s.transform is None else
                             s.transform(self.values[param_key(s.name)])).detach().clone()
                    for s in self.sites}
