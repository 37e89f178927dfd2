"""metaprior-moons: MetaPrior classification of the half moons and its weight correlations
(Karaletsos et al. 2018, Fig. 3; the paper reports 95.5% accuracy, on par with mean field and an
MLP).

Net 2-50-2 ReLU. ``metaprior``: Gaussian P(w | z) from a hyperprior of 32 hidden units on 2-d
codes, mean-field Q over the codes; ``meanfield``: Bayes by Backprop with a N(0, 1) prior;
``map``: the MLP (maximum a posteriori with a N(0, 1) prior, i.e. weight decay). Figures:

* ``uncertainty.png``: each method's predictive probability of class 1 and predictive entropy
  over the plane, with the test points;
* ``weight_correlations.png``: every code at its posterior mean except hidden unit 0's, drawn
  repeatedly from its Q; the sampled weights into unit 0 (layer 1) and out of it (layer 2),
  coloured by the code's offset from its mean, before and after training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import datasets, methods
from ..inference import fit, metrics, predict, resolve_device, set_seed
from ..models import Categorical, priors
from ..models.metaprior import MetaPrior
from . import papers
from .common import (
    ExperimentResult,
    experiment,
    finish,
    markdown_table,
    plotting,
    recipes_used,
)

__all__ = ["run", "Settings", "DEFAULT_METHODS", "PAPER_ACCURACY"]

DEFAULT_METHODS = ("metaprior", "meanfield", "map")
PAPER_ACCURACY = papers.METAPRIOR_MOONS
PROBE_UNIT = 0
PROBE_DRAWS = 300


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; ``quick`` is for tests and notebooks."""

    hidden: int = 50
    steps: int = 3000
    lr: float = 1e-2
    pred_samples: int = 200
    n_train: int = 1000
    n_test: int = 1000

    @classmethod
    def quick(cls) -> Settings:
        """Small settings (seconds)."""
        return cls(hidden=16, steps=300, pred_samples=20, n_train=200, n_test=200)


def _build(name: str, settings: Settings, seed: int, overrides: dict):
    """``(model, guide, loss, fit options)`` of ``name`` by its ``"classification/moons"``
    recipe (the MetaPrior's: a Gaussian hyperprior of 32 units over 2-d codes)."""
    return methods.setup(name, "classification/moons", [2, settings.hidden, 2],
                         priors.Normal(1.0), Categorical(), seed=seed,
                         **overrides.get(name, {}))


