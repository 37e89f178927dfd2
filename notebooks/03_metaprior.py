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
from IPython.display import Image, display

import hyperbayes as hb
from hyperbayes.experiments import metaprior_moons
from hyperbayes.guides import MeanField
from hyperbayes.models import BNN, MLP, Categorical, Gaussian, MetaPrior
from hyperbayes.models.metaprior import Hyperprior

torch.manual_seed(0)
QUICK = os.environ.get("HYPERBAYES_QUICK") == "1"
TOY_STEPS, MOON_STEPS, ILLATE_STEPS = (800, 400, 100) if QUICK else (4000, 3000, 500)

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
              "max |factorized − naive|": [(factorized - naive).abs().max().item()]},
             index=["784 → 100 layer"])

# %% [markdown]
# ## 2. A function prior on the cubic toy
# 20 points of y = x³ + N(0, 3²); a 1-100-1 ReLU net whose weights come from 2-d codes and a
# hyperprior with 32 hidden units (the paper's toy). We standardize x and y for fitting. The
# guide is mean field over the codes: a Gaussian Q(z_u) per unit, whose mean and standard
# deviation the table summarizes for the 100 hidden units.
#
# **What to look for:** the predictive mean follows the data inside [−4, 4] (an in-range RMSE
# of the order of the noise, 3). The code columns hold a surprise: the hidden codes' posterior
# means huddle close to 0 and their posterior standard deviation stays at the prior's, 1.
# Twenty points say next to nothing about any *single* hidden unit, so Q(z_u) stays at the
# prior N(0, I); what the data determine is the shared g and the input and output codes.

# %%
data = hb.datasets.load("cubic", seed=0)
x_scale, y_scale = 4.0, float(data.train.y.std())
train = (data.train.x / x_scale, data.train.y / y_scale)
model = BNN(MLP([1, 100, 1]), MetaPrior(code_dim=2, hidden=32),
            Gaussian(scale=data.info["noise_std"] / y_scale))
guide = MeanField(model, init_scale=0.1)
start_codes = guide.locs()
fit = hb.inference.fit(model, guide, train, steps=TOY_STEPS, lr=1e-2, progress=False)
pred = hb.inference.predict(model, guide, data.test.x / x_scale, 200)
in_range = slice(50, 150)  # the test grid's points with x in [−3, 3]
rmse = (pred.mean()[in_range] * y_scale - data.test.y[in_range, 0]).pow(2).mean().sqrt()
codes = guide.locs()
pd.DataFrame({"final loss (negative ELBO)": [fit.losses[-1]],
              "RMSE on x in [−3, 3] (inside the data)": [float(rmse)], "noise std": [3.0],
              "spread (std) of the hidden code means": [float(codes["codes.1"].std())],
              "posterior std of a hidden code (mean)": [float(guide.scales()["codes.1"].mean())],
              "prior std of a code": [1.0]}, index=["MetaPrior, cubic toy"]).T.round(3)

# %% [markdown]
# Four views of the fit. From left to right: the code means of all units at the start of
# training (drawn from the guide's initialization) and at the end; the predictive band; and
# functions drawn by moving one hidden unit's code along its first dimension, with every other
# code at its posterior mean and the weights at g's means (colour = how far the code moved).
#
# **What to look for:** training pulls the hidden codes' *means* together near the origin
# (mind the axis ranges), while the input unit's code (orange star) ends well away from them. The
# predictive band (third panel) fits the data, but the function with *every* code at its mean
# (dashed) does not: that net has 100 near-identical hidden units, whereas the posterior draws
# each unit's code from a unit-variance Q, and the predictive averages over those draws. For the
# same reason moving one of the 100 hidden codes (right) changes the function only a little.

# %%
unit, draws = 7, 20
moved = {k: v.expand(draws, *v.shape).clone() for k, v in codes.items()}
offsets = torch.linspace(-2, 2, draws)
moved["codes.1"][:, unit, 0] += offsets
xs = data.test.x[:, 0]
with torch.no_grad():
    f = model.net(model.prior.generate(moved, mean=True), data.test.x / x_scale)[..., 0]
    at_means = model.net(model.prior.generate(codes, mean=True), data.test.x / x_scale)[..., 0]
