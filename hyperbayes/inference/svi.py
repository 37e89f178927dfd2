"""The SVI training loop shared by every method: minibatches, device, seeds, clipping, schedules,
validation-based model selection and checkpoint/resume."""

from __future__ import annotations

import copy
import math
import numbers
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO
from tqdm.auto import tqdm

from ..models import noise
from . import checkpoint as ckpt
from . import distributed as dp
from . import trust
from .checks import check_count, check_data, check_positive
from .device import resolve_device, set_seed
from .elbo import ELBO
from .predict import predict

__all__ = ["fit", "FitResult", "as_xy", "validation_metrics", "default_loss", "make_adam"]


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        losses: the loss (negative ELBO estimate, full-data scale) at every step.
        validation: one dict per validation pass: ``step``, ``val_nll`` and, for classification,
            ``val_accuracy``.
        best_step: the step whose parameters were kept (the last step without validation).
        steps: number of optimization steps run in total (including any resumed ones).
        wall_time_s: seconds spent in this call.
        total_wall_time_s: seconds spent training over every call that contributed to this
            result (this one plus those recorded in a resumed checkpoint).
        device: the device trained on.
        resumed_from: the step a checkpoint resumed from, or None.
        warnings: why the fit should not be trusted as it is (see ``fit``'s ``warn``).
    """

    losses: list[float] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)
    best_step: int = 0
    steps: int = 0
    wall_time_s: float = 0.0
    total_wall_time_s: float = 0.0
    device: str = "cpu"
    resumed_from: int | None = None
    warnings: list[str] = field(default_factory=list)


def as_xy(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept a Split-like object (``.x``, ``.y``) or an ``(x, y)`` pair; validate it."""
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
    else:
        raise TypeError("data must have .x and .y (a hyperbayes Split) or be an (x, y) pair, got "
                        f"{type(data).__name__}")
    if not (torch.is_tensor(x) and torch.is_tensor(y)):
        raise TypeError("x and y must be torch tensors")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError("data is empty")
    for name, t in (("x", x), ("y", y)):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf values")
    return x, y


def default_loss(guide):
    """The guide's preferred ELBO (``guide.default_loss()``) or ``Trace_ELBO``."""
    make = getattr(guide, "default_loss", None)
    return make() if callable(make) else Trace_ELBO()


def validation_metrics(model, guide, x, y, num_samples: int = 10) -> dict[str, float]:
    """Validation NLL (and accuracy) of the posterior predictive with ``num_samples`` samples."""
    from . import metrics

    pred = predict(model, guide, x, num_samples)
    if pred.task == "classification":
        probs = pred.probs
        return {"val_nll": metrics.nll(probs, y), "val_accuracy": metrics.accuracy(probs, y)}
    return {"val_nll": -metrics.gaussian_log_likelihood(pred.f, y.reshape(-1), pred.noise_std)}


def _schedule(lr_schedule, total_steps: int) -> Callable[[int], float] | None:
    if lr_schedule is None or lr_schedule == "constant":
        return None
    if callable(lr_schedule):
        return lr_schedule
    if lr_schedule == "cosine":
        return lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total_steps) / total_steps))
    if lr_schedule == "linear":
        return lambda t: max(0.0, 1 - t / total_steps)
    if lr_schedule == "exponential":
        return lambda t: 0.01 ** (t / total_steps)
    raise ValueError(f"unknown lr_schedule {lr_schedule!r}; use None, 'cosine', 'linear', "
                     "'exponential' or a function step -> factor")


