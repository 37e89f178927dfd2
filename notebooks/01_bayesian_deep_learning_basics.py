# %% [markdown]
# # Bayesian deep learning basics with hyperbayes
#
# This notebook walks through the pieces every method in hyperbayes is built from:
#
# 1. a **prior** over the weights of a small net, and what functions it implies (prior predictive);
# 2. three approximate posteriors — **MAP**, **mean-field VI** (Bayes by Backprop) and
#    **MC dropout** — against the gold standard, **NUTS**;
# 3. **ArviZ diagnostics**: why weight-space R-hat misleads for neural nets and function-space
#    R-hat does not;
# 4. **writing your own prior** in a few lines, which then works with every guide.
#
# Set `HYPERBAYES_QUICK=1` for small settings (the test suite does).

# %%
import os

import matplotlib.pyplot as plt
import pandas as pd
import pyro.distributions as dist
import torch

import hyperbayes as hb
from hyperbayes.inference import nuts
from hyperbayes.inference.diagnostics import az, function_space_diagnostics, nuts_inference_data
from hyperbayes.models import BNN, MLP, Gaussian, priors

QUICK = os.environ.get("HYPERBAYES_QUICK") == "1"
STEPS, NUTS_DRAWS, NUTS_CHAINS = (300, 60, 2) if QUICK else (3000, 500, 4)
torch.manual_seed(0)

# %% [markdown]
# ## The data: the cubic toy
# 20 points x ~ U[−4, 4], y = x³ + N(0, 3²). We fit on standardized data (x/4, y/std(y)),
# which keeps the posterior well conditioned, and plot in the original units.

# %%
data = hb.datasets.load("cubic", seed=0)
x_scale, y_scale = 4.0, float(data.train.y.std())
train = (data.train.x / x_scale, data.train.y / y_scale)
grid = data.test.x / x_scale
noise = data.info["noise_std"] / y_scale
print(data)

# %% [markdown]
# ## 1. A prior over weights is a prior over functions
# `priors.FanInNormal(1.0)` puts N(0, 1/fan_in) on every parameter (Neal's scaling). Pyro's
# `sample_prior` draws 30 weight sets at once and the net evaluates them in one batched pass:
# each line is one function.
#
# **What to look for:** before seeing any data the functions are smooth, mostly within a few
# units of zero, and bend at the ReLU kinks; none of them looks like the cubic. The data will
# have to pull the posterior a long way from this prior.

# %%
net = MLP([1, 50, 1])
model = BNN(net, priors.FanInNormal(1.0), Gaussian(scale=noise))
prior_draws = hb.inference.predict_from_samples(model, hb.inference.sample_prior(model, 30), grid)
fig, ax = plt.subplots(figsize=(6, 3))
lines = ax.plot(data.test.x[:, 0], (prior_draws.f * y_scale).T, color="C0", alpha=0.4, lw=1)
ax.scatter(data.train.x[:, 0], data.train.y[:, 0], s=10, color="k", zorder=3,
           label="training data")
lines[0].set_label("a function drawn from the prior")
ax.set(title="Prior predictive: 30 functions", xlabel="x", ylabel="f(x)")
ax.legend(loc="upper left", fontsize=8)
plt.show()

# %% [markdown]
# *Figure 1. Thirty functions f(x) drawn from the N(0, 1/fan_in) prior of a 1-50-1 ReLU net
# (blue), in the data's original units, with the 20 training points (black).*

# %% [markdown]
# ## 2. Approximate posteriors against NUTS
# Each method is a *model + guide* pair from the registry; `fit` runs Pyro SVI and `predict`
# evaluates S posterior samples in one batched pass. NUTS samples the same posterior exactly
# (up to Monte Carlo error), so its band is drawn in grey behind every method.
#
# **What to look for:** where the data are (x in [−4, 4]) every method follows the cubic; the
# difference is the *width* of the band. MAP is a single function, so it has no band at all.
# Outside the data, NUTS widens quickly; a method that stays narrow there is over-confident.

