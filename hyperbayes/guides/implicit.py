"""Implicit generator guides: weights w = G(ε) from a hypernetwork, with no tractable density.

Two generators share one interface (:class:`ImplicitGuide`):

* :class:`ImplicitGuide` — *Bayes by Hypernet* (Pawlowski et al., 2017): one generator MLP maps
  noise ε, concatenated with a one-hot *position code* naming the parameter site, to that site's
  values. All sites are generated in one batched pass; the generator's output layer is as wide as
  the largest site and smaller sites take a slice of it. ``over="scales"`` generates only the
  weight-norm scales (one per unit, the paper's choice for large nets) and keeps directions and
  biases as point estimates; ``over="weights"`` generates every parameter (small nets).
* :class:`DiversityGuide` — *Generating Neural Networks with Neural Networks* (Deutsch, 2018):
  noise z ~ U[−1, 1]^d → an extractor MLP → one code per unit → one weight generator per layer,
  shared by the layer's units, that emits the unit's incoming weights and bias (the output layer
  gets a single code that generates the whole layer).

The density q(w) of either is unknown, so the ELBO's log q term is estimated from a batch of S
samples: use the losses of :mod:`hyperbayes.inference.implicit` (nearest-neighbour KL,
Kozachenko–Leonenko entropy, a discriminator density ratio, or the diversity objective), which
draw the S samples as ELBO particles. The plain :class:`~hyperbayes.inference.ELBO` refuses
these guides. The noise is an auxiliary sample site (``_implicit_noise``), so S samples are one
vectorized pass under a ``pyro.plate`` both in training and in
:func:`~hyperbayes.inference.predict`.
"""

from __future__ import annotations

import fnmatch
import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .base import SiteGuide, concat_init, param_key, split_sites

__all__ = ["ImplicitGuide", "DiversityGuide", "NOISE_SITE"]

NOISE_SITE = "_implicit_noise"
NOISES = ("normal", "uniform")


def _mlp(widths, activation: nn.Module, *, batch_norm: bool = False,
         bias: bool = True) -> nn.Sequential:
    """Linear layers of ``widths`` with ``activation`` (and batch norm) between them."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        last = i == len(widths) - 2
        layers.append(nn.Linear(fan_in, fan_out, bias=bias or last))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(fan_out))
            layers.append(activation)
    return nn.Sequential(*layers)


def _batched(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply ``module`` to the last dim of ``x`` with every leading dim folded into one batch
    (batch norm normalizes over all of them)."""
    lead = x.shape[:-1]
    out = module(x.reshape(-1, x.shape[-1]))
    return out.reshape(*lead, out.shape[-1])


