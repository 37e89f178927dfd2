"""Guides that train a point estimate and build a posterior around it once training ends."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.plate_messenger import PlateMessenger
from pyro.poutine.runtime import _PYRO_STACK
from torch.utils._pytree import tree_map

from ..sites import param_key
from .base import SiteGuide

__all__ = ["PointThenPosterior", "sample_plate", "plate_sample"]


#: the plates that vectorize guide draws: the ELBO's particles, the samples of
#: :func:`~hyperbayes.inference.predict` and the importance draws of
#: :func:`~hyperbayes.inference.vi_quality`
DRAW_PLATES = ("_particles", "_mc_samples", "_iw_particles")


def sample_plate() -> tuple[int, int] | None:
    """``(size, dim)`` of the innermost plate that vectorizes guide draws (one of
    :data:`DRAW_PLATES`), or None outside one."""
    for frame in reversed(_PYRO_STACK):
        if isinstance(frame, PlateMessenger) and frame.name in DRAW_PLATES:
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
        """Restore a posterior saved by :meth:`get_extra_state`, onto the device of the guide's
        own parameters (a posterior saved on a GPU loads into a guide on the CPU)."""
        self._posterior = state.get("posterior")
        device = next((p.device for p in self.parameters()), None)
        if device is not None:
            self._map_posterior(lambda t: t.to(device))

    def _apply(self, fn, *args, **kwargs):
        """``.to(...)``, ``.cuda()``, ``.double()``: the built posterior moves with the
        parameters (it is extra state, which ``nn.Module`` does not move)."""
        module = super()._apply(fn, *args, **kwargs)
        self._map_posterior(fn)
        return module

    def _map_posterior(self, fn) -> None:
        """Apply ``fn`` to every tensor of the built posterior (none before it is built)."""
        if self._posterior is not None:
            self._posterior = tree_map(lambda t: fn(t) if torch.is_tensor(t) else t,
                                       self._posterior)

    def _posterior_draws(self, count: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def density_reason(self) -> str | None:
        """Why q(w) has no density over every guided site, or None when it has one (then
        :meth:`joint_log_density` evaluates it; :func:`~hyperbayes.inference.vi_quality` uses
        both)."""
        if self._posterior is None:
            return (f"{type(self).__name__} is the point mass at its trained weights until fit "
                    "builds its posterior")
        return self._flat_density_reason()

    def _flat_density_reason(self) -> str | None:
        return None

    def _log_prob(self, unconstrained: dict[str, torch.Tensor]) -> torch.Tensor:
        """log q of unconstrained values ``{site: (count, numel)}``, (count,)."""
        raise NotImplementedError

    def joint_log_density(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """log q(w) of the fitted posterior at ``values`` ``{site: (count, ..., *shape)}`` (the
        sites' values, constrained; a leading draw dimension), one value per draw, (count,).

        The posterior is a Gaussian over all sites jointly, so its density is not a sum of
        per-site terms; a site with a support transform adds its Jacobian term."""
        reason = self.density_reason()
        if reason:
            raise ValueError(reason)
        count = next(iter(values.values())).shape[0]
        unconstrained, log_jacobian = {}, 0.0
        for site in self.sites:
            value = values[site.name].reshape(count, *site.shape)
            if site.transform is not None:
                inverse = site.transform.inv(value)
                log_jacobian = log_jacobian + site.transform.log_abs_det_jacobian(
                    inverse, value).reshape(count, -1).sum(-1)
                value = inverse
            unconstrained[site.name] = value.reshape(count, -1)
        return self._log_prob(unconstrained) - log_jacobian

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
