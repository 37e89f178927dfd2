"""metaprior-mnist, metaprior-fewshot, metaprior-surgery: the MetaPrior on MNIST 50,000
(Karaletsos et al. 2018, Figs. 4–6).

Net 784-100-10 ReLU, codes D = 10, hyperprior g with 32 sin units (see :class:`Settings`).

* ``metaprior-mnist``: Gaussian-LV (latent codes, mean-field Q), Gaussian-OH (fixed one-hot codes,
  g fitted by maximum likelihood) and mean-field VI (N(0, 1) prior); test accuracy; t-SNE of the
  code means by layer; the 28×28 image of the input units' codes (3 principal components as RGB).
* ``metaprior-fewshot``: after clean training, permute the pixels, the labels or both; re-infer Q
  over every code (g frozen) from the clean codes on a growing number of shots (the first
  examples of the permuted training set); accuracy on the permuted and on the clean test set
  against the number of shots and of illation steps, beside a mean-field BNN fine-tuned on the
  same shots for the same steps.
* ``metaprior-surgery``: the same, updating only the input codes (pixel permutation) or only the
  output codes (label permutation).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import datasets, methods
from ..datasets import transforms
from ..inference import fit, illate, metrics, predict, resolve_device
from ..models import Categorical, priors
from ..models.metaprior import MetaPrior
from .common import (
    ExperimentResult,
    checkpoint_name,
    experiment,
    finish,
    markdown_table,
    plotting,
    recipes_used,
    train_method,
)

__all__ = ["run_mnist", "run_fewshot", "run_surgery", "Settings", "MNIST_METHODS"]

MNIST_METHODS = ("gaussian_lv", "gaussian_oh", "meanfield")
TASKS = ("pixels", "labels", "both")
SURGERY_SITES = {"pixels": "inputs", "labels": "outputs", "both": ["codes.0", "codes.2"]}


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; ``quick`` (tests, notebooks) uses a few MNIST examples."""

    hidden: int = 100
    epochs: float = 10
    batch_size: int = 128
    # unless the method's recipe sets its own: the MetaPrior's classification recipe trains at
    # 1e-2 (with a sin hyperprior of 32 units over 10-dimensional codes, rescaled at the start,
    # weights divided by √fan_in: see hyperbayes.methods)
    lr: float = 1e-3
    test_samples: int = 50
    shots: tuple = (20, 50, 100, 200, 500)
    illation_steps: tuple = (50, 200, 500)
    illation_lr: float = 1e-2
    # the codes' prior during illation, per experiment (see hyperbayes.inference.illate)
    fewshot_anchor: str = "posterior"
    surgery_anchor: str = "prior"
    eval_limit: int | None = 2000    # test images scored in few-shot runs
    train_limit: int | None = None

    @classmethod
    def quick(cls) -> Settings:
        """Tiny settings: 1,000 training images, 2 epochs, two shot counts."""
        return cls(hidden=32, epochs=2, test_samples=10, shots=(20, 50), illation_steps=(5, 20),
                   eval_limit=500, train_limit=1000)


def _data(settings: Settings, data):
    data = data if data is not None else datasets.load("mnist")
    if settings.train_limit:
        data = transforms.first_n(data, settings.train_limit)
    return data


def _train(name, settings, train, device, seed, progress, checkpoint_dir, overrides):
    """Set up ``name`` by its classification recipe and train it (or resume its checkpoint)."""
    fields = {k: v for k, v in asdict(settings).items() if k in _TRAINING_FIELDS}
    fitted = train_method(
        name, "classification", [784, settings.hidden, 10], priors.Normal(1.0), Categorical(),
        train, epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
        seed=seed, device=device, lr_schedule="cosine", progress=progress,
        checkpoint_every=500, overrides=overrides.get(name),
        checkpoint=None if checkpoint_dir is None else checkpoint_dir / checkpoint_name(
            name, fields, seed, train, options=overrides.get(name)))
    return fitted.model, fitted.guide, fitted.result


_TRAINING_FIELDS = ("hidden", "epochs", "batch_size", "lr", "train_limit")


def _accuracy(model, guide, split, samples) -> float:
    pred = predict(model, guide, split.x.to(model.device), samples)
    return metrics.accuracy(pred.probs.cpu(), split.y)


