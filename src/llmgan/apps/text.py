"""Summarization and dialogue from the user's own JSONL (docs/llm.md has the format).

Accepted records (one JSON object per line):

* summarization: ``{"document": str, "summary": str}``
* dialogue: ``{"context": str | [str, ...], "response": str}`` (a list is joined with `` <sep> ``)
* either: ``{"prompt": str, "response": str}`` as is

:func:`convert` turns them into ``{"prompt", "response"}``; ``llmgan data make summarization|dialogue
--input FILE --out DIR`` writes the train/valid/test split. The metric is ROUGE-L F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmgan.data import read_jsonl
from llmgan.errors import DataError

TURN_SEP = " <sep> "


def convert(path: str, kind: str) -> list[dict[str, str]]:
    """Records of ``path`` as ``{"prompt", "response"}`` (DataError naming the line on a bad record)."""
    recs = read_jsonl(path, fields=())
    out = []
    for rec, n in zip(recs, recs.line_numbers):
        if isinstance(rec.get("prompt"), str) and isinstance(rec.get("response"), str):
            out.append({"prompt": rec["prompt"], "response": rec["response"]})
        elif kind == "summarization" and isinstance(rec.get("document"), str) and isinstance(rec.get("summary"), str):
            out.append({"prompt": rec["document"], "response": rec["summary"]})
        elif kind == "dialogue" and isinstance(rec.get("response"), str) and _is_context(rec.get("context")):
            ctx = rec["context"]
            out.append({"prompt": ctx if isinstance(ctx, str) else TURN_SEP.join(ctx), "response": rec["response"]})
        else:
            shape = ('{"document": ..., "summary": ...}' if kind == "summarization"
                     else '{"context": str or [turns], "response": ...}')
            raise DataError(f"{path}: line {n}: expected {shape} or {{\"prompt\": ..., \"response\": ...}}")
    return out


def _is_context(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and bool(v) and all(isinstance(t, str) for t in v))


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F1 of whitespace tokens (longest common subsequence)."""
    h, r = hypothesis.split(), reference.split()
    if not h or not r:
        return 0.0
    prev = [0] * (len(r) + 1)
    for a in h:
        cur = [0]
        for j, b in enumerate(r):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(h), lcs / len(r)
    return 2 * p * rec / (p + rec)


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    vals = [rouge_l(h, r) for h, r in zip(hypotheses, references)]
    return {"rouge_l": sum(vals) / max(len(vals), 1)}
