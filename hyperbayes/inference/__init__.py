"""Inference: the SVI loop, vectorized prediction, metrics, checkpoints, NUTS and diagnostics."""

from . import acquisition, attacks, checkpoint, estimators, metrics
from .compare import compare
from .device import resolve_device, set_seed
from .elbo import ELBO
from .illation import fit_em, illate
from .implicit import AdversarialELBO, DiversityObjective, EntropyELBO, NearestNeighbourELBO
from .mcmc import NutsResult, nuts
from .predict import Prediction, predict, predict_from_samples, sample_posterior, sample_prior
from .quality import implicit_kl_check, implicit_kl_lower_bound, psis_khat, vi_quality
from .svi import FitResult, fit

__all__ = ["ELBO", "fit", "FitResult", "predict", "predict_from_samples", "sample_posterior",
           "sample_prior", "compare", "Prediction", "resolve_device", "set_seed", "checkpoint",
           "metrics", "illate", "fit_em", "estimators", "vi_quality", "psis_khat",
           "implicit_kl_lower_bound", "implicit_kl_check",
           "EntropyELBO", "NearestNeighbourELBO", "AdversarialELBO", "DiversityObjective",
           "nuts", "NutsResult", "diagnostics", "acquisition", "attacks"]


def __getattr__(name: str):
    """``hyperbayes.inference.diagnostics`` on first use (it imports ArviZ, which is slow)."""
    if name == "diagnostics":
        import importlib

        return importlib.import_module(f"{__name__}.diagnostics")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
