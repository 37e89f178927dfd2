"""ood: out-of-distribution detection by models trained on MNIST (Bayesian hypernetworks, Table 2).

Krueger et al. (2017), *Bayesian Hypernetworks*, §4.4 and Table 2, after Hendrycks & Gimpel
(2017): every method is trained on MNIST by :func:`zoo.train
<hyperbayes.experiments.zoo.train>` (the same checkpoints as ``calibration``: run one after the
other with the same ``checkpoints`` folder, the second reuses the first's models) and scores the
MNIST test images (in-distribution) against out-of-distribution sets, as many images each:

- ``fashion_mnist``: the Fashion-MNIST test images (not in the paper's table);
- ``uniform``: pixels ~ U[0, 1); ``gaussian``: pixels ~ N(0.5, 0.25²) clipped to [0, 1]
  (:func:`hyperbayes.datasets.transforms.noise_images`, seeded by the run's seed).

Scores (:data:`hyperbayes.inference.metrics.OOD_SCORES`, all oriented "higher = more
anomalous" by :func:`~hyperbayes.inference.metrics.ood_scores`): ``max_prob`` (1 − the
predictive mean's maximum probability: low confidence flags an anomaly, as in Hendrycks &
Gimpel and the paper's Table 2), ``entropy`` (predictive entropy), ``mean_std`` (the mean over
classes of the std over samples) and ``bald`` (mutual information). For each method, OOD set
and score: ROC-AUC, PR-AUC(+) (in-distribution positive) and PR-AUC(−) (anomalies positive) as
percentages (:func:`~hyperbayes.inference.metrics.ood_auc`). Per method one set of
``settings.zoo.test_samples`` weight draws predicts every data set at once (one batched pass),
and every score is computed from those same draws.

Nothing here names a method except :data:`BASELINES` (the methods that are not hypernetworks,
for the claim "a hypernetwork beats the MAP MLP against Fashion-MNIST") and
:data:`PAPER_TABLE2`, which says which of ours each paper row is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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
    plotting,
    recipes_used,
)
from .suite import render_tables, table

__all__ = ["run", "Settings", "SCORES", "MAIN_SCORE", "BASELINES", "SET_LABELS",
           "PAPER_TABLE2", "ood_sets", "detection", "hypernets_against_map"]

#: every score, "higher = more anomalous" (``max_prob`` is 1 − max probability)
SCORES = metrics.OOD_SCORES
#: the score of the paper's Table 2 (Hendrycks & Gimpel's baseline)
MAIN_SCORE = "max_prob"
#: methods that are not hypernetworks; every other method counts as one in the comparison
#: with ``map``
BASELINES = ("map", "meanfield", "mcdropout")
#: printed names of the built-in OOD sets (others print by their key)
SET_LABELS = {"fashion_mnist": "Fashion-MNIST", "uniform": "uniform noise",
              "gaussian": "Gaussian noise"}
SCORE_LABELS = {"max_prob": "max-probability", "entropy": "entropy", "mean_std": "mean std",
                "bald": "BALD"}
#: BHN Table 2 (max-probability score), in :mod:`hyperbayes.experiments.papers`
PAPER_TABLE2 = papers.BHN_TABLE2
_METRICS = ("roc", "pr_plus", "pr_minus")  # ood_auc's roc_auc, pr_auc_in, pr_auc_out (in %)
_COLUMNS = {"roc": "ROC %", "pr_plus": "PR(+) %", "pr_minus": "PR(−) %"}


@dataclass(frozen=True)
class Settings(zoo.TaskSettings):
    """Sizes of one run: how every method is trained (``zoo``, as ``calibration``'s, so both
    tasks share the models) and which built-in OOD sets to score."""

    ood_sets: tuple = ("fashion_mnist", "uniform", "gaussian")


def ood_sets(names, test: Split, seed: int = 0) -> dict[str, Split]:
    """The built-in OOD sets ``names`` with as many images as ``test``, shaped like its images.

    ``fashion_mnist`` is the first ``len(test)`` Fashion-MNIST test images (their shape must
    match); ``uniform`` and ``gaussian`` are :func:`~hyperbayes.datasets.transforms.noise_images`
    seeded by ``seed``.
    """
    shape = tuple(test.x.shape[1:])
    sets = {}
    for name in names:
        if name == "fashion_mnist":
            images = datasets.load("fashion_mnist").test
            if tuple(images.x.shape[1:]) != shape:
                raise ValueError(f"Fashion-MNIST images are {tuple(images.x.shape[1:])}, the "
                                 f"in-distribution images {shape}: drop 'fashion_mnist' from "
                                 "Settings.ood_sets and pass your own set as ood_data")
            sets[name] = images.subset(slice(0, min(len(test), len(images))))
        elif name in ("uniform", "gaussian"):
            sets[name] = transforms.noise_images(len(test), shape, kind=name, seed=seed)
        else:
            raise ValueError(f"unknown OOD set {name!r}; built in: {list(SET_LABELS)} (pass "
                             "others as ood_data)")
    return sets


def detection(in_probs: torch.Tensor, out_probs: torch.Tensor,
              scores=SCORES) -> dict[str, dict[str, float]]:
    """ROC-AUC, PR-AUC(+) and PR-AUC(−) in % for each score, from one set of MC probabilities.

    Args:
        in_probs: (S, N_in, C) on in-distribution inputs.
        out_probs: (S, N_out, C) on OOD inputs, from the same S weight draws.
        scores: names from :data:`SCORES`.

    Returns:
        ``{score: {"roc", "pr_plus" (in-distribution positive), "pr_minus" (anomalies
        positive)}}``.
    """
    result = {}
    for score in scores:
        auc = metrics.ood_auc(*metrics.ood_scores(in_probs, out_probs, score))
        result[score] = {"roc": 100 * auc["roc_auc"], "pr_plus": 100 * auc["pr_auc_in"],
                         "pr_minus": 100 * auc["pr_auc_out"]}
    return result


def hypernets_against_map(results: dict, ood_set: str = "fashion_mnist",
                          score: str = MAIN_SCORE) -> dict | None:
    """How each hypernetwork (every method not in :data:`BASELINES`) does against ``map`` on
    ROC-AUC for ``ood_set`` with ``score``; None when ``map`` or the set was not run."""
    if "map" not in results or ood_set not in results["map"]["detection"]:
        return None
    base = results["map"]["detection"][ood_set][score]["roc"]
    diffs = {name: r["detection"][ood_set][score]["roc"] - base
             for name, r in results.items() if name not in BASELINES}
    return {"set": ood_set, "score": score, "map_roc": base, "difference_points": diffs,
            "beats": {name: d for name, d in diffs.items() if d > 0},
            "any": any(d > 0 for d in diffs.values())}


@experiment
def run(methods_to_run=None, *, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/ood", settings: Settings | None = None,
        progress: bool | None = None, data=None, checkpoints: str | Path | None = None,
        ood_data: dict | None = None,
        overrides: dict | None = None) -> ExperimentResult:
    """Score the in-distribution test images against every OOD set; write metrics.json
    (``methods[name]["detection"][set][score]``, ``hypernet_beats_map_fashion_roc``, tables),
    ood_roc.png, ood_scores.png and report.md.

    Args:
        methods_to_run: method names (default: every registered method).
        quick: :meth:`Settings.quick` unless ``settings`` is given.
        device, seed, progress: as in :func:`zoo.train <hyperbayes.experiments.zoo.train>`;
            ``seed`` also draws the noise images.
        out: the output folder.
        settings: overrides the sizes.
        data: a Dataset of images used instead of MNIST (tests).
        checkpoints: the trained models' folder (default :func:`zoo.default_checkpoints`,
            shared with ``calibration``).
        ood_data: more OOD sets, ``{name: Split}``, scored after the built-in ones.
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
    sets = ood_sets(settings.ood_sets, test, seed)
    for name, split in (ood_data or {}).items():
        if name in sets:
            raise ValueError(f"OOD set {name!r} given twice")
        if tuple(split.x.shape[1:]) != tuple(test.x.shape[1:]):
            raise ValueError(f"OOD set {name!r} has inputs of shape {tuple(split.x.shape[1:])}, "
                             f"the in-distribution test set {tuple(test.x.shape[1:])}")
        sets[name] = split
    if not sets:
        raise ValueError("no OOD set: Settings.ood_sets and ood_data are both empty")
    trained = zoo.train_all(names, settings.zoo, train, val, device=device, seed=seed,
                        checkpoints=checkpoints, progress=progress)
    sizes = [len(test), *(len(s) for s in sets.values())]
    x = torch.cat([test.x, *(s.x for s in sets.values())])
    results, scores = {}, {}
    for name, fitted in trained.items():
        t0 = time.perf_counter()
        # one set of weight draws for every data set and every score
        probs = zoo.sample_probs(fitted, x, settings.zoo.test_samples).split(sizes, dim=1)
        p_in, p_out = probs[0], dict(zip(sets, probs[1:], strict=True))
        results[name] = {
            "in_accuracy": metrics.accuracy(p_in, test.y),
            "detection": {s: detection(p_in, p) for s, p in p_out.items()},
            "train_s": fitted.train_s, "test_s": time.perf_counter() - t0,
            "reused": fitted.reused, "steps": fitted.result.steps,
            "best_step": fitted.result.best_step}
        scores[name] = {"in": {s: metrics.ood_scores(p_in, p_in, s)[0] for s in SCORES},
                        **{o: {s: metrics.ood_scores(p_in, p, s)[1] for s in SCORES}
                           for o, p in p_out.items()}}
    out.mkdir(parents=True, exist_ok=True)
    figures = [out / "ood_roc.png", out / "ood_scores.png"]
    roc_set = "fashion_mnist" if "fashion_mnist" in sets else next(iter(sets))
    _roc_figure(figures[0], scores, results, roc_set)
    source = "MNIST" if data is None else getattr(data, "name", "custom")
    _scores_figure(figures[1], scores, list(sets), source)
    return finish("ood", out, start, seed=seed, quick=quick, device=device, settings=settings,
                  report=lambda p: _report(p, [f.name for f in figures]), figures=figures,
                  seeds=[seed], recipes=recipes_used(names, "classification", overrides),
                  checkpoints=str(checkpoints), in_distribution=source,
                  train_examples=len(train), in_distribution_examples=len(test),
                  ood_sets={s: len(split) for s, split in sets.items()},
                  units="percent; pr_plus: in-distribution positive (ood_auc's pr_auc_in), "
                        "pr_minus: anomalies positive (pr_auc_out)",
                  methods=results, hypernet_beats_map_fashion_roc=hypernets_against_map(results),
                  worse_than_paper=_worse_than_paper(results),
                  tables=_tables(results, list(sets), settings))


