"""The method registry: one short name per (model, guide, loss) recipe, used everywhere.

Names are the same on the command line, in metrics.json and in code: ``map``, ``meanfield``,
``mcdropout`` (and ``nuts``, which is a sampler, not a guide: see
:func:`hyperbayes.inference.nuts`). Later methods register themselves with
:func:`register`.

A *variant* (:func:`register_variant`) is a method with some build options fixed and,
optionally, its prior replaced: ``mle`` is ``map`` under a flat prior, ``flow_realnvp`` is
``flow`` with RealNVP couplings, ``bbh_nn`` is ``bbh`` with the nearest-neighbour KL. A method
with a *count option* also answers to ``<name>-<K>``: ``flow-8`` is ``flow`` with 8 couplings.
An *alias* (:func:`register_alias`) is a second name for a method, such as a paper's own name
for it (``gaussian_lv`` for ``metaprior``).

A method also carries a :class:`Recipe` per family of tasks (``"classification"``,
``"regression"``): the net, prior, build options and fit settings that work for it there. Code
that must run *every* method (the uncertainty suite) calls :func:`setup` and never names one.

Example::

    model, guide, loss = hb.methods.build("meanfield", MLP([1, 50, 1]), prior, likelihood)
    hb.inference.fit(model, guide, data.train, steps=2000, loss=loss)

    # any registered method, set up as its recipe for image classification says
    model, guide, loss, fit_options = hb.methods.setup("bbh", "classification", [784, 400, 10],
                                                      priors.Normal(1.0), Categorical())
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .guides import (
    Delta,
    DiversityGuide,
    Ensemble,
    FlowGuide,
    ImplicitGuide,
    LaplaceGuide,
    MeanField,
    SWAGGuide,
)
from .inference.elbo import ELBO
from .inference.implicit import (
    AdversarialELBO,
    DiversityObjective,
    EntropyELBO,
    NearestNeighbourELBO,
)
from .models import BNN, MLP, TorchNet, priors
from .models.metaprior import MetaPrior

__all__ = ["Method", "Recipe", "register", "register_variant", "register_alias", "build",
           "setup", "fit_options", "available", "aliases", "get", "REFERENCE", "FAMILIES"]

REFERENCE = "nuts"
FAMILIES = ("classification", "regression")


@dataclass(frozen=True)
class Recipe:
    """How one method is set up for a family of tasks, so that a task names no method.

    A recipe is kept per family (``"classification"``, ``"regression"``) and, where one task's
    protocol differs from its family's, per task: ``"regression/product"`` is looked up first
    and falls back to ``"regression"``.

    Attributes:
        options: build options (passed to the method's ``build``).
        fit: :func:`~hyperbayes.inference.fit` overrides (``lr``, ``kl_schedule``, ...), and
            ``steps_factor``: train this many times the task's step count (see
            :func:`fit_options`).
        prior: a factory ``() -> Prior`` that replaces the task's prior, or None to keep it
            (regression toys keep theirs, so NUTS and every guide target one posterior).
        weight_norm: whether the method wants weight-norm layers (guides over the scales).
        module_options: build options that replace ``options`` when the net is a user's
            ``torch.nn.Module`` (:class:`~hyperbayes.models.TorchNet`).
        module_bayesian: on a user's module, which parameters the method makes Bayesian:
            None (all) or ``"linear"`` (those of its ``nn.Linear`` layers; the rest are point
            estimates trained with the guide).
    """

    options: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    prior: Callable | None = None
    weight_norm: bool = False
    module_options: dict = field(default_factory=dict)
    module_bayesian: str | None = None


@dataclass(frozen=True)
class Method:
    """A named recipe: ``build(net, prior, likelihood, **options) -> (model, guide, loss)``.

    Attributes:
        name: the short name.
        summary: one line for ``--help`` and reports.
        build: the constructor.
        fit_defaults: suggested :func:`~hyperbayes.inference.fit` settings (e.g. ``lr``).
        reference: the paper the method comes from.
        recipes: a :class:`Recipe` per family of tasks (see :data:`FAMILIES`), and per task
            where a task's protocol differs (``"regression/product"``).
        base: for a variant, the method it derives from (None for a base method).
        count_option: the build option that ``<name>-<K>`` sets to K (``num_flows`` for
            ``flow``), or None.
    """

    name: str
    summary: str
    build: Callable
    fit_defaults: dict = field(default_factory=dict)
    reference: str = ""
    recipes: dict = field(default_factory=dict)
    base: str | None = None
    count_option: str | None = None

    def recipe(self, family: str) -> Recipe:
        """This method's :class:`Recipe` for ``family`` or ``"family/task"`` (the task's own
        recipe where there is one, else the family's; an empty one where neither is given)."""
        head = family.split("/", 1)[0]
        if head not in FAMILIES:
            raise ValueError(f"unknown task family {family!r}; choose from {FAMILIES} "
                             "(optionally followed by /<task>)")
        return self.recipes.get(family) or self.recipes.get(head) or Recipe()


