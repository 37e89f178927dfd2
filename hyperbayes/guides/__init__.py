"""Guides: the approximate posteriors q(w) of hyperbayes, each a Pyro guide."""

from . import contract
from .base import Site, SiteGuide, model_sites
from .contract import DensityGuide, Guide, ImplicitGuideContract
from .delta import Delta
from .ensemble import Ensemble, EnsembleLoss
from .flows import FlowGuide
from .implicit import DiversityGuide, ImplicitGuide
from .laplace import LaplaceGuide
from .meanfield import MeanField
from .swag import SWAGGuide

__all__ = ["Site", "SiteGuide", "model_sites", "contract", "Guide", "DensityGuide",
           "ImplicitGuideContract", "Delta", "Ensemble", "EnsembleLoss", "MeanField",
           "FlowGuide", "ImplicitGuide", "DiversityGuide", "LaplaceGuide",
           "SWAGGuide"]
