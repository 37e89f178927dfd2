"""Experiments: each paper experiment as one function that writes metrics, figures and a report.

The CLI, the benchmarks and the notebooks call these, so an experiment is written once.
"""

from . import (
               active_learning,
               adversarial,
               bbh_mnist,
               bbh_toy,
               bhn_correlations,
               bhn_mnist,
               bhn_product,
               bhn_toy,
               calibration,
               diversity_mnist,
               diversity_toy,
               fidelity,
               metaprior_mnist,
               metaprior_moons,
               metaprior_toy,
               module_zoo,
               ood,
               papers,
               suite,
               toy_regression,
               unseen_class,
               zoo,
)

EXPERIMENTS = {
    "toy-regression": toy_regression.run,
    "bhn-product": bhn_product.run,
    "bhn-toy": bhn_toy.run,
    "bhn-mnist": bhn_mnist.run,
    "bhn-correlations": bhn_correlations.run,
    "metaprior-toy": metaprior_toy.run,
    "metaprior-moons": metaprior_moons.run,
    "metaprior-mnist": metaprior_mnist.run_mnist,
    "metaprior-fewshot": metaprior_mnist.run_fewshot,
    "metaprior-surgery": metaprior_mnist.run_surgery,
    "diversity-toy": diversity_toy.run_toy,
    "diversity-mnist": diversity_mnist.run_mnist,
    "bbh-toy": bbh_toy.run,
    "bbh-mnist": bbh_mnist.run,
    "bbh-rotated": bbh_mnist.run_rotated,
    "fidelity": fidelity.run,
    "calibration": calibration.run,
    "ood": ood.run,
    "active-learning": active_learning.run,
    "active-learning-paper": active_learning.run_paper,
    "unseen-class": unseen_class.run,
    "adversarial": adversarial.run,
    "module-zoo": module_zoo.run,
}

__all__ = ["EXPERIMENTS", "toy_regression", "bhn_product", "bhn_toy", "bhn_mnist",
           "bhn_correlations", "metaprior_toy", "metaprior_moons", "metaprior_mnist",
           "diversity_toy", "diversity_mnist", "bbh_toy", "bbh_mnist", "fidelity", "zoo", "suite",
           "calibration", "ood", "active_learning", "unseen_class", "adversarial", "module_zoo",
           "papers"]
