"""Data-parallel SVI on torch.distributed: the process group, each rank's shard of a minibatch,
and the one gradient all-reduce per step that makes K processes take the step one would."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Context", "setup", "rank", "world_size", "is_main", "launched", "shard_bounds",
           "launch_local", "independent", "rank0_decides"]


@dataclass(frozen=True)
class Context:
    """The process group ``fit`` trains in: this process's ``rank`` of ``world_size``."""

    rank: int
    world_size: int
    backend: str


_INDEPENDENT: ContextVar[bool] = ContextVar("hyperbayes_independent_job", default=False)


@contextlib.contextmanager
def independent():
    """Within this scope the process works alone (a job of :mod:`hyperbayes.experiments.jobs`):
    ``fit`` does not split minibatches with the other processes, and this process writes its
    own results as rank 0 would."""
    token = _INDEPENDENT.set(True)
    try:
        yield
    finally:
        _INDEPENDENT.reset(token)


def launched() -> bool:
    """True when this process was started by ``torchrun`` (or an equivalent launcher) with more
    than one process, or a process group already exists (and not inside :func:`independent`)."""
    if _INDEPENDENT.get():
        return False
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """The number of processes (1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """True on the process that writes files, shows progress and warns (rank 0, or any
    process inside :func:`independent`)."""
    return _INDEPENDENT.get() or rank() == 0


def local_device(device: torch.device) -> torch.device:
    """On CUDA, this process's GPU (``cuda:LOCAL_RANK``); otherwise ``device``."""
    if device.type != "cuda" or device.index is not None:
        return device
    index = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def setup(device: torch.device) -> Context:
    """Join (or start, from the launcher's ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``
    environment) the default process group: NCCL for CUDA, gloo for CPU."""
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")
                   if k not in os.environ]
        if missing:
            raise RuntimeError(f"distributed training needs the launcher's environment "
                               f"({', '.join(missing)} unset): start it with torchrun")
        dist.init_process_group(backend=backend, init_method="env://")
        atexit.register(_close)
    elif dist.get_backend() != backend and not (backend == "gloo" and
                                                "gloo" in str(dist.get_backend())):
        raise RuntimeError(f"the process group uses {dist.get_backend()}, but training on "
                           f"{device.type} needs {backend}")
    return Context(dist.get_rank(), dist.get_world_size(), backend)


def _close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(batch: int, rank_: int, world: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of a global minibatch of ``batch`` examples that rank ``rank_`` of
    ``world`` takes: contiguous and as equal as possible."""
    return batch * rank_ // world, batch * (rank_ + 1) // world


def check_same(value: str, what: str, device: torch.device) -> None:
    """Raise ValueError on every rank unless ``value`` is the same on all of them."""
    digest = int.from_bytes(hashlib.sha256(value.encode()).digest()[:7], "big")
    mine = torch.tensor([digest, -digest], dtype=torch.float64, device=device)
    both = mine.clone()
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    if not torch.equal(both, mine):
        raise ValueError(f"the processes were given different {what}: every rank must pass "
                         "the same (it takes its own shard of each minibatch)")


def broadcast_state(modules, device: torch.device) -> None:
    """Copy rank 0's parameters, buffers and random-number state to every rank, so all ranks
    start from the same point and draw the same global random numbers (weights, codes)."""
    with torch.no_grad():
        for module in modules:
            for tensor in list(module.parameters()) + list(module.buffers()):
                if tensor.is_floating_point() or tensor.dtype in (torch.int64, torch.int32):
                    dist.broadcast(tensor.data, src=0)
    state = torch.get_rng_state().to(device)
    dist.broadcast(state, src=0)
    torch.set_rng_state(state.cpu())
    if device.type == "cuda":
        cuda_state = torch.cuda.get_rng_state(device).to(device)
        dist.broadcast(cuda_state, src=0)
        torch.cuda.set_rng_state(cuda_state.cpu(), device)


def broadcast_resume(load, device: torch.device):
    """Rank 0's ``load()`` (the state to resume from, or None) on every rank; an error it
    raises is raised on every rank, so none waits for the others. Rank 0 pickles its own
    state to the other processes of its group (``broadcast_object_list``); no file is read on
    the other ranks."""
    payload = [None]
    if dist.get_rank() == 0:
        try:
            payload = [("state", load())]
        except Exception as err:  # noqa: BLE001 - re-raised on every rank below
            payload = [("error", err)]
    dist.broadcast_object_list(payload, src=0,
                               device=device if device.type == "cuda" else None)
    kind, value = payload[0]
    if kind == "error":
        raise value
    return value


def rank0_decides(load, device="cpu"):
    """``load()`` on rank 0 and its result on every rank of a data-parallel run (the others
    read nothing); in one process, or inside :func:`independent`, just ``load()``.

    For what decides the work ahead, such as a cached result to reuse or a saved state to
    resume from: the other ranks' files may be elsewhere or missing (an experiment's other ranks
    write into a temporary folder), and ranks that decided differently would wait for each
    other's collectives forever. An error ``load()`` raises on rank 0 is raised on every rank.
    """
    if not launched():
        return load()
    device = local_device(torch.device(device))
    setup(device)
    return broadcast_resume(load, device)


def all_reduce_step(params, value: torch.Tensor, weight: float) -> torch.Tensor:
    """Sum ``weight`` × (the gradients of ``params``, the loss ``value``) over all ranks in one
    collective, leaving the sums in ``.grad``; returns the summed loss."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads] + [value.detach().reshape(1)])
    flat.mul_(weight)
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[-1]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _entry(index: int, fn, nprocs: int, port: int, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(index), "LOCAL_RANK": str(index),
                       "WORLD_SIZE": str(nprocs), "LOCAL_WORLD_SIZE": str(nprocs)})
    torch.set_num_threads(1)
    try:
        fn(*args)
    finally:
        _close()


def launch_local(fn, nprocs: int, *args) -> None:
    """Run ``fn(*args)`` in ``nprocs`` new processes on this machine with the environment
    ``torchrun --nproc_per_node nprocs`` gives them (one torch thread each), and wait for all;
    an exception in any is raised here. For tests, benchmarks and notebooks; scripts use
    ``torchrun``. ``fn`` must be importable (a module-level function)."""
    import torch.multiprocessing as mp

    if nprocs < 1:
        raise ValueError(f"nprocs must be at least 1, got {nprocs}")
    mp.spawn(_entry, args=(fn, nprocs, _free_port(), args), nprocs=nprocs, join=True)