# %%
preds = {}
for name in ("map", "meanfield", "mcdropout"):
    model, guide, loss = hb.methods.build(name, MLP([1, 50, 1]), priors.FanInNormal(1.0),
                                          Gaussian(scale=noise))
    hb.inference.fit(model, guide, train, steps=STEPS, lr=1e-2, loss=loss, progress=False)
    preds[name] = hb.inference.predict(model, guide, grid, num_samples=300)

ref_model = BNN(MLP([1, 50, 1]), priors.FanInNormal(1.0), Gaussian(scale=noise))
draws = nuts(ref_model, train, num_samples=NUTS_DRAWS, warmup=NUTS_DRAWS,
             num_chains=NUTS_CHAINS, max_tree_depth=5 if QUICK else 6, progress=False)
preds["nuts"] = draws.predict(ref_model, grid)



def band(ax, pred, label, color, **style):
    """Mean ± 2 std of f(x) over the posterior draws, in the data's units."""
    mean, std = pred.f.mean(0) * y_scale, pred.f.std(0) * y_scale
    x = data.test.x[:, 0]
    ax.fill_between(x, mean - 2 * std, mean + 2 * std, color=color, alpha=0.3,
                    label=f"{label}: mean ± 2 std", **style)
    ax.plot(x, mean, color=color, lw=1.5)


fig, axes = plt.subplots(1, 3, figsize=(15, 3.5), sharey=True)
for ax, name in zip(axes, ("map", "meanfield", "mcdropout"), strict=True):
    band(ax, preds["nuts"], "NUTS", "0.6")
    band(ax, preds[name], name, "C0")
    ax.scatter(data.train.x[:, 0], data.train.y[:, 0], s=10, color="k", zorder=3,
               label="training data")
    ax.set(title=f"{name} against NUTS", xlabel="x", ylim=(-160, 160))
    ax.legend(loc="upper left", fontsize=8)
axes[0].set_ylabel("f(x)")
plt.show()

# %% [markdown]
# *Figure 2. Posterior predictive bands (mean ± 2 standard deviations of f(x)) of each method
# (blue) over the exact posterior sampled by NUTS (grey), 1-50-1 ReLU net, N(0, 1/fan_in) prior,
# cubic toy. MAP's band has zero width.*
#
# `compare` puts numbers on the figure: the ratio of each method's predictive standard deviation
# to NUTS's, inside and outside the data range (1 is right, below 1 over-confident), and the W₁
# distance between the predictive distributions of f(x) (0 is right).

# %%
columns = {"std_ratio_in_data": "std ratio, in data", "std_ratio_out_of_data":
           "std ratio, out of data", "predictive_distance": "W₁ to NUTS"}
table = pd.DataFrame({name: hb.inference.compare(preds[name], preds["nuts"], grid, (-1.0, 1.0))
                      for name in ("map", "meanfield", "mcdropout")}).T
table[list(columns)].rename(columns=columns).round(3)

# %% [markdown]
# ## 3. Diagnostics with ArviZ
# Weight-space R-hat is large: hidden units can be permuted and their signs flipped, so
# different chains find equivalent but different weights. The function the net computes is
# invariant to those symmetries, so R-hat of the predictions at grid points is the one to read.

# %%
idata = nuts_inference_data(draws)
weights = az.summary(idata, var_names=["fc0.weight"], kind="diagnostics")
function = function_space_diagnostics(ref_model, draws, grid)
pd.DataFrame({"weight space (fc0.weight)": {"max R-hat": weights["r_hat"].max(),
                                            "min bulk ESS": weights["ess_bulk"].min()},
              "function space (f on the grid)": {"max R-hat": function["max_rhat"],
                                                 "min bulk ESS": function["min_ess_bulk"]}}
             ).round(3)

# %% [markdown]
# **What to look for:** the weight-space R-hat is well above 1.01 while the function-space
# R-hat is close to 1: the chains disagree about *which* weights, not about *which function*.
# Divergences per chain (0 is what a trustworthy run shows):

