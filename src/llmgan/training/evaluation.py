"""Evaluation shared by training and the CLI: oracle NLL of fresh samples, NLL on held-out data."""

from __future__ import annotations

from collections.abc import Callable

import torch

from llmgan import interrupt
from llmgan.data import EncodedCorpus
from llmgan.metrics.nll import corpus_nll  # noqa: F401 - re-exported (tests, CLI)
from llmgan.models.base import Generator
from llmgan.models.sampling import check_sampling_options


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
    ban_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples as (tokens (n, max_len), lengths (n,)), drawn in batches; ``ban_ids`` are never drawn."""
    was_training = generator.training
    generator.eval()
    toks, lens = [], []
    for start in range(0, n, batch_size):
        interrupt.point()
        s = generator.sample(
            min(batch_size, n - start), max_len, temperature=temperature, top_k=top_k, top_p=top_p, generator=rng,
            ban_ids=ban_ids,
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
    ban_ids: torch.Tensor | None = None,
) -> tuple[dict, torch.Tensor]:
    """Metrics dict (oracle_nll, valid_nll, test_nll where available) and the samples drawn."""
    metrics: dict = {}
    samples, _ = sample_tokens(
        generator, n_samples if oracle is not None else min(n_samples, 200), max_len, batch_size, temperature, rng=rng,
        ban_ids=ban_ids,
    )
    if oracle is not None:
        from llmgan.models.generators.oracle import oracle_nll

        metrics["oracle_nll"] = oracle_nll(oracle.to(generator.device), samples.to(generator.device))
    if valid is not None:
        metrics["valid_nll"] = corpus_nll(generator, valid, autocast=autocast)
    if test is not None:
        metrics["test_nll"] = corpus_nll(generator, test, autocast=autocast)
    return metrics, samples


ALL_METRICS = ("oracle_nll", "test_nll", "bleu", "self_bleu", "distinct", "fed", "nll_gen", "detector_auroc",
               "ebm_nll")
BLEU_REFERENCES = ("raw", "vocab")


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
    bleu_references: str | None = None,
    bleu_tokenizer: str | None = None,
    ban_tokens: list[str] | None = None,
) -> dict:
    """Score a loaded run (``llmgan.run.LoadedRun``): one flat dict of metric name -> value.

    Default metrics: oracle runs ``oracle_nll`` and ``test_nll``; text runs ``test_nll``, BLEU-2..5
    against the test set, Self-BLEU-2..4 and distinct-1..4 of the samples. ``fed``, ``nll_gen`` and
    ``detector_auroc`` are computed when asked for; ``nll_gen_kwargs`` sets the fresh model's MLE
    budget (``epochs``, ``max_steps``, ...; see :func:`llmgan.metrics.nll_gen.nll_gen`).

    BLEU: ``bleu_references`` (default ``eval.bleu_references``, ``raw``) says what the references
    are: ``raw`` = the held-out texts as written, so the scores equal ``llmgan metrics --samples
    GEN.txt --references TEST.txt`` on the same samples (Texygen's definition); ``vocab`` = the
    references mapped through the run's vocabulary, where an out-of-vocabulary word becomes ``<unk>``
    and matches a generated ``<unk>``. ``bleu_tokenizer`` (default ``eval.bleu_tokenizer``) names the
    :data:`llmgan.metrics.TEXT_TOKENIZERS` entry that turns samples and references into tokens for
    BLEU, Self-BLEU and distinct-n. ``ban_tokens`` (default ``eval.ban_tokens``) are never sampled.

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
        if run.cfg.adversarial.algorithm == "residual_ebm":
            metrics.append("ebm_nll")  # the corrected model's held-out NLL (llmgan.metrics.density_ratio)
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ConfigError(f"--metrics: unknown metric {unknown[0]!r} (valid: {', '.join(ALL_METRICS)})")
    refs_mode = bleu_references or getattr(run.cfg.eval, "bleu_references", "raw")
    if refs_mode not in BLEU_REFERENCES:
        raise ConfigError(f"bleu references {refs_mode!r}: expected one of {', '.join(BLEU_REFERENCES)}")
    tok_name = bleu_tokenizer_for(run, bleu_tokenizer)
    ban_ids = ban_token_ids(run.tokenizer, run.cfg.eval.ban_tokens if ban_tokens is None else ban_tokens)
    n = run.cfg.eval.n_samples if n_samples is None else n_samples
    check_sampling_options(n=n, temperature=temperature, names={"n": "n_samples"})  # 0 fell back to the default
    out: dict = {"n_samples": n, "temperature": temperature}
    if conditional:
        refused = [m for m in metrics if m in ("nll_gen", "detector_auroc", "ebm_nll")]
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
                                              temperature, top_k, top_p, rng=rng, ban_ids=ban_ids)
        out["n_prompts"] = int(prompts.size(0))  # present only for conditional runs
        if "test_nll" in metrics:
            out["test_nll"] = conditional_nll(run.generator, test, prompts)
        metrics = [m for m in metrics if m != "test_nll"]
    else:
        test = held_out_corpus(run, data)
        samples, lengths = sample_tokens(
            run.generator, n, run.max_len, run.cfg.eval.batch_size, temperature, top_k, top_p, rng=rng,
            ban_ids=ban_ids,
        )
    if "oracle_nll" in metrics:
        if not is_oracle:
            raise ConfigError("--metrics oracle_nll: this run is not on an oracle")
        from llmgan.models.generators.oracle import oracle_nll

        out["oracle_nll"] = oracle_nll(run.oracle, samples.to(run.generator.device))
        # standard error over the samples: two sample sets of one checkpoint differ by about this much
        with torch.no_grad():
            per_seq = torch.cat([-run.oracle.log_probs(samples[i : i + 1000].to(run.oracle.device)).float().mean(1)
                                 for i in range(0, samples.size(0), 1000)])
        out["oracle_nll_se"] = float(per_seq.std() / max(per_seq.numel(), 1) ** 0.5) if per_seq.numel() > 1 else 0.0
    if "test_nll" in metrics:
        if test is None:
            raise ConfigError("test_nll: no held-out data (pass --data FILE)")
        out["test_nll"] = corpus_nll(run.generator, test)
    text_metrics = {"bleu", "self_bleu", "distinct", "fed", "nll_gen"} & set(metrics)
    if text_metrics:
        gen_tokens = _token_strings(run, samples, lengths, tok_name)
        ref_tokens = None
        if {"bleu", "fed"} & set(metrics) and test is not None:
            ref_tokens = reference_tokens(run, data, refs_mode, tok_name, test)
        from llmgan import metrics as M

        if {"bleu", "self_bleu", "distinct"} & set(metrics):
            out["bleu_tokenizer"] = tok_name  # which definition the numbers follow (docs/configuration.md)
        if "bleu" in metrics:
            if ref_tokens is None:
                raise ConfigError("bleu: no reference data (pass --data FILE)")
            out["bleu_references"] = refs_mode
            out.update(_with_se(M.bleu_scores(gen_tokens, ref_tokens, max_n=(2, 3, 4, 5))))
        if "self_bleu" in metrics:
            out.update(_with_se(M.self_bleu_scores(gen_tokens, max_n=(2, 3, 4))))
        if "distinct" in metrics:
            out.update(M.distinct(gen_tokens))
            out.update(M.distinct_se(gen_tokens))
        if "fed" in metrics:
            if ref_tokens is None:
                raise ConfigError("fed: no reference data (pass --data FILE)")
            out["fed"], out["fed_se"] = M.fed_and_se([" ".join(t) for t in gen_tokens],
                                                     [" ".join(t) for t in ref_tokens])
        if "nll_gen" in metrics:
            if test is None:
                raise ConfigError("nll_gen: no held-out data (pass --data FILE)")
            from llmgan.metrics.nll_gen import nll_gen

            out["nll_gen"] = nll_gen(run, samples, lengths, test, **(nll_gen_kwargs or {}))
    if "detector_auroc" in metrics:
        if test is None:
            raise ConfigError("detector_auroc: no held-out real data (pass --data FILE)")
        from llmgan.metrics.detection import detector_auroc_for_run
        from llmgan.metrics.uncertainty import auroc_se

        out["detector_auroc"] = detector_auroc_for_run(run, test, samples, lengths)
        out["detector_auroc_se"] = auroc_se(out["detector_auroc"], int(test.tokens.size(0)), int(samples.size(0)))
    if "ebm_nll" in metrics:
        if run.cfg.adversarial.algorithm != "residual_ebm":
            raise ConfigError("--metrics ebm_nll: needs a residual_ebm run (adversarial.algorithm: residual_ebm)")
        if test is None:
            raise ConfigError("ebm_nll: no held-out data (pass --data FILE)")
        from llmgan.metrics.density_ratio import residual_ebm_nll_for_run

        # an importance-sampling ESTIMATE of the NLL with its standard error, not a bound
        out.update(residual_ebm_nll_for_run(run, test, n_proposal=n, rng=rng))
    return out


