"""Trained models for the uncertainty suite: any registered method on MNIST by its recipe.

Every task of the suite (``calibration``, ``ood``, ``unseen-class``, ``adversarial``,
``active-learning``) gets its models here and never names a method: :func:`train` asks the
method registry for the method's ``"classification"`` recipe (net, prior, build options, fit
settings; see :class:`hyperbayes.methods.Recipe`) and trains it with one shared schedule. A new
method that registers a recipe joins every task.

Trained models are checkpointed under a name tied to everything that shapes training, so tasks
run one after another (or ``hyperbayes suite``) train each method once and reuse it.

Example::

    from hyperbayes.experiments import zoo

    settings = zoo.ZooSettings.quick()
    train, val, test = zoo.mnist_splits(settings)
    fitted = zoo.train("meanfield", settings, train, val, device="cpu", seed=0,
                       checkpoint_dir="results/zoo")
    probs = zoo.sample_probs(fitted, test.x, 20)   # (20, N, 10)
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .. import datasets, methods
from ..datasets import Split
from ..inference import predict, resolve_device
from ..models import Categorical, priors
from . import common

__all__ = ["ZooSettings", "TaskSettings", "Trained", "build", "train", "train_all", "check_methods",
           "mnist_splits", "sample_probs", "suite_methods", "default_checkpoints",
           "checkpoint_name", "with_options"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZooSettings:
    """How every method is trained for the suite (the same for all of them).

    ``hidden`` are the MLP's hidden widths (784-``hidden``-10); a recipe may add weight norm or
    replace the prior. ``lr`` applies unless the method's recipe sets its own (the MetaPrior's
    1e-2). ``train_limit`` / ``eval_limit`` keep the first examples only (quick runs).
    ``options`` maps a method to build options laid over its recipe (``--option
    METHOD.KEY=VALUE``; see :func:`with_options`); they are part of that method's checkpoint
    name only.
    """

    hidden: tuple = (400, 400)
    epochs: float = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str | None = "cosine"
    clip_norm: float | None = 10.0
    val_samples: int = 10
    validations: int = 10
    test_samples: int = 100
    train_limit: int | None = None
    eval_limit: int | None = None
    options: dict = field(default_factory=dict)

    @classmethod
    def quick(cls) -> ZooSettings:
        """Small nets on 1,000 MNIST images, 10 epochs (80 steps), 500 evaluation images."""
        return cls(hidden=(64,), epochs=10, val_samples=4, validations=2, test_samples=20,
                   train_limit=1000, eval_limit=500)

    @classmethod
    def smoke(cls) -> ZooSettings:
        """Tiny settings for tests: 16 hidden units, 200 images, 2 epochs, 4 samples."""
        return cls(hidden=(16,), epochs=2, val_samples=2, validations=1, test_samples=4,
                   train_limit=200, eval_limit=100)


@dataclass(frozen=True)
class TaskSettings:
    """Base of a task's settings whose sizes are the zoo's: ``quick()`` and ``smoke()`` use
    :meth:`ZooSettings.quick` / :meth:`ZooSettings.smoke`, so tasks run together train each
    method once. Subclasses add their own fields (with defaults)."""

    zoo: ZooSettings = field(default_factory=ZooSettings)

    @classmethod
    def quick(cls):
        """The zoo's quick settings: 784-64-10 on 1,000 images, 500 test images, 20 samples."""
        return cls(zoo=ZooSettings.quick())

    @classmethod
    def smoke(cls):
        """Tiny settings for tests: 16 hidden units, 200 images, 2 epochs, 4 samples."""
        return cls(zoo=ZooSettings.smoke())


# settings that change what is evaluated, not what is trained (eval_limit sizes the validation
# set that picks the kept parameters, so it is part of a checkpoint's name); a method's own
# options enter its checkpoint name on their own
_EVAL_ONLY = ("test_samples", "options")


def with_options(settings, overrides: dict | None):
    """``settings`` (a :class:`ZooSettings` or a task's settings holding one as ``zoo``) with
    ``overrides``
    (``{method: {option: value}}``) laid over the zoo's method options. Each overridden method
    is built once on a tiny net first, so an unknown method or option fails here, before any
    training."""
    if not overrides:
        return settings
    for name, options in overrides.items():
        try:
            methods.setup(name, "classification", [4, 3, 2], priors.Normal(1.0), Categorical(),
                          **options)
        except TypeError as err:
            raise ValueError(f"--option {name}: {err}") from err
    if not isinstance(settings, ZooSettings):  # a task's settings, holding the zoo's
        return replace(settings, zoo=with_options(settings.zoo, overrides))
    merged = {**settings.options}
    for name, options in overrides.items():
        merged[name] = {**merged.get(name, {}), **options}
    return replace(settings, options=merged)


@dataclass
class Trained:
    """One trained method: its model and guide, its fit result, whether a finished checkpoint
    was reused, and the fit options its recipe chose."""

    name: str
    model: object
    guide: object
    loss: object
    result: object
    reused: bool
    fit_options: dict
    device: torch.device

    @property
    def train_s(self) -> float:
        """Training wall time, summed over resumes."""
        return float(self.result.total_wall_time_s)


def suite_methods() -> list[str]:
    """Every registered base method, variants left out (the suite runs them all unless told
    otherwise)."""
    return methods.available(variants=False)


def check_methods(methods_to_run) -> list[str]:
    """The method names to run (None: every registered one); unknown names raise ValueError
    listing the known ones."""
    names = list(suite_methods() if methods_to_run is None else methods_to_run)
    for name in names:
        methods.get(name)
    return names


