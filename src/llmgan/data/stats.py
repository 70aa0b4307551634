"""Corpus statistics for ``llmgan data stats``: sizes, lengths, histogram, duplicates, train/test overlap."""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from llmgan.data.datasets import _encode_one, load_texts
from llmgan.data.tokenizers import Tokenizer, build_tokenizer
from llmgan.errors import ConfigError

STATS_KINDS: tuple[str, ...] = ("word", "char", "bpe", "ids")


def _histogram(lengths: Sequence[int], max_buckets: int = 12) -> list[dict[str, int]]:
    """Equal-width buckets ``{"lo", "hi" (inclusive), "count"}`` covering min..max length."""
    lo, hi = min(lengths), max(lengths)
    width = max(1, math.ceil((hi - lo + 1) / max_buckets))
    counts = Counter((n - lo) // width for n in lengths)
    n_buckets = (hi - lo) // width + 1
    return [{"lo": lo + b * width, "hi": lo + (b + 1) * width - 1, "count": counts.get(b, 0)}
            for b in range(n_buckets)]


def _tokenizer_for(kind: str, texts: Sequence[str]) -> Tokenizer:
    if kind not in STATS_KINDS:
        raise ConfigError(f"unknown tokenizer kind {kind!r} (expected one of {', '.join(STATS_KINDS)})")
    if kind == "ids":
        # Vocabulary size unknown here: accept any non-negative id (encode still rejects non-integers).
        top = 0
        for t in texts:
            for tok in t.split():
                if tok.lstrip("-").isdigit():
                    top = max(top, int(tok))
        return build_tokenizer("ids", [], vocab_size=top + 1)
    return build_tokenizer(kind, texts)


def corpus_stats(
    path: str | os.PathLike[str],
    tokenizer_kind: str = "word",
    test_path: str | os.PathLike[str] | None = None,
    max_len: int | None = None,
) -> dict[str, Any]:
    """Statistics of a corpus file (plain text or JSONL ``"text"``), JSON-serialisable.

    Keys: ``path``, ``tokenizer``, ``lines``, ``tokens``, ``vocab_size`` (distinct token types seen),
    ``length`` (``min``/``mean``/``median``/``max`` tokens per line, no EOS), ``histogram`` (list of
    ``{"lo", "hi", "count"}``), ``duplicate_lines`` (lines that repeat an earlier line exactly),
    ``duplicate_fraction``. With ``max_len``: ``over_max_len`` = lines longer than ``max_len`` tokens once
    EOS is added (what :func:`encode_corpus` would truncate). With ``test_path``: ``test`` = ``{"path",
    "lines", "tokens", "unk_fraction" (test tokens unknown to a tokenizer built on train; word/char only),
    "overlap_lines" (test lines that appear verbatim in train), "overlap_fraction"}``.
    The tokenizer (word/char/bpe) is built on the training file.
    """
    texts = load_texts(path)
    tok = _tokenizer_for(tokenizer_kind, texts)
    encoded = [_encode_one(tok, t, texts.source, n) for t, n in zip(texts, texts.line_numbers)]
    lengths = [len(e) for e in encoded]
    types = set()
    for e in encoded:
        types.update(e)
    n = len(texts)
    n_dup = n - len(set(texts))
    out: dict[str, Any] = {
        "path": str(path),
        "tokenizer": tokenizer_kind,
        "lines": n,
        "tokens": sum(lengths),
        "vocab_size": len(types),
        "length": {
            "min": min(lengths),
            "mean": round(sum(lengths) / n, 3),
            "median": statistics.median(lengths),
            "max": max(lengths),
        },
        "histogram": _histogram(lengths),
        "duplicate_lines": n_dup,
        "duplicate_fraction": round(n_dup / n, 6),
    }
    if max_len is not None:
        extra = 1 if tok.eos_id is not None else 0
        over = sum(1 for n_tok in lengths if n_tok + extra > max_len)
        out["max_len"] = max_len
        out["over_max_len"] = over
        out["over_max_len_fraction"] = round(over / n, 6)
    if test_path is not None:
        test = load_texts(test_path)
        train_set = set(texts)
        overlap = sum(1 for t in test if t in train_set)
        test_info: dict[str, Any] = {"path": str(test_path), "lines": len(test)}
        if tokenizer_kind in ("word", "char"):
            test_ids = [i for t in test for i in tok.encode(t)]
            test_info["tokens"] = len(test_ids)
            n_unk = sum(i == tok.unk_id for i in test_ids)
            test_info["unk_fraction"] = round(n_unk / max(1, len(test_ids)), 6)
        test_info["overlap_lines"] = overlap
        test_info["overlap_fraction"] = round(overlap / len(test), 6)
        out["test"] = test_info
    return out


def format_stats(stats: dict[str, Any], bar_width: int = 40) -> str:
    """A readable multi-line table of :func:`corpus_stats` output, with an ASCII length histogram."""
    ln = stats["length"]
    rows: list[tuple[str, str]] = [
        ("file", stats["path"]),
        ("tokenizer", stats["tokenizer"]),
        ("lines", f"{stats['lines']:,}"),
        ("tokens", f"{stats['tokens']:,}"),
        ("vocabulary", f"{stats['vocab_size']:,} distinct tokens"),
        ("length min/mean/median/max", f"{ln['min']} / {ln['mean']:.2f} / {ln['median']:g} / {ln['max']}"),
        ("duplicate lines", f"{stats['duplicate_lines']:,} ({100 * stats['duplicate_fraction']:.2f}%)"),
    ]
    if "over_max_len" in stats:
        rows.append((f"over max_len={stats['max_len']}",
                     f"{stats['over_max_len']:,} ({100 * stats['over_max_len_fraction']:.2f}%)"))
    test = stats.get("test")
    if test:
        rows.append(("test file", test["path"]))
        rows.append(("test lines", f"{test['lines']:,}"))
        if "unk_fraction" in test:
            rows.append(("test unknown tokens", f"{100 * test['unk_fraction']:.2f}% of {test['tokens']:,}"))
        overlap = f"{test['overlap_lines']:,} ({100 * test['overlap_fraction']:.2f}%)"
        rows.append(("test lines also in train", overlap))
    key_w = max(len(k) for k, _ in rows)
    lines = [f"{k:<{key_w}}  {v}" for k, v in rows]
    hist = stats["histogram"]
    if hist:
        lines.append("")
        lines.append("length histogram (tokens per line)")
        top = max(b["count"] for b in hist) or 1
        lab_w = max(len(f"{b['lo']}-{b['hi']}") for b in hist)
        cnt_w = max(len(f"{b['count']:,}") for b in hist)
        for b in hist:
            label = f"{b['lo']}-{b['hi']}" if b["hi"] != b["lo"] else f"{b['lo']}"
            bar = "#" * round(bar_width * b["count"] / top)
            if b["count"] and not bar:
                bar = "."
            lines.append(f"  {label:>{lab_w}} | {bar:<{bar_width}} | {b['count']:>{cnt_w},}")
    return "\n".join(lines)
