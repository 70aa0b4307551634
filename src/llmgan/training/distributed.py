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


def assert_in_sync(modules: dict[str, torch.nn.Module], where: str) -> None:
    """Raise TrainingDiverged if any module's parameters differ across ranks (no-op on one process).

    Data parallelism is only correct while every rank holds the same weights: each rank samples its
    own fakes, gradients are averaged, every rank steps. One float64 checksum per parameter, reduced
    with MAX and MIN, catches a rank that drifted (a rank-local update, a different init) right away
    instead of letting it train a different model silently.
    """
    from llmgan.errors import TrainingDiverged

    if world_size() <= 1:
        return
    for name, module in modules.items():
        params = [p.detach() for p in module.parameters()]
        if not params:
            continue
        sums = torch.stack([p.double().sum() for p in params])
        hi, lo = sums.clone(), sums.clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        if not torch.equal(hi, lo):
            raise TrainingDiverged(f"{where}: the {name}'s parameters differ across ranks (rank {rank()} of "
                                   f"{world_size()}); data-parallel training needs identical weights on every rank")


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