def task_settings(settings_type: type, settings, quick: bool, overrides: dict | None,
                  methods_to_run) -> tuple:
    """The start of every suite task: its settings (``settings``, else the type's quick or full
    ones) with ``overrides`` laid over (:func:`with_options`), and the method names to run
    (:func:`check_methods`); both checked before any work."""
    settings = settings or (settings_type.quick() if quick else settings_type())
    return with_options(settings, overrides), check_methods(methods_to_run)


def train_all(names, settings: ZooSettings, train_split: Split, val: Split | None, *, device,
              seed: int, checkpoints, progress) -> dict[str, Trained]:
    """Train (or reuse the finished checkpoint of) every method in ``names``."""
    return {name: train(name, settings, train_split, val, device=device, seed=seed,
                        checkpoint_dir=checkpoints, progress=progress) for name in names}


def default_checkpoints(out: str | Path) -> Path:
    """Where a task writing to ``out`` keeps trained models: ``out/../zoo``, shared by tasks."""
    return Path(out).parent / "zoo"


def mnist_splits(settings: ZooSettings, data=None) -> tuple[Split, Split, Split]:
    """(train, val, test) of MNIST (or of ``data``) after the settings' limits."""
    data = data if data is not None else datasets.load("mnist")
    train = data.train
    if settings.train_limit:
        train = train.subset(slice(0, min(settings.train_limit, len(train))))
    val, test = data.val, data.test
    if settings.eval_limit:
        val = val.subset(slice(0, min(settings.eval_limit, len(val))))
        test = test.subset(slice(0, min(settings.eval_limit, len(test))))
    return train, val, test


def checkpoint_name(name: str, settings: ZooSettings, seed: int, train: Split,
                    tag: str = "") -> str:
    """A file name tied to the method, its recipe, the training settings, seed and data (see
    :func:`~hyperbayes.experiments.common.checkpoint_key`)."""
    fields = {k: v for k, v in asdict(settings).items() if k not in _EVAL_ONLY}
    return common.checkpoint_name(name, fields, seed, train, tag=tag,
                                  options=settings.options.get(name))


def build(name: str, settings: ZooSettings, train_split: Split, *, seed: int = 0,
          num_classes: int = 10, net=None) -> tuple:
    """``(model, guide, loss, fit_options)`` of method ``name`` as :func:`train` builds it
    before training (``fit_options`` with the learning rate under ``"lr"``), untrained: e.g.
    to load a saved state into."""
    sizes = [math.prod(train_split.x.shape[1:]), *settings.hidden, num_classes]
    model, guide, loss, fit_options = methods.setup(
        name, "classification", sizes if net is None else net, priors.Normal(1.0),
        Categorical(), seed=seed, **settings.options.get(name, {}))
    return model, guide, loss, {"lr": settings.lr, **fit_options}


def train(name: str, settings: ZooSettings, train_split: Split, val: Split | None, *,
          device="auto", seed: int = 0, checkpoint_dir: str | Path | None = None,
          progress: bool | None = None, tag: str = "", epochs: float | None = None,
          warm_start: Trained | None = None, num_classes: int = 10, net=None) -> Trained:
    """Train method ``name`` on ``train_split`` as its classification recipe says.

    Args:
        name: a registered method (see :func:`hyperbayes.methods.available`).
        settings: the shared schedule.
        train_split, val: training data and validation data (the best validation accuracy's
            parameters are kept; None trains to the end).
        device, seed, progress: as in :func:`~hyperbayes.inference.fit`.
        checkpoint_dir: where to checkpoint (None: no checkpoint, always trains).
        tag: a label for the data (e.g. ``"without-3"``), part of the checkpoint name.
        epochs: overrides ``settings.epochs`` (active learning's rounds).
        warm_start: continue training this trained model (its model, guide and loss) instead of
            building a fresh one; ``name`` must match.
        num_classes: output width (default: 10, MNIST's).
        net: a ``torch.nn.Module`` to train instead of the MLP of ``settings.hidden`` (a user's
            architecture; the recipe adapts it, see :func:`hyperbayes.methods.setup`). Give it
            a ``tag`` naming the architecture, so its checkpoints are its own.
    """
    if net is not None and not tag:
        raise ValueError("a net other than the zoo's MLP needs a tag naming it (its "
                         "checkpoints must not be taken for the MLP's)")
    if warm_start is not None:
        if warm_start.name != name:
            raise ValueError(f"warm start from {warm_start.name!r} for method {name!r}")
        built = (warm_start.model, warm_start.guide, warm_start.loss, warm_start.fit_options)
    else:
        built = build(name, settings, train_split, seed=seed, num_classes=num_classes, net=net)
    path = None
    if checkpoint_dir is not None:
        path = Path(checkpoint_dir) / checkpoint_name(name, settings, seed, train_split, tag)
    fitted = common.train_method(
        name, "classification", None, None, None, train_split,
        epochs=settings.epochs if epochs is None else epochs, batch_size=settings.batch_size,
        lr=settings.lr, seed=seed, device=device, lr_schedule=settings.lr_schedule,
        clip_norm=settings.clip_norm, val=val, validations=settings.validations,
        val_samples=settings.val_samples, checkpoint=path, progress=progress, built=built)
    if path is not None:  # a suite task's model (active learning's rounds are logged there)
        log.info("%s: %s (%d steps, %.0f s of training) in %s", name,
                 "finished checkpoint reused" if fitted.reused else "trained",
                 fitted.result.steps, fitted.result.total_wall_time_s, path)
    return Trained(name, fitted.model, fitted.guide, fitted.loss, fitted.result, fitted.reused,
                   fitted.fit_options, resolve_device(device))


def sample_probs(fitted: Trained, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Class probabilities of ``num_samples`` posterior draws at ``x``: (S, N, C), on the CPU."""
    with torch.no_grad():
        return predict(fitted.model, fitted.guide, x.to(fitted.device), num_samples).probs.cpu()
