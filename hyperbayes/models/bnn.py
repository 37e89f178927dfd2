"""The Bayesian neural network as a Pyro model: prior + functional net + likelihood."""

from __future__ import annotations

import pyro
import torch
from pyro import poutine

from .likelihoods import Likelihood
from .module import TorchNet
from .nets import Net
from .priors import Prior

__all__ = ["BNN"]


class BNN(torch.nn.Module):
    """A Pyro model p(w) p(y | f(x; w)) for a functional net.

    The three parts are independent objects: swap the prior, the net or the likelihood without
    touching the others or the guide. Calling the model on a minibatch of a dataset of
    ``dataset_size`` examples scales the likelihood by ``dataset_size / len(x)`` through
    ``pyro.plate("data", ...)``, so SVI on minibatches optimizes the full-data ELBO.

    Args:
        net: a :class:`~hyperbayes.models.nets.Net` (e.g. ``MLP([1, 100, 1])``), or any
            ``torch.nn.Module``, wrapped as :class:`~hyperbayes.models.TorchNet` with every
            parameter Bayesian (wrap it yourself to choose which are).
        prior: a :class:`~hyperbayes.models.priors.Prior` over the net's parameters.
        likelihood: a :class:`~hyperbayes.models.likelihoods.Likelihood`.
        noise_groups: G > 1 splits every minibatch into G equal groups of examples, each
            evaluated with its own parameter draw (the Bayesian-hypernetworks option of
            independent noise per example group; the default 1 uses one draw per minibatch).
            The parameter sites sit in a ``pyro.plate("noise_groups", G)`` scaled by 1/G, so the
            KL term is averaged over the G draws; the guide must draw one sample per group
            (:class:`~hyperbayes.guides.FlowGuide` does). MLP nets only; not with ELBO particles
            or likelihoods with latent sites.

    Example::

        model = BNN(MLP([1, 50, 1]), priors.Normal(1.0), likelihoods.Gaussian(scale=0.1))
        pyro.infer.Predictive(model, num_samples=10)(x)["obs"].shape   # (10, N, 1)
    """

    def __init__(self, net: Net, prior: Prior, likelihood: Likelihood, *, noise_groups: int = 1):
        super().__init__()
        if isinstance(net, torch.nn.Module) and not isinstance(net, Net):
            net = TorchNet(net)  # every parameter Bayesian; TorchNet(...) chooses which
        if not isinstance(net, Net):
            raise TypeError(f"net must be a hyperbayes Net or a torch.nn.Module, got "
                            f"{type(net).__name__}")
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a hyperbayes Prior (wrap a distribution with "
                            f"priors.by_name({{'*': d}})), got {type(prior).__name__}")
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood must be a hyperbayes Likelihood, got "
                            f"{type(likelihood).__name__}")
        prior.bind(net.param_specs)
        self.net, self.prior, self.likelihood = net, prior, likelihood
        if isinstance(noise_groups, bool) or not isinstance(noise_groups, int) or noise_groups < 1:
            raise ValueError(f"noise_groups must be a positive integer, got {noise_groups!r}")
        if noise_groups > 1 and poutine.block(likelihood.sample_latents)(torch.device("cpu")):
            raise ValueError("noise_groups > 1 needs a likelihood without latent sites (e.g. a "
                             "Gaussian with a fixed scale)")
        self.noise_groups = noise_groups
        # An anchor buffer: model.to(device) moves it, and prior distributions follow it.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def __repr__(self):
        return f"BNN({self.net!r}, {self.prior!r}, {self.likelihood!r})"

    @property
    def device(self) -> torch.device:
        """The device the model's distributions are created on."""
        return self._anchor.device

    @property
    def task(self) -> str:
        """``"regression"`` or ``"classification"``, from the likelihood."""
        return self.likelihood.task

    def sample_params(self) -> dict[str, torch.Tensor]:
        """Sample all latent variables: the net's parameters and the likelihood's latents."""
        params = self.prior.sample(self.net.param_specs, self.device)
        params.update(self.likelihood.sample_latents(self.device))
        return params

    def guided_sites(self) -> list[str] | None:
        """Sites a guide should approximate (None: every latent site)."""
        return self.prior.guided_sites(self.net.param_specs)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                dataset_size: int | None = None) -> torch.Tensor:
        """Run the model on a minibatch; returns the net's outputs (N, out).

        Args:
            x: inputs (N, ...).
            y: targets (N,) or (N, out); None to sample them.
            dataset_size: size of the full training set (defaults to N).
        """
        if self.noise_groups > 1:
            outputs = self._grouped_outputs(x)
            params = {}  # no likelihood latents (checked in __init__)
        else:
            params = self.sample_params()
            outputs = self.net(params, x)
        if outputs.dim() > 2 and outputs.shape[-3] == 1:
            # Parameters carried an outer plate's sample dim plus a singleton in the data
            # plate's slot (e.g. vectorized ELBO particles): (K, 1, N, out) -> (K, N, out).
            outputs = outputs.squeeze(-3)
        n = x.shape[0]
        with pyro.plate("data", size=dataset_size or n,
                        subsample=torch.arange(n, device=x.device)):
            self.likelihood.observe(outputs, y, params)
        return outputs

    def _grouped_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs (N, out) with example group g evaluated under parameter draw g."""
        groups, n = self.noise_groups, x.shape[0]
        if n % groups:
            raise ValueError(f"noise_groups={groups} must divide the minibatch size, got {n}")
        with pyro.plate("noise_groups", groups, dim=-1), poutine.scale(scale=1.0 / groups):
            params = self.prior.sample(self.net.param_specs, self.device)
        for name, spec in self.net.param_specs.items():
            shape = tuple(params[name].shape)
            if shape != (groups, *spec.shape):
                raise ValueError(
                    f"with noise_groups={groups} the guide must draw one sample of {name!r} per "
                    f"group, shape {(groups, *spec.shape)}; got {shape} (FlowGuide does; ELBO "
                    "particles cannot be combined with noise groups)")
        grouped = x.reshape(groups, n // groups, *x.shape[1:])
        out = self.net(params, grouped, grouped=True)
        return out.reshape(n, *out.shape[2:])
