"""hyperbayes: Bayesian deep learning with hypernetworks, written in Pyro."""

import logging

from . import datasets, guides, inference, methods, models
from .models import priors

__version__ = "0.1.0"

# a library logs, the application decides where to (the CLI sends INFO to stderr)
logging.getLogger(__name__).addHandler(logging.NullHandler())
__all__ = ["datasets", "guides", "inference", "methods", "models", "priors", "__version__"]
