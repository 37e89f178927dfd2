"""NUTS reference: hyperbayes' vectorized sampler against Pyro's NUTS kernel, in one run.

    python benchmarks/nuts.py [--quick] --out results/benchmarks/nuts.json

Two problems, each sampled by both backends of ``hb.inference.nuts`` on the CPU:

1. **Conjugate regression** (``hb.models.conjugate_regression()``: 40 points, 3 inputs and a
   bias, known noise; 4 parameters), 4 chains × 1,000 draws after 1,000 warm-up iterations.
   Reported beside each time: the largest error of the posterior mean and covariance against
   the closed form, in units of the Monte Carlo standard error of the mean from the bulk ESS.
2. **The toy-regression reference** (``hyperbayes run toy-regression``'s NUTS: a 1-50-1 tanh
   net, 151 parameters, fan-in normal prior, the cubic toy), 4 chains × 200 draws after 200
   warm-up iterations, tree depth ≤ 6, as that experiment runs it (Pyro's chains one per
   process, ``parallel=True``, was the implementation before this benchmark).

For every run: wall time (process start-up for parallel chains included), bulk ESS (the
minimum over the parameters, or over the predictions f(x) at 50 test inputs for the net, whose
weights are not identifiable) and bulk ESS per second, leapfrog steps and divergences. Writes
JSON with the times, the ratios Pyro / vectorized and whether the issue's targets are met
(conjugate ≤ 15 s; toy ≥ 3× faster than before).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

import hyperbayes as hb
from hyperbayes.experiments.common import machine_info, write_json
from hyperbayes.models import BNN, MLP, Gaussian, conjugate_regression, priors

CONJUGATE_TARGET_S = 15.0
TOY_TARGET_SPEEDUP = 3.0


def _bulk_ess(chains: torch.Tensor) -> np.ndarray:
    """Bulk ESS of each column of draws (chains, draws, K)."""
    from hyperbayes.inference.diagnostics import az

    values = chains.detach().double().cpu().numpy()
    return np.asarray([float(az.ess(values[..., k], method="bulk"))
                       for k in range(values.shape[-1])])


def _summary(result, ess: np.ndarray) -> dict:
    stats = result.sample_stats
    out = {"wall_s": result.wall_time_s, "min_bulk_ess": float(ess.min()),
           "median_bulk_ess": float(np.median(ess)),
           "min_bulk_ess_per_s": float(ess.min()) / result.wall_time_s,
           "divergences": int(sum(result.divergences)), "step_sizes": result.step_sizes,
           "parallel": result.settings.get("parallel", False)}
    if "n_steps" in stats:
        out["leapfrog_steps_per_draw"] = float(stats["n_steps"].double().mean())
        out["mean_tree_depth"] = float(stats["tree_depth"].double().mean())
    return out


def conjugate(backend: str, draws: int, warmup: int, parallel: bool) -> dict:
    """Sample the conjugate regression; times, ESS and errors against the closed form."""
    problem = conjugate_regression()
    result = hb.inference.nuts(problem.model, problem.data, num_samples=draws, warmup=warmup,
                               num_chains=4, seed=0, backend=backend, parallel=parallel,
                               warn=False, progress=False)
    flat = problem.flatten(result.samples).reshape(4, draws, -1)
    ess = _bulk_ess(flat)
    pooled = flat.reshape(-1, flat.shape[-1])
    mcse = pooled.std(0) / torch.from_numpy(ess).sqrt()
    out = _summary(result, ess)
    out["mean_error_in_mcse"] = float(((pooled.mean(0) - problem.mean).abs() / mcse).max())
    out["cov_max_abs_error"] = float((torch.cov(pooled.T) - problem.cov).abs().max())
    out["cov_max_abs"] = float(problem.cov.abs().max())
    return out


def toy(backend: str, draws: int, warmup: int, parallel: bool) -> dict:
    """Sample the toy-regression reference (as ``toy_regression.run`` does); times and ESS."""
    data = hb.datasets.load("cubic")
    lo, hi = data.info["train_range"]
    center, scale = (lo + hi) / 2, (hi - lo) / 2
    y_scale = float(data.train.y.std())
    train = ((data.train.x - center) / scale, data.train.y / y_scale)
    grid = ((torch.linspace(lo, hi, 50).unsqueeze(-1)) - center) / scale
    model = BNN(MLP([1, 50, 1]), priors.FanInNormal(1.0),
                Gaussian(scale=data.info["noise_std"] / y_scale))
    result = hb.inference.nuts(model, train, num_samples=draws, warmup=warmup, num_chains=4,
                               seed=0, max_tree_depth=6, backend=backend, parallel=parallel,
                               warn=False, progress=False)
    f = torch.stack([result.predict(model, grid).f.reshape(4, draws, -1)[c]
                     for c in range(4)])
    return _summary(result, _bulk_ess(f))


def main(argv=None) -> dict:
    """Run the benchmark and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the iterations")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/nuts.json"))
    args = parser.parse_args(argv)
    div = 10 if args.quick else 1
    torch.set_num_threads(min(2, torch.get_num_threads()))
    warnings.simplefilter("ignore")
    runs = {
        "conjugate": {
            "pyro": conjugate("pyro", 1000 // div, 1000 // div, parallel=False),
            "pyro_parallel": conjugate("pyro", 1000 // div, 1000 // div, parallel=True),
            "vectorized": conjugate("vectorized", 1000 // div, 1000 // div, parallel=False),
            "vectorized_parallel": conjugate("vectorized", 1000 // div, 1000 // div,
                                             parallel=True),
        },
        "toy": {
            "pyro_parallel": toy("pyro", 200 // div, 200 // div, parallel=True),
            "vectorized": toy("vectorized", 200 // div, 200 // div, parallel=False),
            "vectorized_parallel": toy("vectorized", 200 // div, 200 // div, parallel=True),
        },
    }
    for by_backend in runs.values():
        base = by_backend["pyro_parallel"]["wall_s"]
        for entry in by_backend.values():
            entry["speedup_vs_pyro_parallel"] = base / entry["wall_s"]
    conj = runs["conjugate"]
    best_conj = min(conj["vectorized"]["wall_s"], conj["vectorized_parallel"]["wall_s"])
    toy_runs = runs["toy"]
    best_toy = max(toy_runs["vectorized"]["speedup_vs_pyro_parallel"],
                   toy_runs["vectorized_parallel"]["speedup_vs_pyro_parallel"])
    payload = {
        "benchmark": "nuts", "quick": args.quick, "machine": machine_info(),
        "torch_threads": torch.get_num_threads(), "runs": runs,
        "targets": {"conjugate_wall_s": CONJUGATE_TARGET_S,
                    "toy_speedup_vs_before": TOY_TARGET_SPEEDUP},
        "meets_target": {"conjugate": best_conj <= CONJUGATE_TARGET_S,
                         "toy": best_toy >= TOY_TARGET_SPEEDUP},
    }
    write_json(args.out, payload)
    for problem, by_backend in runs.items():
        for name, entry in by_backend.items():
            print(f"{problem:9s} {name:20s} {entry['wall_s']:7.1f} s  min bulk ESS "
                  f"{entry['min_bulk_ess']:7.0f}  ESS/s {entry['min_bulk_ess_per_s']:7.1f}",
                  file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()
