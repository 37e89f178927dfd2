"""Predictive-performance, calibration, uncertainty and OOD-detection metrics for MC predictions."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "PROB_ATOL",
    "predictive_probs",
    "accuracy",
    "nll",
    "brier",
    "ece",
    "reliability_bins",
    "predictive_entropy",
    "max_probability",
    "variation_ratio",
    "mean_std",
    "bald",
    "majority_vote",
    "disagreement",
    "OOD_SCORES",
    "ood_scores",
    "ood_auc",
    "rmse",
    "gaussian_log_likelihood",
    "predictive_mean_std",
    "classification_report",
    "regression_report",
]

#: Absolute tolerance on ``|sum_c p_snc - 1|`` and on the [0, 1] range of probabilities.
PROB_ATOL = 1e-4

#: Names accepted by :func:`ood_scores`.
OOD_SCORES = ("entropy", "max_prob", "mean_std", "bald")

# ---------------------------------------------------------------------------------------------
# Input conversion and validation (private)
# ---------------------------------------------------------------------------------------------


def _as_tensor(x, name: str) -> torch.Tensor:
    """Convert ``x`` (tensor, ndarray, list, scalar) to a tensor; floats keep their dtype."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        arr = np.asarray(x)
        if not arr.flags.writeable:  # torch warns on non-writable buffers
            arr = arr.copy()
        return torch.as_tensor(arr)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be array-like convertible to a tensor: {exc}") from exc


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _check_finite(x: torch.Tensor, name: str) -> None:
    if x.is_floating_point() or x.is_complex():
        bad = ~torch.isfinite(x.detach())
        if bool(bad.any()):
            n_nan = int(torch.isnan(x.detach()).sum())
            n_inf = int(bad.sum()) - n_nan
            raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf)")


def _check_probs(probs, name: str = "probs") -> torch.Tensor:
    """Validate MC class probabilities of shape (S, N, C); return a float tensor."""
    p = _as_float(_as_tensor(probs, name))
    if p.ndim != 3:
        hint = f" (for a single sample use {name}[None])" if p.ndim == 2 else ""
        raise ValueError(
            f"{name} must have shape (S, N, C) = (samples, examples, classes), "
            f"got shape {tuple(p.shape)}{hint}"
        )
    s, n, c = p.shape
    if s < 1 or n < 1 or c < 1:
        raise ValueError(f"{name} must be non-empty in every dimension, got shape {tuple(p.shape)}")
    _check_finite(p, name)
    pd = p.detach()
    if bool((pd < -PROB_ATOL).any()) or bool((pd > 1 + PROB_ATOL).any()):
        raise ValueError(
            f"{name} must lie in [0, 1]; got min {pd.min().item():.6g}, max {pd.max().item():.6g}"
        )
    dev = (pd.sum(dim=-1) - 1).abs().max().item()
    if dev > PROB_ATOL:
        raise ValueError(
            f"{name} must sum to 1 over the class dimension (tolerance {PROB_ATOL:g}); "
            f"max |sum - 1| = {dev:.6g}"
        )
    return p


def _check_labels(y, n: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """Validate integer labels of shape (N,) with values in [0, C); return a long tensor."""
    t = _as_tensor(y, "y")
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise ValueError(f"y must have shape (N,), got shape {tuple(t.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"length mismatch: y has {t.shape[0]} labels but probs has N={n} examples")
    if t.is_floating_point():
        _check_finite(t, "y")
        if bool((t != t.round()).any()):
            raise ValueError("y must contain integer class labels, got non-integral values")
    elif t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"y must contain integer class labels, got dtype {t.dtype}")
    t = t.to(device=device, dtype=torch.long)
    if n > 0 and (bool((t < 0).any()) or bool((t >= num_classes).any())):
        raise ValueError(
            f"labels out of range: y must lie in [0, {num_classes - 1}] for C={num_classes} "
            f"classes, got min {t.min().item()}, max {t.max().item()}"
        )
    return t


def _check_probs_labels(probs, y) -> tuple[torch.Tensor, torch.Tensor]:
    p = _check_probs(probs)
    _, n, c = p.shape
    return p, _check_labels(y, n, c, p.device)


def _check_function_samples(f) -> torch.Tensor:
    """Validate regression function samples of shape (S, N) or (S, N, 1); return (S, N)."""
    t = _as_float(_as_tensor(f, "f"))
    if t.ndim == 3 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.ndim != 2:
        raise ValueError(
            f"f must have shape (S, N) or (S, N, 1) = (samples, examples[, 1]), "
            f"got shape {tuple(_as_tensor(f, 'f').shape)}"
        )
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"f must be non-empty, got shape {tuple(t.shape)}")
    _check_finite(t, "f")
    return t