fig, axes = plt.subplots(1, 4, figsize=(18, 3.8), layout="constrained")
for ax, (title, c) in zip(axes[:2], (("start", start_codes), ("end", codes)), strict=True):
    ax.scatter(*c["codes.1"].T, s=10, label="hidden units")
    ax.scatter(*c["codes.0"].T, marker="*", s=80, label="input unit")
    ax.scatter(*c["codes.2"].T, marker="*", s=80, label="output unit")
    ax.set(title=f"code means at the {title} of training", xlabel="code dimension 1",
           ylabel="code dimension 2")
    ax.legend(fontsize=8)
mean, std = pred.f.mean(0) * y_scale, pred.f.std(0) * y_scale
axes[2].fill_between(xs, mean - 2 * std, mean + 2 * std, alpha=0.3, label="predictive ±2σ")
axes[2].plot(xs, mean, label="predictive mean")
axes[2].plot(xs, at_means * y_scale, "k--", lw=1, label="every code at its mean")
axes[2].plot(xs, data.info["true_function"][:, 0], color="0.5", lw=0.8, label="x³")
axes[2].set(ylim=(-150, 150), title="MetaPrior predictive", xlabel="x", ylabel="f(x)")
for k in range(draws):
    axes[3].plot(xs, f[k] * y_scale, color=plt.cm.coolwarm(k / (draws - 1)),
                 label="one code moved" if k == 0 else None)
axes[3].set(ylim=(-150, 150), title=f"moving hidden unit {unit}'s code", xlabel="x",
            ylabel="f(x)")
for ax in axes[2:]:
    ax.scatter(data.train.x[:, 0], data.train.y[:, 0], color="k", s=10, zorder=3,
               label="training data")
    ax.legend(fontsize=8, loc="upper left")
colour = plt.cm.ScalarMappable(cmap="coolwarm", norm=plt.Normalize(-2, 2))
fig.colorbar(colour, ax=axes[3], label="offset of the code's first dimension")
plt.show()

# %% [markdown]
# *Figure 1. MetaPrior on the cubic toy (1-100-1 ReLU net, 2-d codes). Left two panels: the
# code means of the 100 hidden units (dots) and of the input and output units (stars) before
# and after training; note the different axis ranges. Third: predictive mean ± 2 std of f(x)
# from 200 posterior draws, the function with every code at its posterior mean (dashed), the
# true x³ (grey) and the data. Right: f(x) with hidden unit 7's code shifted along its first
# dimension by −2 … 2 (colour) and everything else at its posterior mean.*
#
# So on this toy the MetaPrior acts less like "one code per meaningful unit" and more like a
# learnt distribution over units: g, together with the input and output codes, describes what a
# typical hidden unit looks like, and the hidden units are exchangeable draws from it.
# `hyperbayes run metaprior-toy` compares the same fit with mean field and NUTS.
#
# ## 3. Half moons and the correlations one code induces
# The `metaprior-moons` experiment trains the MetaPrior, mean field and an MLP (the MAP
# estimate) on 1,000 points, and plots the weights into and out of one hidden unit while only
# that unit's code varies. Each method is set up by its registered recipe (`hb.methods`), so the
# same names work everywhere.
#
# **What to look for:** the three reach similar accuracy (the paper: the MetaPrior is "on par
# with a mean field BNN and an MLP").

# %%
settings = metaprior_moons.Settings.quick() if QUICK else metaprior_moons.Settings()
result = metaprior_moons.run(quick=QUICK, settings=settings, out="metaprior-moons",
                             progress=False)
columns = {"test_accuracy": "test accuracy", "test_nll": "test NLL", "test_ece": "ECE"}
pd.DataFrame(result.metrics["methods"]).T[list(columns)].astype(float).rename(
    columns=columns).rename_axis("method").round(3)

# %% [markdown]
# The experiment writes two figures, shown below as it saved them.
#
# **What to look for:** in the first, all three methods draw a similar boundary through the
# data; the band of high predictive entropy (bottom row) along it widens away from the data for
# the two Bayesian methods, while the MAP net's stays a thin line. In the second, the MetaPrior's
# weights into and out of one unit, which start as a shapeless cloud, lie along curves after
# training when only that unit's code moves: one code moves all of the unit's weights *together*,
# where independent weights would scatter.

# %%
for figure in result.figures:
    display(Image(filename=str(figure)))

