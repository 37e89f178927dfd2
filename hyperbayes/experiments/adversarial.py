"""adversarial: fast-gradient-sign attacks on the MNIST models; accuracy, uncertainty, detection.

Krueger et al. (2017), *Bayesian Hypernetworks*, §4.5 and Fig. 5 (after Li & Gal 2017 and
Louizos & Welling 2017): the first ``settings.attack_examples`` MNIST test images are attacked
with the untargeted fast gradient sign method (Goodfellow et al. 2014),

    x' = clip(x + ε · sign(∇ₓ[−log p(y | x, w)]), 0, 1),   w ~ q(w) one posterior draw,

at each step size ε of ``settings.epsilons`` (pixels in [0, 1]). As in the paper the gradient is
estimated with ONE Monte Carlo sample of the weights per batch of ``settings.attack_batch``
images (:func:`hyperbayes.inference.attacks.input_gradient`, any guide; a dropout net draws its
masks inside the net). The attacked images are then scored like clean ones with
``settings.zoo.test_samples`` samples (one set of weight draws for the clean images and every
ε): accuracy of the MC-averaged prediction, mean max-probability, predictive entropy, mean std
and BALD; ROC-AUC for detecting adversarial inputs (the clean test images against their attacked
versions, each score ranking by uncertainty) and for detecting errors (misclassified against
correctly classified attacked images).

The models are the suite's MNIST models (:mod:`~hyperbayes.experiments.zoo`, tag ``""``), the
same as ``calibration`` and ``ood`` use: with a shared checkpoint folder they are trained once.
Nothing here names a method except :data:`PAPER_ROLES`, which says which of ours the paper's
curves are (for the claims table). The paper has no table for this experiment (Fig. 5 only).
What a run costs is in the notes (*experiment costs*).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import datasets
from ..inference import metrics, resolve_device, set_seed
from ..inference.attacks import fgsm, input_gradient
from . import zoo
from .common import (
    ExperimentResult,
    apply_settings,
    experiment,
    finish,
    header,
    plotting,
    recipes_used,
    write_metrics,
)
from .suite import render_tables, table

__all__ = ["run", "Settings", "SCORES", "SCORE_LABELS", "PAPER_ROLES", "RISE_FACTOR", "MIN_RISE",
           "attack_metrics", "paper_claims", "payload_tables"]

#: uncertainty scores (keys of :func:`hyperbayes.inference.metrics.ood_scores`)
SCORES = ("max_prob", "entropy", "mean_std", "bald")
SCORE_LABELS = {"max_prob": "max-prob", "entropy": "entropy", "mean_std": "mean std",
                "bald": "BALD"}
#: which of our methods the paper's Fig. 5 curves are (only the claims table uses this); the
#: paper's BHNs are IAF and RealNVP flows, ours (``flow``) 8 RealNVP couplings
PAPER_ROLES = {"BHN": "flow", "MC dropout": "mcdropout"}
#: a mean score "rises with ε" when its peak over ε > 0 is at least RISE_FACTOR times its clean
#: value and MIN_RISE above it (a near-point posterior's round-off-sized BALD does not count)
RISE_FACTOR = 2.0
MIN_RISE = 1e-3


@dataclass(frozen=True)
class Settings:
    """Sizes of one run.

    ``zoo``: how the models are trained (shared with ``calibration`` / ``ood``).
    ``attack_examples``: the first test images attacked. ``epsilons``: FGS step sizes (pixel
    range [0, 1]). ``attack_batch``: images per posterior draw when estimating the gradient.
    ``table_epsilons``: the step sizes the detection tables show.
    """

    zoo: zoo.ZooSettings = field(default_factory=zoo.ZooSettings)
    attack_examples: int = 1000
    epsilons: tuple = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    attack_batch: int = 100
    table_epsilons: tuple = (0.05, 0.1, 0.3)

    @classmethod
    def quick(cls) -> Settings:
        """The zoo's quick models (784-64-10 on 1,000 images); 500 attacked test images."""
        return cls(zoo=zoo.ZooSettings.quick(), attack_examples=500)

    @classmethod
    def smoke(cls) -> Settings:
        """Tiny settings for tests: 784-16-10 on 200 images, 2 epochs, 64 attacked images (the
        zoo settings of ``calibration``'s and ``ood``'s smoke, so a suite trains each once)."""
        return cls(zoo=zoo.ZooSettings.smoke(),
                   attack_examples=64, epsilons=(0.0, 0.05, 0.2), attack_batch=32,
                   table_epsilons=(0.05, 0.2))