def _check_targets(y, n: int, like: torch.Tensor) -> torch.Tensor:
    """Validate regression targets of shape (N,) or (N, 1); return (N,)."""
    t = _as_tensor(y, "y")
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise ValueError(f"y must have shape (N,) or (N, 1), got shape {tuple(t.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"length mismatch: y has {t.shape[0]} targets but f has N={n} examples")
    t = t.to(device=like.device, dtype=like.dtype)
    _check_finite(t, "y")
    return t


def _check_noise_std(noise_std, like: torch.Tensor, strictly_positive: bool) -> torch.Tensor:
    """Validate a noise std and return it as (S, N): a float, one per sample (S,) as
    :attr:`Prediction.noise_std <hyperbayes.inference.Prediction>` holds it, or a tensor
    broadcastable to (S, N) (e.g. (1, N): one per example)."""
    t = _as_tensor(noise_std, "noise_std")
    t = t.to(device=like.device, dtype=like.dtype)
    if t.ndim >= 1 and t.shape[-1] == 1 and t.ndim > like.ndim:
        t = t[..., 0]  # (S, N, 1) / (N, 1)-style trailing singleton, matching f of shape (S, N, 1)
    if t.ndim == 1 and len(t) != 1:  # one per sample, whether or not S happens to equal N
        if len(t) != like.shape[0]:
            raise ValueError(
                f"a 1-d noise_std is one σ per sample (S = {like.shape[0]}), like "
                f"Prediction.noise_std; got {len(t)}"
                + (": for one σ per example pass shape (1, N)" if len(t) == like.shape[-1]
                   else ""))
        t = t.reshape(-1, *([1] * (like.ndim - 1)))
    try:
        shape = torch.broadcast_shapes(t.shape, like.shape)
    except RuntimeError:
        shape = None
    if shape != like.shape:
        raise ValueError(
            f"noise_std of shape {tuple(t.shape)} is not broadcastable to (S, N) = "
            f"{tuple(like.shape)}"
        )
    _check_finite(t, "noise_std")
    td = t.detach()
    if strictly_positive and bool((td <= 0).any()):
        raise ValueError(f"noise_std must be > 0, got min {td.min().item():.6g}")
    if bool((td < 0).any()):
        raise ValueError(f"noise_std must be >= 0, got min {td.min().item():.6g}")
    return t.expand(like.shape)


def _check_scores(x, name: str) -> np.ndarray:
    t = _as_float(_as_tensor(x, name))
    if t.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} must be non-empty")
    _check_finite(t, name)
    return t.detach().cpu().to(torch.float64).numpy()


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the last dim, with 0 log 0 = 0."""
    return -torch.xlogy(p, p).sum(dim=-1)


# ---------------------------------------------------------------------------------------------
# Classification: predictive performance and calibration
# ---------------------------------------------------------------------------------------------


def predictive_probs(probs) -> torch.Tensor:
    """Posterior predictive (BMA) class probabilities p̄_nc = (1/S) Σ_s p_snc.

    Args:
        probs: (S, N, C) per-sample class probabilities from S Monte Carlo weight samples.

    Returns:
        (N, C) tensor.
    """
    return _check_probs(probs).mean(dim=0)


def accuracy(probs, y) -> float:
    """Accuracy of the predictive mean: (1/N) Σ_n 1[argmax_c p̄_nc = y_n].

    Args:
        probs: (S, N, C) MC class probabilities.
        y: (N,) integer labels in [0, C).

    Returns:
        float in [0, 1].
    """
    p, t = _check_probs_labels(probs, y)
    return (p.mean(dim=0).argmax(dim=-1) == t).double().mean().item()


def nll(probs, y, eps: float = 1e-12) -> float:
    """Negative log-likelihood of the predictive mean: −(1/N) Σ_n log max(p̄_{n,y_n}, eps).

    The Monte Carlo average is taken over *probabilities* (log of the mean, i.e. the
    log posterior predictive), not over log-probabilities; by Jensen this is ≤ the mean
    over samples of the per-sample NLL. ``eps`` only guards against log 0.

    Args:
        probs: (S, N, C) MC class probabilities.
        y: (N,) integer labels in [0, C).
        eps: lower clamp on the predictive probability of the true class.

    Returns:
        float ≥ 0 (nats per example).
    """
    p, t = _check_probs_labels(probs, y)
    # in float64: in float16 the eps clamp itself would round to 0
    p_true = p.double().mean(dim=0).gather(-1, t[:, None])[:, 0]
    return -torch.log(p_true.clamp_min(eps)).mean().item()


def brier(probs, y) -> float:
    """Multi-class Brier score: (1/N) Σ_n Σ_c (p̄_nc − 1[c = y_n])²  (not divided by C).

    Args:
        probs: (S, N, C) MC class probabilities.
        y: (N,) integer labels in [0, C).

    Returns:
        float in [0, 2].
    """
    p, t = _check_probs_labels(probs, y)
    pbar = p.mean(dim=0)
    onehot = torch.nn.functional.one_hot(t, pbar.shape[-1]).to(pbar.dtype)
    return (pbar - onehot).pow(2).sum(dim=-1).mean().item()


def reliability_bins(probs, y, num_bins: int = 15) -> dict[str, np.ndarray]:
    """Reliability-diagram statistics on equal-width confidence bins of the predictive mean.

    Confidence is conf_n = max_c p̄_nc, prediction ŷ_n = argmax_c p̄_nc. Bin b (b = 0..B−1)
    is the interval (b/B, (b+1)/B], with bin 0 also containing 0. For each bin:
    count n_b, accuracy acc_b = mean_{n∈b} 1[ŷ_n = y_n], confidence conf_b = mean_{n∈b} conf_n.

    Args:
        probs: (S, N, C) MC class probabilities.
        y: (N,) integer labels in [0, C).
        num_bins: number B ≥ 1 of equal-width bins on [0, 1].

    Returns:
        dict of float64 numpy arrays: ``bin_edges`` (B+1,), ``bin_centers`` (B,),
        ``accuracy`` (B,), ``confidence`` (B,) (both NaN for empty bins), ``counts`` (B,) int64.
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int | np.integer) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    p, t = _check_probs_labels(probs, y)
    conf, pred = p.detach().mean(dim=0).max(dim=-1)
    conf = conf.double().cpu()
    correct = (pred.cpu() == t.cpu()).double()
    edges = torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf, edges[1:-1], right=False)  # (lo, hi] semantics
    counts = torch.bincount(idx, minlength=num_bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=num_bins)
    conf_sum = torch.bincount(idx, weights=conf, minlength=num_bins)
    nonempty = counts > 0
    nan = torch.full((num_bins,), float("nan"), dtype=torch.float64)
    acc = torch.where(nonempty, acc_sum / counts.clamp_min(1), nan)
    mean_conf = torch.where(nonempty, conf_sum / counts.clamp_min(1), nan)
    return {
        "bin_edges": edges.numpy(),
        "bin_centers": ((edges[:-1] + edges[1:]) / 2).numpy(),
        "accuracy": acc.numpy(),
        "confidence": mean_conf.numpy(),
        "counts": counts.numpy().astype(np.int64),
    }


