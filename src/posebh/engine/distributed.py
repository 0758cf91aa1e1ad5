"""PyTorch's own distributed engine, thinly wrapped: torchrun env init, DDP, local spawn.

Launch on a cluster or one node with ``torchrun --nproc_per_node N ...`` (``init_distributed``
reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); from a training node with several
devices and no launcher, :func:`spawn_local` starts one process per device with
``torch.multiprocessing.spawn``. NCCL when CUDA is available, gloo on CPU (the tests). Only rank 0
writes files.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT_S = 1800
LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: a single process, no process group


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _local_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(backend: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Join the process group described by torchrun's environment; a single process without it.

    Idempotent: a second call returns the group already joined. On CUDA each process is pinned
    to ``cuda:LOCAL_RANK`` before NCCL starts.
    """
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, _local_device(local), dist.get_backend())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return DistInfo(0, 1, local, _local_device(local), None)
    missing = [k for k in ENV_KEYS if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world_size} but {missing} are not set; launch with torchrun or spawn_local")
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    backend = backend or default_backend()
    device = _local_device(local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world_size, local, device, backend)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the only process that writes checkpoints, logs and metrics."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_true(flag: torch.Tensor) -> bool:
    """True when ``flag`` (a bool/0-1 scalar tensor) is set on any rank; one host sync."""
    if is_distributed():
        t = flag.detach().to(torch.float32).reshape(1).clone()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)
    return bool(flag.item())


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def wrap_ddp(model: nn.Module, device: torch.device | str | None = None, *, find_unused_parameters: bool = True) -> nn.Module:
    """DDP over the parameters that require grad *now*; the model itself in a single process.

    DDP registers its gradient hooks only on parameters that require grad when it is built, so a
    model whose frozen set changes must be wrapped again (the trainer does this at every event).
    ``find_unused_parameters`` defaults to True because routed experts and heads leave some
    parameters without a gradient in a given batch. ``broadcast_buffers=False``: the prototypes are
    a buffer that the objective averages across ranks explicitly.
    """
    model = unwrap(model)
    if not is_distributed() or not any(p.requires_grad for p in model.parameters()):
        return model
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters,
                                               broadcast_buffers=False)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def _spawn_entry(local_rank: int, fn: Callable, nprocs: int, port: int, backend: str | None, args: tuple) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nprocs),
                      MASTER_ADDR=LOCALHOST, MASTER_PORT=str(port))
    info = init_distributed(backend)
    try:
        fn(info, *args)
    finally:
        cleanup()


def spawn_local(fn: Callable[..., Any], nprocs: int, *args: Any, backend: str | None = None) -> None:
    """Run ``fn(info: DistInfo, *args)`` in ``nprocs`` fresh processes forming one group on this machine.

    ``fn`` and ``args`` must be picklable (a module-level function). Raises if any rank fails.
    Results travel through files (written by rank 0) or whatever ``fn`` chooses.
    """
    import torch.multiprocessing as mp

    if nprocs < 1:
        raise ValueError(f"nprocs must be >= 1, got {nprocs}")
    mp.spawn(_spawn_entry, args=(fn, nprocs, free_port(), backend, args), nprocs=nprocs, join=True)
