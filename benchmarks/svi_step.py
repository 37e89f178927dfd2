"""SVI step cost of every method as a ratio to a plain-PyTorch MAP step on the same net, plus the
speed-up of batched MC prediction over a Python loop.

    python benchmarks/svi_step.py [--quick] [--device auto] --out results/benchmarks/svi_step.json

Net 784-800-800-10 ReLU, batch 128, Adam. Inputs are random tensors of MNIST's shape: step time
does not depend on pixel values. Every timing is a median over repeated steps after warm-up, and
the MAP reference is measured in the same run (before and after the methods) so ratios are
comparable across machines. Writes JSON: {"map_step_s", "ratios": {method: ratio},
"predict_speedup", ...}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

import hyperbayes as hb
from hyperbayes.experiments.common import machine_info, write_json
from hyperbayes.models import MLP, Categorical, priors

SIZES = [784, 800, 800, 10]
BATCH = 128
DATASET_SIZE = 50_000


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(step, repeats: int, warmup: int, device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plain_map_step(x, y, device):
    """A plain-PyTorch MAP step: nn.Linear stack, N·cross-entropy + ½‖w‖² (N(0,1) prior), Adam."""
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).to(device)
    optim = torch.optim.Adam(net.parameters(), lr=1e-3)
    params = list(net.parameters())

    def step():
        optim.zero_grad(set_to_none=True)
        logits = net(x.flatten(1))
        loss = torch.nn.functional.cross_entropy(logits, y) * DATASET_SIZE
        loss = loss + 0.5 * sum((p * p).sum() for p in params)
        loss.backward()
        optim.step()

    return step


def svi_step(name, x, y, device, **options):
    """One hyperbayes SVI step of method ``name``: the body of ``hb.inference.fit``'s loop."""
    model, guide, loss = hb.methods.build(name, MLP(SIZES), priors.Normal(1.0), Categorical(),
                                          **options)
    model.to(device)
    guide.to(device)
    params = list(model.parameters()) + list(guide.parameters())
    optim = torch.optim.Adam(params, lr=1e-3)

    def step():
        optim.zero_grad(set_to_none=True)
        value = loss.differentiable_loss(model, guide, x, y, DATASET_SIZE)
        value.backward()
        optim.step()

    return step, model, guide


def main(argv=None) -> int:
    """Run the benchmark and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/svi_step.json"))
    args = parser.parse_args(argv)
    device = hb.inference.resolve_device(args.device)
    repeats, warmup = (10, 3) if args.quick else (40, 8)
    torch.manual_seed(0)
    x = torch.rand(BATCH, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    pyro.enable_validation(False)  # as in hb.inference.fit after its first step

    methods = {"map": {}, "meanfield": {}, "meanfield_lrt": {"local_reparameterization": True},
               "mcdropout": {"dropout": 0.5}}
    map_before = _median_time(plain_map_step(x, y, device), repeats, warmup, device)
    step_s = {}
    steppers = {}
    for label, options in methods.items():
        name = "meanfield" if label == "meanfield_lrt" else label
        step, model, guide = svi_step(name, x, y, device, **options)
        steppers[label] = (model, guide)
        step_s[label] = _median_time(step, repeats, warmup, device)
        print(f"{label:15s} {step_s[label] * 1e3:8.2f} ms", file=sys.stderr)
    map_after = _median_time(plain_map_step(x, y, device), repeats, warmup, device)
    map_step = 0.5 * (map_before + map_after)
    print(f"{'plain MAP':15s} {map_step * 1e3:8.2f} ms (before {map_before * 1e3:.2f}, after "
          f"{map_after * 1e3:.2f})", file=sys.stderr)

    # Batched MC prediction (S = 100 in one pass) vs a Python loop of S single-sample passes.
    model, guide = steppers["meanfield"]
    num_samples, x_test = 100, torch.rand(256, 1, 28, 28, device=device)

    def batched():
        hb.inference.predict(model, guide, x_test, num_samples)

    def looped():
        for _ in range(num_samples):
            hb.inference.predict(model, guide, x_test, 1)

    reps = 3 if args.quick else 7
    batched_s = _median_time(batched, reps, 1, device)
    looped_s = _median_time(looped, reps, 1, device)

    result = {
        "net": SIZES, "batch_size": BATCH, "device": str(device), "quick": args.quick,
        "map_step_s": map_step, "map_step_s_before": map_before, "map_step_s_after": map_after,
        "step_s": step_s,
        "ratios": {k: v / map_step for k, v in step_s.items()},
        "predict_samples": num_samples, "predict_inputs": len(x_test),
        "predict_batched_s": batched_s, "predict_loop_s": looped_s,
        "predict_speedup": looped_s / batched_s,
        "machine": machine_info(),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}: ratios {({k: round(v, 2) for k, v in result['ratios'].items()})}, "
          f"predict speed-up {result['predict_speedup']:.1f}×", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
