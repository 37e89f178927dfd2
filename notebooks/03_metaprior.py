# %% [markdown]
# # The MetaPrior: latent unit codes and a neural hyperprior
#
# Karaletsos, Dayan & Ghahramani (2018) give every unit u of a network a code z_u ∈ R^D with
# P(z) = N(0, I), and draw the weight from unit j to unit i from
#
#   P(w_ij | z_i, z_j; ξ) = N(μ, σ²),   [μ, σ] = g([z_i, z_j]; ξ),
#
# with one small network g shared by the whole net. The codes are the latent variables; the
# weights are drawn from P(W | Z) in the model *and* in the guide, so their density cancels in
# the ELBO and a guide only has to approximate Q(Z). Perturbing one unit's code moves all of its
# incoming and outgoing weights together: a structured, low-dimensional weight prior.
#
# This notebook:
# 1. checks that g's first layer, computed as an outer sum of per-unit projections, equals g on
#    the concatenated codes;
# 2. fits the cubic toy and draws functions by moving a single hidden unit's code;
# 3. classifies the half moons and shows the weight correlations one code induces;
# 4. *illates*: re-infers only the output codes after the labels are swapped, with g frozen.
#
# Set `HYPERBAYES_QUICK=1` for small settings (the test suite does).

# %%
import os

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

import hyperbayes as hb
from hyperbayes.experiments import metaprior_moons
from hyperbayes.guides import MeanField
from hyperbayes.models import BNN, MLP, Categorical, Gaussian, MetaPrior
from hyperbayes.models.metaprior import Hyperprior

QUICK = os.environ.get("HYPERBAYES_QUICK") == "1"
TOY_STEPS, MOON_STEPS, ILLATE_STEPS = (800, 400, 100) if QUICK else (4000, 3000, 500)
torch.manual_seed(0)

# %% [markdown]
# ## 1. g on concatenated codes, computed without concatenating
# g's first layer on [z_i, z_j] is A z_i + B z_j + c: project each unit's code once, then add
# the projections by broadcasting. No (weights × 2D) tensor is built.
#
# **What to look for:** one (μ, σ) pair per weight of a 784 → 100 layer, and a difference from
# the naive computation at float round-off (about 1e-7), not more.

# %%
g = Hyperprior(code_dim=2, hidden=32, outputs=2)
z_out, z_in = torch.randn(100, 2), torch.randn(784, 2)
factorized, naive = g(z_out, z_in), g.naive(z_out, z_in)
pd.DataFrame({"output shape (out units, in units, [μ, σ])": [tuple(factorized.shape)],
              "max |factorized − naive|": [(factorized - naive).abs().max().item()]})

# %% [markdown]
# ## 2. A function prior on the cubic toy
# 20 points of y = x³ + N(0, 3²); a 1-100-1 ReLU net whose weights come from 2-d codes and a
# hyperprior with 32 hidden units (the paper's toy). We standardize x and y for fitting.
#
# **What to look for:** the fit follows the data inside [−4, 4] (an in-range RMSE of the order
# of the noise, 3).

# %%
data = hb.datasets.load("cubic", seed=0)
x_scale, y_scale = 4.0, float(data.train.y.std())
train = (data.train.x / x_scale, data.train.y / y_scale)
model = BNN(MLP([1, 100, 1]), MetaPrior(code_dim=2, hidden=32),
            Gaussian(scale=data.info["noise_std"] / y_scale))
guide = MeanField(model, init_scale=0.1)
start_codes = guide.locs()
fit = hb.inference.fit(model, guide, train, steps=TOY_STEPS, lr=1e-2)
pred = hb.inference.predict(model, guide, data.test.x / x_scale, 200)
in_range = slice(50, 150)  # grid points inside the data range [−4, 4]
rmse = (pred.mean()[in_range] * y_scale - data.test.y[in_range, 0]).pow(2).mean().sqrt()
pd.DataFrame({"final loss (negative ELBO)": [fit.losses[-1]],
              "RMSE inside the data range": [float(rmse)], "noise std": [3.0]}).round(2)

# %% [markdown]
# Code means before and after training, and functions drawn by moving one hidden unit's code
# (all other codes at their posterior means; colour = how far the code moved).
#
# **What to look for:** training spreads the hidden units' codes apart (left → middle), and
# moving *one* unit's code changes the whole function smoothly (right): the code controls all
# of that unit's incoming and outgoing weights at once.

