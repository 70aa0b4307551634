"""Property-based fuzzing (hypothesis): nothing fed in crashes with anything but a one-line LLMGanError.

Data loaders get any bytes, tokenizers any Unicode text (and must round-trip it), ``--set`` any
key=value string, the metrics empty, one-token and huge inputs. Every crash these found is fixed
and pinned by an explicit ``@example``. Example counts are small so the file runs in seconds; raise
them with HYPOTHESIS_PROFILE=long for a deeper search.
"""

from __future__ import annotations

import os
import tempfile

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from llmgan.config import RunConfig, load_config  # noqa: E402
from llmgan.data import build_tokenizer, encode_corpus, load_texts  # noqa: E402
from llmgan.errors import LLMGanError  # noqa: E402
from llmgan.metrics import bleu, distinct, self_bleu  # noqa: E402

settings.register_profile("quick", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


# ------------------------------------------------------------------------------ data loaders
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".txt", ".jsonl"]))
@example(data=b"\x00\x01binary", suffix=".txt")
@example(data=b'{"text": 3}\n', suffix=".jsonl")
@example(data=b"\xff\xfe not utf-8", suffix=".txt")
@example(data=b"[1, 2]\n", suffix=".jsonl")
def test_any_bytes_in_a_data_file_load_or_raise_one_clear_error(data, suffix):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "data" + suffix)
        with open(path, "wb") as f:
            f.write(data)
        try:
            texts = load_texts(path)
        except LLMGanError as e:
            assert "\n" not in str(e) and str(e)
            return
        assert all(isinstance(t, str) and t.strip() for t in texts)


# ------------------------------------------------------------------------------ tokenizers
text_st = st.text(min_size=1, max_size=60)


@given(text=text_st)
@example(text="\u0301")  # a lone combining mark
@example(text="a\r\nb")
@example(text="<unk>")
def test_char_tokenizer_round_trips_any_text(text):
    tok = build_tokenizer("char", [text])
    assert tok.decode(tok.encode(text)) == text


@given(text=text_st)
def test_word_tokenizer_round_trips_up_to_whitespace(text):
    hypothesis.assume(text.split() and not any(w in SPECIALS for w in text.split()))
    tok = build_tokenizer("word", [text])
    assert tok.decode(tok.encode(text)) == " ".join(text.split())


@settings(max_examples=15)
@given(text=text_st)
@example(text="中文 and emoji 🙂")
def test_bpe_tokenizer_round_trips_any_text(text):
    tok = build_tokenizer("bpe", [text, "some other text"], vocab_size=300)
    assert tok.decode(tok.encode(text)) == text


@given(train=st.lists(text_st, min_size=1, max_size=5), other=st.lists(st.text(max_size=40), max_size=5),
       kind=st.sampled_from(["word", "char"]))
def test_encoding_unseen_text_never_crashes(train, other, kind):
    try:
        tok = build_tokenizer(kind, train)
    except LLMGanError:  # e.g. only whitespace: no tokens to build a vocabulary from
        return
    try:
        corpus = encode_corpus(other, tok, max_len=8, overflow="truncate", source="fuzz")
    except LLMGanError:
        return
    assert corpus.tokens.shape[1] <= 9
    assert corpus.tokens.numel() == 0 or int(corpus.tokens.max()) < tok.vocab_size


# ------------------------------------------------------------------------------ --set overrides
KEYS = ["seed", "data.max_len", "data.split", "data.tokenizer", "train.lr", "train.epochs", "train.batch_size",
        "train.precision", "train.keep_checkpoints", "adversarial.algorithm", "adversarial.rounds",
        "adversarial.params", "generator.kwargs", "eval.n_samples", "eval.temperature", "eval.max_len",
        "generator", "train"]


@given(key=st.one_of(st.sampled_from(KEYS), st.text(max_size=20)), value=st.text(max_size=30))
@example(key="train.lr", value="nan")
@example(key="data.split", value="[0.5, 0.6, 0.1]")
@example(key="adversarial.params", value="[1, 2]")
@example(key="train", value="3")
@example(key="", value="")
@example(key="train.lr.x", value="1")
@example(key="generator.kwargs", value="{a: [}")
def test_any_override_gives_a_config_or_one_line_error(key, value):
    try:
        cfg = load_config(None, ["data.oracle=seqgan", "data.tokenizer=ids", f"{key}={value}"])
    except LLMGanError as e:
        assert str(e) and "\n" not in str(e).strip(), str(e)
        return
    assert isinstance(cfg, RunConfig)


# ------------------------------------------------------------------------------ metrics
sentences = st.lists(st.lists(st.sampled_from(["a", "b", "c", "<unk>", "é"]), max_size=6), max_size=6)


@given(hyps=sentences, refs=sentences)
@example(hyps=[], refs=[])
@example(hyps=[["a"]], refs=[["a"]])
@example(hyps=[[]], refs=[["a", "b"]])
def test_bleu_self_bleu_distinct_on_empty_and_tiny_inputs(hyps, refs):
    for fn, args in ((bleu, (hyps, refs)), (self_bleu, (hyps,)), (distinct, (hyps,))):
        try:
            out = fn(*args)
        except LLMGanError as e:
            assert "\n" not in str(e)
            continue
        assert all(0.0 <= v <= 1.0 for v in out.values()), (fn.__name__, out)


def test_metrics_on_a_huge_input():
    huge = [[f"w{i % 5000}", "x", "y"] * 50 for i in range(2000)]  # 300k tokens
    out = distinct(huge)
    assert 0 < out["distinct_1"] <= 1
    assert 0 <= bleu(huge[:200], huge[200:400])["bleu_2"] <= 1
