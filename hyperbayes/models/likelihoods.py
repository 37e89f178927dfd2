"""Likelihoods p(y | f(x; w)): the observation site of a BNN and its predictive distribution."""

from __future__ import annotations

import math

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

    def check_targets(self, y: torch.Tensor, num_outputs: int) -> torch.Tensor:
        """Check targets ``y`` (all N of them) against a net with ``num_outputs`` outputs before
        any training; return them in the dtype the likelihood uses. A ValueError or TypeError
        names what does not fit (default: accept anything)."""
        return y

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
        if not sigma.dim():
            return sigma
        # one σ per sample: (S,) from predict, (K, 1) under a particle plate at dim −2; the
        # outputs are (*samples, N, out), so σ goes to (*samples, 1, 1)
        samples = like.shape[:-2]
        if sigma.numel() == math.prod(samples):
            return sigma.reshape(*samples, 1, 1)
        return sigma.reshape(*sigma.shape, 1, 1)

    def predictive(self, outputs, latents):
        """N(f, σ²) per output, event dim = the output dim."""
        return dist.Normal(outputs, self.noise_scale(latents, outputs)).to_event(1)

    def check_targets(self, y, num_outputs):
        """Real targets of shape (N,) for one output or (N, outputs); integers become floats."""
        if y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"regression targets must be real numbers, got dtype {y.dtype}")
        shape = tuple(y.shape)
        if not (y.dim() == 2 and shape[1] == num_outputs) and not (
                y.dim() == 1 and num_outputs == 1):
            expected = "(N,) or (N, 1)" if num_outputs == 1 else f"(N, {num_outputs})"
            raise ValueError(f"regression targets have shape {shape}, but the net has "
                             f"{num_outputs} output(s): expected {expected}; broadcasting them "
                             "would train on a wrong likelihood")
        return y if y.is_floating_point() else y.to(torch.get_default_dtype())

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

    def check_targets(self, y, num_outputs):
        """Integer class labels of shape (N,), each in [0, num_outputs)."""
        shape = tuple(y.shape)
        if y.dim() == 2 and shape[1] == num_outputs and num_outputs > 1:
            raise ValueError(f"labels have shape {shape}: they look one-hot; Categorical takes "
                             "class indices of shape (N,) (use y.argmax(1))")
        if y.dim() != 1:
            raise ValueError(f"labels have shape {shape}; Categorical takes class indices of "
                             "shape (N,)" + (" (use y.squeeze(1))" if y.dim() == 2 and
                                             shape[1] == 1 else ""))
        if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"labels have dtype {y.dtype}; Categorical takes integer class "
                            "indices (use y.long())")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_outputs:
            bad = int(((y < 0) | (y >= num_outputs)).nonzero()[0, 0])
            raise ValueError(f"labels must be in [0, {num_outputs}) for a net with "
                             f"{num_outputs} outputs; y[{bad}] = {int(y[bad])} (range of y: "
                             f"{low}..{high})")
        return y

    def observe(self, outputs, y, latents):
        """``obs ~ Categorical(logits)``; y has shape (N,)."""
        return pyro.sample("obs", self.predictive(outputs, latents), obs=y)
