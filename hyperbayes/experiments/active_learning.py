"""active-learning: BALD vs max-entropy vs random acquisition on MNIST, warm start vs re-initialise.

Gal, Islam & Ghahramani (2017), *Deep Bayesian Active Learning with Image Data*, as replicated
in Krueger et al. (2017), *Bayesian Hypernetworks*, §4.3 and Fig. 4: start from 20 labelled
MNIST training images (2 per class, drawn with the seed), acquire ``acquire`` = 10 images per
round from a pool, train ``epochs_per_round`` epochs after every acquisition (at least
``min_steps`` steps: 50 epochs of 20 images are only 50 steps) with no validation-based selection
and no checkpoints, and measure test accuracy after every round. Acquisition functions:

- ``bald``: the mutual information between the label and the weights
  (:func:`hyperbayes.inference.metrics.bald`) on ``pool_samples`` MC samples;
- ``entropy``: the predictive entropy (:func:`~hyperbayes.inference.metrics.predictive_entropy`);
- ``random``: uniform over the pool (ignores the model; the same picks for every method).

Regimes: ``warm`` continues training the same model and guide on the grown labelled set
(:func:`zoo.train(..., warm_start=previous) <hyperbayes.experiments.zoo.train>`); ``reinit``
trains a fresh model every round (Gal et al.). The model trained on the 20 initial images is
shared by every acquisition × regime of a method and seed (it is the same model). Every
registered method runs by its ``"classification"`` recipe; nothing here names a method except
:data:`PAPER_ROLES`, which says which of ours the paper's curves are (for the claims table).

Lean by construction: per round and model one set of ``pool_samples`` weight draws scores the
whole pool and the test images in one batched pass (random acquisition scores only the test
images); items already acquired are masked, not copied out.

The net: 784-128-10 (quick: 784-64-10), Adam at the zoo's 1e-3, or Gal et al.'s CNN
(``net="gal_cnn"``, :meth:`Settings.paper`). One hidden layer of 128 units is the dense layer of
Gal et al.'s CNN without the convolutions: it fits 20 images, has ~100k weights (so BALD has a
posterior to work with), and keeps the ~6,300 trainings of the full run affordable. The pool is
a random subset of ``pool_size`` = 10,000 of the 49,980 unlabelled training images; test
accuracy on 5,000 test images (± 0.4 points binomial error at 90%).

Protocol changes of 2026-12-02 (issue 18): each round trains at least ``min_steps`` = 500
steps, not 150; BALD and entropy score a fresh random subset of ``pool_subset`` = 2,000 pool
images per round; MC dropout's recipe has weight decay; the MetaPrior is left out
(:data:`EXCLUDED`). Why these sizes, and what runs cost: the note *experiment-costs*. Finished
(method, seed) results and each curve's per-round state are kept, so a run can be spread over
sessions; run ``diversity`` separately (``--methods``) or on a GPU.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .. import datasets
from ..datasets import Split
from ..inference import FitResult, checkpoint, distributed, metrics, resolve_device
from ..inference.acquisition import (
    area_under_curve,
    initial_and_pool,
    random_subset,
    seeded_generator,
    select,
)
from ..models.architectures import GalCNN
from . import zoo
from .common import (
    ExperimentResult,
    apply_settings,
    checkpoint_key,
    experiment,
    finish,
    header,
    machine_info,
    plotting,
    recipes_used,
    write_json,
    write_metrics,
)
from .suite import render_tables, table

__all__ = ["run", "run_paper", "payload_tables", "Settings", "ACQUISITIONS", "REGIMES",
           "PAPER_ROLES", "EXCLUDED", "round_steps", "learning_curve", "part_path", "load_part"]

log = logging.getLogger(__name__)

#: acquisition name → score of each pool item from (S, N, C) MC probabilities (None: random)
ACQUISITIONS = {"random": None, "bald": metrics.bald, "entropy": metrics.predictive_entropy}
#: training regimes between acquisitions
REGIMES = ("warm", "reinit")
#: which of our methods the paper's Fig. 4 curves are (only the claims table uses this)
PAPER_ROLES = {"BHN": "flow", "MC dropout": "mcdropout", "MLP baseline (no dropout)": "map"}
#: methods left out of active learning, with the reason (written in the report)
EXCLUDED = {
    "metaprior": "on 20 labelled images the MetaPrior's ELBO optimum is its prior (the KL of "
                 "~2 nats per code coordinate × 8,940 coordinates dwarfs n·log 10), so a model "
                 "trained there sits at chance and its curve measures early stopping, not a "
                 "posterior; the paper's few-shot setting pre-trains the hyperprior on other "
                 "data first, which this task does not do",
}


#: the nets a run can train: "mlp" (the zoo's MLP of ``zoo.hidden``) or Gal et al.'s CNN
NETS = ("mlp", "gal_cnn")

#: fewer training steps per round leave a fresh net under-trained at lr 1e-3, and then warm
#: start wins over re-initialising merely by having trained longer (note *experiment-costs*)
ENOUGH_STEPS = 100


@dataclass(frozen=True)
class Settings:
    """Sizes of one run (full: 3 seeds × 50 rounds × 10 acquisitions = 520 labelled images).

    ``zoo`` is how each model is trained (its ``epochs`` is unused: rounds train
    ``max(epochs_per_round × ⌈n / batch⌉, min_steps)`` steps, with the zoo's cosine decay
    inside each round). ``net``: ``"mlp"`` (the zoo's MLP) or ``"gal_cnn"``
    (:class:`~hyperbayes.models.architectures.GalCNN`).
    ``pool_size``: a random subset of the unlabelled training images (None: all of them).
    ``pool_subset``: each round scores a fresh random subset of this many of the images still
    in the pool and acquires the best of them, as Gal et al. do (None: score the whole pool).
    ``budgets``: numbers of acquired images at which the tables report accuracy. ``threads``:
    torch threads while the task runs (None: leave as set; 1 is fastest for these small batches
    on a shared CPU, where a second thread spin-waits).
    """

    zoo: zoo.ZooSettings = field(default_factory=lambda: zoo.ZooSettings(hidden=(128,)))
    initial_per_class: int = 2
    acquire: int = 10
    rounds: int = 50
    net: str = "mlp"
    pool_size: int | None = 10_000
    pool_subset: int | None = 2_000
    pool_samples: int = 20
    epochs_per_round: float = 50
    min_steps: int = 500
    test_examples: int = 5_000
    seeds: int = 3
    acquisitions: tuple = ("random", "bald", "entropy")
    regimes: tuple = REGIMES
    budgets: tuple = (100, 200)
    threads: int | None = 1

    @classmethod
    def quick(cls) -> Settings:
        """One seed, 3 rounds (20 → 50 labelled), 784-64-10, pool 1,000, 500 test images."""
        return cls(zoo=zoo.ZooSettings(hidden=(64,)), rounds=3, pool_size=1_000,
                   pool_samples=10, epochs_per_round=20, min_steps=20, test_examples=500,
                   seeds=1, budgets=(10, 20))

    @classmethod
    def smoke(cls) -> Settings:
        """Tiny settings for tests: 2 rounds, 784-16-10, pool 100, a few steps per round."""
        return cls(zoo=zoo.ZooSettings(hidden=(16,)), rounds=2, pool_size=100, pool_subset=50,
                   pool_samples=4, epochs_per_round=1, min_steps=3, test_examples=100,
                   seeds=1, budgets=(10,), threads=None)

    @classmethod
    def paper(cls) -> Settings:
        """Gal et al.'s protocol: their CNN, 1,000 acquisitions (100 rounds of 10), 3 seeds,
        BALD vs random, warm start, each round scoring 2,000 random pool images."""
        return cls(net="gal_cnn", rounds=100, acquisitions=("random", "bald"),
                   regimes=("warm",), budgets=(100, 300, 500))


def _round_seed(seed: int, round_: int) -> int:
    """The training seed of round ``round_`` (round 0: ``seed`` itself)."""
    return seed + 1_000_003 * round_


def _save_state(path, round_: int, name, acquisition, regime, seed, labelled, available,
                scored, generator, pool_probs, curve, train_s, score_s, current) -> None:
    """Write one curve's state after round ``round_`` (see :func:`learning_curve`)."""
    payload = {"round": round_, "method": name, "acquisition": acquisition, "regime": regime,
               "seed": seed, "labelled": labelled, "available": available, "scored": scored,
               "generator": generator.get_state(), "pool_probs": pool_probs,
               "curve": {k: list(curve[k]) for k in ("acquired", "labelled", "accuracy",
                                                     "steps")},
               "indices": torch.stack(curve["indices"]), "train_s": train_s,
               "score_s": score_s}
    if current is not None:
        payload.update(_trained_state(current))
    checkpoint.save(path, payload)


def _trained_state(current: zoo.Trained) -> dict:
    """The model's, guide's and loss's states of a trained model (what :func:`_restore`
    reads back)."""
    loss_state = getattr(current.loss, "state_dict", None)
    return {"model": current.model.state_dict(), "guide": current.guide.state_dict(),
            "loss": loss_state() if callable(loss_state) else {}}


def _saved(path: Path, device):
    """The checkpoint at ``path``, or None when there is none; under torchrun rank 0's
    (:func:`~hyperbayes.inference.distributed.rank0_decides`), so every rank resumes alike."""
    return distributed.rank0_decides(lambda: checkpoint.load(path) if path.exists() else None,
                                     device)


def _check_state(saved: dict, path, name, acquisition, regime, seed, n_pool) -> None:
    """Refuse a saved curve state that belongs to another curve."""
    expected = {"method": name, "acquisition": acquisition, "regime": regime, "seed": seed}
    found = {k: saved.get(k) for k in expected}
    if found != expected or len(saved["available"]) != n_pool:
        raise checkpoint.CheckpointError(
            f"{path} holds the state of {found} (pool {len(saved['available'])}), not of "
            f"{expected} (pool {n_pool}); delete it to restart that curve")


def _net(settings: Settings, split: Split, num_classes: int) -> nn.Module | None:
    """The module the run trains: Gal et al.'s CNN for ``net="gal_cnn"``, None for the zoo's
    MLP."""
    if settings.net != "gal_cnn":
        return None
    return GalCNN(num_classes, math.isqrt(split.x[0].numel()))


def _restore(saved: dict, name: str, settings: Settings, split: Split, *, seed: int,
             num_classes: int, device) -> zoo.Trained:
    """The warm-started model of a saved curve state, rebuilt and loaded (not trained)."""
    net = _net(settings, split, num_classes)
    model, guide, loss, fit_options = zoo.build(name, settings.zoo, split, seed=seed,
                                                num_classes=num_classes, net=net)
    device = resolve_device(device)
    model.to(device)
    guide.to(device)
    model.load_state_dict(saved["model"])
    guide.load_state_dict(saved["guide"])
    if saved.get("loss") and hasattr(loss, "load_state_dict"):
        loss.load_state_dict(saved["loss"], guide, device)
    return zoo.Trained(name, model, guide, loss, None, True, fit_options, device)


def round_steps(n: int, settings: Settings) -> int:
    """Training steps of a round on ``n`` labelled images: ``max(epochs × ⌈n/batch⌉, min)``."""
    per_epoch = math.ceil(n / min(settings.zoo.batch_size, n))
    return max(math.ceil(settings.epochs_per_round * per_epoch), settings.min_steps)


def _epochs_for(steps: int, n: int, batch_size: int) -> float:
    """The ``epochs`` that :func:`zoo.train` turns into exactly ``steps`` steps."""
    per_epoch = math.ceil(n / min(batch_size, n))
    epochs = steps / per_epoch
    while math.ceil(epochs * per_epoch) > steps:  # float round-off upwards
        epochs = math.nextafter(epochs, 0.0)
    return epochs


def _train(name: str, settings: Settings, split: Split, *, seed: int, device, progress,
           warm_start, num_classes: int) -> zoo.Trained:
    """One round's training (warm from ``warm_start`` or fresh), no validation, no checkpoint."""
    steps = round_steps(len(split), settings)
    net = _net(settings, split, num_classes)
    return zoo.train(name, settings.zoo, split, None, device=device, seed=seed,
                     checkpoint_dir=None, progress=progress,
                     epochs=_epochs_for(steps, len(split), settings.zoo.batch_size),
                     warm_start=warm_start, num_classes=num_classes, net=net,
                     tag="" if net is None else settings.net)


def learning_curve(name: str, acquisition: str, regime: str, settings: Settings,
                   train_split: Split, test: Split, initial: torch.Tensor, pool: torch.Tensor,
                   *, seed: int = 0, device="cpu", start=None, progress: bool | None = None,
                   num_classes: int = 10, candidates: torch.Tensor | None = None,
                   state: str | Path | None = None) -> dict:
    """One active-learning run: ``settings.rounds`` acquisitions of ``settings.acquire`` images.

    Args:
        name: a registered method.
        acquisition: a key of :data:`ACQUISITIONS`.
        regime: ``"warm"`` (continue training) or ``"reinit"`` (a fresh model every round).
        settings: the run's sizes.
        train_split, test: the images that ``initial`` / ``pool`` index, and the test images.
        initial, pool: training indices (see
            :func:`~hyperbayes.inference.acquisition.initial_and_pool`).
        seed: seeds every round's training and the random picks (the random acquisition makes
            the same picks for every method and regime of a seed).
        device, progress: as in :func:`zoo.train`.
        start: ``(trained, probs)`` of round 0 (the model trained on ``initial`` and its
            probabilities on the pool then the test images) to share between runs; None trains
            it here.
        num_classes: the output width.
        candidates: ``train_split.x[pool]`` then ``test.x`` in one tensor, to share between
            runs; None concatenates them here.
        state: a file where the curve's state is saved (atomically, verified on load) after
            every round, and from which an interrupted curve resumes at its next round: the
            labelled set, the pool's availability and scores, the random stream, the curve so
            far and (warm start) the model, guide and loss. None: no saved state.

    Returns:
        A dict: ``acquired`` / ``labelled`` (counts per round, round 0 first), ``accuracy``
        (test accuracy per round), ``indices`` (training indices acquired in each round),
        ``labelled_indices`` (the final labelled set), ``steps`` (per round, round 0 included),
        ``train_s`` and ``score_s`` (excluding round 0's when ``start`` is given), ``model``
        (the last round's :class:`~hyperbayes.experiments.zoo.Trained`).
    """
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition {acquisition!r}; choose from {list(ACQUISITIONS)}")
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose from {list(REGIMES)}")
    score = ACQUISITIONS[acquisition]
    if candidates is None:
        candidates = torch.cat([train_split.x[pool], test.x])
    elif len(candidates) != len(pool) + len(test.x):
        raise ValueError(f"candidates has {len(candidates)} images; expected the pool's "
                         f"{len(pool)} then the test set's {len(test.x)}")
    n_pool = len(pool)
    train_s = score_s = 0.0
    if start is None:
        t0 = time.perf_counter()
        current = _train(name, settings, train_split.subset(initial), seed=seed, device=device,
                         progress=progress, warm_start=None, num_classes=num_classes)
        t1 = time.perf_counter()
        probs = zoo.sample_probs(current, candidates, settings.pool_samples)
        train_s, score_s = t1 - t0, time.perf_counter() - t1
    else:  # warm start trains it further: a copy, so that other runs share the original
        current = copy.deepcopy(start[0]) if regime == "warm" else start[0]
        probs = start[1]
    pool_probs, test_probs = probs[:, :n_pool], probs[:, n_pool:]
    labelled = initial.clone()
    available = torch.ones(n_pool, dtype=torch.bool)
    gen = seeded_generator("acquire", seed)
    scored = random_subset(available, settings.pool_subset, gen)  # round 1's candidates
    curve = {"acquired": [0], "labelled": [len(labelled)],
             "accuracy": [metrics.accuracy(test_probs, test.y)], "indices": [],
             "steps": [current.result.steps]}
    done = 0
    saved = None if state is None else _saved(Path(state), device)
    if saved is not None:
        _check_state(saved, state, name, acquisition, regime, seed, n_pool)
        done, labelled, available, scored = (saved["round"], saved["labelled"],
                                             saved["available"], saved["scored"])
        gen.set_state(saved["generator"])
        pool_probs = saved["pool_probs"]
        curve = {**saved["curve"], "indices": list(saved["indices"])}
        train_s, score_s = saved["train_s"], saved["score_s"]
        current = _restore(saved, name, settings, train_split.subset(labelled), seed=seed,
                           num_classes=num_classes, device=device) if regime == "warm" else None
    for r in range(done + 1, settings.rounds + 1):
        t0 = time.perf_counter()
        picked = select(None if score is None else score(pool_probs.double()),
                        available if score is None else available & scored, settings.acquire,
                        gen)
        available[picked] = False
        labelled = torch.cat([labelled, pool[picked]])
        t1 = time.perf_counter()
        current = _train(name, settings, train_split.subset(labelled),
                         seed=_round_seed(seed, r), device=device, progress=progress,
                         warm_start=current if regime == "warm" else None,
                         num_classes=num_classes)
        t2 = time.perf_counter()
        if score is None:  # random picks need no pool scores
            test_probs = zoo.sample_probs(current, test.x, settings.pool_samples)
        elif settings.pool_subset is None:  # one set of weight draws for pool and test images
            probs = zoo.sample_probs(current, candidates, settings.pool_samples)
            pool_probs, test_probs = probs[:, :n_pool], probs[:, n_pool:]
        else:  # the next round's random subset of the pool, and the test images
            scored = random_subset(available, settings.pool_subset, gen)
            positions = scored.nonzero().squeeze(1)
            probs = zoo.sample_probs(current, torch.cat([candidates[positions],
                                                         candidates[n_pool:]]),
                                     settings.pool_samples)
            # rows outside the subset are not predicted (uniform stand-ins, never picked)
            pool_probs = probs.new_full((probs.shape[0], n_pool, probs.shape[2]),
                                        1.0 / probs.shape[2])
            pool_probs[:, positions] = probs[:, :len(positions)]
            test_probs = probs[:, len(positions):]
        train_s += t2 - t1
        score_s += (t1 - t0) + time.perf_counter() - t2
        curve["indices"].append(pool[picked])
        curve["acquired"].append(r * settings.acquire)
        curve["labelled"].append(len(labelled))
        curve["accuracy"].append(metrics.accuracy(test_probs, test.y))
        curve["steps"].append(current.result.steps)
        log.info("%s seed %d %s-%s: round %d of %d, %d labelled, test accuracy %.2f%% "
                 "(%.0f s training, %.0f s scoring so far)", name, seed, acquisition, regime, r,
                 settings.rounds, len(labelled), 100 * curve["accuracy"][-1], train_s, score_s)
        if state is not None:
            _save_state(state, r, name, acquisition, regime, seed, labelled, available, scored,
                        gen, pool_probs, curve, train_s, score_s,
                        current if regime == "warm" else None)
    curve.update(labelled_indices=labelled, train_s=train_s, score_s=score_s, model=current)
    return curve


@contextmanager
def _threads(n: int | None):
    """Run with ``n`` torch threads (None: unchanged), restoring the count after."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: settings that change only the summary, not one method and seed's curves
_SUMMARY_ONLY = ("seeds", "budgets", "threads")


def part_path(directory: str | Path, name: str, settings: Settings, seed: int,
              train_split: Split, test: Split) -> Path:
    """Where the curves of method ``name`` and ``seed`` are kept: a file name tied to the
    method's recipe, every setting that shapes the curves, the seed and the data."""
    fields = {k: v for k, v in asdict(settings).items() if k not in _SUMMARY_ONLY}
    # this method's own options only: another method's --option keeps this file
    fields["zoo"] = {**fields["zoo"], "options": settings.zoo.options.get(name, {})}
    digest = checkpoint_key(name, fields, seed, train_split, test)
    return Path(directory) / f"{name}-seed{seed}-{digest}.json"


def load_part(path: Path, settings: Settings) -> dict:
    """A finished (method, seed) result written by :func:`run`, checked against ``settings``:
    every acquisition × regime with one accuracy per round. A file that is not such a result
    raises ValueError naming it (delete it to recompute)."""
    try:
        part = json.loads(Path(path).read_text())
        curves, timing = part["curves"], part["timing"]
        for acq in settings.acquisitions:
            for regime in settings.regimes:
                entry = curves[acq][regime]
                if len(entry["accuracy"]) != settings.rounds + 1 or not all(
                        isinstance(a, (int, float)) and 0 <= a <= 1 for a in entry["accuracy"]):
                    raise ValueError(f"{acq}/{regime} does not have {settings.rounds + 1} "
                                     "accuracies in [0, 1]")
                if len(entry["class_counts"]) < 1:
                    raise ValueError(f"{acq}/{regime} has no class counts")
        if set(timing) != {"train_s", "score_s", "steps", "trainings"}:
            raise ValueError("timing keys differ")
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a finished active-learning result ({err}); delete "
                         "it to recompute that method and seed") from err
    return part


