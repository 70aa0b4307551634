"""Memory while sampling many sequences: how much is free, what a row costs, what an OOM looks like.

``Generator.sample`` uses these to run each token step over slices of rows that fit (the slices are
taken inside the step, so the random stream is consumed in the same order as one full-width step,
and slices of whole 256-row blocks give bitwise the same samples), and to turn an out-of-memory
error that no slicing can avoid into one line naming the request and the memory it needs.
"""

from __future__ import annotations

import torch

from llmgan.errors import ResourceError

# share of the free memory one step's slice may plan to use: the estimate below is rough, and the
# caller's other tensors (and other processes) need room too
STEP_MEMORY_SHARE = 0.25


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA OOM, or the CPU allocator's "not enough memory" (both leave the process usable)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    text = str(error)
    return isinstance(error, (RuntimeError, MemoryError)) and (
        isinstance(error, MemoryError) or "not enough memory" in text or "out of memory" in text.lower())


def free_memory_bytes(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (CUDA: the driver's count; CPU: MemAvailable), None if unknown."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def tensor_bytes(x) -> int:
    """Bytes held by the tensors in ``x`` (a tensor, or nested lists/tuples/dicts of them)."""
    if isinstance(x, torch.Tensor):
        return x.element_size() * x.numel()
    if isinstance(x, (list, tuple)):
        return sum(tensor_bytes(v) for v in x)
    if isinstance(x, dict):
        return sum(tensor_bytes(v) for v in x.values())
    return 0


def step_row_bytes(state_row_bytes: float, vocab_size: int, full_logits: bool) -> float:
    """Rough peak bytes one row adds during one token step: its state read and its new state written,
    plus the logits (a few (V,) float32 rows at once when the full logits are formed: top-k, top-p,
    greedy, watermark; the fused sampler forms them in fixed blocks of rows, counted as one)."""
    return 3 * state_row_bytes + 4 * vocab_size * (4 if full_logits else 1) + 1024


def aligned_rows(rows: int) -> int:
    """``rows`` rounded down to whole ``ROW_CHUNK`` blocks (the sampler's own row blocks, so a slice's
    matrix products have the shapes the full step's have), or as it is below one block (at least 1)."""
    from llmgan.models.sampling import ROW_CHUNK

    return max(1, rows // ROW_CHUNK * ROW_CHUNK if rows >= ROW_CHUNK else rows)


def rng_for(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """The generator a draw uses: the given one, else the device's default."""
    if generator is not None:
        return generator
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.default_generators[index]
    return torch.default_generator


def too_big(n: int, max_len: int, row_bytes: float, free: int | None, why: str = "") -> ResourceError:
    gb = n * row_bytes / 1e9
    have = f", {free / 1e9:.2f} GB free" if free is not None else ""
    return ResourceError(
        f"out of memory sampling {n} sequences of up to {max_len} tokens (about {gb:.2f} GB for their states "
        f"and tokens{have}{why}); ask for fewer at a time (llmgan generate -n in several calls, or a loop over "
        "smaller n in Python), a shorter max_len, or run on a device with more memory"
    )
