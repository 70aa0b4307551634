"""Data quality: Unicode normalisation, whitespace collapsing, exact de-duplication."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

from llmgan.errors import ConfigError

UNICODE_FORMS: tuple[str, ...] = ("NFC", "NFD", "NFKC", "NFKD")


def normalize_text(s: str, unicode_form: str | None = "NFKC", collapse_whitespace: bool = True) -> str:
    """Normalise one text.

    ``unicode_form`` (NFC/NFD/NFKC/NFKD, or None to skip) is applied first. Note NFKC also folds
    compatibility characters, e.g. full-width ``，`` -> ``,``; use "NFC" to keep them. Control characters
    (Unicode category Cc other than whitespace) are removed. With ``collapse_whitespace`` every run of
    whitespace becomes one space and the ends are stripped.
    """
    if unicode_form is not None:
        if unicode_form not in UNICODE_FORMS:
            raise ConfigError(
                f"unknown unicode_form {unicode_form!r} (expected one of {', '.join(UNICODE_FORMS)})"
            )
        s = unicodedata.normalize(unicode_form, s)
    if any(unicodedata.category(c) == "Cc" and not c.isspace() for c in s):
        s = "".join(c for c in s if c.isspace() or unicodedata.category(c) != "Cc")
    if collapse_whitespace:
        s = " ".join(s.split())
    return s


def dedup(texts: Iterable[str], key: Callable[[str], str] | None = normalize_text) -> tuple[list[str], int]:
    """Drop exact duplicates, order-preserving: the first occurrence of each text is kept as given.

    Two texts are duplicates when ``key(a) == key(b)`` (default: :func:`normalize_text`; None: the raw
    strings). Returns ``(kept, n_removed)``.
    """
    seen: set[str] = set()
    kept: list[str] = []
    n_removed = 0
    for t in texts:
        k = key(t) if key is not None else t
        if k in seen:
            n_removed += 1
            continue
        seen.add(k)
        kept.append(t)
    return kept, n_removed


_dedup = dedup


def clean_texts(
    texts: Iterable[str], normalize: bool = True, dedup: bool = True, unicode_form: str | None = "NFKC"
) -> tuple[list[str], dict[str, Any]]:
    """Normalise (optional), drop texts that became empty, and de-duplicate (optional).

    Returns ``(texts, report)``; the report has ``input``, ``normalized_changed`` (texts altered by
    normalisation), ``empty_removed``, ``duplicates_removed`` and ``output`` counts.
    """
    texts = list(texts)
    report: dict[str, Any] = {"input": len(texts), "normalized_changed": 0, "empty_removed": 0,
                              "duplicates_removed": 0}
    if normalize:
        normed = [normalize_text(t, unicode_form=unicode_form) for t in texts]
        report["normalized_changed"] = sum(a != b for a, b in zip(texts, normed))
        texts = normed
    non_empty = [t for t in texts if t.strip()]
    report["empty_removed"] = len(texts) - len(non_empty)
    texts = non_empty
    if dedup:
        # Already normalised when `normalize`: compare as-is; otherwise compare the raw strings.
        texts, report["duplicates_removed"] = _dedup(texts, key=None)
    report["output"] = len(texts)
    return texts, report
