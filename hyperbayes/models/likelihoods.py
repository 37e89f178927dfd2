"""Likelihoods p(y | f(x; w)): the observation site of a BNN and its predictive distribution."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from .priors import on_device

__all__ = ["Likelihood", "Gaussian", "Categorical"]


class Likelihood:
    """Base class. ``task`` is ``"regression"`` or ``"classification"``."""

    task: str = ""

    def sample_latents(self, device) -> dict:
        """Sample the likelihood's own latent sites (e.g. a learned noise scale)."""
        return {}

    def observe(self, outputs: torch.Tensor, y: torch.Tensor | None, latents: dict):
        """Declare the ``"obs"`` site for a minibatch; called inside the data plate."""
        raise NotImplementedError

    def predictive(self, outputs: torch.Tensor, latents: dict) -> dist.Distribution:
        """The distribution of y given net outputs of shape (..., N, out)."""
        raise NotImplementedError


class Gaussian(Likelihood):
    """y ~ N(f(x), σ²) with σ fixed (``scale=3.0``) or learned (``scale=None``).

    A learned σ is a latent site ``"noise_scale"`` with prior ``scale_prior`` (default
    LogNormal(0, 1)), so every guide and NUTS infer it like any other parameter.
    """

    task = "regression"

    def __init__(self, scale: float | None = 1.0, scale_prior: dist.Distribution | None = None):
        if scale is not None and not scale > 0:
            raise ValueError(f"Gaussian noise scale must be positive, got {scale}")
        self.scale = None if scale is None else float(scale)
        self.scale_prior = scale_prior if scale_prior is not None else dist.LogNormal(0.0, 1.0)

    def __repr__(self):
        return f"Gaussian(scale={'learned' if self.scale is None else self.scale})"

    def sample_latents(self, device):
        """Sample ``noise_scale`` when σ is learned."""
        if self.scale is not None:
            return {}
        return {"noise_scale": pyro.sample("noise_scale", on_device(self.scale_prior, device))}

    def noise_scale(self, latents: dict, like: torch.Tensor) -> torch.Tensor:
        """σ as a tensor broadcastable against outputs of shape (..., N, 1)."""
        if self.scale is not None:
            return torch.as_tensor(self.scale, dtype=like.dtype, device=like.device)
        sigma = latents["noise_scale"]
        return sigma.reshape(*sigma.shape, *([1] * 2)) if sigma.dim() else sigma

    def predictive(self, outputs, latents):
        """N(f, σ²) per output, event dim = the output dim."""
        return dist.Normal(outputs, self.noise_scale(latents, outputs)).to_event(1)

    def observe(self, outputs, y, latents):
        """``obs ~ N(f, σ²)``; y has shape (N, out)."""
        if y is not None and y.dim() == 1:
            y = y.unsqueeze(-1)
        return pyro.sample("obs", self.predictive(outputs, latents), obs=y)


class Categorical(Likelihood):
    """y ~ Categorical(softmax(f(x))).

    With ``clip=True`` the class probabilities are clipped to [0.001, 0.999] before the log, as
    in the Bayesian hypernetworks code (bounds the loss of confident mistakes); the clipped
    vector is renormalized by the Categorical distribution.
    """

    task = "classification"

    def __init__(self, clip: bool = False, clip_min: float = 1e-3, clip_max: float = 0.999):
        self.clip, self.clip_min, self.clip_max = clip, clip_min, clip_max

    def __repr__(self):
        return f"Categorical(clip={self.clip})"

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """Log class probabilities, clipped when ``clip`` is set."""
        if not self.clip:
            return outputs
        return outputs.softmax(-1).clamp(self.clip_min, self.clip_max).log()

    def predictive(self, outputs, latents):
        """Categorical over the last dim of ``outputs``."""
        return dist.Categorical(logits=self.logits(outputs))

    def observe(self, outputs, y, latents):
        """``obs ~ Categorical(logits)``; y has shape (N,)."""
        return pyro.sample("obs", self.predictive(outputs, latents), obs=y)
