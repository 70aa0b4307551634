"""torch.distributed helpers. Under ``torchrun`` (RANK/WORLD_SIZE set) the process group is
initialised once; everything else asks ``rank()`` / ``is_main()`` so that only rank 0 logs and
writes checkpoints, while every rank samples with its own seed (seed + rank).

Gradients are averaged by ``torch.nn.parallel.DistributedDataParallel`` (bucketed all-reduces that
overlap the backward pass, and the initial broadcast of rank 0's weights); see :class:`DataParallel`
for how the engine's method-based models (``weighted_nll``, ``sample_relaxed``, ``D(x)``) use it."""

from __future__ import annotations

import inspect
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


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


class _LossPassthrough(nn.Module):
    """A module whose forward returns the loss it is given: the hook by which DDP sees a backward coming.

    Why: our models are driven through methods (``weighted_nll``, ``log_probs``, ``sample_relaxed``,
    a discriminator's ``forward`` inside a generator loss), not one ``forward``, and a loss often mixes
    several calls. DDP prepares its reducer in ``forward``: it walks the autograd graph from the output
    to find which parameters take part (``find_unused_parameters``). Passing the finished loss through
    this forward gives DDP exactly that graph, so its bucketed all-reduce overlaps the real backward.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, loss: Tensor) -> Tensor:
        return loss


class DataParallel:
    """DDP engines for the modules a run trains, keyed by module; a no-op on one process.

    ``add(module)`` wraps it once (DDP broadcasts rank 0's weights and buffers to every rank there);
    ``prepare(module, loss)`` returns the loss to call ``backward()`` on, after which the module's
    gradients hold the average over ranks. Frozen modules (no trainable parameter) are never wrapped.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._engines: dict[int, DistributedDataParallel] = {}

    def add(self, module: nn.Module) -> None:
        if not self.enabled or id(module) in self._engines or not any(p.requires_grad for p in module.parameters()):
            return
        device = next(module.parameters()).device
        # no forward of ours runs through DDP, so buffers need syncing once, at wrap time, not per forward
        # (torch >= 2.13 names that option forward_sync_buffers; older releases broadcast_buffers)
        params = inspect.signature(DistributedDataParallel.__init__).parameters
        buffers = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
        self._engines[id(module)] = DistributedDataParallel(
            _LossPassthrough(module),
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # a loss may touch only part of a model (latent layer, LeakGAN's manager)
            **buffers,
        )

    def prepare(self, module: nn.Module, loss: Tensor) -> Tensor:
        engine = self._engines.get(id(module))
        return loss if engine is None else engine(loss)


def first_rank_where(flag: bool, device: torch.device) -> int | None:
    """The lowest rank on which ``flag`` is true, or None when it is false on every rank (all ranks agree)."""
    n = world_size()
    if n <= 1:
        return 0 if flag else None
    t = torch.tensor([rank() if flag else n], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    first = int(t.item())
    return None if first >= n else first


def sum_across_ranks(value: int, device: torch.device) -> int:
    """Sum of an integer over all ranks (the value itself on one process)."""
    if world_size() <= 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item())


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


# --- FSDP2: sharded Hugging Face generators ------------------------------------------------------
def shard_generator(generator: nn.Module) -> int:
    """FSDP2 ``fully_shard`` on every transformer block of an hf generator, then on the generator itself.

    The blocks are the model's own ``_no_split_modules`` classes (GPT2Block, LlamaDecoderLayer, ...), the
    unit Hugging Face itself never splits. Each rank then holds 1/world of every parameter, gradient and
    Adam moment; a block's weights are gathered only while it runs. Returns the number of blocks sharded.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from llmgan.errors import ConfigError

    if world_size() <= 1:
        raise ConfigError("train.fsdp: needs torchrun with 2 or more processes (WORLD_SIZE is 1)")
    block_names: set[str] = set()
    for m in generator.modules():
        block_names.update(getattr(m, "_no_split_modules", None) or [])
    blocks = [m for m in generator.modules() if type(m).__name__ in block_names]
    if not blocks:
        raise ConfigError(f"train.fsdp: {type(generator).__name__} names no transformer blocks to shard "
                          "(no _no_split_modules); use DDP (train.fsdp: false)")
    for block in blocks:
        fully_shard(block)
    fully_shard(generator)
    # Our generators are driven through methods, not forward(): each entry point gathers the root's
    # weights (embeddings, final norm, output layer) the way forward() would.
    for method in FSDP_ENTRY_POINTS:
        if hasattr(generator, method):
            register_fsdp_forward_method(generator, method)
    return len(blocks)


# The outermost Generator methods of MLE/SFT and evaluation. Only these: a registered method called
# from inside another one would reshard the root's weights on return, under the outer call's feet.
FSDP_ENTRY_POINTS = ("weighted_nll", "log_probs", "sample")


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True)


class FullModelState:
    """A sharded module seen through its full (unsharded) state dict: what checkpoints store, so a run
    trained with FSDP loads on one process. Both calls are collectives: every rank makes them."""

    def __init__(self, module: nn.Module):
        self.module = module

    def state_dict(self) -> dict[str, Tensor]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.module, options=_full_options())

    def load_state_dict(self, state: dict[str, Tensor], strict: bool = True) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self.module, state, options=StateDictOptions(full_state_dict=True, strict=strict))


class FullOptimizerState:
    """The optimizer of a sharded module in the checkpoint's layout: full tensors, keyed by parameter
    index (the order of ``optimizer.param_groups``), like an unsharded optimizer's state dict."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer):
        self.module, self.optimizer = module, optimizer
        names = {id(p): n for n, p in module.named_parameters()}
        self.fqns = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        full = get_optimizer_state_dict(self.module, self.optimizer, options=_full_options())
        index = {fqn: i for i, fqn in enumerate(self.fqns)}
        groups = [{**g, "params": [index[f] for f in g["params"]]} for g in full["param_groups"]]
        return {"state": {index[f]: st for f, st in full["state"].items()}, "param_groups": groups}

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        groups = [{**g, "params": [self.fqns[i] for i in g["params"]]} for g in state["param_groups"]]
        full = {"state": {self.fqns[int(i)]: st for i, st in state["state"].items()}, "param_groups": groups}
        set_optimizer_state_dict(self.module, self.optimizer, optim_state_dict=full, options=_full_options())


class StateSnapshot:
    """A state dict taken already (e.g. gathered from shards on every rank), handed to the checkpoint
    writer in place of the module or optimizer it came from."""

    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return self._state