def _label(ood_set: str) -> str:
    return SET_LABELS.get(ood_set, ood_set)


def _tables(results: dict, set_names: list[str], settings: Settings) -> list[dict]:
    """The compact table (ROC-AUC per set, max-probability score) and one full table per set
    (every score); the paper's rows after ours."""
    main_columns = ["method", "test accuracy %", *(f"{_label(s)} ROC %" for s in set_names)]
    rows = [{"method": name, "test accuracy %": 100 * r["in_accuracy"],
             **{f"{_label(s)} ROC %": r["detection"][s][MAIN_SCORE]["roc"] for s in set_names}}
            for name, r in results.items()]
    for label, (ours, paper) in PAPER_TABLE2.items():
        rows.append({"method": f"{label} [ours: {ours}]",
                     **{f"{_label(s)} ROC %": paper[s][0] for s in set_names if s in paper}})
    net = "-".join(["784", *map(str, settings.zoo.hidden), "10"])
    missing = [_label(s) for s in set_names if not any(s in p for _, p in PAPER_TABLE2.values())]
    common = (f"Ours: MLP {net} by the suite's zoo, {settings.zoo.test_samples} MC samples, as "
              "many OOD images as in-distribution ones (so chance PR-AUC is 50%). The paper "
              "does not state its net for Table 2 and used Hendrycks & Gimpel's sets (other "
              "sizes, so PR-AUCs compare only loosely).")
    tables = [table(f"OOD detection, ROC-AUC % with the {SCORE_LABELS[MAIN_SCORE]} score",
                    main_columns, rows,
                    note=common + (f" No paper number for {', '.join(missing)}." if missing
                                   else ""), digits=2)]
    columns = ["method", "score", *_COLUMNS.values()]
    for s in set_names:
        body = [{"method": name, "score": SCORE_LABELS[score],
                 **{_COLUMNS[m]: r["detection"][s][score][m] for m in _METRICS}}
                for name, r in results.items() for score in SCORES]
        body += [{"method": f"{label} [ours: {ours}]", "score": SCORE_LABELS[MAIN_SCORE],
                  **dict(zip(_COLUMNS.values(), paper[s], strict=True))}
                 for label, (ours, paper) in PAPER_TABLE2.items() if s in paper]
        note = ("PR(+): in-distribution images are the positive class; PR(−): anomalies are "
                "(the reading under which the BHN paper's Table 3 is consistent). "
                "Where the weight draws all agree (a point estimate) mean std and BALD are 0: "
                "their AUCs are chance (50), not signal.")
        if not any(s in p for _, p in PAPER_TABLE2.values()):
            note += " The paper has no number for this set."
        tables.append(table(f"In-distribution test against {_label(s)}: every score", columns,
                            body, note=note, digits=2))
    return tables


