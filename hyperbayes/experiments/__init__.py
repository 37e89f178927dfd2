"""Experiments: each paper experiment as one function that writes metrics, figures and a report.

The CLI, the benchmarks and the notebooks call these, so an experiment is written once.
"""

from . import bhn_mnist, bhn_product, toy_regression

EXPERIMENTS = {
    "toy-regression": toy_regression.run,
    "bhn-product": bhn_product.run,
    "bhn-mnist": bhn_mnist.run,
}

__all__ = ["EXPERIMENTS", "toy_regression", "bhn_product", "bhn_mnist"]
