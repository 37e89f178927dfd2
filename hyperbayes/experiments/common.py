"""Shared plumbing of experiments: output folders, atomic JSON, figures and markdown reports."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["ExperimentResult", "trust_lines", "write_json", "write_text", "markdown_table",
           "machine_info",
           "plotting"]


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    "effective sample size as a share of K. Point estimates (MAP, MC dropout) and implicit "
    "generators (Bayes by Hypernet, the diversity hypernetwork) have no density q(w): “–”.")


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
