"""The main job: every method on the cubic toy against a NUTS reference, in function space.

Data: x ~ U[−4, 4], 20 points, y = x³ + N(0, 3²) (Hernández-Lobato & Adams, 2015), test grid on
[−6, 6]. Inputs are divided by 4 and targets by their training standard deviation before
fitting (the noise scale follows), which makes the posterior far better conditioned for NUTS;
every number and figure is reported back in the original units.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import datasets, methods
from ..guides.contract import is_implicit
from ..inference import fit, metrics, predict, resolve_device, set_seed
from ..inference.compare import compare, in_range_mask
from ..inference.diagnostics import (
    function_space_diagnostics,
    nuts_inference_data,
    nuts_warnings,
    weight_diagnostics,
)
from ..inference.mcmc import nuts
from ..inference.predict import Prediction
from ..inference.quality import implicit_kl_check, vi_quality
from ..models import BNN, MLP, Gaussian, priors
from .common import (
    VI_QUALITY_COLUMNS,
    VI_QUALITY_NOTE,
    ExperimentResult,
    experiment,
    finish,
    kl_check_lines,
    markdown_table,
    plotting,
    recipes_used,
    trust_lines,
    vi_quality_cells,
)

__all__ = ["run", "study", "band_axes", "ToyStudy", "Settings", "WideSettings",
           "DEFAULT_METHODS"]

DEFAULT_METHODS = ("map", "meanfield", "mcdropout", "nuts")


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; ``quick`` is for tests and notebooks (≤ 2 minutes on 2 cores)."""

    hidden: int = 50
    vi_steps: int = 4000
    lr: float = 1e-2
    pred_samples: int = 1000
    nuts_chains: int = 4
    nuts_warmup: int = 200
    nuts_samples: int = 200
    nuts_max_tree_depth: int = 6  # a cap keeps the demo < 5 min; R-hat/ESS report the mixing
    iw_samples: int = 2000  # draws of q for the ELBO, IWAE bound and PSIS k̂ of each guide

    @classmethod
    def quick(cls) -> Settings:
        """Small settings."""
        return cls(vi_steps=1000, pred_samples=300, nuts_chains=2, nuts_warmup=100,
                   nuts_samples=100, nuts_max_tree_depth=5)


@dataclass(frozen=True)
class WideSettings(Settings):
    """The toy study's settings on the 1-100-1 net of the Bayes-by-Hypernet and MetaPrior
    papers' toys."""

    hidden: int = 100


@dataclass
class ToyStudy:
    """Every method on one regression toy against NUTS, in the toy's original units.

    Attributes:
        data: the toy Dataset.
        results: per method its metrics (and for NUTS its diagnostics).
        preds: per method its Prediction of f on the test grid, in fitted (standardized) units.
        reference: NUTS's Prediction (or None without NUTS).
        y_center, y_scale: the standardization of targets (f = pred.f · y_scale + y_center).
        x_center, x_scale: the standardization of inputs (fitted x = (x − x_center) / x_scale).
        fitted: per VI method its trained ``(model, guide)`` (in fitted units), for probes.
    """

    data: object
    results: dict
    preds: dict
    reference: Prediction | None
    y_center: float
    y_scale: float
    x_center: float = 0.0
    x_scale: float = 1.0
    fitted: dict = field(default_factory=dict)