# %%
codes = guide.locs()
unit, draws = 7, 20
moved = {k: v.expand(draws, *v.shape).clone() for k, v in codes.items()}
offsets = torch.linspace(-2, 2, draws)
moved["codes.1"][:, unit, 0] += offsets
with torch.no_grad():
    f = model.net(model.prior.generate(moved, mean=True), data.test.x / x_scale)[..., 0]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for ax, (title, c) in zip(axes[:2], (("start", start_codes), ("end", codes)), strict=True):
    ax.scatter(*c["codes.1"].T, s=10, label="hidden units")
    ax.scatter(*c["codes.0"].T, marker="*", s=80, label="input")
    ax.scatter(*c["codes.2"].T, marker="*", s=80, label="output")
    ax.set(title=f"code means at the {title}", xlabel="code dimension 1",
           ylabel="code dimension 2")
    ax.legend(fontsize=8)
for k in range(draws):
    axes[2].plot(data.test.x[:, 0], f[k] * y_scale, color=plt.cm.coolwarm(k / (draws - 1)))
axes[2].scatter(data.train.x[:, 0], data.train.y[:, 0], color="k", s=10, zorder=3,
                label="training data")
axes[2].set(ylim=(-150, 150), title=f"moving hidden unit {unit}'s code", xlabel="x",
            ylabel="f(x)")
axes[2].legend(fontsize=8, loc="upper left")
colour = plt.cm.ScalarMappable(cmap="coolwarm", norm=plt.Normalize(-2, 2))
fig.colorbar(colour, ax=axes[2], label="offset of the code's first dimension")
plt.show()

# %% [markdown]
# ## 3. Half moons and the correlations one code induces
# The `metaprior-moons` experiment trains the MetaPrior, mean field and an MLP, and plots the
# weights into and out of one hidden unit while only that unit's code varies. Each method is
# set up by its registered recipe (`hb.methods`), so the same names work everywhere.
#
# **What to look for:** the three reach similar accuracy (the paper: the MetaPrior is "on par
# with a mean field BNN and an MLP"); the MetaPrior's weights into and out of one unit move
# together when its code moves (right figure), where independent weights would not.

# %%
settings = metaprior_moons.Settings.quick() if QUICK else metaprior_moons.Settings()
result = metaprior_moons.run(quick=QUICK, settings=settings, out="metaprior-moons")
display(pd.DataFrame(result.metrics["methods"]).T[["test_accuracy", "test_nll", "test_ece"]]
        .astype(float).round(3))
fig, axes = plt.subplots(1, 2, figsize=(13, 6))
for ax, figure in zip(axes, result.figures, strict=False):
    ax.imshow(plt.imread(figure))
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# *Figures written by `metaprior-moons`: left, for each method the predictive probability of
# class 1 (top) and the predictive entropy (bottom) over the plane, test points overlaid; right,
# the MetaPrior's weights into and out of one hidden unit at the start and the end of training
# as only that unit's code moves (colour: how far).*

# %% [markdown]
# ## 4. Illation: swap the labels, re-infer only the output codes
# With g frozen, the two output units can trade codes: updating those 2 × D numbers (and nothing
# else) should recover the accuracy on the swapped task.
#
# **What to look for:** accuracy on the swapped labels goes from about 1 − (clean accuracy) to
# about the clean accuracy, and the two output codes roughly trade places.

# %%
moons = hb.datasets.load("moons", seed=0, n_train=400, n_test=400)
model = BNN(MLP([2, 32, 2]), MetaPrior(code_dim=2, hidden=32), Categorical())
guide = MeanField(model, init_scale=0.1)
hb.inference.fit(model, guide, moons.train, steps=MOON_STEPS, lr=1e-2)


def accuracy(guide, labels):
    probs = hb.inference.predict(model, guide, moons.test.x, 50).mean()
    return (probs.argmax(-1) == labels).float().mean().item()


swapped = 1 - moons.test.y
new_guide, _ = hb.inference.illate(model, guide, (moons.train.x, 1 - moons.train.y),
                                   sites="outputs", steps=ILLATE_STEPS, lr=5e-2)
pd.DataFrame({
    "accuracy on the original labels": [accuracy(guide, moons.test.y),
                                        accuracy(new_guide, moons.test.y)],
    "accuracy on the swapped labels": [accuracy(guide, swapped), accuracy(new_guide, swapped)],
    "output code of class 0": [guide.locs()["codes.2"][0].numpy().round(2).tolist(),
                               new_guide.locs()["codes.2"][0].numpy().round(2).tolist()],
    "output code of class 1": [guide.locs()["codes.2"][1].numpy().round(2).tolist(),
                               new_guide.locs()["codes.2"][1].numpy().round(2).tolist()],
}, index=["trained", "after illating the output codes"]).round(3)
