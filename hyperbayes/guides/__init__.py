"""Guides: the approximate posteriors q(w) of hyperbayes, each a Pyro guide."""

from . import contract
from .base import Site, SiteGuide, model_sites
from .contract import DensityGuide, Guide, ImplicitGuideContract
from .delta import Delta
from .flows import FlowGuide
from .implicit import DiversityGuide, ImplicitGuide
from .meanfield import MeanField

__all__ = ["Site", "SiteGuide", "model_sites", "contract", "Guide", "DensityGuide",
           "ImplicitGuideContract", "Delta", "MeanField", "FlowGuide", "ImplicitGuide",
           "DiversityGuide"]
