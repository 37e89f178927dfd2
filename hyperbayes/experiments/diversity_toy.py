"""diversity-toy: the diversity objective on a 2-d Gaussian mixture (Deutsch 2018, Fig. 1).

A generator maps 1-d noise to the plane and is trained on λ·E[−log p_mix(G(z))] − Ĥ (the
Kozachenko–Leonenko entropy of the generated batch), for several λ and seeds: how many of the
mixture's peaks the generated curve visits as λ changes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import datasets
from ..datasets import gmm2d_log_density
from ..inference import resolve_device
from ..inference.estimators import (
    MIN_DISTANCE,
    entropy_kl,
    log_unit_ball_volume,
)
from .common import (
    ExperimentResult,
    experiment,
    finish,
    header,
    markdown_table,
    plotting,
    single_method,
)

__all__ = ["run_toy", "ToySettings", "train_toy", "batched_curve_entropy"]


@dataclass(frozen=True)
class ToySettings:
    """Sizes of the toy. Every (λ, seed) run trains as one slice of a batched MLP (independent
    weights and Adam states, one loop)."""

    lams: tuple = (0.3, 1.0, 3.0, 10.0, 100.0, 1000.0)
    seeds: int = 3
    hidden: tuple = (30, 10, 10)
    steps: int = 3000
    batch_size: int = 256           # noise samples per step (the entropy's batch)
    lr: float = 3e-3
    # λ schedule: λ_start for the first hold_fraction of training, then geometric to λ over
    # ramp_fraction, then λ
    lam_start: float = 0.02
    hold_fraction: float = 0.3
    ramp_fraction: float = 0.4
    ablation_lams: tuple = (1.0, 100.0)  # also trained at a constant λ (no warm-up)
    n_components: int = 6
    radius: float = 2.0
    std: float = 0.2
    visit_radius: float = 1.0       # a peak is visited if the curve comes within this × std
    grid_points: int = 2001         # z grid that draws the curve
    eval_samples: int = 4096        # fresh samples for the density and entropy metrics

    @classmethod
    def quick(cls) -> ToySettings:
        """Two λ, two seeds, a shorter run (a few seconds)."""
        return cls(lams=(1.0, 1000.0), seeds=2, steps=1000, batch_size=128, ablation_lams=())


def _toy_lambda(settings: ToySettings, lam: float, warmup: bool, step: int) -> float:
    """λ at ``step``: the warm-up schedule (or the constant λ)."""
    if not warmup:
        return lam
    start = min(settings.lam_start, lam)
    frac = step / settings.steps
    f = min(1.0, max(0.0, (frac - settings.hold_fraction) / max(settings.ramp_fraction, 1e-9)))
    return math.exp((1 - f) * math.log(start) + f * math.log(lam))


def _toy_init(widths, runs: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Weights (runs, in, out) and biases (runs, 1, out), PyTorch's nn.Linear initialisation."""
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        bound = 1 / math.sqrt(fan_in)
        params.append((torch.rand(runs, fan_in, fan_out, generator=gen) * 2 - 1) * bound)
        params.append((torch.rand(runs, 1, fan_out, generator=gen) * 2 - 1) * bound)
    return [p.requires_grad_() for p in params]


