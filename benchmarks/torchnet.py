"""Cost of a user's ``torch.nn`` module as a hyperbayes net (:class:`hyperbayes.models.TorchNet`)
against the library's own MLP and against plain deterministic PyTorch.

    python benchmarks/torchnet.py [--quick] [--device auto] --out results/benchmarks/torchnet.json

Two measurements, each a ratio of medians taken in one run (interleaved, so drift hits all alike):

1. **Batched prediction.** A LeNet-5-style ``torch.nn`` module under a mean-field guide predicts
   on 256 MNIST-shaped images with S = 100 weight samples (``hb.inference.predict``). The compute
   floor is 100 plain deterministic forwards of the same module on the same images plus drawing
   the 100 weight samples from the guide; the batched predict is also compared with a Python loop
   of 100 single-sample ``predict`` calls.
2. **The shared start, replayed.** On the CPU a convolutional module evaluates its S samples
   one at a time; where the samples share the module's first layers (MC dropout on its dense
   head, a Bayesian last layer) ``TorchNet`` runs those layers once and replays them
   (``replay_shared``). Ratio of S = 100 predicts without and with the replay, LeNet-5 as above.
3. **SVI step.** One mean-field SVI step (batch 128) on a ``torch.nn`` 784-800-800-10 ReLU
   ``nn.Sequential`` and on the library's ``MLP([784, 800, 800, 10])``, the body of
   ``hb.inference.fit``'s loop.

Writes JSON with the medians, the ratios, the targets and the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyro
import torch
from svi_step import _interleaved_medians as interleaved_medians  # same folder
from torch import nn

import hyperbayes as hb
from hyperbayes.experiments.common import machine_info, write_json
from hyperbayes.inference.svi import make_adam
from hyperbayes.models import BNN, MLP, Categorical, TorchNet, priors

SIZES = [784, 800, 800, 10]
BATCH = 128
DATASET_SIZE = 50_000
NUM_SAMPLES = 100
TEST_IMAGES = 256


def lenet5() -> nn.Module:
    """LeNet-5 for 28×28 inputs (LeCun et al. 1998, with ReLU and max-pooling)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def sequential_mlp(sizes=SIZES) -> nn.Module:
    """``nn.Flatten`` then an ``nn.Linear``/ReLU stack of ``sizes``."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def prediction_timings(device, rounds: int) -> dict:
    """Batched S = 100 predict of a mean-field LeNet vs its compute floor and a Python loop."""
    torch.manual_seed(0)
    module = lenet5().to(device)
    model = BNN(TorchNet(module), priors.FanInNormal(1.0), Categorical()).to(device)
    guide = hb.guides.MeanField(model).to(device)
    x = torch.rand(TEST_IMAGES, 1, 28, 28, device=device)
    module.eval()

    def forwards():
        with torch.no_grad():
            for _ in range(NUM_SAMPLES):
                module(x)

    def draws():
        hb.inference.sample_posterior(model, guide, NUM_SAMPLES)

    def batched():
        hb.inference.predict(model, guide, x, NUM_SAMPLES)

    def looped():
        for _ in range(NUM_SAMPLES):
            hb.inference.predict(model, guide, x, 1)

    t = interleaved_medians({"plain_forwards": forwards, "draw_weights": draws,
                             "batched_predict": batched, "loop_predict": looped},
                            rounds, 1, 1, device)
    floor = t["plain_forwards"] + t["draw_weights"]
    return {"seconds": t, "floor_s": floor,
            "batched_over_floor": t["batched_predict"] / floor,
            "loop_over_batched": t["loop_predict"] / t["batched_predict"],
            "target_batched_over_floor": 1.3}


def replay_timings(device, rounds: int) -> dict:
    """S = 100 predicts of LeNet-5 under MC dropout and under a Bayesian last layer, with and
    without replaying the layers every sample shares."""
    torch.manual_seed(0)
    x = torch.rand(TEST_IMAGES, 1, 28, 28, device=device)
    calls = {}
    for label, method, bayesian in (("mcdropout", "mcdropout", "*"),
                                    ("last_layer_meanfield", "meanfield", "11.*")):
        for replay in (True, False):
            net = TorchNet(lenet5(), bayesian=bayesian, replay_shared=replay)
            model, guide, _ = hb.methods.build(method, net, priors.FanInNormal(1.0),
                                               Categorical())
            model.to(device)
            guide.to(device)

            def call(model=model, guide=guide):
                hb.inference.predict(model, guide, x, NUM_SAMPLES)

            calls[f"{label}_{'replay' if replay else 'full'}"] = call
    t = interleaved_medians(calls, rounds, 1, 1, device)
    return {"seconds": t, **{f"{label}_full_over_replay": t[f"{label}_full"]
                             / t[f"{label}_replay"]
                             for label in ("mcdropout", "last_layer_meanfield")}}


def svi_step_timings(device, rounds: int) -> dict:
    """One mean-field SVI step on a torch.nn 784-800-800-10 vs the library's MLP."""
    torch.manual_seed(0)
    x = torch.rand(BATCH, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    steps = {}
    for label, net in (("mlp", MLP(SIZES)), ("torchnet", TorchNet(sequential_mlp()))):
        model, guide, loss = hb.methods.build("meanfield", net, priors.Normal(1.0), Categorical())
        model.to(device)
        guide.to(device)
        params = [p for p in list(model.parameters()) + list(guide.parameters())
                  if p.requires_grad]
        optim = make_adam(params, lr=1e-3)

        def step(model=model, guide=guide, loss=loss, optim=optim):
            optim.zero_grad(set_to_none=True)
            loss.differentiable_loss(model, guide, x, y, DATASET_SIZE).backward()
            optim.step()

        steps[label] = step
    t = interleaved_medians(steps, rounds, 5, 5, device)
    return {"seconds": t, "torchnet_over_mlp": t["torchnet"] / t["mlp"], "target": 1.2}


def main(argv=None) -> int:
    """Run both measurements and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/torchnet.json"))
    args = parser.parse_args(argv)
    device = hb.inference.resolve_device(args.device)
    pyro.enable_validation(False)  # as in hb.inference.fit after its first step
    predict = prediction_timings(device, 3 if args.quick else 7)
    replay = replay_timings(device, 3 if args.quick else 7)
    step = svi_step_timings(device, 3 if args.quick else 10)
    result = {"device": str(device), "quick": args.quick, "num_samples": NUM_SAMPLES,
              "test_images": TEST_IMAGES, "predict_lenet5_meanfield": predict,
              "predict_lenet5_shared_start": replay,
              "svi_step_meanfield_784_800_800_10": step, "machine": machine_info()}
    write_json(args.out, result)
    print(f"LeNet-5 predict S={NUM_SAMPLES}: {predict['batched_over_floor']:.2f}x the floor "
          f"(target ≤ 1.3), loop / batched {predict['loop_over_batched']:.1f}x; replaying the "
          f"shared start: MC dropout {replay['mcdropout_full_over_replay']:.1f}x, last layer "
          f"{replay['last_layer_meanfield_full_over_replay']:.1f}x faster; mean-field step "
          f"torchnet / MLP {step['torchnet_over_mlp']:.2f}x (target ≤ 1.2)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
