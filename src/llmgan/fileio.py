"""Atomic, durable file writes shared by every module that saves something (tokenizers, configs, checkpoints).

Atomic: a reader sees the old file or the complete new one (temp file in the same folder, then
``os.replace``). Durable: the data is fsynced before the rename and the folder after it, so that a
power cut cannot leave the new name pointing at empty or partial data (ext4/xfs may reorder a rename
before the data it names reaches the disk unless told otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written file's data to the disk (for files written by a library that takes a path)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to the disk.

    A no-op where folders cannot be opened (Windows), which commits renames without being asked.
    """
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str, sync_dir: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a fsynced temp file in the same folder and ``os.replace``.

    A reader never sees a half-written file: either the old file or the complete new one.
    ``sync_dir=False`` skips the folder fsync for a caller that fsyncs the folder once itself after
    several files (a checkpoint).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(path.parent)


def file_sha256(path: str) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks (checkpoint checksums, provenance sidecars)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_jsonl_records(path: str) -> list[dict]:
    """Every JSON object of an append-only JSONL log (metrics, results); [] when the file is missing.

    A last line cut by a crash mid-write is skipped rather than failing the reader.
    """
    if not os.path.isfile(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return out
