"""calibration: every registered method on MNIST 50,000: accuracy, NLL, ECE, Brier, reliability.

Each method is trained by :func:`zoo.train <hyperbayes.experiments.zoo.train>` (its
``"classification"`` recipe, the zoo's shared schedule, checkpoints shared with ``ood`` and
``adversarial``), then scored on the test images with ``settings.zoo.test_samples`` MC samples
by :func:`hyperbayes.inference.metrics.classification_report` (accuracy, NLL of the predictive
mean, ECE on ``num_bins`` = 15 equal-width confidence bins, multi-class Brier score) and
:func:`~hyperbayes.inference.metrics.reliability_bins` (the reliability diagrams). Nothing here
names a method except :data:`PAPER_ACCURACY`, which says which of ours each paper row is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..inference import metrics, resolve_device
from . import papers, zoo
from .common import (
    ExperimentResult,
    experiment,
    finish,
    plotting,
    recipes_used,
)
from .suite import render_tables, table

__all__ = ["run", "Settings", "PAPER_ACCURACY"]

#: Test accuracies (%) the papers report for MNIST 50,000 MLPs: label → (our method, accuracy,
#: the paper's net), from :mod:`hyperbayes.experiments.papers`
PAPER_ACCURACY = papers.MNIST_ACCURACY


@dataclass(frozen=True)
class Settings(zoo.TaskSettings):
    """Sizes of one run: how every method is trained (``zoo``) and the ECE bins."""

    num_bins: int = 15


@experiment
def run(methods_to_run=None, *, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/calibration", settings: Settings | None = None,
        progress: bool | None = None, data=None,
        checkpoints: str | Path | None = None,
        overrides: dict | None = None) -> ExperimentResult:
    """Train and test every method; write metrics.json (``methods[name]``: accuracy, NLL, ECE,
    Brier, reliability bins, train time, ``reused``), reliability.png and report.md.

    Args:
        methods_to_run: method names (default: every registered method).
        quick: :meth:`Settings.quick` unless ``settings`` is given.
        device, seed, progress: as in :func:`zoo.train <hyperbayes.experiments.zoo.train>`.
        out: the output folder.
        settings: overrides the sizes.
        data: a Dataset of images used instead of MNIST (tests).
        checkpoints: the trained models' folder (default :func:`zoo.default_checkpoints`).
        overrides: ``{method: {option: value}}`` laid over the methods' recipes
            (``--option METHOD.KEY=VALUE``; :func:`zoo.with_options
            <hyperbayes.experiments.zoo.with_options>`), recorded under ``recipes``.
    """
    start = time.perf_counter()
    settings, names = zoo.task_settings(Settings, settings, quick, overrides, methods_to_run)
    device = resolve_device(device)
    out = Path(out)
    checkpoints = Path(checkpoints) if checkpoints is not None else zoo.default_checkpoints(out)
    train, val, test = zoo.mnist_splits(settings.zoo, data)
    trained = zoo.train_all(names, settings.zoo, train, val, device=device, seed=seed,
                        checkpoints=checkpoints, progress=progress)
    rows, bins = {}, {}
    for name, fitted in trained.items():
        t0 = time.perf_counter()
        probs = zoo.sample_probs(fitted, test.x, settings.zoo.test_samples)
        report = metrics.classification_report(probs, test.y, num_bins=settings.num_bins)
        bins[name] = metrics.reliability_bins(probs, test.y, num_bins=settings.num_bins)
        rows[name] = {**report, "train_s": fitted.train_s, "test_s": time.perf_counter() - t0,
                      "reused": fitted.reused, "steps": fitted.result.steps,
                      "best_step": fitted.result.best_step, "fit_options": fitted.fit_options,
                      "reliability": {k: v.tolist() for k, v in bins[name].items()}}
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "reliability.png"
    source = "MNIST" if data is None else getattr(data, "name", "custom")
    _reliability_figure(figure, bins, rows)
    tables = [_table(rows, settings)]
    return finish("calibration", out, start, seed=seed, quick=quick, device=device,
                  settings=settings, report=lambda p: _report(p, figure.name), figures=[figure],
                  seeds=[seed], recipes=recipes_used(names, "classification", overrides),
                  checkpoints=str(checkpoints), data=source, train_examples=len(train),
                  test_examples=len(test), methods=rows, tables=tables,
                  worse_than_paper=_worse_than_paper(rows))


def _net(settings: Settings, inputs: str = "784") -> str:
    """The MLP's layer sizes as text (784-400-400-10)."""
    return "-".join([inputs, *map(str, settings.zoo.hidden), "10"])