def _roc(inside: torch.Tensor, outside: torch.Tensor) -> float | None:
    """ROC-AUC (%) of telling ``outside`` scores from ``inside`` ones (None if one is empty)."""
    if len(inside) == 0 or len(outside) == 0:
        return None
    return 100 * metrics.ood_auc(inside, outside)["roc_auc"]


def attack_metrics(clean: torch.Tensor, attacked: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy, mean uncertainty and detection ROC-AUCs of one step size.

    Args:
        clean: (S, N, C) MC probabilities of the clean images.
        attacked: (S, N, C) of their attacked versions (the same weight draws).
        y: (N,) labels.

    Returns:
        ``accuracy`` (%); ``mean`` (per score, the mean over images of max-probability,
        entropy, mean std, BALD); ``adversarial_roc`` (per score, clean vs attacked, %);
        ``error_roc`` (per score, correct vs misclassified attacked images, %; None when
        every image is right or every one wrong); ``errors`` (count).
    """
    pred = attacked.mean(0).argmax(-1)
    wrong = pred != y
    out = {"accuracy": 100 * metrics.accuracy(attacked, y), "errors": int(wrong.sum()),
           "mean": {"max_prob": float(metrics.max_probability(attacked).mean()),
                    "entropy": float(metrics.predictive_entropy(attacked).mean()),
                    "mean_std": float(metrics.mean_std(attacked).mean()),
                    "bald": float(metrics.bald(attacked).mean())},
           "adversarial_roc": {}, "error_roc": {}}
    for score in SCORES:
        s_clean, s_adv = metrics.ood_scores(clean, attacked, score)
        out["adversarial_roc"][score] = _roc(s_clean, s_adv)
        out["error_roc"][score] = _roc(s_adv[~wrong], s_adv[wrong])
    return out


@experiment
def run(methods_to_run=None, *, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/adversarial", settings: Settings | None = None,
        progress: bool | None = None, data=None,
        checkpoints: str | Path | None = None,
        overrides: dict | None = None) -> ExperimentResult:
    """Attack every method's MNIST model with FGS at every step size; write metrics.json,
    adversarial.png and report.md.

    metrics.json has ``methods[name]`` with ``epsilons`` (per ε as a string: the output of
    :func:`attack_metrics` plus ``linf`` (the largest pixel change) and ``pixel_range``), the
    clean accuracy, sizes and times; ``tables`` and ``paper_claims``.

    Args:
        methods_to_run: method names (None: every registered method).
        quick, settings: :meth:`Settings.quick` or the given settings (default: full).
        device, seed, progress: as in :func:`zoo.train`; ``seed`` also seeds the attack draws.
        out: the output folder.
        data: a Dataset with train / val / test images in [0, 1] (default: MNIST).
        checkpoints: the trained-model folder (default :func:`zoo.default_checkpoints`, shared
            with the other tasks).
        overrides: ``{method: {option: value}}`` laid over the methods' recipes
            (``--option METHOD.KEY=VALUE``; :func:`zoo.with_options
            <hyperbayes.experiments.zoo.with_options>`), recorded under ``recipes``.
    """
    start = time.perf_counter()
    settings, names = zoo.task_settings(Settings, settings, quick, overrides, methods_to_run)
    epsilons = [float(e) for e in settings.epsilons]
    if not names or not epsilons or any(e < 0 for e in epsilons):
        raise ValueError(f"adversarial needs methods and step sizes ≥ 0, got {names}, "
                         f"{epsilons}")
    device = resolve_device(device)
    data = data if data is not None else datasets.load("mnist")
    num_classes = int(data.num_classes or int(data.train.y.max()) + 1)
    train, val, _ = zoo.mnist_splits(settings.zoo, data)
    n = min(settings.attack_examples, len(data.test))
    test = data.test.subset(slice(0, n))
    out = Path(out)
    checkpoint_dir = Path(checkpoints) if checkpoints is not None else zoo.default_checkpoints(out)
    results: dict = {}
    payload = header("adversarial", seed=seed, quick=quick, device=device, settings=settings,
                     seeds=[seed], recipes=recipes_used(names, "classification", overrides),
                     attack_examples=n, epsilons=epsilons, methods=results)
    for name in names:
        fitted = zoo.train(name, settings.zoo, train, val, device=device, seed=seed,
                           checkpoint_dir=checkpoint_dir, progress=progress,
                           num_classes=num_classes)
        t0 = time.perf_counter()
        set_seed(seed)
        x, y = test.x.to(fitted.device), test.y.to(fitted.device)
        grad = input_gradient(fitted.model, fitted.guide, x, y, batch_size=settings.attack_batch)
        attacked = [fgsm(x, grad, eps) for eps in epsilons]
        t1 = time.perf_counter()
        # one set of weight draws scores the clean images and every step size ε > 0 (ε = 0
        # gives the clean images back: their block is the clean one)
        moved = [images for eps, images in zip(epsilons, attacked, strict=True) if eps > 0]
        probs = zoo.sample_probs(fitted, torch.cat([x, *moved]), settings.zoo.test_samples)
        clean = probs[:, :n]
        per_eps, block_index = {}, 0
        for eps, images in zip(epsilons, attacked, strict=True):
            block_index += eps > 0
            block = probs[:, block_index * n:(block_index + 1) * n] if eps > 0 else clean
            per_eps[str(eps)] = {**attack_metrics(clean, block, test.y),
                                 "linf": float((images - x).abs().max()),
                                 "pixel_range": [float(images.min()), float(images.max())]}
        results[name] = {"clean_accuracy": 100 * metrics.accuracy(clean, test.y),
                         "epsilons": per_eps, "train_s": fitted.train_s,
                         "reused": fitted.reused, "steps": fitted.result.steps,
                         "attack_s": t1 - t0, "score_s": time.perf_counter() - t1,
                         "zero_gradient_share": float((grad == 0).flatten(1).all(1)
                                                      .float().mean())}
        del fitted, probs, grad, attacked
        payload["wall_time_s"] = time.perf_counter() - start
        write_metrics(out, payload)
    payload["paper_claims"], payload["tables"] = payload_tables(payload, settings)
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "adversarial.png"
    _figure(figure, results, names, epsilons)
    return finish("adversarial", out, start, payload=payload, figures=[figure],
                  report=lambda p: _report(p, settings, figure.name))


def payload_tables(payload: dict, settings: Settings | None = None) -> tuple[list, list]:
    """``(paper_claims, tables)`` from a metrics.json payload's ``methods`` records (its
    ``settings`` unless given): what :func:`run` writes, and what :func:`jobs.merge_task
    <hyperbayes.experiments.jobs.merge_task>` recomputes when per-method jobs merge, since
    the claims compare the methods with one another."""
    settings = settings or apply_settings(Settings, payload["settings"])
    results, epsilons = payload["methods"], [float(e) for e in payload["epsilons"]]
    claims = paper_claims(results, list(results), epsilons)
    return claims, _tables(results, list(results), epsilons, settings, claims,
                           payload["attack_examples"])


def _table_epsilons(settings: Settings, epsilons) -> list[float]:
    """The table step sizes that were run (all positive ones if none of them was)."""
    chosen = [float(e) for e in settings.table_epsilons if float(e) in epsilons]
    return chosen or [e for e in epsilons if e > 0] or epsilons


def _rise(row: dict, score: str, epsilons) -> tuple[float, float, float]:
    """(clean mean, peak mean over ε > 0, ε of the peak) of a score's mean over images."""
    clean = row["epsilons"][str(0.0)]["mean"][score]
    peak, at = max((row["epsilons"][str(e)]["mean"][score], e) for e in epsilons if e > 0)
    return clean, peak, at


