"""torch.distributed helpers. Under ``torchrun`` (RANK/WORLD_SIZE set) the process group is
initialised once; everything else asks ``rank()`` / ``is_main()`` so that only rank 0 logs and
writes checkpoints, while every rank samples with its own seed (seed + rank)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def maybe_init(device: torch.device) -> None:
    """Initialise the default process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)


def all_reduce_gradients(module: torch.nn.Module) -> None:
    """Average gradients across ranks (plain data parallelism; no-op on one process)."""
    n = world_size()
    if n <= 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(n)


def resolve_device(name: str) -> torch.device:
    from llmgan.errors import ConfigError

    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device(f"cuda:{local}")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available (use --device cpu)")
    return torch.device(name)
