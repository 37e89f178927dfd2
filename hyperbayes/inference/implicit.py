"""Losses for implicit guides, whose log q(w) is estimated from a batch of S weight samples.

Each loss draws S samples of the guide as vectorized ELBO particles (``num_particles=S``, one
pass under a ``pyro.plate``), averages the data term over them, and estimates the rest from the
batch of generated weight vectors (S, D) with :mod:`hyperbayes.inference.estimators`:

* :class:`EntropyELBO` — KL(q‖p) = −E_q[log p(w)] − H(q), with H from the Kozachenko–Leonenko
  estimate (needs a prior density; the least biased choice when there is one).
* :class:`NearestNeighbourELBO` — KL(q‖p) by the k-nearest-neighbour estimate against prior
  samples (Bayes by Hypernet's later version; needs only prior samples).
* :class:`AdversarialELBO` — KL(q‖p) ≈ E_q[T(w)] with T a discriminator trained to tell q from
  prior samples (Bayes by Hypernet, Eqs. 4–5): ``discriminator_steps`` updates of T inside every
  loss evaluation, after ``pretrain_steps`` on the first.
* :class:`DiversityObjective` — λ·E[mean loss] − Ĥ(gauge(w)) of *Generating Neural Networks with
  Neural Networks*; with λ = N (the dataset size), no gauge and a flat prior it is the negative
  :class:`EntropyELBO`.

Point-estimated sites (e.g. directions and biases under ``over="scales"``) add −log p(ŵ), as in
MAP. ``kl_weight`` multiplies the divergence term, so ``fit(kl_schedule=...)`` anneals it from 0.
All are usable with :func:`~hyperbayes.inference.fit`. The discriminator of
:class:`AdversarialELBO` lives in the loss object; ``fit`` saves and restores it with its
checkpoints (``state_dict`` / ``load_state_dict``).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from pyro.distributions.util import scale_and_mask

from ..guides.contract import is_implicit
from ..models.gauge import gauge_constraints, gauge_fix
from ..models.priors import on_device
from .elbo import ELBO, log_prob_sum
from .estimators import KINDS, DensityRatioDiscriminator, entropy_kl, kl_nearest_neighbour
from .svi import make_adam

__all__ = ["EntropyELBO", "NearestNeighbourELBO", "AdversarialELBO", "DiversityObjective",
           "ImplicitDraws"]


@dataclass
class ImplicitDraws:
    """What one vectorized draw of S guide samples gives a sample-based loss.

    Attributes:
        log_likelihood: the data term E_q[log p(y | w)] at full-data scale (averaged over S).
        mean_log_likelihood: log p(y | w) averaged over samples and examples of the minibatch.
        samples: the generated sites flattened, (S, D).
        values: every latent site's value with the sample dim first, ``(S, *shape)``.
        log_prior: E_q[log p(w)] over the generated sites (None when not computed).
        point_penalty: −Σ log p(ŵ) over the point-estimated sites.
    """

    log_likelihood: torch.Tensor
    mean_log_likelihood: torch.Tensor
    samples: torch.Tensor
    values: dict
    log_prior: torch.Tensor | None
    point_penalty: torch.Tensor


def _check_implicit(guide) -> None:
    if not is_implicit(guide):
        raise TypeError(f"{type(guide).__name__} is not an implicit guide; sample-based losses "
                        "need hyperbayes.guides.ImplicitGuide or DiversityGuide (use "
                        "hyperbayes.inference.ELBO for guides with a density)")


class _SampleBasedELBO(ELBO):
    """Shared draw of S particles and the terms every sample-based loss needs."""

    min_particles = 2

    def __init__(self, *, kl_weight: float = 1.0, num_particles: int = 8,
                 allow_degenerate: bool = False):
        super().__init__(analytic_kl=False, kl_weight=kl_weight, num_particles=num_particles)
        if self.num_particles < self.min_particles:
            raise ValueError(f"{type(self).__name__} estimates from a batch of samples: "
                             f"num_particles must be ≥ {self.min_particles}, got {num_particles}")
        self.allow_degenerate = bool(allow_degenerate)

    def check_coverage(self, guide) -> None:
        """Refuse a generator whose noise has fewer dimensions than the weights it generates.

        Its samples lie on a noise_dim-dimensional manifold of the D-dimensional weight space:
        q has no density there, KL(q‖p) is infinite, and an estimate of it from samples (whether
        entropy, nearest neighbours or a discriminator) measures something else — a manifold
        entropy, or marginal KLs — so the loss is not an ELBO. ``allow_degenerate=True`` trains
        it knowingly (the papers do so for large nets).
        """
        d = guide.num_generated
        support = _support_dim(guide)
        if support < d and not self.allow_degenerate:
            raise ValueError(
                f"{type(guide).__name__} generates D={d} scalars from noise of dimension "
                f"{guide.noise_dim}, but its samples span at most {support} dimensions (the "
                "generator reads the noise through layers that narrow): q lies on a "
                f"{support}-dimensional manifold of the {d}-dimensional weight space, so "
                f"KL(q‖p) is infinite and {type(self).__name__} is not an ELBO. Give the guide "
                f"noise_dim ≥ {d} and a first hidden layer (ImplicitGuide) or extractor layers "
                f"(DiversityGuide) at least {d} wide, or pass allow_degenerate=True to "
                f"{type(self).__name__} to train this objective knowingly")

    def __repr__(self):
        return f"{type(self).__name__}(kl_weight={self.kl_weight}, " \
               f"num_particles={self.num_particles})"

    def draw(self, model, guide, *args, with_log_prior: bool = True, **kwargs) -> ImplicitDraws:
        """Run guide and model once with S particles; collect the terms of :class:`ImplicitDraws`.
        """
        _check_implicit(guide)
        self.check_coverage(guide)
        model_trace, guide_trace = self.traces(model, guide, *args, **kwargs)
        s = self.num_particles
        generated = set(guide.generated_names)
        shapes = {site.name: tuple(site.shape) for site in guide.sites}
        log_lik = torch.zeros(())
        mean_terms = []
        log_prior = torch.zeros(()) if with_log_prior else None
        penalty = torch.zeros(())
        values = {}
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                log_p = site["fn"].log_prob(site["value"])
                log_lik = log_lik + scale_and_mask(log_p, site["scale"], site["mask"]).sum()
                mean_terms.append(log_p.mean())
            elif name in guide_trace.nodes:
                value = site["value"]
                shape = shapes[name]
                if name in generated:
                    values[name] = (value.expand(s, *shape) if value.dim() == len(shape)
                                    else value.reshape(s, *shape))
                    if with_log_prior:
                        log_prior = log_prior + log_prob_sum(site["fn"], value)
                else:  # a point estimate: −log p(ŵ), the MAP term; kept without sample dims
                    values[name] = value[(0,) * (value.dim() - len(shape))]
                    penalty = penalty - log_prob_sum(site["fn"], value)
            elif site["mask"] is False:
                continue  # drawn from its prior with the density masked out (q = p)
            else:
                raise ValueError(f"latent site {name!r} of the model is not in the guide")
        samples = guide.flatten({n: values[n] for n in guide.generated_names}, s)
        return ImplicitDraws(log_lik / s, torch.stack(mean_terms).sum() if mean_terms else
                             torch.zeros(()), samples, values,
                             None if log_prior is None else log_prior / s, penalty / s)

    def divergence(self, draws: ImplicitDraws, model, guide) -> torch.Tensor:
        """The estimate of KL(q ‖ p) over the generated sites."""
        raise NotImplementedError

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """−ELBO with the KL over the generated sites estimated from the S samples."""
        draws = self.draw(model, guide, *args, **kwargs)
        kl = self.divergence(draws, model, guide) + draws.point_penalty
        return -draws.log_likelihood + self.kl_weight * kl


def _support_dim(guide) -> int:
    """The most dimensions the guide's samples can span (its ``support_dim``, else noise_dim)."""
    return int(getattr(guide, "support_dim", guide.noise_dim))