def _first_model(name: str, settings: Settings, split: Split, candidates: torch.Tensor, *,
                 seed: int, device, progress, num_classes: int, path: Path | None) -> tuple:
    """``(model, probabilities on the candidates, train_s, score_s)`` of the model trained on
    the initial set ``split``. Kept in ``path`` (atomic, verified), so that a resumed run
    neither trains nor scores it again (None: not kept)."""
    saved = None if path is None else _saved(path, device)
    if saved is not None:
        if (saved.get("method"), saved.get("seed")) != (name, seed) \
                or saved["probs"].shape[1] != len(candidates):
            raise checkpoint.CheckpointError(
                f"{path} holds the first model of {saved.get('method')!r}, seed "
                f"{saved.get('seed')}, on {saved['probs'].shape[1]} candidates, not of {name!r}, "
                f"seed {seed}, on {len(candidates)}; delete it to train that model again")
        first = _restore(saved, name, settings, split, seed=seed, num_classes=num_classes,
                         device=device)
        first.result = FitResult(steps=saved["steps"], best_step=saved["steps"],
                                 total_wall_time_s=saved["train_s"])
        log.info("%s seed %d: the model trained on the %d initial images is reused from %s",
                 name, seed, len(split), path)
        return first, saved["probs"], saved["train_s"], saved["score_s"]
    t0 = time.perf_counter()
    first = _train(name, settings, split, seed=seed, device=device, progress=progress,
                   warm_start=None, num_classes=num_classes)
    t1 = time.perf_counter()
    probs = zoo.sample_probs(first, candidates, settings.pool_samples)
    train_s, score_s = t1 - t0, time.perf_counter() - t1
    if path is not None:
        checkpoint.save(path, {"method": name, "seed": seed, "probs": probs,
                               "steps": first.result.steps, "train_s": train_s,
                               "score_s": score_s, **_trained_state(first)})
    log.info("%s seed %d: trained on the %d initial images in %.0f s, scored %d images in %.0f s",
             name, seed, len(split), train_s, len(candidates), score_s)
    return first, probs, train_s, score_s


