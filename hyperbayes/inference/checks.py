"""Checks at the API boundary: inputs, targets and settings are refused with a clear error before
any work is done, instead of broadcasting silently or failing deep inside torch."""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["check_inputs", "model_dtype", "num_outputs", "check_data", "check_positive",
           "check_count"]


def model_dtype(model) -> torch.dtype:
    """The floating dtype ``model`` computes in (its first floating parameter or buffer; torch's
    default dtype when it has none)."""
    tensors = list(model.parameters()) + list(model.buffers()) if hasattr(
        model, "parameters") else []
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())


def check_inputs(x, what: str = "x", dtype: torch.dtype | None = None) -> torch.Tensor:
    """A non-empty, finite, floating-point input tensor.

    Floating inputs of another precision (float64, float16) are converted to ``dtype`` (the
    model's: see :func:`model_dtype`; default: torch's default dtype); integer or boolean
    inputs are refused (convert them knowingly, e.g. images ``x.float() / 255``).
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{what} must be a torch tensor, got {type(x).__name__}")
    if x.dim() == 0 or len(x) == 0:
        raise ValueError(f"{what} is empty (shape {tuple(x.shape)}): nothing to compute on")
    if not x.is_floating_point():
        raise TypeError(f"{what} has dtype {x.dtype}; the net takes floating-point inputs "
                        f"(convert with {what}.float(), scaling as your data needs)")
    dtype = dtype or torch.get_default_dtype()
    if x.dtype != dtype:
        x = x.to(dtype)
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or inf values")
    return x


def num_outputs(model, x: torch.Tensor) -> int:
    """The number of outputs of ``model.net`` on inputs like ``x`` (one cheap probe pass with
    placeholder parameters; a net that cannot take such inputs is an error naming their shape)."""
    net = model.net
    device = getattr(model, "device", x.device)
    params = {n: torch.zeros(s.shape, device=device, dtype=x.dtype)
              for n, s in net.param_specs.items()}
    from .predict import eval_mode  # predict imports this module

    try:
        with eval_mode(model), torch.no_grad():
            out = net(params, x[:2].to(device))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"the net cannot evaluate inputs of shape (N, "
                         f"{', '.join(map(str, x.shape[1:]))}): {err}") from err
    if out.dim() != 2:
        raise ValueError(f"the net's outputs have shape {tuple(out.shape)} for 2 inputs; "
                         "hyperbayes nets return (N, outputs)")
    return int(out.shape[-1])


def check_data(model, x: torch.Tensor, y: torch.Tensor, what: str = "data"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a whole data set against the model before training: inputs (see
    :func:`check_inputs`), targets against the likelihood and the net's outputs (shape, dtype,
    label range over *all* examples). Returns ``(x, y)`` in the dtypes the model uses."""
    x = check_inputs(x, f"{what} x", model_dtype(model))
    check = getattr(model.likelihood, "check_targets", None)
    if check is not None:
        try:
            y = check(y, num_outputs(model, x))
        except (ValueError, TypeError) as err:
            raise type(err)(f"{what}: {err}") from None
    return x, y


def check_positive(name: str, value) -> float:
    """A finite number > 0 (e.g. a learning rate)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(
            value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_count(name: str, value, minimum: int = 1) -> int:
    """An integer ≥ ``minimum`` (a step count, a batch size); floats with a fraction, NaN and
    booleans are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    if not isinstance(value, numbers.Integral):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)
