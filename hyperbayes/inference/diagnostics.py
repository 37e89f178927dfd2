"""ArviZ conversion and MCMC diagnostics (the only module of hyperbayes that imports ArviZ).

A port to ArviZ 1.x would happen here: every other module asks this one for InferenceData,
summaries and PSIS-LOO.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import torch

with warnings.catch_warnings():  # ArviZ 0.2x announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

from . import trust
from .predict import predict_from_samples, sample_posterior, sample_prior
from .trust import THRESHOLDS, PosteriorWarning

__all__ = ["to_inference_data", "nuts_inference_data", "guide_inference_data",
           "weight_diagnostics", "function_space_diagnostics", "nuts_warnings",
           "site_dims", "pointwise_log_likelihood", "loo", "compare_loo", "summary",
           "PosteriorWarning", "az"]

#: per-draw NUTS statistics and their dtypes in ``sample_stats``
_STAT_DTYPES = {"diverging": bool, "tree_depth": np.int64, "n_steps": np.int64}


def _numpy(value: torch.Tensor) -> np.ndarray:
    value = value.detach().cpu()
    return value.numpy() if value.dtype in (torch.bool, torch.int64) else value.double().numpy()


def _dim_prefix(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def site_dims(model, names) -> dict[str, list[str]]:
    """Named dimensions of each site: a layer's weight ``fc0.weight`` (out, in, …) gets
    ``("fc0_out", "fc0_in", "fc0_k0", …)``, its bias and weight-norm scale ``("fc0_out",)``
    (shared, so ArviZ lines them up); any other site ``<site>_dim0, …``."""
    specs = getattr(getattr(model, "net", None), "param_specs", {}) if model is not None else {}
    dims = {}
    for name in names:
        spec = specs.get(name)
        if spec is None or not spec.shape:
            continue
        layer = _dim_prefix(name.rsplit(".", 1)[0]) if "." in name else _dim_prefix(name)
        if spec.role in ("weight", "direction") and len(spec.shape) >= 2:
            dims[name] = [f"{layer}_out", f"{layer}_in"] + [
                f"{layer}_k{i}" for i in range(len(spec.shape) - 2)]
        elif len(spec.shape) == 1 and spec.role in ("bias", "scale", "norm_scale",
                                                    "norm_shift"):
            dims[name] = [f"{layer}_out"]
        else:
            dims[name] = [f"{_dim_prefix(name)}_dim{i}" for i in range(len(spec.shape))]
    # a shared name must mean one size (a transposed convolution's weight is (in, out, …), a
    # module's own 1-d parameters need not match its outputs): ArviZ would pad with NaN
    sizes: dict[str, int] = {}
    for name, names_ in dims.items():
        for dim, size in zip(names_, specs[name].shape, strict=True):
            sizes.setdefault(dim, size)
        if any(sizes[dim] != size for dim, size in zip(names_, specs[name].shape, strict=True)):
            dims[name] = [f"{_dim_prefix(name)}_dim{i}" for i in range(len(specs[name].shape))]
    return dims


def pointwise_log_likelihood(model, samples: dict[str, torch.Tensor], x: torch.Tensor,
                             y: torch.Tensor, *, sample_chunk: int = 500) -> torch.Tensor:
    """log p(y_i | w_s, x_i) for every draw s and observation i: (S, N).

    Draws are evaluated ``sample_chunk`` at a time, all N inputs at once.
    """
    num = next(v.shape[0] for k, v in samples.items() if k in model.net.param_specs)
    target = _target(model, y)
    rows = []
    for start in range(0, num, sample_chunk):
        part = {k: v[start:start + sample_chunk] if v.dim() else v for k, v in samples.items()}
        rows.append(_predictive(model, part, x).log_prob(target.to(x.device)).cpu())
    return torch.cat(rows)


def _target(model, y: torch.Tensor) -> torch.Tensor:
    return y.unsqueeze(-1) if model.task == "regression" and y.dim() == 1 else y


def _predictive(model, samples, x):
    """The likelihood's distribution of y given each draw: batch (S, N)."""
    pred = predict_from_samples(model, samples, x)
    latents = {k: v for k, v in samples.items() if k not in model.net.param_specs}
    return model.likelihood.predictive(pred.outputs, latents)