def _worse_than_paper(results: dict) -> list[dict]:
    """Every (paper row, set, metric) where our method, max-probability score, is below it."""
    worse = []
    for label, (ours, paper) in PAPER_TABLE2.items():
        if ours not in results:
            continue
        for s, numbers in paper.items():
            if s not in results[ours]["detection"]:
                continue
            mine = results[ours]["detection"][s][MAIN_SCORE]
            for metric, value in zip(_METRICS, numbers, strict=True):
                if mine[metric] < value:
                    worse.append({"paper": label, "method": ours, "set": s, "metric": metric,
                                  "paper_value": value, "value": mine[metric],
                                  "difference_points": mine[metric] - value})
    return worse


def _roc_figure(path: Path, scores: dict, results: dict, ood_set: str) -> None:
    """ROC curves of every method against ``ood_set`` with the max-probability score."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_curve

    plt, sns = plotting()
    frames = []
    for name, per in scores.items():
        s_in, s_out = per["in"][MAIN_SCORE].numpy(), per[ood_set][MAIN_SCORE].numpy()
        labels = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
        fpr, tpr, _ = roc_curve(labels, np.concatenate([s_in, s_out]))
        roc = results[name]["detection"][ood_set][MAIN_SCORE]["roc"]
        frames.append(pd.DataFrame({"false positive rate": fpr, "true positive rate": tpr,
                                    "method": f"{name} ({roc:.1f})"}))
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    sns.lineplot(pd.concat(frames), x="false positive rate", y="true positive rate",
                 hue="method", estimator=None, sort=False, ax=ax, lw=1.3)
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01),
           title=f"MNIST against {_label(ood_set)}, {SCORE_LABELS[MAIN_SCORE]} score")
    ax.legend(title="method (ROC-AUC %)", fontsize=8, title_fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _scores_figure(path: Path, scores: dict, set_names: list[str], source: str) -> None:
    """ECDFs of every score on the in-distribution images and on each OOD set: one row per
    method, one column per score (further right = more anomalous)."""
    import pandas as pd
    from matplotlib.ticker import MaxNLocator

    plt, sns = plotting()
    names = list(scores)
    fig, axes = plt.subplots(len(names), len(SCORES), figsize=(3.1 * len(SCORES),
                                                               2.2 * len(names)),
                             squeeze=False)
    for i, name in enumerate(names):
        for j, score in enumerate(SCORES):
            frame = pd.concat([pd.DataFrame({"score": scores[name][key][score].numpy(),
                                             "data": f"{source} (in)" if key == "in"
                                             else _label(key)})
                               for key in ["in", *set_names]])
            ax = axes[i, j]
            sns.ecdfplot(frame, x="score", hue="data", ax=ax, legend=(i, j) == (0, 0))
            ax.set(xlabel=SCORE_LABELS[score] if score != "max_prob" else "1 − max probability",
                   ylabel=name if j == 0 else "")
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3), useOffset=False)
    if axes[0, 0].get_legend() is not None:
        sns.move_legend(axes[0, 0], "lower right", fontsize=7, title=None)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _report(payload: dict, figures: list[str]) -> str:
    """report.md: what was run, the comparison with map, the tables, the shortfalls, figures."""
    s = payload["settings"]["zoo"]
    claim = payload["hypernet_beats_map_fashion_roc"]
    if claim is None:
        verdict = ("`map` or Fashion-MNIST was not run: no comparison of the hypernetworks "
                   "with the MAP MLP.")
    else:
        diffs = ", ".join(f"`{n}` {d:+.2f}" for n, d in claim["difference_points"].items())
        winners = ", ".join(f"`{n}`" for n in claim["beats"])
        verdict = (f"Against Fashion-MNIST with the max-probability score `map` reaches ROC-AUC "
                   f"{claim['map_roc']:.2f}%; the hypernetworks (every method but "
                   f"{', '.join(BASELINES)}) differ from it by {diffs or 'nothing (none run)'} "
                   "points: " + (f"beaten by {winners}." if claim["any"]
                                 else "no hypernetwork beats it."))
    worse = payload["worse_than_paper"]
    if worse:
        shortfall = ("Worse than BHN Table 2 (max-probability score): " + "; ".join(
            f"`{w['method']}` {_label(w['set'])} {_COLUMNS[w['metric']].rstrip(' %')} "
            f"{w['value']:.2f} against {w['paper_value']:.2f} ({w['difference_points']:+.2f})"
            for w in worse) + ".")
    else:
        shortfall = "No method we ran is below its row of BHN Table 2."
    reused = [n for n, r in payload["methods"].items() if r["reused"]]
    sets = ", ".join(f"{_label(k)} ({v:,})" for k, v in payload["ood_sets"].items())
    return "\n".join([
        "# ood: out-of-distribution detection by models trained on MNIST (BHN Table 2)",
        "",
        f"Every method by its classification recipe on {payload['train_examples']:,} "
        f"{payload['in_distribution']} training images (MLP "
        f"784-{'-'.join(map(str, s['hidden']))}-10, {s['epochs']:g} epochs; models in "
        f"`{payload['checkpoints']}`"
        + (f", reused: {', '.join(reused)}" if reused else "") + "). In-distribution: "
        f"{payload['in_distribution_examples']:,} {payload['in_distribution']} test images; "
        "out-of-distribution: "
        f"{sets}. Uniform noise is U[0, 1), Gaussian noise N(0.5, 0.25²) clipped to [0, 1] "
        f"(seed {payload['seed']}). Per method one set of {s['test_samples']} weight draws "
        "predicts every image; the four scores (1 − max probability, predictive entropy, mean "
        "std over samples, BALD; higher = more anomalous) come from those draws. ROC-AUC, "
        "PR-AUC(+) with the in-distribution images as the positive class and PR-AUC(−) with "
        "the anomalies as the positive class, in %. The paper (Krueger et al. "
        "2017, Table 2) uses the max-probability score and has no Fashion-MNIST row.",
        "",
        verdict,
        "",
        render_tables(payload["tables"]),
        shortfall + " The paper used Hendrycks & Gimpel's data sets and does not state its "
        "net; ours differ (see the notes).",
        "",
        *[f"![{f}]({f})" for f in figures],
        "",
    ])
