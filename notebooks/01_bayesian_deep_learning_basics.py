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
import pyro.distributions as dist
import torch

import hyperbayes as hb
from hyperbayes.inference import nuts
from hyperbayes.inference.diagnostics import az, function_space_diagnostics, nuts_inference_data
from hyperbayes.models import BNN, MLP, Gaussian, priors

QUICK = os.environ.get("HYPERBAYES_QUICK") == "1"
STEPS, NUTS_DRAWS = (300, 60) if QUICK else (3000, 200)
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

# %%
net = MLP([1, 50, 1])
model = BNN(net, priors.FanInNormal(1.0), Gaussian(scale=noise))
prior_draws = hb.inference.predict_from_samples(model, hb.inference.sample_prior(model, 30), grid)
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(data.test.x[:, 0], (prior_draws.f * y_scale).T, color="C0", alpha=0.4, lw=1)
ax.set(title="prior predictive: 30 functions", xlabel="x", ylabel="y")
plt.show()

# %% [markdown]
# ## 2. Approximate posteriors against NUTS
# Each method is a *model + guide* pair from the registry; `fit` runs Pyro SVI and `predict`
# evaluates S posterior samples in one batched pass.

# %%
preds = {}
for name in ("map", "meanfield", "mcdropout"):
    model, guide, loss = hb.methods.build(name, MLP([1, 50, 1]), priors.FanInNormal(1.0),
                                          Gaussian(scale=noise))
    hb.inference.fit(model, guide, train, steps=STEPS, lr=1e-2, loss=loss, progress=False)
    preds[name] = hb.inference.predict(model, guide, grid, num_samples=300)

ref_model = BNN(MLP([1, 50, 1]), priors.FanInNormal(1.0), Gaussian(scale=noise))
draws = nuts(ref_model, train, num_samples=NUTS_DRAWS, warmup=NUTS_DRAWS, num_chains=2,
             max_tree_depth=5 if QUICK else 6, progress=False)
preds["nuts"] = draws.predict(ref_model, grid)

fig, axes = plt.subplots(1, 4, figsize=(15, 3), sharey=True)
for ax, (name, pred) in zip(axes, preds.items(), strict=True):
    mean, std = pred.f.mean(0) * y_scale, pred.f.std(0) * y_scale
    ax.fill_between(data.test.x[:, 0], mean - 2 * std, mean + 2 * std, alpha=0.3)
    ax.plot(data.test.x[:, 0], mean)
    ax.scatter(data.train.x[:, 0], data.train.y[:, 0], s=10, color="k")
    ax.set(title=name, ylim=(-160, 160))
plt.show()

# %% [markdown]
# `compare` measures each method against NUTS in function space: the ratio of predictive
# standard deviations inside and outside the data range, and the W₁ distance between the
# predictive distributions of f(x).

# %%
for name in ("map", "meanfield", "mcdropout"):
    print(name, hb.inference.compare(preds[name], preds["nuts"], grid, (-1.0, 1.0)))

# %% [markdown]
# ## 3. Diagnostics with ArviZ
# Weight-space R-hat is large: hidden units can be permuted and their signs flipped, so
# different chains find equivalent but different weights. The function the net computes is
# invariant to those symmetries, so R-hat of the predictions at grid points is the one to read.

# %%
idata = nuts_inference_data(draws)
print(az.summary(idata, var_names=["fc1.bias"], kind="diagnostics"))
print("function space:", function_space_diagnostics(ref_model, draws, grid))
print("divergences per chain:", draws.divergences)

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
pred = hb.inference.predict(model, guide, grid, num_samples=300)
print("Student-t prior, mean field:", hb.inference.compare(pred, preds["nuts"], grid, (-1, 1)))