def _method_seed(name: str, settings: Settings, train_split: Split, test: Split,
                 initial: torch.Tensor, pool: torch.Tensor, candidates: torch.Tensor, *,
                 seed: int, device, progress, num_classes: int,
                 state_dir: Path | None = None) -> dict:
    """Every acquisition × regime of one method and seed: ``{"curves": {acq: {regime:
    {"accuracy", "class_counts"}}}, "timing": {...}}``. The model trained on the initial set
    is shared by all of them; ``candidates`` are the pool's then the test images. Each curve
    saves its state after every round in ``state_dir`` (None: nowhere) and resumes from it;
    the first model is kept there too."""
    first, probs, train_s, score_s = _first_model(
        name, settings, train_split.subset(initial), candidates, seed=seed, device=device,
        progress=progress, num_classes=num_classes,
        path=None if state_dir is None else Path(state_dir) / "start.pt")
    timing = {"train_s": train_s, "score_s": score_s, "steps": first.result.steps,
              "trainings": 1}
    curves = {a: {} for a in settings.acquisitions}
    for acq in settings.acquisitions:
        for regime in settings.regimes:
            curve = learning_curve(name, acq, regime, settings, train_split, test, initial,
                                   pool, seed=seed, device=device, start=(first, probs),
                                   progress=progress, num_classes=num_classes,
                                   candidates=candidates,
                                   state=None if state_dir is None
                                   else Path(state_dir) / f"{acq}-{regime}.pt")
            counts = torch.bincount(train_split.y[curve["labelled_indices"]],
                                    minlength=num_classes)
            curves[acq][regime] = {"accuracy": curve["accuracy"],
                                   "class_counts": counts.tolist()}
            timing["train_s"] += curve["train_s"]
            timing["score_s"] += curve["score_s"]
            timing["steps"] += sum(curve["steps"][1:])
            timing["trainings"] += settings.rounds
    return {"curves": curves, "timing": timing}


