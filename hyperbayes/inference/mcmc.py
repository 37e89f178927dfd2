"""The gold-standard reference: NUTS on a BNN (toy sizes), several independent chains."""

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
from tqdm.auto import tqdm

from ..models.priors import ElementwisePrior
from ..sites import concat_init, model_sites, split_sites
from .checks import check_data
from .device import resolve_device, set_seed
from .hmc import potential_and_grad, sample_nuts
from .predict import Prediction, predict_from_samples
from .svi import as_xy
from .trust import emit

__all__ = ["NutsResult", "nuts", "potential_energy", "BACKENDS"]

#: "vectorized": hyperbayes' NUTS (:mod:`hyperbayes.inference.hmc`), every chain in one batched
#: potential; "pyro": Pyro's NUTS kernel, one chain after another (or one per process)
BACKENDS = ("vectorized", "pyro")


@dataclass
class NutsResult:
    """Posterior draws from :func:`nuts`.

    Attributes:
        chain_samples: ``{site: (chains, draws, *shape)}``.
        divergent_draws: indices of the divergent transitions after warm-up, per chain.
        num_warmup: warm-up iterations per chain.
        wall_time_s: seconds for all chains.
        step_sizes: adapted step size per chain.
        sample_stats: per-draw sampler statistics ``{name: (chains, draws)}`` named as ArviZ
            names them (``lp``, ``energy``, ``diverging``, ``tree_depth``, ``n_steps``,
            ``acceptance_rate``, ``step_size``); the ``"pyro"`` backend records only
            ``diverging``.
        backend: the sampler that drew them (see :data:`BACKENDS`).
        x, y: the data the posterior is conditioned on (for log likelihoods, predictive checks).
        inverse_mass: (chains, D) adapted diagonal inverse mass matrix (vectorized backend).
        settings: the sampler settings of the run.
        warnings: why the run should not be trusted as it is (``nuts(..., warn=True)``).
    """

    chain_samples: dict[str, torch.Tensor]
    divergent_draws: list[list[int]]
    num_warmup: int
    wall_time_s: float
    step_sizes: list[float] = field(default_factory=list)
    sample_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    backend: str = "vectorized"
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    inverse_mass: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

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
    """The negative log joint of ``model`` on (x, y) as a function of flat unconstrained vectors.

    Returns ``(sites, potential)``: the guided sites (shapes and transforms, in order) and
    ``potential(z) = −log p(w, y | x) − log|det J|`` for ``z`` of shape (D,) (a scalar) or
    (C, D) (one value per row, all rows in one batched pass of the net). For factorized priors
    the site distributions are built once, so each gradient costs one net evaluation and
    elementwise log densities, with no Pyro tracing (NUTS takes ~10³ gradients per draw);
    other priors (hyper-latents) are traced by Pyro, one row at a time.
    """
    sites = model_sites(model)
    specs = model.net.param_specs
    device = model.device
    if isinstance(model.prior, ElementwisePrior) and not model.prior.hyper_latents(specs):
        priors = {n: model.prior.site_distribution(spec, device) for n, spec in specs.items()}

        def log_prior(params, lead):
            return sum(_sum_event(d.log_prob(params[n]), lead) for n, d in priors.items())
    else:
        def log_prior(params, lead):
            def one(values):
                conditioned = pyro.poutine.condition(model.prior.sample, data=values)
                return pyro.poutine.trace(conditioned).get_trace(specs, device).log_prob_sum()

            if not lead:
                return one(params)
            rows = [one({k: v[c] for k, v in params.items()}) for c in range(lead[0])]
            return torch.stack(rows)
    with pyro.poutine.block(), pyro.poutine.trace() as tracer:
        model.likelihood.sample_latents(device)
    latent_dists = {n: node["fn"] for n, node in tracer.trace.nodes.items()
                    if node["type"] == "sample"}
    target = y.unsqueeze(-1) if model.task == "regression" and y.dim() == 1 else y

    def potential(z: torch.Tensor) -> torch.Tensor:
        lead = tuple(z.shape[:-1])
        unconstrained = split_sites(sites, z)
        params, log_det = {}, 0.0
        for site in sites:
            u = unconstrained[site.name]
            if site.transform is None:
                params[site.name] = u
            else:
                value = site.transform(u)
                log_det = log_det + _sum_event(site.transform.log_abs_det_jacobian(u, value),
                                               lead)
                params[site.name] = value
        log_p = log_prior(params, lead) + log_det
        for n, d in latent_dists.items():
            log_p = log_p + _sum_event(d.log_prob(params[n]), lead)
        outputs = model.net(params, x)
        log_lik = model.likelihood.predictive(outputs, params).log_prob(target)
        return -(log_p + _sum_event(log_lik, lead))

    return sites, potential


