"""The Laplace approximation as a guide: a Gaussian around the MAP, curvature from laplace-torch."""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict

import pyro.distributions as dist
import torch

from ..sites import param_key
from .aroundpoint import PointThenPosterior

__all__ = ["LaplaceGuide", "mlp_as_module", "SUBSETS", "HESSIANS", "PREDICTIVES"]

SUBSETS = ("all", "last_layer")
HESSIANS = ("kron", "diag", "full")
PREDICTIVES = ("glm", "nn")


def _laplace_class():
    """laplace-torch's ``Laplace`` (imported on first use; a clear error where it is missing)."""
    try:
        with warnings.catch_warnings():  # its dependencies' import-time deprecation notices
            warnings.simplefilter("ignore")
            from laplace import Laplace
    except ImportError as err:  # pragma: no cover - the Makefile installs it
        raise ImportError("the Laplace approximation needs laplace-torch: run `make venv` (it "
                          "installs laplace-torch without its CUDA torch dependencies)") from err
    return Laplace


class _Activation(torch.nn.Module):
    """An activation of :data:`hyperbayes.models.nets.ACTIVATIONS` as a module."""

    def __init__(self, name: str):
        super().__init__()
        from ..models.nets import ACTIVATIONS

        self.name, self.fn = name, ACTIVATIONS[name]

    def forward(self, h):
        return self.fn(h)


#: activations torch has as modules, which laplace-torch's BackPack backend can differentiate
_TORCH_ACTIVATIONS = {"identity": torch.nn.Identity, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh,
                      "sigmoid": torch.nn.Sigmoid, "elu": torch.nn.ELU,
                      "leaky_relu": lambda: torch.nn.LeakyReLU(0.1)}
#: modules BackPack's diagonal GGN extension supports
_BACKPACK_MODULES = (torch.nn.Sequential, torch.nn.Linear, torch.nn.Flatten, torch.nn.Identity,
                     torch.nn.ReLU, torch.nn.Tanh, torch.nn.Sigmoid, torch.nn.ELU,
                     torch.nn.LeakyReLU)


def _backend_options(module: torch.nn.Module, hessian: str) -> dict:
    """laplace-torch's curvature backend for this module: for a diagonal Hessian of a net built
    only from layers BackPack supports, BackPack's exact diagonal GGN (one extended backward
    pass per batch, where the default backend builds per-example Jacobians); otherwise
    laplace-torch's default (also when some parameters are fixed, which BackPack cannot
    leave out)."""
    if hessian != "diag" or not all(isinstance(m, _BACKPACK_MODULES) for m in module.modules()):
        return {}
    if not all(p.requires_grad for p in module.parameters()):
        return {}
    try:
        with warnings.catch_warnings():  # its dependencies' import-time deprecation notices
            warnings.simplefilter("ignore")
            from laplace.curvature import BackPackGGN
    except ImportError:  # pragma: no cover - backpack-for-pytorch is installed with it
        return {}
    return {"backend": BackPackGGN}


