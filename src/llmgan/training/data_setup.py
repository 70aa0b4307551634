"""Turn a run's data config into tokenizer + encoded train/valid/test corpora (and the oracle).

Used by the engine at the start of a run; ``RunData`` is what every phase reads. Text is read,
optionally cleaned, split (seeded) when valid/test files are not given, tokenized with a tokenizer
trained on the training split only (saved as ``tokenizer.json`` in the run), and encoded.
For oracle runs without a training file, samples are drawn from the oracle with the run's seed and
written to ``<run>/data/{train,test}.txt`` in SeqGAN's format. Oracle runs never validate on the test
set nor split held-out sets off the training samples (the oracle gives fresh ones for free, and the
training set stays the benchmark's 10,000): without ``data.valid`` a separate validation sample is drawn
from the oracle with its own seed stream into ``<run>/data/valid.txt`` (likewise ``test.txt`` when a
training file is given without ``data.test``), so early stopping never selects on test.
"""

from __future__ import annotations

import hashlib
import os

import torch

from llmgan.config import RunConfig
from llmgan.data import (
    RunData,
    Tokenizer,
    build_tokenizer,
    clean_texts,
    encode_corpus,
    fill_missing_splits,
    load_texts,
    load_tokenizer,
)
from llmgan.errors import ConfigError
from llmgan.fileio import atomic_write_text
from llmgan.models.base import Generator
from llmgan.training.conditional import prepare_conditional_data, run_tokenizer
from llmgan.training.logging import info


def load_oracle(spec: str) -> Generator:
    """``seqgan`` -> the exact SeqGAN oracle; otherwise a path to a random oracle's safetensors."""
    from llmgan.models.generators.oracle import load_oracle_file, load_seqgan_oracle

    if spec == "seqgan":
        return load_seqgan_oracle()
    return load_oracle_file(spec)


def write_ids(path: str, tokens: torch.Tensor) -> None:
    """SeqGAN's sample file format: one sequence per line, space-separated integer ids."""
    atomic_write_text(path, "\n".join(" ".join(map(str, row)) for row in tokens.tolist()) + "\n")


def _oracle_corpora(cfg: RunConfig, run_dir: str, oracle: Generator, tokenizer: Tokenizer):
    d = cfg.data
    data_dir = os.path.join(run_dir, "data")
    train_path, test_path = os.path.join(data_dir, "train.txt"), os.path.join(data_dir, "test.txt")
    if not (os.path.isfile(train_path) and os.path.isfile(test_path)):
        g = torch.Generator().manual_seed(cfg.seed)
        train = oracle.sample(d.oracle_samples, d.seq_len, generator=g).tokens
        test = oracle.sample(d.oracle_test_samples, d.seq_len, generator=g).tokens
        write_ids(train_path, train)
        write_ids(test_path, test)
        info(f"sampled {len(train)} training and {len(test)} held-out sequences from the oracle into {data_dir}")
    return train_path, test_path


def held_out_seed(seed: int, name: str) -> int:
    """The seed of a held-out oracle sample drawn apart from train/test: a 32-bit hash of (seed, name).

    Why a hash and not ``seed + offset``: the CPU generator (mt19937) keeps only the low 32 bits of a seed, so
    ``seed + 2**32`` would replay the training stream exactly. Never equal to the run's own seed.
    """
    h = int.from_bytes(hashlib.sha256(f"llmgan-oracle-{name}-{seed}".encode()).digest()[:4], "little")
    return h ^ 1 if h == seed % 2**32 else h


def _oracle_held_out(cfg: RunConfig, run_dir: str, oracle: Generator, name: str) -> str:
    """``<run>/data/<name>.txt``: held-out oracle samples from their own seed stream (written once, reused)."""
    d = cfg.data
    path = os.path.join(run_dir, "data", f"{name}.txt")
    if not os.path.isfile(path):
        n = d.oracle_valid_samples if name == "valid" and d.oracle_valid_samples is not None else d.oracle_test_samples
        g = torch.Generator().manual_seed(held_out_seed(cfg.seed, name))
        write_ids(path, oracle.sample(n, d.seq_len, generator=g).tokens)
        info(f"sampled {n} {name} sequences from the oracle into {path}")
    return path