def ece(probs, y, num_bins: int = 15) -> float:
    """Expected calibration error: ``Σ_b (n_b / N) |acc_b − conf_b|`` over non-empty bins.

    Bins, acc_b and conf_b are exactly those of :func:`reliability_bins` (equal-width bins
    (b/B, (b+1)/B] on the max predictive probability max_c p̄_nc).

    Args:
        probs: (S, N, C) MC class probabilities.
        y: (N,) integer labels in [0, C).
        num_bins: number of equal-width bins.

    Returns:
        float in [0, 1].
    """
    bins = reliability_bins(probs, y, num_bins=num_bins)
    counts = bins["counts"]
    m = counts > 0
    gap = np.abs(bins["accuracy"][m] - bins["confidence"][m])
    return float(np.sum(counts[m] / counts.sum() * gap))


# ---------------------------------------------------------------------------------------------
# Classification: per-example uncertainty scores (higher = more uncertain, except max_probability)
# ---------------------------------------------------------------------------------------------


def predictive_entropy(probs) -> torch.Tensor:
    """Predictive entropy H[p̄_n] = −Σ_c p̄_nc log p̄_nc (nats, 0 log 0 = 0).

    Args:
        probs: (S, N, C) MC class probabilities.

    Returns:
        (N,) tensor with values in [0, log C].
    """
    return _entropy(_check_probs(probs).mean(dim=0))


