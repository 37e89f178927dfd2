"""Bayes by Hypernet: its SVI step as a ratio to a plain-PyTorch MAP step on the same net.

    python benchmarks/bbh_step.py [--quick] [--device auto] --out results/benchmarks/bbh_step.json

Net 784-800-800-10 ReLU with weight norm, batch 128, Adam. The implicit guide generates the
1,610 weight-norm scales (one per unit) from noise of dimension 64 (the paper's; a degenerate q,
allowed with ``allow_degenerate``: the step cost barely depends on it) through the generator
(64 + 3 position codes)-64-256-800; directions and biases are point estimates; prior N(0, 1) on
the scales, flat elsewhere (as the flow over scales in ``svi_step.py``). Variants, each one full
step of ``hb.inference.fit``'s loop (loss, backward, fused Adam):

* ``bbh_adv_S{S}_d{k}``: the adversarial KL with the library's default per-coordinate
  discriminator ((32, 32) ReLU over a scale's standardized value, q's marginal mean and std
  there, and its layer) updated ``k`` times per step (k = 1 and 5; the paper says "several") on
  16 fresh generator samples against 16 fresh prior samples, then the generator's loss with S
  samples (S = 1 and 5). The discriminator's updates are inside the timed step.
* ``bbh_adv_pooled_S1_d1``: the paper's pooled per-scalar [20, 20] discriminator, S = 1, k = 1.
* ``bbh_nn_S{S}``: the nearest-neighbour KL against 16·S prior samples (S = 2 and 5: the
  estimate needs at least two generator samples).
* ``bbh_entropy_S{S}``: −E_q[log p] − Kozachenko–Leonenko entropy (S = 2 and 5).

The plain MAP step (nn.Linear stack without weight norm, default Adam; the reference of
``svi_step.py``) and, for context, the plain step with fused Adam and hyperbayes' MAP on the same
weight-norm net are timed interleaved with the variants in the same run. Inputs are random
tensors of MNIST's shape: step time does not depend on pixel values. The discriminator's 20
pre-training updates run in the warm-up, outside the timings. Writes JSON: {"map_step_s",
"step_s", "ratios", "meets_target", ...}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyro
import torch
from svi_step import BATCH, SIZES, _interleaved_medians, _sync, plain_map_step, svi_step

import hyperbayes as hb
from hyperbayes.experiments.common import machine_info, write_json
from hyperbayes.models import MLP, priors

TARGET_RATIO = 2.0  # issue 5: a BbH (scales) step costs at most 2x the plain MAP step
DISCRIMINATOR = {"discriminator": "coordinate", "pretrain_steps": 20, "noise_dim": 64,
                 "allow_degenerate": True}
SAMPLES_ADVERSARIAL = (1, 5)
DISCRIMINATOR_STEPS = (1, 5)
SAMPLES_SAMPLE_BASED = (2, 5)  # nearest-neighbour and entropy estimates need S >= 2


def scale_prior():
    """N(0, 1) on the weight-norm scales, flat on directions and biases."""
    return priors.by_name({"*.scale": priors.Normal(1.0), "*": priors.Flat()})


def variants() -> dict[str, dict]:
    """Build options of every benchmarked BbH variant, by label."""
    out = {}
    for s in SAMPLES_ADVERSARIAL:
        for k in DISCRIMINATOR_STEPS:
            out[f"bbh_adv_S{s}_d{k}"] = {"kl": "adversarial", "num_samples": s,
                                         "discriminator_steps": k, **DISCRIMINATOR}
    for kl in ("nn", "entropy"):
        for s in SAMPLES_SAMPLE_BASED:
            out[f"bbh_{kl}_S{s}"] = {"kl": kl, "num_samples": s, "noise_dim": 64,
                                     "allow_degenerate": True}
    out["bbh_adv_pooled_S1_d1"] = {"kl": "adversarial", "num_samples": 1,
                                   "discriminator_steps": 1, **DISCRIMINATOR,
                                   "discriminator": "pooled"}
    return out


def main(argv=None) -> int:
    """Run the benchmark and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/bbh_step.json"))
    args = parser.parse_args(argv)
    device = hb.inference.resolve_device(args.device)
    rounds, per_round, warmup = (3, 3, 3) if args.quick else (10, 5, 5)
    torch.manual_seed(0)
    x = torch.rand(BATCH, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    pyro.enable_validation(False)  # as in hb.inference.fit after its first step

    steppers = {"plain_map": plain_map_step(x, y, device),
                "plain_map_fused_adam": plain_map_step(x, y, device, fused=True),
                "map_weightnorm": svi_step("map", x, y, device, net=MLP(SIZES, weight_norm=True),
                                           prior=scale_prior())[0]}
    options = variants()
    guides = {}
    for label, opts in options.items():
        step, _, guide = svi_step("bbh", x, y, device, net=MLP(SIZES, weight_norm=True),
                                  prior=scale_prior(), over="scales", **opts)
        steppers[label] = step
        guides[label] = guide
    generated = next(iter(guides.values())).num_generated
    step_s = _interleaved_medians(steppers, rounds, per_round, warmup, device)
    _sync(device)
    for label, seconds in step_s.items():
        print(f"{label:22s} {seconds * 1e3:8.2f} ms", file=sys.stderr)
    map_step = step_s.pop("plain_map")
    map_fused = step_s.pop("plain_map_fused_adam")
    ratios = {k: v / map_step for k, v in step_s.items()}
    result = {
        "net": SIZES, "weight_norm": True, "batch_size": BATCH, "device": str(device),
        "quick": args.quick, "generated_scalars": generated,
        "generator": {"noise_dim": 64, "hidden": [64, 256], "over": "scales"},
        "discriminator": {"kind": DISCRIMINATOR["discriminator"], "batch": 16,
                          "pretrain_steps_in_warmup": DISCRIMINATOR["pretrain_steps"]},
        "variants": {k: {kk: (list(vv) if isinstance(vv, tuple) else vv)
                         for kk, vv in v.items()} for k, v in options.items()},
        "map_step_s": map_step,
        "map_step_fused_adam_s": map_fused,
        "step_s": step_s,
        "ratios": ratios,
        "ratios_vs_fused_adam_map": {k: v / map_fused for k, v in step_s.items()},
        "target_ratio": TARGET_RATIO,
        "meets_target": {k: v <= TARGET_RATIO for k, v in ratios.items() if k.startswith("bbh")},
        "timing": {"rounds": rounds, "per_round": per_round, "warmup": warmup,
                   "statistic": "median step time, steps of all variants interleaved"},
        "notes": "map_step_s: plain PyTorch (nn.Linear without weight norm, default "
                 "torch.optim.Adam), the reference of svi_step.py; hyperbayes steps use "
                 "hb.inference.fit's optimizer (fused Adam). bbh_adv_S{S}_d{k}: k discriminator "
                 "updates (16 generator + 16 prior samples each) inside every step, then the "
                 "generator loss with S samples.",
        "machine": machine_info(),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}: ratios {({k: round(v, 2) for k, v in ratios.items()})}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
