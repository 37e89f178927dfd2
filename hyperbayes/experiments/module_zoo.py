"""module-zoo: a user's ``torch.nn`` LeNet-5 through every registered method, beside the MLP.

Every method is trained on MNIST by :func:`zoo.train <hyperbayes.experiments.zoo.train>` (its
``"classification"`` recipe and the zoo's shared schedule) twice: on
:class:`~hyperbayes.models.architectures.LeNet5`, an ordinary ``torch.nn.Module`` that
hyperbayes wraps as a :class:`~hyperbayes.models.TorchNet` (the recipe adapts it: weight norm
for the guides over scales, the ``nn.Linear`` layers for the MetaPrior, no gauge fixing for the
diversity hypernetwork), and on the library's own MLP (the same models the ``calibration`` and
``ood`` tasks train, checkpoints shared). Each is scored on the MNIST test images (accuracy,
NLL, ECE) and on detecting Fashion-MNIST test images by the predictive mean's
maximum probability (ROC-AUC). Nothing here names a method.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..inference import metrics, resolve_device
from ..models.architectures import LeNet5
from . import zoo
from .common import (
    ExperimentResult,
    experiment,
    finish,
    plotting,
    recipes_used,
)
from .ood import MAIN_SCORE, detection, ood_sets
from .suite import render_tables, table

__all__ = ["run", "Settings", "NETS"]


#: the architectures compared: "mlp" is the zoo's own MLP (None: built by the zoo)
NETS = {"lenet5": LeNet5, "mlp": None}


@dataclass(frozen=True)
class Settings(zoo.TaskSettings):
    """How every method is trained (``zoo``), which nets run, and (net, method) pairs to skip
    (``"mlp/diversity"``: one that costs too much on a given machine; the report lists them)."""

    nets: tuple = ("lenet5", "mlp")
    skip: tuple = ()


@experiment
def run(methods_to_run=None, *, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/module-zoo", settings: Settings | None = None,
        progress: bool | None = None, checkpoints: str | Path | None = None,
        overrides: dict | None = None) -> ExperimentResult:
    """Train and score every method on every net of ``settings.nets``; write metrics.json
    (``runs["net/method"]``: accuracy, NLL, ECE, Fashion-MNIST ROC-AUC, train time), the
    table, module_zoo.png and report.md.

    Args:
        methods_to_run: method names (default: every registered method).
        quick: :meth:`Settings.quick` unless ``settings`` is given.
        device, seed, progress: as in :func:`zoo.train <hyperbayes.experiments.zoo.train>`.
        out: the output folder (checked before any training).
        settings: overrides the sizes, the nets and the skipped pairs.
        checkpoints: the trained models' folder (default :func:`zoo.default_checkpoints`,
            shared with ``calibration`` and ``ood``).
        overrides: ``{method: {option: value}}`` laid over the methods' recipes
            (``--option METHOD.KEY=VALUE``; :func:`zoo.with_options
            <hyperbayes.experiments.zoo.with_options>`), recorded under ``recipes``.
    """
    start = time.perf_counter()
    settings, names = zoo.task_settings(Settings, settings, quick, overrides, methods_to_run)
    unknown = [n for n in settings.nets if n not in NETS]
    if unknown or not settings.nets:
        raise ValueError(f"unknown nets {unknown}; choose from {list(NETS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    device = resolve_device(device)
    checkpoints = Path(checkpoints) if checkpoints is not None else zoo.default_checkpoints(out)
    train, val, test = zoo.mnist_splits(settings.zoo)
    fashion = ood_sets(("fashion_mnist",), test, seed)["fashion_mnist"]
    x = torch.cat([test.x, fashion.x])
    runs, skipped = {}, []
    for net_name in settings.nets:
        for name in names:
            key = f"{net_name}/{name}"
            if key in settings.skip:
                skipped.append(key)
                continue
            make = NETS[net_name]
            fitted = zoo.train(name, settings.zoo, train, val, device=device, seed=seed,
                               checkpoint_dir=checkpoints, progress=progress,
                               tag=net_name if make is not None else "",
                               net=make() if make is not None else None)
            t0 = time.perf_counter()
            probs = zoo.sample_probs(fitted, x, settings.zoo.test_samples)
            p_in, p_out = probs.split([len(test), len(fashion)], dim=1)
            report = metrics.classification_report(p_in, test.y)
            roc = detection(p_in, p_out, (MAIN_SCORE,))[MAIN_SCORE]["roc"]
            runs[key] = {"net": net_name, "method": name, **report, "fashion_roc": roc,
                         "train_s": fitted.train_s, "test_s": time.perf_counter() - t0,
                         "reused": fitted.reused, "steps": fitted.result.steps,
                         "parameters": fitted.model.net.num_params}
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "module_zoo.png"
    _figure(figure, runs, settings.nets)
    tables = [_table(runs, names, settings)]
    return finish("module-zoo", out, start, seed=seed, quick=quick, device=device,
                  settings=settings, report=lambda p: _report(p, figure.name), figures=[figure],
                  recipes=recipes_used(names, "classification", overrides),
                  checkpoints=str(checkpoints), train_examples=len(train),
                  test_examples=len(test), runs=runs, skipped=skipped, tables=tables)


def _table(runs: dict, names: list[str], settings: Settings) -> dict:
    """One row per method: each net's accuracy, NLL, ECE and Fashion-MNIST ROC-AUC."""
    metrics_ = {"acc %": lambda r: 100 * r["accuracy"], "NLL": lambda r: r["nll"],
                "ECE": lambda r: r["ece"], "Fashion ROC %": lambda r: r["fashion_roc"]}
    columns = ["method"] + [f"{net} {m}" for net in settings.nets for m in metrics_]
    rows = []
    for name in names:
        row = {"method": name}
        for net in settings.nets:
            r = runs.get(f"{net}/{name}")
            if r is not None:
                row.update({f"{net} {m}": f(r) for m, f in metrics_.items()})
        rows.append(row)
    z = settings.zoo
    images = f"the first {z.train_limit:,}" if z.train_limit else "50,000"
    note = (f"Trained on {images} MNIST training images ({z.epochs:g} epochs, batch "
            f"{z.batch_size}, the parameters of the best validation accuracy), tested on the "
            f"MNIST test images with {z.test_samples} MC samples; ECE on 15 bins; Fashion ROC: "
            "detecting Fashion-MNIST test images by the predictive mean's maximum probability "
            "(in-distribution positive). lenet5: a torch.nn LeNet-5 through TorchNet; mlp: "
            f"the library's MLP 784-{'-'.join(map(str, z.hidden))}-10.")
    return table("A user's torch.nn LeNet-5 beside the library's MLP", columns, rows, note=note)


