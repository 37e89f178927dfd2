"""Compiled vs eager SVI steps of every method as ratios to a plain-PyTorch MAP step, and
data-parallel training throughput with 1 and 2 processes.

    python benchmarks/scale.py [--quick] [--device auto] --out results/benchmarks/scale.json

Step ratios, on the MNIST net (784-800-800-10, batch 128, as benchmarks/svi_step.py) and on the
1-50-1 toy (batch 64): every base method's eager step (``loss.differentiable_loss`` +
``backward`` + Adam, the body of ``hb.inference.fit``) and its compiled step
(:class:`hyperbayes.inference.compiled.CompiledStep`, TorchInductor) over the plain MAP step
of the same net, all medians measured round-robin in one run, and each compile's wall time.
Throughput: mean-field SVI on the MNIST net with global batches of 256 and 2,048, examples per
second with ``fit`` in one process and in two gloo processes (``distributed=True``, one thread
each) on this machine. Writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch

import hyperbayes as hb
from hyperbayes.experiments.common import machine_info, write_json
from hyperbayes.inference import distributed
from hyperbayes.inference.compiled import CompiledStep, unsupported_reason
from hyperbayes.inference.svi import make_adam
from hyperbayes.models import Categorical, Gaussian, priors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from svi_step import _interleaved_medians, _sync  # noqa: E402  (the same timing helpers)

NETS = {"mnist_784-800-800-10": ([784, 800, 800, 10], 128, 50_000),
        "toy_1-50-1": ([1, 50, 1], 64, 64)}
#: global batch sizes of the throughput runs: the per-step parameter work (drawing weights, the
#: KL, Adam, the all-reduce) is the same for both, the per-example work grows eightfold
THROUGHPUT_BATCHES = (256, 2048)


def _inputs(sizes, batch, device):
    x = torch.rand(batch, sizes[0], device=device)
    if sizes[-1] == 1:
        return x, torch.randn(batch, 1, device=device), Gaussian(0.1)
    return x, torch.randint(0, sizes[-1], (batch,), device=device), Categorical()


def plain_map_step(sizes, x, y, dataset_size):
    """A plain-PyTorch MAP step of the same net: nn.Linear stack, N × mean NLL + ½‖w‖², Adam."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).to(x.device)
    params = list(net.parameters())
    optim = torch.optim.Adam(params, lr=1e-3)

    def nll(out):
        if sizes[-1] == 1:
            return 0.5 * ((out - y) / 0.1).pow(2).mean()
        return torch.nn.functional.cross_entropy(out, y)

    def step():
        optim.zero_grad(set_to_none=True)
        loss = nll(net(x)) * dataset_size + 0.5 * sum((p * p).sum() for p in params)
        loss.backward()
        optim.step()

    return step


def method_steps(name, sizes, x, y, likelihood, dataset_size, device):
    """(eager step, compiled step or None, compile seconds) of base method ``name``."""
    family = "regression" if sizes[-1] == 1 else "classification"
    model, guide, loss, _ = hb.methods.setup(name, family, sizes, priors.Normal(1.0), likelihood)
    model.to(device)
    guide.to(device)
    params = [p for p in list(model.parameters()) + list(guide.parameters()) if p.requires_grad]
    optim = make_adam(params, lr=1e-3)

    def eager():
        optim.zero_grad(set_to_none=True)
        loss.differentiable_loss(model, guide, x, y, dataset_size).backward()
        optim.step()

    if unsupported_reason(loss) is not None:
        return eager, None, None
    compiled_loss = CompiledStep(loss, model, guide)

    def compiled():
        optim.zero_grad(set_to_none=True)
        compiled_loss(x, y, dataset_size)
        optim.step()

    start = time.perf_counter()
    compiled()
    _sync(device)
    return eager, compiled, time.perf_counter() - start


def _throughput_worker(out: str, batch: int, steps: int) -> None:
    """One rank of the data-parallel throughput run (rank 0 writes the result)."""
    result = _fit_throughput(batch, steps, distributed_=True)
    if distributed.is_main():
        Path(out).write_text(repr(result))


