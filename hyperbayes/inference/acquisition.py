"""Active-learning building blocks: the initial set and pool, top-k acquisition, learning-curve AUC.

The acquisition scores themselves are in :mod:`~hyperbayes.inference.metrics`
(:func:`~hyperbayes.inference.metrics.bald`,
:func:`~hyperbayes.inference.metrics.predictive_entropy`,
each from (S, N, C) Monte Carlo class probabilities of any method's
:func:`~hyperbayes.inference.predict`). A loop with a user's own model reads::

    initial, pool = initial_and_pool(train.y, per_class=2, seed=0)
    labelled, available = initial, torch.ones(len(pool), dtype=torch.bool)
    gen = seeded_generator("acquire", 0)
    for _ in range(rounds):
        ...  # fit on train.subset(labelled); probs = predict(model, guide, train.x[pool], 20).probs
        picked = select(metrics.bald(probs.double()), available, 10, gen)
        available[picked] = False
        labelled = torch.cat([labelled, pool[picked]])

:mod:`hyperbayes.experiments.active_learning` runs that loop for every registered method.
"""

from __future__ import annotations

import numbers
import zlib

import torch

__all__ = ["SCORE_RESOLUTION", "seeded_generator", "initial_and_pool", "select", "random_subset",
           "area_under_curve"]

#: scores (compared in float64) closer than this (nats) are ties, broken at random, so that
#: round-off does not decide: BALD of a point estimate is 0, so its "BALD" picks are random
SCORE_RESOLUTION = 1e-12


def _check_count(value, name: str, minimum: int = 0) -> None:
    """Refuse a count that is not an int ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


def _check_mask(available) -> None:
    """Refuse a pool mask that is not a 1-d boolean tensor."""
    if not isinstance(available, torch.Tensor) or available.dtype != torch.bool \
            or available.dim() != 1:
        raise ValueError("available must be a 1-d boolean tensor (True: still in the pool)")


def seeded_generator(*key) -> torch.Generator:
    """A CPU generator seeded by ``key`` (e.g. ``("pool", 3)``): one independent, reproducible
    random stream per purpose, so that adding a draw to one stream does not shift another."""
    return torch.Generator().manual_seed(zlib.crc32("/".join(map(str, key)).encode()))


def initial_and_pool(labels: torch.Tensor, *, per_class: int = 2, pool_size: int | None = None,
                     seed: int = 0, num_classes: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The initial labelled set (``per_class`` random examples of each class) and the pool.

    Args:
        labels: (N,) class labels of the training split.
        per_class: initial examples per class.
        pool_size: the pool is a random subset of this many of the other examples (None: all).
        seed: seeds both choices (the stream ``seeded_generator("pool", seed)``).
        num_classes: the classes are 0 … num_classes − 1 (None: up to the largest label).

    Returns:
        ``(initial, pool)``: sorted indices into ``labels``, disjoint.
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-d tensor of class indices, got dtype "
                         f"{labels.dtype} and shape {tuple(labels.shape)}")
    if len(labels) == 0 or int(labels.min()) < 0:
        raise ValueError("labels must be non-empty class indices ≥ 0")
    _check_count(per_class, "per_class", minimum=1)
    if pool_size is not None:
        _check_count(pool_size, "pool_size")
    gen = seeded_generator("pool", seed)
    chosen = []
    for c in range(num_classes if num_classes is not None else int(labels.max()) + 1):
        members = (labels == c).nonzero().squeeze(1)
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} training examples; the initial set "
                             f"needs {per_class} per class")
        chosen.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    initial = torch.cat(chosen).sort().values
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[initial] = False
    rest = rest.nonzero().squeeze(1)
    if pool_size is not None:
        rest = rest[torch.randperm(len(rest), generator=gen)[:pool_size]]
    return initial, rest.sort().values


def select(scores: torch.Tensor | None, available: torch.Tensor, k: int,
           generator: torch.Generator) -> torch.Tensor:
    """Positions of the ``k`` available items with the highest scores (None: ``k`` at random).

    Scores are compared at a resolution of :data:`SCORE_RESOLUTION`; ties are broken at random
    with ``generator``. ``available`` is a boolean mask over the positions.
    """
    _check_mask(available)
    _check_count(k, "k")
    if scores is not None and tuple(scores.shape) != tuple(available.shape):
        raise ValueError(f"scores have shape {tuple(scores.shape)}, the pool mask "
                         f"{tuple(available.shape)}: one score per pool item")
    positions = available.nonzero().squeeze(1)
    if k > len(positions):
        raise ValueError(f"cannot acquire {k} items from a pool of {len(positions)}")
    order = positions[torch.randperm(len(positions), generator=generator)]
    if scores is None:
        return order[:k]
    key = torch.floor(scores.detach().cpu()[order].double() / SCORE_RESOLUTION)
    return order[torch.argsort(key, descending=True, stable=True)][:k]


def random_subset(available: torch.Tensor, size: int | None,
                  generator: torch.Generator) -> torch.Tensor:
    """A boolean mask of ``size`` random available positions (all of them when None or when
    fewer are left): the pool subset that Gal et al. (2017) score in each round."""
    _check_mask(available)
    if size is not None:
        _check_count(size, "size")
    positions = available.nonzero().squeeze(1)
    if size is None or size >= len(positions):
        return available.clone()
    mask = torch.zeros_like(available)
    mask[positions[torch.randperm(len(positions), generator=generator)[:size]]] = True
    return mask


def area_under_curve(acquired, accuracy) -> float:
    """Area under the accuracy curve (trapezoid) over the number acquired, divided by its
    range: the mean accuracy over the budget (the accuracy itself for a one-point curve)."""
    acquired = [float(a) for a in acquired]
    if not acquired or len(acquired) != len(accuracy):
        raise ValueError(f"a curve needs as many accuracies as points, at least one; got "
                         f"{len(acquired)} points and {len(accuracy)} accuracies")
    if any(b < a for a, b in zip(acquired, acquired[1:], strict=False)):
        raise ValueError(f"the numbers acquired must not decrease, got {acquired}")
    if len(acquired) < 2 or acquired[-1] == acquired[0]:
        return float(accuracy[-1])
    area = sum((acquired[i + 1] - acquired[i]) * (accuracy[i] + accuracy[i + 1]) / 2
               for i in range(len(acquired) - 1))
    return area / (acquired[-1] - acquired[0])
