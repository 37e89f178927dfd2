"""Illation and EM for MetaPrior models: re-infer Q over chosen code sites with the hyperprior
frozen (Karaletsos et al., 2018, Secs. 4 and 6), and the two-stage EM variant of training.

*Illation* is posterior inference over the codes alone: with ξ (the hyperprior g) fixed, the
codes move so that the weights they generate explain new data. Updating a subset of codes is the
paper's "structured surgery": input codes for a pixel permutation, output codes for a label
permutation.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from ..sites import param_key
from .svi import FitResult, fit

__all__ = ["illate", "fit_em", "code_sites_of", "SITE_GROUPS"]

SITE_GROUPS = ("all", "inputs", "hidden", "outputs")


def code_sites_of(model, sites="all") -> list[str]:
    """Resolve ``sites`` to code-site names of a MetaPrior model.

    Args:
        model: a :class:`~hyperbayes.models.BNN` whose prior is a
            :class:`~hyperbayes.models.metaprior.MetaPrior` with latent codes.
        sites: ``"all"``, ``"inputs"`` (input units), ``"hidden"`` (hidden units), ``"outputs"``
            (output units) or a list of site names (e.g. ``["codes.0", "codes.global"]``).
    """
    prior = getattr(model, "prior", None)
    names = prior.code_sites() if hasattr(prior, "code_sites") else []
    if not names:
        raise ValueError("illation needs a model whose prior has latent codes (a MetaPrior with "
                         "codes='latent')")
    layers = [n for n in names if n != "codes.global"]
    if isinstance(sites, str):
        groups = {"all": names, "inputs": layers[:1], "outputs": layers[-1:],
                  "hidden": layers[1:-1]}
        if sites not in groups:
            raise ValueError(f"unknown site group {sites!r}; choose from {SITE_GROUPS} or give "
                             f"site names from {names}")
        chosen = groups[sites]
    else:
        chosen = list(sites)
        unknown = [s for s in chosen if s not in names]
        if unknown:
            raise ValueError(f"unknown code sites {unknown}; the model has {names}")
    if not chosen:
        raise ValueError(f"site group {sites!r} is empty for this net")
    return chosen


def _site_of(param_name: str, site_keys: dict[str, str]) -> str | None:
    """The site a guide parameter belongs to (per-site guides name parameters ``….<key>``)."""
    leaf = param_name.rsplit(".", 1)[-1]
    return site_keys.get(leaf)


@contextlib.contextmanager
def _frozen(params):
    """Temporarily stop gradients to ``params``; every flag is restored afterwards."""
    saved = [(p, p.requires_grad) for p in params]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _frozen_for_illation(model, guide, guide_sites: set[str] | None):
    """Freeze the model's parameters (ξ) and every guide parameter outside ``guide_sites``
    (None: all guide parameters train)."""
    frozen = list(model.parameters())
    if guide_sites is not None:
        keys = {param_key(s): s for s in getattr(guide, "site_names", [])}
        per_site = {n: _site_of(n, keys) for n, _ in guide.named_parameters()}
        shared = [n for n, s in per_site.items() if s is None]
        if shared:
            raise ValueError(
                f"{type(guide).__name__} has parameters shared by all sites ({shared[:3]}…): "
                "illation over a subset of codes needs a guide with per-site parameters "
                "(MeanField or Delta); use sites='all' with this guide")
        frozen += [p for n, p in guide.named_parameters() if per_site[n] not in guide_sites]
    return _frozen(frozen)


def illate(model, guide, data, *, sites="all", steps: int = 500, lr: float = 1e-2,
           anchor: str = "prior", copy_guide: bool = True, **fit_kwargs):
    """Re-infer Q over the chosen code sites with the hyperprior ξ frozen.

    Args:
        model: a MetaPrior :class:`~hyperbayes.models.BNN` (its ξ stay fixed).
        guide: the trained guide over the codes (by default left untouched: a copy is trained).
        data: the new task's data (Split or ``(x, y)``).
        sites: which codes move: ``"all"``, ``"inputs"``, ``"hidden"``, ``"outputs"`` or names;
            the other codes keep their current posterior.
        steps, lr: illation work (SVI steps) and learning rate.
        anchor: the codes' prior during illation: ``"prior"`` (the model's N(0, I), the paper's
            ELBO) or ``"posterior"`` (the guide's current posterior, fitted as a diagonal
            Gaussian: a few shots then move the codes only as far as the data ask).
        copy_guide: train a deep copy (True) or ``guide`` in place.
        **fit_kwargs: passed to :func:`~hyperbayes.inference.fit` (batch_size, seed, device, …).

    Returns:
        ``(guide, FitResult)``: the illated guide (the copy, unless ``copy_guide=False``).
    """
    if anchor not in ("prior", "posterior"):
        raise ValueError(f"anchor must be 'prior' or 'posterior', got {anchor!r}")
    chosen = code_sites_of(model, sites)
    every = code_sites_of(model, "all")
    new_guide = copy.deepcopy(guide) if copy_guide else guide
    prior = model.prior
    saved_priors = dict(prior.code_priors)
    if anchor == "posterior":
        prior.code_priors.update(_posterior_moments(model, new_guide, chosen))
    try:
        with _frozen_for_illation(model, new_guide,
                                  None if set(chosen) == set(every) else set(chosen)):
            result = fit(model, new_guide, data, steps=steps, lr=lr, **fit_kwargs)
    finally:
        prior.code_priors.clear()
        prior.code_priors.update(saved_priors)
    return new_guide, result


@torch.no_grad()
def _posterior_moments(model, guide, sites, num_samples: int = 256):
    """Mean and standard deviation of the guide's marginal over each site, by sampling."""
    from .predict import sample_posterior

    draws = sample_posterior(model, guide, num_samples)
    return {s: (draws[s].mean(0).detach(), draws[s].std(0).clamp_min(1e-3).detach())
            for s in sites}


def fit_em(model, guide, data, *, rounds: int = 10, e_steps: int = 200, m_steps: int = 200,
           **fit_kwargs) -> list[FitResult]:
    """Two-stage (EM-like) training: alternately fit Q(Z; Φ) with ξ fixed (E) and ξ with Φ
    fixed (M), ``rounds`` times.

    The paper suggests it to lower gradient variance on small data; joint training is
    ``fit(model, guide, ...)``. Each stage is a :func:`~hyperbayes.inference.fit` call (its own
    Adam state); ``fit_kwargs`` go to every call (give ``seed=None`` or distinct seeds to keep
    minibatch orders from repeating; by default stage ``r`` uses seed ``r``).

    Returns:
        The :class:`FitResult` of every stage, E and M alternating.
    """
    if rounds < 1 or e_steps < 1 or m_steps < 1:
        raise ValueError("rounds, e_steps and m_steps must be ≥ 1")
    base_seed = fit_kwargs.pop("seed", 0)
    results = []
    for r in range(rounds):
        seed = None if base_seed is None else base_seed + 2 * r
        with _frozen(model.parameters()):
            results.append(fit(model, guide, data, steps=e_steps, seed=seed, **fit_kwargs))
        with _frozen(guide.parameters()):
            results.append(fit(model, guide, data, steps=m_steps,
                               seed=None if seed is None else seed + 1, **fit_kwargs))
    return results

