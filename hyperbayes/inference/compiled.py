"""A compiled SVI step: the loss of a fixed (model, guide) and its gradients, traced once through
Pyro into one graph of tensor operations and compiled with ``torch.compile``, run in place of
the eager step with the same random numbers.

Why a trace and not ``torch.compile`` of the loss: TorchDynamo cannot follow Pyro's message
machinery (its messages are TypedDicts with optional keys), which breaks the loss into dozens of
graphs and makes it slower than eager. ``torch.fx``'s ``make_fx`` instead records the aten
operations the eager step executes (Python, Pyro's poutines and the guide's bookkeeping vanish),
forward and backward together; TorchInductor then compiles that one graph. The trace fixes
what is Python in the step (the structure, shapes, ``kl_weight``, the shard of a data-parallel
rank), so a new minibatch shape traces again, and anything that reads a tensor's value into
Python control flow cannot be traced: that step runs eagerly (:class:`CompileFallback` says
why).
"""

from __future__ import annotations

import contextlib
import warnings

import pyro
import torch

from ..tracing import tracing_step

__all__ = ["CompiledStep", "CompileFallback", "unsupported_reason"]


class CompileFallback(UserWarning):
    """A loss that cannot be compiled; ``fit`` runs the eager step instead."""


def unsupported_reason(loss, kl_schedule=None) -> str | None:
    """Why ``loss`` cannot run as a compiled step, or None when it can be tried."""
    if hasattr(loss, "state_dict"):
        return (f"{type(loss).__name__} trains its own state inside the loss (e.g. the "
                "adversarial loss's discriminator step), which a traced graph would replay "
                "without updating")
    if kl_schedule is not None:
        return "a kl_schedule changes the loss's kl_weight every step, which a trace fixes"
    return None


class _Pair(torch.nn.Module):
    """The model and guide as one module, whose forward is the loss."""

    def __init__(self, loss, model, guide):
        super().__init__()
        self.model, self.guide, self._loss = model, guide, loss

    def forward(self, x, y, dataset_size):
        return self._loss.differentiable_loss(self.model, self.guide, x, y, dataset_size)


class CompiledStep:
    """``step(x, y, dataset_size)`` computes the loss and writes the gradients into ``.grad``
    like ``loss.differentiable_loss(model, guide, x, y, dataset_size).backward()``, from a graph
    traced on first use for each input shape and compiled.

    Args:
        loss, model, guide: as in :func:`~hyperbayes.inference.fit`; the structure must not
            change between steps.
        backend: a ``torch.compile`` backend (``"inductor"``), or None to run the traced graph
            uncompiled (the trace alone removes Pyro's Python).
        mode: ``torch.compile``'s mode (e.g. ``"reduce-overhead"`` for CUDA graphs on a GPU).

    Random numbers are drawn by the graph in the eager step's order from torch's generator
    (TorchInductor's own random kernels are turned off), so a compiled step and an eager step
    from the same seed see the same draws.
    """

    def __init__(self, loss, model, guide, *, backend: str | None = "inductor",
                 mode: str | None = None):
        self.pair = _Pair(loss, model, guide)
        self.backend, self.mode = backend, mode
        self._graphs: dict = {}

    def _tensors(self):
        named = list(self.pair.named_parameters()) + list(self.pair.named_buffers())
        names = [n for n, _ in named]
        trainable = [isinstance(t, torch.nn.Parameter) and t.requires_grad for _, t in named]
        return names, [t for _, t in named], trainable

    def _trace(self, x, y, dataset_size):
        from torch.func import functional_call
        from torch.fx.experimental.proxy_tensor import make_fx

        names, tensors, trainable = self._tensors()

        def joint(tensors, x, y):
            values = dict(zip(names, tensors, strict=True))
            value = functional_call(self.pair, values, (x, y, dataset_size))
            wanted = [t for t, g in zip(tensors, trainable, strict=True) if g]
            grads = torch.autograd.grad(value, wanted, allow_unused=True)
            return value, [torch.zeros_like(t) if g is None else g
                           for t, g in zip(wanted, grads, strict=True)]

        inputs = [t.detach().requires_grad_(g) for t, g in zip(tensors, trainable, strict=True)]
        state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state() if x.is_cuda else None
        try:
            with tracing_step(), pyro.validation_enabled(False), _no_distribution_validation():
                graph = make_fx(joint)(inputs, x, y)
        finally:
            torch.set_rng_state(state)  # tracing ran the step once: give its draws back
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state)
        if self.backend is None:
            return graph
        # compiled lazily, on the first call, where _CompiledCall sets the random fallback
        return _CompiledCall(torch.compile(graph, backend=self.backend, mode=self.mode,
                                           fullgraph=True, dynamic=False))

    def __call__(self, x, y, dataset_size) -> torch.Tensor:
        from ..models.noise import current_shard

        key = (tuple(x.shape), tuple(y.shape), x.device, int(dataset_size), current_shard(),
               self.pair.model.training, self.pair.guide.training,
               getattr(self.pair._loss, "kl_weight", None))  # what the trace fixes
        run = self._graphs.get(key)
        if run is None:
            run = self._graphs[key] = self._trace(x, y, dataset_size)
        names, tensors, trainable = self._tensors()
        value, grads = run([t.detach() for t in tensors], x, y)
        for tensor, grad in zip((t for t, g in zip(tensors, trainable, strict=True) if g), grads,
                                strict=True):
            if tensor.grad is None:
                tensor.grad = grad
            else:
                tensor.grad.add_(grad)
        return value


class _CompiledCall:
    """A torch.compile'd graph, compiled on first call with Inductor's random-number fallback
    (the eager generator's draws)."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.ready = False

    def __call__(self, *args):
        import torch._inductor.config as inductor_config

        with inductor_config.patch(fallback_random=True):
            if self.ready:
                return self.compiled(*args)
            with warnings.catch_warnings():  # torch's own deprecation notices while compiling
                warnings.simplefilter("ignore", DeprecationWarning)
                out = self.compiled(*args)
            self.ready = True
            return out


@contextlib.contextmanager
def _no_distribution_validation():
    """torch.distributions' argument checks read tensor values into Python: off while tracing
    (the eager first step of ``fit`` runs them)."""
    before = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(before)

