"""The gold-standard reference: Pyro NUTS on a BNN (toy sizes), several independent chains."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import MCMC, NUTS

from ..models.priors import ElementwisePrior
from ..sites import concat_init, model_sites, split_sites
from .checks import check_data
from .device import resolve_device, set_seed
from .predict import Prediction, predict_from_samples
from .svi import as_xy

__all__ = ["NutsResult", "nuts", "potential_energy"]


@dataclass
class NutsResult:
    """Posterior draws from :func:`nuts`.

    Attributes:
        chain_samples: ``{site: (chains, draws, *shape)}``.
        divergent_draws: indices of the divergent transitions after warm-up, per chain.
        num_warmup: warm-up iterations per chain.
        wall_time_s: seconds for all chains.
        step_sizes: adapted step size per chain.
    """

    chain_samples: dict[str, torch.Tensor]
    divergent_draws: list[list[int]]
    num_warmup: int
    wall_time_s: float
    step_sizes: list[float] = field(default_factory=list)

    @property
    def divergences(self) -> list[int]:
        """Number of divergent transitions after warm-up, per chain."""
        return [len(d) for d in self.divergent_draws]

    @property
    def num_chains(self) -> int:
        """Number of chains."""
        return next(iter(self.chain_samples.values())).shape[0]

    @property
    def num_draws(self) -> int:
        """Draws per chain after warm-up."""
        return next(iter(self.chain_samples.values())).shape[1]

    @property
    def samples(self) -> dict[str, torch.Tensor]:
        """All chains pooled: ``{site: (chains · draws, *shape)}``."""
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.chain_samples.items()}

    def predict(self, model, x: torch.Tensor, batch_size: int | None = 2048) -> Prediction:
        """The posterior predictive at ``x`` from every pooled draw (chain-major order)."""
        return predict_from_samples(model, self.samples, x, batch_size=batch_size)


def potential_energy(model, x: torch.Tensor, y: torch.Tensor):
    """The negative log joint of ``model`` on (x, y) as a function of one flat unconstrained vector.

    Returns ``(sites, potential)``: the guided sites (shapes and transforms, in order) and
    ``potential(z) = −log p(w, y | x) − log|det J|`` for ``z`` of shape (D,). For factorized
    priors the site distributions are built once, so each gradient costs one net evaluation and
    elementwise log densities, with no Pyro tracing (NUTS takes ~10³ gradients per draw).
    """
    sites = model_sites(model)
    specs = model.net.param_specs
    device = model.device
    if isinstance(model.prior, ElementwisePrior) and not model.prior.hyper_latents(specs):
        priors = {n: model.prior.site_distribution(spec, device) for n, spec in specs.items()}

        def log_prior(params):
            return sum(d.log_prob(params[n]) for n, d in priors.items())
    else:
        def log_prior(params):
            conditioned = pyro.poutine.condition(model.prior.sample, data=params)
            trace = pyro.poutine.trace(conditioned).get_trace(specs, device)
            return trace.log_prob_sum()
    with pyro.poutine.block(), pyro.poutine.trace() as tracer:
        model.likelihood.sample_latents(device)
    latent_dists = {n: node["fn"] for n, node in tracer.trace.nodes.items()
                    if node["type"] == "sample"}

    def potential(z: torch.Tensor) -> torch.Tensor:
        unconstrained = split_sites(sites, z)
        params, log_det = {}, 0.0
        for site in sites:
            u = unconstrained[site.name]
            if site.transform is None:
                params[site.name] = u
            else:
                value = site.transform(u)
                log_det = log_det + site.transform.log_abs_det_jacobian(u, value).sum()
                params[site.name] = value
        log_p = log_prior(params) + log_det
        for n, d in latent_dists.items():
            log_p = log_p + d.log_prob(params[n]).sum()
        outputs = model.net(params, x)
        target = y.unsqueeze(-1) if model.task == "regression" and y.dim() == 1 else y
        log_p = log_p + model.likelihood.predictive(outputs, params).log_prob(target).sum()
        return -log_p

    return sites, potential


def _compile(potential, dim: int, device):
    """TorchScript-trace the potential (≈2× fewer microseconds per gradient on toy nets)."""
    example = torch.zeros(dim, device=device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(potential, (example,), check_trace=False)
        probe = torch.randn(dim, device=device)
        if torch.allclose(traced(probe), potential(probe), rtol=1e-4, atol=1e-3):
            return traced
    except RuntimeError:
        pass
    return potential


def _constrain(sites, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split draws z (..., D) into constrained per-site values (..., *shape)."""
    unconstrained = split_sites(sites, z)
    return {s.name: unconstrained[s.name] if s.transform is None else s.transform(
        unconstrained[s.name]) for s in sites}