def _replicated_y(model, samples, x, generator_seed: int = 0) -> torch.Tensor:
    """One replicated data set per draw, (S, N) (or (S, N, out) for several outputs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        y_rep = _predictive(model, samples, x).sample().cpu()
    return y_rep[..., 0] if model.task == "regression" and y_rep.shape[-1] == 1 else y_rep


def _observed(model, y: torch.Tensor) -> torch.Tensor:
    y = y.detach().cpu()
    return y[..., 0] if model.task == "regression" and y.dim() == 2 and y.shape[-1] == 1 else y


def to_inference_data(chain_samples: dict[str, torch.Tensor], *, diverging=None,
                      observed: dict | None = None, sample_stats: dict | None = None,
                      model=None, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                      prior_samples: int = 0, predictive: bool = True):
    """Build an ``arviz.InferenceData`` from ``{name: (chains, draws, *shape)}`` tensors.

    Args:
        chain_samples: posterior draws grouped by chain.
        diverging: optional (chains, draws) boolean array of divergent transitions (kept for
            callers that have only that; ``sample_stats`` supersedes it).
        observed: optional extra observed data ``{name: tensor}``.
        sample_stats: per-draw sampler statistics ``{name: (chains, draws)}``.
        model: the BNN the draws belong to: names the dimensions of its sites
            (:func:`site_dims`) and, with ``x`` and ``y``, adds ``log_likelihood`` (pointwise,
            dim ``obs``), ``posterior_predictive`` (one replicated y per draw),
            ``observed_data`` (y) and ``constant_data`` (x).
        x, y: the data the posterior is conditioned on.
        prior_samples: with a model, also ``prior`` (this many prior draws, one chain) and,
            with x, ``prior_predictive``.
        predictive: set False to skip ``posterior_predictive`` (log likelihood is kept).
    """
    posterior = {k: _numpy(v) for k, v in chain_samples.items()}
    stats = {k: _numpy(v).astype(_STAT_DTYPES.get(k, np.float64))
             for k, v in (sample_stats or {}).items()}
    if diverging is not None and "diverging" not in stats:
        stats["diverging"] = np.asarray(diverging, dtype=bool)
    obs = {k: _numpy(v) for k, v in (observed or {}).items()}
    groups: dict = {}
    dims = site_dims(model, chain_samples) if model is not None else {}
    if model is not None and x is not None and y is not None:
        chains, draws = next(iter(chain_samples.values())).shape[:2]
        flat = {k: v.reshape(chains * draws, *v.shape[2:]) for k, v in chain_samples.items()}
        log_lik = pointwise_log_likelihood(model, flat, x, y)
        groups["log_likelihood"] = {"y": _numpy(log_lik.reshape(chains, draws, -1))}
        if predictive:
            y_rep = _replicated_y(model, flat, x)
            groups["posterior_predictive"] = {
                "y": _numpy(y_rep.reshape(chains, draws, *y_rep.shape[1:]))}
        obs["y"] = _numpy(_observed(model, y))
        groups["constant_data"] = {"x": _numpy(x)}
        dims["y"] = ["obs"] + [f"y_dim{i}" for i in range(obs["y"].ndim - 1)]
        dims["x"] = ["obs"] + [f"x_dim{i}" for i in range(x.dim() - 1)]
    if model is not None and prior_samples:
        drawn = sample_prior(model, prior_samples)
        groups["prior"] = {k: _numpy(v.unsqueeze(0)) for k, v in drawn.items()}
        if x is not None:
            y_prior = _replicated_y(model, drawn, x, generator_seed=1)
            groups["prior_predictive"] = {"y": _numpy(y_prior.unsqueeze(0))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ArviZ: "more chains than draws" etc.
        return az.from_dict(posterior=posterior, sample_stats=stats or None,
                            observed_data=obs or None, dims=dims or None, **groups)


def nuts_inference_data(result, observed: dict | None = None, *, model=None,
                        prior_samples: int = 0, predictive: bool = True):
    """InferenceData of a :class:`~hyperbayes.inference.mcmc.NutsResult`.

    ``sample_stats`` has every statistic the sampler recorded (energy, diverging, tree depth,
    leapfrog steps, acceptance rate, step size, lp for the vectorized backend); with ``model``
    the sites get named dimensions and the groups ``log_likelihood``,
    ``posterior_predictive``, ``observed_data`` and ``constant_data`` are added from the data
    the run conditioned on (``prior`` / ``prior_predictive`` with ``prior_samples``).
    """
    stats = dict(result.sample_stats)
    if "diverging" not in stats:
        diverging = torch.zeros(result.num_chains, result.num_draws, dtype=torch.bool)
        for chain, draws in enumerate(result.divergent_draws):
            diverging[chain, draws] = True
        stats["diverging"] = diverging
    return to_inference_data(result.chain_samples, observed=observed, sample_stats=stats,
                             model=model, x=result.x if model is not None else None,
                             y=result.y if model is not None else None,
                             prior_samples=prior_samples, predictive=predictive)


def guide_inference_data(model, guide, num_samples: int = 1000, num_chains: int = 1, *,
                         data=None, prior_samples: int = 0, predictive: bool = True):
    """InferenceData of ``num_chains × num_samples`` independent draws from a guide.

    A guide's draws are independent, so their R-hat is ≈ 1 and ESS ≈ the number of draws;
    the InferenceData is for plots, summaries and PSIS-LOO side by side with NUTS. With
    ``data`` (a Split or ``(x, y)``) it has ``log_likelihood``, ``posterior_predictive`` and
    ``observed_data`` as :func:`nuts_inference_data` does.
    """
    samples = sample_posterior(model, guide, num_samples * num_chains)
    x = y = None
    if data is not None:
        x, y = (data.x, data.y) if hasattr(data, "x") else data
        device = next(iter(samples.values())).device
        x, y = x.to(device), y.to(device)
    grouped = {k: v.reshape(num_chains, num_samples, *v.shape[1:]) if v.dim() else
               v.expand(num_chains, num_samples) for k, v in samples.items()}
    return to_inference_data(grouped, model=model, x=x, y=y, prior_samples=prior_samples,
                             predictive=predictive)


def loo(idata, pointwise: bool = False):
    """PSIS-LOO (``arviz.loo``) of an InferenceData with a ``log_likelihood`` group."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k̂ warnings are reported in the result
        return az.loo(idata, pointwise=pointwise)