def study(data, methods_to_run, settings: Settings, *, seed: int = 0, device="cpu",
          progress: bool | None = None, family: str = "regression",
          overrides: dict | None = None, center_y: bool = False) -> ToyStudy:
    """Fit each method (and NUTS) on a 1-d regression toy and compare each with NUTS.

    Inputs are mapped to [−1, 1] over the training range and targets divided by their training
    std (and centred with ``center_y``), which makes the posterior far better conditioned for
    NUTS; metrics are in the original units. Every method is a registered name (variants and
    ``flow-<K>`` included), set up by its recipe for ``family`` (``"regression"``, or
    ``"regression/<task>"`` where a task's protocol has its own: see
    :func:`hyperbayes.methods.setup`); ``overrides`` maps a name to build options that replace
    its recipe's.
    """
    overrides = overrides or {}
    for name in [m for m in methods_to_run if m != "nuts"] + list(overrides):
        methods.get(name)  # unknown names raise with the list of known ones
    lo, hi = data.info["train_range"]
    x_center, x_scale = (lo + hi) / 2, (hi - lo) / 2
    y_center = float(data.train.y.mean()) if center_y else 0.0
    y_scale = float(data.train.y.std())
    noise = data.info["noise_std"] / y_scale
    train = ((data.train.x - x_center) / x_scale, (data.train.y - y_center) / y_scale)
    x_grid = (data.test.x - x_center) / x_scale

    def make_parts():
        return MLP([1, settings.hidden, 1]), priors.FanInNormal(1.0), Gaussian(scale=noise)

    results: dict[str, dict] = {}
    preds: dict[str, Prediction] = {}
    timings: dict[str, float] = {}
    fitted: dict[str, tuple] = {}
    reference = None
    if "nuts" in methods_to_run:
        set_seed(seed)
        t0 = time.perf_counter()
        net, prior, lik = make_parts()
        ref_model = BNN(net, prior, lik)
        draws = nuts(ref_model, train, num_samples=settings.nuts_samples,
                     warmup=settings.nuts_warmup, num_chains=settings.nuts_chains, seed=seed,
                     max_tree_depth=settings.nuts_max_tree_depth, progress=progress,
                     warn=False)
        reference = draws.predict(ref_model, x_grid)
        fs = function_space_diagnostics(ref_model, draws, x_grid)
        ws = weight_diagnostics(draws)
        timings["nuts"] = time.perf_counter() - t0
        results["nuts"] = {"max_rhat": fs["max_rhat"], "min_ess_bulk": fs["min_ess_bulk"],
                           "max_rhat_weights": ws["max_rhat_weights"],
                           "min_ess_bulk_weights": ws["min_ess_bulk_weights"],
                           "divergences": ws["divergences"],
                           "num_chains": draws.num_chains, "num_draws": draws.num_draws,
                           "step_sizes": draws.step_sizes, "sampling_s": draws.wall_time_s,
                           "bfmi": [float(b) for b in _bfmi(draws)],
                           "warnings": nuts_warnings(ref_model, draws, x=x_grid)}
        preds["nuts"] = reference

    for label in methods_to_run:
        if label == "nuts":
            continue
        t0 = time.perf_counter()
        _, prior, lik = make_parts()
        model, guide, loss, recipe_fit = methods.setup(
            label, family, [1, settings.hidden, 1], prior, lik, seed=seed,
            **overrides.get(label, {}))
        fit_options = methods.fit_options({"lr": settings.lr, "loss": loss, **recipe_fit},
                                          settings.vi_steps)
        fitted_result = fit(model, guide, train, device=device, seed=seed, progress=progress,
                            warn="record", **fit_options)
        preds[label] = predict(model, guide, x_grid.to(device), settings.pred_samples).to("cpu")
        fitted[label] = (model, guide)
        timings[label] = time.perf_counter() - t0
        # how far q is from the posterior, on the standardized data it was fitted to
        results[label] = {"vi_quality": vi_quality(model, guide, train, settings.iw_samples,
                                                   device=device),
                          "warnings": fitted_result.warnings}
        if is_implicit(guide):  # no density: check the loss's KL estimate against a bound
            results[label]["kl_check"] = implicit_kl_check(model, guide, loss, train,
                                                           device=device)

    y_test = data.test.y[:, 0]
    inside = in_range_mask(data.test.x, data.info["train_range"])
    ref_scaled = (Prediction(reference.outputs * y_scale + y_center, "regression")
                  if reference is not None else None)
    for label, pred in preds.items():
        f = pred.f * y_scale + y_center
        entry = results[label]
        entry["test_log_likelihood"] = metrics.gaussian_log_likelihood(
            f, y_test, data.info["noise_std"])
        entry["rmse"] = metrics.rmse(f, y_test)
        entry["rmse_in_data"] = metrics.rmse(f[:, inside], y_test[inside])
        if ref_scaled is not None and label != "nuts":
            scaled = Prediction(pred.outputs * y_scale + y_center, "regression")
            entry.update(compare(scaled, ref_scaled, data.test.x, data.info["train_range"]))
        entry["wall_time_s"] = timings[label]
    return ToyStudy(data, results, preds, reference, y_center, y_scale, x_center, x_scale, fitted)


def _bfmi(draws) -> list[float]:
    """E-BFMI per chain (empty when the sampler recorded no energies)."""
    if "energy" not in draws.sample_stats:
        return []
    from ..inference.diagnostics import az

    return list(az.bfmi(nuts_inference_data(draws)))


def band_axes(axes, toy: ToyStudy, names, ylim=None, true_label="true f") -> None:
    """Draw, on each axis, one method's ±2σ band of f over NUTS's band and the data."""
    _, sns = plotting()
    data = toy.data
    xs = data.test.x[:, 0].numpy()
    palette = sns.color_palette("deep")
    for ax, name in zip(axes, names, strict=False):
        for pred, label, color in ((toy.reference, "NUTS", "0.35"),
                                   (toy.preds[name], name, palette[0])):
            if pred is None:
                continue
            mean = pred.f.mean(0).numpy() * toy.y_scale + toy.y_center
            std = pred.f.std(0).numpy() * toy.y_scale
            ax.fill_between(xs, mean - 2 * std, mean + 2 * std, color=color,
                            alpha=0.18 if label == "NUTS" else 0.3, lw=0,
                            label=f"{label} ±2σ")
            ax.plot(xs, mean, color=color, lw=1.5 if label == "NUTS" else 2)
        ax.plot(xs, data.info["true_function"][:, 0].numpy(), "k--", lw=0.8, label=true_label)
        ax.scatter(data.train.x[:, 0], data.train.y[:, 0], s=12, color="k", zorder=5)
        ax.set_title(name)
        ax.set_xlabel("x")
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.legend(loc="upper left", fontsize=8)


