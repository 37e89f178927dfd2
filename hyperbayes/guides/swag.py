"""SWA-Gaussian as a guide: moments of an SGD trajectory around the MAP (Maddox et al. 2019)."""

from __future__ import annotations

import math

import torch

from ..sites import param_key
from .aroundpoint import PointThenPosterior

__all__ = ["SWAGGuide", "swag_moments"]


def swag_moments(snapshots: torch.Tensor, rank: int) -> dict[str, torch.Tensor]:
    """SWAG's moments of ``snapshots`` (T, P), parameter vectors along a trajectory: the SWA
    mean θ̄, the diagonal variance diag(θ²̄ − θ̄²) and the deviation matrix
    D (P, K) of the last K = min(rank, T) snapshots from θ̄."""
    if snapshots.dim() != 2 or len(snapshots) < 2:
        raise ValueError(f"need at least two snapshots of shape (T, P), got "
                         f"{tuple(snapshots.shape)}")
    mean = snapshots.mean(0)
    # from the centred snapshots (all are kept): the running form θ²̄ − θ̄² cancels to ≤ 0 in
    # float32 for weights that move little
    variance = (snapshots - mean).pow(2).mean(0)
    deviations = (snapshots[-min(rank, len(snapshots)):] - mean).T.contiguous()
    return {"mean": mean, "variance": variance, "deviations": deviations}


