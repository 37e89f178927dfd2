"""bhn-mnist: Bayesian hypernetworks' MNIST generalization table (Krueger et al. 2017, Table 1).

Two parts, each a list of *configurations* named as in metrics.json:

- MNIST 50,000 (the standard 50k/10k/10k split), MLP 784-800-800-10: ``flow-0``, ``flow-2``,
  ``flow-4``, ``flow-8`` (RealNVP couplings over the weight-norm scales, hidden width 200, N(0, 1)
  on the scales, point-estimate directions and biases, coupling log-scales bounded by tanh),
  ``meanfield`` (Bayes by Backprop over every weight, N(0, 1) prior, local reparameterization),
  ``dropout`` (p = 0.5 on the hidden units, kept on at test: MC dropout without weight decay)
  and ``mle`` (maximum likelihood). ``flow-6`` can be asked for.
- MNIST 5,000 (the first 5,000 training examples, same validation and test sets), 800 and 1200
  hidden units: ``5k-800/flow-0``, ``5k-800/flow-8``, ``5k-800/flow-12``, ``5k-800/dropout`` and
  the same for ``5k-1200``.

A configuration is ``[<N>k-<hidden>/]<method>`` where the method is any registered name (so
``flow-8`` is ``flow`` with 8 couplings), set up by its ``"classification"`` recipe
(:mod:`hyperbayes.methods`). Every configuration trains with Adam (lr 1e-3, cosine decay), batch
128, gradient norm clipped at 10 (as the BHN code), keeps the parameters of its best validation
accuracy (10 MC samples) and reports test accuracy and NLL with 200 MC samples, the paper's
protocol. Each configuration checkpoints atomically while it trains, so an interrupted run resumes
where it stopped.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import datasets, methods
from ..datasets import transforms
from ..inference import metrics, predict, resolve_device
from ..models import Categorical, priors
from . import papers
from .common import (
    ExperimentResult,
    checkpoint_name,
    experiment,
    finish,
    header,
    plotting,
    recipes_used,
    train_method,
    write_metrics,
)
from .suite import render_tables, table

__all__ = ["run", "tables", "Settings", "DEFAULT_CONFIGS", "PAPER_ACCURACY", "parse_config"]

DEFAULT_CONFIGS = (
    "flow-0", "flow-2", "flow-4", "flow-8", "meanfield", "dropout", "mle",
    "5k-800/flow-0", "5k-800/flow-8", "5k-800/flow-12", "5k-800/dropout",
    "5k-1200/flow-0", "5k-1200/flow-8", "5k-1200/flow-12", "5k-1200/dropout",
)

# Test accuracy (%) in the paper's Table 1, in hyperbayes.experiments.papers
PAPER_ACCURACY = papers.BHN_TABLE1

_CONFIG = re.compile(r"^(?:(?P<subset>\d+)k-(?P<hidden>\d+)/)?(?P<method>[^/]+)$")


@dataclass(frozen=True)
class Settings:
    """Sizes of one run. ``quick`` (tests, notebooks) trains tiny nets on a few MNIST examples."""

    epochs: float = 20            # MNIST 50,000
    epochs_subset: float = 50     # MNIST 5,000
    batch_size: int = 128
    lr: float = 1e-3
    clip_norm: float = 10.0
    # the coupling networks train at this fraction of lr (0.1 did not prevent the divergence
    # that Pyro's hard log-scale clamp caused: flow-8 diverged at epoch 6 instead of 9)
    flow_lr_multiplier: float = 1.0
    val_samples: int = 10
    test_samples: int = 200
    validations: int = 20         # validation passes per configuration (MNIST 50,000)
    validations_subset: int = 10  # validation passes per configuration (MNIST 5,000)
    hidden: int = 800             # hidden width of the 50k MLP
    train_limit: int | None = None  # use only the first examples (quick runs)
    eval_limit: int | None = None   # use only the first validation/test examples (quick runs)

    @classmethod
    def quick(cls) -> Settings:
        """Tiny settings: 1,000 training examples, 100 hidden units, a few epochs."""
        return cls(epochs=3, epochs_subset=3, hidden=100, val_samples=4,
                   test_samples=20, validations=2, validations_subset=2, train_limit=1000,
                   eval_limit=1000)


@dataclass(frozen=True)
class Config:
    """One row of the table, parsed from its name."""

    name: str
    method: str            # a registered method name, e.g. "flow-8", "dropout", "mle"
    subset: int | None     # training examples (None: all 50,000)
    hidden: int | None     # hidden width (None: Settings.hidden)


def parse_config(name: str) -> Config:
    """Parse a configuration name such as ``flow-8``, ``dropout`` or ``5k-1200/flow-12``: an
    optional ``<N>k-<hidden>/`` (N thousand training examples, hidden width) and a registered
    method name."""
    match = _CONFIG.match(name)
    if match is None:
        raise ValueError(f"unknown bhn-mnist configuration {name!r}: expected "
                         "[<N>k-<hidden>/]<method>, e.g. 'flow-8' or '5k-1200/flow-12'")
    methods.get(match["method"])  # unknown names raise with the list of known ones
    subset = int(match["subset"]) * 1000 if match["subset"] else None
    hidden = int(match["hidden"]) if match["hidden"] else None
    return Config(name, match["method"], subset, hidden)


def _data(config: Config, settings: Settings, full):
    data = transforms.first_n(full, config.subset) if config.subset else full
    if settings.train_limit:
        data = transforms.first_n(data, min(settings.train_limit, len(data.train)))
    val, test = data.val, data.test
    if settings.eval_limit:
        val, test = val.subset(slice(0, settings.eval_limit)), test.subset(
            slice(0, settings.eval_limit))
    return data.train, val, test


def _run_config(config: Config, settings: Settings, full, device, seed, checkpoint_dir: Path,
                progress, overrides: dict) -> tuple[dict, list]:
    train, val, test = _data(config, settings, full)
    epochs = settings.epochs_subset if config.subset else settings.epochs
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    width = config.hidden or settings.hidden
    build = {**methods.get(config.method).recipe("classification").options,
             **overrides.get(config.method, {})}
    flows = build.get("num_flows", 0)
    fitted = train_method(
        config.method, "classification", [784, width, width, 10], priors.Normal(1.0),
        Categorical(), train, epochs=epochs, batch_size=settings.batch_size, lr=settings.lr,
        seed=seed, device=device, lr_schedule="cosine", clip_norm=settings.clip_norm,
        lr_multipliers={"flow_layers": settings.flow_lr_multiplier} if flows else None,
        val=val, validations=(settings.validations_subset if config.subset else
                              settings.validations),
        val_samples=settings.val_samples, progress=progress, overrides=overrides.get(
            config.method), checkpoint=checkpoint_dir / _checkpoint_name(
            config, settings, seed, train, flows, overrides))
    model, guide, result = fitted.model, fitted.guide, fitted.result
    steps = result.steps
    t0 = time.perf_counter()
    pred = predict(model, guide, test.x.to(device), settings.test_samples)
    report = metrics.classification_report(pred.probs.cpu(), test.y)
    best = max(result.validation, key=lambda v: v["val_accuracy"])
    row = {
        "test_accuracy": report["accuracy"],
        "test_nll": report["nll"],
        "test_ece": report["ece"],
        "paper_accuracy": PAPER_ACCURACY.get(config.name),
        "best_step": result.best_step,
        "best_epoch": result.best_step / steps_per_epoch,
        "best_val_accuracy": best["val_accuracy"],
        "steps": steps,
        "train_examples": len(train),
        "hidden": config.hidden or settings.hidden,
        "guide_parameters": sum(p.numel() for p in guide.parameters()),
        "train_s": result.total_wall_time_s,  # includes the runs a checkpoint resumed
        "test_s": time.perf_counter() - t0,
    }
    return row, result.validation


def _checkpoint_name(config: Config, settings: Settings, seed: int, train, flows: int,
                     overrides: dict) -> str:
    """A file name tied to everything that shapes this configuration's training (settings it
    does not use, such as the other part's epochs or the number of test samples, do not force a
    retrain)."""
    fields = asdict(settings)
    unused = (("epochs", "validations") if config.subset else
              ("epochs_subset", "validations_subset"))
    if not flows:
        unused += ("flow_lr_multiplier",)
    for name in (*unused, "test_samples"):
        fields.pop(name)
    fields["configuration"] = config.name
    return checkpoint_name(config.method, fields, seed, train,
                           options=overrides.get(config.method), tag=config.name.split("/")[0]
                           if config.subset else "")


@experiment
def run(methods_to_run=DEFAULT_CONFIGS, *, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/bhn-mnist", settings: Settings | None = None,
        progress: bool | None = None, data=None,
        overrides: dict | None = None) -> ExperimentResult:
    """Train and test every configuration; write metrics.json, curves.png, table.png, report.md.

    ``methods_to_run`` are configuration names as in :data:`DEFAULT_CONFIGS` (the CLI's
    ``--methods``). metrics.json
    is rewritten after every configuration, so a long run shows its progress; checkpoints in
    ``out/checkpoints`` let an interrupted run resume. ``data`` overrides MNIST (a Dataset with
    train/val/test splits of 28×28 images). ``overrides`` maps a method name to build options
    that replace its recipe's (e.g. ``{"flow-8": {"log_scale_clamp": "hard"}}``).
    """
    start = time.perf_counter()
    settings = settings or (Settings.quick() if quick else Settings())
    parsed = [parse_config(c) for c in methods_to_run]
    overrides = overrides or {}
    for name in overrides:
        methods.get(name)
    device = resolve_device(device)
    full = data if data is not None else datasets.load("mnist")
    out = Path(out)
    checkpoint_dir = out / "checkpoints"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    rows, curves = {}, {}
    payload = header("bhn-mnist", seed=seed, quick=quick, device=device, settings=settings,
                     recipes=recipes_used(sorted({c.method for c in parsed}), "classification",
                                          overrides),
                     methods=rows)
    for config in parsed:
        rows[config.name], curves[config.name] = _run_config(
            config, settings, full, device, seed, checkpoint_dir, progress, overrides)
        payload["wall_time_s"] = time.perf_counter() - start
        write_metrics(out, payload)
    payload["validation_curves"] = curves
    payload["tables"] = tables(payload)
    figures = [out / "accuracy.png", out / "validation.png"]
    _accuracy_figure(figures[0], rows)
    _validation_figure(figures[1], curves, settings.batch_size, rows)
    return finish("bhn-mnist", out, start, payload=payload, figures=figures,
                  report=lambda p: _report(p, [f.name for f in figures]))


def _accuracy_figure(path: Path, rows: dict) -> None:
    """Test accuracy of every configuration, ours beside the paper's."""
    plt, sns = plotting()
    records = []
    for name, row in rows.items():
        records.append({"configuration": name, "source": "hyperbayes",
                        "accuracy": 100 * row["test_accuracy"]})
        if row["paper_accuracy"] is not None:
            records.append({"configuration": name, "source": "paper",
                            "accuracy": row["paper_accuracy"]})
    import pandas as pd

    frame = pd.DataFrame(records)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.75 * len(rows) + 2), 4))
    sns.barplot(frame, x="configuration", y="accuracy", hue="source", ax=ax)
    low = max(0.0, frame["accuracy"].min() - 2)
    ax.set(ylim=(low, 100), ylabel="test accuracy (%)", xlabel="")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _validation_figure(path: Path, curves: dict, batch_size: int, rows: dict) -> None:
    """Validation accuracy during training, one line per configuration."""
    plt, sns = plotting()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, curve in curves.items():
        epochs = [v["step"] * batch_size / rows[name]["train_examples"] for v in curve]
        ax.plot(epochs, [100 * v["val_accuracy"] for v in curve], marker=".", label=name)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tables(payload: dict) -> list[dict]:
    """The results table of a bhn-mnist metrics.json's ``methods``: every configuration's test
    accuracy beside the paper's Table 1 figure (in the order of :data:`DEFAULT_CONFIGS`)."""
    rows = []
    order = {name: i for i, name in enumerate(DEFAULT_CONFIGS)}
    for name, row in sorted(payload["methods"].items(),
                            key=lambda item: order.get(item[0], len(order))):
        ours = 100 * row["test_accuracy"]
        paper = row["paper_accuracy"]
        rows.append({"configuration": name, "test accuracy %": ours, "paper %": paper,
                     "difference (points)": None if paper is None else ours - paper,
                     "test NLL": row["test_nll"], "best epoch": row["best_epoch"],
                     "train s": row["train_s"]})
    return [table("Test accuracy on MNIST beside Krueger et al. (2017), Table 1",
                  ["configuration", "test accuracy %", "paper %", "difference (points)",
                   "test NLL", "best epoch", "train s"], rows,
                  note="Configurations `5k-<hidden>/…` train on the first 5,000 training images "
                       "with that many hidden units; the others on 50,000 with 800. The "
                       "paper's numbers: hyperbayes.experiments.papers (Table 1). `train s` "
                       "counts the training time recorded in checkpoints (a run resumed from "
                       "a checkpoint written before that was recorded shows only the resumed "
                       "part).", digits=2)]