_REGISTRY: dict[str, Method] = {}
_ALIASES: dict[str, str] = {}
_COUNTED = re.compile(r"^(?P<base>.+)-(?P<count>\d+)$")


def register(method: Method) -> Method:
    """Add ``method`` to the registry (a name can be registered once)."""
    if method.name in _REGISTRY or method.name in _ALIASES or method.name == REFERENCE:
        raise ValueError(f"method {method.name!r} is already registered")
    if _COUNTED.match(method.name):
        raise ValueError(f"method names cannot end in -<digits> ({method.name!r}): that form "
                         "sets a method's count option")
    _REGISTRY[method.name] = method
    return method


def _derive(base: Method, name: str, summary: str, options: dict, prior: Callable | None,
            recipes: dict | None, reference: str | None) -> Method:
    """``base`` with ``options`` fixed and its prior replaced by ``prior()`` where given."""
    options = dict(options)

    def build(net, given_prior, likelihood, **more):
        return base.build(net, prior() if prior is not None else given_prior, likelihood,
                          **{**options, **more})

    derived = {}
    # a variant that replaces the prior does so in every family, recipe or not
    for key in {*base.recipes, *(recipes or {}), *(FAMILIES if prior is not None else ())}:
        own = (recipes or {}).get(key)
        inherited = base.recipe(key)
        recipe = own if own is not None else replace(
            inherited, options={**inherited.options, **options})
        if prior is not None:
            recipe = replace(recipe, prior=prior)
        derived[key] = recipe
    return Method(name, summary, build, fit_defaults=dict(base.fit_defaults),
                  reference=base.reference if reference is None else reference,
                  recipes=derived, base=base.name, count_option=base.count_option)


def register_variant(name: str, base: str, summary: str, *, options: dict | None = None,
                     prior: Callable | None = None, recipes: dict | None = None,
                     reference: str | None = None) -> Method:
    """Register ``name`` as method ``base`` with build ``options`` fixed.

    Args:
        name: the variant's name.
        base: a registered method.
        summary: one line saying what the variant is.
        options: build options the variant fixes (a caller's options still override them).
        prior: a factory ``() -> Prior`` that replaces any given prior (``mle``: flat), or None.
        recipes: recipes of its own per family or task; a family without one inherits the
            base's recipe with ``options`` laid over it.
        reference: its paper, if not the base's.

    Example::

        hb.methods.register_variant("flow_iaf_2", "flow", "a 2-layer IAF flow guide",
                                    options={"flow": "iaf", "num_flows": 2})
    """
    return register(_derive(get(base), name, summary, options or {}, prior, recipes, reference))


def register_alias(alias: str, name: str) -> None:
    """Let ``alias`` (e.g. a paper's own name) stand for the registered method ``name``."""
    get(name)
    if alias in _REGISTRY or alias in _ALIASES:
        raise ValueError(f"{alias!r} is already a method or alias")
    _ALIASES[alias] = name


def available(variants: bool = True) -> list[str]:
    """The registered method names (NUTS is separate: it is a sampler); ``variants=False``
    leaves out the variants (what a suite that runs every method runs)."""
    return sorted(n for n, m in _REGISTRY.items() if variants or m.base is None)


def aliases() -> dict[str, str]:
    """Alias → the method it stands for."""
    return dict(sorted(_ALIASES.items()))


