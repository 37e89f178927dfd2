"""Data sets for hyperbayes: seeded toys, offline real images, and pure transforms over splits."""

from .core import Dataset, DatasetError, Split, cache_dir, from_tensors
from .real import build_mnist_cache, read_idx
from .registry import available, fetch, load
from .toys import gmm2d_log_density
from .transforms import (
    first_n,
    hold_out_classes,
    noise_images,
    permute_labels,
    permute_pixels,
    rotate,
)

__all__ = [
    "load",
    "available",
    "fetch",
    "cache_dir",
    "from_tensors",
    "Split",
    "Dataset",
    "DatasetError",
    "build_mnist_cache",
    "read_idx",
    "gmm2d_log_density",
    "first_n",
    "permute_pixels",
    "permute_labels",
    "rotate",
    "hold_out_classes",
    "noise_images",
]
