"""Checkpoints: safetensors for tensors, JSON for everything else, written crash-safely.

Layout of one checkpoint (a directory):

    checkpoints/step-0000123/
        generator.safetensors       model weights (and discriminator.safetensors, ...)
        optim-generator.safetensors optimizer tensors (Adam moments), keyed "<param index>.<name>"
        rng.safetensors             torch / CUDA / sampler RNG states
        state.json                  step counters, phase, RNG states, optimizer hyper-parameters (written last)
    checkpoints/step-0000123.1/     a later save of the same step (D pre-training re-saves one step)
    checkpoints/latest              a text file naming the newest complete checkpoint
    checkpoints/best                (early-stopping runs) the checkpoint of the best validation NLL;
                                    never pruned, and what generate/evaluate load (llmgan.run)

A checkpoint is written into a hidden temporary directory, every file fsynced, and renamed to a
name no other checkpoint has; ``latest`` is then replaced atomically, and only after that are old
checkpoints pruned. A run killed at any moment therefore leaves ``latest`` naming a complete
checkpoint, the previous one or the new one. No pickle anywhere.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import tempfile
from typing import Any

import numpy as np
import torch

from llmgan.errors import CheckpointError
from llmgan.fileio import atomic_write_text, file_sha256, fsync_dir  # atomic_write_text: re-exported
from llmgan.tensor_files import load_model_weights, load_tensors, save_tensors  # noqa: F401 - re-exported
from llmgan.training.logging import info


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
def verify_checkpoint_file(ckpt_dir: str, name: str) -> None:
    """Compare ``name``'s SHA-256 with the one state.json recorded at save: a bit flip in a tensor
    would otherwise load silently as wrong weights. Checkpoints from before checksums pass."""
    try:
        with open(os.path.join(ckpt_dir, "state.json"), encoding="utf-8") as f:
            expected = json.load(f).get("files", {}).get(name)
    except (OSError, ValueError):
        return  # Checkpointer.load reports a missing or corrupt state.json itself
    path = os.path.join(ckpt_dir, name)
    if expected is not None and os.path.isfile(path) and file_sha256(path) != expected:
        load_tensors(path)  # a file safetensors cannot even parse gets its own message (truncated, ...)
        raise CheckpointError(
            f"{path}: corrupt (its SHA-256 differs from the one recorded when it was saved); "
            "use an older checkpoint of the run or retrain"
        )



_NAME = re.compile(r"^step-(\d+)(?:\.(\d+))?$")


def checkpoint_key(name: str) -> tuple[int, int] | None:
    """(step, save number) of a checkpoint directory name, None for anything else.

    ``step-0000123`` is the first save of step 123, ``step-0000123.1`` the next save of the same step
    (D pre-training re-saves one global step), so sorting by this key orders saves in time.
    """
    m = _NAME.match(name)
    return None if m is None else (int(m.group(1)), int(m.group(2) or 0))


def _is_leftover(name: str) -> bool:
    """Temp entries a killed save leaves behind: a checkpoint or a pruned one (``.tmp-*``), a pointer
    (``.latest.*.tmp``, from atomic_write_text)."""
    return name.startswith(".tmp-") or (name.startswith(".latest.") and name.endswith(".tmp"))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class Checkpointer:
    """Writes and finds checkpoints under ``<run_dir>/checkpoints``; only rank 0 writes.

    A save never touches the checkpoint ``latest`` names before ``latest`` has moved: the new one
    goes to a new directory name (a re-save of the same step gets ``step-<step>.<n>``), every file
    and both directories are fsynced, ``latest`` is replaced atomically (fsynced temp file,
    ``os.replace``, fsync of the folder), and only then are old ones pruned. A process killed at
    any point leaves ``latest`` naming a complete checkpoint (the old or the new one); the temp
    directories it leaves behind are removed by the next save.
    """

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
        best: bool = False,
    ) -> str | None:
        """Write a checkpoint of ``step`` under a new directory and point ``latest`` at it (and ``best``,
        when ``best``: the pointer moves after ``latest``, so a crash in between keeps the old best)."""
        if not self.is_writer:
            return None
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, exist_ok=True)
            fsync_dir(os.path.dirname(self.dir))  # the run directory now names checkpoints/
        self._clean_leftovers()
        name = self._new_name(step)
        final = os.path.join(self.dir, name)
        tmp = tempfile.mkdtemp(dir=self.dir, prefix=".tmp-")
        try:
            for key, model in models.items():
                save_tensors(model.state_dict(), os.path.join(tmp, f"{key}.safetensors"), sync_dir=False)
            opt_meta = {}
            for key, opt in optimizers.items():
                tensors, meta = optimizer_to_flat(opt)
                save_tensors(tensors, os.path.join(tmp, f"optim-{key}.safetensors"), sync_dir=False)
                opt_meta[key] = meta
            rng_tensors, rng_meta = rng_state()
            for key, g in (generators or {}).items():
                rng_tensors[f"gen.{key}"] = g.get_state()
            save_tensors(rng_tensors, os.path.join(tmp, "rng.safetensors"), sync_dir=False)
            # checksums of every file (read back from the page cache), verified on load
            files = {n: file_sha256(os.path.join(tmp, n)) for n in sorted(os.listdir(tmp))
                     if n.endswith(".safetensors")}
            payload = {"step": step, "state": state, "optimizers": opt_meta, "rng": rng_meta, "files": files}
            # state.json last: a directory holding it holds every other file of the checkpoint
            atomic_write_text(os.path.join(tmp, "state.json"), json.dumps(payload, indent=1), sync_dir=False)
            fsync_dir(tmp)
            os.rename(tmp, final)  # a fresh name: nothing is removed or replaced
            fsync_dir(self.dir)
        except OSError as e:  # disk full, quota, read-only: say what survived
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                kept = self.latest()
            except CheckpointError:
                kept = None
            why = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
            raise CheckpointError(
                f"{self.dir}: could not write the checkpoint of step {step} ({why}); "
                + (f"the previous checkpoint {kept} is intact" if kept else "no earlier checkpoint exists")
                + ", free space and continue with --resume"
            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_text(os.path.join(self.dir, "latest"), name + "\n")  # the commit point
        if best:
            atomic_write_text(os.path.join(self.dir, "best"), name + "\n")
        self._prune(keep_name=name)
        return final

    def _names(self) -> list[str]:
        """Checkpoint directory names, oldest save first."""
        names = [n for n in os.listdir(self.dir) if checkpoint_key(n) is not None]
        return sorted(names, key=lambda n: checkpoint_key(n) or (0, 0))

    def _new_name(self, step: int) -> str:
        taken = [k[1] for k in map(checkpoint_key, os.listdir(self.dir)) if k is not None and k[0] == step]
        return f"step-{step:07d}" if not taken else f"step-{step:07d}.{max(taken) + 1}"

    def _clean_leftovers(self) -> None:
        for n in os.listdir(self.dir):
            if _is_leftover(n):
                _remove(os.path.join(self.dir, n))

    def _prune(self, keep_name: str) -> None:
        """Keep ``keep_name`` (what ``latest`` names) and the ``keep - 1`` saves before it.

        Saves sorted after it are dropped too: they are left by a run killed between writing a
        checkpoint and moving ``latest``, which a resume from ``latest`` has rolled back.
        A pruned checkpoint is first renamed to ``.tmp-*`` (atomic), so that a crash during the
        deletion leaves a leftover for the next save to clean, never a half-deleted ``step-*``.
        """
        names = self._names()
        if keep_name not in names:
            return
        i = names.index(keep_name)
        kept = set(names[max(0, i - (self.keep - 1)) : i + 1])
        best = self._pointer("best")
        if best is not None:  # the best checkpoint outlives keep_checkpoints (it may be the oldest)
            kept.add(best)
        for old in names:
            if old in kept:
                continue
            doomed = os.path.join(self.dir, f".tmp-pruned-{old}")
            try:
                os.rename(os.path.join(self.dir, old), doomed)
            except OSError:
                continue  # a leftover of the same name (next save cleans it), or already gone
            shutil.rmtree(doomed, ignore_errors=True)

    def _pointer(self, name: str) -> str | None:
        try:
            with open(os.path.join(self.dir, name), encoding="utf-8") as f:
                target = f.read().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return target if checkpoint_key(target) is not None else None

    def best(self) -> str | None:
        """Path of the best-validation checkpoint (early-stopping runs), None when there is none."""
        name = self._pointer("best")
        if name is None or not self._complete(name):
            return None
        return os.path.join(self.dir, name)

    def latest(self) -> str | None:
        """Path of the checkpoint ``latest`` names, or None when no save has completed.

        Should ``latest`` name a missing or incomplete directory (a file system that lost the
        checkpoint, a hand-edited pointer), the newest complete checkpoint is used with a one-line
        warning; with none left, a CheckpointError.
        """
        pointer = os.path.join(self.dir, "latest")
        if not os.path.isfile(pointer):
            return None
        try:
            with open(pointer, encoding="utf-8") as f:
                name = f.read().strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        if checkpoint_key(name) is not None and self._complete(name):
            return os.path.join(self.dir, name)
        complete = [n for n in self._names() if self._complete(n)]
        if not complete:
            raise CheckpointError(
                f"{pointer}: names {name!r}, which is missing or incomplete, and no other checkpoint is complete"
            )
        info(f"warning: {pointer} names {name!r}, which is missing or incomplete; using {complete[-1]}, "
             "the newest complete checkpoint")
        return os.path.join(self.dir, complete[-1])

    def _complete(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.dir, name, "state.json"))

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
        for name in payload.get("files", {}):
            verify_checkpoint_file(path, name)
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
