"""bbh-mnist and bbh-rotated: Bayes by Hypernet on MNIST 50,000 and on a rotated test "3".

Pawlowski et al. (2017), *Implicit Weight Uncertainty in Neural Networks*:

- ``bbh-mnist``: MLP 784-800-800-10 ReLU. ``bbh``: weight-norm layers whose per-unit scales come
  from a generator (noise ε ~ N(0, I_D), D = 1,610 scales, concatenated with a one-hot layer
  code → [64, 256] → the layer's scales, ``over="scales"``); directions and biases are point
  estimates (flat prior); scale-mixture prior 0.7·N(0, 0.01²) + 0.3·N(0, 5²) on the scales;
  KL(q‖p) from a discriminator pretrained for 300 steps that scores each scalar conditioned on
  q's marginal at its position (``discriminator="coordinate"``). The paper's code used 64-dim
  noise and one pooled per-scalar [20, 20] discriminator, which sees only the pooled marginal
  of all scales and cannot tell a collapsed q from the prior (``discriminator="pooled"``,
  ``noise_dim=64`` reproduce it). Either way the [64, 256] generator reads ε through 64 units,
  so q spans at most 64 of the 1,610 dimensions: degenerate, trained knowingly as in the paper
  (the recipe's ``allow_degenerate``). Beside it ``mle`` (maximum
  likelihood) and ``dropout`` (MC dropout, p = 0.5 kept on at test, no weight decay: the
  paper's baseline). Every method is a registered name set up by its ``"classification"``
  recipe (:mod:`hyperbayes.methods`: the settings above are ``bbh``'s). Adam lr 1e-3, batch
  128; the
  parameters of the best validation accuracy are kept; test accuracy and NLL with 100 MC
  samples. Every method checkpoints while it trains (an interrupted run resumes; a finished
  checkpoint is reused without training).
- ``bbh-rotated``: the first test "3" rotated from 0° to 180°; per method the class
  probabilities (mean ± std over 100 samples) against the angle, with the models of
  ``bbh-mnist`` (its checkpoints are reused, or the models are trained if absent).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import datasets, methods
from ..datasets import transforms
from ..datasets.core import Split
from ..guides import ImplicitGuide
from ..inference import metrics, predict, resolve_device
from ..models import Categorical, priors
from ..models.priors import on_device
from . import papers
from .common import (
    ExperimentResult,
    checkpoint_name,
    experiment,
    finish,
    header,
    markdown_table,
    plotting,
    recipes_used,
    train_method,
    write_metrics,
)

__all__ = ["run", "run_rotated", "Settings", "DEFAULT_METHODS", "PAPER_ACCURACY"]

DEFAULT_METHODS = ("bbh", "mle", "dropout")

# Test accuracy (%) of the paper's MNIST table, in hyperbayes.experiments.papers
PAPER_ACCURACY = papers.BBH_MNIST


@dataclass(frozen=True)
class Settings:
    """Sizes of one run. ``quick`` (tests, notebooks) trains small nets on 1,000 images."""

    # the paper trains ~50 epochs; 30 fits a GPU session (note *experiment-costs*)
    epochs: float = 30
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str | None = "cosine"
    clip_norm: float | None = 10.0
    hidden: int = 800
    # evaluation
    val_samples: int = 10
    validations: int = 20
    test_samples: int = 100
    train_limit: int | None = None  # use only the first training examples (quick runs)
    eval_limit: int | None = None   # use only the first validation/test examples (quick runs)
    # bbh-rotated
    angles: tuple = tuple(range(0, 181, 5))
    digit: int = 3

    @classmethod
    def quick(cls) -> Settings:
        """Tiny settings: 1,000 training images, 100 hidden units, 3 epochs."""
        return cls(epochs=3, hidden=100, val_samples=4, validations=2, test_samples=20,
                   train_limit=1000, eval_limit=1000, angles=tuple(range(0, 181, 30)))


def _splits(settings: Settings, data):
    """(train, val, test) after the quick-run limits."""
    data = data if data is not None else datasets.load("mnist")
    if settings.train_limit:
        data = transforms.first_n(data, min(settings.train_limit, len(data.train)))
    val, test = data.val, data.test
    if settings.eval_limit:
        val = val.subset(slice(0, settings.eval_limit))
        test = test.subset(slice(0, settings.eval_limit))
    return data.train, val, test


_EVAL_ONLY = ("test_samples", "angles", "digit")  # settings that do not shape training


def checkpoint_path(directory: Path, name: str, settings: Settings, seed: int, train_split,
                    overrides: dict | None = None) -> Path:
    """Where ``name``'s checkpoint lives: a file name tied to its recipe, the settings that
    shape training (not the evaluation sizes), the seed and the data, so changed settings never
    resume from a stale checkpoint."""
    fields = {k: v for k, v in asdict(settings).items() if k not in _EVAL_ONLY}
    return Path(directory) / checkpoint_name(name, fields, seed, train_split,
                                             options=(overrides or {}).get(name))


def train(name: str, settings: Settings, train_split: Split, val: Split, *, device, seed: int,
          checkpoint_dir: Path, progress: bool | None = None, overrides: dict | None = None):
    """Train (or resume, or reuse a finished checkpoint of) one method.

    Returns ``(model, guide, FitResult, reused, loss)``; ``reused`` is True when the checkpoint
    was already finished and no step ran (the loss's state, e.g. the discriminator, is restored
    from it then).
    """
    inputs = math.prod(train_split.x.shape[1:])
    fitted = train_method(
        name, "classification", [inputs, settings.hidden, settings.hidden, 10], priors.Flat(),
        Categorical(), train_split, epochs=settings.epochs, batch_size=settings.batch_size,
        lr=settings.lr, seed=seed, device=device, lr_schedule=settings.lr_schedule,
        clip_norm=settings.clip_norm, val=val, validations=settings.validations,
        val_samples=settings.val_samples, progress=progress,
        overrides=(overrides or {}).get(name),
        checkpoint=checkpoint_path(checkpoint_dir, name, settings, seed, train_split, overrides))
    return fitted.model, fitted.guide, fitted.result, fitted.reused, fitted.loss


@experiment
def run(methods_to_run=DEFAULT_METHODS, *, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/bbh-mnist", settings: Settings | None = None,
        progress: bool | None = None, data=None,
        checkpoints: str | Path | None = None,
        overrides: dict | None = None) -> ExperimentResult:
    """Train and test every method; write metrics.json (``methods[name]`` with
    ``test_accuracy``, ``test_nll``, ``test_ece``, ``paper_accuracy``), accuracy.png,
    validation.png and report.md.

    ``checkpoints`` is the checkpoint folder (default ``out/checkpoints``): give another run's
    folder to reuse its trained models. ``data`` overrides MNIST (a Dataset with train/val/test
    splits of images). ``overrides`` maps a method to build options that replace its recipe's.
    """
    start = time.perf_counter()
    settings = settings or (Settings.quick() if quick else Settings())
    overrides = _check(methods_to_run, overrides)
    device = resolve_device(device)
    train_split, val, test = _splits(settings, data)
    out = Path(out)
    checkpoint_dir = Path(checkpoints) if checkpoints is not None else out / "checkpoints"
    rows, curves = {}, {}
    payload = header("bbh-mnist", seed=seed, quick=quick, device=device, settings=settings,
                     recipes=recipes_used(methods_to_run, "classification", overrides),
                     train_examples=len(train_split), test_examples=len(test), methods=rows)
    steps_per_epoch = math.ceil(len(train_split) / settings.batch_size)
    for name in methods_to_run:
        model, guide, result, reused, loss = train(
            name, settings, train_split, val, device=device, seed=seed,
            checkpoint_dir=checkpoint_dir, progress=progress, overrides=overrides)
        t0 = time.perf_counter()
        pred = predict(model, guide, test.x.to(device), settings.test_samples)
        report = metrics.classification_report(pred.probs.cpu(), test.y)
        best = max(result.validation, key=lambda v: v["val_accuracy"])
        rows[name] = {
            "test_accuracy": report["accuracy"], "test_nll": report["nll"],
            "test_ece": report["ece"], "paper_accuracy": PAPER_ACCURACY.get(name),
            "best_step": result.best_step, "best_epoch": result.best_step / steps_per_epoch,
            "best_val_accuracy": best["val_accuracy"], "steps": result.steps,
            "reused_checkpoint": reused,
            "guide_parameters": sum(p.numel() for p in guide.parameters()),
            "model_parameters": sum(p.numel() for p in model.parameters()),
            "train_s": result.total_wall_time_s, "test_s": time.perf_counter() - t0,
        }
        if isinstance(guide, ImplicitGuide):  # a generator: how wide are its scales?
            rows[name]["scale_posterior"] = scale_posterior_check(guide, loss)
        curves[name] = result.validation
        payload["wall_time_s"] = time.perf_counter() - start
        write_metrics(out, payload)
    payload["validation_curves"] = curves
    out.mkdir(parents=True, exist_ok=True)
    figures = [out / "accuracy.png", out / "validation.png"]
    _accuracy_figure(figures[0], rows)
    _validation_figure(figures[1], curves, steps_per_epoch)
    return finish("bbh-mnist", out, start, payload=payload, figures=figures,
                  report=lambda p: _report(p, [f.name for f in figures]))


def _check(methods_to_run, overrides: dict | None) -> dict:
    """``overrides`` (or {}), after checking every name is a registered method."""
    for name in [*methods_to_run, *(overrides or {})]:
        methods.get(name)  # unknown names raise with the list of known ones
    return overrides or {}


def scale_posterior_check(guide, loss, num_samples: int = 1000, draws: int = 256) -> dict:
    """How wide the generated scales are, and what KL(q‖p) is, read two ways.

    From ``num_samples`` generator draws: the mean and median over scales of each scale's
    posterior std; the KL of the moment-matched mean-field Gaussian over the same scales to the
    prior, Σ_j KL(N(m_j, s_j²) ‖ p_j), by Monte Carlo over ``draws`` draws (the prior is a
    mixture, so no closed form; a mean-field Gaussian fit of q is what "analytic KL" VI would
    have); and the discriminator's own estimate E_q[T(w)] on the same draws (when the loss has
    one). A collapsed posterior shows tiny stds and a huge Gaussian KL; a discriminator that
    reads far less than the Gaussian KL does not see it.
    """
    with torch.no_grad():
        samples = guide.sample_generated(num_samples)
        mean, std = samples.mean(0), samples.std(0).clamp_min(1e-12)
        gauss = torch.distributions.Normal(mean, std)
        z = gauss.sample((draws,))
        log_prior = torch.zeros(draws, device=z.device)
        start = 0
        for site in guide.generated_sites:
            part = z[:, start:start + site.numel].reshape(draws, *site.shape)
            prior = on_device(site.prior, z.device)
            log_prior = log_prior + prior.log_prob(part).reshape(draws, -1).sum(-1)
            start += site.numel
        gaussian_kl = float((gauss.log_prob(z).sum(-1) - log_prior).mean())
        discriminator = getattr(loss, "discriminator", None)
        estimate = (float(discriminator.kl_estimate(samples)) if discriminator is not None
                    else None)
    return {"scales": samples.shape[1], "mean_std": float(std.mean()),
            "median_std": float(std.median()), "gaussian_kl": gaussian_kl,
            "discriminator_kl": estimate,
            "discriminator": getattr(discriminator, "kind", None)}


def _accuracy_figure(path: Path, rows: dict) -> None:
    """Test accuracy of every method, ours beside the paper's."""
    import pandas as pd

    plt, sns = plotting()
    records = []
    for name, row in rows.items():
        records.append({"method": name, "source": "hyperbayes",
                        "accuracy": 100 * row["test_accuracy"]})
        records.append({"method": name, "source": "paper", "accuracy": row["paper_accuracy"]})
    frame = pd.DataFrame(records)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(rows) + 2), 3.8))
    sns.barplot(frame, x="method", y="accuracy", hue="source", ax=ax)
    ax.set(ylim=(max(0.0, frame["accuracy"].min() - 2), 100), ylabel="test accuracy (%)",
           xlabel="")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _validation_figure(path: Path, curves: dict, steps_per_epoch: int) -> None:
    """Validation accuracy during training, one line per method."""
    plt, _ = plotting()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, curve in curves.items():
        ax.plot([v["step"] / steps_per_epoch for v in curve],
                [100 * v["val_accuracy"] for v in curve], marker=".", label=name)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _scale_lines(check: dict | None) -> list[str]:
    """The report's paragraph on the trained scale posterior (see scale_posterior_check)."""
    if not check:
        return []
    disc = ("" if check["discriminator_kl"] is None else
            f"; the {check['discriminator']} discriminator reads "
            f"{check['discriminator_kl']:,.0f} nats on the same draws")
    return [f"Trained scale posterior (1,000 generator draws of the {check['scales']:,} scales): "
            f"mean std {check['mean_std']:.4f} (median {check['median_std']:.4f}); the "
            f"moment-matched mean-field Gaussian over the scales has KL "
            f"{check['gaussian_kl']:,.0f} nats to the prior{disc}.", ""]


