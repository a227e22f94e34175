"""Process-group setup for single-process, multi-GPU and multi-node training launched by ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous address);
without them training runs as a single process. CUDA ranks use NCCL and one GPU each (``cuda:LOCAL_RANK``); CPU ranks
use gloo.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hybridnets_ros.inference.backends.base import resolve_device as resolve_single_device

logger = logging.getLogger(__name__)

# Rank 0 validates alone while the others wait at a barrier: allow a long validation before NCCL/gloo give up.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0, distributed: bool = False) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a torch device; distributed CUDA ranks get ``cuda:LOCAL_RANK``."""
    resolved = resolve_single_device(device)
    if distributed and resolved.type == "cuda":
        if device not in ("auto", "cuda"):
            raise ValueError(f"under torchrun each rank uses cuda:LOCAL_RANK: pass --device cuda or auto, not {device}")
        return torch.device("cuda", local_rank)
    return resolved


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group when launched by torchrun; otherwise a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank, distributed=world_size > 1)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)
        logger.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend, resolved)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=resolved)


def shutdown(context: DistributedContext) -> None:
    if context.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.is_distributed:
        dist.barrier()


def mean_over_ranks(values: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Element-wise mean of a tensor over all ranks (a copy; the input is unchanged)."""
    values = values.detach().clone()
    if context.is_distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= context.world_size
    return values
