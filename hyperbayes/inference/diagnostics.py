"""ArviZ conversion and MCMC diagnostics (the only module of hyperbayes that imports ArviZ)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

with warnings.catch_warnings():  # ArviZ 0.2x announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

from .predict import predict_from_samples, sample_posterior

__all__ = ["to_inference_data", "nuts_inference_data", "guide_inference_data",
           "weight_diagnostics", "function_space_diagnostics", "az"]


def _numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().double().numpy()


def to_inference_data(chain_samples: dict[str, torch.Tensor], *, diverging=None,
                      observed: dict | None = None):
    """Build an ``arviz.InferenceData`` from ``{name: (chains, draws, *shape)}`` tensors.

    Args:
        chain_samples: posterior draws grouped by chain.
        diverging: optional (chains, draws) boolean array of divergent transitions.
        observed: optional observed data ``{name: tensor}``.
    """
    posterior = {k: _numpy(v) for k, v in chain_samples.items()}
    stats = {"diverging": np.asarray(diverging, dtype=bool)} if diverging is not None else None
    obs = {k: _numpy(v) for k, v in observed.items()} if observed else None
    return az.from_dict(posterior=posterior, sample_stats=stats, observed_data=obs)


def nuts_inference_data(result, observed: dict | None = None):
    """InferenceData of a :class:`~hyperbayes.inference.nuts.NutsResult` (with divergences)."""
    diverging = np.zeros((result.num_chains, result.num_draws), dtype=bool)
    for chain, draws in enumerate(result.divergent_draws):
        diverging[chain, draws] = True
    return to_inference_data(result.chain_samples, diverging=diverging, observed=observed)


def guide_inference_data(model, guide, num_samples: int = 1000, num_chains: int = 1):
    """InferenceData of ``num_chains × num_samples`` independent draws from a guide.

    A guide's draws are independent, so their R-hat is ≈ 1 and ESS ≈ the number of draws;
    the InferenceData is for plots and summaries side by side with NUTS.
    """
    samples = sample_posterior(model, guide, num_samples * num_chains)
    return to_inference_data({k: v.reshape(num_chains, num_samples, *v.shape[1:])
                              for k, v in samples.items()})


def _extremes(dataset) -> tuple[float, float]:
    """(max R-hat, min bulk ESS) over every scalar of every variable in an xarray Dataset."""
    rhat = az.rhat(dataset, method="rank")
    ess = az.ess(dataset, method="bulk")
    max_rhat = max(float(np.nanmax(rhat[v].values)) for v in rhat.data_vars)
    min_ess = min(float(np.nanmin(ess[v].values)) for v in ess.data_vars)
    return max_rhat, min_ess


def weight_diagnostics(result) -> dict[str, float]:
    """Weight-space diagnostics of a NUTS run: max split R-hat, min bulk ESS, divergences.

    Weight-space R-hat of a BNN is not expected near 1: hidden units can swap and flip sign, so
    chains may sit in equivalent modes. Read :func:`function_space_diagnostics` for mixing.
    """
    max_rhat, min_ess = _extremes(nuts_inference_data(result).posterior)
    return {"max_rhat_weights": max_rhat, "min_ess_bulk_weights": min_ess,
            "divergences": int(sum(result.divergences))}


def function_space_diagnostics(model, result, x_grid: torch.Tensor) -> dict[str, float]:
    """Split R-hat (rank-normalized, Vehtari et al. 2021) and bulk ESS of the predictions f(x).

    Predictions at each grid point are invariant to the net's symmetries, so these diagnose
    whether the chains agree on the posterior over functions.
    """
    chains = [predict_from_samples(model, {k: v[c] for k, v in result.chain_samples.items()},
                                   x_grid).outputs for c in range(result.num_chains)]
    f = torch.stack(chains)  # (chains, draws, N, out)
    max_rhat, min_ess = _extremes(to_inference_data({"f": f}).posterior)
    return {"max_rhat": max_rhat, "min_ess_bulk": min_ess}
