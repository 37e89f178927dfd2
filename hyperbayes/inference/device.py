"""Device selection and seeding shared by every entry point."""

from __future__ import annotations

import os

import pyro
import torch

__all__ = ["resolve_device", "set_seed"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Map ``"auto"`` / ``"cpu"`` / ``"cuda"`` (or a torch.device) to an available device.

    ``"auto"`` picks CUDA when it is available, unless the environment variable
    ``HYPERBAYES_DEVICE`` (``cpu`` or ``cuda``) says which (the test suite pins it to ``cpu``);
    asking for ``"cuda"`` without a GPU is an error rather than a silent fallback.
    """
    if device is None or device == "auto":
        pinned = os.environ.get("HYPERBAYES_DEVICE", "").strip()
        if pinned and pinned != "auto":
            return resolve_device(pinned)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str) and device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but no CUDA GPU is available; "
                           "use device='auto' or 'cpu'")
    return device


def set_seed(seed: int | None) -> None:
    """Seed Python, NumPy and torch (all devices) through ``pyro.set_rng_seed``."""
    if seed is not None:
        pyro.set_rng_seed(int(seed))