# %%
pd.DataFrame({"divergent transitions": draws.divergences},
             index=pd.Index(range(len(draws.divergences)), name="chain"))

# %% [markdown]
# ## 4. Your own prior, in a few lines
# A prior is chosen per parameter by name. Any Pyro distribution, any callable
# `spec -> distribution`, or a small `ElementwisePrior` subclass works, with every guide.

# %%
class StudentT(priors.ElementwisePrior):
    """Heavy-tailed weights: Student-t with 3 degrees of freedom, fan-in scaled."""

    def distribution(self, spec):
        return dist.StudentT(3.0, 0.0, 1.0 / spec.fan_in ** 0.5)


prior = priors.by_name({"*.bias": dist.Normal(0.0, 1.0), "*": StudentT()})
model, guide, loss = hb.methods.build("meanfield", MLP([1, 50, 1]), prior, Gaussian(scale=noise))
hb.inference.fit(model, guide, train, steps=STEPS, lr=1e-2, loss=loss, progress=False)
pred_t = hb.inference.predict(model, guide, grid, num_samples=300)

# %% [markdown]
# A new prior means a new posterior, so the fair reference is NUTS under *that* prior, not the
# Gaussian-prior NUTS of section 2. The same call samples it. Heavy tails make the posterior's
# curvature vary more from place to place (weights near 0 sit in a sharp peak, large ones in
# flat tails), so a step size tuned for one region overshoots in another and NUTS reports
# *divergent* transitions. A smaller step helps: `target_accept=0.95` (the default is 0.8)
# makes the adaptation choose one. If a `PosteriorWarning` still appears below (divergences,
# or chains that disagree: R-hat above 1.01), the reference itself is uncertain there: read
# the comparison with that in mind, or sample longer (more `num_samples` and `warmup`).

# %%
t_model = BNN(MLP([1, 50, 1]), prior, Gaussian(scale=noise))
t_draws = nuts(t_model, train, num_samples=NUTS_DRAWS, warmup=NUTS_DRAWS,
               num_chains=NUTS_CHAINS, target_accept=0.95,
               max_tree_depth=5 if QUICK else 7, progress=False)
nuts_t = t_draws.predict(t_model, grid)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), sharey=True)
for ax, (title, reference, method) in zip(axes, (
        ("Student-t prior: mean field vs NUTS", nuts_t, pred_t),
        ("Gaussian prior: mean field vs NUTS", preds["nuts"], preds["meanfield"])), strict=True):
    band(ax, reference, "NUTS", "0.6")
    band(ax, method, "meanfield", "C1")
    ax.scatter(data.train.x[:, 0], data.train.y[:, 0], s=10, color="k", zorder=3,
               label="training data")
    ax.set(title=title, xlabel="x", ylim=(-160, 160))
    ax.legend(loc="upper left", fontsize=8)
axes[0].set_ylabel("f(x)")
plt.show()

# %% [markdown]
# *Figure 3. Mean field (orange) against NUTS (grey) under the Student-t prior (left) and under
# the Gaussian prior of section 2 (right); bands are mean ± 2 std of f(x).*
#
# **What to look for:** the table says whether mean field's errors come from the prior or from
# the mean-field family: measured against the NUTS of its own prior, the same guide can look
# better or worse than against the wrong reference.

# %%
pd.DataFrame({
    "meanfield vs NUTS, Student-t prior": hb.inference.compare(pred_t, nuts_t, grid, (-1, 1)),
    "meanfield (Student-t) vs Gaussian-prior NUTS": hb.inference.compare(
        pred_t, preds["nuts"], grid, (-1, 1)),
    "meanfield vs NUTS, Gaussian prior": hb.inference.compare(
        preds["meanfield"], preds["nuts"], grid, (-1, 1)),
}).T[list(columns)].rename(columns=columns).round(3)