def make_adam(params, lr: float):
    """Adam, fused into one kernel where torch supports it (≈10× faster than the default on CPU
    for millions of parameters); the arithmetic is the same."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _param_groups(model, guide, lr: float, multipliers: dict[str, float]) -> list[dict]:
    """Optimizer parameter groups: the guide parameters matched by ``multipliers`` at their own
    learning rates, everything else at ``lr``."""
    by_factor: dict[float, list] = {}
    used = set()
    for name, p in guide.named_parameters():
        if not p.requires_grad:
            continue
        prefix = next((k for k in multipliers if name.startswith(k)), None)
        if prefix is not None:
            used.add(prefix)
        by_factor.setdefault(multipliers[prefix] if prefix else 1.0, []).append(p)
    unused = [k for k in multipliers if k not in used]
    if unused:
        names = [n for n, _ in guide.named_parameters()][:8]
        raise ValueError(f"lr_multipliers prefixes {unused} match no guide parameter (names "
                         f"look like {names})")
    for factor in multipliers.values():
        if not factor > 0:
            raise ValueError(f"lr_multipliers must be positive, got {factor}")
    rest = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": rest + by_factor.pop(1.0, []), "lr": lr}]
    groups += [{"params": ps, "lr": lr * f} for f, ps in by_factor.items()]
    return [g for g in groups if g["params"]]


def _kl_schedule(kl_schedule, total_steps: int):
    if kl_schedule is None or callable(kl_schedule):
        return kl_schedule
    if kl_schedule == "warmup":
        return lambda t: min(1.0, t / max(1.0, total_steps / 3))
    if kl_schedule == "temper":
        return lambda t: 1000.0 ** max(0.0, 1 - t / (0.7 * total_steps))
    raise ValueError(f"unknown kl_schedule {kl_schedule!r}; use 'warmup', 'temper' or a "
                     "function step -> weight")


def _describe(setting):
    """A comparable record of a setting: plain values as they are, callables by name."""
    if callable(setting):
        return f"callable {getattr(setting, '__qualname__', type(setting).__qualname__)}"
    if isinstance(setting, dict):
        return {str(k): _describe(v) for k, v in sorted(setting.items())}
    # plain Python numbers: a NumPy scalar would make the checkpoint unloadable with
    # weights_only=True
    if isinstance(setting, numbers.Integral) and not isinstance(setting, bool):
        return int(setting)
    if isinstance(setting, numbers.Real) and not isinstance(setting, bool):
        return float(setting)
    return setting


def _loss_record(loss) -> str:
    """The loss's class and, where the class defines one, its repr (its settings)."""
    if type(loss).__repr__ is object.__repr__:
        return type(loss).__qualname__
    return f"{type(loss).__qualname__}: {loss!r}"


def _run_record(model, guide, loss, x, y, settings: dict) -> dict:
    """What a checkpoint must match to be resumed: the training settings, a fingerprint of the
    data and the model's and guide's structure."""
    return {"settings": {k: _describe(v) for k, v in settings.items()} | {
                "loss": _loss_record(loss)},
            "data": ckpt.fingerprint(x, y),
            "structure": {"model": type(model).__qualname__, "guide": type(guide).__qualname__}}


def _resume_state(checkpoint, record, total_steps: int, resume, map_location) -> dict | None:
    """The checkpoint's state to resume from (on ``map_location``), checked, or None when
    there is none."""
    if checkpoint is None or not Path(checkpoint).exists():
        return None
    state = ckpt.load(checkpoint, map_location=map_location)
    _check_resume(checkpoint, state, record, total_steps, resume)
    return state


def _cuda_rng_of(saved, device: torch.device) -> torch.Tensor:
    """The CUDA generator state to resume ``device`` with: the one saved (older checkpoints
    saved every visible device's; then the saving process's own, its device's index)."""
    if isinstance(saved, list | tuple):
        saved = saved[device.index if device.index is not None and device.index < len(saved)
                      else 0]
    return saved.cpu()