def mlp_as_module(net, values: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    """The library's :class:`~hyperbayes.models.MLP` with weights ``values`` as a plain
    ``nn.Sequential`` of ``nn.Linear`` layers (what laplace-torch's curvature backends read),
    named as the MLP's sites (``fc0.weight``, ``fc0.bias``, ...)."""
    if getattr(net, "weight_norm", False):
        raise ValueError("the Laplace approximation needs a plain MLP (weight_norm=False): its "
                         "curvature backends read nn.Linear layers")
    layers: dict[str, torch.nn.Module] = {"flatten": torch.nn.Flatten()}
    sizes = net.sizes
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        bias = f"fc{i}.bias" in values
        weight = values[f"fc{i}.weight"]
        linear = torch.nn.Linear(fan_in, fan_out, bias=bias, dtype=weight.dtype,
                                 device=weight.device)
        with torch.no_grad():
            linear.weight.copy_(values[f"fc{i}.weight"])
            if bias:
                linear.bias.copy_(values[f"fc{i}.bias"])
        layers[f"fc{i}"] = linear
        if i < len(sizes) - 2:
            standard = _TORCH_ACTIVATIONS.get(net.activation)
            layers[f"act{i}"] = standard() if standard else _Activation(net.activation)
    return torch.nn.Sequential(OrderedDict(layers))


def _as_module(net, values: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The net with weights ``values`` as a plain module laplace-torch can read: the MLP as
    ``nn.Sequential`` (:func:`mlp_as_module`), a user's module (a ``TorchNet`` without weight
    norm) as a copy of itself with the values in its parameters."""
    from ..models.module import TorchNet

    if isinstance(net, TorchNet):
        module = copy.deepcopy(net.module)
        params = dict(module.named_parameters())
        with torch.no_grad():
            for name, value in values.items():
                params[name].copy_(value)
        # the curvature and the posterior are over the Bayesian parameters only, given the
        # others (laplace-torch takes the parameters that require a gradient)
        for name, param in module.named_parameters():
            param.requires_grad_(name in values)
        return module.eval()
    return mlp_as_module(net, values)


def _normal_precision(prior: dist.Distribution, shape) -> torch.Tensor:
    """1/σ² per element of a (wrapped) zero-mean Normal prior; ValueError for another prior."""
    base = prior
    while not isinstance(base, torch.distributions.Normal) and hasattr(base, "base_dist"):
        base = base.base_dist  # through Independent / expanded wrappers
    if not isinstance(base, torch.distributions.Normal):
        raise ValueError(f"prior_precision='model' needs Normal priors on the weights, got "
                         f"{type(prior).__name__}; give a number or 'marglik'")
    return (1.0 / base.scale.detach() ** 2).expand(shape).reshape(-1)


class LaplaceGuide(PointThenPosterior):
    """q(w) = N(ŵ, (H + P)⁻¹): a Gaussian around the MAP ŵ with the curvature of the negative
    log likelihood there (a generalized Gauss-Newton: KFAC, diagonal or full) plus the prior
    precision P (MacKay 1992; Daxberger et al. 2021).

    Trained as a point estimate (the loss is the negative log joint, as for MAP); when
    :func:`~hyperbayes.inference.fit` finishes it calls :meth:`after_fit`, which computes the
    curvature at ŵ with laplace-torch and, with ``prior_precision="marglik"``, tunes P by the
    marginal likelihood as that package does. Before that the guide is the point mass at ŵ.

    Args:
        model: a :class:`~hyperbayes.models.BNN` over the library's :class:`MLP` (no weight
            norm) with a :class:`Categorical` or :class:`Gaussian` (fixed scale) likelihood.
        subset: ``"all"`` weights or the ``"last_layer"`` only (the rest stay at ŵ).
        hessian: ``"kron"`` (KFAC), ``"diag"`` or ``"full"``.
        prior_precision: ``"marglik"`` (tuned), ``"model"`` (1/σ² of the model's Normal prior,
            per weight: the exact posterior precision of a linear-Gaussian model; times the
            loss's ``kl_weight`` β when it is not 1, so that the curvature is that of the
            objective ŵ maximizes, log p(y | w) + β log p(w)) or a number (used as given).
        predictive: how :func:`~hyperbayes.inference.predict` uses the weight draws:
            ``"glm"`` evaluates the net linearized at ŵ, f(x; ŵ) + J(x)(w − ŵ), the
            generalized linear model whose posterior the GGN Laplace approximation is
            (Immer et al. 2021, laplace-torch's default predictive); ``"nn"`` evaluates the
            net itself at each draw, which over-disperses where the Gaussian reaches weights
            the net is non-linear in. Weight draws (``sample_posterior``) and the density are
            the same either way.
        seed: seed of the initial values.

    The curvature is laplace-torch's generalized Gauss-Newton of the softmax cross-entropy (or
    of the Gaussian): a ``Categorical(clip=True)`` likelihood's clipping is not in it, which
    changes only terms where a class probability is clipped, whose GGN weight p(1 − p) is then
    below 10⁻³ anyway.
    """

    def __init__(self, model, *, subset: str = "all", hessian: str = "kron",
                 prior_precision="marglik", predictive: str = "glm", seed: int | None = 0):
        super().__init__(model, seed=seed)
        if predictive not in PREDICTIVES:
            raise ValueError(f"unknown predictive {predictive!r}; choose from {PREDICTIVES}")
        self.predictive = predictive
        if subset not in SUBSETS:
            raise ValueError(f"unknown subset {subset!r}; choose from {SUBSETS}")
        if hessian not in HESSIANS:
            raise ValueError(f"unknown hessian {hessian!r}; choose from {HESSIANS}")
        if not (prior_precision in ("marglik", "model") or isinstance(prior_precision, float | int)
                and prior_precision > 0):
            raise ValueError(f"prior_precision must be 'marglik', 'model' or a positive number, "
                             f"got {prior_precision!r}")
        from ..models.module import TorchNet

        net = getattr(model, "net", None)
        if net is None or not (hasattr(net, "sizes") or isinstance(net, TorchNet)) or getattr(
                net, "weight_norm", False):
            raise ValueError("LaplaceGuide needs a BNN over the library's MLP or a user's module "
                             f"(TorchNet), without weight norm; got {net!r}")
        if subset == "last_layer" and isinstance(net, TorchNet):
            linears = [n for n, m in net.module.named_modules() if isinstance(m, torch.nn.Linear)]
            names = {s.name for s in self.sites}
            if linears and not any(n.startswith(f"{linears[-1]}.") for n in names):
                raise ValueError(f"subset='last_layer': the module's last nn.Linear "
                                 f"({linears[-1]!r}) has no Bayesian parameter, so the posterior "
                                 "would be a point mass; make it Bayesian "
                                 "(TorchNet(bayesian=...)) or use subset='all'")
        self.subset, self.hessian, self.prior_precision = subset, hessian, prior_precision
        #: the library's MLP (linear in its last layer), not a user's module
        self._library_mlp = hasattr(net, "sizes")

    def check_kl_weight(self, kl_weight) -> None:
        """Refuse, before training, a prior weight β ≤ 0 with ``prior_precision="model"``."""
        if self.prior_precision == "model" and kl_weight is not None and not kl_weight > 0:
            raise ValueError(f"prior_precision='model' with the loss's kl_weight {kl_weight}: "
                             "ŵ would be trained without the prior, so the posterior precision "
                             "would be the curvature alone (singular where the data say "
                             "nothing); give a number or 'marglik'")

    def after_fit(self, model, x, y, *, batch_size: int = 128, kl_weight=None, **_) -> None:
        """Compute the Laplace posterior at the trained ŵ on the training data ``(x, y)``
        (``kl_weight``: the prior weight β of the objective ŵ maximized, which scales the
        model's prior precision; None: 1)."""
        from ..models.likelihoods import Categorical, Gaussian

        likelihood = model.likelihood
        if isinstance(likelihood, Categorical):
            kind, noise = "classification", None
        elif isinstance(likelihood, Gaussian) and likelihood.scale is not None:
            kind, noise = "regression", likelihood.scale
        else:
            raise ValueError("LaplaceGuide needs a Categorical or fixed-scale Gaussian "
                             f"likelihood, got {type(likelihood).__name__}")
        device = x.device
        module = _as_module(model.net, self.point_estimate()).to(device)
        names = [s.name for s in self.sites]
        precision = self.prior_precision
        if precision == "model":
            if self.subset != "all":
                raise ValueError("prior_precision='model' needs subset='all'; give a number or "
                                 "'marglik'")
            by_name = {s.name: s for s in self.sites}
            kl_weight = 1.0 if kl_weight is None else float(kl_weight)
            self.check_kl_weight(kl_weight)
            precision = kl_weight * torch.cat([
                _normal_precision(by_name[n].prior, by_name[n].shape)
                for n, p in module.named_parameters() if p.requires_grad]).to(device)
        options = ({"sigma_noise": noise} if noise is not None else {}) | _backend_options(
            module, self.hessian)
        # laplace-torch wants (N, outputs) regression targets; the likelihood also takes (N,)
        target = y.reshape(len(y), -1) if kind == "regression" else y.long()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, target),
                                             batch_size=min(batch_size, len(x)))
        with warnings.catch_warnings():  # laplace-torch's own notices (e.g. backend choice)
            warnings.simplefilter("ignore")
            Laplace = _laplace_class()
            la = Laplace(module, kind, subset_of_weights=self.subset,
                         hessian_structure=self.hessian,
                         prior_precision=1.0 if precision == "marglik" else precision, **options)
            la.fit(loader, progress_bar=False)
            if precision == "marglik":
                la.optimize_prior_precision(method="marglik")
        # the module's parameters in laplace-torch's order, each with its slice of the vector
        if self.subset == "all":
            order = [(n, p.numel()) for n, p in module.named_parameters() if p.requires_grad]
        else:
            last = la.model._last_layer_name
            order = [(f"{last}.{n}", p.numel())
                     for n, p in la.model.last_layer.named_parameters()]
        covered = [n for n, _ in order if n in names]
        if not covered:
            raise ValueError(f"subset={self.subset!r}: none of the parameters laplace-torch "
                             f"takes ({', '.join(n for n, _ in order)}) is a Bayesian site of "
                             "the model, so the posterior would be a point mass; make them "
                             "Bayesian (TorchNet(bayesian=...)) or use subset='all'")
        keep = torch.cat([torch.full((size,), n in names) for n, size in order]).nonzero()[:, 0]
        keep = keep.to(device)
        posterior = {"covered": covered, "keep": keep, "mean": la.mean.detach().clone()}
        if self.hessian == "full":
            posterior["scale_tril"] = la.posterior_scale.detach().clone()
        elif self.hessian == "diag":
            posterior["std"] = la.posterior_variance.detach().sqrt()
        else:  # KFAC: the eigendecomposed Kronecker factors of the posterior precision
            factors = la.posterior_precision
            posterior["eigenvectors"] = [list(block) for block in factors.eigenvectors]
            posterior["eigenvalues"] = [list(block) for block in factors.eigenvalues]
            posterior["deltas"] = factors.deltas.detach().clone()
        posterior["prior_precision"] = torch.as_tensor(la.prior_precision).detach().clone()
        self._posterior = posterior

    def _flat_draws(self, count: int) -> torch.Tensor:
        """``count`` draws (count, P) of the covered weights from the fitted posterior."""
        post = self._posterior
        mean = post["mean"]
        z = torch.randn(count, mean.numel(), device=mean.device, dtype=mean.dtype)
        if "scale_tril" in post:
            return mean + z @ post["scale_tril"].T
        if "std" in post:
            return mean + z * post["std"]
        return mean + self._kron_factors().bmm(z, exponent=-0.5).reshape(count, -1)

    def linearize_at(self) -> dict[str, torch.Tensor] | None:
        """ŵ per site (constrained) where :func:`~hyperbayes.inference.predict` linearizes the
        net (``predictive="glm"``, once the posterior is built); None: evaluate the net itself."""
        if self.predictive != "glm" or self._posterior is None:
            return None
        if self.subset == "last_layer" and self._library_mlp:
            return None  # the library's MLP is linear in its last layer: the GLM is the net
        point = self.point_estimate()
        return {s.name: point[s.name] if s.transform is None else s.transform(point[s.name])
                for s in self.sites}

    def _flat_density_reason(self) -> str | None:
        post = self._posterior
        uncovered = sorted(set(self.site_names) - set(post["covered"]))
        if uncovered or len(post["keep"]) != post["mean"].numel():
            return (f"the Laplace posterior covers only some weights ({self.subset}); the others "
                    f"({', '.join(uncovered) or 'parameters outside the model'}) are point "
                    "masses, so q(w) has no density over all of them")
        return None

    def _log_prob(self, unconstrained: dict[str, torch.Tensor]) -> torch.Tensor:
        """log N(w; ŵ, (H + P)⁻¹), whitened as z = A⁻¹(w − ŵ) for the draw map w = ŵ + A z:
        log q = log N(z; 0, I) − log |det A|."""
        post = self._posterior
        delta = torch.cat([unconstrained[name] for name in post["covered"]], -1) - post["mean"]
        if "scale_tril" in post:
            tril = post["scale_tril"]
            z = torch.linalg.solve_triangular(tril, delta.T, upper=False).T
            log_det = tril.diagonal().log().sum()
        elif "std" in post:
            z, log_det = delta / post["std"], post["std"].log().sum()
        else:  # A = P^(-1/2) with P the Kronecker-factored posterior precision
            factors = self._kron_factors()
            z = factors.bmm(delta, exponent=0.5).reshape(len(delta), -1)
            log_det = -0.5 * factors.logdet()
        standard = torch.distributions.Normal(torch.zeros((), dtype=z.dtype, device=z.device), 1.0)
        return standard.log_prob(z).sum(-1) - log_det

    def _kron_factors(self):
        """The posterior precision's eigendecomposed Kronecker factors (laplace-torch's
        ``KronDecomposed``)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from laplace.utils.matrix import KronDecomposed
        post = self._posterior
        return KronDecomposed([tuple(b) for b in post["eigenvectors"]],
                              [tuple(b) for b in post["eigenvalues"]], post["deltas"])

    def _posterior_draws(self, count: int) -> dict[str, torch.Tensor]:
        """``count`` draws per site: the Laplace posterior over the covered sites, ŵ
        elsewhere."""
        point = {s.name: self.values[param_key(s.name)] for s in self.sites}
        flat = self._flat_draws(count)[:, self._posterior["keep"]]  # the Bayesian parameters'
        draws, start = {}, 0
        covered = self._posterior["covered"]
        shapes = {s.name: s.shape for s in self.sites}
        for name in covered:
            size = point[name].numel()
            draws[name] = flat[:, start:start + size].reshape(count, *shapes[name])
            start += size
        for site in self.sites:
            if site.name not in draws:
                draws[site.name] = point[site.name].expand(count, *site.shape)
        return draws