def _report(payload: dict, figures: list[str]) -> str:
    settings = payload["settings"]
    recipes = payload.get("recipes", {})
    flow = next((r["options"] for r in recipes.values() if r["method"].startswith("flow")), {})
    dropout = next((r["options"] for r in recipes.values() if "dropout" in r["options"]), {})
    return "\n".join([
        "# bhn-mnist: Bayesian hypernetworks on MNIST (Krueger et al. 2017, Table 1)",
        "",
        f"Adam lr {settings['lr']} (cosine decay), batch {settings['batch_size']}, gradient "
        f"norm clipped at {settings['clip_norm']}; {settings['epochs']} epochs on MNIST 50,000 "
        f"and {settings['epochs_subset']} on MNIST 5,000; parameters of the best validation "
        f"accuracy ({settings['val_samples']} MC samples; {settings['validations']} checks on "
        f"MNIST 50,000, {settings['validations_subset']} on MNIST 5,000); "
        f"test accuracy with {settings['test_samples']} MC samples. Flows: RealNVP couplings "
        f"(hidden {flow.get('hidden', '–')}) over the weight-norm scales, coupling "
        f"log-scales bounded with the {flow.get('log_scale_clamp', 'soft')!r} clamp "
        "('soft': tanh into (−5, 3); 'hard': Pyro's clamp, which passes gradients straight "
        "through and with which every coupling flow diverged); the coupling "
        f"networks train at {settings['flow_lr_multiplier']} × lr. `dropout` keeps "
        f"dropout p = {dropout.get('dropout', '–')} on at test time (MC dropout, no weight "
        "decay); the paper's dropout baseline may be the deterministic net. The paper's epoch "
        "count is not stated.",
        "",
        render_tables(payload["tables"]),
        *[f"![{f}]({f})" for f in figures],
        "",
    ])
