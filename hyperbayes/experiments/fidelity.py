"""fidelity: every registered method on every toy (cubic, Blundell, product) against NUTS.

Each method is set up by its ``"regression"`` recipe (:func:`hyperbayes.methods.setup`), so a
new method joins without code here. On the two regression toys the numbers are those of
``toy-regression`` (predictive std ratio to NUTS inside and outside the data range, the W₁
distance between predictive distributions of f(x), test log-likelihood); on the product toy
ŷ = a·b·x, whose posterior has two modes (a = b = ±1), the mass each method puts near each mode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .. import datasets, methods
from ..inference import fit, resolve_device, sample_posterior, set_seed
from ..inference.diagnostics import nuts_warnings
from ..inference.mcmc import nuts
from ..models import BNN, MLP, Gaussian, priors
from . import toy_regression
from .common import (
    KL_CHECK_COLUMNS,
    KL_CHECK_NOTE,
    VI_QUALITY_COLUMNS,
    VI_QUALITY_NOTE,
    ExperimentResult,
    experiment,
    finish,
    kl_check_cells,
    plotting,
    recipes_used,
    trust_lines,
    vi_quality_cells,
)
from .suite import render_tables, table
from .zoo import suite_methods

__all__ = ["run", "Settings", "TOYS"]

# toy → (load options, centre the targets) as in bhn-toy; the product toy is handled apart
TOYS = {"cubic": ({}, False), "blundell": ({"n_train": 50}, True), "product": ({}, False)}
MODE_MASS = 0.05  # a mode is "covered" when it holds at least this share of the draws


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: the regression toys' (``toy-regression``'s) and the product toy's."""

    regression: toy_regression.Settings = field(default_factory=toy_regression.Settings)
    toys: tuple = ("cubic", "blundell", "product")
    product_steps: int = 3000
    product_lr: float = 5e-3
    product_draws: int = 4000
    product_nuts_chains: int = 8
    product_nuts_samples: int = 500

    @classmethod
    def quick(cls) -> Settings:
        """Short VI runs and short NUTS chains (a few minutes on 2 cores)."""
        return cls(regression=replace(toy_regression.Settings.quick(), vi_steps=600,
                                      pred_samples=200),
                   product_steps=600, product_draws=1000, product_nuts_chains=4,
                   product_nuts_samples=100)

    @classmethod
    def smoke(cls) -> Settings:
        """Tiny settings for tests: seconds per method, nothing converges."""
        return cls(regression=toy_regression.Settings(
                       hidden=8, vi_steps=20, pred_samples=20, nuts_chains=2, nuts_warmup=10,
                       nuts_samples=10, nuts_max_tree_depth=3),
                   product_steps=20, product_draws=50, product_nuts_chains=2,
                   product_nuts_samples=10)


@experiment
def run(methods_to_run=None, *, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/fidelity", settings: Settings | None = None,
        progress: bool | None = None, overrides: dict | None = None) -> ExperimentResult:
    """Fit every method and NUTS on each toy; write metrics.json (``toys[toy][method]``),
    tables, fidelity.png and report.md. ``overrides`` (``{method: {option: value}}``,
    ``--option METHOD.KEY=VALUE``) are laid over the methods' regression recipes and recorded
    under ``recipes``."""
    start = time.perf_counter()
    settings = settings or (Settings.quick() if quick else Settings())
    names = [m for m in (methods_to_run or suite_methods()) if m != "nuts"]
    overrides = overrides or {}
    for name in [*names, *overrides]:
        methods.get(name)  # unknown names raise with the list of known ones
    bad = [t for t in settings.toys if t not in TOYS]
    if bad:
        raise ValueError(f"unknown toy(s) {bad}; choose from {list(TOYS)}")
    device = resolve_device(device)
    results, studies, product = {}, {}, None
    for toy in settings.toys:
        if toy == "product":
            product = _product(names, settings, seed=seed, device=device, progress=progress,
                               overrides=overrides)
            results[toy] = product["metrics"]
            continue
        load_options, center_y = TOYS[toy]
        data = datasets.load(toy, seed=seed, **load_options)
        studies[toy] = toy_regression.study(data, ["nuts", *names], settings.regression,
                                            seed=seed, device=device, progress=progress,
                                            center_y=center_y, overrides=overrides)
        results[toy] = studies[toy].results
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "fidelity.png"
    _figure(figure, results, names, product)
    tables = _tables(results, names)
    return finish("fidelity", out, start, seed=seed, quick=quick, device=device,
                  settings=settings, report=lambda p: _report(p, figure.name), figures=[figure],
                  seeds=[seed], recipes=recipes_used(names, "regression", overrides),
                  toys=results, tables=tables)