def _with_se(scores: dict) -> dict[str, float]:
    """Per-sentence scores ``{name: array}`` -> ``{name: mean, name_se: standard error}``."""
    from llmgan.metrics.uncertainty import mean_and_se

    out: dict[str, float] = {}
    for k, v in scores.items():
        out[k], out[k + "_se"] = mean_and_se(v)
    return out


def held_out_texts(run, data: str | None = None) -> tuple[list[str], str] | None:
    """The run's held-out texts as written, and where they come from: ``data`` if given, else the
    run's test file, else the test split that training carved out of ``data.train`` (same seed and
    fractions), else None. Conditional runs give their responses. These are BLEU's ``raw`` references.

    Runs whose test set was split off the training file have no test file on disk; re-splitting
    reproduces exactly the sequences the engine held out, so sweeps and reports can score them.
    """
    import os

    from llmgan.data import fill_missing_splits, load_texts

    d = run.cfg.data
    conditional = bool(getattr(run, "is_conditional", False))
    path = data or (d.test if conditional else run.held_out_path())
    if conditional:
        from llmgan.data.conditional import load_records

        def read(p):
            return [r["response"] for r in load_records(p, d)]
    else:
        def read(p):
            return list(load_texts(p, field=d.field))
    if path:
        return read(path), path
    # Here data.test is unset, so the engine took the test set from splitting data.train (whether
    # or not data.valid was given); without that file there is nothing to reproduce.
    if not d.train or not os.path.isfile(d.train):
        return None
    _, _, test_texts = fill_missing_splits(read(d.train), None, None, d.split, run.cfg.seed)
    if not test_texts:
        return None
    return list(test_texts), f"{d.train} (test split)"