def _rises(clean: float, peak: float) -> bool:
    """Whether a mean score "rises": the peak is ≥ :data:`RISE_FACTOR` × the clean value and
    at least :data:`MIN_RISE` above it (round-off-sized values do not count)."""
    return peak >= RISE_FACTOR * clean and peak - clean >= MIN_RISE


def paper_claims(results: dict, names, epsilons) -> list[dict]:
    """The paper's qualitative Fig. 5 findings checked on our numbers (only for the methods of
    :data:`PAPER_ROLES` that were run, and ε = 0 among the step sizes)."""
    rows = []
    positive = [e for e in epsilons if e > 0]
    if positive and all(results[n]["epsilons"][str(positive[-1])]["accuracy"]
                        < results[n]["clean_accuracy"] for n in names):
        holds = "yes"
    else:
        holds = "no"
    if positive:
        rows.append({"claim": "accuracy drops as ε grows (every method)", "ours": "; ".join(
            f"{n} {results[n]['clean_accuracy']:.1f} → "
            f"{results[n]['epsilons'][str(positive[-1])]['accuracy']:.1f}%" for n in names),
            "holds": holds})
    if 0.0 not in epsilons or not positive:
        return rows
    bhn, dropout = PAPER_ROLES["BHN"], PAPER_ROLES["MC dropout"]
    for score in ("bald", "mean_std"):
        label = SCORE_LABELS[score]
        if bhn in names:
            c, p, at = _rise(results[bhn], score, epsilons)
            rows.append({"claim": f"{label} rises with ε for BHNs ({bhn})",
                         "ours": f"{c:.3g} clean → peak {p:.3g} at ε = {at:g} (+{p - c:.3g})",
                         "holds": "yes" if _rises(c, p) else "no"})
        if bhn in names and dropout in names:
            cb, pb, _ = _rise(results[bhn], score, epsilons)
            c, p, at = _rise(results[dropout], score, epsilons)
            rows.append({"claim": f"... but not for dropout: {label} rises less for {dropout} "
                                  f"than for {bhn}",
                         "ours": f"{dropout} {c:.3g} → {p:.3g} at ε = {at:g} (+{p - c:.3g}); "
                                 f"{bhn} +{pb - cb:.3g}",
                         "holds": "yes" if p - c < pb - cb else "no"})
    if bhn in names and dropout in names:
        for key, what in (("adversarial_roc", "adversarial examples"), ("error_roc", "errors")):
            for score in ("bald", "mean_std"):
                mb = _mean([results[bhn]["epsilons"][str(e)][key][score] for e in positive])
                md = _mean([results[dropout]["epsilons"][str(e)][key][score] for e in positive])
                rows.append({"claim": f"BHNs detect {what} better than dropout "
                                      f"({SCORE_LABELS[score]}, mean ROC-AUC over ε > 0)",
                             "ours": f"{bhn} {mb:.1f}% vs {dropout} {md:.1f}%",
                             "holds": "yes" if mb > md else "no"})
    return rows