def _report(payload: dict, figures: list[str]) -> str:
    s = payload["settings"]
    recipes = payload.get("recipes", {})
    rows = [{"method": name, "test accuracy %": 100 * r["test_accuracy"],
             "paper %": r["paper_accuracy"],
             "difference (points)": None if r["paper_accuracy"] is None else
             100 * r["test_accuracy"] - r["paper_accuracy"],
             "test NLL": r["test_nll"], "best epoch": r["best_epoch"], "train s": r["train_s"]}
            for name, r in payload["methods"].items()]
    return "\n".join([
        "# bbh-mnist: Bayes by Hypernet on MNIST (Pawlowski et al. 2017)",
        "",
        f"MNIST {payload['train_examples']:,} training images, MLP 784-{s['hidden']}-"
        f"{s['hidden']}-10 ReLU. `bbh`: weight-norm layers whose {2 * s['hidden'] + 10:,} "
        "per-unit scales come from a generator (noise and a one-hot layer code → hidden "
        "layers → scales, LeakyReLU 0.1), directions and biases point estimates, KL(q‖p) from "
        "a discriminator; `dropout`: MC dropout kept on at test, no weight decay; `mle`: "
        "maximum likelihood. Each method's build options and prior (its registered "
        "classification recipe and this run's overrides):",
        "",
        *[f"- `{name}`: {r['options']}; prior {r['prior']}" for name, r in recipes.items()],
        "",
        f"All: Adam lr {s['lr']} ({s['lr_schedule'] or 'constant'} "
        f"schedule), batch {s['batch_size']}, gradient norm clipped at {s['clip_norm']}, "
        f"{s['epochs']} epochs (the paper: ~50), parameters of the best validation accuracy "
        f"({s['val_samples']} MC samples, {s['validations']} checks); test accuracy with "
        f"{s['test_samples']} MC samples on {payload['test_examples']:,} test images.",
        "",
        markdown_table(rows, ["method", "test accuracy %", "paper %", "difference (points)",
                              "test NLL", "best epoch", "train s"], digits=2),
        "",
        *[line for r in payload["methods"].values()
          for line in _scale_lines(r.get("scale_posterior"))],
        *[f"![{f}]({f})" for f in figures],
        "",
    ])


