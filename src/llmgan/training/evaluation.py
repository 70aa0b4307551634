"""Evaluation shared by training and the CLI: oracle NLL of fresh samples, NLL on held-out data."""

from __future__ import annotations

from collections.abc import Callable

import torch

from llmgan.data import EncodedCorpus
from llmgan.metrics.nll import corpus_nll  # noqa: F401 - re-exported (tests, CLI)
from llmgan.models.base import Generator


@torch.no_grad()
def sample_tokens(
    generator: Generator,
    n: int,
    max_len: int,
    batch_size: int = 1000,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples as (tokens (n, max_len), lengths (n,)), drawn in batches."""
    was_training = generator.training
    generator.eval()
    toks, lens = [], []
    for start in range(0, n, batch_size):
        s = generator.sample(
            min(batch_size, n - start), max_len, temperature=temperature, top_k=top_k, top_p=top_p, generator=rng
        )
        toks.append(s.tokens.cpu())
        lens.append(s.lengths.cpu())
    generator.train(was_training)
    return torch.cat(toks), torch.cat(lens)


def evaluate_generator(
    generator: Generator,
    oracle: Generator | None = None,
    valid: EncodedCorpus | None = None,
    test: EncodedCorpus | None = None,
    n_samples: int = 10000,
    max_len: int = 20,
    batch_size: int = 1000,
    temperature: float = 1.0,
    rng: torch.Generator | None = None,
    autocast: Callable | None = None,
) -> tuple[dict, torch.Tensor]:
    """Metrics dict (oracle_nll, valid_nll, test_nll where available) and the samples drawn."""
    metrics: dict = {}
    samples, _ = sample_tokens(
        generator, n_samples if oracle is not None else min(n_samples, 200), max_len, batch_size, temperature, rng=rng
    )
    if oracle is not None:
        from llmgan.models.generators.oracle import oracle_nll

        metrics["oracle_nll"] = oracle_nll(oracle.to(generator.device), samples.to(generator.device))
    if valid is not None:
        metrics["valid_nll"] = corpus_nll(generator, valid, autocast=autocast)
    if test is not None:
        metrics["test_nll"] = corpus_nll(generator, test, autocast=autocast)
    return metrics, samples


ALL_METRICS = ("oracle_nll", "test_nll", "bleu", "self_bleu", "distinct", "fed", "nll_gen", "detector_auroc")


def evaluate_run(
    run,
    data: str | None = None,
    metrics: list[str] | None = None,
    n_samples: int | None = None,
    rng: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    nll_gen_kwargs: dict | None = None,
) -> dict:
    """Score a loaded run (``llmgan.run.LoadedRun``): one flat dict of metric name -> value.

    Default metrics: oracle runs ``oracle_nll`` and ``test_nll``; text runs ``test_nll``, BLEU-2..5
    against the test set, Self-BLEU-2..4 and distinct-1..4 of the samples. ``fed``, ``nll_gen`` and
    ``detector_auroc`` are computed when asked for; ``nll_gen_kwargs`` sets the fresh model's MLE
    budget (``epochs``, ``max_steps``, ...; see :func:`llmgan.metrics.nll_gen.nll_gen`).

    Conditional runs (prompt/response or labelled data) are scored given their prompts: ``test_nll``
    is the responses' NLL given the test prompts, and the samples are responses to the test prompts
    (cycled to ``n_samples``), scored against the test responses. ``nll_gen`` and ``detector_auroc``
    are unconditional measures and are refused there (``llmgan apps eval`` / ``llmgan detect`` serve
    conditional runs).
    """
    from llmgan.errors import ConfigError

    is_oracle = run.oracle is not None
    conditional = bool(getattr(run, "is_conditional", False))
    if metrics is None:
        metrics = ["oracle_nll", "test_nll"] if is_oracle else ["test_nll", "bleu", "self_bleu", "distinct"]
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ConfigError(f"--metrics: unknown metric {unknown[0]!r} (valid: {', '.join(ALL_METRICS)})")
    n = n_samples or run.cfg.eval.n_samples
    out: dict = {"n_samples": n, "temperature": temperature}
    if conditional:
        refused = [m for m in metrics if m in ("nll_gen", "detector_auroc")]
        if refused:
            raise ConfigError(f"--metrics {refused[0]}: not defined for a conditional run "
                              "(use `llmgan apps eval` or `llmgan detect`)")
        from llmgan.data.conditional import held_out_pairs
        from llmgan.training.conditional import conditional_nll, sample_for_prompts

        pairs = held_out_pairs(run, data)
        if pairs is None:
            raise ConfigError("evaluate: this conditional run has no held-out pairs (pass --data FILE.jsonl)")
        test, prompts = pairs
        rows = torch.arange(n) % prompts.size(0)  # every test prompt, cycled to n samples
        samples, lengths = sample_for_prompts(run.generator, prompts[rows], run.max_len, run.cfg.eval.batch_size,
                                              temperature, top_k, top_p, rng=rng)
        out["n_prompts"] = int(prompts.size(0))  # present only for conditional runs
        if "test_nll" in metrics:
            out["test_nll"] = conditional_nll(run.generator, test, prompts)
        metrics = [m for m in metrics if m != "test_nll"]
    else:
        test = held_out_corpus(run, data)
        samples, lengths = sample_tokens(
            run.generator, n, run.max_len, run.cfg.eval.batch_size, temperature, top_k, top_p, rng=rng
        )
    if "oracle_nll" in metrics:
        if not is_oracle:
            raise ConfigError("--metrics oracle_nll: this run is not on an oracle")
        from llmgan.models.generators.oracle import oracle_nll

        out["oracle_nll"] = oracle_nll(run.oracle, samples.to(run.generator.device))
    if "test_nll" in metrics:
        if test is None:
            raise ConfigError("test_nll: no held-out data (pass --data FILE)")
        out["test_nll"] = corpus_nll(run.generator, test)
    text_metrics = {"bleu", "self_bleu", "distinct", "fed", "nll_gen"} & set(metrics)
    if text_metrics:
        gen_tokens = _token_strings(run, samples, lengths)
        ref_tokens = _token_strings(run, test.tokens, test.lengths) if test is not None else None
        from llmgan import metrics as M

        if "bleu" in metrics:
            if ref_tokens is None:
                raise ConfigError("bleu: no reference data (pass --data FILE)")
            out.update(M.bleu(gen_tokens, ref_tokens, max_n=(2, 3, 4, 5)))
        if "self_bleu" in metrics:
            out.update(M.self_bleu(gen_tokens, max_n=(2, 3, 4)))
        if "distinct" in metrics:
            out.update(M.distinct(gen_tokens))
        if "fed" in metrics:
            if ref_tokens is None:
                raise ConfigError("fed: no reference data (pass --data FILE)")
            out["fed"] = M.fed([" ".join(t) for t in gen_tokens], [" ".join(t) for t in ref_tokens])
        if "nll_gen" in metrics:
            if test is None:
                raise ConfigError("nll_gen: no held-out data (pass --data FILE)")
            from llmgan.metrics.nll_gen import nll_gen

            out["nll_gen"] = nll_gen(run, samples, lengths, test, **(nll_gen_kwargs or {}))
    if "detector_auroc" in metrics:
        if test is None:
            raise ConfigError("detector_auroc: no held-out real data (pass --data FILE)")
        from llmgan.metrics.detection import detector_auroc_for_run

        out["detector_auroc"] = detector_auroc_for_run(run, test, samples, lengths)
    return out


def held_out_corpus(run, data: str | None = None) -> EncodedCorpus | None:
    """The run's held-out real data, encoded: ``data`` if given, else the run's test file, else the
    test split that training carved out of ``data.train`` (same seed and fractions), else None.

    Runs whose test set was split off the training file have no test file on disk; re-splitting
    reproduces exactly the sequences the engine held out, so sweeps and reports can score them.
    """
    path = data or run.held_out_path()
    if path:
        return run.encode_file(path)
    import os

    d = run.cfg.data
    # Here data.test is unset, so the engine took the test set from splitting data.train (whether
    # or not data.valid was given); without that file there is nothing to reproduce.
    if not d.train or not os.path.isfile(d.train):
        return None
    from llmgan.data import encode_corpus, load_texts, split_texts

    texts = list(load_texts(d.train, field=d.field))
    total = sum(d.split)
    _, _, test_texts = split_texts(texts, [x / total for x in d.split], seed=run.cfg.seed)
    if not test_texts:
        return None
    return encode_corpus(test_texts, run.tokenizer, run.max_len, overflow="truncate", source=f"{d.train} (test split)")


def _token_strings(run, tokens: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
    """Sequences as lists of token strings (specials removed) for the text metrics."""
    tok = run.tokenizer
    special = {i for i in (tok.pad_id, tok.bos_id, tok.eos_id) if i is not None and tok.kind != "ids"}
    out = []
    for row, n in zip(tokens.tolist(), lengths.tolist()):
        ids = [i for i in row[:n] if i not in special]
        if tok.kind in ("word", "ids"):
            out.append(tok.decode(ids).split())
        else:  # char/bpe: score at the character/word level of the decoded text
            text = tok.decode(ids)
            # char runs are scored per character; whitespace is layout, not a token (e.g. the poems
            # corpus separates every character by a space), so it never counts as a BLEU match
            out.append([c for c in text if not c.isspace()] if tok.kind == "char" else text.split())
    return out
