"""The Bayesian neural network as a Pyro model: prior + functional net + likelihood."""

from __future__ import annotations

import pyro
import torch

from .likelihoods import Likelihood
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
        net: a :class:`~hyperbayes.models.nets.Net` (e.g. ``MLP([1, 100, 1])``).
        prior: a :class:`~hyperbayes.models.priors.Prior` over the net's parameters.
        likelihood: a :class:`~hyperbayes.models.likelihoods.Likelihood`.

    Example::

        model = BNN(MLP([1, 50, 1]), priors.Normal(1.0), likelihoods.Gaussian(scale=0.1))
        pyro.infer.Predictive(model, num_samples=10)(x)["obs"].shape   # (10, N, 1)
    """

    def __init__(self, net: Net, prior: Prior, likelihood: Likelihood):
        super().__init__()
        if not isinstance(net, Net):
            raise TypeError(f"net must be a hyperbayes Net, got {type(net).__name__}")
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a hyperbayes Prior (wrap a distribution with "
                            f"priors.by_name({{'*': d}})), got {type(prior).__name__}")
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood must be a hyperbayes Likelihood, got "
                            f"{type(likelihood).__name__}")
        self.net, self.prior, self.likelihood = net, prior, likelihood
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