@experiment
def run(methods_to_run=None, *, quick: bool = False, device="auto", seed: int = 0,
        out: str | Path = "results/active-learning", settings: Settings | None = None,
        progress: bool | None = None, data=None,
        checkpoints: str | Path | None = None,
        overrides: dict | None = None) -> ExperimentResult:
    """Active learning for every method × acquisition × regime × seed; write metrics.json,
    active_learning.png and report.md.

    metrics.json has ``methods[name][acquisition][regime]`` with ``seeds`` (per seed the
    accuracy curve and the class counts of the final labelled set), ``mean`` / ``std`` over
    seeds, ``auc`` (mean accuracy over the budget,
    :func:`~hyperbayes.inference.acquisition.area_under_curve`), ``final`` and
    the accuracy at ``settings.budgets``; ``acquired`` / ``labelled`` (counts per round),
    ``timing`` per method, ``tables`` and ``paper_claims``.

    Args:
        methods_to_run: method names (None: every registered method).
        quick, settings: :meth:`Settings.quick` or the given settings (default: full).
        device, progress: as in :func:`zoo.train`.
        seed: the first seed; seeds ``seed, seed + 1, …`` (``settings.seeds`` of them).
        out: the output folder.
        data: a Dataset with train and test images (default: MNIST).
        checkpoints: the suite's checkpoint folder (default :func:`zoo.default_checkpoints`,
            shared by the tasks of a suite); finished (method, seed) results are kept in its
            ``active-learning`` folder. Each is written there atomically when it finishes
            (:func:`part_path`: a name tied to everything that shapes it), and a later run with
            the same settings and data loads it instead of training again: an interrupted run
            resumes, and methods or seeds run in separate processes gather into one report.
            Inside an unfinished one, every curve saves its state after every round (in a
            ``.rounds`` folder beside it, removed when the part is written), so a long run
            (the paper's protocol: hours per method and seed on a CPU) resumes at its next
            round across sessions.
        overrides: ``{method: {option: value}}`` laid over the methods' recipes
            (``--option METHOD.KEY=VALUE``; :func:`zoo.with_options
            <hyperbayes.experiments.zoo.with_options>`), recorded under ``recipes``.
    """
    start_time = time.perf_counter()
    settings, names = zoo.task_settings(Settings, settings, quick, overrides, methods_to_run)
    excluded = {name: EXCLUDED[name] for name in names if name in EXCLUDED}
    names = [name for name in names if name not in EXCLUDED]
    if settings.net not in NETS:
        raise ValueError(f"unknown net {settings.net!r}; choose from {NETS}")
    for acq in settings.acquisitions:
        if acq not in ACQUISITIONS:
            raise ValueError(f"unknown acquisition {acq!r}; choose from {list(ACQUISITIONS)}")
    for regime in settings.regimes:
        if regime not in REGIMES:
            raise ValueError(f"unknown regime {regime!r}; choose from {list(REGIMES)}")
    device = resolve_device(device)
    data = data if data is not None else datasets.load("mnist")
    train_split = data.train
    test = data.test.subset(slice(0, min(settings.test_examples, len(data.test))))
    num_classes = getattr(data, "num_classes", None) or int(
        max(train_split.y.max(), test.y.max())) + 1
    seeds = [seed + i for i in range(settings.seeds)]
    out = Path(out)
    results = {n: {a: {r: {"seeds": {}} for r in settings.regimes}
                   for a in settings.acquisitions} for n in names}
    timing = {n: {"train_s": 0.0, "score_s": 0.0, "steps": 0, "trainings": 0} for n in names}
    acquired = [r * settings.acquire for r in range(settings.rounds + 1)]
    payload = header("active-learning", seed=seed, quick=quick, device=device, settings=settings,
                     seeds=seeds, recipes=recipes_used(names, "classification", overrides),
                     pool_size=None, test_examples=len(test), acquired=acquired,
                     inputs=math.prod(train_split.x.shape[1:]),
                     labelled=[settings.initial_per_class * num_classes + a for a in acquired],
                     methods=results, timing=timing, excluded=excluded)
    part_dir = (Path(checkpoints) if checkpoints is not None
                else zoo.default_checkpoints(out)) / "active-learning"
    reused = payload["reused"] = []
    with _threads(settings.threads):
        for s in seeds:
            initial, pool = initial_and_pool(train_split.y, per_class=settings.initial_per_class,
                                             pool_size=settings.pool_size, seed=s,
                                             num_classes=num_classes)
            payload["pool_size"] = len(pool)
            candidates = torch.cat([train_split.x[pool], test.x])
            for name in names:
                path = part_path(part_dir, name, settings, s, train_split, test)
                part = distributed.rank0_decides(
                    lambda path=path: load_part(path, settings) if path.exists() else None,
                    device)
                if part is None:
                    rounds_dir = path.with_suffix(".rounds")  # per-curve states, per round
                    part = _method_seed(name, settings, train_split, test, initial, pool,
                                        candidates, seed=s, device=device,
                                        progress=progress, num_classes=num_classes,
                                        state_dir=rounds_dir)
                    part_dir.mkdir(parents=True, exist_ok=True)
                    write_json(path, {"method": name, "seed": s, "device": str(device),
                                      "machine": machine_info(), **part})
                    shutil.rmtree(rounds_dir, ignore_errors=True)
                else:
                    log.info("%s seed %d: finished curves reused from %s", name, s, path)
                    reused.append({"method": name, "seed": s, "file": str(path)})
                for acq in settings.acquisitions:
                    for regime in settings.regimes:
                        results[name][acq][regime]["seeds"][str(s)] = part["curves"][acq][regime]
                for k, v in part["timing"].items():
                    timing[name][k] += v
                payload["wall_time_s"] = time.perf_counter() - start_time
                write_metrics(out, payload)
    # training and scoring seconds over every (method, seed), reused ones included: a run that
    # gathers finished results has a short wall time but stands for this much work
    payload["compute_s"] = sum(t["train_s"] + t["score_s"] for t in timing.values())
    _summarize(results, acquired, settings.budgets)
    payload["paper_claims"], payload["tables"] = payload_tables(payload, settings)
    out.mkdir(parents=True, exist_ok=True)
    figures = [out / "active_learning.png"]
    _figure(figures[0], results, names, settings, acquired)
    return finish("active-learning", out, start_time, payload=payload, figures=figures,
                  report=lambda p: _report(p, [f.name for f in figures]))


