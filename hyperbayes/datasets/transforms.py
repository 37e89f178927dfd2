"""Pure transforms over Splits and Datasets: subsets, permutations, rotations, held-out classes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TypeVar

import torch
import torch.nn.functional as F

from .core import Dataset, DatasetError, Split

__all__ = [
    "first_n",
    "permute_pixels",
    "permute_labels",
    "rotate",
    "hold_out_classes",
    "noise_images",
]

T = TypeVar("T", Split, Dataset)


def _map_splits(obj: T, fn: Callable[[Split], Split]) -> T:
    """Apply ``fn`` to a Split, or to every split of a Dataset."""
    if isinstance(obj, Split):
        return fn(obj)
    if isinstance(obj, Dataset):
        return replace(
            obj,
            train=fn(obj.train),
            val=None if obj.val is None else fn(obj.val),
            test=fn(obj.test),
        )
    raise DatasetError(f"expected a Split or a Dataset, got {type(obj).__name__}")


def _check_perm(perm: torch.Tensor | Sequence[int], size: int, what: str) -> torch.Tensor:
    p = torch.as_tensor(perm)
    if p.is_floating_point() or p.dtype == torch.bool:
        raise DatasetError(f"{what} permutation must hold integers, got {p.dtype}")
    p = p.long().reshape(-1).cpu()
    if p.numel() != size:
        raise DatasetError(f"{what} permutation has length {p.numel()} but must have length {size}")
    if not torch.equal(torch.sort(p).values, torch.arange(size)):
        raise DatasetError(f"{what} permutation must contain each of 0..{size - 1} exactly once")
    return p


def first_n(data: T, n: int) -> T:
    """The first ``n`` examples of a Split, or of a Dataset's training split (e.g. MNIST 5,000)."""
    source = data.train if isinstance(data, Dataset) else data
    if not isinstance(source, Split):
        raise DatasetError(f"expected a Split or a Dataset, got {type(data).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(source):
        raise DatasetError(f"n must be an integer in [1, {len(source)}], got {n!r}")
    sub = source.subset(slice(0, n))
    return replace(data, train=sub) if isinstance(data, Dataset) else sub


def permute_pixels(
    data: T, perm: torch.Tensor | Sequence[int] | None = None, seed: int = 0
) -> tuple[T, torch.Tensor]:
    """Apply one fixed permutation to the flattened features of every example.

    Returns ``(permuted, perm)``; pass ``perm`` back in to permute other data the same way, and
    ``perm.argsort()`` to undo it. When ``perm`` is None a random one is drawn from ``seed``.
    """
    first = data.train if isinstance(data, Dataset) else data
    if not isinstance(first, Split):
        raise DatasetError(f"expected a Split or a Dataset, got {type(data).__name__}")
    size = math.prod(first.x.shape[1:])
    if perm is None:
        perm = torch.randperm(size, generator=torch.Generator().manual_seed(int(seed)))
    p = _check_perm(perm, size, "pixel")

    def fn(s: Split) -> Split:
        shape = s.x.shape
        if math.prod(shape[1:]) != size:
            raise DatasetError(f"split has {math.prod(shape[1:])} features per example, not {size}")
        flat = s.x.reshape(shape[0], -1)[:, p.to(s.x.device)]
        return Split(flat.reshape(shape), s.y)

    return _map_splits(data, fn), p


def permute_labels(
    data: T,
    perm: torch.Tensor | Sequence[int] | None = None,
    seed: int = 0,
    num_classes: int = 10,
) -> tuple[T, torch.Tensor]:
    """Relabel class ``c`` as ``perm[c]``; returns ``(relabelled, perm)``.

    For a Dataset ``num_classes`` is taken from the data set. When ``perm`` is None a random one
    is drawn from ``seed``.
    """
    if isinstance(data, Dataset):
        if data.task != "classification" or data.num_classes is None:
            raise DatasetError("permute_labels needs a classification data set")
        num_classes = data.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise DatasetError(f"num_classes must be a positive integer, got {num_classes!r}")
    if perm is None:
        perm = torch.randperm(num_classes, generator=torch.Generator().manual_seed(int(seed)))
    p = _check_perm(perm, num_classes, "label")

    def fn(s: Split) -> Split:
        if s.y.dtype != torch.int64 or s.y.ndim != 1:
            raise DatasetError(f"labels must be int64 of shape (N,), got {s.y.dtype} "
                               f"{tuple(s.y.shape)}")
        if len(s) and (s.y.min() < 0 or s.y.max() >= num_classes):
            raise DatasetError(f"labels must lie in 0..{num_classes - 1} to be permuted")
        return Split(s.x, p.to(s.y.device)[s.y])

    return _map_splits(data, fn), p


def rotate(data: T, degrees: float | Sequence[float] | torch.Tensor) -> T:
    """Rotate images (N, C, H, W) counter-clockwise by ``degrees`` about their centre.

    ``degrees`` is one angle for all images or one per image (length N; a Split only). Bilinear
    interpolation, zeros outside the image. Uses ``affine_grid``/``grid_sample``.
    """
    def fn(s: Split) -> Split:
        if s.x.ndim != 4:
            raise DatasetError(
                f"rotate needs images of shape (N, C, H, W), got {tuple(s.x.shape)}"
            )
        n = len(s)
        angles = torch.as_tensor(degrees, dtype=torch.float64).reshape(-1)
        if angles.numel() not in (1, n):
            raise DatasetError(f"degrees must be one angle or {n} angles, got {angles.numel()}")
        if not bool(torch.isfinite(angles).all()):
            raise DatasetError("degrees must be finite")
        if n == 0:
            return s
        rad = torch.deg2rad(angles).expand(n)
        cos, sin = rad.cos(), rad.sin()
        zero = torch.zeros_like(cos)
        # affine_grid maps output coords to input coords; the inverse rotation turns the image
        # counter-clockwise as displayed (row 0 at the top).
        theta = torch.stack(
            [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
        ).to(device=s.x.device, dtype=s.x.dtype)
        grid = F.affine_grid(theta, list(s.x.shape), align_corners=False)
        out = F.grid_sample(s.x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return Split(out, s.y)

    return _map_splits(data, fn)


def _class_list(classes: int | Iterable[int]) -> list[int]:
    items = [classes] if isinstance(classes, int) else list(classes)
    if not items:
        raise DatasetError("classes must name at least one class to hold out")
    for c in items:
        if isinstance(c, bool) or not isinstance(c, int):
            raise DatasetError(f"classes must be integers, got {c!r}")
    return sorted(set(items))


def _split_by_classes(s: Split, held: torch.Tensor) -> tuple[Split, Split]:
    mask = torch.isin(s.y, held.to(s.y.device))
    return s.subset(~mask), s.subset(mask)


def hold_out_classes(
    data: T, classes: int | Iterable[int]
) -> tuple[T, T]:
    """Partition by label into ``(kept, held_out)``; labels are not renumbered.

    For a Dataset every split is partitioned and ``num_classes`` is unchanged (the held-out
    classes simply never appear in ``kept``). Classes absent from the (training) labels, or
    holding out every class, raise :class:`DatasetError`.
    """
    cls = _class_list(classes)
    ref = data.train if isinstance(data, Dataset) else data
    if not isinstance(ref, Split):
        raise DatasetError(f"expected a Split or a Dataset, got {type(data).__name__}")
    if ref.y.dtype != torch.int64 or ref.y.ndim != 1:
        raise DatasetError("hold_out_classes needs int64 class labels of shape (N,)")
    present = sorted(int(c) for c in torch.unique(ref.y).tolist())
    absent = [c for c in cls if c not in present]
    if absent:
        raise DatasetError(f"class(es) {absent} not present in the labels (present: {present})")
    if set(cls) >= set(present):
        raise DatasetError("holding out every class would leave nothing to keep")
    held = torch.as_tensor(cls, dtype=torch.int64)
    if isinstance(data, Split):
        return _split_by_classes(data, held)
    parts = {k: _split_by_classes(v, held) for k, v in data.splits().items()}
    info = dict(data.info, held_out_classes=cls)
    kept = replace(
        data, train=parts["train"][0], val=parts["val"][0] if "val" in parts else None,
        test=parts["test"][0], info=info,
    )
    held_out = replace(
        data, train=parts["train"][1], val=parts["val"][1] if "val" in parts else None,
        test=parts["test"][1], info=info,
    )
    return kept, held_out


def noise_images(
    n: int,
    shape: Sequence[int] = (1, 28, 28),
    kind: str = "uniform",
    seed: int = 0,
) -> Split:
    """``n`` noise images as an out-of-distribution Split with label -1 (int64).

    ``kind="uniform"``: pixels ~ U[0, 1). ``kind="gaussian"``: pixels ~ N(0.5, 0.25²) clipped to
    [0, 1].
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DatasetError(f"n must be a non-negative integer, got {n!r}")
    shape = tuple(shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise DatasetError(f"shape must be a tuple of positive integers, got {shape!r}")
    g = torch.Generator().manual_seed(int(seed))
    if kind == "uniform":
        x = torch.rand((n, *shape), generator=g)
    elif kind == "gaussian":
        x = (0.5 + 0.25 * torch.randn((n, *shape), generator=g)).clamp_(0.0, 1.0)
    else:
        raise DatasetError(f"unknown noise kind {kind!r}; choose 'uniform' or 'gaussian'")
    return Split(x, torch.full((n,), -1, dtype=torch.int64))
