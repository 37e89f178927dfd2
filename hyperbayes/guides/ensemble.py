"""Deep ensembles as a Pyro guide: K point estimates, a uniform mixture of point masses."""

from __future__ import annotations

import torch

from ..sites import model_sites, param_key
from .aroundpoint import plate_sample, sample_plate
from .base import SiteGuide

__all__ = ["Ensemble", "EnsembleLoss"]


class Ensemble(SiteGuide):
    """A deep ensemble (Lakshminarayanan et al. 2017): K independently initialised point
    estimates ŵ₁ … ŵ_K, with q(w) = (1/K) Σ_k δ(w − ŵ_k).

    Inside a vectorized plate of S draws (training particles or predictive samples) draw i is
    member i mod K, so the K members train in one batched pass (with
    :class:`EnsembleLoss`, K particles a step) and S a multiple of K predicts with the exact
    uniform mixture (:func:`~hyperbayes.inference.predict` draws in groups of a multiple of K,
    :attr:`sample_period`); a single draw outside a plate picks a member at random.

    Args:
        model: a :class:`~hyperbayes.models.BNN`.
        members: K.
        seed: member k starts from the net's standard initialisation drawn with ``seed + k``
            (a user's ``torch.nn`` module too: each member is a fresh PyTorch initialisation of
            it, as if ``TorchNet(..., init="reset")``, not the module's current values, which
            would make every member the same net).
        seeds: the K initialisation seeds, instead of ``seed`` (equal seeds give equal members).
    """

    def __init__(self, model, *, members: int = 5, seed: int | None = 0,
                 seeds: list[int] | None = None):
        super().__init__(model, seed=seed)
        if seeds is None:
            if members < 1:
                raise ValueError(f"an ensemble needs members ≥ 1, got {members}")
            seeds = [(seed or 0) + k for k in range(members)]
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("an ensemble needs at least one seed")
        self.members = len(seeds)
        #: draws that belong together: a sampler that splits S draws into groups keeps each
        #: group a multiple of this, so every group is the uniform mixture
        self.sample_period = self.members
        # fresh initialisations, even of a TorchNet that starts guides at its module's values
        inits = [model_sites(model, torch.Generator().manual_seed(s), fresh=True)
                 for s in seeds]
        self.values = torch.nn.ParameterDict({
            param_key(site.name): torch.nn.Parameter(torch.stack(
                [member[i].init for member in inits]))
            for i, site in enumerate(self.sites)})

    def default_loss(self):
        """:class:`EnsembleLoss` with one particle per member."""
        return EnsembleLoss(num_particles=self.members)

    def _indices(self) -> tuple[torch.Tensor | None, int | None]:
        """Which member each draw takes (None: draw k is member k, all K in order)."""
        plate = sample_plate()
        device = next(iter(self.values.values())).device
        if plate is None:
            return torch.randint(self.members, (1,), device=device), None
        size, dim = plate
        if size == self.members:  # training: one particle per member, no gather needed
            return None, dim
        return torch.arange(size, device=device) % self.members, dim

    def forward(self, *args, **kwargs):
        """Sample every site: member i mod K for draw i of a plate, else a random member."""
        index, dim = self._indices()
        return {site.name: plate_sample(site, self.values[param_key(site.name)] if index is None
                                        else self.values[param_key(site.name)][index], dim)
                for site in self.sites}

    def member(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's point estimate per site (constrained space, detached)."""
        with torch.no_grad():
            return {s.name: (self.values[param_key(s.name)][k] if s.transform is None else
                             s.transform(self.values[param_key(s.name)][k])).detach().clone()
                    for s in self.sites}


class EnsembleLoss:
    """The K members' MAP losses summed, from one vectorized pass of K particles: each member's
    gradient is what training it alone would give."""

    def __init__(self, num_particles: int):
        from ..inference.elbo import ELBO

        self.num_particles = int(num_particles)
        self._elbo = ELBO(num_particles=self.num_particles)

    def __repr__(self):
        return f"EnsembleLoss(num_particles={self.num_particles})"

    @property
    def kl_weight(self) -> float:
        """The prior term's weight (``fit``'s KL schedules set it)."""
        return self._elbo.kl_weight

    @kl_weight.setter
    def kl_weight(self, value: float) -> None:
        self._elbo.kl_weight = value

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Σ_k [−log p(y | ŵ_k) − log p(ŵ_k)] (the ELBO's particle mean times K)."""
        return self._elbo.differentiable_loss(model, guide, *args, **kwargs) * self.num_particles
