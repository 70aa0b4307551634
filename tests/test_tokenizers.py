"""Tokenizers: round trips, vocabulary rules, special tokens, save/load, bad inputs."""

import json
import os
import random

import pytest

from llmgan.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    build_tokenizer,
    load_tokenizer,
)
from llmgan.errors import ConfigError, DataError

POEM = "床前明月光，疑是地上霜。"


def _corpus(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away", "quickly", "under", "bridge"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(n)]


# ------------------------------------------------------------------------------------------------- word


def test_word_vocab_order_is_frequency_then_alphabetical():
    tok = build_tokenizer("word", ["b a c a", "c a b d"])
    # a:3, b:2, c:2, d:1 -> specials, a, b, c (tie broken alphabetically), d
    assert tok.vocab == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c", "d"]
    assert tok.vocab_size == 8
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert tok.kind == "word"


def test_word_round_trip_and_whitespace_split():
    texts = _corpus()
    tok = build_tokenizer("word", texts)
    for t in texts[:20]:
        ids = tok.encode(t)
        assert len(ids) == len(t.split())
        assert BOS_ID not in ids and EOS_ID not in ids
        assert tok.decode(ids) == t
    # Runs of whitespace collapse to a single space on decode.
    assert tok.decode(tok.encode("  the\tcat \n sat ")) == "the cat sat"


def test_word_unknown_words_map_to_unk():
    tok = build_tokenizer("word", ["the cat sat"])
    ids = tok.encode("the zebra sat")
    assert ids[1] == UNK_ID and ids[0] != UNK_ID and ids[2] != UNK_ID
    assert tok.decode(ids) == "the <unk> sat"
    # A literal special string in the text is not a special token (no pad/eos injected).
    assert tok.encode("<pad> <eos> <unk>") == [UNK_ID, UNK_ID, UNK_ID]


def test_word_vocab_cap_and_min_freq():
    texts = ["a a a a b b b c c d", "e"]
    capped = build_tokenizer("word", texts, vocab_size=6)
    assert capped.vocab_size == 6
    assert capped.vocab[4:] == ["a", "b"]
    assert capped.encode("c") == [UNK_ID]
    frequent = build_tokenizer("word", texts, min_freq=2)
    assert frequent.vocab[4:] == ["a", "b", "c"]
    assert frequent.encode("d e") == [UNK_ID, UNK_ID]
    with pytest.raises(ConfigError, match="too small"):
        build_tokenizer("word", texts, vocab_size=4)


def test_decode_skip_special():
    tok = build_tokenizer("word", ["x y"])
    ids = [BOS_ID, *tok.encode("x y"), EOS_ID, PAD_ID, PAD_ID]
    assert tok.decode(ids) == "x y"
    assert tok.decode(ids, skip_special=False) == "<bos> x y <eos> <pad> <pad>"


# ------------------------------------------------------------------------------------------------- char


def test_char_round_trip_chinese_and_whitespace():
    texts = [POEM, "举头望明月， 低头思故乡。", "a  b\tc"]
    tok = build_tokenizer("char", texts)
    ids = tok.encode(POEM)
    assert len(ids) == len(POEM) == 12
    assert UNK_ID not in ids
    for t in texts:
        assert tok.decode(tok.encode(t)) == t
    assert tok.encode("月") == [tok.vocab.index("月")]
    # Frequency first, then code point order; the space is a token too.
    assert build_tokenizer("char", ["月月明 光"]).vocab[4:] == ["月", " ", "光", "明"]
    assert tok.encode("猫") == [UNK_ID]


# -------------------------------------------------------------------------------------------------- bpe


def test_bpe_round_trip_specials_and_merges():
    texts = _corpus(300) + [POEM, "Hello, World! 123"]
    tok = build_tokenizer("bpe", texts, vocab_size=320)
    assert tok.kind == "bpe"
    assert tok.vocab_size == 320
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    for t in texts[:20] + [POEM, "  spaces  around ", "unseen words: zebra ✓ 猫"]:
        ids = tok.encode(t)
        assert all(4 <= i < tok.vocab_size for i in ids), t
        assert tok.decode(ids) == t
    # Merges were learnt: a frequent word is one token, much shorter than its bytes.
    assert len(tok.encode("the cat sat on the mat")) < len("the cat sat on the mat")
    assert tok.decode([BOS_ID, *tok.encode("the cat"), EOS_ID, PAD_ID]) == "the cat"


# -------------------------------------------------------------------------------------------------- ids


def test_ids_tokenizer_encode_decode_and_specials():
    tok = build_tokenizer("ids", [], vocab_size=5000)
    assert tok.kind == "ids" and tok.vocab_size == 5000
    assert tok.bos_id == 0
    assert tok.pad_id is None and tok.eos_id is None and tok.unk_id is None
    assert tok.encode("0 17 4999 3") == [0, 17, 4999, 3]
    assert tok.decode([0, 17, 4999, 3]) == "0 17 4999 3"
    assert tok.decode([0, 1, 2]) == "0 1 2"  # 0 is an ordinary token: never skipped


def test_ids_tokenizer_rejects_bad_tokens():
    tok = build_tokenizer("ids", [], vocab_size=10)
    expected = r"token 'x' is not an integer \(expected space-separated ids in \[0, 10\)\)"
    with pytest.raises(DataError, match=expected):
        tok.encode("1 x 3")
    with pytest.raises(DataError, match=r"token id 10 is out of range \(expected ids in \[0, 10\)\)"):
        tok.encode("1 10")
    with pytest.raises(DataError, match="out of range"):
        tok.encode("-1")
    with pytest.raises(ConfigError, match="vocab_size"):
        build_tokenizer("ids", ["1 2"])


def test_unknown_kind():
    with pytest.raises(ConfigError, match="unknown tokenizer kind 'wordpiece'"):
        build_tokenizer("wordpiece", ["a"])


def test_empty_corpus_is_a_data_error():
    with pytest.raises(DataError, match="no tokens"):
        build_tokenizer("word", ["", "   "])


# ---------------------------------------------------------------------------------------------- save/load


@pytest.mark.parametrize("kind", ["word", "char", "bpe", "ids"])
def test_save_load_identity(kind, tmp_path):
    texts = _corpus(100) + [POEM]
    tok = build_tokenizer(kind, texts, vocab_size=None if kind == "word" else 300)
    path = tmp_path / "sub" / "tok.json"
    tok.save(path)
    assert sorted(os.listdir(path.parent)) == ["tok.json"]  # no temp file left behind
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["kind"] == kind
    loaded = load_tokenizer(path)
    assert isinstance(loaded, Tokenizer)
    assert type(loaded) is type(tok)
    assert loaded == tok
    assert loaded.vocab_size == tok.vocab_size
    assert (loaded.pad_id, loaded.bos_id, loaded.eos_id, loaded.unk_id) == (
        tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id)
    sample = "12 0 7 299" if kind == "ids" else texts[3]
    assert loaded.encode(sample) == tok.encode(sample)
    assert loaded.decode(tok.encode(sample)) == tok.decode(tok.encode(sample))


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "tok.json"
    build_tokenizer("word", ["a b"]).save(path)
    build_tokenizer("word", ["c d e"]).save(path)
    assert load_tokenizer(path).vocab[4:] == ["c", "d", "e"]
    assert os.listdir(tmp_path) == ["tok.json"]


def test_load_tokenizer_bad_files(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DataError, match=r"nope\.json: file not found \(expected a tokenizer JSON"):
        load_tokenizer(missing)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "llmgan-tokenizer",\n oops}')
    with pytest.raises(DataError, match=r"bad\.json: line 2 is not valid JSON"):
        load_tokenizer(bad)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(DataError, match=r"other\.json: not an llmgan tokenizer file"):
        load_tokenizer(other)
    kind = tmp_path / "kind.json"
    kind.write_text('{"format": "llmgan-tokenizer", "version": 1, "kind": "morse"}')
    with pytest.raises(DataError, match=r"kind\.json: unknown tokenizer kind 'morse'"):
        load_tokenizer(kind)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "llmgan-tokenizer", "version": 1, "kind": "word"}')
    with pytest.raises(DataError, match=r"corrupt\.json: corrupt word tokenizer"):
        load_tokenizer(corrupt)
