"""Per-example random draws (local reparameterization noise, MC dropout masks) that come out the
same whether a minibatch is processed whole or split into shards across processes."""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass

import torch

__all__ = ["Shard", "shard", "current_shard", "normal_noise", "dropout_mask"]


@dataclass(frozen=True)
class Shard:
    """This process's rows ``[start, stop)`` of a global minibatch of ``batch`` examples."""

    batch: int
    start: int
    stop: int


_SHARD: ContextVar[Shard | None] = ContextVar("hyperbayes_shard", default=None)


@contextlib.contextmanager
def shard(batch: int, start: int, stop: int):
    """Within this scope the minibatch is rows ``[start, stop)`` of a global one of ``batch``
    examples: per-example draws are made for all ``batch`` rows (the same random numbers one
    process would draw for the whole minibatch) and this shard's rows are kept, so data
    parallelism does not change them."""
    if not 0 <= start < stop <= batch:
        raise ValueError(f"a shard needs 0 <= start < stop <= batch, got {start}, {stop}, {batch}")
    token = _SHARD.set(Shard(batch, start, stop))
    try:
        yield
    finally:
        _SHARD.reset(token)


def current_shard() -> Shard | None:
    """The active :func:`shard`, or None when the whole minibatch is in this process."""
    return _SHARD.get()


def _global_rows(like: torch.Tensor, batch_dim: int) -> tuple[tuple[int, ...], Shard | None]:
    """The shape to draw for ``like`` (its batch dimension widened to the global minibatch)."""
    part = _SHARD.get()
    shape = list(like.shape)
    if part is not None:
        if shape[batch_dim] != part.stop - part.start:
            raise RuntimeError(f"a tensor with {shape[batch_dim]} rows in a shard of "
                               f"{part.stop - part.start} examples")
        shape[batch_dim] = part.batch
    return tuple(shape), part


def _keep(draw: torch.Tensor, part: Shard | None, batch_dim: int) -> torch.Tensor:
    return draw if part is None else draw.narrow(batch_dim, part.start, part.stop - part.start)


def normal_noise(like: torch.Tensor, batch_dim: int = -2) -> torch.Tensor:
    """Standard normal noise shaped as ``like`` (``torch.randn_like`` outside a shard)."""
    shape, part = _global_rows(like, batch_dim)
    return _keep(torch.randn(shape, dtype=like.dtype, device=like.device), part, batch_dim)


def dropout_mask(like: torch.Tensor, p: float, batch_dim: int = -2) -> torch.Tensor:
    """An inverted-dropout mask for ``like``: 0 with probability ``p``, else ``1 / (1 - p)``."""
    shape, part = _global_rows(like, batch_dim)
    # out of place, so that under torch.func.vmap(randomness="different") every sample of an
    # unbatched activation gets its own mask
    mask = torch.bernoulli(like.new_full(shape, 1 - p))
    return _keep(mask.div_(1 - p), part, batch_dim)
