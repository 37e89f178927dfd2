"""Bayesian linear regression with a Gaussian prior and known noise: a BNN whose exact posterior
is known in closed form, to check samplers and guides against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .bnn import BNN
from .likelihoods import Gaussian
from .nets import MLP
from .priors import Normal

__all__ = ["ConjugateRegression", "conjugate_regression"]


@dataclass
class ConjugateRegression:
    """A conjugate regression problem: model, data and the exact posterior of (w, b).

    Attributes:
        model: ``BNN(MLP([d, 1]), priors.Normal(prior_scale), Gaussian(noise))``.
        x, y: inputs (n, d) and targets (n, 1).
        mean, cov: the posterior mean (d + 1,) and covariance (d + 1, d + 1) of the weights
            ``fc0.weight`` (d) followed by ``fc0.bias``, in float64.
    """

    model: BNN
    x: torch.Tensor
    y: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor

    @property
    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``."""
        return self.x, self.y

    @staticmethod
    def flatten(samples: dict[str, torch.Tensor]) -> torch.Tensor:
        """Draws ``{"fc0.weight": (S, 1, d), "fc0.bias": (S, 1)}`` as (S, d + 1) float64 rows
        in the order of :attr:`mean`."""
        weight = samples["fc0.weight"]
        return torch.cat([weight.reshape(len(weight), -1),
                          samples["fc0.bias"].reshape(len(weight), -1)], 1).double()


def conjugate_regression(n: int = 40, d: int = 3, *, noise: float = 0.5,
                         prior_scale: float = 1.0, seed: int = 0) -> ConjugateRegression:
    """y = x·w + b + ε, ε ~ N(0, noise²), x ~ N(0, I), with w, b ~ N(0, prior_scale²) a priori.

    The true weights are 1.5, −0.7, 0.4, … (cycled to ``d``) and b = 0.3; the posterior of the
    d + 1 parameters is Gaussian, with precision I / prior_scale² + XᵀX / noise² over the
    design X = [x, 1].
    """
    if n < 1 or d < 1:
        raise ValueError(f"need n ≥ 1 and d ≥ 1; got n={n}, d={d}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w_true = torch.tensor([1.5, -0.7, 0.4]).repeat(d // 3 + 1)[:d]
    y = (x @ w_true + 0.3 + noise * torch.randn(n, generator=g)).unsqueeze(-1)
    design = torch.cat([x, torch.ones(n, 1)], dim=1).double()
    precision = (torch.eye(d + 1, dtype=torch.float64) / prior_scale ** 2
                 + design.T @ design / noise ** 2)
    cov = torch.linalg.inv(precision)
    mean = cov @ design.T @ y.double()[:, 0] / noise ** 2
    model = BNN(MLP([d, 1]), Normal(prior_scale), Gaussian(noise))
    return ConjugateRegression(model, x, y, mean, cov)
