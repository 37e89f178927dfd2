"""The MetaPrior (Karaletsos, Dayan & Ghahramani, 2018): a latent code per unit and a neural
hyperprior g(z_out, z_in; ξ) that gives every weight its distribution P(w | z).

Every unit u of layer l of an MLP (inputs, hidden units and outputs alike) has a code
z_{l,u} ∈ R^D with P(z) = N(0, I). The weight from unit j of layer l−1 to unit i of layer l is
drawn from P(w | [z_{l,i}, z_{l−1,j}(, z_s)]; ξ), where one network g, shared across the whole net,
maps the weight code to

* ``variant="gaussian"``: a mean and a scale, w ~ N(μ, σ²);
* ``variant="implicit"``: the weight itself, w = g(z_w, ε; ξ) with ε ~ N(0, 1) per weight.

A bias is the weight of a unit's code paired with a zero code (the paper's suggestion).
The ELBO of the paper (Eq. 3) only needs a guide over Z: W is drawn from the same P(W | Z; ξ) in
the model and in the guide, so its density cancels. Here the weights (Gaussian) or the noise ε
(implicit) are model sites under ``poutine.mask(False)``: they are drawn from the prior, carry no
density term, and no guide needs to know about them (:meth:`MetaPrior.guided_sites` names the
code sites). Any hyperbayes guide (mean field by default) then infers Q(Z; Φ), and ``fit`` trains
Φ and ξ jointly because ξ are parameters of the model.

g's first layer acts on a concatenation, W₁[z_i; z_j] = A z_i + B z_j, so it is computed as an
outer sum of per-unit projections (units × hidden) broadcast over the weights: the
(weights × 2D) input is never built (:meth:`Hyperprior.naive` builds it, for tests and benchmarks).

Example::

    prior = MetaPrior(code_dim=2, hidden=32)
    model = BNN(MLP([1, 100, 1]), prior, Gaussian(scale=3.0))
    guide = MeanField(model, init_scale=0.1)   # Q(Z): one Gaussian per code coordinate
    hb.inference.fit(model, guide, data.train, steps=5000)   # trains Q(Z) and g together
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine

from ..tracing import tracing
from .nets import ACTIVATIONS, ParamSpec
from .priors import Prior

__all__ = ["Hyperprior", "MetaPrior", "VARIANTS", "CODE_KINDS", "code_site", "GLOBAL_CODE_SITE"]

VARIANTS = ("gaussian", "implicit")
CODE_KINDS = ("latent", "onehot")
GLOBAL_CODE_SITE = "codes.global"
_MIN_SCALE = 1e-4


def code_site(layer: int) -> str:
    """Name of the code site of unit layer ``layer`` (0: inputs, L: outputs)."""
    return f"codes.{layer}"


_CHUNK_FLOATS = 1 << 18  # 1 MB of hidden activations per chunk: stays in cache


def _tanh_of_sum(tanh_a, tanh_b, a, b):
    """tanh(a + b) from tanh a and tanh b by the addition formula
    (tanh a + tanh b) / (1 + tanh a · tanh b): two elementwise passes instead of a tanh per pair.
    Where the denominator is small (a and b saturated with opposite signs) the formula loses
    precision, and tanh(a + b) is evaluated directly there."""
    den = torch.addcmul(torch.ones((), dtype=tanh_a.dtype, device=tanh_a.device), tanh_a, tanh_b)
    hidden = (tanh_a + tanh_b).div_(den)
    # 1 + ta·tb ≥ 1 − max|ta|·max|tb|: check per pair only when that bound allows a small one
    # (a traced step cannot branch on values: it always takes the checked path)
    if tracing() or bool(tanh_a.abs().amax() * tanh_b.abs().amax() > 0.99):
        unsafe = den < 1e-2
        hidden = torch.where(unsafe, torch.tanh(a + b), hidden)
    return hidden


class _PairwiseHead(torch.autograd.Function):
    """o[b, i, j] = W₂ · act(p_out[b, i] + p_in[b, j] (+ E·ε[b, i, j])) + b₂ for one hidden layer,
    computed in chunks of receiving units, and recomputed chunk by chunk in the backward.

    Plain autograd writes the (pairs × hidden) pre-activation and activation tensors to memory
    and reads them back several times in the backward; here each chunk stays in cache and
    nothing of that size is kept between the passes. With tanh and no noise input the
    activation itself factorizes too: tanh is taken once per unit, not once per pair
    (:func:`_tanh_of_sum`).
    """

    @staticmethod
    def _rows(p_in) -> int:
        """Receiving units per chunk."""
        return max(1, _CHUNK_FLOATS // max(1, p_in.shape[1] * p_in.shape[2]))

    @staticmethod
    def _unit_tanh(ctx, p_out, p_in):
        """tanh of every unit's projection when the activation factorizes, else (None, None)."""
        return (torch.tanh(p_out), torch.tanh(p_in)) if ctx.tanh_sum else (None, None)

    @staticmethod
    def _pre(p_out, p_in, noise, e, start, stop):
        """The pre-activations of the pairs of receiving units start..stop."""
        pre = p_out[:, start:stop, None, :] + p_in[:, None, :, :]
        if noise is not None:
            pre = pre + F.linear(noise[:, start:stop], e)
        return pre

    @staticmethod
    def _hidden(ctx, p_out, p_in, tanh_out, tanh_in, noise, e, start, stop):
        if tanh_out is not None:
            return _tanh_of_sum(tanh_out[:, start:stop, None, :], tanh_in[:, None, :, :],
                                p_out[:, start:stop, None, :], p_in[:, None, :, :])
        return ctx.act(_PairwiseHead._pre(p_out, p_in, noise, e, start, stop))

    @staticmethod
    def forward(ctx, p_out, p_in, noise, e, w2, b2, act):
        ctx.act = act
        ctx.tanh_sum = act is torch.tanh and noise is None
        ctx.save_for_backward(p_out, p_in, noise, e, w2, b2)
        tanh_out, tanh_in = _PairwiseHead._unit_tanh(ctx, p_out, p_in)
        rows = _PairwiseHead._rows(p_in)
        out = p_out.new_empty(p_out.shape[0], p_out.shape[1], p_in.shape[1], w2.shape[0])
        for start in range(0, p_out.shape[1], rows):
            hidden = _PairwiseHead._hidden(ctx, p_out, p_in, tanh_out, tanh_in, noise, e,
                                           start, start + rows)
            out[:, start:start + rows] = F.linear(hidden, w2, b2)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # runs without grad mode (once_differentiable)
        p_out, p_in, noise, e, w2, b2 = ctx.saved_tensors
        tanh_out, tanh_in = _PairwiseHead._unit_tanh(ctx, p_out, p_in)
        rows = _PairwiseHead._rows(p_in)
        grad_out, grad_in = torch.zeros_like(p_out), torch.zeros_like(p_in)
        grad_w2, grad_e = torch.zeros_like(w2), None if e is None else torch.zeros_like(e)
        one = torch.ones((), dtype=grad.dtype, device=grad.device)
        for start in range(0, p_out.shape[1], rows):
            stop = start + rows
            g_out = grad[:, start:stop]
            grad_hidden = g_out @ w2
            if ctx.tanh_sum:  # d tanh = 1 − tanh²
                hidden = _PairwiseHead._hidden(ctx, p_out, p_in, tanh_out, tanh_in, None, None,
                                               start, stop)
                grad_pre = grad_hidden.mul_(torch.addcmul(one, hidden, hidden, value=-1.0))
            else:  # any activation: differentiate it on the recomputed chunk
                pre = _PairwiseHead._pre(p_out, p_in, noise, e, start, stop).requires_grad_()
                with torch.enable_grad():
                    hidden = ctx.act(pre)
                    (grad_pre,) = torch.autograd.grad(hidden, pre, grad_hidden)
                hidden = hidden.detach()
            grad_w2 += g_out.reshape(-1, g_out.shape[-1]).t() @ hidden.reshape(
                -1, hidden.shape[-1])
            grad_out[:, start:stop] = grad_pre.sum(2)
            grad_in += grad_pre.sum(1)
            if noise is not None:
                grad_e += grad_pre.reshape(-1, grad_pre.shape[-1]).t() @ noise[
                    :, start:stop].reshape(-1, noise.shape[-1])
        grad_b2 = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_out, grad_in, None, grad_e, grad_w2, grad_b2, None