def nuts(model, data, *, num_samples: int = 1000, warmup: int = 1000, num_chains: int = 4,
         seed: int = 0, target_accept: float = 0.8, max_tree_depth: int = 10,
         parallel: bool = False, device="cpu", progress: bool | None = None) -> NutsResult:
    """Sample the exact posterior of ``model`` given ``data`` with NUTS (Hoffman & Gelman, 2014).

    Each chain starts from its own random initialisation (the net's standard init drawn with
    seed ``seed + chain``), so chains that disagree reveal poor mixing. The potential energy is
    a TorchScript-traced function of one flat vector (see :func:`potential_energy`).

    Args:
        model: a hyperbayes BNN (full-batch: the whole of ``data`` in every gradient).
        data: a Split (``.x``, ``.y``), Dataset (its ``train``) or ``(x, y)`` pair.
        num_samples, warmup: draws kept and warm-up iterations, per chain.
        num_chains: independent chains (≥ 2 for R-hat).
        target_accept, max_tree_depth: NUTS settings.
        parallel: run chains in separate processes, one per CPU core (CPU only; falls back to
            one after another when the model cannot be pickled, e.g. a lambda prior). Chains get
            the same seeds either way; workers use one torch thread, so floating-point sums (and
            then the chains) can differ slightly from a sequential run.
        device: where to run (``"cpu"`` is usually fastest for toy nets).
        progress: show Pyro's progress bar (default: only on a terminal).
    """
    if hasattr(data, "train") and hasattr(data, "test"):
        data = data.train
    x, y = check_data(model, *as_xy(data))
    if num_chains < 1 or num_samples < 1 or warmup < 0:
        raise ValueError("need num_chains ≥ 1, num_samples ≥ 1 and warmup ≥ 0")
    if getattr(model.net, "dropout", 0.0) > 0:
        raise ValueError("NUTS needs a deterministic net; this one has MC dropout")
    device = resolve_device(device)
    model.to(device)
    x, y = x.to(device), y.to(device)
    show = progress if progress is not None else _is_terminal()
    settings = (num_samples, warmup, seed, target_accept, max_tree_depth)
    start = time.perf_counter()
    workers = min(num_chains, os.cpu_count() or 1)
    chains = None
    if parallel and workers > 1 and device.type == "cpu" and _picklable(model):
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            chains = list(pool.map(_chain_in_worker, [(model, x, y, c, settings)
                                                       for c in range(num_chains)]))
    if chains is None:
        chains = [_run_chain(model, x, y, c, settings, show) for c in range(num_chains)]
    chain_samples = {k: torch.stack([c[0][k] for c in chains]) for k in chains[0][0]}
    return NutsResult(chain_samples, [c[1] for c in chains], warmup,
                      time.perf_counter() - start, [c[2] for c in chains])


def _picklable(obj) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:  # lambdas, local classes, open handles ...
        return False
    return True


def _chain_in_worker(args):
    """Process-pool entry point: one chain with one torch thread."""
    model, x, y, chain, settings = args
    torch.set_num_threads(1)
    return _run_chain(model, x, y, chain, settings, False)


def _run_chain(model, x, y, chain: int, settings, show: bool):
    """One NUTS chain: (constrained draws, divergent draw indices, adapted step size)."""
    num_samples, warmup, seed, target_accept, max_tree_depth = settings
    device = x.device
    with pyro.validation_enabled(False):  # no support checks inside ~10⁶ log densities
        sites, potential = potential_energy(model, x, y)
        potential = _compile(potential, sum(s.numel for s in sites), device)
        set_seed(seed + chain)
        # Each chain starts from the net's standard random initialisation with its own seed.
        init = model_sites(model, torch.Generator().manual_seed(seed + chain))
        z0 = concat_init(init).to(device)
        kernel = NUTS(potential_fn=lambda p: potential(p["z"]), target_accept_prob=target_accept,
                      max_tree_depth=max_tree_depth)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, num_chains=1,
                    initial_params={"z": z0}, disable_progbar=not show)
        mcmc.run()
    draws = _constrain(sites, mcmc.get_samples()["z"].detach())
    divergent = sorted(int(i) for v in mcmc.diagnostics().get("divergences", {}).values()
                       for i in v)
    return draws, divergent, float(kernel.step_size)


def _is_terminal() -> bool:
    return sys.stderr.isatty()
