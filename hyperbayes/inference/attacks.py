"""Gradient attacks on any model and guide: input gradients under posterior draws, FGSM steps."""

from __future__ import annotations

import torch

from .predict import sample_posterior

__all__ = ["input_gradient", "fgsm"]


def input_gradient(model, guide, x: torch.Tensor, y: torch.Tensor, *,
                   batch_size: int | None = None) -> torch.Tensor:
    """∇ₓ of the log-likelihood log p(y | x, w) under one posterior draw w per batch.

    The weights are one joint draw from the guide
    (:func:`~hyperbayes.inference.sample_posterior` with S = 1; sites the guide does not cover
    are drawn from the model given the guided ones), so any method works: a point estimate
    gives the same gradient every call, a posterior a fresh draw per batch, as the one-sample
    attacks of Li & Gal (2017) and Krueger et al. (2017) use. The model's own likelihood gives
    the log-likelihood (``likelihood.predictive(outputs, latents).log_prob(y)``; for a
    classifier, log softmax with any clipping it applies), taken in float64 so that a confident
    net's gradient does not round to 0. Examples do not interact, so the gradient of the sum is
    each example's own gradient.

    Args:
        model: a trained :class:`~hyperbayes.models.BNN` (or any model with ``net`` and
            ``likelihood``).
        guide: its guide (any method).
        x: inputs (N, ...), on the model's device.
        y: targets (N,): the true labels for an untargeted attack, the target labels for a
            targeted one.
        batch_size: examples per weight draw (None: one draw for all).

    Returns:
        (N, ...) gradients, the shape of ``x``.

    Example:
        >>> grad = input_gradient(model, guide, x, y)          # doctest: +SKIP
        >>> x_adv = fgsm(x, grad, eps=0.1)                      # doctest: +SKIP
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples and y {len(y)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1 or None, got {batch_size}")
    specs = model.net.param_specs
    grads = []
    size = batch_size or max(len(x), 1)
    for start in range(0, len(x), size):
        xb = x[start:start + size].detach().clone().requires_grad_(True)
        yb = y[start:start + size]
        draw = sample_posterior(model, guide, 1)
        params = {k: v for k, v in draw.items() if k in specs}
        latents = {k: v for k, v in draw.items() if k not in specs}
        with torch.enable_grad():
            outputs = model.net(params, xb)
            outputs = outputs.reshape(-1, *outputs.shape[-2:]).double()  # (1, N, out)
            log_lik = model.likelihood.predictive(outputs, latents).log_prob(yb).sum()
            (grad,) = torch.autograd.grad(log_lik, xb)
        grads.append(grad)
    return torch.cat(grads) if grads else torch.zeros_like(x)


def fgsm(x: torch.Tensor, log_lik_grad: torch.Tensor, eps: float, *, targeted: bool = False,
         low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """One fast-gradient-sign step (Goodfellow et al. 2014), clipped to the input range.

    Untargeted (``log_lik_grad`` of the true label): ``clip(x − ε·sign(∇ₓ log p(y | x)))``, a
    step up the loss −log p(y | x). Targeted (``log_lik_grad`` of the target label t):
    ``clip(x + ε·sign(∇ₓ log p(t | x)))``, a step towards t. ε = 0 gives ``x`` back.

    Args:
        x: inputs (N, ...).
        log_lik_grad: ∇ₓ log p(label | x), the shape of ``x`` (e.g. :func:`input_gradient`).
        eps: the step size, in the units of ``x`` (≥ 0).
        targeted: step towards the label of ``log_lik_grad`` instead of away from it.
        low, high: the input range the result is clipped to (pixels in [0, 1] by default).
    """
    if eps < 0:
        raise ValueError(f"the step size must be ≥ 0, got {eps}")
    if log_lik_grad.shape != x.shape:
        raise ValueError(f"the gradient has shape {tuple(log_lik_grad.shape)}, the inputs "
                         f"{tuple(x.shape)}")
    if eps == 0:
        return x.clone()
    direction = 1.0 if targeted else -1.0
    return (x + direction * eps * log_lik_grad.sign()).clamp(low, high)