def rotated_digit(test: Split, digit: int, angles) -> Split:
    """The first test image of class ``digit``, rotated counter-clockwise by each angle."""
    hits = (test.y == digit).nonzero()
    if len(hits) == 0:
        raise ValueError(f"the test set has no image of class {digit}")
    index = int(hits[0])
    image = test.x[index:index + 1].expand(len(angles), *test.x.shape[1:]).clone()
    labels = test.y[index:index + 1].expand(len(angles)).clone()
    return transforms.rotate(Split(image, labels), torch.tensor(list(angles), dtype=torch.float))


@experiment
def run_rotated(methods_to_run=DEFAULT_METHODS, *, quick: bool = False, device="auto",
                seed: int = 0, out: str | Path = "results/bbh-rotated",
                settings: Settings | None = None, progress: bool | None = None, data=None,
                checkpoints: str | Path | None = None,
                overrides: dict | None = None) -> ExperimentResult:
    """Class probabilities (mean ± std over MC samples) of a test "3" rotated 0°–180°.

    Uses the models of ``bbh-mnist`` with the same settings and seed: their checkpoints in
    ``checkpoints`` (default ``out/../bbh-mnist/checkpoints``, where ``hyperbayes run bbh-mnist``
    writes them) are reused; a method without one is trained there. Writes metrics.json
    (``methods[name]`` with ``mean_probs``, ``std_probs`` (angles × 10), ``predicted``,
    ``predictive_entropy``, ``mean_std_of_predicted``), rotated.png and report.md.
    """
    start = time.perf_counter()
    settings = settings or (Settings.quick() if quick else Settings())
    overrides = _check(methods_to_run, overrides)
    device = resolve_device(device)
    train_split, val, test = _splits(settings, data)
    out = Path(out)
    checkpoint_dir = (Path(checkpoints) if checkpoints is not None
                      else out.parent / "bbh-mnist" / "checkpoints")
    angles = list(settings.angles)
    images = rotated_digit(test, settings.digit, angles)
    results = {}
    for name in methods_to_run:
        t0 = time.perf_counter()
        model, guide, _, reused, _ = train(name, settings, train_split, val, device=device,
                                        seed=seed, checkpoint_dir=checkpoint_dir,
                                        progress=progress, overrides=overrides)
        probs = predict(model, guide, images.x.to(device), settings.test_samples).probs.cpu()
        mean, std = probs.mean(0), probs.std(0) if len(probs) > 1 else torch.zeros_like(
            probs[0])
        predicted = mean.argmax(-1)
        entropy = -(mean * mean.clamp_min(1e-12).log()).sum(-1)
        results[name] = {
            "mean_probs": mean, "std_probs": std, "predicted": predicted,
            "predictive_entropy": entropy,
            "mean_std_of_predicted": float(std.gather(1, predicted[:, None]).mean()),
            "mean_predictive_entropy": float(entropy.mean()),
            "accuracy_as_digit": float((predicted == settings.digit).float().mean()),
            "reused_checkpoint": reused, "wall_time_s": time.perf_counter() - t0,
        }
    out.mkdir(parents=True, exist_ok=True)
    figures = [out / "rotated.png"]
    _rotated_figure(figures[0], results, angles, images.x)
    return finish("bbh-rotated", out, start, seed=seed, quick=quick, device=device,
                  settings=settings, figures=figures,
                  report=lambda p: _rotated_report(p, [f.name for f in figures]),
                  checkpoints=str(checkpoint_dir), digit=settings.digit, angles=angles,
                  methods=results)


