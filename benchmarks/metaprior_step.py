"""MetaPrior costs: its SVI step as a ratio to a plain-PyTorch MAP step on the same net, the
factorized hyperprior against the naive concatenation, and the peak memory of one SVI step.

    python benchmarks/metaprior_step.py [--quick] [--device auto] \
        --out results/benchmarks/metaprior_step.json

* step ratio: 784-100-10 ReLU, batch 128, codes D = 10, hyperprior 32 hidden units (Gaussian
  P(w | z)), mean-field Q over the codes, one sample; the plain MAP step (nn.Linear, Adam) on the
  same net is timed interleaved in the same run;
* ``metaprior_sin``: the same with the MNIST experiments' hyperprior (sin units, rescaled at the
  start), whose pairs are one matrix product (sin(a + b) = sin a cos b + cos a sin b);
* factorized vs naive: forward + backward of generating every weight of that net from its codes,
  for the tanh and the sin hyperprior;
* peak memory: one SVI step on 784-800-800-10 (S = 1, batch 128), measured in a fresh process as
  the growth of peak resident memory over the step (CPU) or ``torch.cuda.max_memory_allocated``
  (GPU).
Inputs are random tensors of MNIST's shape: step time does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import pyro
import torch
from svi_step import BATCH, _interleaved_medians, _sync, plain_map_step, svi_step

import hyperbayes as hb
from hyperbayes.experiments.common import machine_info, write_json
from hyperbayes.models import MLP, priors

SMALL = [784, 100, 10]
LARGE = [784, 800, 800, 10]
CODE_DIM, HYPER_HIDDEN = 10, 32


# the hyperprior of the MNIST experiments: the MetaPrior's classification recipe
SIN = {k: v for k, v in hb.methods.get("metaprior").recipe("classification").options.items()
       if k in ("activation", "init_frequency", "init_mean_scale")}


def metaprior_options(sizes, **extra):
    """Build options of the benchmarked MetaPrior (tanh g unless ``extra`` says otherwise)."""
    return {"net": MLP(sizes), "prior": priors.Flat(), "code_dim": CODE_DIM,
            "hidden": HYPER_HIDDEN, **extra}


def generation_steppers(device, suffix="", **extra):
    """Forward + backward through g for all weights of 784-100-10: factorized and naive."""
    model, guide, _ = hb.methods.build("metaprior", **{
        k: v for k, v in metaprior_options(SMALL, **extra).items() if k not in ("net", "prior")},
        net=MLP(SMALL), prior=priors.Flat(), likelihood=hb.models.Categorical())
    model.to(device)
    g = model.prior.g
    codes = {k: v.to(device) for k, v in guide.locs().items()}
    pairs = [("codes.1", "codes.0"), ("codes.2", "codes.1")]

    def run(fn):
        def step():
            g.zero_grad(set_to_none=True)
            total = 0.0
            for out, inp in pairs:
                total = total + fn(codes[out], codes[inp]).sum() + fn(codes[out], None).sum()
            total.backward()
        return step

    return {"factorized" + suffix: run(g.forward), "naive" + suffix: run(g.naive)}


def _status_bytes(field: str) -> int:
    """A memory line of /proc/self/status (reported in kB) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_memory_child(device_name: str) -> dict:
    """Run in a fresh process: memory growth over one SVI step on the large net."""
    device = hb.inference.resolve_device(device_name)
    pyro.enable_validation(False)
    x = torch.rand(BATCH, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    step, model, guide = svi_step("metaprior", x, y, device, **metaprior_options(LARGE))
    num_weights = model.net.num_params
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        how = "torch.cuda.max_memory_allocated over the step minus allocated before it"
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")   # reset the peak resident set (VmHWM)
        before = _status_bytes("VmRSS")
        step()
        peak = _status_bytes("VmHWM") - before
        how = ("peak resident set during the first SVI step (VmHWM, reset just before it) minus "
               "the resident set before it; includes creating Adam's state")
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        how = ("growth of the process's peak resident set over the first step (a lower bound: "
               "building the model may have peaked higher)")
    return {"net": LARGE, "num_weights": num_weights, "peak_bytes": peak,
            "peak_gb": peak / 1e9, "how": how}


def main(argv=None) -> int:
    """Run the benchmark and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path,
                        default=Path("results/benchmarks/metaprior_step.json"))
    parser.add_argument("--peak-memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak_memory_child:
        print(json.dumps(peak_memory_child(args.device)))
        return 0
    device = hb.inference.resolve_device(args.device)
    rounds, per_round, warmup = (3, 4, 3) if args.quick else (12, 6, 5)
    torch.manual_seed(0)
    x = torch.rand(BATCH, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    pyro.enable_validation(False)
    steppers = {"plain_map": plain_map_step(x, y, device, sizes=SMALL),
                "plain_map_fused_adam": plain_map_step(x, y, device, fused=True, sizes=SMALL)}
    steppers["map"] = svi_step("map", x, y, device, net=MLP(SMALL))[0]
    steppers["meanfield"] = svi_step("meanfield", x, y, device, net=MLP(SMALL))[0]
    steppers["metaprior"] = svi_step("metaprior", x, y, device, **metaprior_options(SMALL))[0]
    steppers["metaprior_implicit"] = svi_step("metaprior", x, y, device, variant="implicit",
                                              **metaprior_options(SMALL))[0]
    steppers["metaprior_sin"] = svi_step("metaprior", x, y, device,
                                         **metaprior_options(SMALL, **SIN))[0]
    step_s = _interleaved_medians(steppers, rounds, per_round, warmup, device)
    generation = _interleaved_medians(
        {**generation_steppers(device), **generation_steppers(device, "_sin", **SIN)},
        rounds, per_round, warmup, device)
    _sync(device)
    child = subprocess.run([sys.executable, __file__, "--peak-memory-child", "--device",
                            str(device)], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).parent)
    memory = json.loads(child.stdout.strip().splitlines()[-1])
    map_step = step_s.pop("plain_map")
    result = {
        "net": SMALL, "batch_size": BATCH, "code_dim": CODE_DIM, "hyper_hidden": HYPER_HIDDEN,
        "device": str(device), "quick": args.quick,
        "map_step_s": map_step, "step_s": step_s,
        "ratios": {k: v / map_step for k, v in step_s.items()},
        "generation_s": generation,
        "factorized_speedup": generation["naive"] / generation["factorized"],
        "factorized_speedup_sin": generation["naive_sin"] / generation["factorized_sin"],
        "peak_memory_large_net": memory,
        "machine": machine_info(),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}: ratios {({k: round(v, 2) for k, v in result['ratios'].items()})}, "
          f"factorized g {result['factorized_speedup']:.2f}x (tanh) and "
          f"{result['factorized_speedup_sin']:.2f}x (sin) faster than naive, peak memory "
          f"{memory['peak_gb']:.2f} GB on {LARGE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
