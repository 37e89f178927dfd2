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
import torch

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

# %%
g = Hyperprior(code_dim=2, hidden=32, outputs=2)
z_out, z_in = torch.randn(100, 2), torch.randn(784, 2)
factorized, naive = g(z_out, z_in), g.naive(z_out, z_in)
print("output per weight:", tuple(factorized.shape), " max |difference|:",
      (factorized - naive).abs().max().item())

# %% [markdown]
# ## 2. A function prior on the cubic toy
# 20 points of y = x³ + N(0, 3²); a 1-100-1 ReLU net whose weights come from 2-d codes and a
# hyperprior with 32 hidden units (the paper's toy). We standardize x and y for fitting.

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
print(f"final loss {fit.losses[-1]:.1f}; in-range RMSE "
      f"{(pred.mean()[50:150] * y_scale - data.test.y[50:150, 0]).pow(2).mean().sqrt():.1f}")

# %% [markdown]
# Code means before and after training, and functions drawn by moving one hidden unit's code
# (all other codes at their posterior means; colour = how far the code moved).

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
    ax.set_title(f"code means at the {title}")
    ax.legend(fontsize=8)
for k in range(draws):
    axes[2].plot(data.test.x[:, 0], f[k] * y_scale, color=plt.cm.coolwarm(k / (draws - 1)))
axes[2].scatter(data.train.x[:, 0], data.train.y[:, 0], color="k", s=10, zorder=3)
axes[2].set_ylim(-150, 150)
axes[2].set_title(f"moving hidden unit {unit}'s code")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Half moons and the correlations one code induces
# The `metaprior-moons` experiment trains the MetaPrior, mean field and an MLP, and plots the
# weights into and out of one hidden unit while only that unit's code varies.

# %%
settings = metaprior_moons.Settings.quick() if QUICK else metaprior_moons.Settings()
result = metaprior_moons.run(quick=QUICK, settings=settings, out="metaprior-moons")
for name, row in result.metrics["methods"].items():
    print(f"{name:10s} test accuracy {row['test_accuracy']:.3f}")
fig, axes = plt.subplots(1, 2, figsize=(13, 6))
for ax, figure in zip(axes, result.figures, strict=False):
    ax.imshow(plt.imread(figure))
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Illation: swap the labels, re-infer only the output codes
# With g frozen, the two output units can trade codes: updating those 2 × D numbers (and nothing
# else) should recover the accuracy on the swapped task.

# %%
moons = hb.datasets.load("moons", seed=0, n_train=400, n_test=400)
model = BNN(MLP([2, 32, 2]), MetaPrior(code_dim=2, hidden=32), Categorical())
guide = MeanField(model, init_scale=0.1)
hb.inference.fit(model, guide, moons.train, steps=MOON_STEPS, lr=1e-2)


def accuracy(guide, labels):
    probs = hb.inference.predict(model, guide, moons.test.x, 50).mean()
    return (probs.argmax(-1) == labels).float().mean().item()


swapped = 1 - moons.test.y
print(f"clean accuracy {accuracy(guide, moons.test.y):.3f}; on swapped labels "
      f"{accuracy(guide, swapped):.3f}")
new_guide, _ = hb.inference.illate(model, guide, (moons.train.x, 1 - moons.train.y),
                                   sites="outputs", steps=ILLATE_STEPS, lr=5e-2)
print(f"after illating the output codes: swapped-label accuracy {accuracy(new_guide, swapped):.3f}")
print("output codes before:", guide.locs()["codes.2"].numpy().round(2).tolist())
print("output codes after: ", new_guide.locs()["codes.2"].numpy().round(2).tolist())
