"""Translation between two small synthetic languages with a known mapping.

Source language ("src"): sentences ``[ADJ] NOUN VERB [ADJ] NOUN [ADV]`` (subject-verb-object,
adjectives before nouns). Target language ("tgt"): every word translated by a fixed word-for-word
dictionary, then reordered: adjectives FOLLOW their noun and the verb goes to the end
(subject-object-verb), the adverb stays last. :func:`translate` is the exact reference, so BLEU and
exact match of a model's output are meaningful and the data can be regenerated at any size.

The vocabularies and the dictionary are fixed (seed 0); ``seed`` only chooses the sentences.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

_CONS, _VOWELS = "bdfgklmnprstvz", "aeiou"


def _words(rng: random.Random, n: int, syllables: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        w = "".join(rng.choice(_CONS) + rng.choice(_VOWELS) for _ in range(syllables))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def _lexicon() -> tuple[dict[str, list[str]], dict[str, str]]:
    """Source words by part of speech, and the source -> target dictionary (fixed)."""
    rng = random.Random(0)
    taken: set[str] = set()
    sizes = {"noun": 16, "verb": 8, "adj": 8, "adv": 4}
    src = {pos: _words(rng, n, 2, taken) for pos, n in sizes.items()}
    # target words are 3 syllables (disjoint from the source words), so the languages never overlap
    dictionary = {}
    for pos in sizes:
        for w, t in zip(src[pos], _words(rng, sizes[pos], 3, taken)):
            dictionary[w] = t
    return src, dictionary


SOURCE_WORDS, DICTIONARY = _lexicon()
_POS = {w: pos for pos, ws in SOURCE_WORDS.items() for w in ws}


def random_sentence(rng: random.Random) -> str:
    """One source sentence: [ADJ] NOUN VERB [ADJ] NOUN [ADV]."""
    w = SOURCE_WORDS

    def np_() -> list[str]:
        return ([rng.choice(w["adj"])] if rng.random() < 0.5 else []) + [rng.choice(w["noun"])]

    words = np_() + [rng.choice(w["verb"])] + np_()
    if rng.random() < 0.3:
        words.append(rng.choice(w["adv"]))
    return " ".join(words)


def translate(sentence: str) -> str:
    """The reference translation: dictionary lookup, adjectives after nouns, verb last (before the adverb)."""
    words = sentence.split()
    phrases: list[list[str]] = []  # noun phrases in order
    verb, adv, pending_adj = None, None, []
    for w in words:
        pos = _POS.get(w)
        if pos == "adj":
            pending_adj.append(w)
        elif pos == "noun":
            phrases.append([w] + pending_adj)
            pending_adj = []
        elif pos == "verb":
            verb = w
        elif pos == "adv":
            adv = w
        else:
            raise ValueError(f"{w!r} is not a word of the source language")
    out = [DICTIONARY[w] for p in phrases for w in p]
    out += [DICTIONARY[verb]] if verb else []
    out += [DICTIONARY[adv]] if adv else []
    return " ".join(out)


def make_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = random_sentence(rng)
        out.append({"prompt": s, "response": translate(s)})
    return out


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` (Papineni et al.: clipped n-gram precisions pooled over the corpus, geometric
    mean, brevity penalty), one reference per hypothesis, whitespace tokens. 0 if some order has no match."""
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for h, r in zip(hypotheses, references):
        hw, rw = h.split(), r.split()
        hyp_len, ref_len = hyp_len + len(hw), ref_len + len(rw)
        for n in range(1, max_n + 1):
            hc = Counter(tuple(hw[i : i + n]) for i in range(len(hw) - n + 1))
            rc = Counter(tuple(rw[i : i + n]) for i in range(len(rw) - n + 1))
            matches[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            totals[n - 1] += max(len(hw) - n + 1, 0)
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(log_p)


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU-4 and exact match (whitespace-normalised) of model translations against references."""
    exact = sum(" ".join(h.split()) == " ".join(r.split()) for h, r in zip(hypotheses, references))
    return {"bleu4": corpus_bleu(hypotheses, references), "exact_match": exact / max(len(references), 1)}