def _figure(path: Path, runs: dict, nets) -> None:
    """Test accuracy, ECE and Fashion-MNIST ROC-AUC per method, one bar per net."""
    import pandas as pd

    plt, sns = plotting()
    frame = pd.DataFrame([{"method": r["method"], "net": r["net"],
                           "test accuracy (%)": 100 * r["accuracy"], "ECE": r["ece"],
                           "Fashion-MNIST ROC-AUC (%)": r["fashion_roc"]}
                          for r in runs.values()])
    panels = ["test accuracy (%)", "ECE", "Fashion-MNIST ROC-AUC (%)"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, column in zip(axes, panels, strict=True):
        sns.barplot(frame, x="method", y=column, hue="net", hue_order=list(nets), ax=ax)
        ax.set(xlabel="method", ylabel=column)
        ax.tick_params(axis="x", rotation=45)
        if column != "ECE":
            low = float(frame[column].min())
            ax.set_ylim(max(0.0, low - 5), 100)
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    fig.legend(handles, labels, title="net", loc="center right", fontsize=9)
    fig.suptitle("Every method on a user's LeNet-5 (TorchNet) and on the library's MLP, MNIST")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _report(payload: dict, figure: str) -> str:
    """report.md: what ran, the table, what was skipped, the figure."""
    skipped = payload["skipped"]
    reused = [k for k, r in payload["runs"].items() if r["reused"]]
    lines = [
        "# module-zoo: a user's torch.nn module through every method",
        "",
        "Each method by its classification recipe on a `torch.nn` LeNet-5 wrapped by "
        "`TorchNet` and on the library's MLP, with the zoo's schedule. Trained models in "
        f"`{payload['checkpoints']}`" + (f" (reused: {', '.join(reused)})." if reused else "."),
        "",
        render_tables(payload["tables"]),
    ]
    if skipped:
        lines += [f"Not run here (skipped by the settings): {', '.join(skipped)}.", ""]
    lines += [f"![accuracy, ECE and Fashion-MNIST ROC-AUC per method and net]({figure})", "",
              "*Figure: MNIST test accuracy (left), expected calibration error (middle, lower is "
              "better) and Fashion-MNIST detection ROC-AUC by maximum probability (right) of "
              "every method, one bar per net; a missing bar is a pair that did not run.*", ""]
    return "\n".join(lines)
