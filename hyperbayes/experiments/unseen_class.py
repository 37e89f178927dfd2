"""unseen-class: leave one MNIST digit out of training and detect it at test (BHN paper, Table 3).

Krueger et al. (2017), *Bayesian Hypernetworks*, §4.4 and Appendix A.2: for each held-out digit
d, every method is trained on the MNIST training images without d
(:func:`hyperbayes.datasets.transforms.hold_out_classes`; the output layer keeps all 10 classes,
and the parameters of the best validation accuracy on the validation images without d are
kept), then the test images of the other digits (in-distribution) are scored against the test
images of d (anomalies). One set of ``settings.zoo.test_samples`` Monte Carlo samples per
(method, digit) gives four uncertainty scores (:data:`SCORES`): 1 − max-probability (the
paper's "variation ratio"), predictive entropy, mean std and BALD; each is turned into ROC-AUC,
PR-AUC(+) (in-distribution images positive) and PR-AUC(−) (anomalies positive), in %
(:func:`hyperbayes.inference.metrics.ood_auc`). The test images keep their natural mix (about
one anomaly in ten), which PR-AUC depends on.

Models come from :mod:`~hyperbayes.experiments.zoo` by each method's ``"classification"``
recipe, checkpointed under the tag ``without-<d>`` so they never mix with the full-data models
of ``calibration`` / ``ood`` / ``adversarial``; nothing here names a method except
:data:`PAPER_ROLES`, which says which of ours the paper's columns are.

The full run trains 10 digits × every method on ~45,000 images (784-400-400-10, 10 epochs); on
2 CPU cores that is hours (the note *experiment-costs*). Make it cheaper through
``settings.zoo``, fewer ``digits``, ``--methods`` without ``diversity``, or a GPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import datasets
from ..datasets import Split, transforms
from ..inference import metrics, resolve_device
from . import papers, zoo
from .common import (
    ExperimentResult,
    experiment,
    finish,
    header,
    plotting,
    recipes_used,
    write_metrics,
)
from .suite import render_tables, table

__all__ = ["run", "Settings", "SCORES", "SCORE_LABELS", "BLOCKS", "PAPER_ROLES", "PAPER_TABLE3",
           "split_by_digit", "detect"]

#: uncertainty scores (keys of :func:`hyperbayes.inference.metrics.ood_scores`), paper's first
SCORES = ("max_prob", "mean_std", "bald", "entropy")
SCORE_LABELS = {"max_prob": "max-prob", "entropy": "entropy", "mean_std": "mean std",
                "bald": "BALD"}
#: the paper's three blocks: key of :func:`~hyperbayes.inference.metrics.ood_auc` → label
BLOCKS = {"roc_auc": "ROC", "pr_auc_in": "PR(+)", "pr_auc_out": "PR(−)"}
#: which of our methods the paper's columns are (in :mod:`hyperbayes.experiments.papers`)
PAPER_ROLES = papers.BHN_TABLE3_ROLES

_PAPER_KEYS = {"ROC": "roc_auc", "PR(+)": "pr_auc_in", "PR(−)": "pr_auc_out"}

#: Table 3 of the paper (%), in :mod:`hyperbayes.experiments.papers`
PAPER_TABLE3 = papers.BHN_TABLE3


@dataclass(frozen=True)
class Settings:
    """Sizes of one run.

    ``zoo`` is how every model is trained (the suite's shared schedule; make the full run cheaper
    here). ``digits``: the held-out digits, one trained model per method and digit.
    ``test_examples``: how many of the first test images (all digits, natural mix) are scored
    (None: the whole test split); scoring is cheap, so the quick run scores more test images than
    ``zoo.eval_limit`` to have ~200 anomalies per digit.
    """

    zoo: zoo.ZooSettings = field(default_factory=zoo.ZooSettings)
    digits: tuple = tuple(range(10))
    test_examples: int | None = None

    @classmethod
    def quick(cls) -> Settings:
        """The zoo's quick models (784-64-10, 1,000 images, 10 epochs); digits 0 (easy in the
        paper) and 4 (the hardest); 2,000 test images."""
        return cls(zoo=zoo.ZooSettings.quick(), digits=(0, 4), test_examples=2000)

    @classmethod
    def smoke(cls) -> Settings:
        """Tiny settings for tests: one digit, 784-16-10 on 200 images, 2 epochs."""
        return cls(zoo=zoo.ZooSettings.smoke(),
                   digits=(3,), test_examples=300)


def split_by_digit(split: Split, digit: int, *, require: bool = True) -> tuple[Split, Split]:
    """``(without digit, only digit)`` of a split (:func:`transforms.hold_out_classes`).

    With ``require=False`` a split without the digit comes back whole (and an empty second part).
    """
    if not require and not bool((split.y == digit).any()):
        return split, split.subset(split.y == digit)
    try:
        return transforms.hold_out_classes(split, digit)
    except datasets.DatasetError as err:
        raise ValueError(f"cannot hold out digit {digit}: {err}") from err


def detect(probs: torch.Tensor, is_anomaly: torch.Tensor) -> dict:
    """Detection metrics (%) of every score from one set of MC probabilities.

    Args:
        probs: (S, N, C) class probabilities of the N test images.
        is_anomaly: (N,) boolean, True for the held-out digit's images.

    Returns:
        ``{score: {"roc_auc", "pr_auc_in", "pr_auc_out"}}`` in %, for every score of
        :data:`SCORES`.
    """
    inside, outside = probs[:, ~is_anomaly], probs[:, is_anomaly]
    out = {}
    for score in SCORES:
        aucs = metrics.ood_auc(*metrics.ood_scores(inside, outside, score))
        out[score] = {k: 100 * v for k, v in aucs.items()}
    return out


@experiment
def run(methods_to_run=None, *, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/unseen-class", settings: Settings | None = None,
        progress: bool | None = None, data=None,
        checkpoints: str | Path | None = None,
        overrides: dict | None = None) -> ExperimentResult:
    """Train every method without each held-out digit and detect that digit at test.

    Writes metrics.json (``digits[d][method]`` with ``detection[score][metric]`` in %, the
    in-distribution test accuracy, the digits seen in training, sizes and times; ``mean_roc``
    per method and score; ``tables``), unseen_class_heatmap.png, unseen_class_scores.png and
    report.md.

    Args:
        methods_to_run: method names (None: every registered method).
        quick, settings: :meth:`Settings.quick` or the given settings (default: full).
        device, seed, progress: as in :func:`zoo.train`.
        out: the output folder.
        data: a Dataset with train / val / test images (default: MNIST).
        checkpoints: the trained-model folder (default :func:`zoo.default_checkpoints`);
            models are saved under the tag ``without-<d>``.
        overrides: ``{method: {option: value}}`` laid over the methods' recipes
            (``--option METHOD.KEY=VALUE``; :func:`zoo.with_options
            <hyperbayes.experiments.zoo.with_options>`), recorded under ``recipes``.
    """
    start = time.perf_counter()
    settings, names = zoo.task_settings(Settings, settings, quick, overrides, methods_to_run)
    if not names or not settings.digits:
        raise ValueError("unseen-class needs at least one method and one held-out digit")
    device = resolve_device(device)
    data = data if data is not None else datasets.load("mnist")
    num_classes = int(data.num_classes or int(data.train.y.max()) + 1)
    bad = [d for d in settings.digits if not 0 <= int(d) < num_classes]
    if bad:
        raise ValueError(f"held-out digit(s) {bad} outside the {num_classes} classes")
    train_all, val_all, _ = zoo.mnist_splits(settings.zoo, data)
    n_test = len(data.test) if settings.test_examples is None else min(settings.test_examples,
                                                                      len(data.test))
    test = data.test.subset(slice(0, n_test))
    out = Path(out)
    checkpoint_dir = Path(checkpoints) if checkpoints is not None else zoo.default_checkpoints(out)
    results: dict = {}
    payload = header("unseen-class", seed=seed, quick=quick, device=device, settings=settings,
                     seeds=[seed], recipes=recipes_used(names, "classification", overrides),
                     methods=names, digits=results, test_examples=n_test,
                     inputs=math.prod(data.train.x.shape[1:]), num_classes=num_classes)
    for digit in settings.digits:
        digit = int(digit)
        train_d, _ = split_by_digit(train_all, digit)
        val_d = split_by_digit(val_all, digit, require=False)[0] if val_all is not None else None
        is_anomaly = test.y == digit
        if not bool(is_anomaly.any()) or bool(is_anomaly.all()):
            raise ValueError(f"the {n_test} test images need both digit {digit} and others")
        results[str(digit)] = {}
        for name in names:
            fitted = zoo.train(name, settings.zoo, train_d, val_d, device=device, seed=seed,
                               checkpoint_dir=checkpoint_dir, progress=progress,
                               tag=f"without-{digit}", num_classes=num_classes)
            t0 = time.perf_counter()
            probs = zoo.sample_probs(fitted, test.x, settings.zoo.test_samples)
            inside = ~is_anomaly
            results[str(digit)][name] = {
                "detection": detect(probs, is_anomaly),
                "in_distribution_accuracy": metrics.accuracy(probs[:, inside], test.y[inside]),
                "train_digits": sorted(int(c) for c in torch.unique(train_d.y)),
                "train_examples": len(train_d), "in_examples": int(inside.sum()),
                "anomaly_examples": int(is_anomaly.sum()), "steps": fitted.result.steps,
                "reused": fitted.reused, "train_s": fitted.train_s,
                "score_s": time.perf_counter() - t0,
            }
            del fitted, probs
            payload["wall_time_s"] = time.perf_counter() - start
            write_metrics(out, payload)
    payload["mean_roc"] = {name: {score: _mean([results[str(d)][name]["detection"][score]
                                                 ["roc_auc"] for d in settings.digits])
                                  for score in SCORES} for name in names}
    payload["paper_comparison"] = paper_comparison(results, names, settings.digits)
    payload["tables"] = _tables(results, names, settings.digits, payload["mean_roc"],
                                payload["paper_comparison"])
    out.mkdir(parents=True, exist_ok=True)
    best = max(SCORES, key=lambda s: _mean([payload["mean_roc"][n][s] for n in names]))
    payload["best_score"] = best
    figures = [out / "unseen_class_heatmap.png", out / "unseen_class_scores.png"]
    _heatmap(figures[0], results, names, settings.digits, best)
    _bars(figures[1], payload["mean_roc"], names, settings.digits)
    return finish("unseen-class", out, start, payload=payload, figures=figures,
                  report=lambda p: _report(p, settings, [f.name for f in figures]))


def _mean(values) -> float:
    """Mean of finite values (NaN when there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def paper_comparison(results: dict, names, digits) -> list[dict]:
    """Ours beside the paper's Table 3 where a paper column maps onto one of our methods
    (:data:`PAPER_ROLES`): per paper model and score, the mean ROC-AUC over the held-out digits
    run of ours and of the paper's, and the difference (points). ROC-AUC only: it does not
    depend on the mix of in-distribution and held-out images, which the paper does not give
    (the PR-AUCs do)."""
    rows = []
    for paper_name, ours in PAPER_ROLES.items():
        if ours not in names:
            continue
        for score in SCORES:
            paper = PAPER_TABLE3["roc_auc"].get(score, {}).get(paper_name)
            if paper is None:
                continue
            mine = _mean([results[str(d)][ours]["detection"][score]["roc_auc"] for d in digits])
            theirs = _mean([paper[int(d)] for d in digits])
            rows.append({"paper model": paper_name, "method": ours,
                         "score": SCORE_LABELS[score], "ours %": mine, "paper %": theirs,
                         "difference (points)": mine - theirs,
                         "verdict": "worse than the paper" if mine < theirs - 1.0 else
                         "better than the paper" if mine > theirs + 1.0 else
                         "as the paper (±1 point)"})
    return rows


def _paper_columns(score: str) -> list[str]:
    """The paper's Table 3 columns for ``score`` (empty for entropy)."""
    return [f"paper: {m}" for m in PAPER_TABLE3["roc_auc"].get(score, {})]


def _tables(results: dict, names, digits, mean_roc: dict, comparison: list[dict]) -> list[dict]:
    """The summary (mean ROC-AUC per method and score), then Table 3's layout per score: rows
    are (metric, held-out digit) in the paper's three blocks, columns our methods then the
    paper's models for that score; then ours beside the paper."""
    digits = [int(d) for d in digits]
    summary_rows = [{"method": n, **{SCORE_LABELS[s]: mean_roc[n][s] for s in SCORES},
                     "in-dist. accuracy %": 100 * _mean(
                         [results[str(d)][n]["in_distribution_accuracy"] for d in digits])}
                    for n in names]
    for paper_name in ("MLP", "MC dropout", "BHN 4", "BHN 8"):
        row = {"method": f"paper: {paper_name}"}
        for s in SCORES:
            values = PAPER_TABLE3["roc_auc"].get(s, {}).get(paper_name)
            if values is not None:
                row[SCORE_LABELS[s]] = _mean([values[d] for d in digits])
        summary_rows.append(row)
    tables = [table(
        f"Unseen-class detection: mean ROC-AUC (%) over held-out digits {digits}",
        ["method", *(SCORE_LABELS[s] for s in SCORES), "in-dist. accuracy %"], summary_rows,
        "Each held-out digit's test images against the other digits' test images; the score "
        "ranks images by uncertainty (max-prob: 1 − max p̄, the paper's variation ratio). "
        "Paper rows: the mean of Table 3 of Krueger et al. (2017) over the same digits (the "
        "paper reports no entropy, and no mean std / BALD for its MLP; MLP ≈ our map, MC "
        "dropout ≈ mcdropout, BHN 8 ≈ flow; BHN 4 has no counterpart). A point estimate's "
        "mean std and BALD are 0, hence 50.", digits=2)]
    for score in SCORES:
        paper_cols = _paper_columns(score)
        rows = []
        for key, block in BLOCKS.items():
            for d in digits:
                row = {"metric": block, "held-out digit": str(d)}
                for n in names:
                    row[n] = results[str(d)][n]["detection"][score][key]
                for col in paper_cols:
                    row[col] = PAPER_TABLE3[key][score][col.removeprefix("paper: ")][d]
                rows.append(row)
            mean = {"metric": block, "held-out digit": "mean"}
            for col in [*names, *paper_cols]:
                mean[col] = _mean([r[col] for r in rows if r["metric"] == block
                                   and r["held-out digit"] != "mean"])
            if len(digits) > 1:
                rows.append(mean)
        note = ("Table 3's layout: blocks ROC-AUC, PR-AUC(+) (in-distribution images positive) "
                "and PR-AUC(−) (held-out digit positive), in %; one row per held-out digit.")
        if paper_cols:
            note += " Paper columns: Krueger et al. (2017), Table 3."
        else:
            note += " The paper reports no entropy score."
        tables.append(table(f"Unseen-class detection by {SCORE_LABELS[score]} (Table 3 layout)",
                            ["metric", "held-out digit", *names, *paper_cols], rows, note,
                            digits=2))
    if comparison:
        tables.append(table(
            "Ours beside the paper: mean ROC-AUC over the held-out digits run",
            ["paper model", "method", "score", "ours %", "paper %",
             "difference (points)", "verdict"], comparison,
            "Only where a paper column maps onto one of our methods (MLP → map, MC dropout → "
            "mcdropout, BHN 8 → flow). 'worse' means more than 1 point below the paper. ROC-AUC "
            "only: the PR-AUCs depend on the mix of test images, which the paper does not give.",
            digits=2))
    return tables


def _heatmap(path: Path, results: dict, names, digits, score: str) -> None:
    """ROC-AUC (%) of ``score`` per held-out digit (rows) and method (columns)."""
    import numpy as np

    plt, sns = plotting()
    grid = np.array([[results[str(d)][n]["detection"][score]["roc_auc"] for n in names]
                     for d in digits])
    fig, ax = plt.subplots(figsize=(1.0 * len(names) + 2.5, 0.45 * len(digits) + 1.8))
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", vmin=50, vmax=100, ax=ax,
                xticklabels=list(names), yticklabels=[str(d) for d in digits],
                cbar_kws={"label": "ROC-AUC (%)"})
    ax.set(xlabel="method", ylabel="held-out digit",
           title=f"unseen-class detection by {SCORE_LABELS[score]} (best mean score)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bars(path: Path, mean_roc: dict, names, digits) -> None:
    """Mean ROC-AUC over held-out digits per method and score; the paper's means as black
    markers on the bars of the methods they map onto."""
    import pandas as pd

    plt, sns = plotting()
    frame = pd.DataFrame([{"method": n, "score": SCORE_LABELS[s], "ROC-AUC (%)": mean_roc[n][s]}
                          for n in names for s in SCORES])
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 4.5, 4.0))
    sns.barplot(frame, x="method", y="ROC-AUC (%)", hue="score", ax=ax)
    width = 0.8 / len(SCORES)
    labelled = False
    for paper_name, ours in PAPER_ROLES.items():
        if ours not in names:
            continue
        i = list(names).index(ours)
        for j, score in enumerate(SCORES):
            values = PAPER_TABLE3["roc_auc"].get(score, {}).get(paper_name)
            if values is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            ax.plot(x, _mean([values[int(d)] for d in digits]), "k_", markersize=14,
                    markeredgewidth=2.5, label=None if labelled else "paper (Table 3)")
            labelled = True
    low = frame["ROC-AUC (%)"].min()
    ax.set(ylim=(max(0.0, min(45.0, low - 5)), 100), xlabel="",
           title=f"mean over held-out digits {[int(d) for d in digits]}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _report(payload: dict, settings: Settings, figures: list[str]) -> str:
    """report.md: what was run, the tables with the paper's beside ours, what is worse."""
    z = settings.zoo
    digits = [int(d) for d in settings.digits]
    names = payload["methods"]
    worse = [r for r in payload["paper_comparison"] if r["verdict"] == "worse than the paper"]
    first = payload["digits"][str(digits[0])]
    subset = f"first {z.train_limit:,} " if z.train_limit else ""
    best = SCORE_LABELS[payload["best_score"]]
    lines = [
        "# unseen-class: detecting a digit left out of training (Krueger et al. 2017, Table 3)",
        "",
        f"For each held-out digit in {digits}, every method ({', '.join(names)}) is trained by "
        f"its classification recipe on the {subset}"
        f"MNIST training images without that digit (e.g. {first[names[0]]['train_examples']:,} "
        f"images for digit {digits[0]}), MLP 784-{'-'.join(map(str, z.hidden))}-10 (the output "
        f"layer keeps 10 classes), {z.epochs} epochs, batch {z.batch_size}, the parameters of "
        f"the best validation accuracy (validation images without the digit). The first "
        f"{payload['test_examples']:,} test images are scored with one set of {z.test_samples} "
        f"MC samples per model: the held-out digit's images are the anomalies "
        f"({first[names[0]]['anomaly_examples']} for digit {digits[0]}), the others "
        f"in-distribution. Scores: 1 − max-probability (the paper's variation ratio), "
        f"predictive entropy, mean std and BALD; ROC-AUC, PR-AUC(+) (in-distribution positive) "
        f"and PR-AUC(−) (anomalies positive) in %.",
        "",
        render_tables(payload["tables"]),
        f"Best score on average over methods and digits: **{best}**.",
        "",
    ]
    if worse:
        listed = "; ".join(f"{r['method']} by {r['score']} {r['ours %']:.1f} vs "
                           f"{r['paper model']} {r['paper %']:.1f}" for r in worse)
        lines += ["**Worse than the paper (ROC-AUC, more than 1 point below Table 3):** "
                  f"{listed}.", ""]
    elif payload["paper_comparison"]:
        lines += ["No ROC-AUC of ours is more than 1 point below the paper's for the methods "
                  "that map onto its columns.", ""]
    points = [n for n in names if payload["mean_roc"][n]["mean_std"] == 50.0
              and payload["mean_roc"][n]["bald"] != 50.0]
    if points:
        lines += [f"{', '.join(points)}: no spread over samples (mean std ROC exactly 50), so "
                  f"BALD is round-off only (the mean of S equal probability vectors differs from "
                  f"each in the last bits) and its BALD ROC-AUC ranks noise.", ""]
    if payload["quick"] or z.train_limit or tuple(z.hidden) != (400, 400):
        lines += ["These models are smaller and trained on fewer images than the paper's "
                  "(quick settings), so the comparison with Table 3 is indicative only.", ""]
    lines += ["PR-AUC depends on the mix of the test set: ours is the natural MNIST mix, about "
              "one held-out image in ten, so a chance-level score gets PR(+) ≈ 90 and PR(−) ≈ "
              "10. The paper does not say which mix it scored; its PR(−) of 80–95 beside ROC "
              "of 90–97 suggests more held-out images per in-distribution image than ours, so "
              "its PR columns are comparable with ours only loosely and the comparison above "
              "uses ROC-AUC only.", "",
              *[f"![{f}]({f})" for f in figures], ""]
    return "\n".join(lines)