def _entropy_dim(guide, entropy_dim: int | None, d: int) -> int:
    """The dimension used in the Kozachenko–Leonenko formula: given, else the most the samples
    can span, min(support, D)."""
    return entropy_dim if entropy_dim is not None else min(_support_dim(guide), d)


# per guide, its generated sites' priors on the device last asked for (rebuilding a prior on a
# GPU every step would copy its parameters there every step)
_DEVICE_PRIORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _priors_on(guide, device) -> list:
    """The priors of ``guide``'s generated sites with their parameters on ``device``."""
    device = torch.device(device)
    cached = _DEVICE_PRIORS.get(guide)
    if cached is None or cached[0] != device:
        cached = (device, [on_device(site.prior, device) for site in guide.generated_sites])
        _DEVICE_PRIORS[guide] = cached
    return cached[1]


def _prior_samples(guide, count: int, device) -> torch.Tensor:
    """``count`` prior draws of the generated sites, flattened to (count, D)."""
    if getattr(guide, "hyper_site_names", None):
        raise ValueError("this loss compares q with draws of each site's marginal prior, which "
                         f"a hierarchical prior (hyper-latents {guide.hyper_site_names[:3]}) "
                         "does not have site by site; use EntropyELBO")
    columns = []
    for site, prior in zip(guide.generated_sites, _priors_on(guide, device), strict=True):
        try:
            draw = prior.sample((count,))
        except NotImplementedError as err:
            raise ValueError(f"the prior of {site.name!r} ({site.prior}) cannot be sampled; "
                             "this loss needs prior samples (use EntropyELBO or "
                             "DiversityObjective with a flat prior)") from err
        columns.append(draw.reshape(count, -1))
    return columns[0] if len(columns) == 1 else torch.cat(columns, dim=-1)


