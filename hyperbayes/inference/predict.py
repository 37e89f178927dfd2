"""Vectorized Monte Carlo prediction: S posterior samples evaluated in one batched pass."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field

import pyro
import pyro.poutine as poutine
import torch

from .checks import check_count, check_inputs, model_dtype

__all__ = ["Prediction", "sample_posterior", "sample_prior", "predict", "predict_from_samples",
           "eval_mode"]


@dataclass
class Prediction:
    """Monte Carlo predictions of a BNN at N inputs.

    Attributes:
        outputs: raw net outputs for each of S posterior samples, (S, N, out): logits for
            classification, function values f for regression.
        task: ``"regression"`` or ``"classification"``.
        logits: log class probabilities after the likelihood's clipping (classification).
        noise_std: the observation noise σ, a scalar or one per sample (S,) (regression).
    """

    outputs: torch.Tensor
    task: str
    logits: torch.Tensor | None = None
    noise_std: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        """S, the number of posterior samples."""
        return self.outputs.shape[0]

    @property
    def probs(self) -> torch.Tensor:
        """Per-sample class probabilities (S, N, C)."""
        if self.task != "classification":
            raise AttributeError("probs is defined for classification predictions")
        return self.logits.softmax(-1)

    @property
    def f(self) -> torch.Tensor:
        """Per-sample function values (S, N) of a single-output regression net."""
        if self.task != "regression":
            raise AttributeError("f is defined for regression predictions")
        return self.outputs[..., 0]

    def mean(self) -> torch.Tensor:
        """Predictive mean: E[f] (N,) for regression, mean class probabilities (N, C) otherwise."""
        return self.f.mean(0) if self.task == "regression" else self.probs.mean(0)

    def std(self, include_noise: bool = False) -> torch.Tensor:
        """Predictive standard deviation of f (N,), optionally with the noise in quadrature:
        the spread of the S-sample mixture (divided by S, as
        :func:`~hyperbayes.inference.metrics.predictive_mean_std`; one sample has 0)."""
        var = self.f.var(0, correction=0)
        if include_noise and self.noise_std is not None:
            var = var + (self.noise_std.double() ** 2).mean().to(var.dtype)
        return var.sqrt()

    def to(self, device) -> Prediction:
        """A copy with every tensor on ``device``."""

        def move(t):
            return t.to(device) if torch.is_tensor(t) else t

        return Prediction(move(self.outputs), self.task, move(self.logits), move(self.noise_std),
                          {k: move(v) for k, v in self.extras.items()})


@contextlib.contextmanager
def eval_mode(module):
    """``module`` (a model or guide) in eval mode for the block, its training mode restored
    afterwards: normalization layers use their running statistics, and guides that build a
    posterior after training (Laplace, SWAG) draw from it."""
    # every submodule's own flag, so that a layer the user froze in eval mode stays so
    flags = ([(m, m.training) for m in module.modules()] if hasattr(module, "modules")
             else [])
    was_training = getattr(module, "training", False)
    if was_training:
        module.eval()
    try:
        yield module
    finally:
        if was_training:
            module.train()
            for m, training in flags:
                m.training = training


def sample_posterior(model, guide, num_samples: int, *args, **kwargs) -> dict[str, torch.Tensor]:
    """Draw ``num_samples`` joint samples of every latent site of ``model`` in one pass.

    The guide runs once under a ``pyro.plate`` of size S, and ``model.sample_params`` is replayed
    against it under the same plate, so sites the guide does not cover (e.g. weights drawn from a
    hierarchical prior given guided codes) are drawn from the model, vectorized.
    Returns ``{site: tensor of shape (S, *site_shape)}``.
    """
    with torch.no_grad(), eval_mode(guide), poutine.block(), pyro.plate(
            "_mc_samples", num_samples, dim=-1):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        params = poutine.replay(model.sample_params, trace=guide_trace)()
    # detached: a point-mass guide's draw is its parameter itself, which must not leak out
    return {name: value.detach() for name, value in params.items()}


def sample_prior(model, num_samples: int) -> dict[str, torch.Tensor]:
    """Draw ``num_samples`` joint samples of every latent site from the prior, in one pass.

    With :func:`predict_from_samples` this gives the prior predictive.
    """
    with torch.no_grad(), poutine.block(), pyro.plate("_mc_samples", num_samples, dim=-1):
        return model.sample_params()


def _expand_samples(params, specs, num_samples):
    """Make every parameter carry the sample dim (S, ...) (expanding shared ones, no copy)."""
    out = {}
    for name, value in params.items():
        ndim = len(specs[name].shape) if name in specs else 0
        if value.dim() == ndim:
            value = value.expand(num_samples, *value.shape)
        out[name] = value
    return out


def predict_from_samples(model, samples: dict[str, torch.Tensor], x: torch.Tensor, *,
                         batch_size: int | None = 2048,
                         linearize_at: dict[str, torch.Tensor] | None = None) -> Prediction:
    """Evaluate the model's net at ``x`` for given parameter samples ``{site: (S, ...)}``.

    Inputs are processed in chunks of ``batch_size`` (all S samples at once per chunk), so
    memory stays bounded on large test sets. Used for guide samples and NUTS draws alike.
    With ``linearize_at`` ``{site: ŵ}`` the net is linearized there: each sample w gives
    f(x; ŵ) + J_ŵ(x)(w − ŵ) (the GLM predictive of a Laplace approximation).
    """
    x = check_inputs(x, dtype=next(iter(samples.values())).dtype if samples else None)
    return _evaluate(model, samples, x, batch_size, linearize_at)


def _linearized_net(model, around: dict[str, torch.Tensor]):
    """The net linearized in its parameters at ``around`` ``{site: value}`` (one value per
    site, no sample dimension): f(x; ŵ) + J_ŵ(x) (w − ŵ) for each sample w, one forward-mode
    pass (``torch.func.jvp``) over all samples at once."""

    def net(params: dict[str, torch.Tensor], chunk: torch.Tensor) -> torch.Tensor:
        # forward-mode duals need their own memory: expanded views are materialized
        base = {k: (around[k].to(v).expand_as(v) if k in around else v).contiguous().clone()
                for k, v in params.items()}
        tangents = {k: params[k] - base[k] for k in params}
        with warnings.catch_warnings():
            # torch loads its forward-mode decompositions through torch.jit.script on first use
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                                    category=DeprecationWarning)
            value, change = torch.func.jvp(lambda p: model.net(p, chunk), (base,), (tangents,))
        return value + change

    return net


def _evaluate(model, samples: dict[str, torch.Tensor], x: torch.Tensor,
              batch_size: int | None, around: dict[str, torch.Tensor] | None = None
              ) -> Prediction:
    """:func:`predict_from_samples` on inputs ``x`` already checked; with ``around``, the net
    linearized there (:func:`_linearized_net`)."""
    specs = model.net.param_specs
    missing = sorted(set(specs) - set(samples))
    if missing:
        raise KeyError(f"samples are missing parameters {missing}")
    batched = [v.shape[0] for k, v in samples.items()
               if k in specs and v.dim() > len(specs[k].shape)]
    if not batched:
        raise ValueError("no parameter in samples carries a leading sample dimension")
    num_samples = batched[0]
    params = _expand_samples({k: samples[k] for k in specs}, specs, num_samples)
    device = next(iter(params.values())).device
    x = x.to(device)
    chunks = [x] if not batch_size or len(x) <= batch_size else torch.split(x, batch_size)
    # in eval mode, normalization layers use their running statistics
    with torch.no_grad(), eval_mode(model):
        net = model.net if around is None else _linearized_net(model, around)
        outputs = torch.cat([net(params, chunk) for chunk in chunks], dim=-2)
    likelihood = model.likelihood
    if likelihood.task == "classification":
        return Prediction(outputs, "classification", logits=likelihood.logits(outputs))
    latents = {k: v for k, v in samples.items() if k not in specs}
    noise = likelihood.noise_scale(latents, outputs)
    return Prediction(outputs, "regression", noise_std=noise.reshape(-1) if noise.dim() else noise)


def _merge(parts: list[Prediction]) -> Prediction:
    """Concatenate predictions over the sample dimension."""
    if len(parts) == 1:
        return parts[0]

    def cat(name):
        values = [getattr(p, name) for p in parts]
        if values[0] is None:
            return None
        if values[0].dim() == 0:
            return values[0]
        return torch.cat(values)

    return Prediction(cat("outputs"), parts[0].task, cat("logits"), cat("noise_std"))


def predict(model, guide, x: torch.Tensor, num_samples: int = 100, *,
            batch_size: int | None = 2048, max_sample_floats: int = 20_000_000) -> Prediction:
    """Posterior predictive of ``model`` under ``guide`` at inputs ``x`` with S MC samples.

    Weight samples are drawn by vectorized guide calls and evaluated in batched passes (no Python
    loop over single samples). A guide whose predictive is the linearized net (the Laplace
    approximation's GLM predictive, ``LaplaceGuide(predictive="glm")``) says so through
    ``linearize_at()``, which returns the point ŵ; each draw w is then evaluated as
    f(x; ŵ) + J_ŵ(x)(w − ŵ). So that S sampled copies of a large net never exhaust memory, the
    samples are drawn in groups holding at most ``max_sample_floats`` parameter values (all S at
    once for small nets; ~15 at a time for a 1.27M-parameter MLP; a multiple of a guide's
    ``sample_period``, e.g. an ensemble's K members, so that every group draws each member
    alike), and inputs in chunks of ``batch_size``.
    """
    check_count("num_samples", num_samples)
    x = check_inputs(x, dtype=model_dtype(model))
    # a prior that computes while sampling (the MetaPrior's hyperprior) says how many floats
    # it holds per parameter
    per_sample = max(1, model.net.num_params) * getattr(
        getattr(model, "prior", None), "work_per_param", 1)
    group = max(1, min(num_samples, max_sample_floats // per_sample))
    period = int(getattr(guide, "sample_period", 1))  # e.g. an ensemble's K members
    if period > 1 and group < num_samples:
        group = max(period, group - group % period)
    linearize_at = getattr(guide, "linearize_at", None)
    around = linearize_at() if callable(linearize_at) else None
    parts = []
    for start in range(0, num_samples, group):
        samples = sample_posterior(model, guide, min(group, num_samples - start))
        # x checked once, above
        parts.append(_evaluate(model, samples, x, batch_size, around))
    return _merge(parts)