@experiment
def run_paper(methods_to_run=("mcdropout", "flow"), *, quick: bool = False, device="auto",
              seed: int = 0, out: str | Path = "results/active-learning-paper",
              settings: Settings | None = None, progress: bool | None = None, data=None,
              checkpoints: str | Path | None = None) -> ExperimentResult:
    """:func:`run` with Gal et al.'s protocol (:meth:`Settings.paper`: their CNN, 1,000
    acquisitions, 3 seeds, BALD vs random, warm start), for MC dropout and the flow by default.
    ``quick`` keeps the protocol's net and acquisitions at :meth:`Settings.quick`'s sizes."""
    if settings is None:
        settings = Settings.paper()
        if quick:
            settings = replace(Settings.quick(), net="gal_cnn",
                               acquisitions=settings.acquisitions, regimes=settings.regimes)
    return run(methods_to_run, quick=quick, device=device, seed=seed, out=out,
               settings=settings, progress=progress, data=data, checkpoints=checkpoints)


def payload_tables(payload: dict, settings: Settings | None = None) -> tuple[list, list]:
    """``(paper_claims, tables)`` from a metrics.json payload's summarized ``methods`` records
    (its ``settings`` unless given): what :func:`run` writes, and what :func:`jobs.merge_task
    <hyperbayes.experiments.jobs.merge_task>` recomputes when per-method jobs merge, since
    the claims compare the methods with one another."""
    settings = settings or apply_settings(Settings, payload["settings"])
    results, acquired = payload["methods"], payload["acquired"]
    claims = paper_claims(results, list(results), settings, acquired)
    return claims, _tables(results, list(results), settings, acquired) + [table(
        "Paper claims (Fig. 4, §4.3; the paper has no table) beside ours",
        ["claim", "ours", "holds"], claims,
        note="Late / early: mean test accuracy (%) over the second / first half of the rounds; "
             "AUC: mean accuracy over the budget. Method names of the paper: "
             + ", ".join(f"{k} = `{v}`" for k, v in PAPER_ROLES.items()) + ".")]


