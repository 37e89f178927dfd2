"""Experiments: each paper experiment as one function that writes metrics, figures and a report.

The CLI, the benchmarks and the notebooks call these, so an experiment is written once.
"""

from . import toy_regression

EXPERIMENTS = {
    "toy-regression": toy_regression.run,
}

__all__ = ["EXPERIMENTS", "toy_regression"]