def _toy_generate(params: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """G(z) for every run: z (runs, n, 1) → points (runs, n, 2); tanh between layers."""
    h = z
    for i in range(0, len(params), 2):
        h = torch.baddbmm(params[i + 1], h, params[i])
        if i < len(params) - 2:
            h = torch.tanh(h)
    return h


def batched_curve_entropy(points: torch.Tensor) -> torch.Tensor:
    """:func:`~hyperbayes.inference.estimators.entropy_kl` with k = 1 and dimension 1 for every
    run at once: points (runs, n, d) → (runs,)."""
    n = points.shape[1]
    with torch.no_grad():  # find each point's nearest neighbour; differentiate only that pair
        distances = torch.cdist(points, points)
        self_pairs = torch.eye(n, dtype=torch.bool, device=points.device)
        nearest = distances.masked_fill(self_pairs, math.inf).argmin(-1)
    neighbours = torch.gather(points, 1, nearest[..., None].expand_as(points))
    rho2 = (points - neighbours).pow(2).sum(-1)
    constant = (torch.special.digamma(torch.tensor(float(n), dtype=torch.float64))
                - torch.special.digamma(torch.tensor(1.0, dtype=torch.float64))).item()
    log_rho = 0.5 * rho2.clamp_min(MIN_DISTANCE ** 2).log()
    return constant + log_unit_ball_volume(1) + log_rho.mean(-1)


def train_toy(settings: ToySettings, runs: list[tuple[float, bool, int]], means: torch.Tensor,
              std: float, device) -> tuple[list[torch.Tensor], list[list[float]]]:
    """Train one generator per (λ, warm-up, seed) run; returns the weights and the loss curves.

    Each run's generator is initialised from its own seed, so a run's result does not depend on
    which other runs train beside it.
    """
    widths = [1, *settings.hidden, 2]
    per_run = []
    for _, _, seed in runs:
        gen = torch.Generator().manual_seed(1000 + seed)
        per_run.append(_toy_init(widths, 1, gen))
    params = [torch.cat([p[i].detach() for p in per_run]).to(device).requires_grad_()
              for i in range(len(per_run[0]))]
    optim = torch.optim.Adam(params, lr=settings.lr)
    means = means.to(device)
    noise_gen = torch.Generator(device=device).manual_seed(0)
    curves: list[list[float]] = [[] for _ in runs]
    n = settings.batch_size
    for step in range(settings.steps):
        lam = torch.tensor([_toy_lambda(settings, lam, warm, step) for lam, warm, _ in runs],
                           device=device)
        z = torch.rand(len(runs), n, 1, device=device, generator=noise_gen) * 2 - 1
        points = _toy_generate(params, z)
        nll = -gmm2d_log_density(points.reshape(-1, 2), means, std).reshape(len(runs), n).mean(1)
        entropy = batched_curve_entropy(points)
        per_run_loss = lam * nll - entropy
        optim.zero_grad(set_to_none=True)
        per_run_loss.sum().backward()  # the runs share no parameters: independent gradients
        optim.step()
        if step % 50 == 0 or step == settings.steps - 1:
            for curve, value in zip(curves, per_run_loss.detach().cpu().tolist(), strict=True):
                curve.append(value)
    return [p.detach() for p in params], curves


def _toy_metrics(params, run: int, settings: ToySettings, means, std, gen) -> dict:
    """Peaks visited, mean log density, entropy, curve length and per-peak mass of one run."""
    one = [p[run:run + 1] for p in params]
    device = one[0].device
    grid = torch.linspace(-1, 1, settings.grid_points, device=device).reshape(1, -1, 1)
    curve = _toy_generate(one, grid)[0]
    means = means.to(device)
    closest = torch.cdist(means, curve).min(1).values
    z = (torch.rand(1, settings.eval_samples, 1, generator=gen) * 2 - 1).to(device)
    points = _toy_generate(one, z)[0]
    to_peak = torch.cdist(points, means)
    nearest = to_peak.argmin(1)
    near = to_peak.min(1).values < 2 * std
    mass = torch.bincount(nearest[near], minlength=len(means)).float() / len(points)
    return {
        "peaks_visited": int((closest < settings.visit_radius * std).sum()),
        "closest_approach_std": (closest / std).cpu().tolist(),
        "mean_log_density": float(gmm2d_log_density(points, means, std).mean()),
        "entropy": float(entropy_kl(points, 1, 1)),
        "near_peak_fraction": float(near.float().mean()),
        "peak_mass": mass.cpu().tolist(),
        "curve_length": float((curve[1:] - curve[:-1]).norm(dim=1).sum()),
    }


@experiment
def run_toy(methods_to_run=None, *, quick: bool = False, device="auto", seed: int = 0,
            out: str | Path = "results/diversity-toy", settings: ToySettings | None = None,
            progress: bool | None = None) -> ExperimentResult:
    """Train the 1-d-noise generator on the Gaussian mixture for every λ (and seed); write
    metrics.json (per λ: peaks visited, mean log density, entropy), curves.png, lambda.png and
    report.md. ``seed`` offsets the runs' seeds (seeds ``seed``, ``seed + 1``, ...).

    Fig. 1 of the paper: z ~ U[−1, 1] mapped by an MLP [30, 10, 10, 2] tanh to the plane, trained
    on λ·E[−log p_mix(G(z))] − Ĥ, Ĥ the Kozachenko–Leonenko entropy (k = 1, dimension 1: the
    curve's) of the batch of generated points, p_mix the ``gmm2d`` mixture. λ is held small for
    the first part of training and raised geometrically to its final value: at a constant λ ≥ 1
    the short initial curve falls onto the nearest peak and stays there (the ``constant`` rows
    show it).
    """
    del progress  # the toy trains in seconds
    single_method("diversity-toy", methods_to_run)
    start = time.perf_counter()
    settings = settings or (ToySettings.quick() if quick else ToySettings())
    device = resolve_device(device)
    data = datasets.load("gmm2d", seed=seed, n_components=settings.n_components,
                         radius=settings.radius, std=settings.std)
    means, std = data.info["means"], float(data.info["std"])
    seeds = [seed + i for i in range(settings.seeds)]
    runs = [(lam, True, s) for lam in settings.lams for s in seeds]
    runs += [(lam, False, s) for lam in settings.ablation_lams for s in seeds]
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only add synchronisation (≈30× slower)
    try:
        params, curves = train_toy(settings, runs, means, std, device)
    finally:
        torch.set_num_threads(threads)
    train_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for index, (lam, warm, s) in enumerate(runs):
        rows.append({"lam": lam, "warmup": warm, "seed": s, "final_loss": curves[index][-1],
                     **_toy_metrics(params, index, settings, means, std, gen)})

    def summary(warm: bool, lams) -> dict:
        table = {}
        for lam in lams:
            group = [r for r in rows if r["lam"] == lam and r["warmup"] == warm]
            entry = {"lam": lam}
            for key in ("peaks_visited", "mean_log_density", "entropy", "near_peak_fraction",
                        "curve_length"):
                values = [r[key] for r in group]
                entry[key] = sum(values) / len(values)
                entry[f"{key}_per_seed"] = values
            table[f"{lam:g}"] = entry
        return table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = header("diversity-toy", seed=seed, quick=quick, device=device, settings=settings,
                     num_peaks=len(means), by_lambda=summary(True, settings.lams),
                     ablation_constant_lambda=summary(False, settings.ablation_lams),
                     runs=rows, loss_curves_every_50_steps=curves, train_s=train_s)
    figures = [out / "curves.png", out / "lambda.png"]
    _toy_curves_figure(figures[0], params, runs, settings, means, std, seeds[0])
    _toy_lambda_figure(figures[1], rows)
    return finish("diversity-toy", out, start, payload=payload, figures=figures,
                  report=lambda p: _toy_report(p, [f.name for f in figures]))


def _toy_curves_figure(path: Path, params, runs, settings: ToySettings, means, std,
                       shown_seed: int) -> None:
    """One panel per λ (first seed; constant-λ ablations last): G over a z grid, coloured by z,
    over the mixture's density contours."""
    plt, sns = plotting()
    shown = [i for i, (_, _, s) in enumerate(runs) if s == shown_seed]
    cols = min(4, len(shown))
    rows_n = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.4 * cols, 3.3 * rows_n), squeeze=False,
                             layout="constrained")
    lim = settings.radius + 4 * std + 0.6
    xs = torch.linspace(-lim, lim, 240)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    log_density = gmm2d_log_density(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1), means,
                                    std).reshape(gx.shape)
    top = float(log_density.max())
    levels = torch.linspace(top - 12, top, 13).tolist()  # log density, 12 nats below the peaks
    grid = torch.linspace(-1, 1, settings.grid_points).reshape(1, -1, 1)
    for ax, index in zip(axes.flat, shown, strict=False):
        lam, warm, _ = runs[index]
        ax.contourf(gx, gy, log_density.clamp_min(top - 12), levels=levels, cmap="Greys",
                    alpha=0.55)
        one = [p[index:index + 1].cpu() for p in params]
        curve = _toy_generate(one, grid.to(one[0].device))[0]
        scatter = ax.scatter(curve[:, 0], curve[:, 1], c=grid.reshape(-1), cmap="viridis", s=3,
                             linewidths=0)
        ax.scatter(means[:, 0], means[:, 1], marker="x", color="crimson", s=30)
        closest = torch.cdist(means, curve).min(1).values
        visited = int((closest < settings.visit_radius * std).sum())
        ax.set_title(f"λ = {lam:g}{'' if warm else ' (constant λ)'}: {visited}/{len(means)} "
                     "peaks", fontsize=10)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.colorbar(scatter, ax=axes, shrink=0.6, label="z")
    fig.suptitle("G(z) over z ∈ [−1, 1] (colour: z) on log p_mix contours (grey); × the peaks",
                 fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _toy_lambda_figure(path: Path, rows: list[dict]) -> None:
    """Peaks visited, mean log density and entropy against λ (every seed; warm-up vs constant)."""
    import pandas as pd

    plt, sns = plotting()
    frame = pd.DataFrame([{**r, "schedule": "warm-up" if r["warmup"] else "constant λ"}
                          for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (key, label) in zip(axes, (("peaks_visited", "peaks visited"),
                                       ("mean_log_density", "mean log p_mix(G(z))"),
                                       ("entropy", "entropy estimate (nats, d = 1)")),
                                strict=True):
        sns.lineplot(frame, x="lam", y=key, hue="schedule", style="schedule", markers=True,
                     errorbar=("pi", 100), ax=ax)
        ax.set(xscale="log", xlabel="λ", ylabel=label)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _toy_report(payload: dict, figures: list[str]) -> str:
    """report.md of diversity-toy."""
    s = payload["settings"]
    table = [{"λ": f"{e['lam']:g}", "peaks visited (mean)": e["peaks_visited"],
              "per seed": ", ".join(str(v) for v in e["peaks_visited_per_seed"]),
              "mean log density": e["mean_log_density"], "entropy": e["entropy"],
              "mass within 2σ of a peak": e["near_peak_fraction"],
              "curve length": e["curve_length"]}
             for e in payload["by_lambda"].values()]
    ablation = [{"λ": f"{e['lam']:g} (constant)", "peaks visited (mean)": e["peaks_visited"],
                 "per seed": ", ".join(str(v) for v in e["peaks_visited_per_seed"]),
                 "mean log density": e["mean_log_density"], "entropy": e["entropy"],
                 "mass within 2σ of a peak": e["near_peak_fraction"],
                 "curve length": e["curve_length"]}
                for e in payload["ablation_constant_lambda"].values()]
    columns = ["λ", "peaks visited (mean)", "per seed", "mean log density", "entropy",
               "mass within 2σ of a peak", "curve length"]
    return "\n".join([
        "# diversity-toy: a one-dimensional generator on a Gaussian mixture (Deutsch 2018, Fig. 1)",
        "",
        f"z ~ U[−1, 1] → MLP {list(s['hidden'])} tanh → 2-d point; loss λ·E[−log p_mix(G(z))] − Ĥ "
        f"with Ĥ the Kozachenko–Leonenko entropy (k = 1, dimension 1) of {s['batch_size']} "
        f"points a step; Adam {s['lr']}, {s['steps']} steps. Mixture: {payload['num_peaks']} "
        f"Gaussians of std {s['std']} on a circle of radius {s['radius']}. λ is held at "
        f"min(λ, {s['lam_start']}) for the first {s['hold_fraction']:.0%} of training and raised "
        f"geometrically to λ over the next {s['ramp_fraction']:.0%}. A peak is *visited* when the "
        f"curve G([−1, 1]) passes within {s['visit_radius']} std of it. Density and entropy from "
        f"{s['eval_samples']} fresh samples; {s['seeds']} seeds per λ.",
        "",
        markdown_table(table + ablation, columns, digits=2),
        "",
        "Small λ lets the entropy spread the curve (long, through low-density regions); large λ "
        "pulls it onto the peaks and, in this run, keeps fewer of them (the count varies between "
        "seeds). Rows marked *constant* train at their λ from the start, without the warm-up: "
        "there the initial short curve can fall onto the nearest peak and stay there, since "
        "reaching another peak means crossing a low-density barrier.",
        "",
        *[f"![{f}]({f})" for f in figures],
        "",
    ])