def _product(names, settings: Settings, *, seed, device, progress, overrides) -> dict:
    """Every method and NUTS on ŷ = a·b·x; the share of draws near a = b = 1 and a = b = −1."""
    data = datasets.load("product", seed=seed)
    noise = data.info["noise_std"]
    metrics, draws = {}, {}
    set_seed(seed)
    t0 = time.perf_counter()
    reference = BNN(MLP([1, 1, 1], "identity", bias=False), priors.Normal(1.0), Gaussian(noise))
    result = nuts(reference, data.train, num_samples=settings.product_nuts_samples,
                  warmup=settings.product_nuts_samples, num_chains=settings.product_nuts_chains,
                  seed=seed, progress=progress, warn=False)
    ref = result.samples
    draws["nuts"] = (ref["fc0.weight"].reshape(-1), ref["fc1.weight"].reshape(-1))
    metrics["nuts"] = {"wall_time_s": time.perf_counter() - t0,
                       "warnings": nuts_warnings(reference, result)}
    for name in names:
        set_seed(seed)
        t0 = time.perf_counter()
        model, guide, loss, recipe_fit = methods.setup(
            name, "regression", [1, 1, 1], priors.Normal(1.0), Gaussian(noise), seed=seed,
            activation="identity", bias=False, **overrides.get(name, {}))
        fitted = fit(model, guide, data.train, **methods.fit_options(
            {"lr": settings.product_lr, "loss": loss, **recipe_fit}, settings.product_steps),
            device=device, seed=seed, progress=progress, warn="record")
        with torch.no_grad():
            sample = sample_posterior(model, guide, settings.product_draws)
        draws[name] = (sample["fc0.weight"].detach().reshape(-1).cpu(),
                       sample["fc1.weight"].detach().reshape(-1).cpu())
        metrics[name] = {"wall_time_s": time.perf_counter() - t0,
                         "warnings": fitted.warnings}
    for name, (a, b) in draws.items():
        pos = float(((a > 0) & (b > 0)).float().mean())
        neg = float(((a < 0) & (b < 0)).float().mean())
        metrics[name].update({"mode_mass_pos": pos, "mode_mass_neg": neg,
                              "modes_covered": int(pos >= MODE_MASS) + int(neg >= MODE_MASS),
                              "ab_mean": float((a * b).mean()), "ab_std": float((a * b).std())})
    return {"metrics": metrics, "draws": draws}