def prepare_data(cfg: RunConfig, run_dir: str, resume: bool = False) -> RunData:
    d = cfg.data
    if d.prompt_field is not None or d.label_field is not None:  # prompt/response or class-conditional
        return prepare_conditional_data(cfg, run_dir, resume)
    oracle = load_oracle(d.oracle) if d.oracle else None
    tok_path = os.path.join(run_dir, "tokenizer.json")
    train_path, valid_path, test_path = d.train, d.valid, d.test
    if oracle is not None:
        if d.tokenizer != "ids":
            raise ConfigError(f"data.tokenizer: oracle runs use 'ids', got {d.tokenizer!r}")
        tokenizer: Tokenizer = build_tokenizer("ids", [], vocab_size=oracle.vocab_size)
        if train_path is None:
            train_path, held_out = _oracle_corpora(cfg, run_dir, oracle, tokenizer)
            test_path = test_path or held_out
        valid_path = valid_path or _oracle_held_out(cfg, run_dir, oracle, "valid")
        test_path = test_path or _oracle_held_out(cfg, run_dir, oracle, "test")
    train_texts = load_texts(train_path, field=d.field)
    valid_texts = load_texts(valid_path, field=d.field) if valid_path else None
    test_texts = load_texts(test_path, field=d.field) if test_path else None
    train_texts, valid_texts, test_texts = fill_missing_splits(train_texts, valid_texts, test_texts, d.split, cfg.seed)
    if d.normalize or d.dedup:
        train_texts, report = clean_texts(list(train_texts), normalize=d.normalize, dedup=d.dedup)
        info(f"cleaning: {report}")
    if oracle is None:
        init_tok = os.path.join(cfg.train.init_from, "tokenizer.json") if cfg.train.init_from else None
        if d.tokenizer == "hf":  # the hf:<model> generator's own tokenizer
            tokenizer = run_tokenizer(cfg, train_texts, tok_path, resume)
        elif resume and os.path.isfile(tok_path):
            tokenizer = load_tokenizer(tok_path)
        elif init_tok is not None:  # continue another run: its vocabulary, not a new one
            tokenizer = load_tokenizer(init_tok)
            if tokenizer.kind != d.tokenizer:  # else: "token 'reality' is not an integer" while encoding
                raise ConfigError(
                    f"train.init_from: {cfg.train.init_from} was trained with the {tokenizer.kind!r} tokenizer, "
                    f"this run's data.tokenizer is {d.tokenizer!r}; init_from needs the same tokenizer "
                    f"(set data.tokenizer={tokenizer.kind} and the same kind of data, or drop init_from)"
                )
        else:
            tokenizer = build_tokenizer(d.tokenizer, train_texts, vocab_size=d.vocab_size, min_freq=d.min_freq)
    tokenizer.save(tok_path)
    max_len = d.seq_len if oracle is not None else d.max_len

    def enc(texts, name):
        if not texts:
            return None
        corpus = encode_corpus(list(texts), tokenizer, max_len, overflow=d.overflow, source=name)
        if corpus.n_truncated or corpus.n_dropped:
            info(f"{name}: {corpus.n_truncated} sequences truncated, {corpus.n_dropped} dropped (max_len {max_len})")
        return corpus

    train = enc(train_texts, train_path)
    if train is None or len(train) == 0:
        raise ConfigError(f"data.train: {train_path} has no usable training samples")
    return RunData(
        tokenizer,
        train,
        enc(valid_texts, valid_path or "valid split"),
        enc(test_texts, test_path or "test split"),
        oracle,
        max_len,
    )
