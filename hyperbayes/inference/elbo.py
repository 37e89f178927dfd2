"""The ELBO estimator used by hyperbayes guides: only the terms the estimate needs, fused.

Pyro's ``Trace_ELBO`` / ``TraceMeanField_ELBO`` compute every site's log density and score parts
eagerly; for a BNN that is several full passes over every weight tensor that an analytic KL never
reads. :class:`ELBO` computes exactly

    −ELBO = −Σ_obs scale · log p(y | w)  +  β · Σ_latent KL(q ‖ p)

(auxiliary guide sites, such as a flow's latent vector that the sites are sliced from, add
their log q), where each latent site's KL is taken, in order of preference, from the guide's fused
``analytic_kl`` (e.g. the mean-field guide's closed form over flat parameters), from
``torch.distributions.kl_divergence``, or as the one-sample estimate log q(w) − log p(w).
Its value equals Pyro's ``TraceMeanField_ELBO`` (analytic) or ``Trace_ELBO`` (Monte Carlo) on the
same draws: ``tests/test_elbo.py`` checks both.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites

from ..guides.contract import is_implicit
from ..models.nets import local_reparameterization
from ..sites import scalar_normal
from ..tracing import tracing

__all__ = ["ELBO", "log_prob_sum", "scalar_normal"]


def log_prob_sum(d, value: torch.Tensor) -> torch.Tensor:
    """Σ log d(value), with a one-pass path for scalar Normals (−½‖(v − μ)/σ‖² − n log σ√2π)."""
    base = d
    while isinstance(base, dist.Independent | torch.distributions.Independent):
        base = base.base_dist
    if type(base) is dist.ImproperUniform and base.support is dist.constraints.real:
        return value.new_zeros(())  # a flat prior: log density 0, no pass over the value
    normal = scalar_normal(d)
    if normal is None:
        return d.log_prob(value).sum()
    loc, scale = normal
    centred = (value - loc).reshape(-1) if tracing() or bool(loc != 0) else value.reshape(-1)
    n = centred.numel()
    return (-0.5 * torch.dot(centred, centred) / (scale * scale) - n * torch.log(scale)
            - n * 0.5 * math.log(2 * math.pi))


def replayed_traces(model, guide, *args, **kwargs):
    """Run the guide, then the model replayed against its draws (subsample sites pruned);
    returns (model_trace, guide_trace). Enclosing plates and scopes apply to both."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        *args, **kwargs)
    return prune_subsample_sites(model_trace), guide_trace


class ELBO:
    """Negative-ELBO loss with ``differentiable_loss(model, guide, *args, **kwargs)``.

    Args:
        analytic_kl: use closed-form KL(q ‖ p) where available (the guide's fused
            ``analytic_kl`` first, then ``torch.distributions.kl_divergence``); otherwise, and
            when False, the one-sample estimate log q(w) − log p(w).
        kl_weight: β multiplying the KL term (1 is the ELBO). ``fit(kl_schedule=...)`` changes it
            during training: from 0 up for warm-up, or from large down to temper the likelihood.
        num_particles: average the estimate over this many guide draws, drawn in one vectorized
            pass under a ``pyro.plate`` (the model must use at most one plate of its own, as
            :class:`~hyperbayes.models.BNN` does).
    """

    def __init__(self, analytic_kl: bool = True, kl_weight: float = 1.0, num_particles: int = 1):
        if num_particles < 1:
            raise ValueError(f"num_particles must be ≥ 1, got {num_particles}")
        self.analytic_kl = analytic_kl
        self.kl_weight = kl_weight
        self.num_particles = int(num_particles)

    def __repr__(self):
        return (f"ELBO(analytic_kl={self.analytic_kl}, kl_weight={self.kl_weight}, "
                f"num_particles={self.num_particles})")

    def traces(self, model, guide, *args, **kwargs):
        """Run the guide, then the model replayed against it, in one local-reparameterization
        scope; returns (model_trace, guide_trace)."""
        with local_reparameterization():
            if self.num_particles > 1:
                with pyro.plate("_particles", self.num_particles, dim=-2):
                    return replayed_traces(model, guide, *args, **kwargs)
            return replayed_traces(model, guide, *args, **kwargs)


    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """−ELBO estimated from one draw of the guide; differentiable in all parameters."""
        if is_implicit(guide):
            raise TypeError(f"{type(guide).__name__} has no tractable density, so ELBO cannot "
                            "score it; use a sample-based loss from hyperbayes.inference.implicit "
                            "(EntropyELBO, NearestNeighbourELBO, AdversarialELBO, "
                            "DiversityObjective)")
        model_trace, guide_trace = self.traces(model, guide, *args, **kwargs)
        log_lik, latent = 0.0, {}
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                log_p = site["fn"].log_prob(site["value"])
                log_lik = log_lik + scale_and_mask(log_p, site["scale"], site["mask"]).sum()
            elif name in guide_trace.nodes:
                latent[name] = site
            elif site["mask"] is False:
                # drawn from its prior in the model with its density masked out: a latent whose
                # q equals its p (e.g. the MetaPrior's P(W | Z)), so it adds nothing to the ELBO
                continue
            else:
                raise ValueError(f"latent site {name!r} of the model is not in the guide")
        return -log_lik / self.num_particles + self.kl_weight * self.kl(latent, guide_trace, guide)

    def kl(self, model_sites: dict, guide_trace, guide) -> torch.Tensor:
        """Σ over latent sites of KL(q ‖ p) (analytic or sampled, as configured).

        Sampled terms are averaged over particles; closed forms do not depend on the draws.
        """
        total = torch.zeros(())
        covered: set[str] = set()
        fused = getattr(guide, "analytic_kl", None)
        closed = torch.zeros(())
        if self.analytic_kl and callable(fused):
            closed, covered = fused({n: s["fn"] for n, s in model_sites.items()})
        standins = getattr(guide, "lrt_standin_sites", ())
        for name, site in model_sites.items():
            if name in covered:
                continue
            if name in standins:
                raise ValueError(f"site {name!r} uses local reparameterization with a stand-in "
                                 "value; its KL must be closed-form (analytic_kl=True)")
            q_site = guide_trace.nodes[name]
            q, p, value = q_site["fn"], site["fn"], q_site["value"]
            term = None
            if self.analytic_kl and not isinstance(q, dist.Delta):
                try:
                    # under the particle plate q's batch holds the K particles: K copies
                    term = torch.distributions.kl_divergence(q, p).sum()
                except NotImplementedError:
                    term = None
            if term is None:
                log_q = (q.log_density if isinstance(q, dist.Delta) else q.log_prob(value))
                term = torch.as_tensor(log_q).sum() - log_prob_sum(p, value)
            total = total + (term * site["scale"] if site["scale"] is not None else term)
        for site in guide_trace.nodes.values():  # e.g. a flow's latent, split into the sites
            if site["type"] == "sample" and site["infer"].get("is_auxiliary"):
                log_q = site["fn"].log_prob(site["value"])
                total = total + scale_and_mask(log_q, site["scale"], site["mask"]).sum()
        return closed + total / self.num_particles