def _mean(values) -> float:
    """Mean of the finite values (NaN when there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _tables(results: dict, names, epsilons, settings: Settings, claims,
            n_images: int) -> list[dict]:
    """Accuracy vs ε; mean std and BALD vs ε; adversarial and error detection at the table
    step sizes; the paper's claims beside ours."""
    eps_cols = [f"ε={e:g}" for e in epsilons]
    clean_col = [] if 0.0 in epsilons else ["clean"]  # ε = 0 is the clean images
    tables = [table(
        "FGS attack: accuracy (%) vs step size ε", ["method", *clean_col, *eps_cols],
        [{"method": n, **{c: results[n]["clean_accuracy"] for c in clean_col},
          **{f"ε={e:g}": results[n]["epsilons"][str(e)]["accuracy"] for e in epsilons}}
         for n in names],
        f"Untargeted fast gradient sign on the first {n_images:,} test images, gradient from "
        f"one posterior draw; accuracy of the MC-averaged "
        f"prediction ({settings.zoo.test_samples} samples). The paper has no table for this "
        f"experiment (Fig. 5 only).", digits=1)]
    shown = _table_epsilons(settings, epsilons)
    steps = sorted({*([0.0] if 0.0 in epsilons else []), *shown})
    columns = [f"{SCORE_LABELS[s]} ε={e:g}" for s in ("mean_std", "bald") for e in steps]
    tables.append(table(
        "Mean epistemic uncertainty vs ε (mean std of the class probabilities; BALD in nats)",
        ["method", *columns],
        [{"method": n, **{f"{SCORE_LABELS[s]} ε={e:g}": results[n]["epsilons"][str(e)]["mean"][s]
                          for s in ("mean_std", "bald") for e in steps}} for n in names],
        "Mean over the attacked images (every ε in metrics.json and adversarial.png). The paper "
        "(Fig. 5, top row): BALD and mean std rise strongly with ε for BHNs but not for "
        "dropout.", digits=3))
    for key, title, note in (
            ("adversarial_roc", "Adversarial-input detection ROC-AUC (%)",
             "Clean test images against their attacked versions, ranked by each uncertainty "
             "score (50 = chance; max-prob ranks by 1 − max p̄)."),
            ("error_roc", "Error detection ROC-AUC (%) on attacked images",
             "Misclassified against correctly classified attacked images, ranked by each "
             "score; – where every image is right or every one wrong.")):
        rows = [{"method": n, "ε": f"{e:g}",
                 **{SCORE_LABELS[s]: results[n]["epsilons"][str(e)][key][s] for s in SCORES}}
                for e in shown for n in names]
        tables.append(table(f"{title} at ε ∈ {{{', '.join(f'{e:g}' for e in shown)}}}",
                            ["method", "ε", *(SCORE_LABELS[s] for s in SCORES)], rows,
                            note + " The paper has no table (Fig. 5, second and third rows).",
                            digits=1))
    if claims:
        tables.append(table(
            "The paper's Fig. 5 findings beside ours", ["claim", "ours", "holds"], claims,
            f"Krueger et al. (2017), §4.5: accuracy falls with ε; BALD and mean std rise "
            f"strongly for BHNs but not for dropout; IAF-BHNs detect adversarial examples and "
            f"errors better than RealNVP-BHNs and dropout (ours is RealNVP). 'Rises' means the "
            f"peak over ε > 0 is ≥ {RISE_FACTOR:g}× the clean value and ≥ {MIN_RISE:g} above "
            f"it; 'rises less' compares the increases (peak − clean)."))
    return tables


