"""The ``hyperbayes`` command line: run experiments, diagnose a fit, fetch datasets, list
methods."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import datasets, methods
from .experiments import EXPERIMENTS, common, jobs
from .experiments import suite as suite_module
from .inference import distributed

__all__ = ["main", "build_parser"]


def _method_list(text: str) -> list[str]:
    """Comma-separated names; each experiment checks them and names the ones it knows."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--methods needs at least one name")
    return names


def _seed_list(text: str) -> list[int]:
    """Comma-separated integer seeds."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--seeds needs integers, got {text!r}") from err
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed")
    return seeds


def _method_options(items: list[str]) -> dict:
    """``--option METHOD.KEY=VALUE`` items as ``{method: {key: value}}``, names checked."""
    options: dict[str, dict] = {}
    for item in items:
        target, sep, text = item.partition("=")
        name, dot, key = target.rpartition(".")
        if not sep or not dot or not name or not key:
            raise ValueError(f"--option {item!r}: expected METHOD.KEY=VALUE, e.g. "
                             "flow-8.hidden=64")
        methods.get(name)  # unknown names raise with the list of known ones
        options.setdefault(name, {})[key] = common.parse_value(text.strip())
    return options


def _run_overrides(args, experiment) -> dict:
    """The ``settings`` and ``overrides`` arguments ``--set`` and ``--option`` ask for, checked
    against the experiment before it starts."""
    import inspect

    extra = {}
    if args.assignments:
        settings_type = common.settings_class(experiment)
        if settings_type is None:
            raise ValueError(f"{args.experiment} has no settings to --set")
        extra["settings"] = common.apply_settings(settings_type, args.assignments,
                                                  quick=args.quick)
    if args.options:
        if "overrides" not in inspect.signature(experiment).parameters:
            raise ValueError(f"{args.experiment} takes no method --option (its methods are "
                             "set up by their recipes only)")
        extra["overrides"] = _method_options(args.options)
    return extra


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="hyperbayes", description="Bayesian deep learning with hypernetworks, in Pyro.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment; writes metrics.json, PNGs, report.md")
    run.add_argument("experiment", choices=sorted(EXPERIMENTS), help="experiment name")
    run.add_argument("--methods", type=_method_list, default=None,
                     help="comma-separated method names (default: the experiment's)")
    run.add_argument("--quick", action="store_true", help="small settings (≤ 2 min on 2 cores)")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", type=Path, default=None, help="output folder "
                     "(default: results/EXPERIMENT)")
    run.add_argument("--set", dest="assignments", action="append", default=[],
                     metavar="KEY=VALUE", help="change one of the experiment's settings "
                     "(repeatable; a Python literal or a word), e.g. --set epochs=3; recorded "
                     "in metrics.json")
    run.add_argument("--option", dest="options", action="append", default=[],
                     metavar="METHOD.KEY=VALUE", help="change one build option of a method's "
                     "recipe (repeatable), e.g. --option flow-8.hidden=64")

    suite = sub.add_parser("suite", help="the uncertainty suite: every method on every task; "
                           "writes results.md and results.json")
    suite.add_argument("--tasks", type=_method_list, default=None,
                       help="comma-separated tasks (default: all of "
                            f"{', '.join(suite_module.TASKS)})")
    suite.add_argument("--methods", type=_method_list, default=None,
                       help="comma-separated method names (default: every registered method)")
    suite.add_argument("--quick", action="store_true",
                       help="small settings (< 15 min on 2 cores)")
    suite.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    suite.add_argument("--seed", type=int, default=0)
    suite.add_argument("--seeds", type=_seed_list, default=None,
                       help="comma-separated seeds, run as jobs (implies --jobs)")
    suite.add_argument("--jobs", action="store_true",
                       help="run (method, seed) jobs, spread over the processes torchrun starts "
                            "(torchrun --nproc_per_node K $(which hyperbayes) suite --jobs), "
                            "then merge them into --out")
    suite.add_argument("--option", dest="options", action="append", default=[],
                       metavar="METHOD.KEY=VALUE", help="change one build option of a method's "
                       "recipe in every task (repeatable), e.g. --option laplace.hessian=diag")
    suite.add_argument("--out", type=Path, default=Path("results/suite"), help="output folder")
    suite.add_argument("--gather", action="store_true",
                       help="train nothing: write results.md/json from the task folders "
                            "already in --out (tasks run separately)")

    data = sub.add_parser("datasets", help="list or pre-fetch datasets")
    data_sub = data.add_subparsers(dest="action", required=True)
    fetch = data_sub.add_parser("fetch", help="download, verify and cache a dataset")
    fetch.add_argument("name")
    fetch.add_argument("--root", type=Path, default=None)
    data_sub.add_parser("list", help="list dataset names")

    diag = sub.add_parser("diagnose", help="fit a method on a regression toy, sample NUTS, and "
                          "write one diagnostics page (VI quality, PSIS-LOO, ArviZ, trust "
                          "checks, function space against NUTS)")
    diag.add_argument("--method", default="meanfield", help="a registered method name")
    diag.add_argument("--toy", default="cubic", choices=["cubic", "blundell"])
    diag.add_argument("--steps", type=int, default=None, help="SVI steps (default: 4,000 "
                      "times the recipe's factor)")
    diag.add_argument("--nuts-draws", type=int, default=500,
                      help="NUTS draws per chain, 4 chains (0: no NUTS)")
    diag.add_argument("--quick", action="store_true", help="300 steps, 100 NUTS draws")
    diag.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    diag.add_argument("--seed", type=int, default=0)
    diag.add_argument("--out", type=Path, default=Path("results/diagnose"))

    sub.add_parser("methods", help="list method names")
    return parser


#: the environment variable that sets the CLI's log level (default INFO: long runs say what
#: they did, e.g. each active-learning round, also where no progress bar shows)
LOG_LEVEL_VARIABLE = "HYPERBAYES_LOG_LEVEL"


def _configure_logging() -> None:
    """Send the library's log records at ``$HYPERBAYES_LOG_LEVEL`` (default INFO) to stderr,
    time-stamped (with the rank under torchrun); an unknown level is an error naming the
    choices."""
    name = os.environ.get(LOG_LEVEL_VARIABLE, "INFO").upper()
    level = logging.getLevelNamesMapping().get(name)
    if level is None:
        raise ValueError(f"{LOG_LEVEL_VARIABLE}={name!r}: choose DEBUG, INFO, WARNING or ERROR")
    logger = logging.getLogger("hyperbayes")
    logger.setLevel(level)
    if not any(getattr(h, "_hyperbayes_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        # under torchrun every process logs its own work (suite jobs): say which one
        rank = (f"[rank {distributed.rank()}] "
                if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "")
        handler.setFormatter(logging.Formatter(f"%(asctime)s {rank}%(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
        handler._hyperbayes_cli = True
        logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hyperbayes`` console script; returns the exit status."""
    try:
        _configure_logging()
    except ValueError as err:
        print(f"hyperbayes: error: {err}", file=sys.stderr)
        return 2
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.command == "run":
            experiment = EXPERIMENTS[args.experiment]
            out = args.out or Path("results") / args.experiment  # checked by the experiment
            kwargs = {"quick": args.quick, "device": args.device, "seed": args.seed, "out": out}
            if args.methods:
                kwargs["methods_to_run"] = args.methods
            kwargs.update(_run_overrides(args, experiment))
            result = experiment(**kwargs)
            if distributed.is_main():  # under torchrun, rank 0 wrote the results
                print(f"{args.experiment}: wrote {result.out_dir / 'metrics.json'}, "
                      f"{result.out_dir / 'report.md'} and {len(result.figures)} figure(s) in "
                      f"{result.wall_time_s:.0f} s")
        elif args.command == "suite" and args.gather:
            result = suite_module.gather(args.out, args.tasks)
            print(f"suite: gathered {', '.join(result.metrics['suite'])} into "
                  f"{result.out_dir / 'results.md'}")
        elif args.command == "suite" and (args.jobs or args.seeds):
            result = jobs.run_jobs(args.tasks or suite_module.TASKS,
                                   args.methods or methods.available(variants=False),
                                   args.seeds or [args.seed], quick=args.quick,
                                   device=args.device, out=args.out,
                                   overrides=_method_options(args.options))
            if result is not None:  # rank 0 merged the jobs
                print(f"suite: merged the jobs into {result.out_dir / 'results.md'}")
        elif args.command == "suite":
            result = suite_module.run(args.tasks or suite_module.TASKS,
                                      methods_to_run=args.methods, quick=args.quick,
                                      device=args.device, seed=args.seed, out=args.out,
                                      overrides=_method_options(args.options))
            print(f"suite: wrote {result.out_dir / 'results.md'} and "
                  f"{result.out_dir / 'results.json'} in {result.wall_time_s:.0f} s")
        elif args.command == "datasets":
            if args.action == "list":
                print("\n".join(datasets.available()))
            else:
                path = datasets.fetch(args.name, root=args.root)
                print(f"{args.name}: ready at {path}")
        elif args.command == "diagnose":
            from .inference.diagnose import diagnose_toy

            diagnose_toy(args.method, args.toy, nuts_draws=args.nuts_draws, steps=args.steps,
                         quick=args.quick, device=args.device, seed=args.seed, out=args.out)
            print(f"diagnose: wrote {args.out / 'report.md'} and {args.out / 'diagnostics.json'}")
        elif args.command == "methods":
            for name in methods.available():
                method = methods.get(name)
                base = f"[variant of {method.base}] " if method.base else ""
                print(f"{name:18s} {base}{method.summary}")
                if method.count_option:
                    print(f"{name + '-<K>':18s} {name} with {method.count_option}=K")
            for alias, name in methods.aliases().items():
                print(f"{alias:18s} the paper's name for {name}")
            print(f"{methods.REFERENCE:18s} NUTS reference sampler (toy problems)")
    except (ValueError, RuntimeError, OSError) as err:
        print(f"hyperbayes: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
