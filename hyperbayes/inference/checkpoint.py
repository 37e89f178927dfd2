"""Atomic, verified checkpoints: a SHA-256 header line followed by a ``torch.save`` payload."""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import torch

from ..files import atomic_write

__all__ = ["save", "load", "save_posterior", "load_posterior", "load_into", "fingerprint",
           "CheckpointError"]

_MAGIC = b"hyperbayes-checkpoint-v1 sha256="


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, tampered with or not a hyperbayes checkpoint."""


def save(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically.

    The file is written to a temporary name in the same folder, flushed to disk and renamed,
    so a crash leaves either the old checkpoint or the new one, never half of one.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    try:  # what load cannot read back is refused now, not found out when loading
        torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise TypeError(f"{path}: the payload holds an object a safe load cannot read back "
                        f"(tensors, numbers, strings, lists, tuples and dicts only): "
                        f"{str(err).splitlines()[0][:300]}") from err
    header = _MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n"
    atomic_write(path, lambda f: (f.write(header), f.write(body)))
    return path


def load(path: str | Path, map_location=None) -> dict:
    """Read a checkpoint written by :func:`save`, verifying its checksum first.

    Loading uses ``torch.load(..., weights_only=True)``: no arbitrary code is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    newline = data.find(b"\n")
    if not data.startswith(_MAGIC) or newline != len(_MAGIC) + 64:
        raise CheckpointError(f"{path} is not a hyperbayes checkpoint (bad header); "
                              "it may be corrupt or from another program")
    try:
        expected = data[len(_MAGIC):newline].decode("ascii")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path} is corrupt (its header is not a checksum); delete it "
                              "and train again") from err
    body = data[newline + 1:]
    if hashlib.sha256(body).hexdigest() != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (checksum mismatch); "
                              "delete it and train again")
    return torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)


def fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) of the tensors' shapes, dtypes and every byte of their
    values: which data a model was trained on."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)} {t.dtype};".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()[:16]


def _shape(value) -> list[int] | str:
    """A state entry's shape, or ``"extra"`` for a module's extra state (e.g. a Laplace or
    SWAG posterior, kept as a dict of tensors)."""
    return list(value.shape) if torch.is_tensor(value) else "extra"


def _layout(module) -> dict[str, list[int] | str]:
    return {k: _shape(v) for k, v in module.state_dict().items()}


def save_posterior(path: str | Path, model, guide, *, method: str = "", meta: dict | None = None
                   ) -> Path:
    """Save a trained model + guide (their state dicts and a description) atomically."""
    return save(path, {"kind": "posterior", "method": method, "meta": dict(meta or {}),
                       "model": model.state_dict(), "guide": guide.state_dict(),
                       "layout": {"model": _layout(model), "guide": _layout(guide)}})


def load_posterior(path: str | Path, model, guide, map_location="cpu") -> dict:
    """Load a file written by :func:`save_posterior` into freshly built ``model`` and ``guide``.

    The model and guide must be built the same way as when saved; a different architecture is
    reported by name rather than as a shape error deep inside torch. The saved tensors are read
    onto ``map_location`` (the CPU by default, so a posterior saved on a GPU loads anywhere)
    and copied into the modules' own tensors; move the modules afterwards as usual. Returns the
    saved metadata.
    """
    state = load(path, map_location=map_location)
    if state.get("kind") != "posterior":
        raise CheckpointError(f"{path} holds a training checkpoint, not a saved posterior")
    for part, module in (("model", model), ("guide", guide)):
        load_into(path, part, module, state[part], "build it as it was when saved")
    return {"method": state["method"], **state["meta"]}


def load_into(path, part: str, module, saved_state: dict, advice: str) -> None:
    """Load ``saved_state`` (the ``part`` of file ``path``) into ``module``; another layout is a
    CheckpointError naming the file, the part and the first differing entries, then ``advice``
    (not a shape error deep inside torch)."""
    saved = {k: _shape(v) for k, v in saved_state.items()}
    here = _layout(module)
    if saved != here:
        diff = [k for k in sorted(set(saved) | set(here)) if saved.get(k) != here.get(k)][:4]
        raise CheckpointError(f"{path}: the {part} was saved with a different architecture "
                              f"(first differences: {diff}); {advice}")
    module.load_state_dict(saved_state)