def _summarize(results: dict, acquired: list[int], budgets) -> None:
    """Add mean / std curves, AUC, final and budget accuracies over seeds to every entry."""
    for per_acq in results.values():
        for per_regime in per_acq.values():
            for entry in per_regime.values():
                curves = torch.tensor([c["accuracy"] for c in entry["seeds"].values()],
                                      dtype=torch.float64)
                aucs = torch.tensor([area_under_curve(acquired, c) for c in curves.tolist()],
                                    dtype=torch.float64)
                std = curves.std(0, correction=0)
                entry.update(
                    mean=curves.mean(0).tolist(), std=std.tolist(),
                    final=float(curves[:, -1].mean()), final_std=float(std[-1]),
                    auc=float(aucs.mean()), auc_std=float(aucs.std(correction=0)),
                    # mean |Δ accuracy| between consecutive rounds: how jumpy a curve is
                    jitter=float(curves.diff(dim=1).abs().mean()) if curves.shape[1] > 1
                    else 0.0,
                    at_budget={str(b): float(curves[:, _budget_index(acquired, b)].mean())
                               for b in _budgets(acquired, budgets)})


def _budgets(acquired: list[int], budgets) -> list[int]:
    """The reporting budgets a run reaches (acquisitions), then the final one."""
    return [b for b in budgets if 0 < b < acquired[-1]] + [acquired[-1]]


def _budget_index(acquired: list[int], budget: int) -> int:
    """The last round with at most ``budget`` images acquired."""
    return max(i for i, a in enumerate(acquired) if a <= budget)


def _tables(results: dict, names, settings: Settings, acquired: list[int]) -> list[dict]:
    """Accuracy at the budgets and AUC per method × acquisition × regime; an AUC pivot."""
    budgets = _budgets(acquired, settings.budgets)
    cols = ["method", "acquisition", "regime", "after 0"] + [f"after {b}" for b in budgets]
    cols += ["final std", "AUC"]
    rows = []
    for name in names:
        for acq in settings.acquisitions:
            for regime in settings.regimes:
                e = results[name][acq][regime]
                row = {"method": name, "acquisition": acq, "regime": regime,
                       "after 0": 100 * e["mean"][0], "final std": 100 * e["final_std"],
                       "AUC": 100 * e["auc"]}
                row.update({f"after {b}": 100 * e["at_budget"][str(b)] for b in budgets})
                rows.append(row)
    pivot_cols = ["method"] + [f"{a} {r}" for a in settings.acquisitions
                               for r in settings.regimes]
    pivot = [{"method": name, **{f"{a} {r}": 100 * results[name][a][r]["auc"]
                                 for a in settings.acquisitions for r in settings.regimes}}
             for name in names]
    n_seeds = len(next(iter(results[names[0]].values()))[settings.regimes[0]]["seeds"]) \
        if names else 0
    return [
        *_versus_random(results, names, settings, acquired),
        table(f"Test accuracy (%) after k acquired images (mean over {n_seeds} seed(s))", cols,
              rows, note=f"{settings.initial_per_class} initial images per class, "
                         f"{settings.acquire} acquired per round; final = after {acquired[-1]}"
                         "; final std over seeds; AUC: mean accuracy (%) over the budget "
                         "(trapezoid area under the curve divided by its width). "
                         + _point_estimate_note(settings), digits=3),
        table("Area under the accuracy curve (mean accuracy %, by acquisition and regime)",
              pivot_cols, pivot, note="warm: continue training the same model each round; "
                                      "reinit: a fresh model each round (Gal et al. 2017)."),
    ]