def _rotated_figure(path: Path, results: dict, angles, images: torch.Tensor) -> None:
    """Per method, each class's mean probability against the angle with a ±1 std band; a strip
    of the rotated images on top."""
    plt, sns = plotting()
    names = list(results)
    fig = plt.figure(figsize=(4.4 * len(names), 4.6))
    grid = fig.add_gridspec(2, len(names), height_ratios=(1, 5))
    strip = fig.add_subplot(grid[0, :])
    shown = list(range(0, len(angles), max(1, len(angles) // 12)))
    side = images.shape[-1]
    row = torch.cat([images[i, 0] for i in shown], dim=1)
    strip.imshow(row.numpy(), cmap="gray_r", aspect="equal",
                 extent=(0, len(shown) * side, side, 0))
    strip.set_xticks([(k + 0.5) * side for k in range(len(shown))],
                     [f"{angles[i]:g}°" for i in shown], fontsize=7)
    strip.set_yticks([])
    strip.grid(False)
    palette = sns.color_palette("tab10", 10)
    axes = [fig.add_subplot(grid[1, c]) for c in range(len(names))]
    for ax, name in zip(axes, names, strict=True):
        mean = torch.as_tensor(results[name]["mean_probs"])
        std = torch.as_tensor(results[name]["std_probs"])
        for c in range(mean.shape[1]):
            if mean[:, c].max() < 0.05:
                continue  # classes that never matter stay off the plot
            ax.plot(angles, mean[:, c], color=palette[c], lw=1.8, label=str(c))
            ax.fill_between(angles, (mean[:, c] - std[:, c]).clamp_min(0),
                            (mean[:, c] + std[:, c]).clamp_max(1), color=palette[c], alpha=0.2,
                            lw=0)
        ax.set(title=name, xlabel="rotation (degrees)", ylim=(-0.02, 1.02),
               xlim=(angles[0], angles[-1]))
        ax.legend(title="class", fontsize=7, title_fontsize=7, loc="center right")
    axes[0].set_ylabel("class probability (mean ± std)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _rotated_report(payload: dict, figures: list[str]) -> str:
    rows = [{"method": name, "mean std of predicted class": r["mean_std_of_predicted"],
             "mean predictive entropy": r["mean_predictive_entropy"],
             f"angles read as {payload['digit']}": r["accuracy_as_digit"],
             "reused checkpoint": r["reused_checkpoint"]}
            for name, r in payload["methods"].items()]
    angles = payload["angles"]
    per_angle = []
    for i, angle in enumerate(angles):
        line = {"angle": f"{angle}°"}
        for name, r in payload["methods"].items():
            c = int(r["predicted"][i])
            line[name] = f"{c}: {float(r['mean_probs'][i][c]):.2f} ± " \
                         f"{float(r['std_probs'][i][c]):.2f}"
        per_angle.append(line)
    s = payload["settings"]
    return "\n".join([
        f"# bbh-rotated: a test \"{payload['digit']}\" rotated from {angles[0]}° to "
        f"{angles[-1]}° (Pawlowski et al. 2017)",
        "",
        f"The first test image of class {payload['digit']}, rotated counter-clockwise "
        f"(bilinear); class probabilities with {s['test_samples']} MC samples of each bbh-mnist "
        f"model ({s['epochs']} epochs; checkpoints from `{payload['checkpoints']}`). Bands in "
        "the figure: ±1 std over the samples (ML has none: it is a point estimate).",
        "",
        markdown_table(rows, list(rows[0]) if rows else ["method"]),
        "",
        "Predicted class: mean probability ± std over samples, per angle:",
        "",
        markdown_table(per_angle, ["angle", *payload["methods"]]),
        "",
        *[f"![{f}]({f})" for f in figures],
        "",
    ])