@experiment
def run(methods_to_run=DEFAULT_METHODS, *, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/metaprior-moons", settings: Settings | None = None,
        progress: bool | None = None, overrides: dict | None = None) -> ExperimentResult:
    """Train each method (a registered name, set up by its ``"classification/moons"`` recipe)
    on the half moons; write metrics.json (per method ``test_accuracy``, ``test_nll``),
    uncertainty.png, weight_correlations.png and report.md. ``overrides`` maps a method to
    build options that replace its recipe's."""
    start = time.perf_counter()
    settings = settings or (Settings.quick() if quick else Settings())
    overrides = overrides or {}
    for name in [*methods_to_run, *overrides]:
        methods.get(name)  # unknown names raise with the list of known ones
    device = resolve_device(device)
    data = datasets.load("moons", seed=seed, n_train=settings.n_train, n_test=settings.n_test)
    results, fitted, probes = {}, {}, {}
    for name in methods_to_run:
        set_seed(seed)
        t0 = time.perf_counter()
        model, guide, loss, recipe_fit = _build(name, settings, seed, overrides)
        probe = isinstance(model.prior, MetaPrior) and "start" not in probes
        if probe:  # the first MetaPrior's weight correlations, before and after training
            probes["start"] = _probe(model, guide, seed)
        fit(model, guide, data.train, loss=loss, device=device, seed=seed, progress=progress,
            **methods.fit_options({"lr": settings.lr, **recipe_fit}, settings.steps))
        pred = predict(model, guide, data.test.x.to(device), settings.pred_samples).to("cpu")
        report = metrics.classification_report(pred.probs, data.test.y)
        results[name] = {"test_accuracy": report["accuracy"], "test_nll": report["nll"],
                         "test_ece": report["ece"], "paper_accuracy": PAPER_ACCURACY.get(name),
                         "wall_time_s": time.perf_counter() - t0}
        fitted[name] = (model.to("cpu"), guide.to("cpu"))
        if probe:
            probes["end"] = _probe(model, guide, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = [out / "uncertainty.png"]
    _uncertainty_figure(figures[0], data, fitted, settings)
    if probes:
        figures.append(out / "weight_correlations.png")
        _correlation_figure(figures[-1], probes)
    if "metaprior" in results and "map" in results:
        results["metaprior"]["accuracy_minus_map"] = (results["metaprior"]["test_accuracy"]
                                                      - results["map"]["test_accuracy"])
    return finish("metaprior-moons", out, start, seed=seed, quick=quick, device=device,
                  settings=settings, report=lambda p: _report(p, [f.name for f in figures]),
                  figures=figures,
                  recipes=recipes_used(methods_to_run, "classification/moons", overrides),
                  methods=results)


@torch.no_grad()
def _probe(model, guide, seed: int) -> dict:
    """Weights into and out of hidden unit PROBE_UNIT when only its code varies (drawn from its
    Q; every other code at its mean) and P(W | Z) is sampled."""
    generator = torch.Generator().manual_seed(seed)
    locs = {k: v.detach().cpu() for k, v in guide.locs().items()}
    scales = {k: v.detach().cpu() for k, v in guide.scales().items()}
    batch = {k: v.expand(PROBE_DRAWS, *v.shape).clone() for k, v in locs.items()}
    eps = torch.randn(PROBE_DRAWS, locs["codes.1"].shape[-1], generator=generator)
    batch["codes.1"][:, PROBE_UNIT] = locs["codes.1"][PROBE_UNIT] + scales["codes.1"][
        PROBE_UNIT] * eps
    prior = model.prior.to("cpu")
    params = prior.generate(batch, noise_seed=seed)
    return {"incoming": params["fc0.weight"][:, PROBE_UNIT, :].clone(),   # (K, 2 inputs)
            "outgoing": params["fc1.weight"][:, :, PROBE_UNIT].clone(),   # (K, 2 classes)
            "offset": eps.norm(dim=-1)}


def _correlation_figure(path: Path, probes: dict) -> None:
    plt, _ = plotting()
    fig, axes = plt.subplots(len(probes), 2, figsize=(8.6, 3.9 * len(probes)), squeeze=False)
    for row, (when, probe) in zip(axes, probes.items(), strict=True):
        for ax, key, title in ((row[0], "incoming", "layer 1: weights into"),
                               (row[1], "outgoing", "layer 2: weights out of")):
            w = probe[key]
            points = ax.scatter(w[:, 0], w[:, 1], c=probe["offset"], cmap="viridis", s=10)
            ax.set_title(f"{when} of training — {title} unit {PROBE_UNIT}", fontsize=9)
            ax.set_xlabel("weight 1")
            ax.set_ylabel("weight 2")
        fig.colorbar(points, ax=row[1], label="‖code offset‖ / σ")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _uncertainty_figure(path: Path, data, fitted: dict, settings: Settings) -> None:
    plt, _ = plotting()
    lo = data.train.x.min(0).values - 1.0
    hi = data.train.x.max(0).values + 1.0
    steps = 120
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], steps), torch.linspace(lo[1], hi[1],
                                                                               steps),
                            indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)
    fig, axes = plt.subplots(2, len(fitted), figsize=(4.2 * len(fitted), 7.4), squeeze=False)
    for col, (name, (model, guide)) in enumerate(fitted.items()):
        probs = predict(model, guide, grid, settings.pred_samples).mean()
        p1 = probs[:, 1].reshape(steps, steps)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).reshape(steps, steps)
        for row, (values, label, cmap) in enumerate(((p1, "P(class 1)", "RdBu_r"),
                                                     (entropy, "predictive entropy", "magma"))):
            ax = axes[row][col]
            image = ax.contourf(gx, gy, values, levels=20, cmap=cmap)
            ax.scatter(data.test.x[:, 0], data.test.x[:, 1], c=data.test.y, cmap="coolwarm",
                       s=4, edgecolors="none", alpha=0.6)
            ax.set_title(f"{name}: {label}", fontsize=10)
            ax.set(xlabel="x₁", ylabel="x₂")
            fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _report(payload: dict, figures: list[str]) -> str:
    rows = [{"method": m, **v} for m, v in payload["methods"].items()]
    cols = ["method", "test_accuracy", "paper_accuracy", "test_nll", "test_ece", "wall_time_s"]
    s = payload["settings"]
    meta = next((r["options"] for r in payload["recipes"].values()
                 if r["method"] == "metaprior"), {})
    text = ["# metaprior-moons: half moons with the MetaPrior, mean field and an MLP", "",
            f"{s['n_train']} training and {s['n_test']} test points (scikit-learn make_moons, "
            f"noise 0.2), net 2-{s['hidden']}-2 ReLU, {s['steps']} full-batch Adam steps at lr "
            f"{s['lr']}, {s['pred_samples']} predictive samples. MetaPrior: "
            f"{meta.get('code_dim', '–')}-d codes, hyperprior with {meta.get('hidden', '–')} "
            "hidden units, mean-field Q over the "
            "codes. The paper reports 95.5% for the MetaPrior, \"on par with a mean field BNN and "
            "an MLP\" (its data size and noise are not given).", "",
            markdown_table(rows, cols), ""]
    meta = payload["methods"].get("metaprior", {})
    if "accuracy_minus_map" in meta:
        text += [f"MetaPrior minus MLP accuracy: {100 * meta['accuracy_minus_map']:+.1f} "
                 "points.", ""]
    text += [f"![{name}]({name})" for name in figures]
    return "\n".join(text)
