"""Whether an SVI step is being traced for compilation (:mod:`hyperbayes.inference.compiled`):
code that would read a constant tensor into Python keeps it a tensor while this is on."""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

__all__ = ["tracing", "tracing_step"]

_TRACING: ContextVar[bool] = ContextVar("hyperbayes_compile_tracing", default=False)


def tracing() -> bool:
    """True while a step is being traced."""
    return _TRACING.get()


@contextlib.contextmanager
def tracing_step():
    """The scope in which a step is traced."""
    token = _TRACING.set(True)
    try:
        yield
    finally:
        _TRACING.reset(token)
