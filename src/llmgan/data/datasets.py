"""Reading, splitting, encoding and batching text datasets.

Files are validated strictly: every problem raises :class:`~llmgan.errors.DataError` with one line naming
the file, the line number where relevant, and what was expected.

The readers return :class:`SourcedList` (a plain ``list`` that also remembers the file name and the
1-based line number of each item), so :func:`encode_corpus` and :func:`encode_pairs` can name the
offending line of the original file even though blank lines were skipped.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from llmgan.data.tokenizers import Tokenizer
from llmgan.errors import ConfigError, DataError

Overflow = Literal["truncate", "drop", "error"]
OVERFLOW_POLICIES: tuple[str, ...] = ("truncate", "drop", "error")
JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".ndjson")
_JSONL_SHAPES = '{"text": ...} or {"prompt": ..., "response": ...}'


class SourcedList(list):
    """A list of samples that remembers where they came from.

    Attributes:
        source: file name used in error messages.
        line_numbers: 1-based line number in ``source`` of each item (same length as the list).
    """

    def __init__(self, items: Iterable[Any] = (), source: str = "<data>", line_numbers: Sequence[int] = ()):
        super().__init__(items)
        self.source = source
        self.line_numbers = list(line_numbers) if line_numbers else list(range(1, len(self) + 1))


# ----------------------------------------------------------------------------------------------- reading


def _read_nonblank_lines(path: str | os.PathLike[str], kind: str = "UTF-8 text") -> list[tuple[int, str]]:
    """(line number, line without trailing whitespace) for every non-blank line; validates the file."""
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise DataError(f"{name}: file not found (expected {kind})")
    if not p.is_file():
        raise DataError(f"{name}: not a regular file (expected {kind})")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"{name}: cannot read ({e.strerror or type(e).__name__}) (expected {kind})") from None
    if not raw:
        raise DataError(f"{name}: file is empty (expected {kind}, one sample per line)")
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise DataError(
            f"{name}: line {line} contains NUL bytes, this looks like a binary file (expected {kind})"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{name}: line {line} is not valid UTF-8 (expected UTF-8 text)") from None
    if text.startswith("\ufeff"):  # UTF-8 byte order mark
        text = text[1:]
    out = []
    for i, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip()
        if line:
            out.append((i, line))
    if not out:
        raise DataError(f"{name}: file has only blank lines (expected {kind}, one sample per line)")
    return out


def read_lines(path: str | os.PathLike[str]) -> SourcedList:
    """Plain text, one sample per line: trailing newline/whitespace stripped, blank lines skipped.

    Returns a :class:`SourcedList` of str with the original line numbers. DataError for a missing,
    empty (or blank-only), binary (NUL bytes) or non-UTF-8 file.
    """
    rows = _read_nonblank_lines(path)
    return SourcedList((t for _, t in rows), source=str(path), line_numbers=[n for n, _ in rows])


def read_jsonl(path: str | os.PathLike[str], fields: Sequence[str] = ("text",)) -> SourcedList:
    """JSON Lines: one object per non-blank line, each with every name in ``fields`` as a string.

    Supported shapes: ``{"text": ...}``, ``{"prompt": ..., "response": ...}``, each with an optional
    ``"label"`` (string or integer). Returns a :class:`SourcedList` of the record dicts (all keys kept).
    """
    name = str(path)
    rows = _read_nonblank_lines(path, kind="JSON Lines text")
    records, numbers = [], []
    for n, line in rows:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{name}: line {n} is not valid JSON ({e.msg} at column {e.colno}) "
                f"(expected one JSON object per line, e.g. {_JSONL_SHAPES})"
            ) from None
        if not isinstance(rec, dict):
            raise DataError(
                f"{name}: line {n}: a JSON {type(rec).__name__} is not an object (expected {_JSONL_SHAPES})"
            )
        for f in fields:
            if f not in rec:
                raise DataError(f'{name}: line {n}: field "{f}" missing (expected {_JSONL_SHAPES})')
            if not isinstance(rec[f], str):
                raise DataError(
                    f'{name}: line {n}: field "{f}" is a {type(rec[f]).__name__} (expected a string)'
                )
        if "label" in rec and (not isinstance(rec["label"], (str, int)) or isinstance(rec["label"], bool)):
            raise DataError(f'{name}: line {n}: field "label" is a {type(rec["label"]).__name__} '
                            "(expected a string or an integer)")
        records.append(rec)
        numbers.append(n)
    return SourcedList(records, source=name, line_numbers=numbers)


def load_texts(path: str | os.PathLike[str], field: str = "text") -> SourcedList:
    """Texts of a file, chosen by extension: ``.jsonl``/``.json``/``.ndjson`` -> JSON Lines (``field`` of
    each record), anything else -> plain text (:func:`read_lines`). Returns a :class:`SourcedList` of str."""
    if Path(path).suffix.lower() in JSONL_SUFFIXES:
        recs = read_jsonl(path, fields=(field,))
        return SourcedList((r[field] for r in recs), source=recs.source, line_numbers=recs.line_numbers)
    return read_lines(path)


# ---------------------------------------------------------------------------------------------- splitting


def split_texts(
    texts: Sequence[Any], fractions: Sequence[float] = (0.9, 0.05, 0.05), seed: int = 0
) -> tuple[list[Any], ...]:
    """Seeded, deterministic random split into ``len(fractions)`` parts (fractions must sum to 1).

    Part sizes are ``round(cumulative fraction * N)`` differences, so they add up to N. Within each part
    the items keep their original order. The same (texts, fractions, seed) always gives the same split.
    """
    if not fractions or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions {tuple(fractions)} must be non-negative and sum to 1")
    n = len(texts)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    parts, start, cum = [], 0, 0.0
    for f in fractions:
        cum += f
        end = min(n, round(cum * n))
        parts.append([texts[i] for i in sorted(order[start:end])])
        start = end
    parts[-1].extend(texts[i] for i in sorted(order[start:]))  # float rounding leftovers, if any
    return tuple(parts)


def fill_missing_splits(
    train: Sequence[Any], valid: Sequence[Any] | None, test: Sequence[Any] | None, split: Sequence[float], seed: int
) -> tuple[Sequence[Any], Sequence[Any], Sequence[Any]]:
    """A run's (train, valid, test): the held-out parts it was not given are carved out of ``train`` by
    :func:`split_texts` with ``data.split`` (normalised) and the run's seed, so every reader that needs
    them back (training, evaluate, sweep, report) reproduces exactly the same rows."""
    if valid is not None and test is not None:
        return train, valid, test
    total = sum(split)
    tr, v, t = split_texts(list(train), [x / total for x in split], seed=seed)
    return tr, (valid if valid is not None else v), (test if test is not None else t)


# ----------------------------------------------------------------------------------------------- encoding


@dataclass
class EncodedCorpus:
    """Token ids of a corpus, right-padded.

    Attributes:
        tokens: LongTensor (N, T), padded with ``pad_id`` (0 when the tokenizer has no pad; every
            sequence then has length T). T is the longest kept sequence (EOS included), <= max_len.
        lengths: LongTensor (N,), number of real tokens per row (EOS included).
        n_truncated: sequences cut to max_len (kept, without EOS).
        n_dropped: sequences left out because they were over max_len (overflow="drop").
        pad_id: the tokenizer's pad id, or None.
        line_numbers: 1-based source line of each kept row.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    n_truncated: int = 0
    n_dropped: int = 0
    pad_id: int | None = None
    line_numbers: list[int] | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def mask(self) -> torch.Tensor:
        """Bool (N, T): True at real tokens, False at padding."""
        return _right_mask(self.lengths, self.tokens.shape[1])


