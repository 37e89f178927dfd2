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
from hyperbayes.inference.svi import make_adam
from hyperbayes.models import MLP, Categorical, priors

SIZES = [784, 800, 800, 10]
BATCH = 128
DATASET_SIZE = 50_000
FLOW_COUPLINGS = (0, 2, 4, 8)


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


def plain_map_step(x, y, device, fused: bool = False, sizes=SIZES):
    """A plain-PyTorch MAP step: nn.Linear stack, N·cross-entropy + ½‖w‖² (N(0,1) prior), Adam
    (torch's default implementation, or its fused kernel with ``fused=True``)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).to(device)
    optim = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused or None)
    params = list(net.parameters())

    def step():
        optim.zero_grad(set_to_none=True)
        logits = net(x.flatten(1))
        loss = torch.nn.functional.cross_entropy(logits, y) * DATASET_SIZE
        loss = loss + 0.5 * sum((p * p).sum() for p in params)
        loss.backward()
        optim.step()

    return step


def svi_step(name, x, y, device, net=None, prior=None, **options):
    """One hyperbayes SVI step of method ``name``: the body of ``hb.inference.fit``'s loop."""
    model, guide, loss = hb.methods.build(name, net or MLP(SIZES), prior or priors.Normal(1.0),
                                          Categorical(), **options)
    model.to(device)
    guide.to(device)
    params = list(model.parameters()) + list(guide.parameters())
    optim = make_adam(params, lr=1e-3)  # exactly what hb.inference.fit uses

    def step():
        optim.zero_grad(set_to_none=True)
        value = loss.differentiable_loss(model, guide, x, y, DATASET_SIZE)
        value.backward()
        optim.step()

    return step, model, guide


def _interleaved_medians(steppers: dict, rounds: int, per_round: int, warmup: int, device):
    """Median step time of each stepper, measured round-robin so drift hits all alike."""
    for step in steppers.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, step in steppers.items():
            _sync(device)
            for _ in range(per_round):
                t0 = time.perf_counter()
                step()
                _sync(device)
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _predict_speedup(model, guide, x_test, num_samples, reps, device):
    """Seconds for S samples in one batched predict vs a Python loop of S single-sample calls."""
    def batched():
        hb.inference.predict(model, guide, x_test, num_samples)

    def looped():
        for _ in range(num_samples):
            hb.inference.predict(model, guide, x_test, 1)

    batched_s = _median_time(batched, reps, 1, device)
    looped_s = _median_time(looped, reps, 1, device)
    return {"batched_s": batched_s, "loop_s": looped_s, "speedup": looped_s / batched_s}


def main(argv=None) -> int:
    """Run the benchmark and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/svi_step.json"))
    args = parser.parse_args(argv)
    device = hb.inference.resolve_device(args.device)
    rounds, per_round, warmup = (3, 4, 3) if args.quick else (12, 6, 5)
    torch.manual_seed(0)
    x = torch.rand(BATCH, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    pyro.enable_validation(False)  # as in hb.inference.fit after its first step

    methods = {"map": ("map", {}), "meanfield": ("meanfield", {}),
               "meanfield_lrt": ("meanfield", {"local_reparameterization": True}),
               "mcdropout": ("mcdropout", {"dropout": 0.5}),
               }
    # Bayesian hypernetwork as in its paper: RealNVP over the weight-norm scales (one per unit),
    # N(0, 1) on the scales, point-estimate directions and biases; 0 to 8 coupling layers of
    # hidden width 200 (each coupling's conditioner has ~0.48M parameters on this net).
    for couplings in FLOW_COUPLINGS:
        methods[f"flow_scales_{couplings}"] = ("flow", {
            "net": MLP(SIZES, weight_norm=True), "num_flows": couplings, "hidden": 200,
            "prior": priors.by_name({"*.scale": priors.Normal(1.0), "*": priors.Flat()})})
    steppers = {"plain_map": plain_map_step(x, y, device),
                "plain_map_fused_adam": plain_map_step(x, y, device, fused=True)}
    built = {}
    for label, (name, options) in methods.items():
        step, model, guide = svi_step(name, x, y, device, **options)
        steppers[label] = step
        built[label] = (model, guide)
    step_s = _interleaved_medians(steppers, rounds, per_round, warmup, device)
    for label, seconds in step_s.items():
        print(f"{label:22s} {seconds * 1e3:8.2f} ms", file=sys.stderr)
    map_step = step_s.pop("plain_map")
    map_fused = step_s.pop("plain_map_fused_adam")

    # Batched MC prediction (S = 100 in one pass) vs a Python loop of S single-sample passes,
    # on the benchmark net (256 test inputs) and on the toy-regression net (200 grid points).
    reps = 3 if args.quick else 5
    x_test = torch.rand(256, 1, 28, 28, device=device)
    predict = {label: _predict_speedup(*built[label], x_test, 100, reps, device)
               for label in ("map", "meanfield", "mcdropout", "flow_scales_8")}
    toy_model, toy_guide, toy_loss = hb.methods.build(
        "meanfield", MLP([1, 50, 1]), priors.FanInNormal(1.0), hb.models.Gaussian(0.1))
    toy_model.to(device)
    toy_guide.to(device)
    predict["meanfield_toy_1-50-1"] = _predict_speedup(
        toy_model, toy_guide, torch.linspace(-1.5, 1.5, 200, device=device).unsqueeze(-1), 100,
        reps, device)
    for label, p in predict.items():
        print(f"predict {label:22s} batched {p['batched_s'] * 1e3:8.1f} ms, loop "
              f"{p['loop_s'] * 1e3:8.1f} ms: {p['speedup']:.1f}x", file=sys.stderr)

    result = {
        "net": SIZES, "batch_size": BATCH, "device": str(device), "quick": args.quick,
        "map_step_s": map_step,
        "map_step_fused_adam_s": map_fused,
        "step_s": step_s,
        "ratios": {k: v / map_step for k, v in step_s.items()},
        "ratios_vs_fused_adam_map": {k: v / map_fused for k, v in step_s.items()},
        "predict_samples": 100,
        "predict_speedup": predict["meanfield"]["speedup"],
        "predict": predict,
        "notes": "map_step_s: plain PyTorch (nn.Linear, default torch.optim.Adam); hyperbayes "
                 "methods use hb.inference.fit's optimizer (fused Adam). ratios_vs_fused_adam_map "
                 "compares against a plain step that also uses fused Adam.",
        "machine": machine_info(),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}: ratios {({k: round(v, 2) for k, v in result['ratios'].items()})}, "
          f"vs fused-Adam MAP "
          f"{({k: round(v, 2) for k, v in result['ratios_vs_fused_adam_map'].items()})}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
