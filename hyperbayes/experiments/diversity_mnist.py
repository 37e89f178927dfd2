"""diversity-mnist: the diversity hypernetwork on MNIST of Deutsch 2018 (Figs. 2–9, §4).

A hypernetwork generates whole CNNs from noise (per-unit codes, per-layer generators), trained on
λ·cross-entropy − entropy of the gauge-fixed weights: the accuracy of the generated nets, their
diversity, ensembles, the weight-space PCA, interpolation paths and FGSM attacks.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import datasets, methods
from ..datasets import transforms
from ..inference import metrics, predict_from_samples, resolve_device, set_seed
from ..inference.attacks import fgsm
from ..inference.metrics import disagreement, majority_vote
from ..inference.predict import eval_mode
from ..models import CNN, Categorical, priors
from ..models.gauge import gauge_fix
from .common import (
    ExperimentResult,
    checkpoint_name,
    experiment,
    finish,
    header,
    markdown_table,
    plotting,
    single_method,
    train_method,
    write_json,
)

__all__ = ["run_mnist", "MnistSettings", "train_mnist", "build_mnist", "generate_nets",
           "draw_noise", "net_logits", "fgsm_attack"]


@dataclass(frozen=True)
class MnistSettings:
    """Sizes of one diversity-mnist run; ``quick`` (tests) uses a few MNIST images."""

    lam: float = 1000.0
    num_samples: int = 32           # generated nets per step
    batch_size: int = 32            # images per step (the same images for every net)
    # 15,000 steps ≈ 4.7 min on one H100 (~55 steps/s); lr 1e-3 rather than the paper's 3e-4,
    # which learned about 3× slower (see run_mnist)
    steps: int = 15000
    lr: float = 1e-3
    lr_final: float = 0.1           # lr decays geometrically to lr_final × lr
    clip_norm: float | None = None
    noise_dim: int = 300
    extractor_hidden: tuple = (300, 300)   # the paper's 436,500-parameter extractor
    code_dim: int = 15
    generator_hidden: tuple = ((40, 40), (100, 100), (100, 100), (60, 60))
    batch_norm: bool = True
    gauge: bool = True
    validations: int = 12           # validation passes during training
    val_limit: int | None = 2000    # validation images scored during training
    val_nets: int = 16              # sampled nets scored per validation pass
    checkpoint_every: int = 1000
    test_nets: int = 200            # sampled nets for the histogram, ensembles and PCA
    ensemble_sizes: tuple = (1, 2, 3, 5, 10, 20, 50, 100)
    ensemble_size: int = 10         # the headline ensemble_accuracy
    ensembles_per_size: int = 50
    path_pairs: int = 4
    path_points: int = 21
    attack_eps: tuple = (0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3)
    attack_images: int = 2000       # test images attacked (each by its own sampled net)
    attack_nets: int = 50           # nets crafting the attacks (image i uses net i mod this)
    attack_ensemble_size: int = 10
    attack_ensembles: int = 5       # disjoint ensembles tested (image i uses ensemble i mod this)
    nets_per_pass: int = 25         # sampled nets evaluated together (bounds memory)
    images_per_pass: int = 1000
    train_limit: int | None = None  # use only the first training images (quick runs)
    eval_limit: int | None = None   # use only the first test images (quick runs)

    @classmethod
    def quick(cls) -> MnistSettings:
        """Tiny settings: 1,000 training images, 8 nets × 16 images, a few hundred steps."""
        return cls(num_samples=8, batch_size=16, steps=150, lr=2e-3, lr_final=1.0,
                   extractor_hidden=(64,), generator_hidden=(32, 32), validations=2,
                   val_limit=200, val_nets=4, checkpoint_every=50, test_nets=16,
                   ensemble_sizes=(1, 3, 5), ensemble_size=5, ensembles_per_size=5,
                   path_pairs=1, path_points=5, attack_eps=(0.0, 0.1, 0.3), attack_images=40,
                   attack_nets=4, attack_ensemble_size=3, attack_ensembles=2,
                   train_limit=1000, eval_limit=300)


TRAINING_FIELDS = ("lam", "num_samples", "batch_size", "steps", "lr", "lr_final", "clip_norm",
                   "noise_dim", "extractor_hidden", "code_dim", "generator_hidden", "batch_norm",
                   "gauge", "validations", "val_limit", "val_nets", "train_limit")


def _checkpoint_name(settings: MnistSettings, seed: int, train) -> str:
    """A file name tied to everything that shapes training (not to the analysis settings) and
    to the training data (see :func:`~hyperbayes.experiments.common.checkpoint_key`)."""
    fields = {k: v for k, v in asdict(settings).items() if k in TRAINING_FIELDS}
    return checkpoint_name("diversity", fields, seed, train)


def build_mnist(settings: MnistSettings, seed: int = 0):
    """(model, guide, loss) of the diversity hypernetwork for the paper's CNN target."""
    return methods.build("diversity", CNN(), priors.Flat(), Categorical(), seed=seed,
                         lam=settings.lam, gauge=settings.gauge, noise_dim=settings.noise_dim,
                         extractor_hidden=settings.extractor_hidden, code_dim=settings.code_dim,
                         generator_hidden=settings.generator_hidden,
                         batch_norm=settings.batch_norm, num_samples=settings.num_samples,
                         # the paper's noise (300-d) for ~20,000 weights: a degenerate q whose
                         # objective is λ·loss − Ĥ, not an ELBO, trained knowingly
                         allow_degenerate=True)


