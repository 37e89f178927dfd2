"""Shared plumbing of experiments: output folders, atomic JSON, figures and markdown reports."""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import platform
import tempfile
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..files import atomic_write

__all__ = ["ExperimentResult", "trust_lines", "write_json", "write_text", "markdown_table",
           "machine_info", "recipes_used", "plotting", "data_fingerprint", "checkpoint_key",
           "checkpoint_name", "experiment", "output_dir", "settings_class", "apply_settings",
           "write_metrics", "methods_table", "parse_value", "single_method", "train_method",
           "Fitted", "header", "finish", "run_line"]


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`hyperbayes.files.atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text.encode()))


def output_dir(out: str | Path, create: bool = True) -> Path:
    """``out`` as a folder results can be written into, checked before any work: a path that
    is a file, or a folder that cannot be created or written, raises ValueError. With
    ``create=False`` nothing is made on disk (the nearest existing parent is checked)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: give a folder for the results")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write results into {out}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write results into {out}: {existing} is not writable")
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot write results into {out}: {err.strerror or err}") from err
    return out


def experiment(run):
    """Decorate an experiment's ``run`` function: its output folder (``out``) and ``device`` are
    checked before any work, so a bad ``--out`` or an absent GPU fails at once, not after the
    run. Under ``torchrun`` every process runs the experiment (each ``fit`` is data-parallel)
    and rank 0 alone writes into ``out``; the others write into a temporary folder that is
    removed afterwards, with the checkpoints they keep beside it by default (what to resume or
    reuse is rank 0's decision: :func:`~hyperbayes.inference.distributed.rank0_decides`)."""
    signature = inspect.signature(run)

    @functools.wraps(run)
    def checked(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs)
        from ..inference import distributed, resolve_device

        resolve_device(bound.arguments.get("device", signature.parameters["device"].default))
        output_dir(bound.arguments.get("out", signature.parameters["out"].default),
                   create=False)
        if distributed.is_main():
            return run(*args, **kwargs)
        with tempfile.TemporaryDirectory(prefix=f"hyperbayes-rank{distributed.rank()}-") as tmp:
            # a folder inside: the default checkpoints beside ``out`` stay in the temp folder
            bound.arguments["out"] = Path(tmp) / "results"
            return run(*bound.args, **bound.kwargs)

    return checked


def single_method(experiment_name: str, methods_to_run, method: str = "diversity") -> None:
    """For an experiment of one method: refuse any other ``--methods`` with a clear message."""
    if methods_to_run is not None and list(methods_to_run) != [method]:
        raise ValueError(f"{experiment_name} runs the {method} method only; --methods is not "
                         f"used (got {list(methods_to_run)})")


def _union_members(hint) -> tuple:
    """The members of a union type hint (``X | None``), or ``(hint,)`` for any other."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def settings_class(run) -> type | None:
    """The settings dataclass an experiment's ``run`` takes (its ``settings`` parameter's
    type), or None for one that takes none."""
    hint = typing.get_type_hints(inspect.unwrap(run)).get("settings")
    return next((c for c in _union_members(hint) if dataclasses.is_dataclass(c)), None)


def parse_value(text: str):
    """A ``--set`` value: a Python literal (3, 0.1, None, True, (1, 2), 'x') or else the
    string as written."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(name: str, value, hint):
    """``value`` as the field's type ``hint`` (an int where a float is wanted becomes a
    float, a list a tuple); a value of another type raises ValueError naming the field."""
    for option in _union_members(hint):
        origin = typing.get_origin(option) or option
        if value is None and option is type(None):
            return None
        if dataclasses.is_dataclass(origin) and isinstance(value, dict):
            return apply_settings(origin, value)  # a nested group, e.g. metrics.json's "zoo"
        if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if origin is tuple and isinstance(value, list | tuple):
            return tuple(value)
        if origin is tuple and isinstance(value, int | float | str):
            return (value,)
        if isinstance(origin, type) and origin is not type(None) and isinstance(value, origin):
            if origin is int and isinstance(value, bool):
                continue
            return value
    readable = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
    raise ValueError(f"setting {name}={value!r}: expected {readable}")


def apply_settings(settings_type: type, assignments, *, quick: bool = False):
    """The settings ``settings_type.quick()`` (or the defaults) with ``assignments``
    (``"key=value"`` strings or a dict) applied, every key and value checked against the
    dataclass before any work: an unknown key lists the known ones. A dict value of a nested
    settings group (``zoo``) is applied to that group's defaults, so a metrics.json's
    ``settings`` gives back the settings it was run with."""
    if isinstance(assignments, dict):
        pairs = dict(assignments)
    else:
        pairs = {}
        for item in assignments:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set {item!r}: expected key=value")
            pairs[key.strip()] = parse_value(text.strip())
    hints = typing.get_type_hints(settings_type)
    fields = {f.name for f in dataclasses.fields(settings_type)}
    unknown = sorted(set(pairs) - fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)} for "
                         f"{settings_type.__qualname__}; known: {', '.join(sorted(fields))}")
    values = {k: _coerce(k, v, hints[k]) for k, v in pairs.items()}
    base = settings_type.quick() if quick and hasattr(settings_type, "quick") else settings_type()
    return dataclasses.replace(base, **values)


def methods_table(methods: dict, title: str = "Per-method results") -> dict | None:
    """A results table (as :func:`hyperbayes.experiments.suite.table` makes) of every number
    in ``methods`` (label → metrics, a metric group such as ``vi_quality`` giving
    ``group.metric`` columns; a grouping with no numbers of its own, e.g. toy → label →
    metrics, gives ``toy/label`` rows); None when there are no numbers."""
    rows = []
    if not isinstance(methods, dict):
        return None

    def numbers(values: dict) -> dict:
        return {k: v for k, v in values.items()
                if isinstance(v, int | float) and not isinstance(v, bool)}

    def add(label, values):
        cells = numbers(values)
        for inner, nested in values.items():
            if isinstance(nested, dict):
                cells.update({f"{inner}.{k}": v for k, v in numbers(nested).items()})
        if cells:
            rows.append({"method": label, **cells})

    for label, values in methods.items():
        if not isinstance(values, dict):
            continue
        if numbers(values):
            add(label, values)
            continue
        for inner, nested in values.items():  # a grouping: one row per label inside it
            if isinstance(nested, dict):
                add(f"{label}/{inner}", nested)
    if not rows:
        return None
    columns = ["method"] + sorted({k for r in rows for k in r} - {"method"})
    return {"title": title, "columns": columns, "rows": rows, "note": "", "digits": 3}


def write_metrics(out: Path, payload: dict) -> Path:
    """Write ``out/metrics.json`` atomically in the one schema every experiment shares: the
    payload (``experiment``, ``seed``, ``quick``, ``device``, ``settings``, ``machine``,
    ``methods``, ``wall_time_s``, ...) with ``tables``; an experiment that made no tables of its
    own gets one of the numbers in its ``methods``."""
    if "tables" not in payload:
        payload = {**payload, "tables": _default_tables(payload)}
    return write_json(Path(out) / "metrics.json", payload)


def _default_tables(payload: dict) -> list[dict]:
    """The tables of an experiment that made none: one of the numbers in its ``methods``."""
    made = methods_table(payload.get("methods") or {})
    return [made] if made else []


def run_line(payload: dict) -> str:
    """The closing line of every report: seed, quick, device and wall time of the run."""
    return (f"Seed {payload['seed']}, quick={payload['quick']}, device {payload['device']}, "
            f"wall time {payload['wall_time_s']:.0f} s.")


def header(name: str, *, seed, quick: bool, device, settings, **fields) -> dict:
    """The start of every metrics.json: ``experiment``, ``seed``, ``quick``, ``device``,
    ``settings`` (a dataclass or a dict), ``machine``, then the experiment's own ``fields``."""
    settings = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else settings
    return {"experiment": name, "seed": seed, "quick": quick, "device": str(device),
            "settings": settings, "machine": machine_info(), **fields}


def finish(name: str, out: Path, start: float, *, report, figures=(), payload: dict | None = None,
           **header_fields) -> ExperimentResult:
    """End an experiment: its metrics.json and report.md, written atomically into ``out``.

    Args:
        name: the experiment's name.
        out: its output folder.
        start: a ``time.perf_counter()`` reading at its start (``wall_time_s`` is since then).
        report: ``report(payload) -> str``, the report's text (:func:`run_line` is appended).
        figures: the figures it wrote.
        payload: the metrics built so far (from :func:`header`, for runners that save partial
            results while they run); otherwise ``header_fields`` (``seed``, ``quick``,
            ``device``, ``settings`` and the experiment's own fields) make one.

    Returns:
        The run's :class:`ExperimentResult`.
    """
    if payload is None:
        payload = header(name, **header_fields)
    elif header_fields:
        raise TypeError("give the payload or its header fields, not both")
    payload["wall_time_s"] = time.perf_counter() - start
    if "tables" not in payload:  # the returned metrics are the file's
        payload["tables"] = _default_tables(payload)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_metrics(out, payload)
    text = report(payload).rstrip("\n") + "\n\n" + run_line(payload) + "\n"
    write_text(Path(out) / "report.md", text)
    return ExperimentResult(name, payload, Path(out), list(figures), payload["wall_time_s"])


def _clean(value):
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if torch.is_tensor(value):
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    return value


def write_json(path: Path, data: dict) -> Path:
    """Write ``data`` as indented JSON atomically; NaN/inf become null."""
    return write_text(path, json.dumps(_clean(data), indent=2, sort_keys=False) + "\n")


def machine_info() -> dict:
    """Where a result was measured: CPU/GPU model, core count, torch version."""
    info = {"platform": platform.platform(), "processor": platform.processor() or "unknown",
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _json_value(value):
    """A recipe value as JSON: numbers, strings and containers as they are, the rest by repr."""
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value if isinstance(value, int | float | str | bool | type(None)) else repr(value)


def recipes_used(names, family: str, overrides: dict | None = None) -> dict:
    """What each method in ``names`` was built with (its registry recipe for ``family`` and the
    run's ``overrides``), for metrics.json; ``nuts`` is left out."""
    from .. import methods

    used = {}
    for name in names:
        if name == methods.REFERENCE:
            continue
        method = methods.get(name)
        recipe = method.recipe(family)
        used[name] = _json_value({
            "method": method.base or method.name, "family": family,
            "options": {**recipe.options, **(overrides or {}).get(name, {})},
            "fit": recipe.fit, "prior": recipe.prior() if recipe.prior is not None else None,
            "weight_norm": recipe.weight_norm})
    return used


def data_fingerprint(split) -> str:
    """:func:`hyperbayes.inference.checkpoint.fingerprint` of a split's inputs and labels (12
    hex digits): every byte, dtype and shape, so any change to the data (a subset, the order, a
    flip or other preprocessing, even one that keeps every sum) gives another fingerprint."""
    from ..inference.checkpoint import fingerprint

    return fingerprint(split.x, split.y)[:12]


def checkpoint_key(name: str, fields: dict, seed: int, *data, family: str = "classification",
                   options: dict | None = None) -> str:
    """12 hex digits tied to everything that shapes a trained result: method ``name``'s
    registered recipe for ``family`` (options, fit settings, prior, weight norm), the run's
    build ``options`` laid over it, the settings ``fields``, the seed and ``data`` (splits,
    fingerprinted with :func:`data_fingerprint`, or strings such as tags). Every experiment
    keys its checkpoints and cached parts with it, so a changed recipe, setting or data set
    never resumes from a stale file."""
    from .. import methods

    recipe = methods.get(name).recipe(family)
    prior = repr(recipe.prior()) if recipe.prior is not None else None  # a changed prior retrains
    data = [d if isinstance(d, str) else data_fingerprint(d) for d in data]
    key = json.dumps([name, repr(recipe.options), recipe.fit, recipe.weight_norm, prior,
                      _json_value(options or {}), fields, seed, *data], sort_keys=True,
                     default=repr)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def checkpoint_name(name: str, fields: dict, seed: int, *data, family: str = "classification",
                    options: dict | None = None, tag: str = "") -> str:
    """A checkpoint file name: ``<name>[-<tag>]-<checkpoint_key>.pt`` (``/`` in a name
    becomes ``_``)."""
    key = checkpoint_key(name, fields, seed, *data, family=family, options=options)
    return f"{name.replace('/', '_')}{'-' + tag if tag else ''}-{key}.pt"


@dataclass
class Fitted:
    """A method trained by :func:`train_method`: its model, guide, loss, the
    :class:`~hyperbayes.inference.svi.FitResult`, the fit settings used (``lr`` included) and
    whether a finished checkpoint was reused (no step ran)."""

    model: object
    guide: object
    loss: object
    result: object
    fit_options: dict
    reused: bool


def train_method(name: str, family: str, net, prior, likelihood, train, *,
                 epochs: float | None = None, steps: int | None = None, batch_size: int,
                 lr: float, seed: int = 0, device="auto",
                 lr_schedule=None, clip_norm: float | None = None, val=None,
                 validations: int = 0, val_samples: int = 10, checkpoint: Path | None = None,
                 progress: bool | None = None, overrides: dict | None = None,
                 lr_multipliers: dict | None = None, built: tuple | None = None,
                 checkpoint_every: int | None = None, select_best: bool | None = None,
                 callback=None) -> Fitted:
    """Set up method ``name`` by its recipe for ``family`` and train it: the one training
    wrapper of the experiments.

    ``epochs`` passes over ``train`` (batches of ``batch_size``) or ``steps`` steps (give one;
    the recipe's ``steps_factor`` applied); ``lr`` (a constant, or the start of
    ``lr_schedule``: a name or a function of the step) unless the recipe sets its own; with
    ``val``, ``validations`` checks of the validation accuracy (``val_samples`` MC samples)
    and its best parameters kept (unless ``select_best`` is False); ``callback(step, loss)``
    runs after every step (see :func:`~hyperbayes.inference.fit`);
    ``checkpoint`` (a file) saved as often (or every ``checkpoint_every`` steps) and resumed,
    or reused when finished. ``overrides``
    are build options over the recipe's; ``built`` is an already built
    ``(model, guide, loss, fit_options)`` to train instead (``net``, ``prior``, ``likelihood``,
    ``lr`` and ``overrides`` are then unused).
    """
    from .. import methods
    from ..inference import fit, set_seed

    set_seed(seed)
    if built is None:
        model, guide, loss, recipe_fit = methods.setup(name, family, net, prior, likelihood,
                                                       seed=seed, **(overrides or {}))
        options = {"lr": lr, **recipe_fit}
    else:
        model, guide, loss, options = built
        options = dict(options)
    if (epochs is None) == (steps is None):
        raise ValueError("give train_method epochs or steps, not both or neither")
    batch = min(batch_size, len(train))
    if steps is None:
        steps = max(1, math.ceil(epochs * math.ceil(len(train) / batch)))
    options = methods.fit_options(options, steps)
    steps = options.pop("steps")
    # the recipe's own schedule, clipping and multipliers win over the task's defaults
    lr_schedule = options.pop("lr_schedule", lr_schedule)
    clip_norm = options.pop("clip_norm", clip_norm)
    lr_multipliers = options.pop("lr_multipliers", lr_multipliers)
    every = max(1, steps // max(1, validations))
    if checkpoint is not None:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    result = fit(model, guide, train, steps=steps, batch_size=batch, loss=loss,
                 lr_schedule=lr_schedule, clip_norm=clip_norm, lr_multipliers=lr_multipliers,
                 val=val, val_every=every if val is not None else None, val_samples=val_samples,
                 select_best=val is not None if select_best is None else select_best,
                 select_by="val_accuracy", checkpoint=checkpoint,
                 checkpoint_every=checkpoint_every or every, device=device, seed=seed,
                 progress=progress, callback=callback, **options)
    used = {**options, "lr_schedule": lr_schedule, "clip_norm": clip_norm}
    return Fitted(model, guide, loss, result, used, result.resumed_from == result.steps)


def markdown_table(rows: list[dict], columns: list[str], digits: int = 3) -> str:
    """A GitHub-markdown table of ``rows`` (dicts) with the given columns."""
    def cell(v):
        if isinstance(v, float):
            return "–" if not math.isfinite(v) else f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(
                v) >= 1e4 else f"{v:.{digits}f}"
        return "–" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def plotting():
    """Import matplotlib (headless backend) and seaborn with the project's style."""
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


@dataclass
class ExperimentResult:
    """What an experiment returns: its metrics, the files it wrote and its wall time."""

    name: str
    metrics: dict
    out_dir: Path
    figures: list[Path] = field(default_factory=list)
    wall_time_s: float = 0.0
    started: float = field(default_factory=time.time)


VI_QUALITY_COLUMNS = ["ELBO", "IWAE", "IWAE − ELBO", "PSIS k̂", "reading", "IS ESS %"]
VI_QUALITY_NOTE = (
    "VI quality on the standardized training data, from K draws of q: the ELBO; the importance-"
    "weighted bound IWAE_K (Burda et al. 2016), ≤ log p(y) and ≥ the ELBO, so IWAE − ELBO is a "
    "lower bound (in nats) of KL(q ‖ posterior); the Pareto k̂ of PSIS (Yao et al. 2018): < 0.5 "
    "good, 0.5–0.7 fair, > 0.7 the approximation is not reliable; and the importance-sampling "
    "effective sample size as a share of K. Point estimates (MAP, MC dropout, the ensemble's "
    "mixture of point masses) and implicit generators (Bayes by Hypernet, the diversity "
    "hypernetwork) have no density q(w): “–”; Laplace and SWAG have a joint Gaussian one.")


KL_CHECK_COLUMNS = ["KL estimate of the loss", "KL ≥", "ELBO ≤", "estimate below bound"]
KL_CHECK_NOTE = (
    "An implicit generator has no log q, so its loss estimates KL(q ‖ p) from the few samples of "
    "a step (the discriminator's E_q[T], the nearest-neighbour or entropy estimate; averaged "
    "here over 50 draws). KL ≥ is a lower bound of the true KL over the generated weights "
    "(hb.inference.implicit_kl_lower_bound: no distribution has more entropy than the Gaussian "
    "of its covariance), from 20·D draws; an estimate below it (by three standard errors) "
    "underestimates the KL by at least the difference, so the loss does not pay for q's spread "
    "as the ELBO would. ELBO ≤ is E_q[log p(y | w)] minus the bound: comparable with the ELBO "
    "of the guides with a density. The diversity objective has no KL term of its own: “–”.")


def kl_check_cells(check: dict | None) -> dict:
    """One table row's cells (keyed by :data:`KL_CHECK_COLUMNS`) from a
    :func:`~hyperbayes.inference.quality.implicit_kl_check` result."""
    if not check:
        return {}
    below = check.get("below_bound")
    return {"KL estimate of the loss": check.get("loss_estimate"), "KL ≥": check["kl_lower_bound"],
            "ELBO ≤": check["elbo_upper_bound"],
            "estimate below bound": "–" if below is None else ("yes" if below else "no")}


def kl_check_lines(methods: dict) -> list[str]:
    """Report lines with the implicit guides' KL checks in ``methods[name]["kl_check"]``
    (none when no method has one)."""
    rows = [{"method": name, **kl_check_cells(vals.get("kl_check"))}
            for name, vals in methods.items() if vals.get("kl_check")]
    if not rows:
        return []
    return ["## Implicit guides: the loss's KL estimate against a lower bound", "",
            markdown_table(rows, ["method", *KL_CHECK_COLUMNS]), "", KL_CHECK_NOTE, ""]


def vi_quality_cells(quality: dict | None) -> dict:
    """One table row's cells (keyed by :data:`VI_QUALITY_COLUMNS`) from a
    :func:`~hyperbayes.inference.quality.vi_quality` result; “–” where q has no density."""
    if not quality or not quality.get("available"):
        return {"reading": "no density" if quality else "–"}
    return {"ELBO": quality["elbo"], "IWAE": quality["iwae"],
            "IWAE − ELBO": quality["kl_lower_bound"], "PSIS k̂": quality["khat"],
            "reading": quality["khat_reading"], "IS ESS %": 100 * quality["ess_fraction"]}


def trust_lines(methods: dict) -> list[str]:
    """Report lines listing every diagnostic warning recorded in ``methods[name]["warnings"]``
    (NUTS checks and SVI checks, :mod:`hyperbayes.inference.trust`), or saying none fired."""
    lines = ["## Diagnostic warnings", ""]
    found = [(name, w) for name, vals in methods.items() for w in vals.get("warnings", [])]
    if not found:
        lines.append("No diagnostic check failed (NUTS: divergences, R-hat and bulk ESS of the "
                     "predictions, E-BFMI; SVI: loss trend, spread collapse).")
    lines += [f"- **{name}**: {w}" for name, w in found]
    return lines + [""]
