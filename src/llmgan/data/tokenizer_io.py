"""Reading a saved tokenizer of any kind (word, char, bpe, ids, or a Hugging Face model's, stored by name).

Its own module because it is the one place that knows every tokenizer class, the Hugging Face one
included (which builds on ``llmgan.data.tokenizers``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from llmgan.data.hf_tokenizer import HFTokenizer
from llmgan.data.tokenizers import _CLASSES, FORMAT_NAME, KINDS, Tokenizer
from llmgan.errors import DataError


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Read a tokenizer written by :meth:`Tokenizer.save`; DataError for a missing or malformed file."""
    expected = "(expected a tokenizer JSON file written by llmgan)"
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found {expected}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}) {expected}") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno} is not valid JSON ({e.msg}) {expected}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise DataError(f"{path}: not an llmgan tokenizer file {expected}")
    kind = doc.get("kind")
    if kind == "hf":  # a Hugging Face model's tokenizer, stored by name (llmgan.data.hf_tokenizer)
        return HFTokenizer.from_dict(doc)
    if kind not in _CLASSES:
        raise DataError(f"{path}: unknown tokenizer kind {kind!r} (expected one of {', '.join(KINDS)})")
    try:
        return _CLASSES[kind].from_dict(doc)
    except Exception as e:  # any failure here means a corrupt file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: corrupt {kind} tokenizer ({msg}) {expected}") from None
