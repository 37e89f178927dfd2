"""Models: functional primary nets, declarative priors, likelihoods and the BNN Pyro model."""

from . import gauge, likelihoods, metaprior, nets, priors
from .bnn import BNN
from .gauge import gauge_fix
from .likelihoods import Categorical, Gaussian
from .metaprior import MetaPrior
from .nets import CNN, MLP, ParamSpec

__all__ = ["BNN", "MetaPrior", "metaprior", "MLP", "CNN", "ParamSpec", "Gaussian", "Categorical",
           "likelihoods", "nets", "priors", "gauge", "gauge_fix"]