class SWAGGuide(PointThenPosterior):
    """q(w) = N(θ̄, ½ Σ_diag + ½ D Dᵀ / (K − 1)) from SGD iterates around the MAP.

    Trained as a point estimate (the negative log joint, as for MAP); when
    :func:`~hyperbayes.inference.fit` finishes it calls :meth:`after_fit`, which runs SGD
    (momentum 0.9) on the per-example loss at the constant rate ``swa_lr`` from the trained
    point, with minibatches of ``batch_size`` examples (or ``batch_fraction`` of the data;
    default: the training's minibatch), for ``collect_fraction`` of the steps the
    training took (Maddox et al. collect over the last quarter of the budget), taking
    ``snapshots`` evenly spaced snapshots (or one every ``steps_between`` steps); the moments
    of those snapshots (:func:`swag_moments`) are the posterior. Before that the guide is the
    point mass at the trained point.

    Args:
        model: a :class:`~hyperbayes.models.BNN`.
        rank: K, the number of deviation columns (the low-rank part's rank).
        snapshots: how many iterates to collect (≥ 2).
        steps_between: SGD steps between snapshots; None spaces them over
            ``collect_fraction`` × the training's steps (at least one step apart).
        collect_fraction: the collection phase's length as a share of the training's steps.
        swa_lr: the constant SGD learning rate of the collection phase.
        batch_size, batch_fraction: the collection phase's minibatch, as a size or as a share of
            the training data (give at most one; neither: the training's minibatch). SWAG's
            spread is minibatch SGD's noise: a full-batch phase (as the toys' training) has
            none, and its posterior collapses onto the SWA mean.
        seed: seed of the initial values.
    """

    def __init__(self, model, *, rank: int = 20, snapshots: int = 40,
                 steps_between: int | None = None, collect_fraction: float = 0.25,
                 swa_lr: float = 1e-2, batch_size: int | None = None,
                 batch_fraction: float | None = None, seed: int | None = 0):
        super().__init__(model, seed=seed)
        if rank < 1 or snapshots < 2 or not swa_lr > 0:
            raise ValueError("need rank ≥ 1, snapshots ≥ 2 and swa_lr > 0")
        if steps_between is not None and steps_between < 1:
            raise ValueError(f"steps_between must be ≥ 1, got {steps_between}")
        if not collect_fraction > 0:
            raise ValueError(f"collect_fraction must be > 0, got {collect_fraction}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if batch_fraction is not None and not 0 < batch_fraction <= 1:
            raise ValueError(f"batch_fraction must be in (0, 1], got {batch_fraction}")
        if batch_size is not None and batch_fraction is not None:
            raise ValueError("give batch_size or batch_fraction, not both")
        self.batch_size, self.batch_fraction = batch_size, batch_fraction
        self.collect_fraction = float(collect_fraction)
        self.rank, self.snapshots, self.swa_lr = int(rank), int(snapshots), float(swa_lr)
        self.steps_between = steps_between

    def _flat(self) -> torch.Tensor:
        return torch.cat([self.values[param_key(s.name)].detach().reshape(-1)
                          for s in self.sites])

    def after_fit(self, model, x, y, *, loss=None, batch_size: int = 128, seed=None,
                  steps: int | None = None, **_) -> None:
        """Collect the SGD trajectory's moments around the trained point."""
        from ..inference.elbo import ELBO

        loss = loss if loss is not None else ELBO()
        n = len(x)
        if self.batch_fraction is not None:
            batch = max(1, round(self.batch_fraction * n))
        else:
            batch = min(self.batch_size or batch_size, n)
        if self.steps_between is not None:
            between = self.steps_between
        else:  # the snapshots spread over a share of the training's own length
            trained = steps if steps else math.ceil(n / batch)
            between = max(1, round(self.collect_fraction * trained / self.snapshots))
        params = list(self.values.values())
        optim = torch.optim.SGD(params, lr=self.swa_lr, momentum=0.9)
        order = torch.Generator().manual_seed(1 + (0 if seed is None else int(seed)))
        snaps, position, perm = [], n, None
        was_training = self.training
        self.train()
        for _step in range(self.snapshots * between):
            if position + batch > n:
                perm, position = torch.randperm(n, generator=order).to(x.device), 0
            idx = perm[position:position + batch]
            position += batch
            optim.zero_grad()
            # the per-example loss, so that swa_lr is a rate on the mean, as in SGD practice
            value = loss.differentiable_loss(model, self, x[idx], y[idx], n) / n
            value.backward()
            optim.step()
            if (_step + 1) % between == 0:
                snaps.append(self._flat())
        self.train(was_training)
        moments = swag_moments(torch.stack(snaps), self.rank)
        with torch.no_grad():  # the guide's point is the SWA mean
            for name, value in self.split(moments["mean"]).items():
                self.values[param_key(name)].copy_(value)
        self._posterior = moments

    def _flat_distribution(self) -> torch.distributions.Distribution:
        """q over the flat unconstrained weights: N(θ̄, ½ Σ_diag + ½ D Dᵀ / (K − 1)) as torch's
        low-rank-plus-diagonal Gaussian (a diagonal one when K = 1)."""
        post = self._posterior
        mean, var, dev = post["mean"], post["variance"], post["deviations"]
        k = dev.shape[1]
        if k > 1:
            return torch.distributions.LowRankMultivariateNormal(
                mean, dev / math.sqrt(2.0 * (k - 1)), var / 2.0)
        return torch.distributions.Independent(torch.distributions.Normal(
            mean, (var / 2.0).sqrt()), 1)

    def _flat_density_reason(self) -> str | None:
        zero = int((self._posterior["variance"] <= 0).sum())
        if zero:
            return (f"{zero} weights did not move during SWAG's collection (zero variance): "
                    "the covariance is singular, so q(w) has no density")
        return None

    def _log_prob(self, unconstrained: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._flat_distribution().log_prob(
            torch.cat([unconstrained[s.name] for s in self.sites], -1))

    def _flat_draws(self, count: int) -> torch.Tensor:
        post = self._posterior
        mean, var, dev = post["mean"], post["variance"], post["deviations"]
        z1 = torch.randn(count, mean.numel(), device=mean.device, dtype=mean.dtype)
        draws = mean + var.sqrt() * z1 / math.sqrt(2.0)
        k = dev.shape[1]
        if k > 1:
            z2 = torch.randn(count, k, device=mean.device, dtype=mean.dtype)
            draws = draws + z2 @ dev.T / math.sqrt(2.0 * (k - 1))
        return draws

    def _posterior_draws(self, count: int) -> dict[str, torch.Tensor]:
        """``count`` SWAG draws per site."""
        return self.split(self._flat_draws(count))
