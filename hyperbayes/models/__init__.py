"""Models: functional primary nets, declarative priors, likelihoods and the BNN Pyro model."""

from . import architectures, gauge, likelihoods, metaprior, module, nets, priors
from .bnn import BNN
from .conjugate import ConjugateRegression, conjugate_regression
from .gauge import gauge_fix
from .likelihoods import Categorical, Gaussian
from .metaprior import MetaPrior
from .module import TorchNet
from .nets import CNN, MLP, ParamSpec

__all__ = ["BNN", "conjugate_regression", "ConjugateRegression",
           "MetaPrior", "metaprior", "MLP", "CNN", "TorchNet", "ParamSpec", "Gaussian",
           "Categorical", "likelihoods", "module", "nets", "priors", "gauge", "gauge_fix",
           "architectures"]