@dataclass
class EncodedPairs:
    """Prompt/response pairs for conditional generation.

    Attributes:
        prompts: LongTensor (N, P), LEFT-padded with pad_id (the prompt ends at column P-1).
        prompt_lengths: LongTensor (N,).
        responses: LongTensor (N, R), right-padded with pad_id, EOS appended (unless truncated).
        response_lengths: LongTensor (N,), EOS included.
        labels: LongTensor (N,) of label ids, or None when the records have no "label".
        label_map: label value -> label id (sorted labels numbered from 0), or None.
        n_truncated: pairs where the prompt or the response was cut.
        n_dropped: pairs left out (overflow="drop").
        line_numbers: 1-based source line of each kept pair.
    """

    prompts: torch.Tensor
    prompt_lengths: torch.Tensor
    responses: torch.Tensor
    response_lengths: torch.Tensor
    labels: torch.Tensor | None = None
    label_map: dict[Any, int] | None = None
    n_truncated: int = 0
    n_dropped: int = 0
    pad_id: int | None = None
    line_numbers: list[int] | None = None

    def __len__(self) -> int:
        return int(self.prompts.shape[0])

    def prompt_mask(self) -> torch.Tensor:
        """Bool (N, P): True at real prompt tokens (the right-most ``prompt_lengths`` columns)."""
        p = self.prompts.shape[1]
        return torch.arange(p).unsqueeze(0) >= (p - self.prompt_lengths).unsqueeze(1)

    def response_mask(self) -> torch.Tensor:
        """Bool (N, R): True at real response tokens."""
        return _right_mask(self.response_lengths, self.responses.shape[1])