def _tables(results: dict, names) -> list[dict]:
    """One table for the regression toys (method × toy rows) and one for the product toy."""
    tables = []
    rows = []
    for toy, per_method in results.items():
        if toy == "product":
            continue
        for name in names:
            r = per_method[name]
            rows.append({"toy": toy, "method": name,
                         "std ratio in data": r["std_ratio_in_data"],
                         "std ratio out of data": r["std_ratio_out_of_data"],
                         "W₁ to NUTS": r["predictive_distance"],
                         "test log-lik": r["test_log_likelihood"],
                         "NUTS test log-lik": per_method["nuts"]["test_log_likelihood"],
                         "train s": r["wall_time_s"]})
    if rows:
        tables.append(table(
            "Regression toys: each method against NUTS", ["toy", "method", "std ratio in data",
                                                          "std ratio out of data", "W₁ to NUTS",
                                                          "test log-lik", "NUTS test log-lik",
                                                          "train s"], rows,
            note="std ratios are the method's predictive std of f(x) over NUTS's, averaged over "
                 "grid points inside / outside the training range (1 matches NUTS, < 1 "
                 "over-confident); W₁ is the Wasserstein-1 distance between the two "
                 "distributions of f(x), averaged over the grid (0 matches NUTS). No paper "
                 "reports these numbers."))
    rows = [{"toy": toy, "method": name, **vi_quality_cells(per_method[name].get("vi_quality"))}
            for toy, per_method in results.items() if toy != "product" for name in names]
    if rows:
        tables.append(table("Regression toys: how close each guide is to the posterior",
                            ["toy", "method", *VI_QUALITY_COLUMNS], rows,
                            note=VI_QUALITY_NOTE + " A method wider than NUTS with a large "
                                 "IWAE − ELBO and k̂ > 0.7 is under-fitting, not cautious."))
    rows = [{"toy": toy, "method": name, **kl_check_cells(per_method[name]["kl_check"])}
            for toy, per_method in results.items() if toy != "product" for name in names
            if per_method.get(name, {}).get("kl_check")]
    if rows:
        tables.append(table("Regression toys: the implicit guides' KL estimates against a "
                            "lower bound", ["toy", "method", *KL_CHECK_COLUMNS], rows,
                            note=KL_CHECK_NOTE))
    if "product" in results:
        per = results["product"]
        rows = [{"method": name, "mass near a = b = 1": r["mode_mass_pos"],
                 "mass near a = b = −1": r["mode_mass_neg"], "modes covered": r["modes_covered"],
                 "mean a·b": r["ab_mean"], "std a·b": r["ab_std"]}
                for name, r in per.items()]
        tables.append(table(
            "Product toy ŷ = a·b·x: posterior modes", ["method", "mass near a = b = 1",
                                                      "mass near a = b = −1", "modes covered",
                                                      "mean a·b", "std a·b"], rows,
            note=f"A mode is covered when it holds ≥ {MODE_MASS:.0%} of the draws. NUTS chains "
                 "do not cross between modes, so its shares reflect where the chains started. "
                 "The BHN paper (Fig. 2) shows its flow keeping both modes (no numbers)."))
    return tables


def _figure(path: Path, results: dict, names, product) -> None:
    """Left: W₁ to NUTS per method and regression toy; right: the product toy's (a, b) draws."""
    plt, sns = plotting()
    regression = [t for t in results if t != "product"]
    cols = 1 + (product is not None)
    fig, axes = plt.subplots(1, cols, figsize=(7.2 * cols, 4.2), squeeze=False)
    ax = axes[0, 0]
    if regression:
        rows = [{"toy": toy, "method": name,
                 "W₁ to NUTS": results[toy][name]["predictive_distance"]}
                for toy in regression for name in names]
        sns.barplot(data=_frame(rows), x="method", y="W₁ to NUTS", hue="toy", ax=ax)
        ax.set_yscale("log")
        ax.set_title("distance of each predictive to NUTS's (lower is closer)")
        ax.tick_params(axis="x", rotation=30)
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if product is not None:
        ax = axes[0, 1]
        palette = sns.color_palette("tab10", len(product["draws"]))
        for colour, (name, (a, b)) in zip(palette, product["draws"].items(), strict=True):
            keep = slice(0, 400)
            ax.scatter(a[keep], b[keep], s=4, alpha=0.5, color=colour, label=name)
        ax.set_xlabel("a")
        ax.set_ylabel("b")
        ax.set_title("product toy: (a, b) draws")
        ax.legend(fontsize=7, markerscale=3, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _frame(rows):
    """A pandas DataFrame (seaborn's input) from row dicts."""
    import pandas as pd

    return pd.DataFrame(rows)


def _report(payload: dict, figure: str) -> str:
    """report.md: settings, the tables and the figure."""
    s = payload["settings"]
    r = s["regression"]
    return "\n".join([
        "# fidelity: every method on every toy against NUTS", "",
        f"Toys {', '.join(s['toys'])}. Regression toys: 1-{r['hidden']}-1 ReLU, "
        f"N(0, 1/fan_in) prior, each method as its regression recipe says "
        f"({r['vi_steps']} steps unless the recipe changes the fit), {r['pred_samples']} "
        f"predictive samples; NUTS {r['nuts_chains']} chains × {r['nuts_samples']} draws. "
        f"Product toy: N(0, 1) priors on a and b, {s['product_steps']} steps, "
        f"{s['product_draws']} draws; NUTS {s['product_nuts_chains']} chains × "
        f"{s['product_nuts_samples']} draws.", "",
        render_tables(payload["tables"]),
        *trust_lines({f"{toy}/{name}": vals for toy, per in payload["toys"].items()
                      for name, vals in per.items() if isinstance(vals, dict)}),
        f"![{figure}]({figure})", ""])
