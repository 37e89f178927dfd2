"""The gold-standard reference: Pyro NUTS on a BNN (toy sizes), several independent chains."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value

from .device import resolve_device, set_seed
from .predict import Prediction, predict_from_samples
from .svi import as_xy

__all__ = ["NutsResult", "nuts"]


@dataclass
class NutsResult:
    """Posterior draws from :func:`nuts`.

    Attributes:
        chain_samples: ``{site: (chains, draws, *shape)}``.
        divergences: number of divergent transitions after warm-up, per chain.
        num_warmup: warm-up iterations per chain.
        wall_time_s: seconds for all chains.
        step_sizes: adapted step size per chain.
    """

    chain_samples: dict[str, torch.Tensor]
    divergences: list[int]
    num_warmup: int
    wall_time_s: float
    step_sizes: list[float] = field(default_factory=list)

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


def _initial_values(model, generator) -> dict[str, torch.Tensor]:
    """A chain's starting point: the net's standard random initialisation, prior draws otherwise."""
    init = model.net.init_params(generator)
    with torch.no_grad(), pyro.poutine.block():
        trace = pyro.poutine.trace(model.sample_params).get_trace()
    for name, node in trace.nodes.items():
        if node["type"] == "sample" and name not in init:
            init[name] = node["value"].detach()
    return {k: v.to(model.device) for k, v in init.items()}


def nuts(model, data, *, num_samples: int = 1000, warmup: int = 1000, num_chains: int = 4,
         seed: int = 0, target_accept: float = 0.8, max_tree_depth: int = 10,
         jit: bool = True, device="cpu", progress: bool | None = None) -> NutsResult:
    """Sample the exact posterior of ``model`` given ``data`` with NUTS (Hoffman & Gelman, 2014).

    Chains run one after another, each from its own random initialisation (the net's standard
    init drawn with seed ``seed + chain``), so chains that disagree reveal poor mixing.

    Args:
        model: a hyperbayes BNN (full-batch: the whole of ``data`` in every gradient).
        data: a Split (``.x``, ``.y``), Dataset (its ``train``) or ``(x, y)`` pair.
        num_samples, warmup: draws kept and warm-up iterations, per chain.
        num_chains: independent chains (≥ 2 for R-hat).
        target_accept, max_tree_depth: NUTS settings.
        jit: compile the potential energy with the PyTorch JIT (faster for small nets).
        device: where to run (``"cpu"`` is usually fastest for toy nets).
        progress: show Pyro's progress bar (default: only on a terminal).
    """
    if hasattr(data, "train") and hasattr(data, "test"):
        data = data.train
    x, y = as_xy(data)
    if num_chains < 1 or num_samples < 1 or warmup < 0:
        raise ValueError("need num_chains ≥ 1, num_samples ≥ 1 and warmup ≥ 0")
    device = resolve_device(device)
    model.to(device)
    x, y = x.to(device), y.to(device)
    show = progress if progress is not None else _is_terminal()
    per_chain, divergences, step_sizes = [], [], []
    start = time.perf_counter()
    for chain in range(num_chains):
        set_seed(seed + chain)
        generator = torch.Generator().manual_seed(seed + chain)
        kernel = NUTS(model, target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                      jit_compile=jit, ignore_jit_warnings=True,
                      init_strategy=init_to_value(values=_initial_values(model, generator)))
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, num_chains=1,
                    disable_progbar=not show)
        mcmc.run(x, y)
        per_chain.append({k: v.detach() for k, v in mcmc.get_samples().items()})
        diag = mcmc.diagnostics()
        divergences.append(sum(len(v) for v in diag.get("divergences", {}).values()))
        step_sizes.append(float(kernel.step_size))
    chain_samples = {k: torch.stack([c[k] for c in per_chain]) for k in per_chain[0]}
    return NutsResult(chain_samples, divergences, warmup, time.perf_counter() - start, step_sizes)


def _is_terminal() -> bool:
    import sys

    return sys.stderr.isatty()