class EntropyELBO(_SampleBasedELBO):
    """−ELBO with KL(q‖p) = −E_q[log p(w)] − Ĥ(q), Ĥ the Kozachenko–Leonenko estimate.

    Args:
        k: neighbour order of the entropy estimate.
        entropy_dim: dimension used in the estimate's formula (default min(noise_dim, D): the
            generated weights lie on a manifold of the noise's dimension; see
            :func:`~hyperbayes.inference.estimators.entropy_kl`).
        kl_weight, num_particles: as for :class:`~hyperbayes.inference.ELBO`; S ≥ k + 1.
        allow_degenerate: accept a generator with noise_dim < D (see
            :meth:`_SampleBasedELBO.check_coverage`); refused otherwise.
    """

    def __init__(self, k: int = 1, entropy_dim: int | None = None, *, kl_weight: float = 1.0,
                 num_particles: int = 8, allow_degenerate: bool = False):
        super().__init__(kl_weight=kl_weight, num_particles=num_particles,
                         allow_degenerate=allow_degenerate)
        self.k, self.entropy_dim = k, entropy_dim

    def divergence(self, draws, model, guide):
        """−E_q[log p(w)] − Ĥ(q)."""
        d = draws.samples.shape[1]
        entropy = entropy_kl(draws.samples, self.k, _entropy_dim(guide, self.entropy_dim, d))
        return -draws.log_prior - entropy


class NearestNeighbourELBO(_SampleBasedELBO):
    """−ELBO with KL(q‖p) from k-nearest-neighbour distances to prior samples.

    Args:
        k: neighbour order.
        prior_samples: number of prior draws per step (default 16·S; more lowers the bias).
        kl_weight, num_particles: as for :class:`~hyperbayes.inference.ELBO`; S ≥ k + 1.
        allow_degenerate: accept a generator with noise_dim < D (see
            :meth:`_SampleBasedELBO.check_coverage`); refused otherwise.
    """

    def __init__(self, k: int = 1, prior_samples: int | None = None, *, kl_weight: float = 1.0,
                 num_particles: int = 8, allow_degenerate: bool = False):
        super().__init__(kl_weight=kl_weight, num_particles=num_particles,
                         allow_degenerate=allow_degenerate)
        if prior_samples is not None and (isinstance(prior_samples, bool) or not isinstance(
                prior_samples, int) or prior_samples <= k):
            raise ValueError(f"prior_samples must be an integer above k={k} (or None: 16·S), "
                             f"got {prior_samples!r}")
        self.k = k
        self.prior_samples = prior_samples

    def draw(self, model, guide, *args, **kwargs):
        """As :meth:`_SampleBasedELBO.draw`, without the prior density (not needed)."""
        return super().draw(model, guide, *args, with_log_prior=False, **kwargs)

    def divergence(self, draws, model, guide):
        """The Wang–Kulkarni–Verdú estimate against fresh prior samples."""
        count = self.prior_samples if self.prior_samples is not None else 16 * self.num_particles
        prior = _prior_samples(guide, count, draws.samples.device).to(draws.samples.dtype)
        return kl_nearest_neighbour(draws.samples, prior, self.k)


