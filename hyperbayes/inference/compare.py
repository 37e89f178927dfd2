"""Approximate versus reference posteriors in function space, on a grid of test inputs."""

from __future__ import annotations

import torch

from .predict import Prediction

__all__ = ["compare", "wasserstein1", "in_range_mask"]


def wasserstein1(a: torch.Tensor, b: torch.Tensor, num_quantiles: int = 200) -> torch.Tensor:
    """W₁ between empirical distributions of samples ``a`` (S₁, N) and ``b`` (S₂, N), per column.

    ``W₁ = ∫₀¹ |F_a⁻¹(u) − F_b⁻¹(u)| du``, computed on ``num_quantiles`` midpoint levels, so
    the two sample sizes may differ. Returns (N,).
    """
    levels = (torch.arange(num_quantiles, dtype=torch.float64) + 0.5) / num_quantiles
    qa = torch.quantile(a.double(), levels.to(a.device), dim=0)
    qb = torch.quantile(b.double(), levels.to(b.device), dim=0)
    return (qa - qb).abs().mean(0)


def in_range_mask(x_grid: torch.Tensor, train_range: tuple[float, float]) -> torch.Tensor:
    """True for grid points (first input feature) inside the training inputs' range."""
    lo, hi = train_range
    first = x_grid.reshape(len(x_grid), -1)[:, 0]
    return (first >= lo) & (first <= hi)


def compare(pred: Prediction, reference: Prediction, x_grid: torch.Tensor,
            train_range: tuple[float, float]) -> dict[str, float]:
    """Compare a method's predictive with a reference (NUTS) on the same grid.

    Function space is used because weights are identifiable only up to the net's symmetries.

    Returns:
        ``std_ratio_in_data`` / ``std_ratio_out_of_data``: mean over grid points inside /
        outside ``train_range`` of std_method(f(x)) / std_reference(f(x)) (1 is ideal; < 1 means
        over-confident); ``predictive_distance``: the W₁ distance between the two distributions
        of f(x), averaged over the grid, in the units of y; ``mean_abs_error_of_mean``: the
        average ``|E_method f − E_reference f|``.
    """
    if pred.task != "regression" or reference.task != "regression":
        raise ValueError("compare works on regression predictions (f samples)")
    if pred.f.shape[1] != reference.f.shape[1] or pred.f.shape[1] != len(x_grid):
        raise ValueError(f"predictions cover {pred.f.shape[1]} and {reference.f.shape[1]} points "
                         f"but the grid has {len(x_grid)}")
    f, ref = pred.f.cpu().double(), reference.f.cpu().double()
    inside = in_range_mask(x_grid.cpu(), train_range)
    ratio = f.std(0) / ref.std(0).clamp_min(1e-12)
    out = {
        "std_ratio_in_data": float(ratio[inside].mean()) if inside.any() else float("nan"),
        "std_ratio_out_of_data": float(ratio[~inside].mean()) if (~inside).any() else float(
            "nan"),
        "predictive_distance": float(wasserstein1(f, ref).mean()),
        "mean_abs_error_of_mean": float((f.mean(0) - ref.mean(0)).abs().mean()),
    }
    return out
