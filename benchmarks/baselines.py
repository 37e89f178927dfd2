"""Cost of the baselines (deep ensemble, Laplace, SWAG) against MAP, each by its registered
classification recipe.

    python benchmarks/baselines.py [--quick] [--device auto] --out results/benchmarks/baselines.json

Every method trains the same MLP on the same MNIST subset for the same number of epochs (its
recipe's extra work included: the ensemble's K members, Laplace's curvature (last layer, and
all weights for ``laplace_all``) and prior tuning after the MAP, SWAG's SGD snapshots after the
MAP), then predicts on the test images with
S = 100 weight samples. Reported: wall times, and ratios to MAP's training and prediction
times, all taken in one run on one machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import hyperbayes as hb
from hyperbayes.experiments.common import machine_info, write_json
from hyperbayes.models import Categorical, priors

METHODS = ("map", "ensemble", "laplace", "laplace_all", "swag", "meanfield")
NUM_SAMPLES = 100


def measure(name: str, train, test, sizes, epochs: float, device) -> dict:
    """Train ``name`` by its classification recipe and time training and prediction."""
    model, guide, loss, fit_options = hb.methods.setup(name, "classification", sizes,
                                                       priors.Normal(1.0), Categorical(), seed=0)
    options = hb.methods.fit_options({"lr": 1e-3, **fit_options}, 1)
    options.pop("steps")
    start = time.perf_counter()
    hb.inference.fit(model, guide, train, epochs=epochs, batch_size=128, loss=loss,
                     device=device, progress=False, seed=0, **options)
    train_s = time.perf_counter() - start
    hb.inference.predict(model, guide, test.x[:32].to(device), 2)  # warm-up
    start = time.perf_counter()
    pred = hb.inference.predict(model, guide, test.x.to(device), NUM_SAMPLES)
    predict_s = time.perf_counter() - start
    report = hb.inference.metrics.classification_report(pred.probs.cpu(), test.y)
    return {"train_s": train_s, "predict_s": predict_s, "test_accuracy": report["accuracy"],
            "test_nll": report["nll"], "test_ece": report["ece"]}


def main(argv=None) -> int:
    """Run the benchmark; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images, 2 epochs")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/baselines.json"))
    args = parser.parse_args(argv)
    device = hb.inference.resolve_device(args.device)
    torch.manual_seed(0)
    mnist = hb.datasets.load("mnist")
    n_train, n_test, hidden, epochs = (1000, 500, 100, 2) if args.quick else (10_000, 2000,
                                                                              400, 5)
    train = mnist.train.subset(slice(0, n_train))
    test = mnist.test.subset(slice(0, n_test))
    sizes = [784, hidden, hidden, 10]
    measure("map", train.subset(slice(0, 256)), test, sizes, 1, device)  # one-time costs
    runs = {name: measure(name, train, test, sizes, epochs, device) for name in METHODS}
    base = runs["map"]
    for row in runs.values():
        row["train_vs_map"] = row["train_s"] / base["train_s"]
        row["predict_vs_map"] = row["predict_s"] / base["predict_s"]
    payload = {"benchmark": "baselines", "quick": args.quick, "device": str(device),
               "train_examples": n_train, "test_examples": n_test, "net": sizes,
               "epochs": epochs, "predict_samples": NUM_SAMPLES, "machine": machine_info(),
               "runs": runs}
    write_json(args.out, payload)
    for name, row in runs.items():
        print(f"{name:20s} train {row['train_s']:7.1f} s ({row['train_vs_map']:5.2f}× MAP)  "
              f"predict {row['predict_s']:6.2f} s ({row['predict_vs_map']:5.2f}×)  "
              f"accuracy {row['test_accuracy']:.4f}  NLL {row['test_nll']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
