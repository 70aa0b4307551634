"""How evaluation turns token ids into the strings BLEU/Self-BLEU/distinct-n count."""

from types import SimpleNamespace

import torch

from llmgan.data import build_tokenizer
from llmgan.training.evaluation import _token_strings


def _rows(tok, texts):
    ids = [tok.encode(t) + ([tok.eos_id] if tok.eos_id is not None else []) for t in texts]
    width = max(map(len, ids))
    tokens = torch.tensor([x + [tok.pad_id] * (width - len(x)) for x in ids])
    return tokens, torch.tensor([len(x) for x in ids])


def test_char_runs_score_characters_not_spaces():
    texts = ["床 前 明 月 光", "疑 是 地 上 霜"]
    tok = build_tokenizer("char", texts)
    tokens, lengths = _rows(tok, texts)
    out = _token_strings(SimpleNamespace(tokenizer=tok), tokens, lengths)
    assert out == [list("床前明月光"), list("疑是地上霜")]


def test_word_runs_score_words_without_specials():
    texts = ["a cat sat", "the dog"]
    tok = build_tokenizer("word", texts)
    tokens, lengths = _rows(tok, texts)
    assert _token_strings(SimpleNamespace(tokenizer=tok), tokens, lengths) == [["a", "cat", "sat"], ["the", "dog"]]
