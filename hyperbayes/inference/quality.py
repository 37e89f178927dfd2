"""How good is a variational posterior: the ELBO, an importance-weighted bound and PSIS k̂.

For K draws w_k ~ q, the log importance weights log r_k = log p(y | w_k) + log p(w_k) −
log q(w_k) give

* the ELBO, mean_k log r_k (a lower bound of log p(y));
* the importance-weighted bound of Burda et al. (2016), IWAE_K = log (1/K) Σ_k r_k, which is
  ≥ the ELBO in expectation and rises to log p(y) as K grows, so IWAE_K − ELBO is a lower bound of
  KL(q ‖ p(w | y)) — how far q is from the posterior, in nats;
* the Pareto-smoothed importance sampling diagnostic k̂ of Yao, Vehtari, Simpson & Gelman
  (2018, *Yes, but did it work?*), the shape of a generalized Pareto fitted to the largest
  weights (ArviZ's ``psislw``): below 0.5 the importance weights have finite variance and q is
  close to the posterior; above 0.7 the approximation is not reliable (q misses mass the
  posterior has, typically by being too narrow);
* the relative importance-sampling effective sample size (Σ r)² / (K Σ r²).

These need log q(w): guides with a density only (mean field, flows, autoguides, the MetaPrior's
Q(Z), and once fitted the Laplace and SWAG Gaussians, whose density is joint over the sites). A
point estimate (MAP, MC dropout, the ensemble) and an implicit generator (Bayes by Hypernet, the
diversity hypernetwork) have none; :func:`vi_quality` says so instead of returning numbers.
Sites that the model draws from its own prior with the density masked (the MetaPrior's
P(W | Z)) have q = p and cancel.

For an implicit generator, :func:`implicit_kl_lower_bound` gives what can be known without
log q: a lower bound of KL(q ‖ prior) from the Gaussian entropy bound, against which the
loss's own sample-based KL estimate can be checked, and so an upper bound of its ELBO.
"""

from __future__ import annotations

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.util import scale_and_mask

from ..guides.contract import is_implicit
from ..sites import split_sites
from .checks import check_count, check_data
from .device import resolve_device
from .elbo import replayed_traces
from .estimators import gaussian_entropy_bound, gaussian_entropy_bound_error
from .implicit import _priors_on, _support_dim
from .predict import eval_mode

__all__ = ["vi_quality", "log_importance_weights", "psis_khat", "khat_reading", "NoDensityError",
           "implicit_kl_lower_bound", "implicit_kl_check", "KHAT_GOOD", "KHAT_UNRELIABLE"]

KHAT_GOOD = 0.5        # k̂ below: q is close to the posterior (finite-variance weights)
KHAT_UNRELIABLE = 0.7  # k̂ above: the approximation is not reliable (Yao et al. 2018)
_PARTICLES = "_iw_particles"


class NoDensityError(ValueError):
    """The guide has no density over the weights (a point estimate or an implicit generator)."""


def _no_density_reason(guide) -> str | None:
    """Why ``guide`` has no log q(w) over the model's latent sites, or None when it has one."""
    if is_implicit(guide):
        return (f"{type(guide).__name__} is an implicit generator: q(w) has no density to "
                "evaluate, so importance weights (IWAE, k̂) cannot be formed")
    declared = getattr(guide, "density_reason", None)
    return declared() if callable(declared) else None


def _joint_density(guide) -> bool:
    """Whether ``guide`` gives log q(w) jointly over its sites (``joint_log_density``: the
    Laplace and SWAG Gaussians, whose sites are drawn as point masses at a joint draw)."""
    return callable(getattr(guide, "joint_log_density", None))


def _per_particle(log_p: torch.Tensor, count: int) -> torch.Tensor:
    """A site's log density summed to one value per particle, (count,).

    Under the particle plate (dim −2) a site's log density has shape (..., count, m); an unbatched
    one (a site outside the plate) is the same for every particle.
    """
    if log_p.dim() >= 2 and log_p.shape[-2] == count:
        return log_p.sum(-1).reshape(-1, count).sum(0)
    return log_p.sum().expand(count)


