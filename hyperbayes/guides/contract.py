"""The guide contract: what :mod:`hyperbayes.inference` may rely on in a guide, written down.

Every guide is a Pyro guide (a callable that samples the model's latent sites and returns
``{site: value}``); hyperbayes losses, :func:`~hyperbayes.inference.fit`,
:func:`~hyperbayes.inference.predict` and the diagnostics read a little more, declared here as
``typing.Protocol`` s. Pyro's own autoguides satisfy :class:`Guide` only (they are scored by the
generic path); the library's guides satisfy :class:`SiteGuideContract` and one of
:class:`DensityGuide` (a tractable log q: ``ELBO``) or :class:`ImplicitGuideContract` (samples
only: the sample-based losses). ``isinstance`` checks work at run time (attribute presence).

Writing a new guide: subclass :class:`~hyperbayes.guides.SiteGuide` (it finds the model's sites,
their supports and starting values), create parameters in ``__init__`` and sample every site in
``forward``. For a density guide, optionally give ``analytic_kl`` (fused closed-form KL terms the
ELBO will use) and ``default_loss``; for an implicit guide, set ``implicit = True`` and provide
the sampling members below.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..sites import Site

__all__ = ["Guide", "SiteGuideContract", "DensityGuide", "ImplicitGuideContract", "is_implicit"]


@runtime_checkable
class Guide(Protocol):
    """Any Pyro guide: ``guide(*args, **kwargs)`` samples every latent site of the model."""

    def __call__(self, *args, **kwargs): ...


@runtime_checkable
class SiteGuideContract(Guide, Protocol):
    """A guide over the model's parameter sites (the library's guides).

    Attributes:
        sites: the guided sites, in order (shapes, supports, starting values, traced priors).
        site_names: their names.
        hyper_site_names: hyper-latent sites of a hierarchical prior among them.
    """

    sites: list[Site]
    site_names: list[str]
    hyper_site_names: list[str]

    def default_loss(self):
        """The loss :func:`~hyperbayes.inference.fit` uses when none is given."""
        ...


@runtime_checkable
class DensityGuide(SiteGuideContract, Protocol):
    """A guide with a tractable log q, scored by :class:`~hyperbayes.inference.ELBO`.

    Optional members the ELBO reads when present: ``analytic_kl(priors) -> (total, covered
    site names)`` (fused closed-form KL terms), and ``lrt_standin_sites`` (sites whose sampled
    value is a stand-in because their layers use local reparameterization; their KL must then be
    closed-form).
    """


@runtime_checkable
class ImplicitGuideContract(SiteGuideContract, Protocol):
    """A guide that can only be sampled (no log q): the sample-based losses of
    :mod:`hyperbayes.inference.implicit` score it from S draws.

    Attributes:
        implicit: True (what marks the guide as implicit).
        generated_sites / generated_names: the sites a generator produces; the others are point
            estimates.
        noise_dim: the dimension of the generator's noise (its samples lie on a manifold of at
            most that dimension).
        num_generated: D, the number of generated scalars per sample.
    """

    implicit: bool
    generated_sites: list[Site]
    generated_names: list[str]
    noise_dim: int

    @property
    def num_generated(self) -> int: ...

    def sample_generated(self, num_samples: int) -> torch.Tensor:
        """``num_samples`` draws of the generated sites, flattened to (num_samples, D)."""
        ...

    def flatten(self, values: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        """Concatenate per-site values (each ``(S, ..., *shape)``) into (S, D)."""
        ...


def is_implicit(guide) -> bool:
    """Whether ``guide`` declares itself implicit (``implicit = True``) and has the members of
    :class:`ImplicitGuideContract`; a guide that says it is implicit but lacks them is a
    TypeError naming what is missing."""
    if not getattr(guide, "implicit", False):
        return False
    if not isinstance(guide, ImplicitGuideContract):
        members = ("sites", "site_names", "hyper_site_names", "default_loss", "generated_sites",
                   "generated_names", "noise_dim", "num_generated", "sample_generated",
                   "flatten")
        missing = [m for m in members if not hasattr(guide, m)]
        raise TypeError(f"{type(guide).__name__} says implicit = True but lacks {missing} of "
                        "hyperbayes.guides.contract.ImplicitGuideContract")
    return True