def _fit_throughput(batch: int, steps: int, distributed_: bool) -> float:
    """Examples per second of mean-field fit on the MNIST net (eager steps)."""
    sizes = NETS["mnist_784-800-800-10"][0]
    generator = torch.Generator().manual_seed(0)
    n = batch * 4
    x = torch.rand(n, sizes[0], generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    model, guide, loss, _ = hb.methods.setup("meanfield", "classification", sizes,
                                             priors.Normal(1.0), Categorical())
    hb.inference.fit(model, guide, (x, y), steps=2, batch_size=batch, loss=loss,
                     progress=False, warn=False, compile=False, device="cpu",
                     distributed=distributed_)  # warm-up
    result = hb.inference.fit(model, guide, (x, y), steps=steps, batch_size=batch,
                              loss=loss, progress=False, warn=False, compile=False,
                              device="cpu", distributed=distributed_)
    return steps * batch / result.wall_time_s


def throughput(quick: bool, scratch: Path) -> dict:
    """Examples/s of fit with 1 process (1 and 2 threads) and with 2 gloo processes, per
    global batch size."""
    threads = torch.get_num_threads()
    out = {}
    for batch in THROUGHPUT_BATCHES:
        steps = max(4, (10 if quick else 40) * THROUGHPUT_BATCHES[0] // batch)
        row = {}
        for count in (1, 2):
            torch.set_num_threads(count)
            row[f"1_process_{count}_threads"] = _fit_throughput(batch, steps, False)
        torch.set_num_threads(threads)
        target = scratch / "throughput_2_processes.txt"
        distributed.launch_local(_throughput_worker, 2, str(target), batch, steps)
        row["2_processes_1_thread_each"] = float(target.read_text())
        out[f"batch_{batch}"] = row
    return out


def main(argv=None) -> int:
    """Run the benchmark and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, two methods")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/scale.json"))
    args = parser.parse_args(argv)
    device = hb.inference.resolve_device(args.device)
    rounds, per_round, warmup = (3, 4, 3) if args.quick else (10, 6, 5)
    names = ["map", "meanfield"] if args.quick else hb.methods.available(variants=False)
    pyro.enable_validation(False)  # as in hb.inference.fit after its first step
    torch.manual_seed(0)
    nets = {}
    for net_name, (sizes, batch, dataset_size) in NETS.items():
        x, y, likelihood = _inputs(sizes, batch, device)
        steppers = {"plain_map": plain_map_step(sizes, x, y, dataset_size)}
        compile_s, fallback = {}, {}
        for name in names:
            eager, compiled, seconds = method_steps(name, sizes, x, y, likelihood, dataset_size,
                                                    device)
            steppers[f"{name}/eager"] = eager
            if compiled is None:
                fallback[name] = "eager: the loss trains its own state"
            else:
                steppers[f"{name}/compiled"] = compiled
                compile_s[name] = seconds
            print(f"{net_name} {name}: ready", file=sys.stderr)
        medians = _interleaved_medians(steppers, rounds, per_round, warmup, device)
        plain = medians.pop("plain_map")
        nets[net_name] = {
            "sizes": sizes, "batch_size": batch, "plain_map_step_s": plain,
            "step_s": medians, "ratios": {k: v / plain for k, v in medians.items()},
            "compile_s": compile_s, "not_compiled": fallback}
        for label, ratio in nets[net_name]["ratios"].items():
            print(f"{net_name:22s} {label:24s} {ratio:6.2f}x plain MAP", file=sys.stderr)
    result = {"device": str(device), "quick": args.quick, "nets": nets,
              "notes": "ratios: median step time over the plain-PyTorch MAP step of the same "
                       "net, measured round-robin in this run. Steps include Adam."}
    if device.type == "cpu":
        with tempfile.TemporaryDirectory() as scratch:
            result["throughput_examples_per_s"] = throughput(args.quick, Path(scratch))
        print(f"throughput {result['throughput_examples_per_s']}", file=sys.stderr)
    result["machine"] = machine_info()
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