def max_probability(probs) -> torch.Tensor:
    """Maximum predictive probability max_c p̄_nc (a *confidence*: higher = more certain).

    Args:
        probs: (S, N, C) MC class probabilities.

    Returns:
        (N,) tensor with values in [1/C, 1].
    """
    return _check_probs(probs).mean(dim=0).max(dim=-1).values


def variation_ratio(probs) -> torch.Tensor:
    """Variation ratio of the predictive mean: 1 − max_c p̄_nc (higher = more uncertain).

    Note: this is computed from the averaged probabilities, not from the mode frequency of
    the S per-sample argmax predictions.

    Args:
        probs: (S, N, C) MC class probabilities.

    Returns:
        (N,) tensor with values in [0, 1 − 1/C].
    """
    return 1.0 - max_probability(probs)


def mean_std(probs) -> torch.Tensor:
    """Mean over classes of the std over samples: (1/C) Σ_c sqrt((1/S) Σ_s (p_snc − p̄_nc)²).

    The std is the population (biased, ddof=0) std, so S = 1 gives 0.

    Args:
        probs: (S, N, C) MC class probabilities.

    Returns:
        (N,) tensor ≥ 0.
    """
    p = _check_probs(probs)
    return p.std(dim=0, correction=0).mean(dim=-1)


BALD_RESOLUTION = 1e-12


def bald(probs) -> torch.Tensor:
    """BALD mutual information I[y; w | x_n] = max(0, H[p̄_n] − (1/S) Σ_s H[p_sn]) in nats.

    Args:
        probs: (S, N, C) MC class probabilities.

    Returns:
        (N,) tensor with values in [0, log C]. Computed in float64, and values below
        ``BALD_RESOLUTION`` (1e-12 nats: float64 round-off of the two entropies) are set to 0,
        so draws that all agree (a point estimate) score exactly 0 instead of round-off that
        would rank inputs at random.
    """
    p = _check_probs(probs)
    p64 = p.double()
    info = _entropy(p64.mean(dim=0)) - _entropy(p64).mean(dim=0)
    return torch.where(info < BALD_RESOLUTION, 0.0, info).to(p.dtype)


# ---------------------------------------------------------------------------------------------
# Out-of-distribution detection
# ---------------------------------------------------------------------------------------------

OODScore = Literal["entropy", "max_prob", "mean_std", "bald"]


def _check_votes(votes, num_classes: int) -> torch.Tensor:
    """Votes as a (K, N) integer tensor of classes in [0, num_classes)."""
    votes = _as_tensor(votes, "votes")
    if votes.dim() != 2 or votes.dtype.is_floating_point or votes.dtype == torch.bool:
        raise ValueError(f"votes must be a (K, N) tensor of class indices, got dtype "
                         f"{votes.dtype} and shape {tuple(votes.shape)}")
    if votes.numel() and (int(votes.min()) < 0 or int(votes.max()) >= num_classes):
        raise ValueError(f"votes must be classes in [0, {num_classes}), got "
                         f"{int(votes.min())} … {int(votes.max())}")
    return votes.long()


def majority_vote(votes, num_classes: int = 10, tie_break=None) -> torch.Tensor:
    """The class most of K nets vote for: votes (K, N) → (N,).

    Ties go to the class with the larger ``tie_break`` score (N, C), e.g. the mean probability;
    without one, to the smaller class index.
    """
    counts = F.one_hot(_check_votes(votes, num_classes), num_classes).sum(0).float()
    if tie_break is not None:
        tie_break = _as_tensor(tie_break, "tie_break").to(counts)
        counts = counts + 1e-3 * tie_break / tie_break.abs().max().clamp_min(1e-12)
    return counts.argmax(-1)


