"""Metrics logging: one JSON object per line in ``metrics.jsonl`` and TensorBoard events beside it.
Only rank 0 writes; other ranks' calls are no-ops."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

from llmgan.fileio import read_jsonl_records
from llmgan.training.distributed import is_main


class MetricsLogger:
    def __init__(self, run_dir: str, tensorboard: bool = True):
        self.enabled = is_main()
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self._tb = None
        if self.enabled:
            os.makedirs(run_dir, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(log_dir=os.path.join(run_dir, "tb"))
                except Exception:  # tensorboard missing or broken: JSONL alone is the record
                    self._tb = None

    def log(self, step: int, phase: str, **metrics: Any) -> None:
        if not self.enabled:
            return
        clean = {}
        for k, v in metrics.items():
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = str(v)
            clean[k] = v
        record = {"step": step, "phase": phase, "time": round(time.time(), 3), **clean}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{phase}/{k}", v, step)

    def offset(self) -> int | None:
        """Bytes of ``metrics.jsonl`` written so far (None on ranks that do not write). A checkpoint and a
        sub-step's start record it: lines after it belong to work that a resume or a rollback redoes."""
        if not self.enabled:
            return None
        self._file.flush()
        return os.fstat(self._file.fileno()).st_size

    def truncate(self, offset: int | None) -> None:
        """Drop the lines written after ``offset`` (work being redone would otherwise log them twice).
        TensorBoard events cannot be taken back; viewers show the redone step's value last."""
        if not self.enabled or offset is None:
            return
        self._file.flush()
        if os.fstat(self._file.fileno()).st_size > offset:
            self._file.truncate(offset)  # the file is opened for appending: the next line goes at the new end

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


def info(msg: str) -> None:
    """Print a status line on rank 0 only."""
    if is_main():
        print(msg, file=sys.stderr, flush=True)


def read_metrics(run_dir: str) -> list[dict]:
    return read_jsonl_records(os.path.join(run_dir, "metrics.jsonl"))