@experiment
def run_mnist(methods_to_run=MNIST_METHODS, *, quick: bool = False, device="auto",
              seed: int = 0, out: str | Path = "results/metaprior-mnist",
              settings: Settings | None = None, progress: bool | None = None,
              data=None, overrides: dict | None = None) -> ExperimentResult:
    """Train each method on MNIST (each set up by its registered ``"classification"`` recipe;
    ``gaussian_lv`` and ``gaussian_oh`` are the paper's names for ``metaprior`` and
    ``metaprior_onehot``); write metrics.json (per method ``test_accuracy``, ``test_nll``),
    codes_tsne.png, input_codes.png and report.md. ``overrides`` maps a method to build options
    that replace its recipe's."""
    start = time.perf_counter()
    settings = settings or (Settings.quick() if quick else Settings())
    overrides = _check(methods_to_run, overrides)
    device = resolve_device(device)
    data = _data(settings, data)
    out = Path(out)
    results, fitted = {}, {}
    for name in methods_to_run:
        t0 = time.perf_counter()
        model, guide, _ = _train(name, settings, data.train, device, seed, progress,
                                 out / "checkpoints", overrides)
        pred = predict(model, guide, data.test.x.to(device), settings.test_samples)
        report = metrics.classification_report(pred.probs.cpu(), data.test.y)
        results[name] = {"test_accuracy": report["accuracy"], "test_nll": report["nll"],
                         "test_ece": report["ece"], "wall_time_s": time.perf_counter() - t0}
        fitted[name] = (model, guide)
    figures = []
    latent = [n for n, (model, _) in fitted.items() if isinstance(model.prior, MetaPrior)
              and model.prior.codes == "latent"]
    if latent:  # the first MetaPrior with learned codes
        guide = fitted[latent[0]][1]
        codes = {k: v.detach().cpu() for k, v in guide.locs().items()}
        figures += [out / "codes_tsne.png", out / "input_codes.png"]
        _tsne_figure(figures[0], codes, seed)
        _input_codes_figure(figures[1], codes["codes.0"])
    return finish("metaprior-mnist", out, start, seed=seed, quick=quick, device=device,
                  settings=settings, figures=figures,
                  report=lambda p: _report(p, settings, [f.name for f in figures]),
                  recipes=recipes_used(methods_to_run, "classification", overrides),
                  train_examples=len(data.train), methods=results)


def _report(payload: dict, settings, figures: list[str]) -> str:
    rows = [{"method": m, **v} for m, v in payload["methods"].items()]
    meta = next((r["options"] for r in payload["recipes"].values()
                 if r["method"] == "metaprior"), {})
    text = ["# metaprior-mnist: MetaPrior on MNIST 50,000 (Karaletsos et al. 2018, Fig. 4)", "",
            f"784-{settings.hidden}-10 ReLU, {settings.epochs} epochs, batch "
            f"{settings.batch_size}; codes D = {meta.get('code_dim', '–')}, g with "
            f"{meta.get('hidden', '–')} {meta.get('activation', '–')} units (the MetaPrior's "
            "classification recipe). `gaussian_lv` / `gaussian_oh` are the paper's names for "
            "`metaprior` (latent codes) and `metaprior_onehot`. The paper's table "
            "(Fig. 4d) is an image in our copy; its numbers are not legible there.", "",
            markdown_table(rows, ["method", "test_accuracy", "test_nll", "test_ece",
                                  "wall_time_s"]), "",
            *[f"![{f}]({f})" for f in figures], ""]
    return "\n".join(text)


