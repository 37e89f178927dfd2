"""Mean-field Gaussian guide: Bayes by Backprop (Blundell et al., 2015, Eqs. 1–4), optionally with
the local reparameterization trick (Kingma, Salimans & Welling, 2015, Sec. 2.3)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from ..models.nets import gaussian_weights
from ..sites import scalar_normal
from ..tracing import tracing
from .base import SiteGuide, param_key

__all__ = ["MeanField", "normal_kl"]


class _Normal(dist.Normal):
    """A Normal whose reparameterized sample is one fused ``addcmul`` (μ + σ ⊙ ε)."""

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return torch.addcmul(self.loc, self.scale, eps)


class _NormalKL(torch.autograd.Function):
    """Σᵢ KL(N(μᵢ, e^{2sᵢ}) ‖ N(m, v²)) with its gradient in closed form.

    Forward: n log v − Σ s − n/2 + (σ·σ + (μ − m)·(μ − m)) / 2v². Backward: ∂/∂μ = (μ − m)/v²,
    ∂/∂s = σ²/v² − 1: two elementwise passes, where autograd through dot products and exp
    would take about eight.
    """

    @staticmethod
    def forward(ctx, loc, log_scale, scale, prior_loc, prior_scale):
        # prior_loc and prior_scale are numbers, or 0-dim tensors while a step is traced
        centred = loc if isinstance(prior_loc, float) and prior_loc == 0 else loc - prior_loc
        flat_c, flat_s = centred.reshape(-1), scale.reshape(-1)
        n = flat_s.numel()
        inv_var = 1.0 / (prior_scale * prior_scale)
        log_prior_scale = (math.log(prior_scale) if isinstance(prior_scale, float)
                           else torch.log(prior_scale))
        ctx.save_for_backward(centred, scale)
        ctx.inv_var = inv_var
        return (n * log_prior_scale - log_scale.sum() - 0.5 * n
                + 0.5 * inv_var * (torch.dot(flat_s, flat_s) + torch.dot(flat_c, flat_c)))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        centred, scale = ctx.saved_tensors
        g = grad * ctx.inv_var  # tensors throughout: no device-to-host sync on a GPU
        return centred * g, scale * scale * g - grad, None, None, None


def normal_kl(loc, log_scale, prior_loc: float, prior_scale: float) -> torch.Tensor:
    """Σ KL(N(loc, exp(log_scale)²) ‖ N(prior_loc, prior_scale²)) over all elements."""
    if not tracing():  # numbers, read once; a traced step keeps them tensors
        prior_loc, prior_scale = float(prior_loc), float(prior_scale)
    return _NormalKL.apply(loc, log_scale, log_scale.detach().exp(), prior_loc, prior_scale)


class MeanField(SiteGuide):
    """q(w) = Π N(w_i; μ_i, σ_i²), σ = exp(s), in each site's unconstrained space.

    Each site has its own μ and s tensors (so autograd never splits or concatenates a flat
    vector; fused Adam updates them all in one kernel). Trained with
    :class:`~hyperbayes.inference.ELBO` (its default loss), the KL to a scalar Normal prior is
    computed in closed form with its gradient in two elementwise passes; other priors use
    torch's closed forms or a one-sample estimate. With ``local_reparameterization=True`` dense
    layers sample their pre-activations from N(x μᵀ, x² σ²ᵀ) during training (no weight matrix
    is sampled), which lowers gradient variance and needs a closed-form KL (a Normal prior);
    prediction
    (``.eval()``) samples whole weight sets so every test point sees the same network.

    Args:
        model: a :class:`~hyperbayes.models.BNN`.
        init_scale: initial σ of every site (small, so training starts near the MAP solution).
        local_reparameterization: use the local reparameterization trick in training: True
            (an error where no site is a dense weight matrix), ``"auto"`` (where there is one,
            as the registry's recipes ask) or False.
        seed: seed of the initial locations (the net's standard initialisation).

    Example::

        guide = MeanField(model)
        hb.inference.fit(model, guide, data.train, steps=2000)   # loss: hb.inference.ELBO()
    """

    def __init__(self, model, *, init_scale: float = 1e-3,
                 local_reparameterization: bool | str = False, seed: int | None = 0):
        super().__init__(model, seed=seed)
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        if local_reparameterization not in (True, False, "auto"):
            raise ValueError(f"local_reparameterization must be True, False or 'auto', got "
                             f"{local_reparameterization!r}")
        self.local_reparameterization = local_reparameterization
        self.loc_params = torch.nn.ParameterDict(
            {param_key(s.name): torch.nn.Parameter(s.init.clone()) for s in self.sites})
        self.log_scale_params = torch.nn.ParameterDict(
            {param_key(s.name): torch.nn.Parameter(torch.full(s.shape, math.log(init_scale)))
             for s in self.sites})
        # Dense weights use local reparameterization. Where the prior is a scalar Normal the KL
        # is closed-form, so the weight need not be drawn at all (a stand-in value fills the
        # site); with any other prior a weight is still drawn for the one-sample KL estimate.
        self.lrt_sites = frozenset(
            s.name for s in self.sites
            if local_reparameterization and s.role == "weight" and len(s.shape) == 2)
        if local_reparameterization is True and not self.lrt_sites:
            raise ValueError("local_reparameterization=True, but no site is a dense layer's "
                             "weight matrix (weight norm's directions and scales, "
                             "convolutions and other parameters sample whole weights): drop it "
                             "or give the net dense Bayesian layers")
        # (not under a hierarchical prior: the weights' prior depends on drawn hyper-latents)
        self.lrt_standin_sites = frozenset(
            n for n, s in zip(self.site_names, self.sites, strict=True)
            if n in self.lrt_sites and scalar_normal(s.prior) is not None
            and not self.hyper_site_names)

    def default_loss(self):
        """:class:`~hyperbayes.inference.ELBO` with the closed-form KL."""
        from ..inference.elbo import ELBO  # inference builds on guides: import late

        return ELBO()

    def _site_params(self):
        """Per-site (μ, σ, log σ)."""
        out = []
        for site in self.sites:
            key = param_key(site.name)
            log_scale = self.log_scale_params[key]
            out.append((self.loc_params[key], log_scale.exp(), log_scale))
        return out

    def site_distribution(self, site, loc, scale) -> dist.Distribution:
        """q for one site: a diagonal Normal (pushed through the site's transform if any)."""
        q = _Normal(loc, scale).to_event(len(site.shape))
        return q if site.transform is None else dist.TransformedDistribution(q, site.transform)

    def forward(self, *args, **kwargs):
        """Sample every site from q; returns ``{name: value}``."""
        # local reparameterization needs a scope (hb.inference.ELBO opens one); elsewhere, e.g.
        # under Pyro's own ELBOs, every weight is drawn whole
        lrt = self.local_reparameterization and self.training and gaussian_weights.in_scope()
        out = {}
        for site, (loc, scale, _) in zip(self.sites, self._site_params(), strict=True):
            if lrt and site.name in self.lrt_standin_sites:
                # The layer samples pre-activations from (loc, scale); the weight itself is never
                # drawn. The site's value stands in for the weight and only the closed-form KL
                # of hb.inference.ELBO reads it.
                value = pyro.sample(site.name, dist.Delta(loc, event_dim=2))
            else:
                value = pyro.sample(site.name, self.site_distribution(site, loc, scale))
            if lrt and site.name in self.lrt_sites:
                gaussian_weights.register(value, loc, scale)
            out[site.name] = value
        return out

    def analytic_kl(self, priors: dict) -> tuple[torch.Tensor, set[str]]:
        """Closed-form Σ KL(q ‖ p) over the sites whose prior is a scalar Normal.

        KL = Σᵢ [log σ_p − log σᵢ + (σᵢ² + (μᵢ − μ_p)²) / (2σ_p²) − ½], computed with two dot
        products and one sum per site on the views of the last forward pass.
        Returns the total and the names it covers (the ELBO handles the rest). A prior whose
        loc or scale depends on other latents or parameters (needs gradients) is left to the ELBO,
        which differentiates through it.
        """
        total, covered = 0.0, set()
        for site in self.sites:
            prior = priors.get(site.name)
            normal = scalar_normal(prior) if site.transform is None else None
            if normal is None or any(t.requires_grad for t in normal):
                continue
            mu_p, sigma_p = normal
            key = param_key(site.name)
            total = total + normal_kl(self.loc_params[key], self.log_scale_params[key], mu_p,
                                      sigma_p)
            covered.add(site.name)
        return torch.as_tensor(total), covered

    def scales(self) -> dict[str, torch.Tensor]:
        """Posterior standard deviations σ per site (unconstrained space, detached)."""
        with torch.no_grad():
            return {s.name: v.clone() for s, (_, v, _) in zip(self.sites, self._site_params(),
                                                              strict=True)}

    def locs(self) -> dict[str, torch.Tensor]:
        """Posterior means μ per site (unconstrained space, detached)."""
        with torch.no_grad():
            return {s.name: m.clone() for s, (m, _, _) in zip(self.sites, self._site_params(),
                                                              strict=True)}