def disagreement(votes, num_classes: int = 10) -> float:
    """Mean over the pairs of K nets of the fraction of inputs on which their classes differ
    (votes (K, N), K ≥ 2): 0 for identical nets, the diversity of an ensemble's members."""
    votes = _check_votes(votes, num_classes)
    k = votes.shape[0]
    if k < 2:
        raise ValueError(f"disagreement needs at least 2 nets, got {k}")
    counts = F.one_hot(votes, num_classes).sum(0).double()  # (N, C)
    agreeing = (counts * (counts - 1) / 2).sum(-1)
    return float(1 - (agreeing / (k * (k - 1) / 2)).mean())


def _uncertainty_score(probs, score: str) -> torch.Tensor:
    if score == "entropy":
        return predictive_entropy(probs)
    if score == "max_prob":
        return variation_ratio(probs)
    if score == "mean_std":
        return mean_std(probs)
    if score == "bald":
        return bald(probs)
    raise ValueError(f"unknown score {score!r}; expected one of {OOD_SCORES}")


def ood_scores(
    in_probs, out_probs, score: OODScore = "entropy"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example uncertainty scores (higher = more uncertain) for in- and OOD inputs.

    ``score`` selects: "entropy" → H[p̄] (:func:`predictive_entropy`); "max_prob" → 1 − max_c p̄
    (:func:`variation_ratio`); "mean_std" → :func:`mean_std`; "bald" → :func:`bald`.

    Args:
        in_probs: (S, N_in, C) MC class probabilities on in-distribution inputs.
        out_probs: (S', N_out, C) MC class probabilities on OOD inputs (same C).
        score: one of ``OOD_SCORES``.

    Returns:
        (in_scores (N_in,), out_scores (N_out,)).
    """
    if score not in OOD_SCORES:
        raise ValueError(f"unknown score {score!r}; expected one of {OOD_SCORES}")
    p_in = _check_probs(in_probs, "in_probs")
    p_out = _check_probs(out_probs, "out_probs")
    if p_in.shape[-1] != p_out.shape[-1]:
        raise ValueError(
            f"class count mismatch: in_probs has C={p_in.shape[-1]}, "
            f"out_probs has C={p_out.shape[-1]}"
        )
    return _uncertainty_score(p_in, score), _uncertainty_score(p_out, score)


def ood_auc(in_scores, out_scores) -> dict[str, float]:
    """Threshold-free OOD-detection metrics from uncertainty scores (higher = more uncertain).

    With labels z = 1 for out-of-distribution and z = 0 for in-distribution examples:

    - ``roc_auc``    = ROC-AUC(z, score), i.e. P(score_out > score_in) (+ ½ P(tie));
      identical whichever class is called positive.
    - ``pr_auc_in``  = average precision with **in-distribution as the positive class**,
      ranked by −score (AUPR-In of Hendrycks & Gimpel, 2017).
    - ``pr_auc_out`` = average precision with **out-of-distribution as the positive class**,
      ranked by score as is (AUPR-Out).

    Papers label these PR+ / PR− inconsistently; map them explicitly by which class is positive.
    This library's tables follow the BHN paper's Table 3, which is consistent only with PR(+) =
    ``pr_auc_in`` and PR(−) = ``pr_auc_out``.
    Computed with ``sklearn.metrics.roc_auc_score`` / ``average_precision_score``.

    Args:
        in_scores: (N_in,) scores on in-distribution inputs.
        out_scores: (N_out,) scores on OOD inputs.

    Returns:
        dict with float values ``roc_auc``, ``pr_auc_in``, ``pr_auc_out``.
    """
    s_in = _check_scores(in_scores, "in_scores")
    s_out = _check_scores(out_scores, "out_scores")
    scores = np.concatenate([s_in, s_out])
    is_out = np.concatenate([np.zeros(s_in.shape[0]), np.ones(s_out.shape[0])])
    return {
        "roc_auc": float(roc_auc_score(is_out, scores)),
        "pr_auc_in": float(average_precision_score(1.0 - is_out, -scores)),
        "pr_auc_out": float(average_precision_score(is_out, scores)),
    }


# ---------------------------------------------------------------------------------------------
# Regression
# ---------------------------------------------------------------------------------------------


def predictive_mean_std(f, noise_std=0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the MC predictive mixture (1/S) Σ_s N(f_sn, σ_sn²).

    mean_n = (1/S) Σ_s f_sn;  std_n = sqrt((1/S) Σ_s (f_sn − mean_n)² + (1/S) Σ_s σ_sn²),
    i.e. the population (ddof=0) spread of the function samples plus the noise in quadrature.

    Args:
        f: (S, N) or (S, N, 1) function samples.
        noise_std: observation-noise std σ ≥ 0, float or tensor broadcastable to (S, N),
            or one per sample (S,) as ``Prediction.noise_std``.

    Returns:
        (mean (N,), std (N,)).
    """
    t = _check_function_samples(f)
    sigma = _check_noise_std(noise_std, t, strictly_positive=False)
    mean = t.mean(dim=0)
    var = t.var(dim=0, correction=0) + sigma.pow(2).mean(dim=0)
    return mean, var.sqrt()


def rmse(f, y) -> float:
    """Root-mean-square error of the predictive mean: sqrt((1/N) Σ_n ((1/S) Σ_s f_sn − y_n)²).

    Args:
        f: (S, N) or (S, N, 1) function samples.
        y: (N,) or (N, 1) targets.

    Returns:
        float ≥ 0.
    """
    t = _check_function_samples(f)
    target = _check_targets(y, t.shape[1], t)
    return (t.mean(dim=0) - target).pow(2).mean().sqrt().item()


def gaussian_log_likelihood(f, y, noise_std) -> float:
    """Average test log-likelihood of the MC Gaussian mixture predictive.

    (1/N) Σ_n log( (1/S) Σ_s N(y_n; f_sn, σ_sn²) ), evaluated as
    (1/N) Σ_n [logsumexp_s log N(y_n; f_sn, σ_sn²) − log S].

    Args:
        f: (S, N) or (S, N, 1) function samples.
        y: (N,) or (N, 1) targets.
        noise_std: observation-noise std σ > 0, float or tensor broadcastable to (S, N),
            or one per sample (S,) as ``Prediction.noise_std``.

    Returns:
        float (nats per example).
    """
    t = _check_function_samples(f)
    target = _check_targets(y, t.shape[1], t)
    sigma = _check_noise_std(noise_std, t, strictly_positive=True)
    log_p = torch.distributions.Normal(t, sigma).log_prob(target.expand_as(t))
    return (torch.logsumexp(log_p, dim=0) - math.log(t.shape[0])).mean().item()


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def classification_report(probs, y, num_bins: int = 15) -> dict[str, float]:
    """Summary classification metrics of the MC predictive mean.

    Args:
        probs: (S, N, C) MC class probabilities.
        y: (N,) integer labels in [0, C).
        num_bins: ECE bins.

    Returns:
        dict with floats ``accuracy`` (:func:`accuracy`), ``nll`` (:func:`nll`),
        ``ece`` (:func:`ece`), ``brier`` (:func:`brier`) and ``mean_predictive_entropy``
        = (1/N) Σ_n H[p̄_n] (:func:`predictive_entropy`).
    """
    p, t = _check_probs_labels(probs, y)
    return {
        "accuracy": accuracy(p, t),
        "nll": nll(p, t),
        "ece": ece(p, t, num_bins=num_bins),
        "brier": brier(p, t),
        "mean_predictive_entropy": predictive_entropy(p).mean().item(),
    }


def regression_report(f, y, noise_std) -> dict[str, float]:
    """Summary regression metrics of the MC predictive.

    Args:
        f: (S, N) or (S, N, 1) function samples.
        y: (N,) or (N, 1) targets.
        noise_std: observation-noise std σ > 0, float or tensor broadcastable to (S, N),
            or one per sample (S,) as ``Prediction.noise_std``.

    Returns:
        dict with floats ``rmse`` (:func:`rmse`) and ``test_log_likelihood``
        (:func:`gaussian_log_likelihood`).
    """
    return {
        "rmse": rmse(f, y),
        "test_log_likelihood": gaussian_log_likelihood(f, y, noise_std),
    }