def get(name: str) -> Method:
    """The :class:`Method` called ``name`` (a registered name, an alias, or ``<name>-<K>`` for a
    method with a count option); unknown names list the known ones."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _ALIASES:
        return _REGISTRY[_ALIASES[name]]
    counted = _COUNTED.match(name)
    if counted and counted["base"] in _REGISTRY and _REGISTRY[counted["base"]].count_option:
        base = _REGISTRY[counted["base"]]
        count = int(counted["count"])
        return _derive(base, name, f"{base.name} with {base.count_option}={count}",
                       {base.count_option: count}, None, None, None)
    known = list(_REGISTRY) + list(_ALIASES) + [REFERENCE]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    counted_forms = [f"{n}-<K>" for n, m in _REGISTRY.items() if m.count_option]
    raise ValueError(f"unknown method {name!r}{hint}; available: "
                     f"{', '.join(available() + counted_forms + list(_ALIASES) + [REFERENCE])}")


def build(name: str, net, prior, likelihood, **options):
    """Build ``(model, guide, loss)`` for method ``name`` on the given net, prior, likelihood."""
    return get(name).build(net, prior, likelihood, **options)


def setup(name: str, family: str, sizes, prior, likelihood, *, seed: int = 0,
          activation: str = "relu", bias: bool = True, **options):
    """Build method ``name`` on an MLP of ``sizes`` (or on a user's module) the way its recipe
    for ``family`` says.

    Args:
        name: a registered method.
        family: ``"classification"`` or ``"regression"`` (see :class:`Recipe`).
        sizes: MLP widths, input first (images are flattened); or a ``torch.nn.Module`` or
            :class:`~hyperbayes.models.TorchNet`, rebuilt with weight norm where the recipe
            wants it (``activation`` and ``bias`` then do not apply).
        prior: the task's prior, used unless the recipe replaces it.
        likelihood: the task's likelihood.
        seed: seeds the guide's initialization.
        activation, bias: the MLP's hidden activation and whether its layers have biases.
        **options: build options that override the recipe's.

    Returns:
        ``(model, guide, loss, fit_options)``: pass ``fit_options`` on to
        :func:`~hyperbayes.inference.fit` (the method's ``fit_defaults`` under the recipe's).
    """
    method = get(name)
    recipe = method.recipe(family)
    recipe_options = dict(recipe.options)
    if isinstance(sizes, torch.nn.Module):
        net = _module_net(sizes, recipe)
        recipe_options.update(recipe.module_options)
    else:
        net = MLP(sizes, activation, weight_norm=recipe.weight_norm, bias=bias)
    chosen_prior = recipe.prior() if recipe.prior is not None else prior
    model, guide, loss = method.build(net, chosen_prior, likelihood, seed=seed,
                                      **{**recipe_options, **options})
    return model, guide, loss, {**method.fit_defaults, **recipe.fit}


def fit_options(options: dict, steps: int) -> dict:
    """:func:`setup`'s ``fit_options`` for a task that trains ``steps`` steps: the recipe's
    ``steps_factor`` (default 1) applied, ready for :func:`~hyperbayes.inference.fit`."""
    options = dict(options)
    factor = options.pop("steps_factor", 1.0)
    return {**options, "steps": max(1, round(steps * factor))}


def _module_net(module: torch.nn.Module, recipe: Recipe) -> TorchNet:
    """A user's module (or TorchNet) as the recipe wants it: weight norm, Bayesian part."""
    net = module if isinstance(module, TorchNet) else TorchNet(module)
    bayesian = net.bayesian
    if recipe.module_bayesian == "linear":
        bayesian = [f"{prefix}.*" for prefix in net.linear_layers()]
        if not bayesian:
            raise ValueError("this method makes the nn.Linear layers of a module Bayesian, and "
                             "the module has none")
    elif recipe.module_bayesian is not None:
        raise ValueError(f"unknown module_bayesian {recipe.module_bayesian!r}")
    if net.weight_norm == recipe.weight_norm and tuple(bayesian) == net.bayesian:
        return net
    return TorchNet(net.module, bayesian=bayesian, frozen=net.frozen,
                    weight_norm=recipe.weight_norm, init=net.init, sample_chunk=net.sample_chunk)


def _map(net, prior, likelihood, seed=0):
    model = BNN(net, prior, likelihood)
    return model, Delta(model, seed=seed), ELBO()


def _ensemble(net, prior, likelihood, seed=0, members=5):
    model = BNN(net, prior, likelihood)
    guide = Ensemble(model, members=members, seed=seed)
    return model, guide, guide.default_loss()


def _laplace(net, prior, likelihood, seed=0, subset="all", hessian="kron",
             prior_precision="marglik", predictive="glm"):
    model = BNN(net, prior, likelihood)
    guide = LaplaceGuide(model, subset=subset, hessian=hessian, prior_precision=prior_precision,
                         predictive=predictive, seed=seed)
    return model, guide, guide.default_loss()


def _swag(net, prior, likelihood, seed=0, rank=20, snapshots=40, steps_between=None,
          collect_fraction=0.25, swa_lr=1e-2, batch_size=None, batch_fraction=None):
    model = BNN(net, prior, likelihood)
    guide = SWAGGuide(model, rank=rank, snapshots=snapshots, steps_between=steps_between,
                      collect_fraction=collect_fraction, swa_lr=swa_lr, batch_size=batch_size,
                      batch_fraction=batch_fraction, seed=seed)
    return model, guide, guide.default_loss()


def _meanfield(net, prior, likelihood, seed=0, init_scale=1e-3, local_reparameterization=False,
               num_particles=1):
    model = BNN(net, prior, likelihood)
    # a recipe's local reparameterization applies where the net has dense weight matrices
    guide = MeanField(model, init_scale=init_scale,
                      local_reparameterization="auto" if local_reparameterization else False,
                      seed=seed)
    return model, guide, ELBO(num_particles=num_particles)


def _mcdropout(net, prior, likelihood, seed=0, dropout=0.1):
    model = BNN(net.with_dropout(dropout), prior, likelihood)
    return model, Delta(model, seed=seed), ELBO()


_BHN_INIT_SCALE = math.exp(-7)  # the Bayesian hypernetworks code's initial log-scale


def _flow(net, prior, likelihood, seed=0, flow="realnvp", num_flows=8, hidden=200, over="auto",
          init_scale=_BHN_INIT_SCALE, init_loc=None, noise_groups=1, log_scale_clamp="soft",
          num_particles=1):
    model = BNN(net, prior, likelihood, noise_groups=noise_groups)
    guide = FlowGuide(model, flow=flow, num_flows=num_flows, hidden=hidden, over=over,
                      init_scale=init_scale, init_loc=init_loc, log_scale_clamp=log_scale_clamp,
                      seed=seed)
    return model, guide, ELBO(num_particles=num_particles)


def _metaprior(net, prior, likelihood, seed=0, code_dim=2, hidden=32, variant="gaussian",
               codes="latent", global_dim=0, init_scale=0.1, **prior_options):
    # The method *is* its prior: the given prior is replaced by a MetaPrior over the same net.
    meta = MetaPrior(code_dim=code_dim, hidden=hidden, variant=variant, codes=codes,
                     global_dim=global_dim, seed=seed, **prior_options)
    model = BNN(net, meta, likelihood)
    guide = (Delta(model, seed=seed) if codes == "onehot" else
             MeanField(model, init_scale=init_scale, seed=seed))
    return model, guide, ELBO()


KL_ESTIMATORS = ("adversarial", "nn", "entropy")


def _bbh(net, prior, likelihood, seed=0, kl="adversarial", over="auto", noise_dim=None,
         hidden=None, num_samples=5, init_spread=0.1, discriminator="coordinate",
         discriminator_hidden=None, discriminator_steps=1, pretrain_steps=300,
         discriminator_lr=1e-3, k=1, prior_samples=None, allow_degenerate=False, dropout=0.0):
    model = BNN(net.with_dropout(dropout) if dropout else net, prior, likelihood)
    guide = ImplicitGuide(model, over=over, noise_dim=noise_dim, hidden=hidden,
                          init_spread=init_spread, seed=seed)
    if kl == "adversarial":
        loss = AdversarialELBO(kind=discriminator, hidden_sizes=discriminator_hidden,
                               discriminator_steps=discriminator_steps,
                               pretrain_steps=pretrain_steps, discriminator_lr=discriminator_lr,
                               num_particles=num_samples, allow_degenerate=allow_degenerate)
    elif kl == "nn":
        loss = NearestNeighbourELBO(k=k, prior_samples=prior_samples, num_particles=num_samples,
                                    allow_degenerate=allow_degenerate)
    elif kl == "entropy":
        loss = EntropyELBO(k=k, num_particles=num_samples, allow_degenerate=allow_degenerate)
    else:
        raise ValueError(f"unknown kl {kl!r}; choose from {KL_ESTIMATORS}")
    return model, guide, loss


def _diversity(net, prior, likelihood, seed=0, lam=1000.0, gauge=True, noise_dim=300,
               extractor_hidden=(300, 300), code_dim=15, generator_hidden=(100, 100),
               batch_norm=True, num_samples=32, k=1, with_prior=False, allow_degenerate=False):
    # the paper's objective has no prior term (the given prior then only serves prior
    # predictive draws); with_prior=True adds −E_q[log p(w)]
    if gauge and isinstance(net, TorchNet):
        raise ValueError("gauge fixing needs the library's MLP or CNN (it must know which "
                         "unit feeds which); pass gauge=False for a TorchNet")
    model = BNN(net, prior, likelihood)
    guide = DiversityGuide(model, noise_dim=noise_dim, extractor_hidden=extractor_hidden,
                           code_dim=code_dim, generator_hidden=generator_hidden,
                           batch_norm=batch_norm, seed=seed)
    return model, guide, DiversityObjective(lam=lam, gauge=gauge, k=k, num_particles=num_samples,
                                            with_prior=with_prior,
                                            allow_degenerate=allow_degenerate)


# Recipes: the settings each method was measured with in this library's reproductions.
# Classification: MLPs on MNIST (bhn-mnist, bbh-mnist, metaprior-mnist, diversity-mnist).
# Regression: 1-d toys against NUTS under the toy's own prior (toy-regression, bhn-toy,
# metaprior-toy, bbh-toy, diversity-toy).
def _scales_prior(scale_prior):
    """A factory: ``scale_prior`` on the weight-norm scales, flat on directions and biases."""
    return lambda: priors.by_name({"*.scale": scale_prior(), "*": priors.Flat()})


_FLOW_REGRESSION_FIT = {"lr": 3e-3, "clip_norm": 10.0, "lr_schedule": "cosine",
                        "steps_factor": 3.0}
_PRODUCT_FLOW = {"flow": "iaf", "num_flows": 4, "hidden": 32, "over": "weights", "init_scale": 1.0,
                 "init_loc": 0.0}
_PRODUCT_FIT = {"lr": 5e-3, "kl_schedule": "temper"}
# Bayes by Hypernet on the 20-point cubic toy (bbh-toy, fidelity): the later generator of the
# authors' code (5 samples per step) at lr 3e-3, with noise of D dimensions and a first layer of
# 512 (theirs: [64, 256, 512]) so that q has a density in weight space: the samples span at most
# min(noise_dim, first width) dimensions, and with 64 they lie on a 64-dimensional manifold
# (KL(q‖p) infinite, no ELBO)
_BBH_REGRESSION = {"over": "weights", "noise_dim": None, "hidden": (512, 256, 512),
                   "num_samples": 5, "init_spread": 0.1}
# the adversarial form there: a joint discriminator over all weights, 5 steps per generator step
_BBH_JOINT = {"discriminator": "joint", "discriminator_steps": 5, "pretrain_steps": 300}

_RECIPES = {
    "map": {"classification": Recipe(prior=lambda: priors.Normal(1.0))},
    # five MAP nets under the MAP recipe's prior (the paper's weight decay), trained together
    "ensemble": {"classification": Recipe({"members": 5}, prior=lambda: priors.Normal(1.0)),
                 "regression": Recipe({"members": 5})},
    # MAP under the MAP recipe's prior, then KFAC curvature over the last layer with the prior
    # precision tuned by the marginal likelihood: laplace-torch's own default. Predictions use
    # the GLM predictive (the net linearized at the MAP, Immer et al. 2021; laplace-torch's
    # default), where the sampled-network predictive over-disperses (over all weights it
    # underfit MNIST, and on the toys it spread the functions far wider than NUTS). On the
    # toys the full GGN over all 151 weights under the toy's own prior, so NUTS and Laplace
    # share a posterior
    "laplace": {"classification": Recipe({"subset": "last_layer", "hessian": "kron",
                                          "prior_precision": "marglik"},
                                         prior=lambda: priors.Normal(1.0),
                                         module_options={"subset": "last_layer"}),
                "regression": Recipe({"subset": "all", "hessian": "full",
                                      "prior_precision": "model"},
                                     module_options={"subset": "last_layer",
                                                     "prior_precision": "marglik"})},
    # MAP under the MAP recipe's prior, then SGD (momentum 0.9 on the per-example loss) for a
    # quarter of the training's steps, as Maddox et al. collect over the last quarter of the
    # budget: 20 snapshots at rate 1e-2 on images; 40 at 1e-3 on the toys, where 1e-2
    # diverged on the Blundell toy. The toys train full-batch, and SWAG's spread is minibatch
    # noise, so their collection takes minibatches of a fifth of the data
    "swag": {"classification": Recipe({"rank": 20, "snapshots": 20, "swa_lr": 1e-2},
                                      prior=lambda: priors.Normal(1.0)),
             "regression": Recipe({"rank": 20, "snapshots": 40, "swa_lr": 1e-3,
                                   "batch_fraction": 0.2})},
    "meanfield": {
        "classification": Recipe({"local_reparameterization": True},
                                 prior=lambda: priors.Normal(1.0)),
        "regression/product": Recipe({"init_scale": 1.0}, fit=_PRODUCT_FIT),
    },
    "mcdropout": {
        # with the weight decay of its papers: a N(0, 1) prior, −log p(ŵ) over the data set, is
        # weight decay 1/(2N) per example (the MAP recipe's); a flat prior had none
        "classification": Recipe({"dropout": 0.5}, prior=lambda: priors.Normal(1.0)),
        "regression": Recipe({"dropout": 0.1}),
    },
    "metaprior": {
        # metaprior-mnist: sin hyperprior, rescaled start, weights divided by √fan_in; on a
        # user's module the MetaPrior generates its nn.Linear layers (it needs dense layers)
        "classification": Recipe({"code_dim": 10, "hidden": 32, "activation": "sin",
                                  "init_frequency": 3.0, "init_mean_scale": 1.0,
                                  "fan_in_scaling": True}, fit={"lr": 1e-2},
                                 module_bayesian="linear"),
        "regression": Recipe({"code_dim": 2, "hidden": 32, "init_scale": 0.1},
                             module_bayesian="linear"),
        # metaprior-moons (the paper's half moons): the toy's small Gaussian hyperprior
        "classification/moons": Recipe({"code_dim": 2, "hidden": 32}, fit={"lr": 1e-2}),
    },
    "flow": {
        # bhn-mnist: 8 RealNVP couplings over the weight-norm scales, N(0, 1) on the scales
        "classification": Recipe({"flow": "realnvp", "num_flows": 8, "hidden": 200,
                                  "over": "scales"},
                                 prior=_scales_prior(lambda: priors.Normal(1.0)),
                                 weight_norm=True),
        # bhn-toy: IAF over every weight, σ starts at 0.05, lr 3e-3 (1e-2 diverged), decayed
        # over 3× the task's steps: with a constant lr over the same steps as mean field, its
        # ELBO stayed below mean field's although its family contains mean field
        "regression": Recipe({"flow": "iaf", "num_flows": 4, "hidden": 200, "over": "weights",
                              "init_scale": 0.05}, fit=_FLOW_REGRESSION_FIT),
        # bhn-product (the paper's Fig. 2): a 2-weight linear net, σ starts at 1 and the flow's
        # location at 0, halfway between the two sign-flipped modes; the KL tempered in
        "regression/product": Recipe(_PRODUCT_FLOW, fit=_PRODUCT_FIT),
    },
    "bbh": {
        # bbh-mnist: generated scales, scale-mixture prior, a discriminator per coordinate
        # conditioned on q's marginal there (the paper's pooled one cannot see a collapse);
        # the paper's generator (64, 256): its samples span at most 64 of the 1,610 scales'
        # dimensions, a degenerate q (KL(q‖p) infinite) trained knowingly, as the paper does
        "classification": Recipe({"kl": "adversarial", "over": "scales", "noise_dim": None,
                                  "hidden": (64, 256), "num_samples": 1, "init_spread": 0.1,
                                  "discriminator": "coordinate",
                                  "discriminator_steps": 1, "pretrain_steps": 300,
                                  "allow_degenerate": True},
                                 prior=_scales_prior(lambda: priors.ScaleMixture(0.7, 0.01, 5.0)),
                                 weight_norm=True),
        # bbh-toy: the entropy form; noise of D dimensions and a first layer ≥ D (see above)
        "regression": Recipe({**_BBH_REGRESSION, "kl": "entropy"}, fit={"lr": 3e-3}),
    },
    "diversity": {
        # diversity-mnist: λ = 1000 on the mean cross-entropy, gauge fixing, 32 nets a step;
        # gauge fixing knows only the library's MLP/CNN, so a user's module goes without it
        # (the paper's 300-dimensional noise for ~10⁵-10⁶ weights: a degenerate q, knowingly)
        "classification": Recipe({"lam": 1000.0, "gauge": True, "allow_degenerate": True},
                                 module_options={"gauge": False}),
        # λ = None (the dataset size N) with the toy's prior: the ELBO's weighting, but with
        # the paper's gauge fixing the entropy is that of the gauge-fixed weights (no reward
        # for spread along the rescaling orbits), so this is not an ELBO and its optimum is not
        # NUTS's posterior (with gauge=False it is exactly the negative EntropyELBO); without
        # the prior the fidelity task's cubic toy diverged (unconstrained ReLU weight
        # directions spread without bound)
        # (extractor layers of 320 so that z's D dimensions reach the codes: q has a density)
        "regression": Recipe({"lam": None, "with_prior": True, "noise_dim": None,
                              "extractor_hidden": (320, 320), "generator_hidden": (32, 32),
                              "num_samples": 32},
                             fit={"lr": 3e-3}, module_options={"gauge": False}),
    },
}


register(Method("map", "maximum a posteriori point estimate (Delta guide)", _map,
                recipes=_RECIPES["map"]))
register(Method("ensemble", "deep ensemble: K independently initialised MAP nets, a uniform "
                "mixture of point masses, trained in one batched pass", _ensemble,
                reference="Lakshminarayanan, Pritzel & Blundell, Simple and Scalable Predictive "
                "Uncertainty Estimation using Deep Ensembles, NeurIPS 2017",
                recipes=_RECIPES["ensemble"]))
register(Method("laplace", "Laplace approximation: a Gaussian around the MAP with a "
                "generalized Gauss-Newton curvature (KFAC, diagonal or full; the last layer or "
                "all weights) from laplace-torch", _laplace,
                reference="MacKay 1992; Daxberger et al., Laplace Redux: Effortless Bayesian "
                "Deep Learning, NeurIPS 2021", recipes=_RECIPES["laplace"]))
register(Method("swag", "SWA-Gaussian: diagonal plus low-rank Gaussian from the moments of an "
                "SGD trajectory after MAP training", _swag,
                reference="Maddox, Garipov, Izmailov, Vetrov & Wilson, A Simple Baseline for "
                "Bayesian Uncertainty in Deep Learning, NeurIPS 2019", recipes=_RECIPES["swag"]))
register(Method("meanfield", "mean-field Gaussian VI, Bayes by Backprop (Blundell et al. 2015)",
                _meanfield, reference="Blundell et al., Weight Uncertainty in Neural Networks, "
                "ICML 2015", recipes=_RECIPES["meanfield"]))
register(Method("mcdropout", "MC dropout: MAP with dropout kept on at prediction (Gal & "
                "Ghahramani 2016)", _mcdropout, reference="Gal & Ghahramani, Dropout as a "
                "Bayesian Approximation, ICML 2016", recipes=_RECIPES["mcdropout"]))
register(Method("metaprior", "MetaPrior: latent unit codes, weights from a neural hyperprior "
                "g(z_i, z_j), mean-field Q over the codes (Karaletsos et al. 2018); replaces the "
                "given prior", _metaprior, reference="Karaletsos, Dayan & Ghahramani, "
                "Probabilistic Meta-Representations of Neural Networks, UAI 2018 workshop",
                recipes=_RECIPES["metaprior"]))
register(Method("flow", "Bayesian hypernetwork: a normalizing-flow guide over the weight-norm "
                "scales or all weights (Krueger et al. 2017)", _flow,
                reference="Krueger et al., Bayesian Hypernetworks, arXiv:1710.04759",
                recipes=_RECIPES["flow"], count_option="num_flows"))
register(Method("bbh", "Bayes by Hypernet: an implicit generator guide w = G(ε) whose KL is "
                "estimated from samples (discriminator density ratio, nearest-neighbour KL or "
                "Kozachenko-Leonenko entropy) (Pawlowski et al. 2017)", _bbh,
                reference="Pawlowski, Brock, Lee, Rajchl & Glocker, Implicit Weight Uncertainty "
                "in Neural Networks, arXiv:1711.01297", recipes=_RECIPES["bbh"]))
register(Method("diversity", "diversity hypernetwork: per-unit codes from noise, per-layer "
                "generators, trained on λ·loss − entropy of gauge-fixed weights (Deutsch 2018)",
                _diversity, reference="Deutsch, Generating Neural Networks with Neural Networks, "
                "arXiv:1801.01952", recipes=_RECIPES["diversity"]))


# Variants: a base method with some options fixed (see register_variant).
register_variant("mle", "map", "maximum likelihood: the MAP point estimate under a flat prior "
                 "(no weight decay)", prior=priors.Flat)
register_variant("dropout", "mcdropout", "MC dropout without weight decay (a flat prior): the "
                 "dropout baseline of the Bayesian-hypernetwork and Bayes-by-Hypernet papers' "
                 "MNIST tables", prior=priors.Flat)
register_variant("laplace_all", "laplace", "Laplace over all weights (KFAC on images, full on "
                 "the toys)", options={"subset": "all"})
register_variant("laplace_diag", "laplace", "Laplace with a diagonal curvature",
                 options={"hessian": "diag"})
register_variant("flow_iaf", "flow", "flow guide with inverse autoregressive (IAF) layers",
                 options={"flow": "iaf"})
register_variant("flow_realnvp", "flow", "flow guide with RealNVP affine couplings",
                 options={"flow": "realnvp"}, recipes={
                     "regression": Recipe({"flow": "realnvp", "num_flows": 8, "hidden": 200,
                                           "over": "weights", "init_scale": 0.05},
                                          fit=_FLOW_REGRESSION_FIT),
                     "regression/product": Recipe({**_PRODUCT_FLOW, "flow": "realnvp",
                                                   "num_flows": 8}, fit=_PRODUCT_FIT)})
register_variant("bbh_adversarial", "bbh", "Bayes by Hypernet with the KL from a "
                 "discriminator's density ratio (the paper's estimator)",
                 options={"kl": "adversarial"}, recipes={
                     "regression": Recipe({**_BBH_REGRESSION, **_BBH_JOINT,
                                           "kl": "adversarial"}, fit={"lr": 3e-3})})
# the sample-based estimators need a batch of generator draws a step (5, as bbh-toy measured)
register_variant("bbh_entropy", "bbh", "Bayes by Hypernet with the KL as cross-entropy minus a "
                 "Kozachenko-Leonenko entropy estimate",
                 options={"kl": "entropy", "num_samples": 5})
# with 5 samples the nearest-neighbour KL in 301 dimensions rewards spreading the samples
# without bound (bbh-toy: std ratio out of the data range 285); 16 samples a step
register_variant("bbh_nn", "bbh", "Bayes by Hypernet with a nearest-neighbour KL estimate",
                 options={"kl": "nn", "num_samples": 5}, recipes={
                     "regression": Recipe({**_BBH_REGRESSION, "kl": "nn", "num_samples": 16},
                                          fit={"lr": 3e-3})})
register_variant("bbh_paper", "bbh", "Bayes by Hypernet as in the paper's toy: only the first "
                 "layer generated, dropout 0.5 on the hidden layer, adversarial KL",
                 options={"kl": "adversarial", "over": ["fc0.*"], "dropout": 0.5}, recipes={
                     "regression": Recipe({**_BBH_REGRESSION, **_BBH_JOINT, "kl": "adversarial",
                                           "over": ["fc0.*"], "dropout": 0.5},
                                          fit={"lr": 3e-3})})
register_variant("metaprior_onehot", "metaprior", "MetaPrior with fixed one-hot unit codes (the "
                 "paper's Gaussian-OH): the hyperprior is a point estimate",
                 options={"codes": "onehot"})
register_variant("metaprior_implicit", "metaprior", "MetaPrior with an implicit hyperprior: "
                 "each weight generated as g(z_i, z_j, ε) from noise ε",
                 options={"variant": "implicit"})

# The papers' own names.
register_alias("gaussian_lv", "metaprior")
register_alias("gaussian_oh", "metaprior_onehot")