class AdversarialELBO(_SampleBasedELBO):
    """−ELBO with KL(q‖p) ≈ E_q[T(w)], T a discriminator log density ratio (Bayes by Hypernet).

    Every call first updates T on fresh detached q samples against fresh prior samples
    (``discriminator_steps`` Adam steps; ``pretrain_steps`` more on the first call), then
    returns the generator's loss −E_q[log p(y | w)] + β·E_q[T(w)] with T frozen: the two-step
    update of the paper's Eqs. 4–5.

    Args:
        discriminator: a :class:`~hyperbayes.inference.estimators.DensityRatioDiscriminator`
            (default: built on the first call, of the given ``kind``).
        kind: what the default discriminator sees: ``"coordinate"`` (default; one logit per
            generated scalar, conditioned on where q's marginal at that scalar sits and on its
            site, so a collapsing posterior is seen), ``"joint"`` (one MLP over all D scalars)
            or ``"pooled"`` (one logit per scalar from its value alone, as the paper's v1 code
            did: it compares only the pooled marginal of all D scalars with the prior and cannot
            see a collapse). See
            :class:`~hyperbayes.inference.estimators.DensityRatioDiscriminator`.
        hidden_sizes: hidden widths of the default discriminator.
        discriminator_steps: T updates per generator step.
        pretrain_steps: T updates before the first generator step (paper: 300).
        discriminator_lr: Adam learning rate of T.
        discriminator_batch: q and prior samples per T update (default 16).
        kl_weight, num_particles: as for :class:`~hyperbayes.inference.ELBO` (S ≥ 1 here).
        allow_degenerate: accept a generator with noise_dim < D (see
            :meth:`_SampleBasedELBO.check_coverage`); refused otherwise.
    """

    min_particles = 1

    def __init__(self, discriminator: DensityRatioDiscriminator | None = None, *,
                 kind: str = "coordinate", hidden_sizes: Sequence[int] | None = None,
                 discriminator_steps: int = 1, pretrain_steps: int = 300,
                 discriminator_lr: float = 1e-3, discriminator_batch: int = 16,
                 kl_weight: float = 1.0, num_particles: int = 1,
                 allow_degenerate: bool = False):
        super().__init__(kl_weight=kl_weight, num_particles=num_particles,
                         allow_degenerate=allow_degenerate)
        if discriminator_steps < 0 or pretrain_steps < 0 or discriminator_batch < 1:
            raise ValueError("need discriminator_steps ≥ 0, pretrain_steps ≥ 0 and "
                             "discriminator_batch ≥ 1")
        self.discriminator = discriminator
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.hidden_sizes = kind, hidden_sizes
        self.discriminator_steps, self.pretrain_steps = discriminator_steps, pretrain_steps
        self.discriminator_lr, self.discriminator_batch = discriminator_lr, discriminator_batch
        self._optimizer = None
        self._losses: list[float] = []
        self._pending_losses: list[torch.Tensor] = []

    # recorded losses wait on the device and are read back in blocks: a float per update would
    # make a GPU wait for the host at every discriminator step
    _PENDING_LIMIT = 256
    # q and prior samples for several updates are drawn in one pass, up to this many scalars
    _DRAW_LIMIT = 1 << 22

    @property
    def discriminator_losses(self) -> list[float]:
        """The discriminator's logistic loss at every update so far, oldest first."""
        self._flush_losses()
        return self._losses

    def _flush_losses(self) -> None:
        if self._pending_losses:
            self._losses.extend(torch.stack(self._pending_losses).tolist())
            self._pending_losses.clear()

    def state_dict(self) -> dict:
        """The discriminator's parameters, its optimizer's state and its loss history (empty
        before the first step), so that a checkpoint resumes exactly."""
        if self.discriminator is None or self._optimizer is None:
            return {}
        return {"discriminator": self.discriminator.state_dict(),
                "optimizer": self._optimizer.state_dict(),
                "losses": self.discriminator_losses}

    def load_state_dict(self, state: dict, guide, device) -> None:
        """Restore :meth:`state_dict` (building the discriminator for ``guide`` on ``device``)."""
        if not state:
            return
        self._ready(guide, device)
        self.discriminator.load_state_dict(state["discriminator"])
        self._optimizer.load_state_dict(state["optimizer"])
        self._losses, self._pending_losses = list(state["losses"]), []

    def draw(self, model, guide, *args, **kwargs):
        """As :meth:`_SampleBasedELBO.draw`, without the prior density (T replaces it)."""
        return super().draw(model, guide, *args, with_log_prior=False, **kwargs)

    def _ready(self, guide, device) -> DensityRatioDiscriminator:
        """The discriminator on ``device`` with its optimizer (built on first use)."""
        if self.discriminator is None:
            self.discriminator = DensityRatioDiscriminator(
                None if self.kind == "pooled" else guide.num_generated, self.hidden_sizes,
                kind=self.kind, groups=([s.numel for s in guide.generated_sites]
                                        if self.kind == "coordinate" else None))
        self.discriminator.to(device)
        if self._optimizer is None:
            self._optimizer = make_adam(self.discriminator.parameters(),
                                        lr=self.discriminator_lr)
        return self.discriminator

    def update_discriminator(self, guide, steps: int, device) -> None:
        """``steps`` Adam updates of T, each on its own fresh batch of q and prior samples (the
        generator untouched).

        The generator does not change during these updates, so the q batches of several updates
        are drawn together in one pass of the generator (as are the prior batches): the same
        distribution as drawing them one update at a time, with less per-update overhead.
        """
        disc = self._ready(guide, device)
        disc.requires_grad_(True)
        batch = self.discriminator_batch
        per_draw = max(1, min(steps, self._DRAW_LIMIT // (batch * guide.num_generated)))
        done = 0
        while done < steps:
            chunk = min(per_draw, steps - done)
            with torch.no_grad():
                qs = guide.sample_generated(chunk * batch)
            ps = _prior_samples(guide, chunk * batch, device).to(qs.dtype)
            for q, p in zip(qs.split(batch), ps.split(batch), strict=True):
                self._optimizer.zero_grad()
                loss = disc._loss(q, p)  # samples of our own making: no input checks
                loss.backward()
                self._optimizer.step()
                self._pending_losses.append(loss.detach())
            done += chunk
            if len(self._pending_losses) >= self._PENDING_LIMIT:
                self._flush_losses()
        self._optimizer.zero_grad()  # no stale gradients left on T

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Update T, then return the generator's loss with T frozen."""
        _check_implicit(guide)
        self.check_coverage(guide)  # before the discriminator's pretraining
        device = guide.offset.device if hasattr(guide, "offset") else next(
            guide.parameters()).device
        first = self._optimizer is None
        steps = self.discriminator_steps + (self.pretrain_steps if first else 0)
        if self.kl_weight != 0 or first:
            self.update_discriminator(guide, steps, device)
        return super().differentiable_loss(model, guide, *args, **kwargs)

    def divergence(self, draws, model, guide):
        """E_q[T(w)] with T's parameters frozen (gradients reach the generator only)."""
        disc = self._ready(guide, draws.samples.device)
        disc.requires_grad_(False)
        return disc._log_ratio(draws.samples).mean()


class DiversityObjective(_SampleBasedELBO):
    """λ·E_q[mean loss] − Ĥ(gauge(w)) (*Generating Neural Networks with Neural Networks*).

    The mean loss is the negative log-likelihood averaged over the minibatch and the S samples;
    Ĥ the Kozachenko–Leonenko entropy of the S generated weight vectors after gauge fixing
    (:func:`~hyperbayes.models.gauge.gauge_fix`), in the dimension of the manifold the fixed
    weights lie on (D less :func:`~hyperbayes.models.gauge.gauge_constraints`, and at most what
    the generator spans). The paper's objective has no prior term;
    with λ = N (the dataset size), ``gauge=False`` and a flat prior it is exactly the negative
    :class:`EntropyELBO`; the paper uses λ = 1000 on MNIST. ``with_prior=True`` adds the
    model's prior, λ·E_q[mean loss] − Ĥ − E_q[log p(w)], which with λ = N and ``gauge=False``
    is the negative :class:`EntropyELBO` under that prior: without a prior, weight directions
    the data do not constrain (a ReLU net has many) spread without bound, so comparisons with
    a posterior under a proper prior (NUTS) need it.

    Args:
        lam: λ; None for the dataset size N (the ELBO's weighting).
        gauge: gauge-fix the samples before the entropy estimate (the net must be an MLP or CNN
            with a ReLU-like activation and every parameter generated).
        k, entropy_dim: as for :class:`EntropyELBO`.
        kl_weight: multiplies −Ĥ (and, with a prior, the prior terms; anneal it with
            ``fit(kl_schedule=...)``).
        num_particles: S, the batch of sampled nets per step (paper: 32).
        with_prior: add −E_q[log p(w)] under the model's prior, and −log p(ŵ) of the sites the
            guide point-estimates (a guide that generates only some sites); default False, the
            paper's objective, with no prior term for any site (point estimates are then
            maximum likelihood).
        allow_degenerate: accept a generator with noise_dim < D (see
            :meth:`_SampleBasedELBO.check_coverage`); refused otherwise.
    """

    def __init__(self, lam: float | None = None, *, gauge: bool = True, k: int = 1,
                 entropy_dim: int | None = None, kl_weight: float = 1.0, num_particles: int = 32,
                 with_prior: bool = False, allow_degenerate: bool = False):
        super().__init__(kl_weight=kl_weight, num_particles=num_particles,
                         allow_degenerate=allow_degenerate)
        if lam is not None and not lam > 0:
            raise ValueError(f"lam must be positive (or None for the dataset size), got {lam}")
        self.lam, self.gauge, self.k, self.entropy_dim = lam, gauge, k, entropy_dim
        self.with_prior = bool(with_prior)

    def __repr__(self):
        return (f"DiversityObjective(lam={self.lam}, gauge={self.gauge}, k={self.k}, "
                f"num_particles={self.num_particles}, with_prior={self.with_prior})")

    def draw(self, model, guide, *args, **kwargs):
        """As :meth:`_SampleBasedELBO.draw`; the prior density only ``with_prior``."""
        return super().draw(model, guide, *args, with_log_prior=self.with_prior, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """λ·(mean negative log-likelihood) − β·Ĥ(gauge(w)) [− β·E_q[log p(w)]]."""
        draws = self.draw(model, guide, *args, **kwargs)
        samples = draws.samples
        dim = samples.shape[1]
        if self.gauge:
            centre = model.task == "classification"
            fixed = gauge_fix(draws.values, model.net, center_output_bias=centre)
            samples = guide.flatten(fixed, self.num_particles)
            # gauge-fixed weights lie on a manifold with one dimension less per constraint
            dim -= gauge_constraints(model.net, center_output_bias=centre)
        entropy = entropy_kl(samples, self.k, _entropy_dim(guide, self.entropy_dim, dim))
        if self.lam is None:
            data_term = -draws.log_likelihood  # = N · mean NLL
        else:
            data_term = -self.lam * draws.mean_log_likelihood
        if self.with_prior:  # the prior of every site, generated and point-estimated
            divergence = -entropy - draws.log_prior + draws.point_penalty
        else:  # the paper's: no prior term for any site
            divergence = -entropy
        return data_term + self.kl_weight * divergence