def _check_resume(path, state: dict, record: dict, total_steps: int, resume) -> None:
    """Refuse to resume a checkpoint trained with other settings, data or structure."""
    saved = state.get("run")
    if resume == "force":
        return
    if saved is None:
        raise ckpt.CheckpointError(
            f"{path} records no training settings (written by an older hyperbayes): pass "
            "resume='force' to continue from it anyway, or delete it")
    diffs = []
    for key in sorted(set(saved["settings"]) | set(record["settings"])):
        before, now = saved["settings"].get(key), record["settings"].get(key)
        if before != now:
            diffs.append(f"{key}: {before!r} in the checkpoint, {now!r} now")
    if saved["data"] != record["data"]:
        diffs.append("the training data differ (another data set, subset or order)")
    for part in ("model", "guide"):
        if saved["structure"][part] != record["structure"][part]:
            diffs.append(f"{part}: {saved['structure'][part]} in the checkpoint, "
                         f"{record['structure'][part]} now")
    if int(state["step"]) > total_steps:
        diffs.append(f"steps: the checkpoint has already trained {int(state['step'])} steps, "
                     f"more than the {total_steps} asked for")
    if diffs:
        raise ckpt.CheckpointError(
            f"{path} was trained differently, so resuming would not give what this call asks "
            f"for: {'; '.join(diffs)}. Use another checkpoint file, delete this one, or pass "
            "resume='force' to continue from it regardless")


def _state(model, guide):
    return {"model": copy.deepcopy(model.state_dict()), "guide": copy.deepcopy(guide.state_dict())}