@experiment
def run(methods_to_run=DEFAULT_METHODS, *, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/toy-regression", settings: Settings | None = None,
        progress: bool | None = None, overrides: dict | None = None) -> ExperimentResult:
    """Fit each method on ``cubic`` and compare it with NUTS; write metrics.json, PNGs, report.md.

    Every method is a registered name, set up by its ``"regression"`` recipe; ``overrides``
    maps a method to build options that replace its recipe's.

    Returns an :class:`ExperimentResult` whose ``metrics`` is what metrics.json holds:
    per method ``test_log_likelihood``, ``rmse`` and, against NUTS, ``std_ratio_in_data``,
    ``std_ratio_out_of_data``, ``predictive_distance``; for NUTS its diagnostics.
    """
    start = time.perf_counter()
    settings = settings or (Settings.quick() if quick else Settings())
    device = resolve_device(device)
    out = Path(out)
    toy = study(datasets.load("cubic", seed=seed), methods_to_run, settings, seed=seed,
                device=device, progress=progress, overrides=overrides)
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "bands.png"
    plt, _ = plotting()
    names = [n for n in toy.preds if n != "nuts"]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.2 * max(1, len(names)), 3.6),
                             sharey=True, squeeze=False)
    band_axes(axes[0], toy, names, ylim=(-160, 160), true_label="x³")
    axes[0][0].set_ylabel("y")
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)
    return finish("toy-regression", out, start, seed=seed, quick=quick, device=device,
                  settings=settings, report=lambda p: _report(p, figure.name), figures=[figure],
                  dataset="cubic", recipes=recipes_used(methods_to_run, "regression", overrides),
                  methods=toy.results)


def _report(payload: dict, figure: str) -> str:
    rows = [{"method": name, **vals} for name, vals in payload["methods"].items()]
    cols = ["method", "test_log_likelihood", "rmse", "std_ratio_in_data", "std_ratio_out_of_data",
            "predictive_distance", "wall_time_s"]
    text = [
        "# toy-regression: cubic toy, every method against NUTS",
        "",
        f"Data: x ~ U[−4, 4], 20 points, y = x³ + N(0, 3²); test grid of 200 points on [−6, 6]. "
        f"Net 1-{payload['settings']['hidden']}-1 ReLU, prior N(0, 1/fan_in) on every parameter, "
        "fixed noise σ = 3. Fitted on standardized data; numbers in original units.",
        "",
        markdown_table(rows, cols),
        "",
        "std ratios are the method's predictive std of f(x) over NUTS's, averaged over grid "
        "points inside / outside [−4, 4] (1 is ideal, < 1 over-confident); predictive_distance "
        "is the W₁ distance between the two distributions of f(x), averaged over the grid.",
        "",
    ]
    quality = [{"method": name, **vi_quality_cells(vals.get("vi_quality"))}
                for name, vals in payload["methods"].items() if name != "nuts"]
    if quality:
        text += ["## How close each guide is to the posterior", "",
                 markdown_table(quality, ["method", *VI_QUALITY_COLUMNS]), "",
                 VI_QUALITY_NOTE, ""]
    text += kl_check_lines(payload["methods"])
    if "nuts" in payload["methods"]:
        n = payload["methods"]["nuts"]
        text += [
            "## NUTS diagnostics",
            "",
            f"- chains × draws: {n['num_chains']} × {n['num_draws']}",
            f"- function-space split R-hat (max over the grid): {n['max_rhat']:.3f}; "
            f"bulk ESS (min): {n['min_ess_bulk']:.0f}",
            f"- weight-space split R-hat (max): {n['max_rhat_weights']:.3f} (not expected near "
            "1: hidden units can swap and flip sign)",
            f"- divergent transitions after warm-up: {n['divergences']}",
            f"- E-BFMI per chain: {', '.join(f'{b:.2f}' for b in n.get('bfmi', [])) or 'n/a'}",
            f"- sampling time: {n.get('sampling_s', float('nan')):.1f} s",
            "",
        ]
    text += trust_lines(payload["methods"])
    text += [f"![predictive bands]({figure})", ""]
    return "\n".join(text)