def _right_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)


def _check_overflow(overflow: str) -> None:
    if overflow not in OVERFLOW_POLICIES:
        raise ConfigError(
            f"unknown overflow policy {overflow!r} (expected one of {', '.join(OVERFLOW_POLICIES)})"
        )


def _origin(
    texts: Sequence[Any], source: str | None, line_numbers: Sequence[int] | None
) -> tuple[str, list[int]]:
    if source is None:
        source = getattr(texts, "source", "<data>")
    if line_numbers is None:
        line_numbers = getattr(texts, "line_numbers", None) or range(1, len(texts) + 1)
    line_numbers = list(line_numbers)
    if len(line_numbers) != len(texts):
        raise ConfigError(f"{len(line_numbers)} line numbers given for {len(texts)} texts")
    return source, line_numbers


def _encode_one(tokenizer: Tokenizer, text: str, source: str, line: int) -> list[int]:
    try:
        return tokenizer.encode(text)
    except DataError as e:  # e.g. the ids tokenizer's parse errors: add where it happened
        raise DataError(f"{source}: line {line}: {e}") from None


def _pad_right(seqs: Sequence[Sequence[int]], width: int, pad: int) -> torch.Tensor:
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def _pad_left(seqs: Sequence[Sequence[int]], width: int, pad: int) -> torch.Tensor:
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            out[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
    return out


def encode_corpus(
    texts: Sequence[str],
    tokenizer: Tokenizer,
    max_len: int,
    overflow: Overflow = "truncate",
    add_eos: bool = True,
    source: str | None = None,
    line_numbers: Sequence[int] | None = None,
) -> EncodedCorpus:
    """Encode texts into a right-padded (N, T) LongTensor.

    EOS is appended when ``add_eos`` and the tokenizer has one; it counts toward ``max_len``. A sequence
    longer than ``max_len`` (EOS included) is handled by ``overflow``:

    * ``"truncate"``: keep its first ``max_len`` tokens and NO EOS (the sentence did not end there, so the
      model is not taught to stop mid-sentence); counted in ``n_truncated``.
    * ``"drop"``: leave it out; counted in ``n_dropped``.
    * ``"error"``: DataError naming ``source`` and the line.

    ``source``/``line_numbers`` name where the texts came from for error messages; by default they are
    taken from a :class:`SourcedList` (as returned by :func:`read_lines`), else "<data>" and 1..N.
    A tokenizer without pad (``ids``) needs every kept sequence to have the same length; otherwise
    DataError names the first line whose length differs from the first sequence's.
    """
    _check_overflow(overflow)
    if max_len < 1:
        raise ConfigError(f"max_len must be >= 1, got {max_len}")
    source, numbers = _origin(texts, source, line_numbers)
    if len(texts) == 0:
        raise DataError(f"{source}: no texts to encode (expected at least one sample)")
    eos = tokenizer.eos_id if add_eos else None
    seqs: list[list[int]] = []
    kept_lines: list[int] = []
    n_trunc = n_drop = 0
    for text, line in zip(texts, numbers):
        ids = _encode_one(tokenizer, text, source, line)
        if eos is not None:
            ids.append(eos)
        if len(ids) > max_len:
            if overflow == "error":
                raise DataError(
                    f"{source}: line {line} has {len(ids)} tokens{' incl. EOS' if eos is not None else ''} "
                    f"(expected at most max_len={max_len}; use overflow='truncate' or 'drop')"
                )
            if overflow == "drop":
                n_drop += 1
                continue
            ids = ids[:max_len]
            n_trunc += 1
        seqs.append(ids)
        kept_lines.append(line)
    if not seqs:
        raise DataError(
            f"{source}: all {n_drop} samples are over max_len={max_len} and were dropped "
            "(expected some samples to fit; raise max_len or use overflow='truncate')"
        )
    width = max(len(s) for s in seqs)
    if tokenizer.pad_id is None:
        first = len(seqs[0])
        for s, line in zip(seqs, kept_lines):
            if len(s) != first:
                raise DataError(
                    f"{source}: line {line} has {len(s)} tokens but line {kept_lines[0]} has {first} "
                    f"(expected equal-length sequences: tokenizer kind {tokenizer.kind!r} has no padding)"
                )
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    return EncodedCorpus(
        tokens=_pad_right(seqs, width, pad),
        lengths=torch.tensor([len(s) for s in seqs], dtype=torch.long),
        n_truncated=n_trunc,
        n_dropped=n_drop,
        pad_id=tokenizer.pad_id,
        line_numbers=kept_lines,
    )


def _label_key(v: Any) -> tuple[int, Any]:
    return (1, v) if isinstance(v, str) else (0, v)


def encode_pairs(
    records: Sequence[Mapping[str, Any]],
    tokenizer: Tokenizer,
    max_prompt_len: int,
    max_response_len: int,
    overflow: Overflow = "truncate",
    add_eos: bool = True,
    label_map: Mapping[Any, int] | None = None,
    source: str | None = None,
    line_numbers: Sequence[int] | None = None,
) -> EncodedPairs:
    """Encode ``{"prompt", "response"[, "label"]}`` records for conditional generation.

    Prompts (no BOS/EOS) are LEFT-padded to (N, P) so every prompt ends in the last column, ready for
    continuation; an over-long prompt keeps its LAST ``max_prompt_len`` tokens (the part next to the
    response). Responses get EOS (when ``add_eos`` and the tokenizer has one) and are right-padded to
    (N, R); an over-long response keeps its first ``max_response_len`` tokens and no EOS. ``overflow``
    works as in :func:`encode_corpus` and applies to both sides (a pair counts once). P and R are the
    longest kept lengths (at least 1).

    Labels: if the records have ``"label"`` (all or none must), ``labels`` holds their ids under
    ``label_map`` (built from the sorted distinct labels when not given; pass the training map when
    encoding a test split — an unknown label is then a DataError).
    """
    _check_overflow(overflow)
    if max_prompt_len < 1 or max_response_len < 1:
        raise ConfigError(
            f"max_prompt_len and max_response_len must be >= 1, got {max_prompt_len}, {max_response_len}"
        )
    if tokenizer.pad_id is None:
        raise ConfigError(
            f"tokenizer kind {tokenizer.kind!r} has no pad token "
            "(expected word, char or bpe for prompt/response pairs)"
        )
    source, numbers = _origin(records, source, line_numbers)
    if len(records) == 0:
        raise DataError(f"{source}: no records to encode (expected at least one prompt/response pair)")
    has_label = "label" in records[0]
    eos = tokenizer.eos_id if add_eos else None
    prompts: list[list[int]] = []
    responses: list[list[int]] = []
    raw_labels: list[Any] = []
    kept_lines: list[int] = []
    n_trunc = n_drop = 0
    for rec, line in zip(records, numbers):
        for f in ("prompt", "response"):
            if not isinstance(rec.get(f), str):
                what = "missing" if f not in rec else f"is a {type(rec[f]).__name__}"
                raise DataError(
                    f'{source}: line {line}: field "{f}" {what} (expected {{"prompt": ..., "response": ...}})'
                )
        if ("label" in rec) != has_label:
            raise DataError(
                f'{source}: line {line}: field "label" is {"present" if "label" in rec else "missing"} '
                f"but {'missing' if has_label else 'present'} on line {numbers[0]} "
                "(expected all records or none to have one)"
            )
        p = _encode_one(tokenizer, rec["prompt"], source, line)
        r = _encode_one(tokenizer, rec["response"], source, line)
        if eos is not None:
            r.append(eos)
        if len(p) > max_prompt_len or len(r) > max_response_len:
            if overflow == "error":
                side, n, lim = ("prompt", len(p), max_prompt_len) if len(p) > max_prompt_len else (
                    "response", len(r), max_response_len)
                raise DataError(
                    f"{source}: line {line}: {side} has {n} tokens (expected at most {lim}; "
                    "use overflow='truncate' or 'drop')"
                )
            if overflow == "drop":
                n_drop += 1
                continue
            p, r = p[len(p) - min(len(p), max_prompt_len):], r[:max_response_len]
            n_trunc += 1
        prompts.append(p)
        responses.append(r)
        kept_lines.append(line)
        if has_label:
            raw_labels.append(rec["label"])
    if not prompts:
        raise DataError(f"{source}: all {n_drop} pairs were over the length limits and dropped "
                        "(expected some pairs to fit; raise the limits or use overflow='truncate')")
    labels = None
    lmap: dict[Any, int] | None = None
    if has_label:
        lmap = dict(label_map) if label_map is not None else {
            v: i for i, v in enumerate(sorted(set(raw_labels), key=_label_key))
        }
        ids = []
        for v, line in zip(raw_labels, kept_lines):
            if v not in lmap:
                known = sorted(lmap, key=_label_key)
                raise DataError(f"{source}: line {line}: unknown label {v!r} (expected one of {known})")
            ids.append(lmap[v])
        labels = torch.tensor(ids, dtype=torch.long)
    pad = tokenizer.pad_id
    pw = max(1, max(len(p) for p in prompts))
    rw = max(1, max(len(r) for r in responses))
    return EncodedPairs(
        prompts=_pad_left(prompts, pw, pad),
        prompt_lengths=torch.tensor([len(p) for p in prompts], dtype=torch.long),
        responses=_pad_right(responses, rw, pad),
        response_lengths=torch.tensor([len(r) for r in responses], dtype=torch.long),
        labels=labels,
        label_map=lmap,
        n_truncated=n_trunc,
        n_dropped=n_drop,
        pad_id=pad,
        line_numbers=kept_lines,
    )


# ----------------------------------------------------------------------------------------------- batching


def iterate_batches(
    corpus_or_tensor: EncodedCorpus | torch.Tensor,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(tokens (B, T_b), lengths (B,))`` batches.

    Rows are taken in order, or in ``torch.randperm(N, generator=generator)`` order when ``shuffle``
    (pass a seeded generator for reproducible epochs). Each batch is trimmed to its longest length
    T_b, so padding is minimal. A bare (N, T) tensor counts as N full-length rows (no trimming).
    With ``drop_last`` the final batch is skipped when it has fewer than ``batch_size`` rows.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(corpus_or_tensor, EncodedCorpus):
        tokens, lengths = corpus_or_tensor.tokens, corpus_or_tensor.lengths
    elif isinstance(corpus_or_tensor, torch.Tensor):
        if corpus_or_tensor.dim() != 2:
            raise ConfigError(f"expected a (N, T) token tensor, got shape {tuple(corpus_or_tensor.shape)}")
        tokens = corpus_or_tensor
        lengths = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)
    else:
        raise ConfigError(f"expected an EncodedCorpus or a tensor, got {type(corpus_or_tensor).__name__}")
    n = tokens.shape[0]
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if drop_last and idx.numel() < batch_size:
            break
        lens = lengths[idx]
        width = int(lens.max()) if idx.numel() else 0
        yield tokens[idx, :width], lens


@dataclass
class RunData:
    """What every phase of a run reads: the tokenizer, the encoded corpora and (oracle runs) the oracle.

    Built by ``llmgan.training.data_setup.prepare_data`` from the run's config.
    """

    tokenizer: Tokenizer
    train: EncodedCorpus
    valid: EncodedCorpus | None
    test: EncodedCorpus | None
    oracle: torch.nn.Module | None  # the oracle Generator of oracle runs (llmgan.models.generators.oracle)
    max_len: int  # sample length used for generation and evaluation
    # conditional runs (llmgan.data.conditional): left-padded prompts (N, P) aligned with the rows above
    train_prompts: torch.Tensor | None = None
    valid_prompts: torch.Tensor | None = None
    test_prompts: torch.Tensor | None = None