def _sum_event(value: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
    """Sum ``value`` over every dim after the leading (batch-of-chains) dims ``lead``."""
    value = torch.as_tensor(value)
    if value.dim() < len(lead):  # a scalar shared by every row
        return value.expand(lead)
    return value.reshape(*lead, -1).sum(-1) if lead else value.sum()


def _compile(potential, shape: tuple[int, ...], device):
    """TorchScript-trace the potential for inputs of ``shape`` (fewer microseconds per gradient
    on toy nets); the plain function where tracing fails or changes the values."""
    example = torch.zeros(shape, device=device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(potential, (example,), check_trace=False)
        probe = torch.randn(shape, device=device)
        if torch.allclose(traced(probe), potential(probe), rtol=1e-4, atol=1e-3):
            return traced
    except RuntimeError:
        pass
    return potential


def compile_value_and_grad(potential, shape: tuple[int, ...], device):
    """``z -> (potential(z), ∇potential(z))`` as one TorchScript graph, or None.

    ``make_fx`` (the tracer under ``torch.compile``'s AOTAutograd) records the forward and
    the backward pass of ``potential`` as one graph of plain ATen ops, which TorchScript then
    runs without autograd bookkeeping or Python dispatch per op (fewer microseconds per
    gradient than autograd on the eager potential; ``benchmarks/nuts.py``). The graph is
    checked against autograd at two random points (values and gradients); where tracing
    fails or disagrees (e.g. Python control flow on values), None: the sampler then uses
    autograd on the eager potential. TorchScript is deprecated in torch 2.13 but works; where
    a later torch removes it, this returns None and sampling goes on, slower.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    def value_and_grad(z):
        return potential_and_grad(potential, z)

    example = torch.zeros(shape, device=device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = make_fx(value_and_grad)(example)
            traced = torch.jit.trace(graph, (example,), check_trace=False)
            try:  # constants folded into the graph: fewer ops per call
                traced = torch.jit.freeze(traced.eval())
            except (RuntimeError, AttributeError):
                pass
        generator = torch.Generator().manual_seed(0)
        for scale in (0.5, 2.0):
            probe = (scale * torch.randn(shape, generator=generator)).to(device)
            for a, b in zip(traced(probe), value_and_grad(probe), strict=True):
                if not torch.allclose(a, b, rtol=1e-4, atol=1e-4 * (1 + float(b.abs().max()))):
                    return None
    except Exception:  # noqa: BLE001  (any tracing failure means: use autograd)
        return None
    return traced


def _constrain(sites, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split draws z (..., D) into constrained per-site values (..., *shape)."""
    unconstrained = split_sites(sites, z)
    return {s.name: unconstrained[s.name] if s.transform is None else s.transform(
        unconstrained[s.name]) for s in sites}


def nuts(model, data, *, num_samples: int = 1000, warmup: int = 1000, num_chains: int = 4,
         seed: int = 0, target_accept: float = 0.8, max_tree_depth: int = 10,
         backend: str = "vectorized", parallel: bool = False, device="cpu",
         progress: bool | None = None, warn: bool = True) -> NutsResult:
    """Sample the exact posterior of ``model`` given ``data`` with NUTS (Hoffman & Gelman, 2014).

    Each chain starts from its own random initialisation (the net's standard init drawn with
    seed ``seed + chain``), so chains that disagree reveal poor mixing. The default backend
    advances every chain in lockstep through one batched, TorchScript-traced potential (see
    :mod:`hyperbayes.inference.hmc` and :func:`potential_energy`); ``backend="pyro"`` runs
    Pyro's NUTS kernel one chain at a time (it records no energies, so no BFMI).

    Args:
        model: a hyperbayes BNN (full-batch: the whole of ``data`` in every gradient).
        data: a Split (``.x``, ``.y``), Dataset (its ``train``) or ``(x, y)`` pair.
        num_samples, warmup: draws kept and warm-up iterations, per chain.
        num_chains: independent chains (≥ 2 for R-hat).
        target_accept, max_tree_depth: NUTS settings.
        backend: ``"vectorized"`` or ``"pyro"``.
        parallel: split the chains over processes, one per CPU core (CPU only; falls back to
            one process when the model cannot be pickled, e.g. a lambda prior). Workers use one
            torch thread. The vectorized backend's chains then draw from other random streams
            than in one process (each group of chains has its own), equally valid.
        device: where to run (``"cpu"`` is usually fastest for toy nets).
        progress: show a progress bar (default: only on a terminal).
        warn: check the run (divergences, R-hat of the predictions at the training inputs,
            bulk ESS, BFMI; :func:`hyperbayes.inference.diagnostics.nuts_warnings`) and warn
            with a :class:`~hyperbayes.inference.diagnostics.PosteriorWarning` for each failure.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    if hasattr(data, "train") and hasattr(data, "test"):
        data = data.train
    x, y = check_data(model, *as_xy(data))
    if num_chains < 1 or num_samples < 1 or warmup < 0:
        raise ValueError("need num_chains ≥ 1, num_samples ≥ 1 and warmup ≥ 0")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept}")
    if max_tree_depth < 1:
        raise ValueError(f"max_tree_depth must be ≥ 1; got {max_tree_depth}")
    if getattr(model.net, "dropout", 0.0) > 0:
        raise ValueError("NUTS needs a deterministic net; this one has MC dropout")
    device = resolve_device(device)
    model.to(device)
    x, y = x.to(device), y.to(device)
    show = progress if progress is not None else _is_terminal()
    settings = {"num_samples": num_samples, "warmup": warmup, "seed": seed,
                "target_accept": target_accept, "max_tree_depth": max_tree_depth}
    start = time.perf_counter()
    workers = min(num_chains, os.cpu_count() or 1)
    groups = ([list(range(num_chains))[g::workers] for g in range(workers)]
              if parallel and workers > 1 and device.type == "cpu" and _picklable(model)
              else None)
    run_group = _run_group if backend == "vectorized" else _run_pyro_chains
    if groups is not None:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            parts = list(pool.map(_group_in_worker, [(run_group, model, x, y, g, settings)
                                                     for g in groups]))
        order = [c for g in groups for c in g]
        parts = _reorder(parts, order)
    else:
        parts = run_group(model, x, y, list(range(num_chains)), settings, show)
    chain_samples, stats, step_sizes, inverse_mass = parts
    diverging = stats["diverging"]
    divergent = [diverging[c].nonzero().squeeze(1).tolist() for c in range(num_chains)]
    result = NutsResult(chain_samples, divergent, warmup, time.perf_counter() - start,
                        step_sizes, stats, backend, x, y, inverse_mass,
                        {**settings, "num_chains": num_chains, "parallel": groups is not None})
    if warn:
        from .diagnostics import nuts_warnings  # ArviZ is imported only when needed

        result.warnings = nuts_warnings(model, result)
        emit(result.warnings)
    return result


def _reorder(parts: list, order: list[int]):
    """Join per-process results (chains in ``order``) into chain order 0 … C − 1."""
    back = torch.tensor(order).argsort()
    samples = {k: torch.cat([p[0][k] for p in parts])[back] for k in parts[0][0]}
    stats = {k: torch.cat([p[1][k] for p in parts])[back] for k in parts[0][1]}
    steps = [s for p in parts for s in p[2]]
    steps = [steps[i] for i in back.tolist()]
    mass = None if parts[0][3] is None else torch.cat([p[3] for p in parts])[back]
    return samples, stats, steps, mass


def _group_in_worker(args):
    """Process-pool entry point: a group of chains with one torch thread."""
    run_group, model, x, y, chains, settings = args
    torch.set_num_threads(1)
    return run_group(model, x, y, chains, settings, False)


def _run_group(model, x, y, chains: list[int], settings: dict, show: bool):
    """The vectorized backend on ``chains``: (draws per site (C, S, ...), statistics (C, S),
    step sizes, inverse mass (C, D))."""
    device = x.device
    with pyro.validation_enabled(False):  # no support checks inside ~10⁶ log densities
        sites, potential = potential_energy(model, x, y)
        dim = sum(s.numel for s in sites)
        value_and_grad = compile_value_and_grad(potential, (len(chains), dim), device)
        z0 = torch.stack([concat_init(model_sites(model, torch.Generator().manual_seed(
            settings["seed"] + c))) for c in chains]).to(device)
        total = settings["warmup"] + settings["num_samples"]
        with tqdm(total=total, disable=not show, desc="nuts", leave=False,
                  dynamic_ncols=True) as bar:
            draws = sample_nuts(potential, z0, num_samples=settings["num_samples"],
                                warmup=settings["warmup"],
                                target_accept=settings["target_accept"],
                                max_tree_depth=settings["max_tree_depth"],
                                seed=settings["seed"] * 7919 + chains[0],
                                progress=lambda _: bar.update(),
                                value_and_grad=value_and_grad,
                                fuse=value_and_grad is not None)
    samples = _constrain(sites, draws.z.detach())
    stats = {k: v.cpu() for k, v in draws.stats.items()}
    return samples, stats, draws.step_size.tolist(), draws.inverse_mass.cpu()


def _run_pyro_chains(model, x, y, chains: list[int], settings: dict, show: bool):
    """The Pyro backend on ``chains``, one after another (same return value as _run_group)."""
    runs = [_run_chain(model, x, y, c, settings, show) for c in chains]
    samples = {k: torch.stack([r[0][k] for r in runs]) for k in runs[0][0]}
    diverging = torch.zeros(len(chains), settings["num_samples"], dtype=torch.bool)
    for i, r in enumerate(runs):
        diverging[i, r[1]] = True
    return samples, {"diverging": diverging}, [r[2] for r in runs], None


def _picklable(obj) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:  # lambdas, local classes, open handles ...
        return False
    return True


def _run_chain(model, x, y, chain: int, settings: dict, show: bool):
    """One chain of Pyro's NUTS: (constrained draws, divergent draw indices, step size)."""
    num_samples, warmup, seed, target_accept, max_tree_depth = (
        settings[k] for k in ("num_samples", "warmup", "seed", "target_accept",
                              "max_tree_depth"))
    device = x.device
    with pyro.validation_enabled(False):  # no support checks inside ~10⁶ log densities
        sites, potential = potential_energy(model, x, y)
        potential = _compile(potential, (sum(s.numel for s in sites),), device)
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
