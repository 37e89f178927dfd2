"""Toy data sets generated in code from a seed: cubic, Blundell sinusoid, product, moons, gmm2d."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .core import Dataset, DatasetError, Split

__all__ = [
    "cubic",
    "blundell",
    "product",
    "moons",
    "gmm2d",
    "gmm2d_log_density",
]


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise DatasetError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_nonneg_float(value: object, name: str) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out) or out < 0:
        raise DatasetError(f"{name} must be a finite number >= 0, got {value!r}")
    return out


def _generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise DatasetError(f"seed must be an integer, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


def _regression_toy(
    name: str,
    seed: int,
    n_train: int,
    n_test: int,
    train_range: tuple[float, float],
    grid_range: tuple[float, float],
    noise_std: float,
    simulate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    extra_info: dict | None = None,
) -> Dataset:
    """Shared recipe: x_train ~ U(train_range); test x = a dense grid; y = simulate(x, noise)."""
    n_train = _check_positive_int(n_train, "n_train")
    n_test = _check_positive_int(n_test, "n_test")
    g = _generator(seed)
    lo, hi = train_range
    x_train = lo + (hi - lo) * torch.rand(n_train, 1, generator=g)
    eps_train = noise_std * torch.randn(n_train, 1, generator=g)
    grid = torch.linspace(grid_range[0], grid_range[1], n_test).reshape(-1, 1)
    eps_test = noise_std * torch.randn(n_test, 1, generator=g)
    train = Split(x_train, simulate(x_train, eps_train))
    test = Split(grid, simulate(grid, eps_test))
    info = {
        "grid": grid,
        "true_function": simulate(grid, torch.zeros_like(grid)),
        "train_range": (float(lo), float(hi)),
        "grid_range": (float(grid_range[0]), float(grid_range[1])),
        "noise_std": float(noise_std),
        "seed": int(seed),
    }
    info.update(extra_info or {})
    return Dataset(name, "regression", train, None, test, input_shape=(1,), info=info)


def cubic(
    seed: int = 0, *, n_train: int = 20, n_test: int = 200, noise_std: float = 3.0
) -> Dataset:
    """Hernández-Lobato & Adams' cubic: x ~ U[-4, 4], y = x³ + N(0, noise_std²), noise_std = 3.

    The test split is a grid of ``n_test`` points on [-6, 6] with noisy targets drawn the same
    way; ``info["true_function"]`` holds the noise-free x³ on that grid.
    """
    noise_std = _check_nonneg_float(noise_std, "noise_std")
    return _regression_toy(
        "cubic", seed, n_train, n_test, (-4.0, 4.0), (-6.0, 6.0), noise_std,
        lambda x, eps: x**3 + eps,
    )


def blundell(
    seed: int = 0, *, n_train: int = 100, n_test: int = 200, noise_std: float = 0.02
) -> Dataset:
    """Blundell et al.'s sinusoid: x ~ U(0, 0.5), ε ~ N(0, 0.02²) and
    y = x + 0.3 sin(2π(x + ε)) + 0.3 sin(4π(x + ε)) + ε.

    The test split is a grid of ``n_test`` points on [-0.5, 1.5] (the HMC comparison range).
    """
    noise_std = _check_nonneg_float(noise_std, "noise_std")

    def simulate(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (
            x
            + 0.3 * torch.sin(2 * math.pi * (x + eps))
            + 0.3 * torch.sin(4 * math.pi * (x + eps))
            + eps
        )

    return _regression_toy(
        "blundell", seed, n_train, n_test, (0.0, 0.5), (-0.5, 1.5), noise_std, simulate
    )


def product(
    seed: int = 0, *, n_train: int = 20, n_test: int = 200, noise_std: float = 0.1
) -> Dataset:
    """Over-parametrized identity for the model ŷ = a·b·x: x ~ U[-1, 1], y = x + N(0, noise_std²).

    The posterior over (a, b) has two modes, a = b = 1 and a = b = -1. Test: a grid on [-2, 2].
    """
    noise_std = _check_nonneg_float(noise_std, "noise_std")
    return _regression_toy(
        "product", seed, n_train, n_test, (-1.0, 1.0), (-2.0, 2.0), noise_std,
        lambda x, eps: x + eps,
    )


def _sub_seeds(seed: int, n: int) -> list[int]:
    """Derive ``n`` independent integer seeds from ``seed`` (for APIs that take a random_state)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise DatasetError(f"seed must be an integer, got {seed!r}")
    if seed < 0:
        raise DatasetError(f"seed must be >= 0 for this data set, got {seed}")
    children = np.random.SeedSequence(int(seed)).spawn(n)
    return [int(c.generate_state(1)[0]) for c in children]


