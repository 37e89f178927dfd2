"""Core containers (Split, Dataset), the DatasetError type, tensor validation and the cache dir."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "TASKS",
    "DatasetError",
    "Split",
    "Dataset",
    "from_tensors",
    "cache_dir",
    "CACHE_ENV",
]

#: Environment variable that overrides the default cache directory.
CACHE_ENV = "HYPERBAYES_CACHE"

#: Tasks a :class:`Dataset` can declare.
TASKS = ("regression", "classification", "density")


class DatasetError(ValueError):
    """Raised for every bad input to :mod:`hyperbayes.datasets`; the message names the fix."""


def cache_dir() -> Path:
    """Return the cache root: ``$HYPERBAYES_CACHE`` if set, else ``~/.cache/hyperbayes``.

    The directory is not created here; writers create what they need.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "hyperbayes"


def _count_nonfinite(t: torch.Tensor) -> int:
    if not t.is_floating_point() and not t.is_complex():
        return 0
    # fast path: a finite sum means every element is finite (NaN and inf propagate); only when
    # it is not (bad values, or an overflowing sum) do we count element by element
    if t.numel() == 0 or (not t.is_complex() and bool(torch.isfinite(t.sum()))):
        return 0
    return int((~torch.isfinite(t)).sum().item())


@dataclass(frozen=True, repr=False, eq=False)
class Split:
    """One split of a data set: inputs ``x`` of shape (N, ...) and targets ``y`` of shape (N, ...).

    Conventions: inputs are float32; images are (N, C, H, W) in [0, 1]; regression targets are
    float32 (N, 1); class labels are int64 (N,). Construction checks that ``x`` and ``y`` are
    tensors of equal length along dim 0 and that no floating tensor holds NaN or inf.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        for label, t in (("x", self.x), ("y", self.y)):
            if not isinstance(t, torch.Tensor):
                raise DatasetError(
                    f"Split.{label} must be a torch.Tensor, got {type(t).__name__}; convert it "
                    "with torch.as_tensor(...) or build the data set with from_tensors(x, y, ...)"
                )
            if t.ndim == 0:
                raise DatasetError(
                    f"Split.{label} is a 0-d tensor; give it a leading example dimension (N, ...)"
                )
        if self.x.shape[0] != self.y.shape[0]:
            raise DatasetError(
                f"x has {self.x.shape[0]} examples but y has {self.y.shape[0]}; "
                "x and y must have the same length along dim 0"
            )
        for label, t in (("x", self.x), ("y", self.y)):
            bad = _count_nonfinite(t)
            if bad:
                raise DatasetError(
                    f"{label} contains {bad} non-finite value(s) (NaN or inf); drop or impute "
                    f"those examples before building the data set"
                )

    def __len__(self) -> int:
        """Number of examples."""
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (
            f"Split(x={tuple(self.x.shape)} {self.x.dtype}, y={tuple(self.y.shape)} "
            f"{self.y.dtype}, device={self.x.device})"
        )

    def to(self, device: torch.device | str) -> Split:
        """Return a copy of this split with both tensors moved to ``device``."""
        return Split(self.x.to(device), self.y.to(device))

    def subset(self, idx: Any) -> Split:
        """Return the examples selected by ``idx`` (a slice, index list/tensor or boolean mask)."""
        if isinstance(idx, int | np.integer):
            idx = [int(idx)]
        if isinstance(idx, list | tuple | np.ndarray):
            idx = torch.as_tensor(np.asarray(idx))
        if isinstance(idx, torch.Tensor):
            if idx.dtype == torch.bool:
                if idx.shape != (len(self),):
                    raise DatasetError(
                        f"boolean mask has shape {tuple(idx.shape)} but the split has "
                        f"{len(self)} examples; pass a mask of shape ({len(self)},)"
                    )
            elif idx.is_floating_point():
                raise DatasetError("subset indices must be integers or a boolean mask, not floats")
            else:
                idx = idx.long()
                if idx.numel() and (idx.max() >= len(self) or idx.min() < -len(self)):
                    raise DatasetError(
                        f"subset index out of range for a split of {len(self)} examples"
                    )
            idx = idx.to(self.x.device)
        return Split(self.x[idx], self.y[idx])


@dataclass(frozen=True, repr=False, eq=False)
class Dataset:
    """A named data set: train / optional validation / test splits plus metadata.

    ``task`` is ``"regression"``, ``"classification"`` or ``"density"``; ``input_shape`` is the
    per-example shape of ``x``; ``info`` carries extra arrays and metadata (for the toys:
    ``grid``, ``true_function``, ``train_range``, ``noise_std``; for ``gmm2d``: ``means``,
    ``std``, ``weights``).
    """

    name: str
    task: str
    train: Split
    val: Split | None
    test: Split
    num_classes: int | None = None
    input_shape: tuple = ()
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DatasetError(f"task must be one of {list(TASKS)}, got {self.task!r}")
        splits = self.splits()
        for label, s in splits.items():
            if not isinstance(s, Split):
                raise DatasetError(
                    f"Dataset.{label} must be a Split, got {type(s).__name__}; wrap tensors with "
                    "Split(x, y)"
                )
        shapes = {label: tuple(s.x.shape[1:]) for label, s in splits.items()}
        if len(set(shapes.values())) > 1:
            raise DatasetError(f"splits have different per-example input shapes: {shapes}")
        if not self.input_shape:
            object.__setattr__(self, "input_shape", shapes["train"])
        elif tuple(self.input_shape) != shapes["train"]:
            raise DatasetError(
                f"input_shape {tuple(self.input_shape)} does not match the data's per-example "
                f"shape {shapes['train']}"
            )
        if self.task == "classification":
            if self.num_classes is None or int(self.num_classes) < 1:
                raise DatasetError("a classification data set needs num_classes >= 1")
            for label, s in splits.items():
                if s.y.dtype != torch.int64 or s.y.ndim != 1:
                    raise DatasetError(
                        f"{label}.y must be int64 labels of shape (N,) for classification, got "
                        f"{s.y.dtype} {tuple(s.y.shape)}; convert with y.long().reshape(-1)"
                    )
                if len(s) and (s.y.min() < 0 or s.y.max() >= self.num_classes):
                    raise DatasetError(
                        f"{label}.y has labels outside [0, {self.num_classes}) (min "
                        f"{int(s.y.min())}, max {int(s.y.max())}); fix num_classes or the labels"
                    )
        elif self.task == "regression":
            for label, s in splits.items():
                if not s.y.is_floating_point():
                    raise DatasetError(
                        f"{label}.y must be floating point for regression, got {s.y.dtype}"
                    )

    def splits(self) -> dict[str, Split]:
        """Return the present splits as an ordered dict ``{"train", ["val"], "test"}``."""
        out = {"train": self.train}
        if self.val is not None:
            out["val"] = self.val
        out["test"] = self.test
        return out

    def to(self, device: torch.device | str) -> Dataset:
        """Return a copy with every split moved to ``device`` (``info`` is left as is)."""
        return replace(
            self,
            train=self.train.to(device),
            val=None if self.val is None else self.val.to(device),
            test=self.test.to(device),
        )

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={len(v)}" for k, v in self.splits().items())
        extra = f", num_classes={self.num_classes}" if self.num_classes is not None else ""
        return (
            f"Dataset({self.name!r}, task={self.task!r}, {parts}, "
            f"input_shape={tuple(self.input_shape)}{extra})"
        )


def _to_tensor(v: Any, label: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    try:
        return torch.as_tensor(np.asarray(v))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DatasetError(f"could not convert {label} to a tensor: {exc}") from exc


def _make_split(x: Any, y: Any, task: str, label: str) -> Split:
    x = _to_tensor(x, f"{label} x")
    y = _to_tensor(y, f"{label} y")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.is_complex():
        raise DatasetError(f"{label} x is complex; hyperbayes expects real-valued inputs")
    x = x.to(torch.float32) if x.dtype != torch.float32 else x
    if task == "classification":
        if y.is_floating_point():
            finite = torch.isfinite(y)
            if not bool(finite.all()):
                raise DatasetError(
                    f"{label} y contains {int((~finite).sum())} non-finite value(s) (NaN or inf);"
                    " class labels must be integers"
                )
            if not bool((y == y.round()).all()):
                raise DatasetError(
                    f"{label} y has non-integer values; class labels must be integers 0..K-1"
                )
        y = y.reshape(-1).long()
    elif task == "regression":
        y = y.to(torch.float32)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
    return Split(x, y)


def from_tensors(
    x: Any,
    y: Any,
    *,
    task: str,
    name: str = "custom",
    val: tuple | Split | None = None,
    test: tuple | Split | None = None,
    num_classes: int | None = None,
    info: dict | None = None,
) -> Dataset:
    """Build a validated :class:`Dataset` from user-supplied arrays or tensors.

    ``x`` becomes float32 (a 1-D ``x`` becomes (N, 1)); for ``task="regression"`` ``y`` becomes
    float32 (N, 1) and for ``task="classification"`` int64 (N,), with ``num_classes`` inferred as
    ``max(y) + 1`` when not given. ``val`` and ``test`` may be ``(x, y)`` pairs or Splits;
    ``val`` defaults to None and ``test`` to the training split. NaN/inf values, mismatched lengths
    and labels outside [0, num_classes) raise :class:`DatasetError`.
    """
    if task not in TASKS:
        raise DatasetError(f"task must be one of {list(TASKS)}, got {task!r}")
    train = _make_split(x, y, task, "train")

    def _other(s: tuple | Split | None, label: str) -> Split | None:
        if s is None or isinstance(s, Split):
            return s
        if not isinstance(s, tuple | list) or len(s) != 2:
            raise DatasetError(f"{label} must be a Split or an (x, y) pair")
        return _make_split(s[0], s[1], task, label)

    val_s = _other(val, "val")
    test_s = _other(test, "test")
    if test_s is None:
        test_s = train
    if task == "classification" and num_classes is None:
        ys = [s.y for s in (train, val_s, test_s) if s is not None and len(s)]
        num_classes = int(max(int(t.max()) for t in ys)) + 1 if ys else 1
    return Dataset(
        name=name,
        task=task,
        train=train,
        val=val_s,
        test=test_s,
        num_classes=num_classes,
        input_shape=tuple(train.x.shape[1:]),
        info=dict(info or {}),
    )
