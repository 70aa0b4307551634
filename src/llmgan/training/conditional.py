"""Conditional runs in the engine: their data (tokenizer, encoded prompt/response pairs) and their
evaluation (NLL of responses given prompts, responses sampled for prompts)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch import Tensor

from llmgan.config import RunConfig
from llmgan.data import EncodedCorpus, Tokenizer, build_tokenizer, encode_pairs, fill_missing_splits, load_tokenizer
from llmgan.data.conditional import format_prompt, load_records, trim_prompt
from llmgan.data.datasets import RunData
from llmgan.errors import ConfigError
from llmgan.models.base import Generator
from llmgan.training.logging import info


def run_tokenizer(cfg: RunConfig, texts: Sequence[str], tok_path: str, resume: bool) -> Tokenizer:
    """The run's tokenizer: the hf generator's own, the saved one on resume, else trained on ``texts``."""
    d = cfg.data
    if d.tokenizer == "hf":
        from llmgan.data.hf_tokenizer import HFTokenizer

        return HFTokenizer(cfg.generator.name, chat_template=d.chat_template)
    if resume and os.path.isfile(tok_path):
        return load_tokenizer(tok_path)
    return build_tokenizer(d.tokenizer, texts, vocab_size=d.vocab_size, min_freq=d.min_freq)


def prepare_conditional_data(cfg: RunConfig, run_dir: str, resume: bool = False):
    """Like :func:`llmgan.training.data_setup.prepare_data` for prompt/response or labelled data."""
    d = cfg.data
    if d.oracle:
        raise ConfigError("data.prompt_field/label_field: conditional runs read JSONL files, not an oracle")
    train = load_records(d.train, d)
    valid = load_records(d.valid, d) if d.valid else None
    test = load_records(d.test, d) if d.test else None
    train, valid, test = fill_missing_splits(train, valid, test, d.split, cfg.seed)
    if d.normalize or d.dedup:
        info("data.normalize/dedup are not applied to prompt/response pairs")
    tok_path = os.path.join(run_dir, "tokenizer.json")
    tokenizer = run_tokenizer(cfg, [t for r in train for t in (r["prompt"], r["response"])], tok_path, resume)
    tokenizer.save(tok_path)

    label_map: dict | None = None

    def enc(recs, name):
        nonlocal label_map
        if not recs:
            return None, None
        recs = [{**r, "prompt": format_prompt(tokenizer, r["prompt"], d)} for r in recs]
        pairs = encode_pairs(recs, tokenizer, d.max_prompt_len, d.max_len, overflow=d.overflow,
                             label_map=label_map, source=name)
        if pairs.label_map is not None and label_map is None:
            label_map = pairs.label_map
        if pairs.n_truncated or pairs.n_dropped:
            info(f"{name}: {pairs.n_truncated} pairs truncated, {pairs.n_dropped} dropped")
        corpus = EncodedCorpus(pairs.responses, pairs.response_lengths, pairs.n_truncated, pairs.n_dropped,
                               pairs.pad_id, pairs.line_numbers)
        return corpus, pairs.prompts

    tr, tr_p = enc(train, d.train)
    if tr is None:
        raise ConfigError(f"data.train: {d.train} has no usable training pairs")
    va, va_p = enc(valid, d.valid or "valid split")
    te, te_p = enc(test, d.test or "test split")
    return RunData(tokenizer, tr, va, te, None, d.max_len, train_prompts=tr_p, valid_prompts=va_p, test_prompts=te_p)


@torch.no_grad()
def conditional_nll(generator: Generator, corpus: EncodedCorpus, prompts: Tensor, batch_size: int = 256,
                    autocast: Callable | None = None) -> float:
    """Mean per-token NLL of the responses given their prompts (EOS included, padding and prompts not)."""
    was = generator.training
    generator.eval()
    total, count = 0.0, 0
    ctx = autocast or nullcontext
    dev = generator.device
    for start in range(0, len(corpus), batch_size):
        lengths = corpus.lengths[start : start + batch_size]
        tokens = corpus.tokens[start : start + batch_size, : int(lengths.max())].to(dev)
        prompt = trim_prompt(prompts[start : start + batch_size], generator.pad_id).to(dev)
        mask = (torch.arange(tokens.size(1))[None, :] < lengths[:, None]).to(dev)
        with ctx():
            lp = generator.log_probs(tokens, prompt=prompt)
        total += float(-(lp.float() * mask).sum())
        count += int(mask.sum())
    generator.train(was)
    return total / max(count, 1)


@torch.no_grad()
def sample_for_prompts(generator: Generator, prompts: Tensor, max_len: int, batch_size: int = 256,
                       temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                       rng: torch.Generator | None = None, ban_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One response per prompt row: (tokens (N, max_len), lengths (N,)). ``top_k=1`` is greedy decoding;
    ``ban_ids`` are never sampled."""
    was = generator.training
    generator.eval()
    toks, lens = [], []
    for start in range(0, prompts.size(0), batch_size):
        p = trim_prompt(prompts[start : start + batch_size], generator.pad_id).to(generator.device)
        s = generator.sample(p.size(0), max_len, temperature=temperature, top_k=top_k, top_p=top_p, prompt=p,
                             generator=rng, ban_ids=ban_ids)
        toks.append(s.tokens.cpu())
        lens.append(s.lengths.cpu())
    generator.train(was)
    width = max(t.size(1) for t in toks)
    pad = generator.pad_id if generator.pad_id is not None else 0
    toks = [torch.nn.functional.pad(t, (0, width - t.size(1)), value=pad) for t in toks]
    return torch.cat(toks), torch.cat(lens)


def conditional_evaluator(data) -> Callable:
    """A drop-in for :func:`llmgan.training.evaluation.evaluate_generator` on a conditional run's data:
    valid/test NLL of the responses given their prompts, and responses sampled for (up to 200)
    validation prompts (the engine dumps those as its samples)."""

    def evaluate(generator: Generator, oracle=None, valid=None, test=None, n_samples: int = 200, max_len: int = 20,
                 batch_size: int = 256, temperature: float = 1.0, rng: torch.Generator | None = None,
                 autocast: Callable | None = None, ban_ids: Tensor | None = None) -> tuple[dict, Tensor]:
        metrics: dict = {}
        if valid is not None:
            metrics["valid_nll"] = conditional_nll(generator, valid, data.valid_prompts, autocast=autocast)
        if test is not None:
            metrics["test_nll"] = conditional_nll(generator, test, data.test_prompts, autocast=autocast)
        prompts = data.valid_prompts if data.valid_prompts is not None else data.train_prompts
        samples, _ = sample_for_prompts(generator, prompts[: min(n_samples, 200)], max_len, batch_size,
                                        temperature, rng=rng, ban_ids=ban_ids)
        return metrics, samples

    return evaluate