def moons(
    seed: int = 0, *, n_train: int = 1000, n_test: int = 1000, noise: float = 0.2
) -> Dataset:
    """Two interleaving half moons (scikit-learn ``make_moons``, noise 0.2), 2 classes.

    Train and test are drawn with different random states derived from ``seed``.
    """
    from sklearn.datasets import make_moons

    n_train = _check_positive_int(n_train, "n_train")
    n_test = _check_positive_int(n_test, "n_test")
    noise = _check_nonneg_float(noise, "noise")
    s_train, s_test = _sub_seeds(seed, 2)

    def draw(n: int, state: int) -> Split:
        x, y = make_moons(n_samples=n, noise=noise, random_state=state)
        return Split(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64))

    return Dataset(
        "moons",
        "classification",
        draw(n_train, s_train),
        None,
        draw(n_test, s_test),
        num_classes=2,
        input_shape=(2,),
        info={"noise": noise, "seed": int(seed)},
    )


def gmm2d(
    seed: int = 0,
    *,
    n_train: int = 1000,
    n_test: int = 1000,
    n_components: int = 6,
    radius: float = 2.0,
    std: float = 0.2,
) -> Dataset:
    """A 2-D isotropic Gaussian mixture: ``n_components`` equal-weight components with means on a
    circle of ``radius`` and standard deviation ``std`` (task ``"density"``).

    ``x`` holds samples (N, 2) and ``y`` the int64 component each was drawn from. ``info`` holds
    ``means`` (K, 2), ``std`` and ``weights`` (K,) for :func:`gmm2d_log_density`.
    """
    n_train = _check_positive_int(n_train, "n_train")
    n_test = _check_positive_int(n_test, "n_test")
    k = _check_positive_int(n_components, "n_components")
    radius = _check_nonneg_float(radius, "radius")
    std = _check_nonneg_float(std, "std")
    if std == 0:
        raise DatasetError("std must be > 0 for gmm2d")
    angles = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    means = (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).to(torch.float32)
    weights = torch.full((k,), 1.0 / k)
    g = _generator(seed)

    def draw(n: int) -> Split:
        comp = torch.multinomial(weights, n, replacement=True, generator=g)
        x = means[comp] + std * torch.randn(n, 2, generator=g)
        return Split(x, comp.to(torch.int64))

    train = draw(n_train)
    test = draw(n_test)
    info = {"means": means, "std": std, "weights": weights, "seed": int(seed)}
    return Dataset("gmm2d", "density", train, None, test, input_shape=(2,), info=info)


def gmm2d_log_density(
    points: torch.Tensor,
    means: torch.Tensor,
    std: float | torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log density of an isotropic Gaussian mixture at ``points`` (N, D); returns shape (N,).

    ``means`` is (K, D); ``std`` a scalar or a (K,) tensor of per-component standard deviations;
    ``weights`` (K,) sums to 1 (uniform when None).
    """
    points = torch.as_tensor(points)
    dtype = points.dtype if points.is_floating_point() else torch.float32
    points = points.to(dtype)
    means = torch.as_tensor(means, dtype=dtype, device=points.device)
    if points.ndim != 2 or means.ndim != 2 or points.shape[1] != means.shape[1]:
        raise DatasetError(
            f"points must be (N, D) and means (K, D) with the same D; got "
            f"{tuple(points.shape)} and {tuple(means.shape)}"
        )
    k, d = means.shape
    std_t = torch.as_tensor(std, dtype=dtype, device=points.device).reshape(-1)
    if std_t.numel() not in (1, k) or bool((std_t <= 0).any()):
        raise DatasetError(f"std must be a positive scalar or {k} positive values")
    if weights is None:
        weights = torch.full((k,), 1.0 / k, dtype=dtype, device=points.device)
    weights = torch.as_tensor(weights, dtype=dtype, device=points.device)
    if weights.shape != (k,) or bool((weights < 0).any()):
        raise DatasetError(f"weights must be {k} non-negative values")
    sq = (points[:, None, :] - means[None, :, :]).pow(2).sum(-1)  # (N, K)
    log_norm = -0.5 * d * math.log(2 * math.pi) - d * std_t.log()
    log_comp = log_norm - 0.5 * sq / std_t.pow(2)
    return torch.logsumexp(log_comp + weights.log(), dim=1)