def _versus_random(results: dict, names, settings: Settings, acquired: list[int]) -> list[dict]:
    """Whether each scored acquisition beats random, per method and regime: the AUC difference
    (mean over seeds) and on how many seeds it is positive (the seeds share their initial set
    and pool, so the difference is paired)."""
    scored = [a for a in settings.acquisitions if a != "random"]
    if "random" not in settings.acquisitions or not scored:
        return []
    rows = []
    for name in names:
        for acq in scored:
            for regime in settings.regimes:
                mine, rand = results[name][acq][regime]["seeds"], results[name]["random"][regime][
                    "seeds"]
                gaps = [area_under_curve(acquired, mine[s]["accuracy"])
                        - area_under_curve(acquired, rand[s]["accuracy"]) for s in mine]
                mean = 100 * sum(gaps) / len(gaps)
                wins = sum(g > 0 for g in gaps)
                rows.append({"method": name, "acquisition": acq, "regime": regime,
                             "AUC − random (points)": mean, "seeds it wins": f"{wins} of "
                             f"{len(gaps)}", "beats random": "yes" if wins == len(gaps) else
                             "no" if wins == 0 else "mixed"})
    return [table("Does the acquisition beat random? (AUC difference, paired by seed)",
                  ["method", "acquisition", "regime", "AUC − random (points)", "seeds it wins",
                   "beats random"], rows,
                  note="AUC: mean test accuracy over the budget. Every seed starts both curves "
                       "from the same labelled set and pool. 'yes' / 'no': on every seed / on "
                       "none. " + _point_estimate_note(settings), digits=2)]


def _point_estimate_note(settings: Settings) -> str:
    """How to read a point estimate's (``map``'s) BALD and entropy-free rows."""
    if settings.pool_subset is None:
        return ("A point estimate's BALD is 0 everywhere: ties are broken with the random "
                "acquisition's seeded generator, so its BALD and random rows coincide.")
    return ("A point estimate's BALD is 0 everywhere, so its BALD curve acquires at random "
            "among each round's scored subset: the same distribution as random acquisition, "
            "another draw. Its gap to random is chance alone, a yardstick for the other rows.")