def compare_loo(idatas: dict):
    """Rank fits of the same data by PSIS-LOO (``arviz.compare``): a DataFrame, best first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)  # ArviZ's own use of pandas
        warnings.simplefilter("ignore", DeprecationWarning)
        return az.compare(idatas, ic="loo")


def summary(idata, var_names=None):
    """``arviz.summary`` (mean, sd, HDI, MCSE, bulk/tail ESS, rank R-hat) as a DataFrame."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.summary(idata, var_names=var_names)


def _extremes(dataset) -> tuple[float, float]:
    """(max R-hat, min bulk ESS) over every scalar of every variable in an xarray Dataset.

    A scalar that does not move within a chain has no defined R-hat (ArviZ: NaN); it counts
    as not mixed (R-hat inf, ESS 0) rather than being skipped.
    """
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = az.rhat(dataset, method="rank")
        ess = az.ess(dataset, method="bulk")
    max_rhat = max(float(np.nan_to_num(rhat[v].values, nan=np.inf).max())
                   for v in rhat.data_vars)
    min_ess = min(float(np.nan_to_num(ess[v].values, nan=0.0).min()) for v in ess.data_vars)
    return max_rhat, min_ess


def weight_diagnostics(result) -> dict[str, float]:
    """Weight-space diagnostics of a NUTS run: max split R-hat, min bulk ESS, divergences.

    Weight-space R-hat of a BNN is not expected near 1: hidden units can swap and flip sign, so
    chains may sit in equivalent modes. Read :func:`function_space_diagnostics` for mixing.
    """
    max_rhat, min_ess = _extremes(to_inference_data(result.chain_samples).posterior)
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


def nuts_warnings(model, result, *, x: torch.Tensor | None = None, emit: bool = False,
                  max_points: int = 200) -> list[str]:
    """The reasons not to trust a NUTS run, one message each (empty: none found).

    Checks (thresholds in :data:`hyperbayes.inference.trust.THRESHOLDS`): divergent
    transitions after warm-up; rank R-hat of the predictions f(x) above 1.01 and their bulk
    ESS under 100 per chain, at ``x`` (default: up to ``max_points`` of the training inputs;
    weights are not identifiable, predictions are); E-BFMI under 0.3 in any chain (needs the
    energies of the vectorized backend). With ``emit`` each message is also a
    :class:`PosteriorWarning`.
    """
    messages = []
    total = result.num_chains * result.num_draws
    n_div = int(sum(result.divergences))
    if n_div:
        messages.append(f"NUTS: {n_div} of {total} transitions after warm-up diverged: the "
                        "sampler missed regions of high curvature, so the draws are biased; "
                        "raise target_accept or reparametrize the prior")
    points = x if x is not None else result.x
    if points is not None and result.num_chains > 1:
        points = points[:max_points]
        fs = function_space_diagnostics(model, result, points)
        if fs["max_rhat"] > THRESHOLDS["max_rhat"]:
            messages.append(f"NUTS: the chains disagree on the predictions (max rank R-hat "
                            f"{fs['max_rhat']:.3f} > {THRESHOLDS['max_rhat']}): they have not "
                            "mixed; run longer or start closer")
        need = THRESHOLDS["min_ess_bulk_per_chain"] * result.num_chains
        if fs["min_ess_bulk"] < need:
            messages.append(f"NUTS: bulk ESS of the predictions is {fs['min_ess_bulk']:.0f}, "
                            f"under {need:.0f} (100 per chain): too few effective draws for "
                            "reliable means and intervals; draw more")
    energy = result.sample_stats.get("energy")
    if energy is not None and energy.shape[1] > 1:
        bfmi = az.bfmi(_numpy(energy))
        if float(np.min(bfmi)) < THRESHOLDS["min_bfmi"]:
            messages.append(f"NUTS: E-BFMI {float(np.min(bfmi)):.2f} < {THRESHOLDS['min_bfmi']} "
                            "in some chain: the momenta explore the energy levels poorly (heavy "
                            "tails or a funnel); reparametrize")
    if emit:
        trust.emit(messages)
    return messages
