"""Guides that train a point estimate and build a posterior around it once training ends."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.plate_messenger import PlateMessenger
from pyro.poutine.runtime import _PYRO_STACK

from ..sites import param_key
from .base import SiteGuide

__all__ = ["PointThenPosterior", "sample_plate", "plate_sample"]


def sample_plate() -> tuple[int, int] | None:
    """``(size, dim)`` of the innermost plate that vectorizes guide draws (the ELBO's particles
    or :func:`~hyperbayes.inference.predict`'s samples), or None outside one."""
    for frame in reversed(_PYRO_STACK):
        if isinstance(frame, PlateMessenger) and frame.name in ("_particles", "_mc_samples"):
            return frame.size, frame.dim
    return None


def plate_sample(site, draws: torch.Tensor, dim: int | None) -> torch.Tensor:
    """Sample ``site`` as point masses at ``draws`` (count, site shape), laid along the plate's
    dimension ``dim`` (None: outside a plate, the first draw)."""
    value = draws if site.transform is None else site.transform(draws)
    value = value[0] if dim is None else value.reshape(
        len(value), *([1] * (-dim - 1)), *site.shape)
    return pyro.sample(site.name, dist.Delta(value, event_dim=len(site.shape)))


class PointThenPosterior(SiteGuide):
    """Base of the Laplace and SWAG guides: a point estimate ŵ while training (the loss is the
    negative log joint, as for MAP), and after :func:`~hyperbayes.inference.fit` calls
    ``after_fit`` a posterior around it, kept in ``self._posterior`` (saved with the guide's
    state). Subclasses implement ``after_fit`` and ``_posterior_draws(count)``."""

    def __init__(self, model, *, seed: int | None = 0):
        super().__init__(model, seed=seed)
        self.values = torch.nn.ParameterDict(
            {param_key(s.name): torch.nn.Parameter(s.init.clone()) for s in self.sites})
        self._posterior: dict | None = None

    def default_loss(self):
        """:class:`~hyperbayes.inference.ELBO`: with a point mass it is the negative log joint."""
        from ..inference.elbo import ELBO

        return ELBO()

    @property
    def fitted(self) -> bool:
        """Whether the posterior has been built (else the guide is the point mass at ŵ)."""
        return self._posterior is not None

    def point_estimate(self) -> dict[str, torch.Tensor]:
        """ŵ per site (unconstrained, detached)."""
        with torch.no_grad():
            return {s.name: self.values[param_key(s.name)].detach().clone() for s in self.sites}

    def get_extra_state(self) -> dict:
        """The built posterior (tensors and names), saved with the guide's state."""
        return {"posterior": self._posterior}

    def set_extra_state(self, state: dict) -> None:
        """Restore a posterior saved by :meth:`get_extra_state`."""
        self._posterior = state.get("posterior")

    def _posterior_draws(self, count: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, *args, **kwargs):
        """Sample every site: a posterior draw (in eval mode, once built), else ŵ."""
        plate = sample_plate()
        count, dim = plate if plate is not None else (1, None)
        if self._posterior is None or self.training:
            draws = {s.name: self.values[param_key(s.name)].expand(count, *s.shape)
                     for s in self.sites}
        else:
            draws = self._posterior_draws(count)
        return {site.name: plate_sample(site, draws[site.name], dim) for site in self.sites}
