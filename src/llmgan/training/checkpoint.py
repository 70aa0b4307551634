"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

Layout of one checkpoint (a directory):

    checkpoints/step-000123/
        generator.safetensors       model weights (and discriminator.safetensors, ...)
        optim-generator.safetensors optimizer tensors (Adam moments), keyed "<param index>.<name>"
        state.json                  step counters, phase, RNG states, optimizer hyper-parameters
    checkpoints/latest              a text file naming the newest complete checkpoint

A checkpoint is written into a hidden temporary directory and renamed into place only when every
file is complete; ``latest`` is then replaced atomically. A run killed at any moment therefore
leaves either the previous checkpoint or the new one, never a half-written one. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmgan.errors import CheckpointError
from llmgan.fileio import atomic_write_text  # noqa: F401 - re-exported (configs, samples, runs)


def save_tensors(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    """safetensors file written atomically; tensors are made contiguous and de-aliased (tied weights)."""
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
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


# --- optimizer and RNG state -----------------------------------------------------------------
def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{idx}.{name}"] = val
            else:
                scalars.setdefault(str(idx), {})[name] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    for idx, vals in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(vals)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if "python" in meta:
        v = meta["python"]
        random.setstate((v[0], tuple(v[1]), v[2]))
    if "numpy" in meta:
        n = meta["numpy"]
        np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


# --- whole checkpoints -------------------------------------------------------------------------
class Checkpointer:
    """Writes and finds checkpoints under ``<run_dir>/checkpoints``; only rank 0 writes."""

    def __init__(self, run_dir: str, keep: int = 2, is_writer: bool = True):
        self.dir = os.path.join(run_dir, "checkpoints")
        self.keep = keep
        self.is_writer = is_writer

    def save(
        self,
        step: int,
        models: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        state: dict,
        generators: dict[str, torch.Generator] | None = None,
    ) -> str | None:
        """Write checkpoint ``step-<step>`` atomically and point ``latest`` at it."""
        if not self.is_writer:
            return None
        os.makedirs(self.dir, exist_ok=True)
        name = f"step-{step:07d}"
        final = os.path.join(self.dir, name)
        tmp = tempfile.mkdtemp(dir=self.dir, prefix=".tmp-")
        try:
            for key, model in models.items():
                save_tensors(model.state_dict(), os.path.join(tmp, f"{key}.safetensors"))
            opt_meta = {}
            for key, opt in optimizers.items():
                tensors, meta = optimizer_to_flat(opt)
                save_tensors(tensors, os.path.join(tmp, f"optim-{key}.safetensors"))
                opt_meta[key] = meta
            rng_tensors, rng_meta = rng_state()
            for key, g in (generators or {}).items():
                rng_tensors[f"gen.{key}"] = g.get_state()
            save_tensors(rng_tensors, os.path.join(tmp, "rng.safetensors"))
            payload = {"step": step, "state": state, "optimizers": opt_meta, "rng": rng_meta}
            atomic_write_text(os.path.join(tmp, "state.json"), json.dumps(payload, indent=1))
            if os.path.exists(final):
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_text(os.path.join(self.dir, "latest"), name + "\n")
        self._prune(keep_name=name)
        return final

    def _prune(self, keep_name: str) -> None:
        names = sorted(n for n in os.listdir(self.dir) if n.startswith("step-"))
        for old in names[: max(0, len(names) - self.keep)]:
            if old != keep_name:
                shutil.rmtree(os.path.join(self.dir, old), ignore_errors=True)

    def latest(self) -> str | None:
        """Path of the newest complete checkpoint, or None."""
        pointer = os.path.join(self.dir, "latest")
        if not os.path.isfile(pointer):
            return None
        with open(pointer, encoding="utf-8") as f:
            name = f.read().strip()
        path = os.path.join(self.dir, name)
        if not os.path.isfile(os.path.join(path, "state.json")):
            raise CheckpointError(f"{pointer}: names {name!r}, which is missing or incomplete")
        return path

    @staticmethod
    def load(
        path: str,
        models: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer] | None = None,
        generators: dict[str, torch.Generator] | None = None,
        restore_rng_state: bool = True,
    ) -> dict:
        """Load weights (and optimizers / RNG when given) from a checkpoint; returns its state dict."""
        state_path = os.path.join(path, "state.json")
        try:
            with open(state_path, encoding="utf-8") as f:
                payload = json.load(f)
        except FileNotFoundError:
            raise CheckpointError(f"{state_path}: checkpoint state not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{state_path}: corrupt checkpoint state ({e})") from None
        for key, model in models.items():
            load_model_weights(model, os.path.join(path, f"{key}.safetensors"))
        for key, opt in (optimizers or {}).items():
            fpath = os.path.join(path, f"optim-{key}.safetensors")
            if key not in payload.get("optimizers", {}):
                raise CheckpointError(f"{state_path}: no optimizer state for {key!r}")
            try:
                optimizer_from_flat(opt, load_tensors(fpath), payload["optimizers"][key])
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{fpath}: optimizer state does not fit this model ({e})") from None
        if restore_rng_state:
            rng = load_tensors(os.path.join(path, "rng.safetensors"))
            restore_rng(rng, payload.get("rng", {}))
            for key, g in (generators or {}).items():
                if f"gen.{key}" in rng:
                    g.set_state(rng[f"gen.{key}"])
        payload["state"]["step"] = payload["step"]
        return payload["state"]
