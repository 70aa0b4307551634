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
from llmgan.metrics.fed import SentenceEmbedder, fed, fed_and_se, frechet_distance
from llmgan.metrics.mauve import mauve_available, mauve_score
from llmgan.metrics.uncertainty import auroc_se, bootstrap_se, distinct_se, mean_and_se

__all__ = [
    "TEXT_TOKENIZERS",
    "SentenceEmbedder",
    "auroc_se",
    "bootstrap_se",
    "bleu",
    "bleu_scores",
    "distinct",
    "distinct_n",
    "distinct_se",
    "fed",
    "fed_and_se",
    "frechet_distance",
    "mauve_available",
    "mauve_score",
    "mean_and_se",
    "self_bleu",
    "self_bleu_scores",
    "tokenize_lines",
    "tokenize_text",
]
