"""Conditional data: prompt/response pairs (SFT) and class-conditional texts.

``data.prompt_field`` set: each JSONL record gives a prompt and a response; MLE becomes supervised
fine-tuning: the loss is ``Generator.weighted_nll(responses, mask / n, prompt=prompts)``, so only
response tokens are targets and the (left-padded) prompt is pure conditioning. With an ``hf``
tokenizer that has a chat template, prompts are wrapped in it (``data.chat_template``).

``data.label_field`` set: records ``{"text", "label"}``; the label becomes the prompt ``<label=x>``
(one word token for the word tokenizer), so G is conditioned on the class and a discriminator given
``prompt=`` judges real/fake per class.

The encoded responses are an ordinary :class:`~llmgan.data.EncodedCorpus` (so every phase can read
them as before) and ``RunData.{train,valid,test}_prompts`` hold the aligned left-padded prompts
(``llmgan.training.data_setup`` builds them).
"""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor

from llmgan.config import DataConfig
from llmgan.data.datasets import EncodedCorpus, SourcedList, encode_pairs, fill_missing_splits, read_jsonl
from llmgan.data.tokenizers import Tokenizer
from llmgan.errors import DataError


def label_prompt(label: Any) -> str:
    """The prompt text that stands for a class label (a single whitespace-free word token)."""
    return f"<label={str(label).replace(' ', '_')}>"


def is_conditional(d: DataConfig) -> bool:
    return d.prompt_field is not None or d.label_field is not None


def load_records(path: str, d: DataConfig) -> SourcedList:
    """``{"prompt", "response"[, "label"]}`` records of a JSONL file under the run's field names."""
    if d.label_field is not None:
        recs = read_jsonl(path, fields=(d.field,))
        out = []
        for rec, n in zip(recs, recs.line_numbers):
            lab = rec.get(d.label_field)
            if lab is None or isinstance(lab, bool) or not isinstance(lab, (str, int)):
                raise DataError(f'{path}: line {n}: field "{d.label_field}" missing or not a string/integer '
                                "(expected a class label)")
            out.append({"prompt": label_prompt(lab), "response": rec[d.field], "label": lab})
        return SourcedList(out, source=recs.source, line_numbers=recs.line_numbers)
    assert d.prompt_field is not None
    recs = read_jsonl(path, fields=(d.prompt_field, d.response_field))
    out = [{"prompt": r[d.prompt_field], "response": r[d.response_field]} for r in recs]
    return SourcedList(out, source=recs.source, line_numbers=recs.line_numbers)


def format_prompt(tokenizer: Tokenizer, text: str, d: DataConfig) -> str:
    """Prompt text as the model is trained on it: chat template for hf tokenizers that have one
    (not for class labels, which are control codes)."""
    if d.label_field is None and d.chat_template and hasattr(tokenizer, "format_prompt"):
        return tokenizer.format_prompt(text)
    return text


def held_out_pairs(run, data: str | None = None) -> tuple[EncodedCorpus, Tensor] | None:
    """A loaded conditional run's held-out pairs, encoded as in training: (responses, left-padded prompts).

    ``data`` (JSONL with the run's field names) if given, else the run's ``data.test``, else the test
    split that training carved out of ``data.train`` (same seed and fractions), else None.
    """
    d = run.cfg.data
    path = data or d.test
    if path:
        recs = list(load_records(path, d))
    else:
        if not d.train or not os.path.isfile(d.train):
            return None
        _, _, recs = fill_missing_splits(load_records(d.train, d), None, None, d.split, run.cfg.seed)
    if not recs:
        return None
    recs = [{**r, "prompt": format_prompt(run.tokenizer, r["prompt"], d)} for r in recs]
    pairs = encode_pairs(recs, run.tokenizer, d.max_prompt_len, run.max_len, overflow="truncate",
                         source=path or f"{d.train} (test split)")
    corpus = EncodedCorpus(pairs.responses, pairs.response_lengths, pairs.n_truncated, pairs.n_dropped,
                           pairs.pad_id, pairs.line_numbers)
    return corpus, pairs.prompts


def trim_prompt(prompts: Tensor, pad_id: int | None) -> Tensor:
    """Drop the leading columns that are padding in every row (a batch's prompts need only its longest)."""
    if pad_id is None or prompts.size(1) == 0:
        return prompts
    used = (prompts != pad_id).any(0)
    if not bool(used.any()):
        return prompts[:, -1:]
    return prompts[:, int(used.float().argmax()):]