def _table(rows: dict, settings: Settings) -> dict:
    """Our methods, then the papers' test accuracies labelled with their net."""
    columns = ["method", "test accuracy %", "NLL", "ECE", "Brier", "train s"]
    body = [{"method": name, "test accuracy %": 100 * r["accuracy"], "NLL": r["nll"],
             "ECE": r["ece"], "Brier": r["brier"], "train s": r["train_s"]}
            for name, r in rows.items()]
    body += [{"method": f"{label} [{net}; ours: {ours}]", "test accuracy %": accuracy}
             for label, (ours, accuracy, net) in PAPER_ACCURACY.items()]
    limit = settings.zoo.train_limit
    images = f"the first {limit:,} training images" if limit else "50,000 training images"
    note = (f"Ours: MLP {_net(settings)} trained by the suite's zoo on {images} "
            f"({settings.zoo.epochs:g} epochs), {settings.zoo.test_samples} MC samples; ECE on "
            f"{settings.num_bins} bins. The papers' nets (in brackets) differ from ours, and "
            "the papers report accuracy only.")
    return table("Calibration on the test images", columns, body, note=note)


def _worse_than_paper(rows: dict) -> list[dict]:
    """Every paper row whose method we ran and whose accuracy we do not reach."""
    worse = []
    for label, (ours, accuracy, _) in PAPER_ACCURACY.items():
        if ours in rows and 100 * rows[ours]["accuracy"] < accuracy:
            worse.append({"paper": label, "method": ours, "paper_accuracy": accuracy,
                          "accuracy": 100 * rows[ours]["accuracy"],
                          "difference_points": 100 * rows[ours]["accuracy"] - accuracy})
    return worse


def _reliability_figure(path: Path, bins: dict, rows: dict) -> None:
    """One reliability diagram per method: bin accuracy against bin confidence, the diagonal,
    and the share of test images in each bin (grey bars, right axis, log scale)."""
    import numpy as np
    import pandas as pd

    plt, sns = plotting()
    names = list(bins)
    cols = min(4, len(names))
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 3.2 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        b = bins[name]
        width = float(b["bin_edges"][1] - b["bin_edges"][0])
        share = b["counts"] / max(1, b["counts"].sum())
        counts_ax = ax.twinx()
        counts_ax.bar(b["bin_centers"], np.where(share > 0, share, np.nan), width=0.9 * width,
                      color="0.85", zorder=0)
        counts_ax.set_yscale("log")
        counts_ax.set_ylim(1e-4, 1.5)
        counts_ax.grid(False)
        counts_ax.set_ylabel("share of images", fontsize=8, color="0.5")
        counts_ax.tick_params(labelsize=7, colors="0.5")
        ax.set_zorder(counts_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1)
        frame = pd.DataFrame({"confidence": b["confidence"], "accuracy": b["accuracy"],
                              "count": b["counts"]}).dropna()
        sns.lineplot(frame, x="confidence", y="accuracy", marker="o", ax=ax, color="C0")
        for _, r in frame.iterrows():
            ax.annotate(f"{int(r['count'])}", (r["confidence"], r["accuracy"]), fontsize=6,
                        xytext=(2, -8), textcoords="offset points", color="0.3")
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="confidence (bin mean)",
               ylabel="accuracy (bin)",
               title=f"{name}: ECE {rows[name]['ece']:.3f}")
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _report(payload: dict, figure: str) -> str:
    """report.md: what was run, the table, where we fall short of the papers, the figure."""
    s = payload["settings"]["zoo"]
    worse = payload["worse_than_paper"]
    if worse:
        shortfall = "Worse than the paper: " + "; ".join(
            f"`{w['method']}` {w['accuracy']:.2f}% against {w['paper']} {w['paper_accuracy']}% "
            f"({w['difference_points']:+.2f} points)" for w in worse) + "."
    else:
        shortfall = "No method we ran is below the accuracy its paper reports."
    reused = [n for n, r in payload["methods"].items() if r["reused"]]
    return "\n".join([
        "# calibration: accuracy, NLL, ECE and Brier score on MNIST",
        "",
        f"Every method by its classification recipe on {payload['train_examples']:,} "
        f"{payload['data']} training images: MLP 784-{'-'.join(map(str, s['hidden']))}-10, "
        f"{s['epochs']:g} epochs, batch {s['batch_size']}, Adam lr {s['lr']} unless the "
        "recipe sets its own "
        f"({s['lr_schedule'] or 'constant'} schedule), gradient norm clipped at "
        f"{s['clip_norm']}, the parameters of the best validation accuracy "
        f"({s['validations']} checks, {s['val_samples']} MC samples). Tested on "
        f"{payload['test_examples']:,} test images with {s['test_samples']} MC samples; ECE on "
        f"{payload['settings']['num_bins']} equal-width bins of the predictive mean's maximum "
        f"probability; Brier summed over classes. Trained models in `{payload['checkpoints']}`"
        + (f" (reused: {', '.join(reused)})." if reused else "."),
        "",
        render_tables(payload["tables"]),
        shortfall + " The papers trained 784-800-800-10 nets for 50 epochs (BbH) or chose "
        "the epoch by validation (BHN); the suite's net and schedule are smaller, so equal "
        "accuracy is not expected.",
        "",
        f"![reliability diagrams]({figure})",
        "",
    ])