def _tsne_figure(path: Path, codes: dict, seed: int) -> None:
    from sklearn.manifold import TSNE

    plt, sns = plotting()
    names = [n for n in sorted(codes) if n != "codes.global"]
    stacked = torch.cat([codes[n] for n in names]).numpy()
    embedded = TSNE(n_components=2, random_state=seed, init="pca",
                    perplexity=min(30, len(stacked) - 1)).fit_transform(stacked)
    fig, ax = plt.subplots(figsize=(6, 5))
    start = 0
    for name, label, color in zip(names, ("input units", "hidden units", "output units"),
                                  sns.color_palette("deep"), strict=False):
        n = len(codes[name])
        ax.scatter(*embedded[start:start + n].T, s=6 if n > 50 else 40, color=color, label=label)
        start += n
    ax.set_title("t-SNE of the code means after training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _input_codes_figure(path: Path, input_codes: torch.Tensor) -> None:
    plt, _ = plotting()
    centred = input_codes - input_codes.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    rgb = centred @ v[:3].T
    rgb = (rgb - rgb.min(0).values) / (rgb.max(0).values - rgb.min(0).values).clamp_min(1e-8)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(rgb.reshape(28, 28, 3).numpy())
    ax.set_title("input-unit codes (3 principal components as RGB)", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _permuted(data, task: str, seed: int):
    permuted = data
    if task in ("pixels", "both"):
        permuted, _ = transforms.permute_pixels(permuted, seed=seed + 1)
    if task in ("labels", "both"):
        permuted, _ = transforms.permute_labels(permuted, seed=seed + 2)
    return permuted


def _check(methods_to_run, overrides: dict | None) -> dict:
    """``overrides`` (or {}), after checking every name is a registered method."""
    for name in [*methods_to_run, *(overrides or {})]:
        methods.get(name)  # unknown names raise with the list of known ones
    return overrides or {}


def _adaptation(kind: str, methods_to_run, *, quick, device, seed, out, settings, progress,
                data, overrides=None) -> ExperimentResult:
    start = time.perf_counter()
    settings = settings or (Settings.quick() if quick else Settings())
    overrides = _check(methods_to_run, overrides)
    device = resolve_device(device)
    data = _data(settings, data)
    out = Path(out)
    clean_test = data.test.subset(slice(0, settings.eval_limit)) if settings.eval_limit else \
        data.test
    trained = {name: _train(name, settings, data.train, device, seed, progress,
                            out / "checkpoints", overrides)[:2] for name in methods_to_run}
    results = {name: {} for name in methods_to_run}
    baseline_clean = {name: _accuracy(*trained[name], clean_test, settings.test_samples)
                      for name in methods_to_run}
    for task in TASKS:
        permuted = _permuted(data, task, seed)
        test = permuted.test.subset(slice(0, settings.eval_limit)) if settings.eval_limit else \
            permuted.test
        for name in methods_to_run:
            model, guide = trained[name]
            rows = {}
            for shots in settings.shots:
                shots_data = permuted.train.subset(slice(0, shots))
                by_steps = _adapt(kind, name, task, model, guide, shots_data, test, clean_test,
                                  settings, device, seed)
                last = by_steps[str(max(settings.illation_steps))]
                rows[str(shots)] = {"permuted_accuracy": last["permuted_accuracy"],
                                    "clean_accuracy": last["clean_accuracy"],
                                    "by_steps": by_steps}
            results[name][task] = rows
    figure = out / "adaptation.png"
    out.mkdir(parents=True, exist_ok=True)
    _adaptation_figure(figure, results, baseline_clean, settings, kind)
    return finish(f"metaprior-{kind}", out, start, seed=seed, quick=quick, device=device,
                  settings=settings, figures=[figure],
                  report=lambda p: _adaptation_report(p, kind, figure.name),
                  clean_accuracy_before=baseline_clean, methods=results)


def _adapt(kind, name, task, model, guide, shots_data, test, clean_test, settings, device,
           seed):
    """Adapt a copy of the trained guide (MetaPrior: illation; mean field: fine-tuning) and
    score it at each number of steps."""
    checkpoints = sorted(settings.illation_steps)
    scores = {}
    work = copy.deepcopy(guide)

    def score(step, _loss):
        if step in checkpoints:
            scores[str(step)] = {
                "permuted_accuracy": _accuracy(model, work, test, settings.test_samples),
                "clean_accuracy": _accuracy(model, work, clean_test, settings.test_samples)}
        return False

    options = {"steps": max(checkpoints), "lr": settings.illation_lr, "device": device,
               "seed": seed, "progress": False, "callback": score,
               "batch_size": min(len(shots_data), settings.batch_size)}
    if not isinstance(model.prior, MetaPrior):
        # a baseline: every weight's posterior moves on the shots (no codes to illate)
        fit(model, work, shots_data, **options)
    else:
        sites = "all" if kind == "fewshot" else SURGERY_SITES[task]
        anchor = settings.fewshot_anchor if kind == "fewshot" else settings.surgery_anchor
        illate(model, work, shots_data, sites=sites, anchor=anchor, copy_guide=False, **options)
    return scores


@experiment
def run_fewshot(methods_to_run=("gaussian_lv", "meanfield"), *, quick: bool = False,
                device="auto", seed: int = 0, out: str | Path = "results/metaprior-fewshot",
                settings: Settings | None = None, progress: bool | None = None,
                data=None, overrides: dict | None = None) -> ExperimentResult:
    """Few-shot adaptation to permuted MNIST by illation of every code; metrics.json has per
    method, task and shots count ``permuted_accuracy`` and ``clean_accuracy``."""
    return _adaptation("fewshot", methods_to_run, quick=quick, device=device, seed=seed,
                       out=out, settings=settings, progress=progress, data=data,
                       overrides=overrides)


@experiment
def run_surgery(methods_to_run=("gaussian_lv", "meanfield"), *, quick: bool = False,
                device="auto", seed: int = 0, out: str | Path = "results/metaprior-surgery",
                settings: Settings | None = None, progress: bool | None = None,
                data=None, overrides: dict | None = None) -> ExperimentResult:
    """Structured surgery: illate only the input codes (pixels), the output codes (labels) or
    both (both); the mean-field baseline fine-tunes every weight."""
    return _adaptation("surgery", methods_to_run, quick=quick, device=device, seed=seed,
                       out=out, settings=settings, progress=progress, data=data,
                       overrides=overrides)


def _adaptation_figure(path, results, baseline_clean, settings, kind):
    plt, sns = plotting()
    names = list(results)
    fig, axes = plt.subplots(len(names), len(TASKS) * 2, figsize=(3.2 * len(TASKS) * 2,
                                                                    2.9 * len(names)),
                             squeeze=False)
    palette = sns.color_palette("viridis", len(settings.illation_steps))
    for r, name in enumerate(names):
        for t, task in enumerate(TASKS):
            for c, key in enumerate(("permuted_accuracy", "clean_accuracy")):
                ax = axes[r][2 * t + c]
                shots = [int(s) for s in results[name][task]]
                for color, steps in zip(palette, sorted(settings.illation_steps), strict=True):
                    ax.plot(shots, [100 * results[name][task][str(s)]["by_steps"][str(steps)][key]
                                    for s in shots], marker="o", color=color,
                            label=f"{steps} steps")
                if key == "clean_accuracy":
                    ax.axhline(100 * baseline_clean[name], color="0.5", ls="--", lw=0.8)
                ax.set_xscale("log")
                ax.set_xticks(shots, [str(s) for s in shots], fontsize=7)
                ax.minorticks_off()
                ax.set_title(f"{name}: {task}, {key.split('_')[0]}", fontsize=8)
                ax.set_xlabel("shots")
                ax.set_ylim(0, 100)
        axes[r][0].set_ylabel("accuracy (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"metaprior-{kind}: accuracy after adaptation (grey: clean accuracy before)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _adaptation_report(payload, kind, figure):
    s = payload["settings"]
    steps = str(max(s["illation_steps"]))
    lines = [f"# metaprior-{kind}: adapting to permuted MNIST "
             "(Karaletsos et al. 2018, Figs. 5–6)", "",
             ("Every code is re-inferred (illation, g frozen) from the clean posterior"
              if kind == "fewshot" else
              "Only the input codes (pixels), the output codes (labels) or both (both) are "
              "re-inferred (g frozen)") +
             f" on the first N examples of the permuted training set, {steps} steps at lr "
             f"{s['illation_lr']}; `meanfield` fine-tunes every weight's posterior on the same "
             f"shots for the same steps. Accuracies on the first {s['eval_limit']} test images "
             "(permuted, and clean).", "",
             "The codes' prior during illation: " + (
                 "the clean posterior (a few shots move the codes only as far as they ask; "
                 f"against N(0, I) the KL of all {(794 + s['hidden']) * s['code_dim']:,} code "
                 "coordinates outweighs a few hundred examples and pulls every code back to the "
                 "prior)."
                 if s[f"{kind}_anchor"] == "posterior" else
                 "N(0, I), the model's prior (the paper's ELBO)."), ""]
    for name, tasks in payload["methods"].items():
        rows = []
        for task, by_shots in tasks.items():
            for shots, v in by_shots.items():
                rows.append({"task": task, "shots": shots,
                             "permuted_accuracy": v["permuted_accuracy"],
                             "clean_accuracy": v["clean_accuracy"]})
        lines += [f"## {name} (clean accuracy before: "
                  f"{payload['clean_accuracy_before'][name]:.3f})", "",
                  markdown_table(rows, ["task", "shots", "permuted_accuracy",
                                        "clean_accuracy"]), ""]
    lines += [f"![adaptation]({figure})", ""]
    return "\n".join(lines)

