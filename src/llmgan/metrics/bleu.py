"""BLEU and Self-BLEU exactly as nltk computes them, vectorized with numpy.

The convention behind every published COCO / EMNLP-news table (Texygen, RelGAN, TextGAN-PyTorch):
for BLEU-n each hypothesis is scored with nltk's ``sentence_bleu`` against the *whole* reference set,
with uniform weights ``(1/n,) * n`` and ``SmoothingFunction().method1``, and the scores are averaged
over hypotheses. Self-BLEU scores each sentence against all the *other* sentences of the same set.

Calling nltk in a loop is O(H * R * L) and takes hours for 10k x 10k sentences. Everything nltk does
per hypothesis only depends on two reference statistics that can be precomputed once:

* the modified precision clips each hypothesis n-gram count by the maximum count of that n-gram
  in any *single* reference, so a table "n-gram -> max count over references" turns clipping
  into a lookup;
* the brevity penalty needs the reference length closest to the hypothesis length (ties -> the
  shorter one), which is a search in the sorted set of reference lengths.

For Self-BLEU the "max over all the others" is answered in O(1) by keeping, per n-gram, the largest
count, the index of the sentence holding it and the second-largest count (which equals the largest
when another sentence ties). Identical copies of a sentence therefore still count as references for
each other; only the sentence's own index is excluded, as nltk would do with ``texts[:i] + texts[i+1:]``.

Nothing is cached between calls (Texygen's Self-BLEU cached its references after the first call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from llmgan.errors import LLMGanError

__all__ = ["TEXT_TOKENIZERS", "bleu", "bleu_scores", "self_bleu", "self_bleu_scores", "tokenize_lines", "tokenize_text"]

# nltk's SmoothingFunction().method1 default: a zero-match precision becomes epsilon / denominator.
_EPSILON = 0.1


# How a line of text becomes BLEU tokens. One definition for `llmgan evaluate`, `sweep`, `report` and
# `metrics` (docs/configuration.md, eval.bleu_tokenizer):
#   nltk        nltk.word_tokenize(line, preserve_line=True): the Treebank word tokenizer Texygen and
#               TextGAN-PyTorch score with ("night." -> "night", "."). preserve_line skips the punkt
#               sentence splitter, which needs a data download; on one-sentence lines (COCO captions,
#               EMNLP news) the two agree. A literal "<unk>" is kept as one token.
#   whitespace  str.split()
#   char        one token per character, whitespace left out (layout, not a token: the poems corpus
#               separates every character by a space)
TEXT_TOKENIZERS: tuple[str, ...] = ("nltk", "whitespace", "char")
_UNK = "<unk>"


def _nltk_tokens(text: str) -> list[str]:
    try:
        from nltk.tokenize import word_tokenize
    except ImportError:
        raise LLMGanError("the nltk BLEU tokenizer needs nltk (pip install nltk), "
                          "or choose --tokenizer / eval.bleu_tokenizer whitespace") from None
    toks = word_tokenize(text, preserve_line=True)
    if _UNK not in text:
        return toks
    # Treebank splits "<unk>" into "<", "unk", ">": glue it back, so a generated <unk> is one
    # (non-matching) token, as it is for the whitespace tokenizer.
    out: list[str] = []
    for t in toks:
        if t == ">" and len(out) >= 2 and out[-1] == "unk" and out[-2] == "<":
            out[-2:] = [_UNK]
        else:
            out.append(t)
    return out


def tokenize_text(text: str, tokenizer: str = "nltk") -> list[str]:
    """BLEU tokens of one line under a :data:`TEXT_TOKENIZERS` name (see the comment above it)."""
    if tokenizer == "nltk":
        return _nltk_tokens(text)
    if tokenizer == "whitespace":
        return text.split()
    if tokenizer == "char":
        return [c for c in text if not c.isspace()]
    raise LLMGanError(f"BLEU tokenizer {tokenizer!r}: expected one of {', '.join(TEXT_TOKENIZERS)}")


def tokenize_lines(
    lines: Iterable[str], tokenizer: str | Callable[[str], list[str]] | None = None
) -> list[list[str]]:
    """Tokenize text lines for :func:`bleu` / :func:`self_bleu`.

    Args:
        lines: one sentence per item (trailing newlines are fine).
        tokenizer: a :data:`TEXT_TOKENIZERS` name, or ``str -> list[str]``; default is whitespace
            splitting (``str.split()``). The commands default to ``"nltk"`` (Texygen's tokenization).
    """
    if tokenizer is None:
        return [line.split() for line in lines]
    if isinstance(tokenizer, str):
        return [tokenize_text(line, tokenizer) for line in lines]
    return [list(tokenizer(line)) for line in lines]


def _orders(max_n: int | Sequence[int]) -> list[int]:
    """Normalize ``max_n``: an int n means the single score BLEU-n; a sequence means several."""
    orders = [max_n] if isinstance(max_n, int | np.integer) else list(max_n)
    if not orders:
        raise LLMGanError("max_n: expected an n-gram order >= 1 or a non-empty list of them, got []")
    for n in orders:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise LLMGanError(f"max_n: expected n-gram orders that are integers >= 1, got {n!r}")
    return [int(n) for n in orders]


def _check_sentences(name: str, sentences: Sequence[Sequence[str]]) -> None:
    """Catch the common mistake of passing raw strings instead of token lists."""
    for i, s in enumerate(sentences):
        if isinstance(s, str):
            raise LLMGanError(
                f"{name}[{i}]: expected a list of tokens, got a string (use tokenize_lines() first)"
            )


class _Corpus:
    """All sentences encoded once: token ids, per-order n-gram ids and (sentence, n-gram, count) triples."""

    def __init__(self, sentences: Sequence[Sequence[str]], max_order: int) -> None:
        vocab: dict[str, int] = {}
        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
        # A dict lookup per token is the only Python-level loop; everything after is numpy.
        flat = [vocab.setdefault(t, len(vocab)) for s in sentences for t in s]
        self.n_sentences = len(sentences)
        self.lengths = lengths
        tok = np.asarray(flat, dtype=np.int64)
        sid = np.repeat(np.arange(len(sentences), dtype=np.int64), lengths)
        # Tokens left in the sentence from each position (inclusive): an n-gram starts at i iff >= n.
        starts = np.cumsum(lengths) - lengths
        remaining = lengths[sid] - (np.arange(tok.size, dtype=np.int64) - starts[sid])
        self.triples: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}
        gram = tok  # ids of the n-grams starting at each position (-1 where none), n = 1
        n_ids = max(len(vocab), 1)
        n_tok = n_ids
        for n in range(1, max_order + 1):
            if n > 1:
                idx = np.flatnonzero(remaining >= n)
                # An n-gram is its (n-1)-gram prefix plus one token; ids stay < #positions, so the
                # combined key < T * V fits easily in int64. np.unique compacts the ids again.
                key = gram[idx] * n_tok + tok[idx + n - 1]
                uniq, inv = np.unique(key, return_inverse=True)
                gram = np.full(tok.size, -1, dtype=np.int64)
                gram[idx] = inv.reshape(-1)
                n_ids = max(uniq.size, 1)
            idx = np.flatnonzero(remaining >= n)
            pair = sid[idx] * n_ids + gram[idx]
            upair, counts = np.unique(pair, return_counts=True)
            self.triples[n] = (upair // n_ids, upair % n_ids, counts.astype(np.int64), n_ids)


def _closest_lengths(hyp_lens: np.ndarray, ref_lens: np.ndarray) -> np.ndarray:
    """nltk's ``closest_ref_length`` for many hypotheses: nearest length, ties -> the shorter one."""
    u = np.unique(ref_lens)
    pos = np.searchsorted(u, hyp_lens)  # u[pos-1] < h <= u[pos]
    lo = u[np.clip(pos - 1, 0, u.size - 1)]
    hi = u[np.clip(pos, 0, u.size - 1)]
    lo = np.where(pos > 0, lo, hi)
    hi = np.where(pos < u.size, hi, lo)
    # On a tie (equal distance) nltk's key (abs diff, length) picks the shorter length.
    return np.where(hyp_lens - lo <= hi - hyp_lens, lo, hi)


def _self_closest_lengths(lengths: np.ndarray) -> np.ndarray:
    """Closest length among all the OTHER sentences (multiset aware)."""
    u, counts = np.unique(lengths, return_counts=True)
    k = np.searchsorted(u, lengths)
    # If another sentence has the same length, distance 0 wins; otherwise take the nearest distinct
    # length below / above (both exist in u because u only loses this sentence's own length).
    lo = np.where(k > 0, u[np.maximum(k - 1, 0)], -1)
    hi = np.where(k + 1 < u.size, u[np.minimum(k + 1, u.size - 1)], -1)
    has_lo, has_hi = k > 0, k + 1 < u.size
    pick_lo = has_lo & (~has_hi | (lengths - lo <= hi - lengths))
    other = np.where(pick_lo, lo, hi)
    return np.where(counts[k] >= 2, lengths, other)


def _scores(matches: dict[int, np.ndarray], hyp_lens: np.ndarray, closest: np.ndarray,
            orders: list[int], prefix: str) -> dict[str, np.ndarray]:
    """Per-sentence smoothed BLEU from clipped match counts, replicating nltk's corpus_bleu path."""
    h = hyp_lens.astype(np.float64)
    r = closest.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # brevity_penalty: 1 if h > r; 0 if h == 0; else exp(1 - r/h).
        bp = np.where(h > r, 1.0, np.where(h == 0, 0.0, np.exp(1.0 - r / np.maximum(h, 1.0))))
    log_p: dict[int, np.ndarray] = {}
    for k in range(1, max(orders) + 1):
        # modified_precision's denominator is max(1, #hypothesis k-grams), also for too-short hyps.
        den = np.maximum(hyp_lens - k + 1, 1).astype(np.float64)
        m = matches[k]
        # method1: a zero numerator becomes epsilon (so too-short hypotheses get 0.1 / 1).
        log_p[k] = np.log(np.where(m > 0, m, _EPSILON) / den)
    out: dict[str, np.ndarray] = {}
    for n in orders:
        w = 1.0 / n  # nltk's weights are (1/n,) * n; it sums w_i * log(p_i)
        s = np.zeros_like(h)
        for k in range(1, n + 1):
            s = s + w * log_p[k]
        score = bp * np.exp(s)
        # corpus_bleu returns 0 outright when there is no unigram match (also for empty hypotheses).
        out[f"{prefix}_{n}"] = np.where(matches[1] > 0, score, 0.0)
    return out


def bleu_scores(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]],
                max_n: int | Sequence[int] = (2, 3, 4, 5)) -> dict[str, np.ndarray]:
    """Per-hypothesis BLEU-n arrays (``{"bleu_2": array(H), ...}``); :func:`bleu` averages them."""
    orders = _orders(max_n)
    _check_sentences("hypotheses", hypotheses)
    _check_sentences("references", references)
    if len(hypotheses) == 0:
        raise LLMGanError("bleu: hypotheses is empty; expected at least one tokenized sentence")
    if len(references) == 0:
        raise LLMGanError("bleu: references is empty; expected at least one tokenized sentence")
    n_hyp = len(hypotheses)
    corpus = _Corpus(list(hypotheses) + list(references), max(orders))
    matches: dict[int, np.ndarray] = {}
    for k, (s, g, c, n_ids) in corpus.triples.items():
        is_ref = s >= n_hyp
        # Max count of each k-gram in any single reference (not summed over references).
        max_ref = np.zeros(n_ids, dtype=np.int64)
        np.maximum.at(max_ref, g[is_ref], c[is_ref])
        hs, hg, hc = s[~is_ref], g[~is_ref], c[~is_ref]
        clipped = np.minimum(hc, max_ref[hg])
        matches[k] = np.bincount(hs, weights=clipped, minlength=n_hyp)
    hyp_lens = corpus.lengths[:n_hyp]
    closest = _closest_lengths(hyp_lens, corpus.lengths[n_hyp:])
    return _scores(matches, hyp_lens, closest, orders, "bleu")


def bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]],
         max_n: int | Sequence[int] = (2, 3, 4, 5)) -> dict[str, float]:
    """Average sentence-level BLEU of each hypothesis against the whole reference set.

    Equals ``mean(nltk.sentence_bleu(references, h, weights=(1/n,)*n,
    smoothing_function=SmoothingFunction().method1) for h in hypotheses)`` to floating-point
    precision, for every n in ``max_n``.

    Args:
        hypotheses: generated sentences, each a list of tokens (see :func:`tokenize_lines`).
        references: reference sentences, each a list of tokens; all of them are references for
            every hypothesis.
        max_n: one n-gram order n (gives BLEU-n) or several.

    Returns:
        ``{"bleu_2": float, "bleu_3": float, ...}`` for the requested orders.
    """
    return {k: float(np.mean(v)) for k, v in bleu_scores(hypotheses, references, max_n).items()}


def self_bleu_scores(texts: Sequence[Sequence[str]],
                     max_n: int | Sequence[int] = (2, 3, 4, 5)) -> dict[str, np.ndarray]:
    """Per-sentence Self-BLEU arrays (``{"self_bleu_2": array(N), ...}``); :func:`self_bleu` averages."""
    orders = _orders(max_n)
    _check_sentences("texts", texts)
    if len(texts) < 2:
        raise LLMGanError(f"self_bleu: expected at least 2 tokenized sentences, got {len(texts)}")
    n_txt = len(texts)
    corpus = _Corpus(texts, max(orders))
    matches: dict[int, np.ndarray] = {}
    for k, (s, g, c, n_ids) in corpus.triples.items():
        # Sort by (n-gram, count descending): the first of each group is the max holder, the
        # second the runner-up (possibly an identical copy with the same count).
        order = np.lexsort((-c, g))
        gs, cs, ss = g[order], c[order], s[order]
        first = np.ones(gs.size, dtype=bool)
        first[1:] = gs[1:] != gs[:-1]
        top1 = np.zeros(n_ids, dtype=np.int64)
        holder = np.full(n_ids, -1, dtype=np.int64)
        top2 = np.zeros(n_ids, dtype=np.int64)
        top1[gs[first]] = cs[first]
        holder[gs[first]] = ss[first]
        second = np.zeros(gs.size, dtype=bool)
        second[1:] = first[:-1] & ~first[1:]
        top2[gs[second]] = cs[second]
        max_other = np.where(holder[g] == s, top2[g], top1[g])
        matches[k] = np.bincount(s, weights=np.minimum(c, max_other), minlength=n_txt)
    closest = _self_closest_lengths(corpus.lengths)
    return _scores(matches, corpus.lengths, closest, orders, "self_bleu")


def self_bleu(texts: Sequence[Sequence[str]], max_n: int | Sequence[int] = (2, 3, 4, 5)) -> dict[str, float]:
    """Average BLEU of each sentence against all the other sentences of the same set.

    Equals ``mean(nltk.sentence_bleu(texts[:i] + texts[i+1:], texts[i], ...))`` with uniform
    weights and method1 smoothing. Only the sentence's own index is excluded: duplicates of it
    elsewhere in the set are references (so a set where every sentence appears twice scores 1.0).
    Nothing is cached between calls.

    Returns:
        ``{"self_bleu_2": float, ...}`` for the requested orders.
    """
    return {k: float(np.mean(v)) for k, v in self_bleu_scores(texts, max_n).items()}

