"""One diagnostics page for a fitted model + guide, optionally against a NUTS reference."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from . import diagnostics
from .compare import compare
from .predict import predict
from .quality import NoDensityError, vi_quality

__all__ = ["diagnose"]


def diagnose(model, guide, data, *, reference=None, reference_model=None,
             x_grid: torch.Tensor | None = None, train_range: tuple[float, float] | None = None,
             out: str | Path | None = None, num_samples: int = 1000, iw_samples: int = 2000,
             name: str = "guide", fit_warnings: list[str] | None = None) -> dict:
    """Diagnose a fitted guide (and a NUTS run of the same model, if given); write a page.

    What it computes: the guide's VI quality (ELBO, importance-weighted bound, PSIS k̂ with
    its reading; :func:`hyperbayes.inference.vi_quality`) where the guide has a density; the
    PSIS-LOO of the guide and of NUTS on the training data and their ranking
    (``arviz.compare``); for NUTS the ArviZ summary of its scalars, E-BFMI per chain and the
    trust checks (:func:`~hyperbayes.inference.diagnostics.nuts_warnings`); for regression
    with ``x_grid``, the function-space comparison with NUTS (std ratios in and out of
    ``train_range``, W₁; :func:`hyperbayes.inference.compare`).

    Args:
        model, guide: the fitted pair.
        data: the ``(x, y)`` (or Split) the guide was fitted to.
        reference: a :class:`~hyperbayes.inference.mcmc.NutsResult` on ``data``.
        reference_model: the model NUTS sampled (default ``model``; give the plain BNN when
            the guide's model differs, e.g. MC dropout's net).
        x_grid, train_range: inputs for the function-space comparison and the range of the
            training inputs (default: the min and max of the first input feature).
        out: a folder for ``report.md``, ``diagnostics.json`` and PNGs (energy and rank plots
            of NUTS, posterior predictive checks); None writes nothing.
        num_samples: guide draws for PSIS-LOO and the predictive checks.
        iw_samples: importance samples for the VI-quality numbers.
        name: the guide's label in the tables.
        fit_warnings: the fit's trust warnings (``FitResult.warnings``), listed on the page.

    Returns:
        The numbers of the page as a dict (what ``diagnostics.json`` holds).
    """
    x, y = (data.x, data.y) if hasattr(data, "x") else data
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"out={str(out)!r} is a file; give a folder")
    result: dict = {"guide": name, "fit_warnings": list(fit_warnings or [])}
    ref_model = reference_model if reference_model is not None else model
    try:
        result["vi_quality"] = vi_quality(model, guide, (x, y), iw_samples)
    except NoDensityError as err:
        result["vi_quality"] = {"skipped": str(err)}
    idata = {name: diagnostics.guide_inference_data(model, guide, num_samples, data=(x, y))}
    if reference is not None:
        idata["nuts"] = diagnostics.nuts_inference_data(reference, model=ref_model)
        result["nuts"] = {"warnings": diagnostics.nuts_warnings(ref_model, reference),
                          "divergences": int(sum(reference.divergences)),
                          "num_chains": reference.num_chains, "num_draws": reference.num_draws,
                          "wall_time_s": reference.wall_time_s}
        if "energy" in reference.sample_stats:
            result["nuts"]["bfmi"] = [float(b) for b in diagnostics.az.bfmi(idata["nuts"])]
        summary = diagnostics.summary(idata["nuts"])
        result["nuts"]["summary"] = summary.reset_index().to_dict(orient="records")
    result["loo"] = {k: _loo_numbers(diagnostics.loo(v)) for k, v in idata.items()}
    if len(idata) > 1:
        ranking = diagnostics.compare_loo(idata)
        result["loo_ranking"] = [{"method": k, "rank": int(r["rank"]),
                                  "elpd_loo": float(r["elpd_loo"]),
                                  "elpd_diff": float(r["elpd_diff"]), "dse": float(r["dse"])}
                                 for k, r in ranking.iterrows()]
    if reference is not None and model.task == "regression":
        grid = x_grid if x_grid is not None else x
        first = x.reshape(len(x), -1)[:, 0]
        lo_hi = train_range or (float(first.min()), float(first.max()))
        pred = predict(model, guide, grid, num_samples=num_samples).to("cpu")
        ref_pred = reference.predict(ref_model, grid).to("cpu")
        result["function_space"] = compare(pred, ref_pred, grid.cpu(), lo_hi)
    if out is not None:
        _write(out, result, idata)
    return result


def _loo_numbers(loo) -> dict:
    khat = loo.pareto_k.values if hasattr(loo, "pareto_k") else None
    return {"elpd_loo": float(loo.elpd_loo), "se": float(loo.se), "p_loo": float(loo.p_loo),
            "max_pareto_k": None if khat is None else float(khat.max()),
            "pareto_k_over_0.7": None if khat is None else int((khat > 0.7).sum())}


def _write(out: Path, result: dict, idata: dict) -> None:
    """report.md, diagnostics.json and the PNGs."""
    from ..experiments.common import markdown_table, plotting, write_json, write_text

    plt, _ = plotting()
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # ArviZ 0.23's own use of a deprecated matplotlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        figures = _plots(out, idata, plt)
    write_json(out / "diagnostics.json", result)
    _page(out, result, figures, markdown_table, write_text)


def _plots(out: Path, idata: dict, plt) -> list[tuple[str, str]]:
    """Energy and rank plots of NUTS, a posterior predictive check of each fit."""
    figures = []
    az = diagnostics.az
    if "nuts" in idata and "energy" in idata["nuts"].sample_stats:
        az.plot_energy(idata["nuts"])
        fig = plt.gcf()
        fig.suptitle("NUTS energy: marginal vs transition (similar widths: E-BFMI ≈ 1)")
        figures.append(("energy.png", "NUTS energy distribution and energy transitions"))
        fig.savefig(out / "energy.png", dpi=110, bbox_inches="tight")
        plt.close("all")
    if "nuts" in idata:
        posterior = idata["nuts"].posterior
        first = next(iter(posterior.data_vars))
        coords = {d: list(range(min(2, posterior.sizes[d])))
                  for d in posterior[first].dims if d not in ("chain", "draw")}
        axes = az.plot_rank(idata["nuts"], var_names=[first], coords=coords)
        fig = axes.ravel()[0].figure if hasattr(axes, "ravel") else plt.gcf()
        fig.suptitle("NUTS rank plots: uniform bars mean the chains mix")
        figures.append(("rank.png", f"rank plots of the first scalars of {first}"))
        fig.savefig(out / "rank.png", dpi=110, bbox_inches="tight")
        plt.close("all")
    for key, data in idata.items():
        az.plot_ppc(data, num_pp_samples=50)
        fig = plt.gcf()
        fig.suptitle(f"{key}: posterior predictive check (replicated y vs observed)")
        figures.append((f"ppc_{key}.png", f"posterior predictive check, {key}"))
        fig.savefig(out / f"ppc_{key}.png", dpi=110, bbox_inches="tight")
        plt.close("all")
    return figures


def _page(out: Path, result: dict, figures, markdown_table, write_text) -> None:
    """report.md."""
    lines = [f"# Diagnostics: {result['guide']}", ""]
    lines += [f"- fit warning: {w}" for w in result["fit_warnings"]] or [
        "The fit's checks (loss trend, spread collapse) passed."]
    lines.append("")
    quality = result["vi_quality"]
    if "skipped" in quality:
        lines += [f"VI quality: not computed ({quality['skipped']}).", ""]
    else:
        lines += ["## How close the guide is to the posterior", "",
                  markdown_table([quality], ["elbo", "elbo_se", "iwae", "kl_lower_bound",
                                             "khat", "khat_reading", "ess_fraction"]), ""]
    lines += ["## PSIS-LOO on the training data", "",
              markdown_table([{"fit": k, **v} for k, v in result["loo"].items()],
                             ["fit", "elpd_loo", "se", "p_loo", "max_pareto_k",
                              "pareto_k_over_0.7"]), ""]
    if "loo_ranking" in result:
        lines += [markdown_table(result["loo_ranking"],
                                 ["method", "rank", "elpd_loo", "elpd_diff", "dse"]), "",
                  "elpd_diff: expected log predictive density below the best; dse: its "
                  "standard error (a difference within ~2 dse is not a difference).", ""]
    if "nuts" in result:
        n = result["nuts"]
        lines += ["## NUTS reference", "",
                  f"{n['num_chains']} chains × {n['num_draws']} draws, {n['divergences']} "
                  f"divergences, E-BFMI {', '.join(f'{b:.2f}' for b in n.get('bfmi', []))}.",
                  ""]
        lines += [f"- warning: {w}" for w in n["warnings"]] or ["No NUTS check failed."]
        lines.append("")
        rows = n["summary"][:12]
        if rows:
            lines += [markdown_table(rows, list(rows[0])), ""]
    if "function_space" in result:
        lines += ["## Against NUTS in function space", "",
                  markdown_table([result["function_space"]], list(result["function_space"])),
                  ""]
    lines += [f"![{caption}]({file})\n\n*{caption}.*\n" for file, caption in figures]
    write_text(out / "report.md", "\n".join(lines))



def diagnose_toy(method: str = "meanfield", toy: str = "cubic", *, nuts_draws: int = 500,
                 steps: int | None = None, quick: bool = False, device="auto", seed: int = 0,
                 out: str | Path = "results/diagnose") -> dict:
    """``hyperbayes diagnose``: fit a registered method on a regression toy by its recipe
    (1-50-1 net, N(0, 1/fan_in) prior, the toy's known noise, standardized data as in
    ``toy-regression``), sample NUTS on the same model (4 chains × ``nuts_draws`` after as
    many warm-up iterations; none when ``nuts_draws`` is 0) and write :func:`diagnose`'s page
    to ``out``. ``quick``: 300 SVI steps and 100 NUTS draws."""
    from .. import datasets, methods
    from ..models import BNN, MLP, Gaussian, priors
    from .device import resolve_device
    from .mcmc import nuts
    from .svi import fit

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out={str(out)!r} is a file; give a folder")
    methods.get(method)  # an unknown name raises with the list of known ones
    device = resolve_device(device)
    data = datasets.load(toy, seed=seed)
    if "train_range" not in data.info:
        raise ValueError(f"{toy!r} is not a 1-d regression toy; use cubic or blundell")
    lo, hi = data.info["train_range"]
    x_center, x_scale = (lo + hi) / 2, (hi - lo) / 2
    y_scale = float(data.train.y.std())
    train = ((data.train.x - x_center) / x_scale, data.train.y / y_scale)
    grid = (data.test.x - x_center) / x_scale

    def parts():
        return ([1, 50, 1], priors.FanInNormal(1.0),
                Gaussian(scale=data.info["noise_std"] / y_scale))

    model, guide, loss, overrides = methods.setup(method, "regression", *parts(), seed=seed)
    options = methods.fit_options({"lr": 1e-2, "loss": loss, **overrides},
                                  steps or (300 if quick else 4000))
    fitted = fit(model, guide, train, device=device, seed=seed, warn="record", **options)
    reference = None
    draws = 100 if quick else nuts_draws
    if draws:
        _, prior, likelihood = parts()
        ref_model = BNN(MLP([1, 50, 1]), prior, likelihood)
        reference = nuts(ref_model, train, num_samples=draws, warmup=draws, num_chains=4,
                         seed=seed, warn=False)
    model.cpu()
    return diagnose(model, guide, train, reference=reference,
                    reference_model=ref_model if draws else None, x_grid=grid,
                    train_range=(-1.0, 1.0), out=out, name=method,
                    fit_warnings=fitted.warnings)
