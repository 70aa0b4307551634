"""safetensors files of model weights: written atomically (fsynced), read with one-line errors. No pickle.

Below every layer that stores tensors: models (the oracle's weights), checkpoints, detectors.
"""

from __future__ import annotations

import os
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmgan.errors import CheckpointError
from llmgan.fileio import fsync_dir, fsync_file


def save_tensors(
    tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None, sync_dir: bool = True
) -> None:
    """safetensors file written atomically and durably (fsynced before the rename, the folder after);
    tensors are made contiguous and de-aliased (tied weights). ``sync_dir=False``: the caller fsyncs
    the folder once after several files."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    seen: dict[int, str] = {}
    clean: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        key = v.data_ptr()
        # safetensors refuses shared storage; tied weights are stored twice (they are tiny here)
        clean[k] = v.clone().contiguous() if key in seen else v.contiguous()
        seen[key] = k
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(clean, tmp, metadata=metadata)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(directory)


def load_tensors(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt or unreadable safetensors file ({str(e).splitlines()[0]})") from None


def load_model_weights(model: torch.nn.Module, path: str, allow_missing: bool = False) -> list[str]:
    """Load a model's weights, with a one-line error on a missing/corrupt file or a shape mismatch.

    ``allow_missing`` (initialising from another run): weights the checkpoint lacks keep their fresh
    initialisation, e.g. a latent-code layer added on top of an MLE generator; at least one weight
    must match. Returns the names left at their initialisation.
    """
    tensors = load_tensors(path)
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    if missing and (not allow_missing or len(missing) == len(own)):
        raise CheckpointError(f"{path}: missing weights {missing[0]!r} (checkpoint from another model?)")
    for k, v in own.items():
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{path}: weight {k!r} has shape {tuple(tensors[k].shape)}, the model expects {tuple(v.shape)} "
                "(vocabulary or size mismatch)"
            )
    model.load_state_dict({k: tensors[k] for k in own if k in tensors}, strict=not missing)
    return missing
