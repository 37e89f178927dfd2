"""The papers' published numbers that the experiments put beside ours, each with its source.

One place for every number typed from a paper, so that a table is never copied into two
experiments. Papers (copies in the repository's shared papers folder):

- BHN: Krueger, Huang, Islam, Turner, Lacoste & Courville, *Bayesian Hypernetworks*,
  arXiv:1710.04759 (2017).
- BbH: Pawlowski, Brock, Lee, Rajchl & Glocker, *Implicit Weight Uncertainty in Neural
  Networks*, arXiv:1711.01297 (2017).
- MetaPrior: Karaletsos, Dayan & Ghahramani, *Probabilistic Meta-Representations of Neural
  Networks*, UAI 2018 workshop.
"""

from __future__ import annotations

__all__ = ["BHN_TABLE1", "BHN_TABLE2", "BHN_TABLE3", "BHN_TABLE3_ROLES", "BBH_MNIST",
           "METAPRIOR_MOONS", "MNIST_ACCURACY"]

#: Krueger et al. 2017, Table 1: test accuracy (%) of MLPs on MNIST 50,000 (784-800-800-10) and
#: on its first 5,000 examples (800 and 1,200 hidden units), by bhn-mnist configuration name.
#: "meanfield" is the table's Bayes-by-Backprop figure (98.01%, from Blundell et al. 2015).
BHN_TABLE1 = {
    "flow-0": 98.28, "flow-2": 98.39, "flow-4": 98.47, "flow-6": 98.59, "flow-8": 98.63,
    "dropout": 98.73, "meanfield": 98.01,
    "5k-800/flow-0": 92.06, "5k-800/flow-8": 94.25, "5k-800/flow-12": 96.16,
    "5k-800/dropout": 95.58,
    "5k-1200/flow-0": 90.91, "5k-1200/flow-8": 96.27, "5k-1200/flow-12": 96.51,
    "5k-1200/dropout": 95.52,
}

#: Pawlowski et al. 2017, §4 (MNIST table): test accuracy (%) of 784-800-800-10 MLPs trained
#: about 50 epochs, by our method name (``dropout``: MC dropout without weight decay)
BBH_MNIST = {"bbh": 98.47, "mle": 98.56, "dropout": 98.51}

#: Karaletsos et al. 2018, §4 (half moons): the MetaPrior's test accuracy (fraction)
METAPRIOR_MOONS = {"metaprior": 0.955}

#: The MNIST 50,000 accuracies above as the calibration task shows them: label → (our method,
#: accuracy %, the paper's net)
MNIST_ACCURACY = {
    "paper: BHN, 8 couplings (BHN Table 1)": ("flow", BHN_TABLE1["flow-8"], "784-800-800-10"),
    "paper: MC dropout (BHN Table 1)": ("mcdropout", BHN_TABLE1["dropout"], "784-800-800-10"),
    "paper: Bayes by Backprop (BHN Table 1)": ("meanfield", BHN_TABLE1["meanfield"],
                                               "784-800-800-10"),
    "paper: Bayes by Hypernet (BbH §4)": ("bbh", BBH_MNIST["bbh"], "784-800-800-10"),
    "paper: maximum likelihood (BbH §4)": ("map", BBH_MNIST["mle"], "784-800-800-10"),
    "paper: MC dropout (BbH §4)": ("mcdropout", BBH_MNIST["dropout"], "784-800-800-10"),
}

#: Krueger et al. 2017, Table 2 (max-probability score, MNIST-trained MLPs): label → (our
#: method, {OOD set: (ROC, PR(+), PR(−))} in %)
BHN_TABLE2 = {
    "paper: MLP (BHN Table 2)": ("map", {"uniform": (96.99, 97.99, 94.71),
                                         "gaussian": (87.70, 87.66, 88.05)}),
    "paper: MC dropout (BHN Table 2)": ("mcdropout", {"uniform": (98.90, 99.15, 98.63),
                                                      "gaussian": (97.70, 98.11, 96.94)}),
    "paper: BHN (BHN Table 2)": ("flow", {"uniform": (98.97, 99.27, 98.52),
                                          "gaussian": (89.22, 86.62, 89.85)}),
}

#: which of our methods Table 3's columns are (BHN 8: 8 RealNVP couplings over the weight-norm
#: scales, our ``flow`` recipe; BHN 4 has no counterpart here)
BHN_TABLE3_ROLES = {"MLP": "map", "MC dropout": "mcdropout", "BHN 8": "flow"}