class ImplicitGuide(SiteGuide):
    """A generator hypernetwork w = G(ε) as a Pyro guide (Bayes by Hypernet).

    For each generated site c the generator reads ``[ε, onehot(c)]`` and emits the site's values
    (the first ``numel(c)`` outputs of a head as wide as the largest site); value = offset + spread
    ⊙ output, where the learned offset starts at the net's standard initialisation and the fixed
    spread (``init_spread`` × the site's initial root-mean-square) sets the starting diversity.
    The same ε feeds every site, so the generated layers are dependent.

    Args:
        model: a :class:`~hyperbayes.models.BNN`.
        over: ``"scales"`` (weight-norm scales generated, everything else a point estimate),
            ``"weights"`` (every parameter generated), ``"auto"`` (scales when the net has
            them), or a list of site name patterns (``fnmatch``, e.g. ``["fc0.*"]``: the first
            layer generated, the rest point estimates).
        noise_dim: dimension of ε; None (the default) takes D, the number of generated
            scalars. With noise_dim < D the samples lie on a noise_dim-dimensional manifold of
            the D-dimensional space, where KL(q‖p) is infinite: the sample-based losses refuse
            such a guide unless given ``allow_degenerate=True``.
        hidden: widths of the generator's hidden layers; None (the default) is
            (max(64, noise_dim), 256): every site reads ε through the first layer, so the
            samples span at most min(noise_dim, first width) dimensions (:attr:`support_dim`),
            and a first layer narrower than D leaves q degenerate as noise_dim < D does. The
            paper's v1 is (64, 256).
        noise: ``"normal"`` (N(0, I)) or ``"uniform"`` (U[−1, 1]).
        negative_slope: of the generator's LeakyReLU (0.1 in the paper's code).
        init_spread: relative spread of the generated values at the start.
        seed: seeds the point estimates' and the generator's initialisation.

    Example::

        net = MLP([784, 800, 800, 10], weight_norm=True)
        model = BNN(net, priors.by_name({"*.scale": priors.ScaleMixture(0.7, 0.01, 5.0),
                                         "*": priors.Flat()}), Categorical())
        guide = ImplicitGuide(model, over="scales")
        fit(model, guide, data.train, loss=AdversarialELBO(num_particles=1), ...)
    """

    implicit = True
    _generates_flat = True  # generate() splits generate_flat(); subclasses may not

    def __init__(self, model, *, over: str = "auto", noise_dim: int | None = None,
                 hidden=None, noise: str = "normal", negative_slope: float = 0.1,
                 init_spread: float = 0.1, seed: int | None = 0):
        super().__init__(model, seed=seed)
        has_scales = any(s.role == "scale" for s in self.sites)
        if over == "auto":
            over = "scales" if has_scales else "weights"
        if isinstance(over, str):
            if over not in ("scales", "weights"):
                raise ValueError(f"over must be 'scales', 'weights', 'auto' or a list of site "
                                 f"name patterns, got {over!r}")
            if over == "scales" and not has_scales:
                raise ValueError("over='scales' needs a weight-norm net "
                                 "(MLP(..., weight_norm=True))")
            generated = [s for s in self.sites if over == "weights" or s.role == "scale"]
        else:  # site name patterns, e.g. ["fc0.*"]: the paper's toy generates one layer
            patterns = list(over)
            generated = [s for s in self.sites
                         if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]
            if not generated:
                raise ValueError(f"no site matches {patterns}; the sites are "
                                 f"{[s.name for s in self.sites]}")
            over = patterns
        self.over = over
        self._setup_noise(noise, noise_dim, generated)
        self.point_sites = [s for s in self.sites if s not in self.generated_sites]
        self.point_values = nn.ParameterDict(
            {param_key(s.name): nn.Parameter(s.init.clone()) for s in self.point_sites})
        if not init_spread > 0:
            raise ValueError(f"init_spread must be positive, got {init_spread}")
        sizes = [s.numel for s in generated]
        self.head_size = max(sizes)
        if hidden is None:
            hidden = (max(64, self.noise_dim), 256)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if seed is None else seed)
            self.generator = _mlp([self.noise_dim + len(generated), *hidden, self.head_size],
                                  nn.LeakyReLU(negative_slope))
        #: the most dimensions q's samples can span: every site's values depend on ε only
        #: through the generator's first layer, shared by the sites
        self.support_dim = min(self.noise_dim, (*hidden, self.head_size)[0])
        self.offset = nn.Parameter(concat_init(generated))
        rms = [float(s.init.pow(2).mean().sqrt()) for s in generated]
        fallback = sorted(r for r in rms if r > 0)
        fallback = fallback[len(fallback) // 2] if fallback else 1.0
        spread = torch.cat([torch.full((n,), init_spread * (r if r > 0 else fallback))
                            for n, r in zip(sizes, rms, strict=True)])
        self.register_buffer("spread", spread)
        self.register_buffer("position_codes", torch.eye(len(generated)))
        # which head outputs each site reads: (site, j) for j < numel(site), in site order, as
        # positions in the flattened (sites × head_size) output; a gather by index, unlike a
        # boolean mask, needs no device synchronisation
        index = torch.cat([i * self.head_size + torch.arange(n) for i, n in enumerate(sizes)])
        self.register_buffer("_head_index", index, persistent=False)

    def _setup_noise(self, noise: str, noise_dim: int | None, generated) -> None:
        """Validate and store the noise settings (noise_dim None: D, the number of generated
        scalars) and the generated sites."""
        if noise_dim is None:
            noise_dim = sum(s.numel for s in generated)
        if noise not in NOISES:
            raise ValueError(f"unknown noise {noise!r}; choose from {NOISES}")
        if isinstance(noise_dim, bool) or not isinstance(noise_dim, int) or noise_dim < 1:
            raise ValueError(f"noise_dim must be a positive integer, got {noise_dim!r}")
        if not generated:
            raise ValueError("the model has no sites for the generator to produce")
        self.noise, self.noise_dim = noise, noise_dim
        self.generated_sites = list(generated)
        self.generated_names = [s.name for s in generated]
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    @property
    def num_generated(self) -> int:
        """D, the number of generated scalars per sample."""
        return sum(s.numel for s in self.generated_sites)

    def default_loss(self):
        """:class:`~hyperbayes.inference.implicit.EntropyELBO` with 8 samples per step."""
        from ..inference.implicit import EntropyELBO

        return EntropyELBO(num_particles=8)

    def noise_distribution(self) -> dist.Distribution:
        """The generator's input distribution (event shape (noise_dim,))."""
        zero = self._zero.expand(self.noise_dim)
        if self.noise == "normal":
            return dist.Normal(zero, 1.0).to_event(1)
        return dist.Uniform(zero - 1, zero + 1).to_event(1)

    def generate_flat(self, noise: torch.Tensor) -> torch.Tensor:
        """The generated sites' unconstrained values for noise (..., noise_dim), concatenated in
        site order into (..., D)."""
        lead = noise.shape[:-1]
        codes = self.position_codes.expand(*lead, *self.position_codes.shape)
        inputs = torch.cat([noise.unsqueeze(-2).expand(*lead, codes.shape[-2], self.noise_dim),
                            codes], dim=-1)
        heads = _batched(self.generator, inputs)  # (..., sites, head_size)
        flat = heads.reshape(*lead, -1).index_select(-1, self._head_index)  # each site's slice
        return torch.addcmul(self.offset, self.spread, flat)

    def generate(self, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unconstrained values of every generated site for noise (..., noise_dim)."""
        return split_sites(self.generated_sites, self.generate_flat(noise))

    def _constrain(self, site, unconstrained: torch.Tensor) -> torch.Tensor:
        return unconstrained if site.transform is None else site.transform(unconstrained)

    def sample_generated(self, num_samples: int) -> torch.Tensor:
        """``num_samples`` draws of the generated sites, flattened to (num_samples, D), in the
        sites' support; outside Pyro (e.g. to train a discriminator). Gradients flow."""
        noise = self.noise_distribution().sample((num_samples,))
        if self._generates_flat and all(s.transform is None for s in self.generated_sites):
            return self.generate_flat(noise)  # already (num_samples, D) in site order
        values = self.generate(noise)
        return self.flatten({s.name: self._constrain(s, values[s.name])
                             for s in self.generated_sites}, num_samples)

    def flatten(self, values: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        """Concatenate the generated sites' values (each ``(S, ..., *shape)``) into (S, D)."""
        return torch.cat([values[s.name].reshape(num_samples, s.numel)
                          for s in self.generated_sites], dim=-1)

    def forward(self, *args, **kwargs):
        """Draw ε once (per enclosing plate entry), generate, and sample every site from a point
        mass at its value; returns ``{name: value}``."""
        noise = pyro.sample(NOISE_SITE, self.noise_distribution(), infer={"is_auxiliary": True})
        values = self.generate(noise)
        out = {}
        for site in self.generated_sites:
            value = self._constrain(site, values[site.name])
            out[site.name] = pyro.sample(site.name, dist.Delta(value, event_dim=len(site.shape)))
        for site in self.point_sites:
            out[site.name] = self.sample_point(site, self.point_values[param_key(site.name)])
        return out


def _layer_groups(net) -> list[tuple[str, str | None, int]]:
    """(weight site, bias site or None, number of units) of each layer of ``net``, in order."""
    specs = net.param_specs
    # a normalization layer's (scale, shift) is generated per unit like a (weight, bias) pair
    as_pair = {"weight": "weight", "bias": "bias", "norm_scale": "weight", "norm_shift": "bias"}
    layers: dict[int, dict[str, str]] = {}
    for name, spec in specs.items():
        role = as_pair.get(spec.role)
        if role is None or role in layers.get(spec.layer, {}):
            raise ValueError(f"DiversityGuide needs plain (weight, bias) layers; parameter "
                             f"{name!r} has role {spec.role!r} (no weight-norm nets)")
        layers.setdefault(spec.layer, {})[role] = name
    groups = []
    for index in sorted(layers):
        roles = layers[index]
        if "weight" not in roles:
            raise ValueError(f"DiversityGuide needs plain (weight, bias) layers; layer {index} "
                             f"has {sorted(roles)} only")
        groups.append((roles["weight"], roles.get("bias"), specs[roles["weight"]].shape[0]))
    return groups


class DiversityGuide(ImplicitGuide):
    """The diversity hypernetwork of *Generating Neural Networks with Neural Networks*.

    z ~ U[−1, 1]^noise_dim → extractor MLP → one ``code_dim`` code per hidden unit of the target
    net plus one for the output layer → per layer, a generator shared by the layer's units maps a
    unit's code to its incoming weights and bias (fan_in + 1 values; for a conv layer one output
    channel's filter and bias); the output layer's single code generates the whole layer. Batch
    norm and LeakyReLU between hidden layers, no biases inside the hypernet (as in the paper).
    Each layer's output is multiplied by 1/√(fan_in + 1), so the sampled nets start at a standard
    scale. Train it with :class:`~hyperbayes.inference.implicit.DiversityObjective`.

    Args:
        model: a :class:`~hyperbayes.models.BNN` over an MLP or CNN without weight norm.
        noise_dim: dimension of z (paper: 300); None takes D, the number of generated weights
            (with fewer, q is degenerate: see :class:`ImplicitGuide`).
        extractor_hidden: hidden widths of the extractor (paper: (300, 300), 436,500 weights).
        code_dim: dimension of each unit's code (paper: 15).
        generator_hidden: per layer, the hidden widths of that layer's generator (paper, for its
            4-layer CNN: (40, 40), (100, 100), (100, 100), (60, 60)); one tuple is used for every
            layer.
        negative_slope: of the LeakyReLU (paper: 0.05).
        batch_norm: batch norm inside the hypernet (normalizing over all samples and units).
        seed: seeds the initialisation.
    """

    _generates_flat = False

    def __init__(self, model, *, noise_dim: int | None = 300, extractor_hidden=(300, 300),
                 code_dim: int = 15, generator_hidden=(100, 100), negative_slope: float = 0.05,
                 batch_norm: bool = True, seed: int | None = 0):
        SiteGuide.__init__(self, model, seed=seed)
        net = model.net
        self.groups = _layer_groups(net)
        by_name = {s.name: s for s in self.sites}
        missing = [n for g in self.groups for n in g[:2] if n is not None and n not in by_name]
        if missing or len(by_name) != sum(1 + (g[1] is not None) for g in self.groups):
            raise ValueError("DiversityGuide generates exactly the net's weights and biases; the "
                             f"model's latent sites are {sorted(by_name)}")
        self.over = "weights"
        self._setup_noise("uniform", noise_dim, self.sites)
        self.point_sites, self.point_values = [], nn.ParameterDict()
        self.code_dim = int(code_dim)
        # codes: one per unit of each hidden layer, one for the whole output layer
        self.units = [units for *_, units in self.groups[:-1]] + [1]
        act = nn.LeakyReLU(negative_slope)
        if generator_hidden and isinstance(generator_hidden[0], int):
            generator_hidden = [tuple(generator_hidden)] * len(self.groups)
        if len(generator_hidden) != len(self.groups):
            raise ValueError(f"generator_hidden needs one tuple per layer ({len(self.groups)}), "
                             f"got {len(generator_hidden)}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if seed is None else seed)
            self.extractor = _mlp([self.noise_dim, *extractor_hidden, sum(self.units) * code_dim],
                                  act, batch_norm=batch_norm, bias=not batch_norm)
            outputs, scales = [], []
            for (weight, bias, units), unit_count in zip(self.groups, self.units, strict=True):
                per_unit = (by_name[weight].numel + (by_name[bias].numel if bias else 0)) // \
                    unit_count
                outputs.append(per_unit)
                fan_in = by_name[weight].numel // units
                scales.append(1.0 / math.sqrt(fan_in + (1 if bias else 0)))
            self.layer_generators = nn.ModuleList(
                _mlp([code_dim, *hidden, out], act, batch_norm=batch_norm, bias=not batch_norm)
                for hidden, out in zip(generator_hidden, outputs, strict=True))
        self.layer_scales = scales
        self._by_name = by_name
        #: the most dimensions q's samples can span: z passes through the extractor's chain
        self.support_dim = min(self.noise_dim, *extractor_hidden, sum(self.units) * code_dim)

    def generate(self, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every weight and bias of the target net for noise (..., noise_dim)."""
        lead = noise.shape[:-1]
        codes = _batched(self.extractor, noise).reshape(*lead, sum(self.units), self.code_dim)
        values, start = {}, 0
        for (weight, bias, _), unit_count, generator, scale in zip(
                self.groups, self.units, self.layer_generators, self.layer_scales, strict=True):
            layer_codes = codes[..., start:start + unit_count, :]
            start += unit_count
            out = _batched(generator, layer_codes) * scale  # (..., unit_count, per_unit)
            w_shape = self._by_name[weight].shape
            if unit_count == 1:  # the output layer: one code generates it whole
                flat = out[..., 0, :]
                n_w = math.prod(w_shape)
                values[weight] = flat[..., :n_w].reshape(*lead, *w_shape)
                if bias:
                    values[bias] = flat[..., n_w:]
            else:  # one row (filter) and bias per unit
                row = math.prod(w_shape[1:])
                values[weight] = out[..., :row].reshape(*lead, *w_shape)
                if bias:
                    values[bias] = out[..., row]
        return values