# %% [markdown]
# *Figure 2 (first image, written by `metaprior-moons`). For each method (columns) the
# predictive probability of class 1 (top row) and the predictive entropy in nats (bottom row)
# over the plane, with the test points overlaid (blue: class 0, red: class 1).*
#
# *Figure 3 (second image). The MetaPrior's weights into hidden unit 0 (left, layer 1) and out
# of it (right, layer 2) at the start (top) and the end (bottom) of training, with every code
# at its posterior mean except unit 0's, which is drawn repeatedly from its Q; colour: how far
# the drawn code is from its mean, in posterior standard deviations.*
#
# ## 4. Illation: swap the labels, re-infer only the output codes
# With g frozen, the two output units can trade codes: updating those 2 × D numbers (and nothing
# else) should recover the accuracy on the swapped task. We train a MetaPrior on 400 points
# here, then *illate* with the labels swapped.
#
# **What to look for:** accuracy on the swapped labels goes from about 1 − (clean accuracy) to
# about the clean accuracy, and the two output codes roughly trade places.

# %%
moons = hb.datasets.load("moons", seed=0, n_train=400, n_test=400)
model = BNN(MLP([2, 32, 2]), MetaPrior(code_dim=2, hidden=32), Categorical())
guide = MeanField(model, init_scale=0.1)
hb.inference.fit(model, guide, moons.train, steps=MOON_STEPS, lr=1e-2, progress=False)


def accuracy(guide, labels):
    probs = hb.inference.predict(model, guide, moons.test.x, 50).mean()
    return (probs.argmax(-1) == labels).float().mean().item()


swapped = 1 - moons.test.y
new_guide, _ = hb.inference.illate(model, guide, (moons.train.x, 1 - moons.train.y),
                                   sites="outputs", steps=ILLATE_STEPS, lr=5e-2,
                                   progress=False)
guides = {"trained": guide, "after illating the output codes": new_guide}
pd.DataFrame({name: {"accuracy on the original labels": accuracy(q, moons.test.y),
                     "accuracy on the swapped labels": accuracy(q, swapped),
                     **{f"class {c} output code, dim {d + 1}": float(q.locs()["codes.2"][c, d])
                        for c in (0, 1) for d in (0, 1)}}
              for name, q in guides.items()}).round(3)

# %% [markdown]
# The same change as pictures: where the output codes went, and what the classifier does
# before and after.
#
# **What to look for:** left, the two output codes roughly trade places (most clearly in the
# second code dimension) while the hidden codes stay put; middle and right, the predicted
# class-1 region flips sides while the boundary keeps its shape, because g and every other code
# are unchanged. The test points are coloured by their *swapped* label, so they sit on the wrong
# side before illation and on the right side after.

# %%
gx, gy = torch.meshgrid(torch.linspace(-2.0, 3.2, 120), torch.linspace(-1.5, 2.2, 90),
                        indexing="xy")
plane = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
hidden_codes = guide.locs()["codes.1"]
axes[0].scatter(*hidden_codes.T, s=8, color="0.6", label="hidden units (unchanged)")
for c, colour in ((0, "C0"), (1, "C3")):
    before, after = guide.locs()["codes.2"][c], new_guide.locs()["codes.2"][c]
    axes[0].scatter(*before, marker="*", s=150, color=colour, label=f"class {c}: trained")
    axes[0].scatter(*after, marker="X", s=90, color=colour, label=f"class {c}: after illation")
    axes[0].annotate("", after.tolist(), before.tolist(),
                     arrowprops={"arrowstyle": "->", "color": colour})
axes[0].set(title="output codes move, the rest stays", xlabel="code dimension 1",
            ylabel="code dimension 2")
axes[0].legend(fontsize=8)
for ax, (name, q) in zip(axes[1:], guides.items(), strict=True):
    probs = hb.inference.predict(model, q, plane, 50).mean()[:, 1].reshape(gx.shape)
    image = ax.contourf(gx, gy, probs, levels=torch.linspace(0, 1, 21), cmap="RdBu_r")
    for c, marker in ((0, "o"), (1, "^")):
        points = moons.test.x[swapped == c]
        ax.scatter(points[:, 0], points[:, 1], s=12, marker=marker, color="w" if c else "k",
                   edgecolor="k", lw=0.5, label=f"swapped label {c}")
    ax.set(title=f"P(class 1): {name}", xlabel="x₁", ylabel="x₂")
    ax.legend(fontsize=8, loc="lower left")
fig.colorbar(image, ax=axes[1:], label="predictive probability of class 1")
plt.show()

# %% [markdown]
# *Figure 4. Illation on the half moons. Left: the code means of the hidden units (grey) and
# of the two output units before (stars) and after (crosses) re-inferring only the output codes
# on swapped labels. Middle and right: the predictive probability of class 1 over the plane
# before and after (red: class 1), with the test points marked by their swapped label (black
# dots: 0, white triangles: 1).*
