"""Data pipeline: tokenizers, dataset reading/encoding/batching, cleaning and corpus statistics."""

from llmgan.data.cleaning import clean_texts, dedup, normalize_text
from llmgan.data.datasets import (
    EncodedCorpus,
    EncodedPairs,
    RunData,
    SourcedList,
    encode_corpus,
    encode_pairs,
    fill_missing_splits,
    iterate_batches,
    load_texts,
    read_jsonl,
    read_lines,
    split_texts,
)
from llmgan.data.stats import corpus_stats, format_stats
from llmgan.data.tokenizer_io import load_tokenizer
from llmgan.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    BPETokenizer,
    CharTokenizer,
    IdsTokenizer,
    Tokenizer,
    WordTokenizer,
    build_tokenizer,
)

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "BPETokenizer",
    "CharTokenizer",
    "EncodedCorpus",
    "EncodedPairs",
    "RunData",
    "IdsTokenizer",
    "SourcedList",
    "Tokenizer",
    "WordTokenizer",
    "build_tokenizer",
    "clean_texts",
    "corpus_stats",
    "dedup",
    "encode_corpus",
    "encode_pairs",
    "format_stats",
    "iterate_batches",
    "load_texts",
    "load_tokenizer",
    "normalize_text",
    "read_jsonl",
    "read_lines",
    "fill_missing_splits",
    "split_texts",
]