def log_importance_weights(model, guide, x: torch.Tensor, y: torch.Tensor,
                           num_samples: int = 1000, *, chunk: int = 250) -> torch.Tensor:
    """log r_k = log p(y | w_k) + log p(w_k) − log q(w_k) for ``num_samples`` draws w_k ~ q.

    All of (x, y) is scored (no subsampling), ``chunk`` draws per vectorized pass. Returns a
    (num_samples,) tensor on the CPU (float64).

    Raises:
        NoDensityError: the guide has no density (point estimates, implicit generators).
    """
    reason = _no_density_reason(guide)
    if reason:
        raise NoDensityError(reason)
    num_samples = check_count("num_samples", num_samples, 2)
    chunk = check_count("chunk", chunk)
    parts, joint = [], _joint_density(guide)
    point_only = not joint
    with torch.no_grad(), eval_mode(guide):
        done = 0
        while done < num_samples:
            count = min(chunk, num_samples - done)
            # no local-reparameterization scope: weights are drawn whole, so log q(w) is
            # the density of what the model used
            with pyro.plate(_PARTICLES, count, dim=-2):
                model_trace, guide_trace = replayed_traces(model, guide, x, y)
            log_r = torch.zeros(count, dtype=torch.float64, device=x.device)
            for name, site in model_trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if site["is_observed"]:
                    log_p = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"],
                                           site["mask"])
                    log_r = log_r + _per_particle(log_p, count).double()
                elif name in guide_trace.nodes:
                    q_site = guide_trace.nodes[name]
                    q = q_site["fn"]
                    point_only &= isinstance(q, dist.Delta)
                    log_r = log_r + _per_particle(site["fn"].log_prob(site["value"]),
                                                  count).double()
                    log_r = log_r - _per_particle(q.log_prob(q_site["value"]), count).double()
                elif site["mask"] is False:
                    continue  # drawn from its prior with the density masked: q = p, cancels
                else:
                    raise ValueError(f"latent site {name!r} of the model is not in the guide")
            if joint:
                log_q = guide.joint_log_density({name: guide_trace.nodes[name]["value"]
                                                 for name in guide.site_names})
                log_r = log_r - log_q.reshape(count).double()
            for site in guide_trace.nodes.values():  # e.g. a flow's latent vector
                if site["type"] == "sample" and site["infer"].get("is_auxiliary"):
                    point_only = False
                    log_r = log_r - _per_particle(site["fn"].log_prob(site["value"]),
                                                  count).double()
            if point_only:
                raise NoDensityError(f"{type(guide).__name__} is a point estimate (every latent "
                                     "site a Delta): q(w) has no density over weights, so "
                                     "importance weights (IWAE, k̂) are undefined")
            parts.append(log_r.cpu())
            done += count
    return torch.cat(parts)


def psis_khat(log_weights) -> float:
    """The Pareto k̂ of PSIS (ArviZ's ``psislw``) for a 1-d array of log importance weights."""
    values = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if values.size < 5 or not np.isfinite(values).all():
        raise ValueError("psis_khat needs at least 5 finite log weights")
    with warnings.catch_warnings():
        # ArviZ warns when k̂ is large; the value is what the caller asked for
        warnings.simplefilter("ignore")
        _, khat = az.psislw(values)
    return float(np.asarray(khat).reshape(-1)[0])


