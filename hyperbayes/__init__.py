"""hyperbayes: Bayesian deep learning with hypernetworks, written in Pyro."""

from . import datasets, guides, inference, methods, models
from .models import priors

__version__ = "0.1.0"
__all__ = ["datasets", "guides", "inference", "methods", "models", "priors", "__version__"]