class Hyperprior(torch.nn.Module):
    """g(z_w; ξ): an MLP from a weight code to ``outputs`` numbers per weight.

    The weight code is ``[z_out, z_in, z_global, noise]`` (the last two optional). Its first layer
    is split by blocks, ``W₁ = [A | B | C | E]``, so :meth:`forward` adds per-unit projections by
    broadcasting instead of concatenating codes per weight.

    Args:
        code_dim: D, the size of a unit code.
        hidden: width of g's hidden layers.
        outputs: numbers per weight (2 for a Gaussian's mean and scale, 1 for an implicit weight).
        global_dim: size of the global code z_s (0: none).
        noise_dim: size of the per-weight noise input (0: none).
        depth: number of hidden layers of g.
        activation: name in :data:`~hyperbayes.models.nets.ACTIVATIONS`.
    """

    def __init__(self, code_dim: int, hidden: int = 32, outputs: int = 2, *, global_dim: int = 0,
                 noise_dim: int = 0, depth: int = 1, activation: str = "relu"):
        super().__init__()
        for name, value, low in (("code_dim", code_dim, 1), ("hidden", hidden, 1),
                                 ("outputs", outputs, 1), ("global_dim", global_dim, 0),
                                 ("noise_dim", noise_dim, 0), ("depth", depth, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from "
                             f"{sorted(ACTIVATIONS)}")
        self.code_dim, self.global_dim, self.noise_dim = code_dim, global_dim, noise_dim
        self.activation = activation
        self.first = torch.nn.Linear(2 * code_dim + global_dim + noise_dim, hidden)
        self.hidden_layers = torch.nn.ModuleList(
            torch.nn.Linear(hidden, hidden) for _ in range(depth - 1))
        self.out = torch.nn.Linear(hidden, outputs)

    @property
    def hidden(self) -> int:
        """Width of g's hidden layers."""
        return self.first.out_features

    def _blocks(self):
        d, g = self.code_dim, self.global_dim
        return torch.split(self.first.weight, [d, d, g, self.noise_dim], dim=1)

    def _act(self, h: torch.Tensor, inplace: bool) -> torch.Tensor:
        if self.activation == "relu":
            return h.relu_() if inplace else h.relu()
        return ACTIVATIONS[self.activation](h)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden_layers:
            h = self._act(layer(h), inplace=True)
        return self.out(h)

    def forward(self, z_out: torch.Tensor, z_in: torch.Tensor | None = None,
                z_global: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """g on every pair (i, j): ``(..., out, in, outputs)``; ``(..., out, outputs)`` when
        ``z_in`` is None (a bias: the input code is zero).

        Args:
            z_out: codes of the receiving units (..., out, D).
            z_in: codes of the sending units (..., in, D), or None.
            z_global: the global code (..., global_dim), when g has one.
            noise: per-weight noise (..., out, in, noise_dim) (or (..., out, noise_dim) for
                biases), when g has a noise input.
        """
        self._check_inputs(z_out, z_in, z_global, noise)
        a, b, c, e = self._blocks()
        pre = F.linear(z_out, a, self.first.bias)               # (..., out, H)
        if (z_in is not None and not self.hidden_layers and noise is None
                and self.activation == "sin"):
            if z_global is not None:
                pre = pre + F.linear(z_global, c).unsqueeze(-2)
            return self._sin_pairs(pre, F.linear(z_in, b))
        if z_in is not None and not self.hidden_layers and z_out.device.type == "cpu":
            # chunks in cache pay off on a CPU; on a GPU one broadcast pass over all pairs
            # beats a Python loop of small kernels (measured 0.23× the naive speed chunked)
            if z_global is not None:
                pre = pre + F.linear(z_global, c).unsqueeze(-2)
            return self._fused_pairs(pre, F.linear(z_in, b), noise, e)
        if z_global is not None:
            pre = pre + F.linear(z_global, c).unsqueeze(-2)
        if z_in is not None:                                     # outer sum over (i, j)
            pre = pre.unsqueeze(-2) + F.linear(z_in, b).unsqueeze(-3)
        if noise is not None:
            pre = pre + F.linear(noise, e)
        return self._head(self._act(pre, inplace=True))

    def _sin_pairs(self, p_out, p_in):
        """The one-hidden-layer sin head on every (i, j) pair as one matrix product per output:
        sin(a + b) = sin a · cos b + cos a · sin b, so
        o[i, j, k] = Σ_h W₂[k, h] (sin a_ih cos b_jh + cos a_ih sin b_jh) + b₂[k] is a product of
        an (out × 2H) and a (2H × in) matrix. Exact; no per-pair hidden activations at all."""
        left = torch.cat([torch.sin(p_out), torch.cos(p_out)], dim=-1)      # (..., out, 2H)
        right = torch.cat([torch.cos(p_in), torch.sin(p_in)], dim=-1)       # (..., in, 2H)
        w2 = self.out.weight.repeat(1, 2)                                     # (K, 2H)
        out = (left.unsqueeze(-3) * w2[:, None, :]) @ right.unsqueeze(-3).transpose(-1, -2)
        out = out + self.out.bias[:, None, None]                              # (..., K, out, in)
        return out.movedim(-3, -1)

    @torch.no_grad()
    def rescale(self, z_out: torch.Tensor, z_in: torch.Tensor, z_global: torch.Tensor | None,
                noise: torch.Tensor | None, *, frequency: float | None = None,
                mean_scale: float | None = None) -> None:
        """Rescale the initial parameters for codes distributed like the given samples.

        Args:
            z_out, z_in, z_global, noise: sample inputs of :meth:`forward` (e.g. random codes).
            frequency: the standard deviation the first layer's pre-activations should have over
                the sample pairs (its bias is zeroed). For a sin activation it is the typical
                frequency of g's Fourier features: large enough that g(z_i, z_j) is far from
                the additive α_i + β_j, which would give every unit the same weights.
            mean_scale: the standard deviation output 0 (a weight, or a weight's mean) should have
                over the sample pairs; it is also centred there, and the other outputs (a
                Gaussian's scale) start constant at their bias.
        """
        if frequency is not None:
            self.first.bias.zero_()
            pre = self.first(self._pair_inputs(z_out, z_in, z_global, noise))
            self.first.weight.mul_(frequency / pre.std())
        if mean_scale is not None:
            out = self.naive(z_out, z_in, z_global, noise)[..., 0]
            self.out.weight[0].mul_(mean_scale / out.std())
            self.out.bias[0] -= self.naive(z_out, z_in, z_global, noise)[..., 0].mean()
            self.out.weight[1:].zero_()

    def _fused_pairs(self, p_out, p_in, noise, e):
        """The one-hidden-layer head on every (i, j) pair through :class:`_PairwiseHead`."""
        lead = torch.broadcast_shapes(p_out.shape[:-2], p_in.shape[:-2],
                                      () if noise is None else noise.shape[:-3])
        n_out, n_in, hidden = p_out.shape[-2], p_in.shape[-2], p_out.shape[-1]
        p_out = p_out.expand(*lead, n_out, hidden).reshape(-1, n_out, hidden)
        p_in = p_in.expand(*lead, n_in, hidden).reshape(-1, n_in, hidden)
        if noise is not None:
            noise = noise.expand(*lead, n_out, n_in, noise.shape[-1]).reshape(
                -1, n_out, n_in, noise.shape[-1])
        act = ACTIVATIONS[self.activation]
        out = _PairwiseHead.apply(p_out, p_in, noise, e if noise is not None else None,
                                  self.out.weight, self.out.bias, act)
        return out.reshape(*lead, n_out, n_in, out.shape[-1])

    def naive(self, z_out: torch.Tensor, z_in: torch.Tensor | None = None,
              z_global: torch.Tensor | None = None,
              noise: torch.Tensor | None = None) -> torch.Tensor:
        """The same function computed from the concatenated weight codes (one row of 2D + …
        inputs per weight): the reference the factorized :meth:`forward` is tested against."""
        self._check_inputs(z_out, z_in, z_global, noise)
        out = self._head(self._act(self.first(self._pair_inputs(z_out, z_in, z_global, noise)),
                                   inplace=False))
        return out.squeeze(-2) if z_in is None else out

    def _pair_inputs(self, z_out, z_in, z_global, noise):
        """The concatenated weight codes (..., out, in, 2D + …); in = 1 for biases."""
        squeeze = z_in is None
        if squeeze:
            z_in = z_out.new_zeros(*z_out.shape[:-2], 1, self.code_dim)
        lead = torch.broadcast_shapes(z_out.shape[:-2], z_in.shape[:-2])
        n_out, n_in = z_out.shape[-2], z_in.shape[-2]
        parts = [z_out.unsqueeze(-2).expand(*lead, n_out, n_in, self.code_dim),
                 z_in.unsqueeze(-3).expand(*lead, n_out, n_in, self.code_dim)]
        if z_global is not None:
            parts.append(z_global[..., None, None, :].expand(*lead, n_out, n_in, self.global_dim))
        if noise is not None:
            parts.append((noise.unsqueeze(-2) if squeeze else noise).expand(
                *lead, n_out, n_in, self.noise_dim))
        return torch.cat(parts, dim=-1)

    def _check_inputs(self, z_out, z_in, z_global, noise):
        if z_out.shape[-1] != self.code_dim or (z_in is not None
                                                and z_in.shape[-1] != self.code_dim):
            raise ValueError(f"codes must have {self.code_dim} coordinates, got z_out "
                             f"{tuple(z_out.shape)}"
                             + (f" and z_in {tuple(z_in.shape)}" if z_in is not None else ""))
        if (z_global is None) != (self.global_dim == 0):
            raise ValueError(f"this hyperprior has global_dim={self.global_dim}: give z_global "
                             "exactly when it is positive")
        if (noise is None) != (self.noise_dim == 0):
            raise ValueError(f"this hyperprior has noise_dim={self.noise_dim}: give noise "
                             "exactly when it is positive")


class MetaPrior(Prior, torch.nn.Module):
    """A prior over an MLP's weights through latent unit codes and a shared hyperprior network.

    The model's latent sites are the codes ``codes.0`` (input units, shape (in, D)) …
    ``codes.L`` (output units), plus ``codes.global`` (shape (global_dim,)) when
    ``global_dim > 0``; guides approximate those only. The net's parameters (``fc0.weight``, …)
    are drawn from P(W | Z; ξ) inside the model. The hyperprior's parameters ξ are parameters of
    the model (the prior is a submodule of :class:`~hyperbayes.models.BNN`), so ``fit`` learns
    them with the guide's.

    Args:
        code_dim: D, the size of each unit's code (ignored with ``codes="onehot"``).
        hidden: width of g's hidden layers (the paper's toy uses 32).
        variant: ``"gaussian"`` (g gives a mean and a scale per weight) or ``"implicit"`` (g also
            reads noise ε ~ N(0, 1) and gives the weight).
        codes: ``"latent"`` (codes are latent variables) or ``"onehot"`` (each unit's code is a
            fixed one-hot vector over all units: the paper's Gaussian-OH baseline; nothing is
            left to infer, so ``fit`` learns ξ by maximum likelihood).
        global_dim: size of a global code z_s appended to every weight code (0: none).
        depth: number of hidden layers of g.
        activation: g's activation. tanh (the default) keeps g bounded, so codes that Q puts
            far from the data's units cannot generate huge weights; with ReLU, on the cubic toy
            (4,000 steps, seed 0) the fit stayed nearly linear (in-range RMSE 14.3 vs 7.0 with
            tanh) and out-of-data predictive stds reached 100 (tanh: 20).
        fan_in_scaling: divide every generated weight (mean and scale) by √fan_in (not in the
            paper). Off by default: on the cubic toy it made the fit collapse to a line
            (in-range RMSE 9.5–16.9 against 7.0 without it) and out-of-data stds explode.
        init_code_scale: spread of the initial code values a guide starts from (the codes'
            prior mean is 0 for every unit; starting them all there would make every unit alike).
        init_weight_scale: initial σ of P(w | z) (Gaussian variant). Where many units sum into
            an output with small observation noise, a wide start makes the weight noise swamp
            the data and training first flattens the function; 0.01 then fits faster (a sine
            on 20 tanh units), while 0.1 fitted the cubic toy better (in-range RMSE 7.0 vs 10.2).
        init_frequency: rescale g's first layer so that its pre-activations have this standard
            deviation over random starting codes (None: PyTorch's default initialization). With
            the default init the pre-activations are small, g is nearly linear, and every
            generated weight matrix starts close to the additive α_i + β_j, which gives all units
            the same weights: on MNIST (784-100-10) training then sits at chance for epochs.
        init_mean_scale: rescale g's output so that the generated weight means have this standard
            deviation over random starting codes, before fan-in scaling (None: default init);
            the Gaussian's scale then starts at exactly ``init_weight_scale`` for every weight.
        seed: seed of g's initial parameters.

    With ``activation="sin"`` and one hidden layer, g(z_i, z_j) = W₂ sin(A z_i + B z_j + b₁) + b₂
    is evaluated exactly as a rank-2H matrix product (sin(a + b) = sin a cos b + cos a sin b):
    no per-weight hidden activations are formed. This is the setting of the MNIST experiments
    (``init_frequency=3``, ``init_mean_scale=1``, fan-in scaling; see
    :mod:`hyperbayes.experiments.metaprior_mnist`).
    """

    def __init__(self, code_dim: int = 2, hidden: int = 32, *, variant: str = "gaussian",
                 codes: str = "latent", global_dim: int = 0, depth: int = 1,
                 activation: str = "tanh", fan_in_scaling: bool = False,
                 init_code_scale: float = 1.0, init_weight_scale: float = 0.1,
                 init_frequency: float | None = None, init_mean_scale: float | None = None,
                 seed: int | None = 0):
        torch.nn.Module.__init__(self)
        if variant not in VARIANTS:
            raise ValueError(f"unknown MetaPrior variant {variant!r}; choose from {VARIANTS}")
        if codes not in CODE_KINDS:
            raise ValueError(f"unknown MetaPrior codes {codes!r}; choose from {CODE_KINDS}")
        if codes == "onehot" and global_dim:
            raise ValueError("one-hot codes have no global code; use global_dim=0")
        for name, value in (("init_code_scale", init_code_scale),
                            ("init_weight_scale", init_weight_scale),
                            ("init_frequency", init_frequency),
                            ("init_mean_scale", init_mean_scale)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.code_dim, self.hidden, self.variant, self.codes = code_dim, hidden, variant, codes
        self.global_dim, self.depth, self.activation = global_dim, depth, activation
        self.fan_in_scaling = fan_in_scaling
        self.init_code_scale, self.init_weight_scale = float(init_code_scale), float(
            init_weight_scale)
        self.init_frequency, self.init_mean_scale = init_frequency, init_mean_scale
        self.seed = seed
        self.units: list[int] | None = None
        self.layers: list[tuple[ParamSpec, ParamSpec | None]] = []
        self.g: Hyperprior | None = None
        # the codes' prior N(loc, scale²) per site; None: N(0, I). illate(anchor="posterior")
        # swaps in a trained posterior so that re-inference starts from, and stays near, it.
        self.code_priors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if codes == "latent":  # the hyperprior's size is known now; one-hot waits for the net
            self._build_g(code_dim)

    def __repr__(self):
        return (f"MetaPrior(code_dim={self.code_dim}, hidden={self.hidden}, "
                f"variant={self.variant!r}, codes={self.codes!r}, global_dim={self.global_dim}, "
                f"activation={self.activation!r})")

    # -- structure -----------------------------------------------------------------------------

    def _build_g(self, code_dim: int):
        outputs = 2 if self.variant == "gaussian" else 1
        noise_dim = 1 if self.variant == "implicit" else 0
        with torch.random.fork_rng(devices=[]):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            g = Hyperprior(code_dim, self.hidden, outputs, global_dim=self.global_dim,
                           noise_dim=noise_dim, depth=self.depth, activation=self.activation)
            if self.init_frequency is not None or self.init_mean_scale is not None:
                g.rescale(*self._typical_inputs(code_dim), frequency=self.init_frequency,
                          mean_scale=self.init_mean_scale)
            if self.variant == "gaussian":  # start P(w | z) narrow around its mean
                with torch.no_grad():
                    g.out.bias[1] = math.log(math.expm1(self.init_weight_scale))
        self.g = g

    def _typical_inputs(self, code_dim: int, pairs: int = 64):
        """Random codes (and noise) like those training starts from, for :meth:`Hyperprior.rescale`:
        draws from N(0, init_code_scale²), or random units' one-hot codes."""
        if self.codes == "onehot":
            eye = torch.eye(code_dim)
            z_out, z_in = (eye[torch.randperm(code_dim)[:pairs]] for _ in range(2))
        else:
            z_out, z_in = (self.init_code_scale * torch.randn(pairs, code_dim) for _ in range(2))
        z_global = self.init_code_scale * torch.randn(self.global_dim) if self.global_dim else None
        noise = torch.randn(len(z_out), len(z_in), 1) if self.variant == "implicit" else None
        return z_out, z_in, z_global, noise

    def bind(self, specs: Mapping[str, ParamSpec]) -> None:
        """Check that the net is an MLP with plain weights and learn its unit layout."""
        layers: dict[int, dict[str, ParamSpec]] = {}
        for spec in specs.values():
            if spec.role not in ("weight", "bias"):
                raise ValueError(f"MetaPrior generates plain weights and biases; parameter "
                                 f"{spec.name!r} has role {spec.role!r} (use weight_norm=False)")
            if spec.role == "weight" and len(spec.shape) != 2:
                raise ValueError(f"MetaPrior supports dense layers only; {spec.name!r} has shape "
                                 f"{spec.shape}")
            layers.setdefault(spec.layer, {})[spec.role] = spec
        order = sorted(layers)
        if order != list(range(len(order))) or any("weight" not in layers[k] for k in order):
            raise ValueError(f"MetaPrior needs dense layers 0..L-1 each with a weight; got "
                             f"{sorted(specs)}")
        units = [layers[0]["weight"].shape[1]]
        for k in order:
            out, fan_in = layers[k]["weight"].shape
            if fan_in != units[-1]:
                raise ValueError(f"layer {k} reads {fan_in} inputs but layer {k - 1} has "
                                 f"{units[-1]} units: MetaPrior needs a plain MLP")
            units.append(out)
        pairs = [(layers[k]["weight"], layers[k].get("bias")) for k in order]
        if self.units is not None and (units != self.units or [
                (w.name, b.name if b else None) for w, b in pairs] != [
                (w.name, b.name if b else None) for w, b in self.layers]):
            raise ValueError(f"this MetaPrior is bound to a net with units {self.units}; make a "
                             f"new one for units {units}")
        self.units, self.layers = units, pairs
        if self.codes == "onehot" and self.g is None:
            self._build_g(sum(units))
            total, start = sum(units), 0
            for layer, n in enumerate(units):
                self.register_buffer(f"_onehot_{layer}", torch.eye(total)[start:start + n],
                                     persistent=False)
                start += n

    def _require_bound(self, specs):
        if self.units is None:
            self.bind(specs)

    def code_sites(self) -> list[str]:
        """Names of the latent code sites (inputs first, the global code last)."""
        if self.codes == "onehot" or self.units is None:
            return []
        return [code_site(k) for k in range(len(self.units))] + (
            [GLOBAL_CODE_SITE] if self.global_dim else [])

    def guided_sites(self, specs):
        """The code sites: the weights are drawn from P(W | Z) inside the model."""
        self._require_bound(specs)
        return self.code_sites()

    def _code_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every latent code site (unit layers, then the global code)."""
        shapes = {code_site(k): (n, self.code_dim) for k, n in enumerate(self.units)}
        if self.global_dim:
            shapes[GLOBAL_CODE_SITE] = (self.global_dim,)
        return shapes

    def init_values(self, specs, generator=None) -> dict[str, torch.Tensor]:
        """Random starting codes ``init_code_scale · N(0, I)`` for a guide (distinct per unit)."""
        self._require_bound(specs)
        if self.codes == "onehot":
            return {}
        return {name: self.init_code_scale * torch.randn(shape, generator=generator)
                for name, shape in self._code_shapes().items()}

    @property
    def work_per_param(self) -> int:
        """Floats g holds per generated weight while sampling (sizes prediction groups)."""
        return self.hidden * self.depth + 2

    # -- sampling ------------------------------------------------------------------------------

    def _code_distribution(self, name, shape, device):
        if name in self.code_priors:
            loc, scale = self.code_priors[name]
            return dist.Normal(loc.to(device), scale.to(device)).to_event(len(shape))
        zero = torch.zeros((), device=device)
        return dist.Normal(zero, zero + 1.0).expand(shape).to_event(len(shape))

    def sample_codes(self, device) -> dict[str, torch.Tensor]:
        """Sample the code sites (latent codes) or return the fixed one-hot codes."""
        if self.codes == "onehot":
            return {code_site(k): getattr(self, f"_onehot_{k}") for k in range(len(self.units))}
        return {name: pyro.sample(name, self._code_distribution(name, shape, device))
                for name, shape in self._code_shapes().items()}

    def weight_distribution(self, spec: ParamSpec, z_out, z_in, z_global, noise=None):
        """What g says about parameter ``spec``: ``(loc, scale)`` (Gaussian) or the weights
        (implicit, given ``noise``), fan-in scaled."""
        out = self.g(z_out, z_in, z_global, noise)
        factor = 1.0 / math.sqrt(spec.fan_in) if self.fan_in_scaling else 1.0
        if self.variant == "implicit":
            return out[..., 0] * factor
        return out[..., 0] * factor, (F.softplus(out[..., 1]) + _MIN_SCALE) * factor

    def _param_codes(self, codes):
        """(spec, z_out, z_in) for every weight and bias; z_in is None for a bias."""
        for k, (weight, bias) in enumerate(self.layers):
            z_out = codes[code_site(k + 1)]
            yield weight, z_out, codes[code_site(k)]
            if bias is not None:
                yield bias, z_out, None

    def sample(self, specs, device):
        """Sample the codes, then every weight and bias from P(W | Z; ξ).

        Returns ``{site: value}`` for the codes and the net's parameters.
        """
        self._require_bound(specs)
        codes = self.sample_codes(device)
        z_global = codes.get(GLOBAL_CODE_SITE)
        values = dict(codes)
        for spec, z_out, z_in in self._param_codes(codes):
            values[spec.name] = self._sample_param(spec, z_out, z_in, z_global, device)
        return values

    def _sample_param(self, spec, z_out, z_in, z_global, device):
        event = len(spec.shape)
        # Drawn from the prior in model and guide alike: no density term (see the module doc).
        with poutine.mask(mask=False):
            if self.variant == "implicit":
                zero = torch.zeros((), device=device)
                noise = pyro.sample(f"{spec.name}.noise", dist.Normal(zero, zero + 1.0).expand(
                    (*spec.shape, 1)).to_event(event + 1))
                return self.weight_distribution(spec, z_out, z_in, z_global, noise)
            loc, scale = self.weight_distribution(spec, z_out, z_in, z_global)
            return pyro.sample(spec.name, dist.Normal(loc, scale).to_event(event))

    def generate(self, codes: Mapping[str, torch.Tensor], *, mean: bool = False,
                 noise_seed: int | None = None) -> dict[str, torch.Tensor]:
        """The net's parameters for given codes, outside any Pyro model (for plots and probes).

        Args:
            codes: ``{code site: value}``, every site with the same leading sample shape.
            mean: return g's mean weights (Gaussian) instead of a draw.
            noise_seed: seed of the draw (Gaussian noise or implicit ε).
        """
        if self.units is None:
            raise RuntimeError("the MetaPrior is not bound to a net yet (build the BNN first)")
        generator = None
        if noise_seed is not None:
            device = next(self.g.parameters()).device
            generator = torch.Generator(device=device).manual_seed(noise_seed)
        codes = dict(codes)
        if self.codes == "onehot":
            codes.update(self.sample_codes(None))
        z_global = codes.get(GLOBAL_CODE_SITE)
        out = {}
        for spec, z_out, z_in in self._param_codes(codes):
            if self.variant == "implicit":
                shape = torch.broadcast_shapes(z_out.shape[:-2], () if z_in is None else
                                               z_in.shape[:-2]) + (*spec.shape, 1)
                noise = torch.randn(shape, generator=generator, device=z_out.device)
                out[spec.name] = self.weight_distribution(spec, z_out, z_in, z_global, noise)
                continue
            loc, scale = self.weight_distribution(spec, z_out, z_in, z_global)
            out[spec.name] = loc if mean else loc + scale * torch.randn(
                loc.shape, generator=generator, device=loc.device)
        return out