def generate_nets(guide, noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """The nets G(z) for noise (S, noise_dim), with batch norm in evaluation mode, no gradient."""
    with eval_mode(guide), torch.no_grad():
        return guide.generate(noise)


def _device(guide) -> torch.device:
    """The device the guide's parameters are on."""
    return next(guide.parameters()).device


def draw_noise(guide, count: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """``count`` draws of z ~ U[−1, 1]^noise_dim on the guide's device (drawn on the CPU from
    ``gen``, so the same generator gives the same nets on every device)."""
    z = torch.rand(count, guide.noise_dim, generator=gen) * 2 - 1
    return z.to(_device(guide))


def _select(params: dict, index) -> dict:
    """The nets ``index`` (an int slice or index tensor) of a batch of nets."""
    return {k: v[index] for k, v in params.items()}


def net_logits(model, params: dict, x: torch.Tensor, settings: MnistSettings) -> torch.Tensor:
    """Log-probabilities (S, N, C) of S nets on x, a group of nets and images at a time."""
    count = next(iter(params.values())).shape[0]
    parts = []
    for start in range(0, count, settings.nets_per_pass):
        group = _select(params, slice(start, start + settings.nets_per_pass))
        parts.append(predict_from_samples(model, group, x,
                                          batch_size=settings.images_per_pass).logits)
    return torch.cat(parts).log_softmax(-1)


class _Tracker:
    """A fit callback: every ``every`` steps, the test accuracy of single sampled nets on the
    validation subset (median, quartiles), saved to a JSON file next to the checkpoint so an
    interrupted run keeps its curve."""

    def __init__(self, model, guide, x, y, settings: MnistSettings, every: int, path: Path):
        self.model, self.guide, self.x, self.y = model, guide, x, y
        self.settings, self.every, self.path = settings, every, path
        self.records = json.loads(path.read_text()) if path.exists() else []
        self.first = True
        self.gen = torch.Generator().manual_seed(12345)

    def __call__(self, step: int, loss) -> bool:
        if self.first:  # drop records past the step training resumed from
            self.records = [r for r in self.records if r["step"] < step]
            self.first = False
        if step % self.every and step != self.settings.steps:
            return False
        nets = generate_nets(self.guide, draw_noise(self.guide, self.settings.val_nets,
                                                    self.gen))
        logits = net_logits(self.model, nets, self.x, self.settings)
        acc = (logits.argmax(-1) == self.y).float().mean(1).cpu()
        votes = logits.argmax(-1)
        self.records.append({"step": step, "loss": float(loss),
                             "median_accuracy": float(acc.median()),
                             "q25_accuracy": float(acc.quantile(0.25)),
                             "q75_accuracy": float(acc.quantile(0.75)),
                             "mean_probs_accuracy": float(
                                 (logits.exp().mean(0).argmax(-1) == self.y).float().mean()),
                             "disagreement": disagreement(votes)})
        write_json(self.path, self.records)
        return False


def _data(settings: MnistSettings, data):
    """(train, validation subset, test) splits of MNIST (or ``data``) under ``settings``."""
    data = data if data is not None else datasets.load("mnist")
    if settings.train_limit:
        data = transforms.first_n(data, min(settings.train_limit, len(data.train)))
    test = data.test
    if settings.eval_limit:
        test = test.subset(slice(0, settings.eval_limit))
    val = data.val if data.val is not None else test
    if settings.val_limit:
        val = val.subset(slice(0, min(settings.val_limit, len(val))))
    return data.train, val, test


def train_mnist(settings: MnistSettings, train, val, device, seed: int, checkpoint: Path,
                progress=None):
    """Build and train the hypernetwork (resuming from ``checkpoint`` when it exists); returns
    (model, guide, fit result, tracked single-net validation curve)."""
    set_seed(seed)
    model, guide, loss = build_mnist(settings, seed)
    model.to(device)
    guide.to(device)
    every = max(1, settings.steps // max(1, settings.validations))
    tracker = _Tracker(model, guide, val.x.to(device), val.y.to(device), settings, every,
                       checkpoint.with_suffix(".track.json"))
    steps, final = settings.steps, settings.lr_final
    result = train_method(
        "diversity", "classification", None, None, None, train, steps=steps,
        batch_size=settings.batch_size, lr=settings.lr,
        lr_schedule=lambda t: final ** (min(t, steps) / steps), clip_norm=settings.clip_norm,
        val=val, validations=settings.validations, val_samples=settings.val_nets,
        select_best=False, checkpoint=checkpoint, checkpoint_every=settings.checkpoint_every,
        device=device, seed=seed, progress=progress, callback=tracker,
        built=(model, guide, loss, {"lr": settings.lr})).result
    if tracker.first and result.resumed_from is not None:  # nothing ran: a finished checkpoint
        tracker.records = [r for r in tracker.records if r["step"] <= result.resumed_from]
    return model, guide, result, tracker.records


def _ensembles(votes: torch.Tensor, probs_mean_fn, y: torch.Tensor, settings: MnistSettings,
               gen: torch.Generator) -> dict:
    """Majority-vote accuracy of random ensembles (without replacement) of each size."""
    count = votes.shape[0]
    table = {}
    for size in settings.ensemble_sizes:
        if size > count:
            continue
        accs = []
        for _ in range(settings.ensembles_per_size if size < count else 1):
            members = torch.randperm(count, generator=gen)[:size].to(votes.device)
            pred = majority_vote(votes[members], tie_break=probs_mean_fn(members))
            accs.append(float((pred == y).float().mean()))
        t = torch.tensor(accs)
        table[str(size)] = {"size": size, "mean": float(t.mean()),
                            "std": float(t.std()) if len(accs) > 1 else 0.0,
                            "min": float(t.min()), "max": float(t.max()), "count": len(accs)}
    return table


def _pca(model, guide, nets: dict, count: int) -> tuple[torch.Tensor, dict]:
    """Projections of the gauge-fixed nets on their top principal components, and summaries."""
    fixed = gauge_fix(nets, model.net, center_output_bias=True)
    flat = guide.flatten(fixed, count).double()
    centred = flat - flat.mean(0)
    _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = sv.pow(2)
    ratio = (variance / variance.sum()).cpu()
    components = min(4, vh.shape[0])
    projected = (centred @ vh[:components].T).float().cpu()
    distances = torch.pdist(flat.float())
    summary = {"explained_variance_ratio": ratio[:10].tolist(),
               "components_for_90_percent": int((ratio.cumsum(0) < 0.9).sum()) + 1,
               "mean_pairwise_distance": float(distances.mean()),
               "min_pairwise_distance": float(distances.min()),
               "mean_norm": float(flat.norm(dim=1).mean()),
               "relative_spread": float(centred.norm(dim=1).mean() / flat.mean(0).norm())}
    return projected, summary


def _paths(model, guide, test, settings: MnistSettings, gen: torch.Generator) -> dict:
    """Test accuracy along three paths between pairs of sampled nets G(z₀), G(z₁): the
    interpolated path G((1−t)z₀ + t z₁), the straight path (1−t)G(z₀) + t G(z₁), and the straight
    path between the gauge-fixed endpoints."""
    ts = torch.linspace(0, 1, settings.path_points)
    z = draw_noise(guide, 2 * settings.path_pairs, gen)
    z0, z1 = z[: settings.path_pairs], z[settings.path_pairs:]
    tt = ts.to(z.device).reshape(1, -1, 1)
    z_path = ((1 - tt) * z0[:, None] + tt * z1[:, None]).reshape(-1, guide.noise_dim)
    interpolated = generate_nets(guide, z_path)
    ends = generate_nets(guide, torch.cat([z0, z1]))
    fixed_ends = gauge_fix(ends, model.net, center_output_bias=True)
    curves = {"interpolated": interpolated}
    for label, source in (("straight", ends), ("straight_gauge_fixed", fixed_ends)):
        path = {}
        for name, value in source.items():
            a, b = value[: settings.path_pairs], value[settings.path_pairs:]
            shape = (1, -1) + (1,) * (a.dim() - 1)
            t = ts.to(a.device).reshape(shape)
            path[name] = ((1 - t) * a[:, None] + t * b[:, None]).reshape(-1, *a.shape[1:])
        curves[label] = path
    x, y = test.x.to(z.device), test.y.to(z.device)
    out = {"t": ts.tolist()}
    for label, nets in curves.items():
        acc = (net_logits(model, nets, x, settings).argmax(-1) == y).float().mean(1)
        acc = acc.reshape(settings.path_pairs, settings.path_points).cpu()
        out[label] = {"accuracy": acc.tolist(), "mean": acc.mean(0).tolist(),
                      "min_along_path": acc.min(1).values.tolist(),
                      "mean_min_along_path": float(acc.min(1).values.mean())}
    return out


def fgsm_attack(model, guide, test, settings: MnistSettings, gen: torch.Generator) -> dict:
    """Targeted fast-gradient-sign attacks (Deutsch 2018, Fig. 8).

    Image i (of the first ``attack_images`` test images) gets a random target class t ≠ y and
    is attacked with the sign of the gradient of −log p(t | x) under its own sampled net
    (net i mod ``attack_nets``): x_ε = clip(x − ε·sign(∇ₓ(−log p(t | x))), 0, 1), ε a fraction of
    the [0, 1] pixel range. An attack succeeds when the net's class is t. Success is measured on
    the attacked net itself (white box), on another independently sampled net (transfer) and on
    the majority vote of an independently sampled ensemble (image i: ensemble i mod
    ``attack_ensembles``).
    """
    device = _device(guide)
    n = min(settings.attack_images, len(test))
    x, y = test.x[:n].to(device), test.y[:n].to(device)
    target = (y + torch.randint(1, 10, (n,), generator=gen).to(device)) % 10
    a, e, k = settings.attack_nets, settings.attack_ensembles, settings.attack_ensemble_size
    nets = generate_nets(guide, draw_noise(guide, 2 * a + e * k, gen))
    attacker, other = _select(nets, slice(0, a)), _select(nets, slice(a, 2 * a))
    ensemble = _select(nets, slice(2 * a, 2 * a + e * k))
    which = torch.arange(n, device=device) % a
    toward = torch.empty_like(x)  # ∇ₓ log p(t | x) under each image's attacking net
    for j in range(a):  # each attacking net crafts its images' perturbations
        idx = (which == j).nonzero().flatten()
        if len(idx) == 0:
            continue
        xj = x[idx].clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model.net(_select(attacker, slice(j, j + 1)), xj)[0]
            F.cross_entropy(logits, target[idx]).backward()
        toward[idx] = -xj.grad
    rows = {"eps": list(settings.attack_eps), "white_box_single": [], "transfer_single": [],
            "ensemble": []}

    def classes(params, images):
        return net_logits(model, params, images, settings).argmax(-1)

    for eps in settings.attack_eps:
        adv = fgsm(x, toward, eps, targeted=True)
        white, transfer, ens = (torch.zeros(n, dtype=torch.bool, device=device)
                                for _ in range(3))
        for j in range(a):
            idx = (which == j).nonzero().flatten()
            if len(idx):
                white[idx] = classes(_select(attacker, slice(j, j + 1)), adv[idx])[0] == target[
                    idx]
                transfer[idx] = classes(_select(other, slice(j, j + 1)), adv[idx])[0] == target[
                    idx]
        group = torch.arange(n, device=device) % e
        for g in range(e):
            idx = (group == g).nonzero().flatten()
            if len(idx):
                members = _select(ensemble, slice(g * k, (g + 1) * k))
                logits = net_logits(model, members, adv[idx], settings)
                pred = majority_vote(logits.argmax(-1), tie_break=logits.exp().mean(0))
                ens[idx] = pred == target[idx]
        rows["white_box_single"].append(float(white.float().mean()))
        rows["transfer_single"].append(float(transfer.float().mean()))
        rows["ensemble"].append(float(ens.float().mean()))
    rows.update({"images": n, "attack_nets": a, "ensemble_size": k, "ensembles": e})
    return rows


@experiment
def run_mnist(methods_to_run=None, *, quick: bool = False, device="auto", seed: int = 0,
              out: str | Path = "results/diversity-mnist", settings: MnistSettings | None = None,
              progress: bool | None = None, data=None,
              checkpoint: str | Path | None = None) -> ExperimentResult:
    """Train the diversity hypernetwork on MNIST 50,000 and analyse its nets; write metrics.json,
    accuracy_histogram.png, ensembles.png, pca.png, paths.png, attacks.png, training.png and
    report.md.

    The paper's 4-layer conv target (20,018 weights) is generated by
    :class:`~hyperbayes.guides.DiversityGuide` (z ~ U[−1, 1]^300, extractor [300, 300], 15-d
    codes, the paper's per-layer generators) and trained with
    :class:`~hyperbayes.inference.DiversityObjective` (λ = 1000, gauge fixing, 32 nets × 32 images
    a step). Adam starts at 1e-3 and decays geometrically to 1e-4 over 15,000 steps: the paper's
    3e-4 reached a median of 93.3% after 3,000 steps on an H100 probe where 1e-3 reached 96.2%.
    Then (Figs. 2, 7–9 and the ensemble experiment): test accuracy of sampled nets, majority-vote
    ensembles against their size, PCA of gauge-fixed weights, accuracy along straight and
    noise-interpolated paths between sampled nets, and targeted fast-gradient-sign attacks
    crafted on single nets and tested on them, on other single nets and on ensembles.

    Training checkpoints to ``out/checkpoints`` (named after the training settings), so an
    interrupted run resumes and a finished one is reused for the analysis. ``checkpoint`` names
    another checkpoint file to resume from or analyse (it must match the settings' architecture).
    ``data`` overrides MNIST (a Dataset with train/val/test splits of 28×28 images).
    """
    single_method("diversity-mnist", methods_to_run)
    start = time.perf_counter()
    settings = settings or (MnistSettings.quick() if quick else MnistSettings())
    device = resolve_device(device)
    train, val, test = _data(settings, data)
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Path(checkpoint) if checkpoint else ckpt_dir / _checkpoint_name(settings, seed, train)
    model, guide, result, track = train_mnist(settings, train, val, device, seed, ckpt, progress)
    train_s = result.total_wall_time_s
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed + 1)
    x, y = test.x.to(device), test.y.to(device)

    # sampled nets on the test set: histogram, posterior predictive, ensembles, diversity
    nets = generate_nets(guide, draw_noise(guide, settings.test_nets, gen))
    logits = net_logits(model, nets, x, settings)
    votes = logits.argmax(-1)
    accs = (votes == y).float().mean(1).cpu()
    probs = logits.exp()
    report = metrics.classification_report(probs.cpu(), test.y)
    ensembles = _ensembles(votes, lambda m: probs[m].mean(0), y, settings, gen)
    headline = ensembles.get(str(settings.ensemble_size))
    full_vote = float((majority_vote(votes, tie_break=probs.mean(0)) == y).float().mean())
    projected, pca = _pca(model, guide, nets, settings.test_nets)
    paths = _paths(model, guide, test, settings, gen)
    attack = fgsm_attack(model, guide, test, settings, gen)
    analysis_s = time.perf_counter() - t0

    payload = header("diversity-mnist", seed=seed, quick=quick, device=device, settings=settings)
    payload |= {
        "checkpoint": str(ckpt), "train_examples": len(train), "test_examples": len(test),
        "guide_parameters": sum(p.numel() for p in guide.parameters()),
        "target_parameters": model.net.num_params,
        "median_sample_accuracy": float(accs.median()),
        "mean_sample_accuracy": float(accs.mean()),
        "min_sample_accuracy": float(accs.min()),
        "max_sample_accuracy": float(accs.max()),
        "sample_accuracies": accs.tolist(),
        "ensemble_accuracy": None if headline is None else headline["mean"],
        "ensemble_size": settings.ensemble_size,
        "majority_vote_all_accuracy": full_vote,
        "test_accuracy": report["accuracy"], "test_nll": report["nll"],
        "test_ece": report["ece"],
        "disagreement": disagreement(votes),
        "ensembles": ensembles, "pca": pca, "paths": paths, "attack": attack,
        "training": {"steps": result.steps, "resumed_from": result.resumed_from,
                     "losses_every_50_steps": result.losses[::50],
                     "validation": result.validation, "single_net_validation": track,
                     "train_s": train_s},
        "train_s": train_s, "analysis_s": analysis_s,
    }
    figures = [out / name for name in ("accuracy_histogram.png", "ensembles.png", "pca.png",
                                       "paths.png", "attacks.png", "training.png")]
    _histogram_figure(figures[0], accs, report["accuracy"], headline)
    _ensemble_figure(figures[1], ensembles, float(accs.median()))
    _pca_figure(figures[2], projected, accs, pca)
    _paths_figure(figures[3], paths)
    _attack_figure(figures[4], attack)
    _training_figure(figures[5], result, track, settings)
    return finish("diversity-mnist", out, start, payload=payload, figures=figures,
                  report=lambda p: _mnist_report(p, [f.name for f in figures]))


def _save(fig, path: Path) -> None:
    """Lay out, save and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _histogram_figure(path: Path, accs: torch.Tensor, predictive: float, headline) -> None:
    """Histogram of the test accuracy of the sampled nets (Fig. 2)."""
    plt, sns = plotting()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    sns.histplot(x=100 * accs.numpy(), bins=min(30, max(5, len(accs) // 5)), ax=ax)
    ax.axvline(100 * float(accs.median()), color="k", ls="--", label="median single net")
    ax.axvline(100 * predictive, color="crimson", label="posterior predictive (all nets)")
    if headline is not None:
        ax.axvline(100 * headline["mean"], color="seagreen", ls=":",
                   label=f"majority vote of {headline['size']} (mean)")
    ax.set(xlabel="test accuracy (%)", ylabel="sampled nets")
    ax.legend(fontsize=8)
    _save(fig, path)


def _ensemble_figure(path: Path, ensembles: dict, median: float) -> None:
    """Majority-vote accuracy against ensemble size."""
    plt, sns = plotting()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    sizes = [e["size"] for e in ensembles.values()]
    mean = [100 * e["mean"] for e in ensembles.values()]
    std = [100 * e["std"] for e in ensembles.values()]
    ax.errorbar(sizes, mean, yerr=std, marker="o", capsize=3, label="majority vote (mean ± std)")
    ax.axhline(100 * median, color="k", ls="--", label="median single net")
    ax.set(xscale="log", xlabel="ensemble size", ylabel="test accuracy (%)")
    ax.legend(fontsize=8)
    _save(fig, path)


def _pca_figure(path: Path, projected: torch.Tensor, accs: torch.Tensor, pca: dict) -> None:
    """Sampled nets' gauge-fixed weights on their principal components (Fig. 9)."""
    plt, sns = plotting()
    pairs = [(0, 1), (2, 3)] if projected.shape[1] >= 4 else [(0, 1)]
    fig, axes = plt.subplots(1, len(pairs) + 1, figsize=(4.2 * (len(pairs) + 1), 3.8))
    ratio = pca["explained_variance_ratio"]
    for ax, (i, j) in zip(axes, pairs, strict=False):
        points = ax.scatter(projected[:, i], projected[:, j], c=100 * accs, cmap="viridis", s=12)
        ax.set(xlabel=f"PC{i + 1} ({100 * ratio[i]:.1f}%)",
               ylabel=f"PC{j + 1} ({100 * ratio[j]:.1f}%)")
    fig.colorbar(points, ax=axes[len(pairs) - 1], label="test accuracy (%)")
    axes[-1].bar(range(1, len(ratio) + 1), [100 * r for r in ratio])
    axes[-1].set(xlabel="principal component", ylabel="explained variance (%)")
    _save(fig, path)


def _paths_figure(path: Path, paths: dict) -> None:
    """Accuracy along interpolated and straight paths between pairs of nets (Fig. 7)."""
    plt, sns = plotting()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    palette = sns.color_palette("deep")
    labels = {"interpolated": "interpolated G((1−t)z₀ + t z₁)",
              "straight": "straight (1−t)G(z₀) + t G(z₁)",
              "straight_gauge_fixed": "straight, gauge-fixed endpoints"}
    for color, (key, label) in zip(palette, labels.items(), strict=False):
        for k, curve in enumerate(paths[key]["accuracy"]):
            ax.plot(paths["t"], [100 * a for a in curve], color=color, alpha=0.8,
                    label=label if k == 0 else None)
    ax.set(xlabel="t", ylabel="test accuracy (%)")
    ax.legend(fontsize=8)
    _save(fig, path)


def _attack_figure(path: Path, attack: dict) -> None:
    """Success rate of targeted FGSM attacks against ε (Fig. 8)."""
    plt, sns = plotting()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, label in (("white_box_single", "attacked net (white box)"),
                       ("transfer_single", "another sampled net"),
                       ("ensemble", f"majority vote of {attack['ensemble_size']} sampled nets")):
        ax.plot(attack["eps"], [100 * v for v in attack[key]], marker="o", label=label)
    ax.set(xlabel="ε (fraction of the pixel range)", ylabel="targeted attack success (%)")
    ax.legend(fontsize=8)
    _save(fig, path)


def _training_figure(path: Path, result, track: list, settings: MnistSettings) -> None:
    """Training loss and validation accuracy of single nets and of their average."""
    plt, sns = plotting()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    losses = torch.tensor(result.losses)
    window = max(1, len(losses) // 100)
    smooth = losses.unfold(0, window, window).mean(1) if len(losses) >= window else losses
    axes[0].plot(torch.arange(len(smooth)) * window + window, smooth)
    axes[0].set(xlabel="step", ylabel="λ·NLL − Ĥ (mean of windows)")
    if track:
        steps = [r["step"] for r in track]
        axes[1].plot(steps, [100 * r["median_accuracy"] for r in track], marker="o",
                     label=f"median single net ({settings.val_nets} nets)")
        axes[1].fill_between(steps, [100 * r["q25_accuracy"] for r in track],
                             [100 * r["q75_accuracy"] for r in track], alpha=0.3)
        axes[1].plot(steps, [100 * r["mean_probs_accuracy"] for r in track], marker=".",
                     label="average of their probabilities")
    axes[1].set(xlabel="step", ylabel="validation accuracy (%)")
    axes[1].legend(fontsize=8)
    _save(fig, path)


def _mnist_report(payload: dict, figures: list[str]) -> str:
    """report.md of diversity-mnist."""
    s = payload["settings"]
    pct = 100
    headline = [{
        "median single net %": pct * payload["median_sample_accuracy"],
        "mean single net %": pct * payload["mean_sample_accuracy"],
        "worst / best net %": f"{pct * payload['min_sample_accuracy']:.2f} / "
                              f"{pct * payload['max_sample_accuracy']:.2f}",
        f"majority of {payload['ensemble_size']} %": None if payload["ensemble_accuracy"] is None
        else pct * payload["ensemble_accuracy"],
        f"majority of all {s['test_nets']} %": pct * payload["majority_vote_all_accuracy"],
        "predictive %": pct * payload["test_accuracy"], "predictive NLL": payload["test_nll"],
        "disagreement": payload["disagreement"]}]
    ens = [{"size": e["size"], "accuracy % (mean)": pct * e["mean"], "std": pct * e["std"],
            "ensembles": e["count"]} for e in payload["ensembles"].values()]
    attack = payload["attack"]
    attacks = [{"ε": eps, "attacked net %": pct * a, "another net %": pct * b,
                "ensemble %": pct * c}
               for eps, a, b, c in zip(attack["eps"], attack["white_box_single"],
                                       attack["transfer_single"], attack["ensemble"],
                                       strict=True)]
    paths = payload["paths"]
    path_rows = [{"path": key, "mean accuracy at t = 0.5 %": pct * paths[key]["mean"][
                  len(paths["t"]) // 2], "mean of the minimum along the path %":
                  pct * paths[key]["mean_min_along_path"]}
                 for key in ("interpolated", "straight", "straight_gauge_fixed")]
    pca = payload["pca"]
    return "\n".join([
        "# diversity-mnist: generating the 4-layer MNIST CNN with a diversity hypernetwork "
        "(Deutsch 2018)",
        "",
        f"Target: conv 5×5×32, pool, conv 5×5×16, pool, fc 784→8, fc 8→10 "
        f"({payload['target_parameters']:,} weights). Hypernet: z ~ U[−1, 1]^{s['noise_dim']}, "
        f"extractor {list(s['extractor_hidden'])}, {s['code_dim']}-d codes, per-layer generators "
        f"{[list(h) if isinstance(h, list | tuple) else h for h in s['generator_hidden']]}, "
        f"batch norm, LeakyReLU ({payload['guide_parameters']:,} parameters). Loss λ·NLL − "
        f"Ĥ(gauge(w)) with λ = {s['lam']:g}, {s['num_samples']} nets × {s['batch_size']} images "
        f"a step (the same images for every net; the paper draws different images per net), "
        f"Adam {s['lr']} decaying geometrically to {s['lr_final']}× over {s['steps']} steps, "
        f"{payload['train_examples']:,} training images; evaluation on "
        f"{payload['test_examples']:,} test images with {s['test_nets']} sampled nets.",
        "",
        markdown_table(headline, list(headline[0]), digits=2),
        "",
        "## Ensembles (majority vote of random subsets of the sampled nets)",
        "",
        markdown_table(ens, ["size", "accuracy % (mean)", "std", "ensembles"], digits=2),
        "",
        "## Paths between sampled nets",
        "",
        markdown_table(path_rows, list(path_rows[0]), digits=2),
        "",
        f"## Targeted FGSM attacks ({attack['images']} test images, each crafted on one of "
        f"{attack['attack_nets']} sampled nets; ensembles of {attack['ensemble_size']})",
        "",
        markdown_table(attacks, list(attacks[0]), digits=3),
        "",
        f"PCA of the gauge-fixed weights: the first components explain "
        f"{', '.join(f'{100 * r:.1f}%' for r in pca['explained_variance_ratio'][:5])} of the "
        f"variance; {pca['components_for_90_percent']} components reach 90%; mean distance "
        f"between nets {pca['mean_pairwise_distance']:.1f} (norm {pca['mean_norm']:.1f}).",
        "",
        *[f"![{f}]({f})" for f in figures],
        "",
        f"Training {payload['train_s']:.0f} s (over every resumed part), analysis "
        f"{payload['analysis_s']:.0f} s.",
        "",
    ])