#: Krueger et al. 2017, Table 3 (%), held-out-class detection: block → score → model → values
#: for held-out digits 0..9. The paper's "variation ratio" (1 − max p̄) is our ``max_prob``
#: score; it reports no entropy and no mean std / BALD for the MLP (0 for a point estimate).
BHN_TABLE3 = {
    "roc_auc": {
        "max_prob": {
            "MLP": (95.52, 96.70, 92.83, 93.03, 89.08, 88.53, 95.40, 92.46, 96.35, 94.75),
            "MC dropout": (97.44, 94.60, 95.77, 93.11, 88.96, 94.66, 96.33, 96.61, 98.05, 95.95),
            "BHN 4": (96.62, 96.62, 92.99, 95.03, 75.73, 93.20, 93.67, 95.08, 95.86, 95.62),
            "BHN 8": (96.45, 96.46, 93.47, 95.34, 81.19, 87.95, 94.69, 93.70, 96.85, 96.54),
        },
        "mean_std": {
            "MC dropout": (97.90, 94.01, 96.02, 93.65, 89.45, 95.37, 96.99, 97.08, 97.67, 96.03),
            "BHN 4": (96.53, 96.62, 93.03, 94.86, 75.73, 93.08, 93.80, 94.68, 95.74, 95.46),
            "BHN 8": (96.77, 96.25, 93.57, 94.77, 81.31, 88.31, 94.80, 92.82, 96.98, 96.42),
        },
        "bald": {
            "MC dropout": (97.89, 93.92, 96.08, 93.65, 89.34, 95.45, 96.96, 97.06, 97.23, 96.10),
            "BHN 4": (96.59, 96.92, 93.59, 94.87, 74.31, 92.61, 93.27, 94.88, 95.48, 95.84),
            "BHN 8": (96.55, 96.19, 94.26, 94.96, 84.34, 85.77, 94.50, 92.89, 96.87, 96.37),
        },
    },
    "pr_auc_in": {
        "max_prob": {
            "MLP": (97.68, 98.26, 96.06, 96.00, 93.73, 93.92, 97.68, 95.56, 98.18, 97.32),
            "MC dropout": (98.68, 97.03, 97.74, 95.74, 93.93, 97.31, 97.99, 98.16, 99.03, 97.94),
            "BHN 4": (98.34, 98.23, 95.63, 97.28, 84.66, 96.79, 96.38, 97.40, 97.97, 97.76),
            "BHN 8": (98.32, 98.15, 96.07, 97.68, 86.40, 93.15, 97.27, 96.51, 98.37, 98.27),
        },
        "mean_std": {
            "MC dropout": (98.87, 96.58, 97.83, 95.97, 94.10, 97.60, 98.29, 98.36, 98.87, 97.93),
            "BHN 4": (98.31, 98.20, 95.31, 97.09, 85.16, 96.62, 96.55, 97.07, 97.96, 97.71),
            "BHN 8": (98.45, 98.04, 96.01, 97.37, 86.46, 93.34, 97.29, 95.82, 98.53, 98.31),
        },
        "bald": {
            "MC dropout": (98.87, 96.58, 97.87, 96.00, 94.00, 97.61, 98.29, 98.32, 98.70, 98.02),
            "BHN 4": (98.35, 98.35, 95.80, 97.13, 83.32, 96.34, 96.05, 97.17, 97.83, 98.00),
            "BHN 8": (98.35, 98.00, 96.45, 97.49, 90.00, 90.72, 97.13, 95.89, 98.45, 98.29),
        },
    },
    "pr_auc_out": {
        "max_prob": {
            "MLP": (90.11, 92.84, 85.74, 87.46, 80.96, 80.41, 89.34, 87.08, 91.88, 88.10),
            "MC dropout": (94.44, 89.08, 91.13, 87.78, 79.04, 87.74, 92.26, 92.69, 95.82, 90.71),
            "BHN 4": (92.17, 92.48, 86.61, 89.46, 64.02, 84.15, 88.17, 88.91, 90.52, 89.70),
            "BHN 8": (90.95, 91.99, 87.52, 88.75, 72.11, 78.16, 88.60, 86.85, 92.83, 91.67),
        },
        "mean_std": {
            "MC dropout": (96.08, 88.11, 92.04, 89.72, 81.82, 90.48, 94.21, 94.02, 94.40, 91.49),
            "BHN 4": (92.06, 92.71, 88.22, 89.99, 64.33, 84.85, 88.28, 89.07, 89.69, 88.72),
            "BHN 8": (92.67, 91.53, 88.51, 87.09, 73.69, 78.96, 89.10, 86.64, 92.82, 90.85),
        },
        "bald": {
            "MC dropout": (96.08, 87.67, 92.16, 89.78, 81.89, 90.81, 94.07, 94.33, 92.80, 91.56),
            "BHN 4": (91.92, 93.11, 89.20, 90.22, 64.16, 84.27, 87.14, 89.70, 88.41, 88.79),
            "BHN 8": (91.91, 91.55, 89.90, 87.21, 75.72, 76.99, 87.89, 86.71, 92.08, 90.30),
        },
    },
}