def held_out_corpus(run, data: str | None = None) -> EncodedCorpus | None:
    """The run's held-out real data (:func:`held_out_texts`), encoded with the run's tokenizer and
    length limit (unconditional runs; ``llmgan.data.conditional.held_out_pairs`` serves conditional ones)."""
    from llmgan.data import encode_corpus

    found = held_out_texts(run, data)
    if found is None:
        return None
    texts, source = found
    return encode_corpus(texts, run.tokenizer, run.max_len, overflow="truncate", source=source)


def bleu_tokenizer_for(run, name: str | None = None) -> str:
    """The :data:`llmgan.metrics.TEXT_TOKENIZERS` name a run's text metrics use: ``name`` if given,
    else ``eval.bleu_tokenizer``; ``auto`` means char for char runs, whitespace for integer-id
    (oracle) runs and nltk (Texygen's word tokenization) for everything else."""
    from llmgan.errors import ConfigError
    from llmgan.metrics import TEXT_TOKENIZERS

    name = name or getattr(getattr(getattr(run, "cfg", None), "eval", None), "bleu_tokenizer", "auto")
    if name == "auto":
        kind = run.tokenizer.kind
        return "char" if kind == "char" else "whitespace" if kind == "ids" else "nltk"
    if name not in TEXT_TOKENIZERS:
        raise ConfigError(f"bleu tokenizer {name!r}: expected auto or one of {', '.join(TEXT_TOKENIZERS)}")
    return name


def reference_tokens(run, data: str | None, mode: str, tokenizer: str, test: EncodedCorpus) -> list[list[str]]:
    """BLEU references: ``raw`` = the held-out texts as written, tokenized like the samples;
    ``vocab`` = the encoded held-out corpus ``test`` decoded back (OOV words read ``<unk>``, rows cut
    to the run's max_len)."""
    if mode == "vocab":
        return _token_strings(run, test.tokens, test.lengths, tokenizer)
    from llmgan.metrics import tokenize_lines

    found = held_out_texts(run, data)
    if found is None:  # cannot happen when `test` exists: both come from the same source
        raise RuntimeError("held-out texts vanished between encoding and scoring")
    return tokenize_lines(found[0], tokenizer)


def ban_token_ids(tokenizer, tokens: list[str] | None, what: str = "eval.ban_tokens") -> torch.Tensor | None:
    """Token strings -> a 1-D id tensor for ``Generator.sample(ban_ids=...)`` (None when empty).

    A token is a vocabulary entry as the tokenizer spells it (``<unk>``, a word, a character, a BPE
    piece; an integer for ``ids`` runs). ConfigError for one that is not in the vocabulary, or for a
    list that would leave nothing to sample.
    """
    from llmgan.errors import ConfigError

    if not tokens:
        return None
    kind = tokenizer.kind
    if kind == "ids":
        lookup = {str(i): i for i in range(tokenizer.vocab_size)}
    elif hasattr(tokenizer, "vocab"):  # word / char
        lookup = {t: i for i, t in enumerate(tokenizer.vocab)}
    else:  # bpe (tokenizers.Tokenizer) and hf (transformers) both expose get_vocab()
        lookup = dict(tokenizer.hf.get_vocab())
    ids = []
    for t in tokens:
        i = lookup.get(str(t))
        if i is None:
            raise ConfigError(f"{what}: {t!r} is not a token of this run's {kind} vocabulary")
        ids.append(i)
    ids = sorted(set(ids))
    if len(ids) >= tokenizer.vocab_size:
        raise ConfigError(f"{what}: bans every token of the vocabulary; nothing is left to sample")
    return torch.tensor(ids, dtype=torch.long)


def _token_strings(run, tokens: torch.Tensor, lengths: torch.Tensor, tokenizer: str | None = None) -> list[list[str]]:
    """Sequences as BLEU tokens for the text metrics: decoded without the specials, then split by
    the ``tokenizer`` name (default :func:`bleu_tokenizer_for` the run), exactly as ``llmgan metrics``
    splits the lines ``llmgan generate`` writes."""
    from llmgan.metrics import tokenize_text

    name = tokenizer or bleu_tokenizer_for(run)
    tok = run.tokenizer
    special = {i for i in (tok.pad_id, tok.bos_id, tok.eos_id) if i is not None and tok.kind != "ids"}
    out = []
    for row, n in zip(tokens.tolist(), lengths.tolist()):
        ids = [i for i in row[:n] if i not in special]
        out.append(tokenize_text(tok.decode(ids), name))
    return out
