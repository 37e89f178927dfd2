"""Any ``torch.nn.Module`` as a hyperbayes net: its parameters become latent sites, S weight
samples run in one ``torch.func.vmap``-ed pass.

:class:`TorchNet` wraps (a copy of) an ordinary module. Each parameter chosen as Bayesian becomes
a site named as in ``named_parameters()`` (``"conv1.weight"``, ``"layer2.0.bn.bias"``) with a
role and a fan-in read from its layer, so priors written for the library's own nets
(``priors.by_name``, ``FanInNormal``, user priors) apply unchanged. The other parameters stay
deterministic: point estimates trained with the guide by ``fit`` (maximum likelihood: no prior),
or frozen.

Roles: ``"weight"`` / ``"bias"`` for ``nn.Linear`` and convolutions, ``"norm_scale"`` /
``"norm_shift"`` for the affine parameters of BatchNorm, LayerNorm, GroupNorm and InstanceNorm,
``"direction"`` / ``"scale"`` under weight norm, and ``"other"`` for anything else (e.g. a
learned positional embedding or a free tensor of a custom module). A transposed convolution's
weight is (in, out, ...), so priors that read its units from dim 0 see its input channels; the
net's own input must be floating point.

**BatchNorm under sampled weights.** In training mode every weight sample normalizes with the
statistics of its own activations (one batched pass computes them per sample), and the module's
running statistics are updated with their mean over the samples: since the update is linear,
that is the running average of the sample-averaged batch statistics. In evaluation mode (which
:func:`~hyperbayes.inference.predict` sets) every sample uses the shared running statistics, as
a deterministic net would. Buffers are never copied per sample outside a training pass.

**Guides.** Every guide works on a TorchNet. Under ``MeanField(local_reparameterization=True)``
the ``nn.Linear`` layers sample their pre-activations; convolutions (and any other layer) use
sampled weights. Guides over weight-norm scales need ``weight_norm=True``.

**Dropout.** The module's own ``nn.Dropout`` layers behave as in PyTorch: on while training, off
at prediction. :meth:`TorchNet.with_dropout` (the ``mcdropout`` method) adds MC dropout that stays
on at prediction, on the input of every ``nn.Linear`` except the module's first layer, as the
library's ``MLP`` puts it before every dense layer but the first; samples get independent masks.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_leaves, tree_map

from .nets import Net, ParamSpec, gaussian_weights
from .noise import dropout_mask, normal_noise

__all__ = ["TorchNet", "ROLES"]

ROLES = ("weight", "bias", "direction", "scale", "norm_scale", "norm_shift", "other")

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _patterns(value, what: str) -> tuple[str, ...]:
    """Glob patterns given as one string or a sequence of strings."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence) or not all(isinstance(p, str) for p in value):
        raise TypeError(f"{what} must be a glob pattern or a sequence of them, got {value!r}")
    return tuple(value)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _conv_fan_in(module) -> int:
    """Inputs of one output channel of a convolution: in_channels / groups × kernel size."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return module.out_channels // module.groups * math.prod(module.kernel_size)
    return module.in_channels // module.groups * math.prod(module.kernel_size)


def _describe(owner: nn.Module, local: str, param: torch.Tensor) -> tuple[str, int, int]:
    """(role, fan_in, fan_out) of parameter ``local`` of module ``owner``."""
    shape = tuple(param.shape)
    if isinstance(owner, nn.Linear):
        return ("weight" if local == "weight" else "bias"), owner.in_features, owner.out_features
    if isinstance(owner, _CONVS):
        fan_out = owner.out_channels
        return ("weight" if local == "weight" else "bias"), _conv_fan_in(owner), fan_out
    if isinstance(owner, _NORMS):
        units = shape[0] if shape else 1
        return ("norm_scale" if local == "weight" else "norm_shift"), 1, units
    fan_out = shape[0] if shape else 1
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return "other", fan_in, fan_out


class TorchNet(Net, nn.Module):
    """A hyperbayes :class:`~hyperbayes.models.nets.Net` made from any ``torch.nn.Module``.

    Args:
        module: the network; it is deep-copied, so training never changes the caller's module.
            Its forward must take one input tensor (N, ...) and return (N, outputs).
        bayesian: glob pattern(s) on ``named_parameters()`` names of the parameters that become
            latent sites (default: all). E.g. ``"fc.*"`` for a Bayesian last layer.
        frozen: pattern(s) of non-Bayesian parameters kept fixed; every other non-Bayesian
            parameter is a point estimate that :func:`~hyperbayes.inference.fit` trains with the
            guide (maximum likelihood: it has no prior).
        weight_norm: reparametrize the weight of every Bayesian ``nn.Linear`` and convolution
            as w = g · v / ‖v‖ with sites ``"<layer>.direction"`` (v) and ``"<layer>.scale"``
            (g, one per output unit), as ``MLP(..., weight_norm=True)`` does; flow and implicit
            guides ``over="scales"`` need it. A module that already uses
            ``torch.nn.utils.parametrizations.weight_norm`` gets the roles ``"scale"`` (g,
            ``...original0``) and ``"direction"`` (v, ``...original1``) without this flag.
        init: where guides start: ``"module"`` (default) at the module's current values (a
            pretrained net's weights; a fresh module's PyTorch initialisation), ``"reset"`` at
            a fresh PyTorch initialisation (each layer's ``reset_parameters``) drawn from the
            guide's seed.
        sample_chunk: weight samples evaluated together in one ``vmap`` pass: an integer, None
            (all S at once) or ``"auto"``: all at once, except for convolutional modules on the
            CPU, which go one sample per chunk. There, S stacked samples run as grouped
            convolutions and pooling over S-times-larger activations, which measured 2.3× slower
            than S plain passes on 2 cores (LeNet-5, 256 images, S = 100); on a GPU the
            stacked pass is the fast one.
        replay_shared: when chunks are evaluated one after another at prediction, run the
            module's top-level children that come before anything differs between samples
            (a convolutional body under MC dropout or under a Bayesian last layer) once, and
            replay their outputs in every chunk; the outputs are the same as without. Turn it
            off for a child whose forward has side effects beyond its output. A point
            estimate's expanded draws count as one value either way (one pass, not S).

    Example::

        body = torchvision_like_resnet()               # any nn.Module
        net = TorchNet(body, bayesian="fc.*", frozen="layer*")   # Bayesian last layer
        model = BNN(net, priors.FanInNormal(1.0), Categorical())
        guide = MeanField(model)                       # starts at the trained weights
    """

    def __init__(self, module: nn.Module, *, bayesian="*", frozen=(), weight_norm: bool = False,
                 init: str = "module", sample_chunk: int | str | None = "auto",
                 replay_shared: bool = True):
        nn.Module.__init__(self)
        if not isinstance(module, nn.Module):
            raise TypeError(f"TorchNet wraps a torch.nn.Module, got {type(module).__name__}")
        if init not in ("module", "reset"):
            raise ValueError(f"init must be 'module' or 'reset', got {init!r}")
        if not (sample_chunk in ("auto", None) or (
                isinstance(sample_chunk, int) and not isinstance(sample_chunk, bool)
                and sample_chunk >= 1)):
            raise ValueError(f"sample_chunk must be 'auto', None or a positive integer, got "
                             f"{sample_chunk!r}")
        self.sample_chunk, self.replay_shared = sample_chunk, bool(replay_shared)
        self.module = copy.deepcopy(module)
        self.bayesian, self.frozen = _patterns(bayesian, "bayesian"), _patterns(frozen, "frozen")
        self.weight_norm, self.init = bool(weight_norm), init
        self.dropout = 0.0
        named = dict(self.module.named_parameters())
        if not named:
            raise ValueError(f"{type(module).__name__} has no parameters to make Bayesian")
        for what, patterns in (("bayesian", self.bayesian), ("frozen", self.frozen)):
            for p in patterns:
                if not any(fnmatch.fnmatchcase(n, p) for n in named):
                    raise ValueError(f"{what} pattern {p!r} matches no parameter; the module has "
                                     f"{list(named)[:12]}{' ...' if len(named) > 12 else ''}")
        both = [n for n in named if _matches(n, self.bayesian) and _matches(n, self.frozen)]
        if both:
            raise ValueError(f"parameters {both[:6]} are both bayesian and frozen; make the "
                             "patterns disjoint")
        owners = dict(self.module.named_modules())
        self.param_specs: dict[str, ParamSpec] = {}
        self._weight_norm_layers: dict[str, str] = {}  # weight name -> layer prefix
        layer_of: dict[str, int] = {}
        for name, param in named.items():
            if _matches(name, self.frozen):
                param.requires_grad_(False)
                continue
            if not _matches(name, self.bayesian):
                continue
            prefix, _, local = name.rpartition(".")
            owner = owners[prefix]
            role, fan_in, fan_out = _describe(owner, local, param)
            if ".parametrizations." in name and local in ("original0", "original1"):
                layer_prefix = name.split(".parametrizations.")[0]
                layer_owner = owners[layer_prefix]
                if isinstance(layer_owner, (nn.Linear, *_CONVS)) and name.endswith(
                        "parametrizations.weight." + local):
                    _, fan_in, fan_out = _describe(layer_owner, "weight", param)
                    role = "scale" if local == "original0" else "direction"
                prefix = layer_prefix
            layer = layer_of.setdefault(prefix, len(layer_of))
            shape = tuple(param.shape)
            # (a transposed convolution's weight is (in, out, ...): its units are not dim 0, so
            # it keeps a plain weight site)
            if self.weight_norm and role == "weight" and not isinstance(
                    owner, nn.modules.conv._ConvTransposeNd):
                self._weight_norm_layers[name] = prefix
                for spec in (ParamSpec(f"{prefix}.direction", shape, "direction", layer, fan_in,
                                       fan_out),
                             ParamSpec(f"{prefix}.scale", (fan_out,), "scale", layer, fan_in,
                                       fan_out)):
                    self.param_specs[spec.name] = spec
            else:
                self.param_specs[name] = ParamSpec(name, shape, role, layer, fan_in, fan_out)
        if not self.param_specs:
            raise ValueError("no parameter is Bayesian: the bayesian patterns "
                             f"{list(self.bayesian)} select nothing outside frozen")
        # the Bayesian tensors of the copy are replaced by samples on every call: they only
        # record where guides start, and are not trained
        self._site_source = {n for n in named if _matches(n, self.bayesian)}
        for n in self._site_source:
            named[n].requires_grad_(False)
        self._linears = [n for n, m in self.module.named_modules() if isinstance(m, nn.Linear)]
        first = next((n for n, m in self.module.named_modules()
                      if any(True for _ in m.parameters(recurse=False))), None)
        # attention reads its output projection's weight directly: no dropout can go there
        attention = {f"{n}.out_proj" if n else "out_proj"
                     for n, m in self.module.named_modules()
                     if isinstance(m, nn.MultiheadAttention)}
        self._dropout_layers = [n for n in self._linears if n != first and n not in attention]
        self._has_conv = any(isinstance(m, _CONVS) for m in self.module.modules())
        # each parameter's number of dimensions, read once: inside a functional_call (the
        # compiled step's trace) the module holds plain tensors, not nn.Parameters
        self._param_ndims = {n: p.dim() for n, p in self.module.named_parameters()}
        # looked at on every forward: found once here (their mode and p are read at call time)
        self._dropout_modules = [m for m in self.module.modules()
                                 if isinstance(m, nn.modules.dropout._DropoutNd)]
        self._running_stat_layers = [
            (prefix, m) for prefix, m in self.module.named_modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]

    def __repr__(self):
        parts = [type(self.module).__name__]
        if self.bayesian != ("*",):
            parts.append(f"bayesian={list(self.bayesian)}")
        if self.frozen:
            parts.append(f"frozen={list(self.frozen)}")
        if self.weight_norm:
            parts.append("weight_norm=True")
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        return f"TorchNet({', '.join(parts)}; {len(self.param_specs)} sites)"

    __call__ = Net.__call__

    # -- initial values ---------------------------------------------------------------------
    def init_params(self, generator: torch.Generator | None = None, *,
                    fresh: bool = False) -> dict[str, torch.Tensor]:
        """Where guides start: the module's current values of the Bayesian parameters (with
        ``init="module"``) or a fresh PyTorch initialisation drawn from ``generator``
        (``init="reset"``, or ``fresh=True``: an ensemble's members must not all start at the
        module's values); under weight norm v = w and g = ‖w‖ per unit, so w is unchanged."""
        source = self.module
        if self.init == "reset" or fresh:
            source = copy.deepcopy(self.module)
            with torch.random.fork_rng(devices=[]):
                seed = int(torch.randint(2**62, (), generator=generator)) if generator else 0
                torch.manual_seed(seed)
                for m in source.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
        values = {n: p.detach().clone() for n, p in source.named_parameters()}
        out = {}
        for name, spec in self.param_specs.items():
            if spec.role == "direction" and name not in values:  # own weight norm
                out[name] = values[f"{name.rpartition('.')[0]}.weight"]
            elif spec.role == "scale" and name not in values:
                w = values[f"{name.rpartition('.')[0]}.weight"]
                out[name] = w.reshape(w.shape[0], -1).norm(dim=-1)
            else:
                out[name] = values[name]
        return out

    # -- forward -------------------------------------------------------------------------------
    def _weights(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Module parameter values from site values (w = g · v / ‖v‖ under own weight norm)."""
        out = {n: v for n, v in params.items() if n in self._site_source}
        for weight_name, prefix in self._weight_norm_layers.items():
            v, g = params[f"{prefix}.direction"], params[f"{prefix}.scale"]
            unit_dims = len(self.param_specs[f"{prefix}.direction"].shape)
            v_lead = v.dim() - unit_dims
            norm = v.flatten(start_dim=v_lead + 1).norm(dim=-1)  # (..., out)
            mult = g / norm
            out[weight_name] = v * mult.reshape(*mult.shape, *([1] * (unit_dims - 1)))
        return out

    def _forward(self, params, x, num_samples, grouped=False):
        if grouped:
            raise NotImplementedError("grouped evaluation (noise_groups) supports MLP nets")
        if not torch.is_floating_point(x):
            raise TypeError(f"TorchNet inputs must be floating point, got {x.dtype}")
        lrt = self._lrt_layers(params) if gaussian_weights.active() else {}
        values = self._weights(params)
        for name, (loc, _) in lrt.items():
            values[f"{name}.weight"] = loc
        batched = {n: v for n, v in values.items() if v.dim() > self._ndim(n)}
        # a value expanded over the samples (a point estimate's S draws) is one value: shared
        same = {n: v[0] for n, v in batched.items() if v.shape[0] > 1 and v.stride(0) == 0}
        batched = {n: v for n, v in batched.items() if n not in same}
        shared = {**{n: v for n, v in values.items() if n not in batched}, **same}
        with _patched(self.module, lrt, self._mc_dropout_layers(), self.dropout):
            if not batched and not (num_samples and (lrt or self._random())):
                out = functional_call(self.module, shared, (x,))
                return out.expand(num_samples, *out.shape) if num_samples else out
            prefix, chunk = {}, self._chunk(x.device)
            # vmap runs what does not depend on the sample once, but a chunk at a time it runs
            # it once per chunk: there, replay the deterministic start of the pass
            if (self.replay_shared and chunk is not None and chunk < num_samples
                    and not self.training and not lrt
                    and not any("." not in n for n in batched)):
                prefix = _deterministic_prefix(self.module, shared, set(batched), x)
            if not batched:  # shared weights, random layers: still one draw per sample
                batched = {"": torch.empty(num_samples, 0, device=x.device)}
            buffers = self._sample_buffers(num_samples)

            replay = _replayed(self.module, prefix)

            def one_sample(sample_values, sample_buffers):
                sample_values = {k: v for k, v in sample_values.items() if k}
                replay.rewind()
                return functional_call(self.module, {**shared, **sample_values,
                                                     **sample_buffers}, (x,))

            with replay:
                out = vmap(one_sample, randomness="different", chunk_size=chunk)(batched,
                                                                                  buffers)
            self._merge_buffers(buffers)
        return out

    def _chunk(self, device: torch.device) -> int | None:
        """Weight samples per vmap chunk (None: all at once)."""
        if self.sample_chunk != "auto":
            return self.sample_chunk
        return 1 if device.type == "cpu" and self._has_conv else None

    def _random(self) -> bool:
        """Whether a forward pass draws random numbers (MC dropout, dropout in training)."""
        return self.dropout > 0 or any(m.training and m.p > 0 for m in self._dropout_modules)

    def _ndim(self, module_param: str) -> int:
        spec = self.param_specs.get(module_param)
        if spec is not None:
            return len(spec.shape)
        return self._param_ndims[module_param]

    def _lrt_layers(self, params) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{linear layer: (loc, scale)}`` for weights a guide marked for local
        reparameterization."""
        found = {}
        for prefix in self._linears:
            value = params.get(f"{prefix}.weight")
            entry = gaussian_weights.lookup(value) if value is not None else None
            if entry is not None:
                found[prefix] = entry
        return found

    def linear_layers(self) -> list[str]:
        """Names of the module's ``nn.Linear`` layers, in order."""
        return list(self._linears)

    def _mc_dropout_layers(self) -> list[str]:
        return self._dropout_layers if self.dropout > 0 else []

    def _sample_buffers(self, num_samples: int) -> dict[str, torch.Tensor]:
        """Per-sample copies of the running statistics of normalization layers in training mode
        (so each sample's update can be made, then averaged)."""
        if not self.training:
            return {}
        out = {}
        for prefix, m in self._running_stat_layers:
            if m.training and m.running_mean is not None:
                for local, b in m.named_buffers(recurse=False):
                    name = f"{prefix}.{local}" if prefix else local
                    out[name] = b.unsqueeze(0).expand(num_samples, *b.shape).clone()
        return out

    def _merge_buffers(self, buffers: dict[str, torch.Tensor]) -> None:
        """Write the sample-averaged running statistics back into the module."""
        if not buffers:
            return
        with torch.no_grad():
            for name, value in buffers.items():
                target = self.module.get_buffer(name)
                target.copy_(value.float().mean(0).to(target.dtype) if target.is_floating_point()
                             else value[0])

    # -- variants --------------------------------------------------------------------------------
    def with_dropout(self, p: float) -> TorchNet:
        """A copy with MC dropout ``p`` on the input of every ``nn.Linear`` except one that is
        the module's first layer (it reads the raw inputs), on at training and prediction time
        (the module's own dropout layers are unchanged)."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        if p > 0 and not self._dropout_layers:
            raise ValueError("with_dropout needs an nn.Linear layer after the first layer "
                             "(dropout goes on the input of such layers)")
        clone = copy.deepcopy(self)
        clone.dropout = float(p)
        return clone


class _StopProbe(Exception):
    """Ends a probe pass (:func:`_deterministic_prefix`) where samples start to differ."""


def _rng_states(x: torch.Tensor) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if x.is_cuda:
        states.append(torch.cuda.get_rng_state(x.device))
    return states


def _deterministic_prefix(module: nn.Module, shared: dict, sampled: set, x: torch.Tensor
                          ) -> dict:
    """The outputs of ``module``'s top-level children that run before anything differs between
    weight samples (in call order, ``{child: [output, ...]}``), from one pass with the
    ``shared`` values.

    Every weight sample would compute exactly these (same weights, same input, no random
    number), so the sampled passes replay them (:func:`_replayed`) instead of recomputing them
    S times: for MC dropout on a convolutional body with a dense head, or a Bayesian last
    layer, the body runs once. The pass stops before the first child that holds a ``sampled``
    parameter or after one during which the generator's state moved (MC dropout masks, an
    ``nn.Dropout`` in training, any draw of a custom layer), and also when the state moved
    between children (a draw in the module's own forward); the generator is put back as it
    was, so the sampled passes draw the same numbers as without the replay. The caller
    excludes sampled parameters of the module itself (they could enter any child's input)."""
    children = dict(module.named_children())
    if not children:
        return {}
    outputs: dict[str, list] = {name: [] for name in children}
    handles, start = [], _rng_states(x)

    def moved() -> bool:
        return any(not torch.equal(a, b) for a, b in zip(start, _rng_states(x), strict=True))

    def pre_hook(name):
        holds_sampled = any(n.startswith(f"{name}.") for n in sampled)

        def hook(_mod, _args):
            if holds_sampled or moved():
                raise _StopProbe
        return hook

    def post_hook(name):
        def hook(_mod, _args, out):
            if moved():
                raise _StopProbe
            outputs[name].append(out)
        return hook

    for name, child in children.items():
        handles += [child.register_forward_pre_hook(pre_hook(name)),
                    child.register_forward_hook(post_hook(name))]
    try:
        functional_call(module, shared, (x,))
    except _StopProbe:
        pass
    finally:
        for handle in handles:
            handle.remove()
        torch.set_rng_state(start[0])
        if x.is_cuda:
            torch.cuda.set_rng_state(start[1], x.device)
    return {name: out for name, out in outputs.items() if out}


class _replayed:
    """Within the block, the children in ``prefix`` return their recorded outputs on their
    first calls of each pass (in order) instead of running; later calls run them.
    :meth:`rewind` starts a pass (one weight sample, or one chunk of them).

    A pass may change a recorded output in place (``x.add_(1)``, ``nn.ReLU(inplace=True)``
    on it): that pass is right (its child's output is its own to change), but the next pass
    would read the changed value. The tensors' version counters tell, at each rewind; from then
    on the children run again, so the outputs stay those of full passes."""

    def __init__(self, module: nn.Module, prefix: dict):
        self.module, self.prefix = module, prefix
        self.calls = dict.fromkeys(prefix, 0)
        self.tensors = [t for outputs in prefix.values() for t in tree_leaves(outputs)
                        if isinstance(t, torch.Tensor)]
        # inference-mode tensors keep no version counter: then every pass gets copies
        self.copies = any(t.is_inference() for t in self.tensors)
        self.versions = None if self.copies else [t._version for t in self.tensors]
        self.stale = False

    def rewind(self) -> None:
        self.calls = dict.fromkeys(self.prefix, 0)
        if not (self.stale or self.copies) and any(
                t._version != v for t, v in zip(self.tensors, self.versions, strict=True)):
            self.stale = True  # changed in place by the last pass: run the children again

    def __enter__(self):
        self.own = {}  # forwards set on a child instance before ours, put back on exit
        for name, recorded in self.prefix.items():
            child = self.module.get_submodule(name)
            real = child.forward

            def forward(*args, _name=name, _recorded=recorded, _real=real, **kwargs):
                call = self.calls[_name]
                self.calls[_name] = call + 1
                if self.stale or call >= len(_recorded):
                    return _real(*args, **kwargs)
                if self.copies:
                    return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t,
                                    _recorded[call])
                return _recorded[call]

            self.own[name] = _set_forward(child, forward)
        return self

    def __exit__(self, *exc):
        for name in self.prefix:
            _restore_forward(self.module.get_submodule(name), self.own[name])
        return False


class _patched:
    """Temporarily replace the forward of some linear layers: local reparameterization
    (pre-activations sampled from their Gaussian) and MC dropout on their input."""

    def __init__(self, module: nn.Module, lrt: dict, dropout_layers: list[str], p: float):
        self.module, self.lrt, self.dropout_layers, self.p = module, lrt, dropout_layers, p
        self.patched: list[nn.Module] = []

    def __enter__(self):
        self.names = sorted(set(self.lrt) | set(self.dropout_layers))
        self.own = {}  # forwards set on a layer instance before ours, put back on exit
        p = self.p
        for name in self.names:
            layer = self.module.get_submodule(name)
            scale = self.lrt[name][1] if name in self.lrt else None
            drop = name in self.dropout_layers
            layer._hb_called = False
            self.own[name] = _set_forward(layer, _linear_forward(layer, scale, drop, p))
            self.patched.append(layer)
        return self

    def __exit__(self, *exc):
        unused = [name for name, layer in zip(self.names, self.patched, strict=True)
                  if not layer._hb_called]
        for name, layer in zip(self.names, self.patched, strict=True):
            _restore_forward(layer, self.own[name])
            del layer._hb_called
        if unused and exc[0] is None:
            raise RuntimeError(
                f"nn.Linear layers {unused} are read without calling their forward (e.g. by "
                "nn.MultiheadAttention), so local reparameterization or MC dropout cannot act on "
                "them: use MeanField without local_reparameterization, or make them "
                "non-Bayesian (TorchNet(bayesian=...))")
        return False


def _set_forward(module: nn.Module, forward):
    """Give ``module`` an instance ``forward``; returns the one set on the instance before
    (None: the class's), for :func:`_restore_forward`."""
    own = vars(module).get("forward")
    module.forward = forward
    return own


def _restore_forward(module: nn.Module, own) -> None:
    """Undo :func:`_set_forward`: the instance's own forward again, else the class's."""
    del module.forward
    if own is not None:
        module.forward = own


def _linear_forward(layer: nn.Linear, scale, drop: bool, p: float):
    """A forward for ``layer`` with local reparameterization and/or MC dropout."""

    def forward(h):
        layer._hb_called = True
        if drop:
            h = h * dropout_mask(h, p)
        if scale is None:
            return F.linear(h, layer.weight, layer.bias)
        mean = F.linear(h, layer.weight, layer.bias)
        var = F.linear(h * h, scale * scale)
        return mean + var.clamp_min(1e-16).sqrt() * normal_noise(mean)

    return forward
