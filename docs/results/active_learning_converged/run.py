"""Active learning under the converged protocol (issue 18), as run on 2026-12-02: MC dropout and the
flow, BALD vs random, warm and re-initialised, 200 acquisitions, 2 seeds, 784-128-10.

    python docs/results/active_learning_converged/run.py    # from the repository root, ~50 min on 2 cores
"""
from dataclasses import replace
from hyperbayes.experiments import active_learning as al
settings = replace(al.Settings(), rounds=20, acquisitions=("random", "bald"), seeds=2,
                   budgets=(100, 200))
al.run(["mcdropout", "flow"], settings=settings, device="cpu", out="results/active-learning-converged",
       progress=False)
