"""Provenance: where a generated artefact came from, as a sidecar JSON next to it.

``llmgan generate --out FILE`` writes ``FILE.provenance.json`` with the run, the checkpoint and the
SHA-256 of its generator weights, the sampling parameters and seed, the watermark key id (never the
key), the filter config's hash and what it dropped, the time and the llmgan version. The server's
responses carry the same fields (:func:`provenance`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from llmgan.fileio import file_sha256

SIDECAR_SUFFIX = ".provenance.json"


def checkpoint_hash(checkpoint_dir: str) -> str:
    """SHA-256 of the checkpoint's generator weights (what decides the samples)."""
    return file_sha256(os.path.join(checkpoint_dir, "generator.safetensors"))


def provenance(run: Any, sampling: dict[str, Any], seed: int | None, watermark: Any = None,
               output_filter: Any = None, filter_counts: dict[str, Any] | None = None,
               checkpoint_sha256: str | None = None) -> dict[str, Any]:
    """The provenance record of samples drawn from ``run`` (an :class:`llmgan.run.LoadedRun`).

    ``checkpoint_sha256``: the weights' hash when the caller already has it (the server hashes once at
    start-up instead of per response)."""
    from llmgan import __version__

    return {
        "format": "llmgan-provenance", "version": 1,
        "run_id": run.cfg.name if getattr(run.cfg, "name", None) else os.path.basename(os.path.abspath(run.run_dir)),
        "run_dir": os.path.abspath(run.run_dir),
        "checkpoint": os.path.basename(os.path.normpath(run.checkpoint)),
        "checkpoint_sha256": checkpoint_sha256 or checkpoint_hash(run.checkpoint),
        "sampling": sampling,
        "seed": seed,
        "watermark_key_id": getattr(watermark, "key_id", None),
        "watermark": None if watermark is None else {"gamma": watermark.gamma, "delta": watermark.delta,
                                                    "context": watermark.context},
        "filter_config_sha256": getattr(output_filter, "config_hash", None),
        "filter": filter_counts,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "llmgan_version": __version__,
    }


def write_sidecar(out_path: str, record: dict[str, Any]) -> str:
    from llmgan.training.checkpoint import atomic_write_text

    path = out_path + SIDECAR_SUFFIX
    record = {**record, "file": os.path.basename(out_path), "file_sha256": file_sha256(out_path)}
    atomic_write_text(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path
