"""Active learning under the converged protocol with the baselines of issue 21 beside MC dropout and
the flow, as run on 2026-12-03: BALD vs random, warm and re-initialised, 200 acquisitions,
2 seeds, 784-128-10 (the settings of docs/results/active_learning_converged, re-run with today's code).

    python docs/results/active_learning_baselines_2026-12-03/run.py OUT ZOO [METHOD,...]

from the repository root. OUT receives metrics.json, report.md and the figure; ZOO keeps every
finished (method, seed) part and the per-round state of an unfinished one, so an interrupted run
resumes, and runs of different methods into one ZOO (in parallel processes) gather into one
report when a last run names them all.
"""
import sys
from dataclasses import replace

from hyperbayes.experiments import active_learning as al

out, zoo = sys.argv[1], sys.argv[2]
settings = replace(al.Settings(), rounds=20, acquisitions=("random", "bald"), seeds=2,
                   budgets=(100, 200))
METHODS = ["ensemble", "laplace", "swag", "map", "mcdropout", "flow", "meanfield", "bbh"]
names = sys.argv[3].split(",") if len(sys.argv) > 3 else METHODS
al.run(names, settings=settings,
       device="cpu", out=out, checkpoints=zoo, progress=False)