def _figure(path: Path, results: dict, names, epsilons) -> None:
    """BHN Fig. 5's layout: top row accuracy and the mean scores vs ε, second row
    adversarial-detection ROC-AUC vs ε per score, third row error-detection ROC-AUC."""
    plt, sns = plotting()
    colors = dict(zip(names, sns.color_palette("tab10", len(names)), strict=True))
    fig, axes = plt.subplots(3, 5, figsize=(17, 10), squeeze=False)

    def curve(ax, values, name):
        ax.plot(epsilons, values, marker="o", markersize=3, color=colors[name], label=name)

    for name in names:
        rows = [results[name]["epsilons"][str(e)] for e in epsilons]
        curve(axes[0, 0], [r["accuracy"] for r in rows], name)
        for j, score in enumerate(SCORES):
            curve(axes[0, j + 1], [r["mean"][score] for r in rows], name)
            for i, key in ((1, "adversarial_roc"), (2, "error_roc")):
                values = [r[key][score] for r in rows]
                curve(axes[i, j], [float("nan") if v is None else v for v in values], name)
    axes[0, 0].set(ylabel="accuracy (%)", title="accuracy")
    for j, score in enumerate(SCORES):
        axes[0, j + 1].set(title=f"mean {SCORE_LABELS[score]}")
        axes[1, j].set(title=f"adversary detection: {SCORE_LABELS[score]}")
        axes[2, j].set(title=f"error detection: {SCORE_LABELS[score]}")
    axes[1, 0].set_ylabel("ROC-AUC (%)")
    axes[2, 0].set_ylabel("ROC-AUC (%)")
    for ax in axes.flat:
        ax.set_xlabel("FGS step size ε")
    for i in (1, 2):
        for j in range(len(SCORES)):
            axes[i, j].axhline(50, color="grey", lw=0.8, ls=":")
        axes[i, 4].axis("off")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    axes[1, 4].legend(handles, labels, loc="center", title="method", frameon=False)
    fig.suptitle("FGS attacks on MNIST (gradient from one posterior draw)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _report(payload: dict, settings: Settings, figure: str) -> str:
    """report.md: what was run, the tables, the paper's qualitative finding beside ours."""
    z = settings.zoo
    names = list(payload["methods"])
    failed = [c for c in payload.get("paper_claims", []) if c["holds"] == "no"]
    lines = [
        "# adversarial: fast-gradient-sign attacks (Krueger et al. 2017, §4.5, Fig. 5)",
        "",
        f"Models: the suite's MNIST models ({', '.join(names)}), each by its classification "
        f"recipe, MLP 784-{'-'.join(map(str, z.hidden))}-10 trained {z.epochs} epochs on "
        f"{'the first ' + format(z.train_limit, ',') if z.train_limit else 'all'} training "
        f"images. The first {payload['attack_examples']:,} test images are attacked with "
        f"untargeted FGS, x' = clip(x + ε·sign(∇ₓ(−log p(y|x, w))), 0, 1), w one posterior "
        f"draw per {settings.attack_batch} images (as in the paper: one sample of the weights "
        f"or dropout mask), at ε ∈ {{{', '.join(f'{e:g}' for e in payload['epsilons'])}}}. "
        f"Clean and attacked images are scored with one set of {z.test_samples} MC samples.",
        "",
        "**The paper has no table for this experiment (Fig. 5 only).** Its qualitative "
        "finding: accuracy falls as ε grows while the uncertainty scores rise; BALD and mean "
        "std, which measure epistemic uncertainty, rise strongly for Bayesian hypernetworks "
        "but not for dropout, and BHNs (IAF ones most) detect adversarial examples and errors "
        "better than dropout. Ours: see the last table (our `flow` is the paper's RealNVP BHN "
        "with 8 couplings over the weight-norm scales; there is no IAF BHN among the suite's "
        "methods).",
        "",
        render_tables(payload["tables"]),
    ]
    flat = {n: r["zero_gradient_share"] for n, r in payload["methods"].items()
            if r["zero_gradient_share"] > 0}
    if flat:
        lines += ["Images whose one-sample gradient was exactly 0 (saturated softmax or dead "
                  "units: FGS leaves them unchanged): " + ", ".join(
                      f"{n} {100 * v:.1f}%" for n, v in flat.items()) + ".", ""]
    if failed:
        lines += ["**Where ours differs from the paper's finding:** " + "; ".join(
            f"{c['claim']} ({c['ours']})" for c in failed) + ".", ""]
    if payload["quick"] or z.train_limit:
        lines += ["These are the quick models (small nets, 1,000 training images): their "
                  "uncertainty is not the paper's, so the comparison is indicative only.", ""]
    lines += [f"![{figure}]({figure})", ""]
    return "\n".join(lines)