def fit(model, guide, data, *, steps: int | None = None, epochs: float | None = None,
        batch_size: int | None = None, lr: float = 1e-3, loss=None, optimizer: str = "adam",
        clip_norm: float | None = None, lr_multipliers: dict[str, float] | None = None,
        lr_schedule=None, val=None, val_every: int | None = None,
        val_samples: int = 10, select_best: bool = True, select_by: str = "val_nll",
        checkpoint: str | Path | None = None,
        checkpoint_every: int | None = None, resume: bool | str = True, device="auto",
        seed: int | None = 0, progress: bool | None = None, callback=None, kl_schedule=None,
        validate: bool = True, warn: bool | str = True,
        distributed: bool | str = "auto", compile: bool | str = "auto") -> FitResult:
    """Fit ``guide`` (and any parameters of ``model``) by stochastic variational inference.

    Args:
        model, guide: a hyperbayes model (e.g. :class:`~hyperbayes.models.BNN`) and a guide.
        data: training data: a Split (``.x``, ``.y``), a Dataset (its ``train``; its ``val``
            becomes the validation split) or an ``(x, y)`` pair.
        steps / epochs: how long to train (give one; epochs × ⌈N / batch_size⌉ steps).
        batch_size: minibatch size (default: full batch). The likelihood is scaled by
            N / batch_size through the model's data plate.
        lr, optimizer: learning rate and ``"adam"`` | ``"sgd"`` (momentum 0.9).
        loss: an ELBO with ``differentiable_loss(model, guide, *args)`` (default: the guide's).
        clip_norm: clip the global gradient norm to this value.
        lr_multipliers: ``{name prefix: factor}``: guide parameters whose name (as in
            ``guide.named_parameters()``) starts with a prefix train at ``factor × lr`` (e.g.
            ``{"flow_layers": 0.1}`` for a flow's coupling networks); the first matching prefix
            wins. A prefix that matches nothing is an error.
        lr_schedule: None, ``"cosine"``, ``"linear"``, ``"exponential"`` or ``step -> factor``.
        val, val_every, val_samples: validation data (Split or pair), how often to evaluate
            (default: 20 times per run) and how many MC samples to use.
        select_best: at the end keep the parameters of the best validation pass.
        select_by: which validation metric decides "best": ``"val_nll"`` (lowest) or, for
            classification, ``"val_accuracy"`` (highest; ties keep the earlier pass).
        checkpoint, checkpoint_every, resume: a file to save progress to atomically every
            ``checkpoint_every`` steps (and at the end); with ``resume`` an existing file is
            verified and training continues from it. The checkpoint records the settings it
            was trained with, a fingerprint of the data and the model's and guide's types:
            resuming with any of them changed is a CheckpointError naming the differences
            (more ``steps`` are fine unless a schedule spans the run);
            ``resume="force"`` continues from the file regardless. A loss with state (the
            adversarial loss's discriminator) is saved and resumed too.
        device: ``"auto"`` | ``"cpu"`` | ``"cuda"``; model and guide are moved there.
        seed: seeds Python, NumPy, torch and Pyro (None leaves them alone).
        progress: show a tqdm bar (default: only on a terminal).
        callback: ``callback(step, loss)`` after every step; return True to stop early.
        kl_schedule: ``step -> β`` setting ``loss.kl_weight`` before every step (losses with a
            ``kl_weight``, e.g. :class:`~hyperbayes.inference.ELBO`): ``"warmup"`` rises
            linearly from 0 to 1 over the first third of training; ``"temper"`` falls
            geometrically from 1000 to 1 over the first 70% (a tempered likelihood, which helps
            flexible guides keep several posterior modes). The loss's weight is restored after.
        validate: run Pyro's distribution validation on the first step (then off, for speed).
        warn: after training, check that the loss did not rise over the last 20% of the steps
            and that the guide's spread did not collapse
            (:mod:`hyperbayes.inference.trust`); each failure is a
            :class:`~hyperbayes.inference.trust.PosteriorWarning` and a line in
            ``FitResult.warnings`` (``"record"``: the line only; False: no checks). A loss that
            becomes NaN or inf stops training with a FloatingPointError.
        distributed: data parallelism over ``torch.distributed`` (``"auto"``: when the process
            was launched by ``torchrun`` with more than one process; True: always; False:
            never). Every process passes the same data and settings; each minibatch of
            ``batch_size`` (global) examples is split into one contiguous shard per process,
            the gradients are summed in one all-reduce per step, and every process takes the
            same step one process would take on the whole minibatch: global draws (weights,
            codes) come from one random stream shared by all ranks, per-example draws (local
            reparameterization, MC dropout) are drawn for the whole minibatch and sliced
            (:mod:`hyperbayes.models.noise`). Rank 0 alone writes checkpoints, shows progress
            and warns; a checkpoint resumes with any number of processes. See
            :mod:`hyperbayes.inference.distributed`.
        compile: run the step as one traced and compiled graph
            (:class:`~hyperbayes.inference.compiled.CompiledStep`: the same loss, gradients and
            random draws as the eager step, without Pyro's per-step Python). True: from the
            second step; ``"auto"``: when the eager steps measured over the first
            ``COMPILE_PROBE_STEPS`` leave more than ``COMPILE_AUTO_SECONDS`` of training, where
            the minute of tracing and compiling pays; False: never. A loss that cannot be
            compiled (a stateful loss such as the adversarial one, a ``kl_schedule``, a step
            whose Python reads tensor values) runs eagerly: with True a
            :class:`~hyperbayes.inference.compiled.CompileFallback` warning says why.

    Returns:
        A :class:`FitResult`. The model and guide are trained in place.
    """
    start_time = time.perf_counter()
    if warn not in (True, False, "record"):
        raise ValueError(f"warn must be True, False or 'record'; got {warn!r}")
    if select_by not in ("val_nll", "val_accuracy"):
        raise ValueError(f"select_by must be 'val_nll' or 'val_accuracy', got {select_by!r}")
    if hasattr(data, "train") and hasattr(data, "test"):
        if val is None and getattr(data, "val", None) is not None:
            val = data.val
        data = data.train
    x, y = as_xy(data)
    checkable = hasattr(model, "net") and hasattr(model, "likelihood")  # a hyperbayes model
    if checkable:
        x, y = check_data(model, x, y, "data")
    n = len(x)
    lr = check_positive("lr", lr)  # a plain float: it is saved in checkpoints
    batch_size = n if batch_size is None else min(check_count("batch_size", batch_size), n)
    steps_per_epoch = math.ceil(n / batch_size)
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps= or epochs=")
    if steps is not None:
        total_steps = check_count("steps", steps)
    else:
        total_steps = max(1, math.ceil(check_positive("epochs", epochs) * steps_per_epoch))
    if val is not None:
        val_x, val_y = as_xy(val)
        if checkable:
            val_x, val_y = check_data(model, val_x, val_y, "val")

    set_seed(seed)
    device = resolve_device(device)
    if distributed not in (True, False, "auto"):
        raise ValueError(f"distributed must be True, False or 'auto', got {distributed!r}")
    if compile not in (True, False, "auto"):
        raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
    group = None
    if distributed is True or (distributed == "auto" and dp.launched()):
        device = dp.local_device(device)
        group = dp.setup(device)
        _check_data_parallel(model, n, batch_size, group.world_size)
    model.to(device)
    guide.to(device)
    x, y = x.to(device), y.to(device)
    if val is not None:
        val_x, val_y = val_x.to(device), val_y.to(device)
        val_every = val_every or max(1, total_steps // 20)
    loss = loss if loss is not None else default_loss(guide)
    if getattr(guide, "lrt_standin_sites", None) and not isinstance(loss, ELBO):
        raise ValueError("a MeanField guide with local_reparameterization needs "
                         f"hb.inference.ELBO (closed-form KL), not {type(loss).__name__}")
    if not any(True for _ in guide.parameters()):
        # Pyro autoguides create their parameters on the first call: make them exist now.
        with torch.no_grad(), pyro.poutine.block():
            guide(x[:batch_size], y[:batch_size], n)
    params = [p for p in list(model.parameters()) + list(guide.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("neither the model nor the guide has trainable parameters")
    if group is not None:
        dp.check_same(ckpt.fingerprint(x.cpu(), y.cpu()), "training data", device)
        dp.broadcast_state([model, guide], device)
    groups = _param_groups(model, guide, lr, lr_multipliers or {})
    if optimizer == "adam":
        optim = make_adam(groups, lr)
    elif optimizer == "sgd":
        optim = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; use 'adam' or 'sgd'")
    factor = _schedule(lr_schedule, total_steps)
    kl_weight_at = _kl_schedule(kl_schedule, total_steps)
    if kl_weight_at is not None and not hasattr(loss, "kl_weight"):
        raise ValueError(f"kl_schedule needs a loss with a kl_weight (hb.inference.ELBO), got "
                         f"{type(loss).__name__}")
    initial_kl_weight = getattr(loss, "kl_weight", None)
    # the weight of the objective the trained point maximizes (a schedule's last one)
    final_kl_weight = (float(kl_weight_at(total_steps - 1)) if kl_weight_at is not None
                       else initial_kl_weight)
    check = getattr(guide, "check_kl_weight", None)
    if callable(check):  # a posterior built from that objective's curvature (Laplace)
        check(final_kl_weight)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optim, factor) if factor else None
    order = torch.Generator().manual_seed(0 if seed is None else int(seed))

    result = FitResult(device=str(device))
    best_metric, best_state = math.inf, None
    first_step = 0
    resumed = None
    earlier_wall_time = 0.0
    if resume not in (True, False, "force"):
        raise ValueError(f"resume must be True, False or 'force', got {resume!r}")
    record = None
    if checkpoint is not None:
        record = _run_record(model, guide, loss, x, y, {
            "lr": lr, "seed": seed, "batch_size": batch_size, "optimizer": optimizer,
            "clip_norm": clip_norm, "lr_multipliers": lr_multipliers or {},
            "lr_schedule": lr_schedule, "kl_schedule": kl_schedule,
            # a schedule over the whole run changes with its length; otherwise a checkpoint
            # can be continued to more steps
            "scheduled_steps": total_steps if (factor or kl_weight_at) else None})
    state = None
    if resume and group is None:
        state = _resume_state(checkpoint, record, total_steps, resume, device)
    elif resume:  # rank 0's checkpoint decides for every rank (theirs may be elsewhere or none)
        state = dp.broadcast_resume(
            lambda: _resume_state(checkpoint, record, total_steps, resume, "cpu"), device)
    if state is not None:
        resumed = state
        for part, module in (("model", model), ("guide", guide)):
            ckpt.load_into(checkpoint, part, module, state[part],
                           f"it cannot be resumed into this {part}")
        if state.get("loss") and hasattr(loss, "load_state_dict"):
            loss.load_state_dict(state["loss"], guide, device)
        optim.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        # RNG states are CPU byte tensors, whatever map_location moved the rest to
        order.set_state(state["order_rng"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        saved_cuda = state.get("cuda_rng")
        if device.type == "cuda" and saved_cuda is not None and len(saved_cuda):
            torch.cuda.set_rng_state(_cuda_rng_of(saved_cuda, device), device)
        first_step = result.resumed_from = int(state["step"])
        result.losses = list(state["losses"])
        result.validation = list(state["validation"])
        best_metric = float(state["best_metric"])
        best_state = state.get("best_state")
        result.best_step = int(state["best_step"])
        earlier_wall_time = float(state.get("wall_time_s", 0.0))

    def save_checkpoint(step):
        if group is not None and group.rank != 0:
            return  # rank 0 writes: every rank holds the same state
        ckpt.save(checkpoint, {
            "model": model.state_dict(), "guide": guide.state_dict(),
            "optimizer": optim.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "order_rng": order.get_state(), "torch_rng": torch.get_rng_state(), "step": step,
            # this device's stream only: every rank sets its own device to it on resume
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "perm": perm.cpu(), "position": position,
            "losses": result.losses, "validation": result.validation,
            "best_metric": best_metric, "best_state": best_state, "best_step": result.best_step,
            "wall_time_s": earlier_wall_time + time.perf_counter() - start_time,
            "run": record,
            "loss": loss.state_dict() if hasattr(loss, "state_dict") else None,
        })

    if resumed is not None:  # continue inside the epoch the checkpoint was taken in
        perm, position = resumed["perm"].to(device), int(resumed["position"])
    else:
        perm, position = torch.randperm(n, generator=order).to(device), 0
    pending: list[torch.Tensor] = []  # losses still on the device, moved in batches

    def flush_losses():
        if pending:
            result.losses.extend(torch.stack(pending).tolist())
            pending.clear()

    spread_before = None
    if warn and total_steps > first_step:
        model.eval()
        try:
            spread_before = trust.guide_spread(model, guide, _spread_draws(model))
        except (RuntimeError, ValueError, KeyError, TypeError, NotImplementedError):
            spread_before = None  # a guide that cannot be sampled before its first step
    other_rank = group is not None and group.rank != 0  # progress from rank 0 only
    bar = tqdm(total=total_steps, initial=first_step,
               disable=True if other_rank else None if progress is None else not progress,
               desc="fit", leave=False, dynamic_ncols=True)
    model.train()
    guide.train()
    step = first_step
    stepper = _Stepper(loss, model, guide, compile, kl_schedule, total_steps, first_step, group,
                       device)
    try:
        for step in range(first_step + 1, total_steps + 1):
            if position >= n:
                perm, position = torch.randperm(n, generator=order).to(device), 0
            idx = perm[position:position + batch_size]
            position += batch_size
            optim.zero_grad(set_to_none=True)
            if kl_weight_at is not None:
                loss.kl_weight = float(kl_weight_at(step - 1))
            # Pyro's argument/support validation on the first step only: it catches shape and
            # support mistakes, and costs a full pass over every weight tensor on each step.
            with pyro.validation_enabled(validate and step == first_step + 1):
                if group is None:
                    xb, yb = (x, y) if batch_size == n else (x[idx], y[idx])
                    value = stepper(step, xb, yb, n)
                else:
                    value = _data_parallel_step(stepper, step, x, y, idx, n, group, params)
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            optim.step()
            if scheduler is not None:
                scheduler.step()
            pending.append(value.detach())
            if len(pending) >= 50 or step == total_steps:
                flush_losses()
                if not math.isfinite(result.losses[-1]):
                    raise FloatingPointError(
                        f"the loss became {result.losses[-1]} at step {step}; lower lr or set "
                        "clip_norm")
                bar.set_postfix(loss=f"{result.losses[-1]:.4g}", refresh=False)
            bar.update(1)
            if val is not None and (step % val_every == 0 or step == total_steps):
                metrics = validation_metrics(model, guide, val_x, val_y, val_samples)
                result.validation.append({"step": step, **metrics})
                if select_by not in metrics:
                    raise ValueError(f"select_by={select_by!r} is not a validation metric here; "
                                     f"choose from {sorted(metrics)}")
                # stored as a number to minimize: accuracy enters negated
                current = -metrics[select_by] if select_by == "val_accuracy" else metrics[
                    select_by]
                if current < best_metric:
                    best_metric, result.best_step = current, step
                    best_state = _state(model, guide) if select_best else None
            stop = callback is not None and callback(step, value.detach())
            if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                flush_losses()
                save_checkpoint(step)
            if stop:
                break
    finally:
        bar.close()
        if kl_weight_at is not None:
            loss.kl_weight = initial_kl_weight
    flush_losses()
    result.steps = step
    if val is None:
        result.best_step = step
    if checkpoint is not None:  # the last state, so that a longer run can resume exactly
        save_checkpoint(step)
    if val is not None and select_best and best_state is not None:
        model.load_state_dict(best_state["model"])
        guide.load_state_dict(best_state["guide"])
    finish = getattr(guide, "after_fit", None)
    if callable(finish):  # a posterior built around the trained point (Laplace, SWAG)
        finish(model, x, y, loss=loss, batch_size=batch_size, seed=seed, steps=step,
               kl_weight=final_kl_weight)
    pyro.clear_param_store()
    if warn:
        problems = [trust.loss_trend_problem(result.losses)]
        if spread_before is not None:
            problems.append(trust.spread_collapse_problem(
                spread_before, trust.guide_spread(model, guide, _spread_draws(model))))
        result.warnings = [p for p in problems if p]
        if warn != "record" and (group is None or group.rank == 0):
            trust.emit(result.warnings)
    result.wall_time_s = time.perf_counter() - start_time
    result.total_wall_time_s = earlier_wall_time + result.wall_time_s
    return result


def _check_data_parallel(model, n: int, batch_size: int, world: int) -> None:
    """Refuse, before any work, what data parallelism cannot split evenly or exactly."""
    if batch_size < world:
        raise ValueError(f"batch_size={batch_size} is smaller than the {world} processes: each "
                         "process needs at least one example of every minibatch")
    last = n % batch_size
    if 0 < last < world:
        raise ValueError(f"the last minibatch of each epoch has {last} examples ({n} % "
                         f"batch_size {batch_size}), fewer than the {world} processes: choose a "
                         "batch_size that divides the data or leaves at least one example each")
    if getattr(model, "noise_groups", 1) > 1:
        raise ValueError("noise_groups > 1 groups the examples of a minibatch, which data "
                         "parallelism splits: train it in one process")
    modules = list(model.modules())
    dropout = [type(m).__name__ for m in modules
               if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0]
    norms = [type(m).__name__ for m in modules
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if (dropout or norms) and dp.rank() == 0:
        warnings.warn(
            f"data parallelism with {', '.join(sorted(set(dropout + norms)))} in the module: "
            "these act on each process's shard of the minibatch (their own dropout draws, "
            "batch statistics per shard), so K processes do not take exactly the step one "
            "process would; the library's own noise (weights, MC dropout of with_dropout, "
            "likelihood noise) is drawn for the whole minibatch and sharded", stacklevel=3)


def _data_parallel_step(stepper, step: int, x, y, idx, n: int, group, params) -> torch.Tensor:
    """One step's loss and gradients on this rank's shard of minibatch ``idx``, summed over the
    ranks: rank r's loss KL + (N/b_r)·ℓ_r weighted by b_r/B adds up to KL + (N/B)·Σ ℓ_r, the
    loss of the whole minibatch (the KL once, as the same draws are made on every rank)."""
    batch = len(idx)
    start, stop = dp.shard_bounds(batch, group.rank, group.world_size)
    local = idx[start:stop]
    with noise.shard(batch, start, stop):
        value = stepper(step, x[local], y[local], n)
    return dp.all_reduce_step(params, value, (stop - start) / batch)


#: eager steps timed before ``compile="auto"`` decides (after the first, validated step)
COMPILE_PROBE_STEPS = 10
#: ``compile="auto"`` compiles when the remaining eager steps would take longer than this
COMPILE_AUTO_SECONDS = 120.0


class _Stepper:
    """The loss and its gradients for one step: eagerly, or by a compiled graph once
    ``compile`` says so (see :func:`fit`)."""

    def __init__(self, loss, model, guide, compile, kl_schedule, total_steps: int,
                 first_step: int, group, device: torch.device):
        from . import compiled

        self.loss, self.model, self.guide = loss, model, guide
        self.mode, self.total_steps, self.group = compile, total_steps, group
        self.device = device
        self.compiled = None
        self.decide_at = None  # the step at which compile is switched on (or not)
        self.probe_from = first_step + 2  # "auto" times the steps after the validated first
        self.times: list[float] = []
        reason = compiled.unsupported_reason(loss, kl_schedule) if compile else None
        self.warns = group is None or group.rank == 0  # one process says it, not K
        if reason is not None:
            if compile is True and self.warns:
                warnings.warn(f"compile=True: {reason}; running the eager step",
                              compiled.CompileFallback, stacklevel=3)
        elif compile is True:
            self.decide_at = self.probe_from
        elif compile == "auto":
            self.decide_at = self.probe_from + COMPILE_PROBE_STEPS

    def _switch_on(self, step: int) -> bool:
        if self.mode is True:
            return True
        remaining = (self.total_steps - step + 1) * statistics.median(self.times)
        want = remaining > COMPILE_AUTO_SECONDS
        if self.group is not None:  # every rank takes the same decision: rank 0's
            # on the training device: NCCL broadcasts CUDA tensors only
            flag = torch.tensor([float(want)], device=self.device)
            torch.distributed.broadcast(flag, src=0)
            want = bool(flag.item())
        return want

    def __call__(self, step: int, x, y, n) -> torch.Tensor:
        if step == self.decide_at:
            self.decide_at = None
            if self._switch_on(step):
                from .compiled import CompiledStep

                self.compiled = CompiledStep(self.loss, self.model, self.guide)
        if self.compiled is not None:
            try:
                return self.compiled(x, y, n)
            except Exception as err:  # noqa: BLE001 - any failure to trace or compile
                from .compiled import CompileFallback

                self.compiled = None
                for p in list(self.model.parameters()) + list(self.guide.parameters()):
                    p.grad = None
                if self.warns:
                    warnings.warn(f"the step could not be compiled ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0][:300]}); running it eagerly",
                                  CompileFallback, stacklevel=3)
        timing = self.mode == "auto" and self.decide_at is not None and step >= self.probe_from
        start = time.perf_counter() if timing else 0.0
        value = self.loss.differentiable_loss(self.model, self.guide, x, y, n)
        value.backward()
        if timing:
            self.times.append(time.perf_counter() - start)
        return value


def _spread_draws(model) -> int:
    """Guide draws for the spread check: 16, fewer for big nets (≤ 2·10⁷ floats)."""
    params = max(1, getattr(getattr(model, "net", None), "num_params", 1))
    return max(2, min(16, 20_000_000 // params))
