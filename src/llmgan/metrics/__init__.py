"""Text metrics: BLEU / Self-BLEU (exactly nltk's, vectorized), distinct-n, FED and optional MAUVE.

All are pure functions over tokenized or raw text; the only llmgan import is ``llmgan.errors``.
FED's embedder (sentence-transformers + torch) is imported lazily, on first use.
"""

from llmgan.metrics.bleu import (
    TEXT_TOKENIZERS,
    bleu,
    bleu_scores,
    self_bleu,
    self_bleu_scores,
    tokenize_lines,
    tokenize_text,
)
from llmgan.metrics.diversity import distinct, distinct_n
from llmgan.metrics.fed import SentenceEmbedder, fed, frechet_distance
from llmgan.metrics.mauve import mauve_available, mauve_score

__all__ = [
    "TEXT_TOKENIZERS",
    "SentenceEmbedder",
    "bleu",
    "bleu_scores",
    "distinct",
    "distinct_n",
    "fed",
    "frechet_distance",
    "mauve_available",
    "mauve_score",
    "self_bleu",
    "self_bleu_scores",
    "tokenize_lines",
    "tokenize_text",
]