def _data_on(model, data, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``data`` ((x, y) or a split) checked against ``model``, both on ``device``."""
    x, y = (data.x, data.y) if hasattr(data, "x") else data
    model.to(device)
    return check_data(model, torch.as_tensor(x).to(device), torch.as_tensor(y).to(device))


def vi_quality(model, guide, data, num_samples: int = 1000, *, chunk: int = 250,
               device="auto") -> dict:
    """The ELBO, IWAE_K, their gap, PSIS k̂ and the importance ESS of ``guide`` on ``data``.

    Args:
        model, guide: a fitted model and guide.
        data: (x, y) or a split with ``.x``/``.y``: the data the posterior is conditioned on
            (its full training set).
        num_samples: K, the number of draws of q (IWAE_K uses all of them).
        chunk: draws per vectorized pass.
        device: where to compute (``auto``, ``cpu``, ``cuda``); model and guide are moved there.

    Returns:
        A dict with ``available`` True and the keys ``elbo``, ``elbo_se``, ``iwae``,
        ``kl_lower_bound`` (IWAE − ELBO), ``khat``, ``khat_reading``, ``ess_fraction`` and
        ``num_samples``; for a guide without a density, ``available`` False and a ``reason``
        (nothing is drawn).
    """
    reason = _no_density_reason(guide)
    if reason:
        return {"available": False, "reason": reason}
    num_samples = check_count("num_samples", num_samples, 5)
    device = resolve_device(device)
    guide.to(device)
    x, y = _data_on(model, data, device)
    try:
        log_r = log_importance_weights(model, guide, x, y, num_samples, chunk=chunk).numpy()
    except NoDensityError as err:
        return {"available": False, "reason": str(err)}
    if not np.isfinite(log_r).all():
        bad = int((~np.isfinite(log_r)).sum())
        return {"available": False, "reason": f"{bad} of {num_samples} log importance weights "
                                              "are not finite"}
    elbo = float(log_r.mean())
    iwae = float(np.logaddexp.reduce(log_r) - math.log(num_samples))
    weights = np.exp(log_r - log_r.max())
    khat = psis_khat(log_r)
    return {"available": True, "elbo": elbo,
            "elbo_se": float(log_r.std(ddof=1) / math.sqrt(num_samples)),
            "iwae": iwae, "kl_lower_bound": iwae - elbo, "khat": khat,
            "khat_reading": khat_reading(khat),
            "ess_fraction": float(weights.sum() ** 2 / (num_samples * (weights ** 2).sum())),
            "num_samples": num_samples}


def khat_reading(khat: float) -> str:
    """The standard reading of a PSIS k̂ (Yao et al. 2018)."""
    if khat < KHAT_GOOD:
        return "good"
    if khat <= KHAT_UNRELIABLE:
        return "fair"
    return "unreliable"


def implicit_kl_lower_bound(guide, num_samples: int | None = None, *, chunk: int = 2000,
                            device="auto") -> dict:
    """A lower bound of KL(q ‖ p) over an implicit guide's generated sites, from samples.

    KL(q ‖ p) = −H(q) − E_q[log p(w)], and no distribution exceeds the entropy of the Gaussian
    with its covariance (:func:`~hyperbayes.inference.estimators.gaussian_entropy_bound`), so
    KL(q ‖ p) ≥ −½ log det(2πe Σ_q) − E_q[log p(w)] for any prior with a density. A
    sample-based KL estimate (the adversarial discriminator's E_q[T], the nearest-neighbour or
    entropy estimate) far below this bound is measurably blind to how q spreads; and
    E_q[log p(y | w)] − this bound is an upper bound of the guide's ELBO, comparable with
    :func:`vi_quality`'s ELBO of guides that have a density. Up to Monte Carlo error: both
    terms are estimated from the same ``num_samples`` draws (``standard_error`` combines the
    prior term's and the log-determinant's, the latter as for Gaussian draws). Point-estimated
    sites are left out (their q is a point mass).

    Args:
        guide: an implicit guide (:class:`~hyperbayes.guides.ImplicitGuide`,
            :class:`~hyperbayes.guides.DiversityGuide`) whose generated sites have priors with a
            density and no hyper-latents.
        num_samples: draws of q (default 20·D; at least D + 2).
        chunk: draws per pass of the generator.
        device: where to draw (``auto``, ``cpu``, ``cuda``).

    Returns:
        A dict: ``kl_lower_bound`` (nats), ``entropy_bound``, ``expected_log_prior``,
        ``standard_error``, ``dim`` (D), ``support_dim`` and ``num_samples``. A generator that
        spans fewer than D dimensions (``support_dim`` < D) has no density: its KL is infinite,
        returned as such without drawing; so is one whose draws have a singular covariance.
    """
    if not is_implicit(guide):
        raise TypeError(f"{type(guide).__name__} is not an implicit guide; for a guide with a "
                        "density use vi_quality, whose ELBO needs no bound")
    if getattr(guide, "hyper_site_names", None):
        raise ValueError("a hierarchical prior (hyper-latents) has no density per site: "
                         "implicit_kl_lower_bound needs fixed priors on the generated sites")
    d, support = guide.num_generated, min(_support_dim(guide), guide.num_generated)
    if support < d:
        return {"kl_lower_bound": math.inf, "entropy_bound": -math.inf,
                "expected_log_prior": None, "standard_error": 0.0, "dim": d,
                "support_dim": support, "num_samples": 0}
    num_samples = check_count("num_samples", 20 * d if num_samples is None else num_samples,
                              d + 2)
    chunk = check_count("chunk", chunk, 1)
    device = resolve_device(device)
    guide.to(device)
    priors = _priors_on(guide, device)
    draws, log_prior = [], []
    with torch.no_grad():
        for start in range(0, num_samples, chunk):
            flat = guide.sample_generated(min(chunk, num_samples - start))
            values = split_sites(guide.generated_sites, flat)
            total = torch.zeros(len(flat), dtype=torch.float64, device=flat.device)
            for site, prior in zip(guide.generated_sites, priors, strict=True):
                total += prior.log_prob(values[site.name]).reshape(len(flat), -1).sum(-1)
            draws.append(flat.double().cpu())
            log_prior.append(total.cpu())
    log_prior = torch.cat(log_prior)
    if not torch.isfinite(log_prior).all():
        raise ValueError("the prior density is zero at some of q's draws: KL(q ‖ p) is "
                         "infinite")
    entropy = gaussian_entropy_bound(torch.cat(draws))
    expected = float(log_prior.mean())
    standard_error = math.hypot(float(log_prior.std()) / math.sqrt(num_samples),
                                gaussian_entropy_bound_error(num_samples, d))
    return {"kl_lower_bound": -entropy - expected, "entropy_bound": entropy,
            "expected_log_prior": expected, "standard_error": standard_error,
            "dim": d, "support_dim": support, "num_samples": num_samples}


def implicit_kl_check(model, guide, loss, data, *, repeats: int = 50,
                      num_samples: int | None = None, device="auto") -> dict:
    """A sample-based loss's own estimate of KL(q ‖ p) against :func:`implicit_kl_lower_bound`,
    and the upper bound of the ELBO that the bound gives.

    The loss's estimate is its ``divergence`` term (the adversarial discriminator's E_q[T], the
    nearest-neighbour or the Kozachenko–Leonenko estimate) from one draw of its
    ``num_particles`` samples, as in a training step, averaged over ``repeats`` draws. An
    estimate below the lower bound by more than three standard errors (``below_bound``)
    underestimates the KL by at least ``kl_lower_bound − loss_estimate`` nats: the loss does not
    pay for q's spread as the ELBO would, and far below it, cannot see that spread at all. The
    ELBO itself is at most E_q[log p(y | w)] − (the point estimates' −log p(ŵ)) − the bound,
    comparable with the ELBO :func:`vi_quality` gives a guide with a density.

    Args:
        model, guide: a fitted model and implicit guide.
        loss: the sample-based loss it was trained with (a loss without a KL estimate, such as
            the diversity objective, gives the bound only).
        data: (x, y) or a split: the data the posterior is conditioned on.
        repeats: draws of the loss's estimate.
        num_samples, device: as for :func:`implicit_kl_lower_bound`.

    Returns:
        :func:`implicit_kl_lower_bound`'s dict with ``loss_estimate`` and
        ``loss_estimate_se`` (None without one), ``below_bound``, ``expected_log_likelihood``
        and ``elbo_upper_bound``.
    """
    repeats = check_count("repeats", repeats, 2)
    if not callable(getattr(loss, "draw", None)):
        raise TypeError(f"{type(loss).__name__} is not a sample-based loss of an implicit guide")
    device = resolve_device(device)
    x, y = _data_on(model, data, device)
    bound = implicit_kl_lower_bound(guide, num_samples, device=device)
    estimates, log_lik, penalty = [], [], []
    has_estimate = True
    with torch.no_grad():
        for _ in range(repeats):
            draws = loss.draw(model, guide, x, y, len(x))
            log_lik.append(float(draws.log_likelihood))
            penalty.append(float(draws.point_penalty))
            if has_estimate:
                try:
                    estimates.append(float(loss.divergence(draws, model, guide)))
                except NotImplementedError:  # an objective that is not an ELBO: no KL term
                    has_estimate = False
    estimates = torch.tensor(estimates, dtype=torch.float64)
    estimate = float(estimates.mean()) if has_estimate else None
    estimate_se = float(estimates.std() / math.sqrt(repeats)) if has_estimate else None
    expected_log_lik = float(torch.tensor(log_lik, dtype=torch.float64).mean())
    below = None if estimate is None else bool(
        bound["kl_lower_bound"] - estimate > 3 * math.hypot(estimate_se, bound["standard_error"]))
    return {**bound, "loss_estimate": estimate, "loss_estimate_se": estimate_se,
            "below_bound": below, "expected_log_likelihood": expected_log_lik,
            "elbo_upper_bound": expected_log_lik - sum(penalty) / repeats
            - bound["kl_lower_bound"]}