def _half_means(entry: dict) -> tuple[float, float]:
    """Mean accuracy over the first and the second half of the rounds (the mean curve)."""
    mean = entry["mean"]
    half = max(1, len(mean) // 2)
    return sum(mean[:half]) / half, sum(mean[half:]) / max(1, len(mean) - half)


def paper_claims(results: dict, names, settings: Settings, acquired: list[int]) -> list[dict]:
    """The qualitative claims of the paper's Fig. 4 and §4.3, each with our numbers and
    whether it holds here (``"yes"``, ``"partly"``, ``"no"``, or ``"not run"``)."""
    del acquired
    bhn, dropout, baseline = (PAPER_ROLES[k] for k in ("BHN", "MC dropout",
                                                       "MLP baseline (no dropout)"))
    acqs, regimes = settings.acquisitions, settings.regimes
    both = "warm" in regimes and "reinit" in regimes
    rows = []

    def verdict(flags):
        return "not run" if not flags else ("yes" if all(flags) else
                                            "partly" if any(flags) else "no")

    def claim(text, parts, flags):
        rows.append({"claim": text, "ours": "; ".join(parts) if parts else "not run",
                     "holds": verdict(flags)})

    others = [n for n in names if n != bhn]
    parts, flags = [], []
    if bhn in names and others and "warm" in regimes:
        for a in acqs:
            late = {n: _half_means(results[n][a]["warm"])[1] for n in names}
            best = max(others, key=late.get)
            flags.append(late[bhn] > late[best])
            parts.append(f"{a}: {bhn} late {100 * late[bhn]:.1f} vs best other {best} "
                         f"{100 * late[best]:.1f}")
    claim("Warm-started BHN outperforms the other methods after enough acquisitions "
          "(random and BALD)", parts, flags)

    parts, flags = [], []
    if bhn in names and others and "warm" in regimes:
        for a in acqs:
            early = {n: _half_means(results[n][a]["warm"])[0] for n in names}
            rest = sum(early[n] for n in others) / len(others)
            flags.append(early[bhn] < rest)
            parts.append(f"{a}: {bhn} early {100 * early[bhn]:.1f} vs others' mean "
                         f"{100 * rest:.1f}")
    claim("Warm-started BHN suffers at the beginning", parts, flags)

    parts, flags = [], []
    if bhn in names and both:
        for a in acqs:
            w, r = results[bhn][a]["warm"]["auc"], results[bhn][a]["reinit"]["auc"]
            flags.append(w > r)
            parts.append(f"{a}: AUC warm {100 * w:.1f} vs reinit {100 * r:.1f}")
    claim("Warm starting is essential for BHN (helps it)", parts, flags)

    parts, flags = [], []
    if others and both:
        for a in acqs:
            hurt = [n for n in others
                    if results[n][a]["warm"]["auc"] < results[n][a]["reinit"]["auc"]]
            flags += [n in hurt for n in others]
            parts.append(f"{a}: warm < reinit AUC for {len(hurt)} of {len(others)}"
                         + (f" ({', '.join(hurt)})" if hurt else ""))
    claim("Warm starting hurts the other methods' accuracy", parts, flags)

    parts, flags = [], []
    if both and names and settings.rounds >= 1:
        for a in acqs:
            steadier = [n for n in names if results[n][a]["warm"]["jitter"]
                        < results[n][a]["reinit"]["jitter"]]
            flags += [n in steadier for n in names]
            parts.append(f"{a}: warm curves steadier (smaller mean |Δ accuracy| per round) "
                         f"for {len(steadier)} of {len(names)}")
    claim("Warm starting improves stability for all methods", parts, flags)

    parts, flags = [], []
    if baseline in names and dropout in names:
        for a in acqs:
            for r in regimes:
                b, d = results[baseline][a][r]["auc"], results[dropout][a][r]["auc"]
                flags.append(b >= d - 0.01)
                parts.append(f"{a} {r}: {baseline} {100 * b:.1f} vs {dropout} {100 * d:.1f}")
    claim("The MLP baseline (no dropout) is competitive with MC dropout (AUC within 1 point "
          "or better)", parts, flags)
    return rows


def _figure(path: Path, results: dict, names, settings: Settings, acquired) -> None:
    """One panel per acquisition (rows) × regime (columns) as the paper's Fig. 4: test accuracy
    against the number acquired, one line per method, ± std over seeds as a band."""
    plt, sns = plotting()
    acqs, regimes = settings.acquisitions, settings.regimes
    palette = dict(zip(names, sns.color_palette("tab10", max(len(names), 1)), strict=False))
    fig, axes = plt.subplots(len(acqs), len(regimes), figsize=(5.2 * len(regimes),
                                                               3.6 * len(acqs)),
                             sharex=True, sharey=True, squeeze=False)
    x = torch.tensor(acquired, dtype=torch.float64)
    for i, a in enumerate(acqs):
        for j, r in enumerate(regimes):
            ax = axes[i, j]
            for name in names:
                e = results[name][a][r]
                mean = 100 * torch.tensor(e["mean"])
                std = 100 * torch.tensor(e["std"])
                ax.plot(x, mean, color=palette[name], lw=1.6, marker="." if len(x) < 12 else
                        None, label=name)
                if float(std.max()) > 0:
                    ax.fill_between(x, mean - std, mean + std, color=palette[name], alpha=0.15,
                                    lw=0)
            ax.set_title(f"{a}, {'warm start' if r == 'warm' else 're-initialised'}")
            if i == len(acqs) - 1:
                ax.set_xlabel("images acquired")
            if j == 0:
                ax.set_ylabel("test accuracy (%)")
    axes[0, -1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _report(payload: dict, figures: list[str]) -> str:
    """report.md: what was run, the tables, the paper's claims beside ours, the figure."""
    s = payload["settings"]
    z = s["zoo"]
    claims = payload["paper_claims"]
    misses = [c for c in claims if c["holds"] in ("no", "partly")]
    timing = [f"`{n}` {t['train_s']:.0f} s training ({t['steps']:,} steps in "
              f"{t['trainings']} trainings), {t['score_s']:.0f} s scoring"
              for n, t in payload["timing"].items()]
    return "\n".join([
        "# active-learning: BALD vs max-entropy vs random, warm start vs re-initialise",
        "",
        f"As Gal et al. (2017) and the Bayesian hypernetworks paper (§4.3, Fig. 4): "
        f"{payload['labelled'][0]} initial labelled MNIST training images "
        f"({s['initial_per_class']} per class, drawn with the seed), a pool of "
        f"{payload['pool_size']:,} random unlabelled training images (the paper: all of them; "
        f"a subset keeps scoring affordable on CPU), {s['acquire']} images acquired per round "
        f"for {s['rounds']} rounds (up to {payload['labelled'][-1]} labelled; the paper goes to "
        f"1,000). Acquisition by BALD or predictive entropy on {s['pool_samples']} MC samples "
        + (f"over a fresh random subset of {s['pool_subset']:,} pool images each round (as Gal "
           "et al.), " if s.get("pool_subset") else "over the whole pool, ")
        + "or at random. Each round trains "
        f"max({s['epochs_per_round']} epochs, {s['min_steps']} steps) (the paper: 50 epochs), "
        "with no validation-based selection, either continuing the previous model (warm: it "
        "has also had every earlier round's steps) or from a fresh one (reinit). "
        + (f"Net {payload['inputs']}-{'-'.join(map(str, z['hidden']))}-"
           f"{payload['labelled'][0] // s['initial_per_class']} (the paper uses Gal et al.'s "
           "CNN)" if s.get("net", "mlp") == "mlp" else "Gal et al.'s CNN (conv 4×4×32, conv "
           "4×4×32, max-pool 2, dense 128, dense 10; dropout by the method)")
        + f" by each method's classification recipe (Adam lr {z['lr']} unless the recipe sets "
        f"it, {z['lr_schedule'] or 'constant'} schedule per round, batch {z['batch_size']}, "
        f"gradients clipped at {z['clip_norm']}). Test "
        f"accuracy on {payload['test_examples']:,} test images with the same "
        f"{s['pool_samples']} samples. Seeds {payload['seeds']}.",
        "",
        render_tables(payload["tables"]),
        "The paper reports Fig. 4 only (curves to 1,000 acquisitions, averaged over 3 runs), "
        "no numbers. " + (
            "Where ours differ from its claims: " + "; ".join(
                f"\"{c['claim']}\" "
                f"{'holds only partly' if c['holds'] == 'partly' else 'does not hold'} here "
                f"({c['ours']})" for c in misses) + "."
            if misses else "Every claim that could be checked holds here."),
        "" if len(payload["acquired"]) > 20 else
        f"\nWith only {payload['acquired'][-1]} acquisitions, the \"after enough "
        "acquisitions\" claims cannot be judged from this run.\n",
        "" if s["min_steps"] >= ENOUGH_STEPS else
        f"At {s['min_steps']} steps a round, a re-initialised model is under-trained (a fresh "
        "net on 50 images reaches ~45–50% after 25 steps and ~62% after 400), so here warm "
        "start beats re-initialising largely by having trained longer.\n",
        *(["Left out: " + "; ".join(f"`{n}`: {why}" for n, why in
                                     payload["excluded"].items()) + ".", ""]
          if payload.get("excluded") else []),
        *[f"![{f}]({f})" for f in figures],
        "",
        "Time per method: " + "; ".join(timing) + "." + (
            f" {len(payload['reused'])} of the (method, seed) results were reused from an "
            "earlier run with the same settings (their times are that run's): " + ", ".join(
                f"`{r['method']}` seed {r['seed']}" for r in payload["reused"]) + "."
            if payload.get("reused") else ""),
        "",
        f"Training and scoring took {payload['compute_s']:.0f} s over every method and seed, "
        "reused results included.",
        "",
    ])
