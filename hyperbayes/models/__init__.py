"""Models: functional primary nets, declarative priors, likelihoods and the BNN Pyro model."""

from . import likelihoods, nets, priors
from .bnn import BNN
from .likelihoods import Categorical, Gaussian
from .nets import CNN, MLP, ParamSpec

__all__ = ["BNN", "MLP", "CNN", "ParamSpec", "Gaussian", "Categorical", "likelihoods", "nets",
           "priors"]
