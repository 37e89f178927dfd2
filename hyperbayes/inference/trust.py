"""Warnings when a fitted posterior should not be trusted as it is (SVI and NUTS alike)."""

from __future__ import annotations

import math
import warnings

import torch

__all__ = ["PosteriorWarning", "THRESHOLDS", "loss_trend_problem", "spread_collapse_problem",
           "guide_spread", "emit"]

#: when a NUTS run is flagged (Vehtari et al. 2021; Betancourt 2016): any divergence, a rank
#: R-hat above 1.01 for some prediction, a bulk ESS under 100 per chain, an E-BFMI under 0.3
THRESHOLDS = {"max_rhat": 1.01, "min_ess_bulk_per_chain": 100.0, "min_bfmi": 0.3,
              "loss_increase_se": 4.0, "collapsed_fraction": 0.5, "collapsed_ratio": 1e-3}


class PosteriorWarning(UserWarning):
    """A posterior (a NUTS run or a fitted guide) that fails a diagnostic check."""


def emit(messages: list[str], stacklevel: int = 3) -> None:
    """Warn once per message with :class:`PosteriorWarning`."""
    for message in messages:
        warnings.warn(message, PosteriorWarning, stacklevel=stacklevel)


def loss_trend_problem(losses: list[float], fraction: float = 0.2,
                       min_steps: int = 50) -> str | None:
    """A message when the loss rose over the last ``fraction`` of training, else None.

    The last ``fraction`` of the steps is split in two halves; the loss rose when the second
    half's mean exceeds the first's by more than ``THRESHOLDS["loss_increase_se"]`` standard
    errors of the difference (minibatch noise alone rarely does), and by more than 0.1% of its
    size. Runs shorter than ``min_steps`` are not judged.
    """
    if len(losses) < min_steps:
        return None
    tail = torch.tensor(losses[-max(4, int(len(losses) * fraction)):], dtype=torch.float64)
    first, second = tail[:len(tail) // 2], tail[len(tail) // 2:]
    diff = float(second.mean() - first.mean())
    se = math.sqrt(float(first.var()) / len(first) + float(second.var()) / len(second))
    if diff > THRESHOLDS["loss_increase_se"] * se and diff > 1e-3 * abs(float(first.mean())):
        return (f"the loss rose over the last {int(100 * fraction)}% of training (mean "
                f"{float(first.mean()):.4g} → {float(second.mean()):.4g}, "
                f"{diff / max(se, 1e-300):.1f} standard errors): the optimizer is not "
                "converging; lower lr or use a decaying lr_schedule")
    return None


def guide_spread(model, guide, num_samples: int = 16) -> dict[str, torch.Tensor]:
    """The std of each latent coordinate over ``num_samples`` guide draws, ``{site: (numel,)}``
    (drawn without touching the global random streams, so training is unchanged)."""
    from .predict import sample_posterior

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(12345)
        draws = sample_posterior(model, guide, num_samples)
    return {k: v.double().std(0).reshape(-1).cpu() for k, v in draws.items()
            if v.dim() and v.is_floating_point()}


def spread_collapse_problem(before: dict[str, torch.Tensor],
                            after: dict[str, torch.Tensor]) -> str | None:
    """A message when the guide's spread collapsed during training, else None.

    ``before`` / ``after``: :func:`guide_spread` at the start and the end. Collapsed: on more
    than half of the coordinates that had spread at the start, the std fell below 10⁻³ of it
    (an implicit generator that learned to ignore its noise, an entropy estimate run away).
    Sites without spread at the start (point estimates) are not judged.
    """
    ratios = []
    for name, start in before.items():
        end = after.get(name)
        if end is None or end.shape != start.shape:
            continue
        keep = start > 0
        ratios.append(end[keep] / start[keep])
    ratios = torch.cat(ratios) if ratios else torch.empty(0)
    if not len(ratios):
        return None
    collapsed = float((ratios < THRESHOLDS["collapsed_ratio"]).double().mean())
    if collapsed > THRESHOLDS["collapsed_fraction"]:
        return (f"the guide's spread collapsed: on {100 * collapsed:.0f}% of the weights its "
                f"std fell below {THRESHOLDS['collapsed_ratio']:g} of its value at the start "
                "of training; it behaves as a point estimate (check the KL / entropy estimate "
                "and the noise dimension)")
    return None
