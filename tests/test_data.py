"""Datasets (reading, validation, splitting, encoding, batching), cleaning and corpus statistics."""

import json

import pytest
import torch

from llmgan.data import (
    EOS_ID,
    PAD_ID,
    UNK_ID,
    EncodedCorpus,
    build_tokenizer,
    clean_texts,
    corpus_stats,
    dedup,
    encode_corpus,
    encode_pairs,
    format_stats,
    iterate_batches,
    load_texts,
    normalize_text,
    read_jsonl,
    read_lines,
    split_texts,
)
from llmgan.errors import ConfigError, DataError, LLMGanError


def _write(path, data):
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------------ reading


def test_read_lines_strips_and_keeps_line_numbers(tmp_path):
    p = _write(tmp_path / "train.txt", "first line  \n\n   \n  indented\r\nlast")
    lines = read_lines(p)
    assert lines == ["first line", "  indented", "last"]
    assert lines.line_numbers == [1, 4, 5]
    assert lines.source == str(p)


def test_read_lines_utf8_bom_and_chinese(tmp_path):
    p = _write(tmp_path / "poems.txt", "\ufeff床前明月光\n疑是地上霜\n".encode())
    assert read_lines(p) == ["床前明月光", "疑是地上霜"]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"data/nope\.txt: file not found \(expected UTF-8 text\)"):
        read_lines(tmp_path / "data" / "nope.txt")


@pytest.mark.parametrize("content", ["", "\n  \n\t\n"])
def test_empty_or_blank_file(tmp_path, content):
    p = _write(tmp_path / "empty.txt", content)
    expected = r"empty\.txt: file (is empty|has only blank lines) \(expected UTF-8 text"
    with pytest.raises(DataError, match=expected):
        read_lines(p)


def test_binary_file(tmp_path):
    p = _write(tmp_path / "model.bin", b"ok line\nsecond\nthird \x00\x01\x02 bytes\n")
    with pytest.raises(DataError) as e:
        read_lines(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: line 3 contains NUL bytes")
    assert "binary" in msg and "(expected UTF-8 text)" in msg
    assert "\n" not in msg


def test_non_utf8_file(tmp_path):
    p = _write(tmp_path / "latin1.txt", "good\nalso good\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        read_lines(p)
    assert str(e.value) == f"{p}: line 3 is not valid UTF-8 (expected UTF-8 text)"
    assert isinstance(e.value, LLMGanError)


def test_read_jsonl_shapes_and_label(tmp_path):
    p = _write(
        tmp_path / "x.jsonl",
        '{"text": "hello world", "label": "pos"}\n\n{"text": "bye", "label": 1, "extra": true}\n',
    )
    recs = read_jsonl(p)
    assert [r["text"] for r in recs] == ["hello world", "bye"]
    assert [r["label"] for r in recs] == ["pos", 1]
    assert recs.line_numbers == [1, 3]
    q = _write(tmp_path / "pairs.jsonl", '{"prompt": "q?", "response": "a."}\n')
    assert read_jsonl(q, fields=("prompt", "response"))[0] == {"prompt": "q?", "response": "a."}


def test_jsonl_that_does_not_parse(tmp_path):
    p = _write(tmp_path / "x.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": "c"\n')
    with pytest.raises(DataError) as e:
        read_jsonl(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: line 3 is not valid JSON")
    assert "expected one JSON object per line" in msg


def test_jsonl_lacking_the_field(tmp_path):
    p = _write(tmp_path / "x.jsonl", '{"text": "a"}\n{"text": "b"}\n{"body": "c"}\n')
    with pytest.raises(DataError) as e:
        read_jsonl(p)
    assert str(e.value) == (
        f'{p}: line 3: field "text" missing (expected {{"text": ...}} or {{"prompt": ..., "response": ...}})'
    )


def test_jsonl_wrong_types(tmp_path):
    p = _write(tmp_path / "x.jsonl", '{"text": 5}\n')
    with pytest.raises(DataError, match=r'x\.jsonl: line 1: field "text" is a int \(expected a string\)'):
        read_jsonl(p)
    q = _write(tmp_path / "y.jsonl", '["text"]\n')
    with pytest.raises(DataError, match=r"y\.jsonl: line 1: a JSON list is not an object"):
        read_jsonl(q)
    r = _write(tmp_path / "z.jsonl", '{"text": "a", "label": [1]}\n')
    with pytest.raises(DataError, match=r'z\.jsonl: line 1: field "label" is a list'):
        read_jsonl(r)


def test_load_texts_picks_by_extension(tmp_path):
    j = _write(tmp_path / "d.jsonl", '{"text": "a b"}\n{"text": "c"}\n')
    assert load_texts(j) == ["a b", "c"]
    j2 = _write(tmp_path / "d.json", '{"body": "x"}\n')
    assert load_texts(j2, field="body") == ["x"]
    t = _write(tmp_path / "d.txt", '{"text": "a b"}\n')
    assert load_texts(t) == ['{"text": "a b"}']  # plain text: JSON is not parsed


# ---------------------------------------------------------------------------------------------- splitting


def test_split_is_seeded_deterministic_and_complete():
    texts = [f"s{i}" for i in range(100)]
    a = split_texts(texts, (0.8, 0.1, 0.1), seed=3)
    b = split_texts(texts, (0.8, 0.1, 0.1), seed=3)
    c = split_texts(texts, (0.8, 0.1, 0.1), seed=4)
    assert a == b
    assert a != c
    assert [len(p) for p in a] == [80, 10, 10]
    assert sorted(sum(a, [])) == sorted(texts)
    assert a[0] != texts[:80]  # really shuffled
    assert a[1] == sorted(a[1], key=lambda s: int(s[1:]))  # original order inside a part
    with pytest.raises(ConfigError, match="sum to 1"):
        split_texts(texts, (0.5, 0.4))


def test_split_small_sizes_add_up():
    for n in range(0, 12):
        parts = split_texts(list(range(n)), (0.9, 0.05, 0.05), seed=0)
        assert sum(len(p) for p in parts) == n


# ----------------------------------------------------------------------------------------------- encoding


@pytest.fixture
def word_tok():
    return build_tokenizer("word", ["a b c d e f g h"])


def test_encode_corpus_padding_eos_and_mask(word_tok):
    c = encode_corpus(["a b", "c d e f"], word_tok, max_len=10)
    assert isinstance(c, EncodedCorpus)
    assert c.tokens.dtype == torch.long and c.lengths.dtype == torch.long
    assert c.tokens.shape == (2, 5)  # longest kept sequence incl. EOS
    a, b, cc, d, e, f = (word_tok.encode(x)[0] for x in "abcdef")
    assert c.tokens.tolist() == [[a, b, EOS_ID, PAD_ID, PAD_ID], [cc, d, e, f, EOS_ID]]
    assert c.lengths.tolist() == [3, 5]
    assert c.mask().tolist() == [[True, True, True, False, False], [True] * 5]
    assert (c.n_truncated, c.n_dropped) == (0, 0)
    no_eos = encode_corpus(["a b"], word_tok, max_len=10, add_eos=False)
    assert no_eos.tokens.tolist() == [[a, b]]


def test_encode_corpus_truncate_keeps_max_len_without_eos(word_tok):
    c = encode_corpus(["a b c d e", "a b", "a b c"], word_tok, max_len=3, overflow="truncate")
    assert (c.n_truncated, c.n_dropped) == (2, 0)  # "a b c" + EOS = 4 > 3 also truncated
    assert c.tokens.shape == (3, 3)
    assert c.lengths.tolist() == [3, 3, 3]
    assert c.tokens[0].tolist() == word_tok.encode("a b c")  # first max_len tokens, no EOS
    assert c.tokens[1].tolist() == word_tok.encode("a b") + [EOS_ID]


def test_encode_corpus_drop(word_tok):
    c = encode_corpus(["a b c d e", "a b", "c"], word_tok, max_len=3, overflow="drop")
    assert (c.n_truncated, c.n_dropped) == (0, 1)
    assert c.lengths.tolist() == [3, 2]
    assert c.line_numbers == [2, 3]
    with pytest.raises(DataError, match="all 1 samples are over max_len=2"):
        encode_corpus(["a b c"], word_tok, max_len=2, overflow="drop")


def test_encode_corpus_error_names_file_and_line(tmp_path, word_tok):
    p = _write(tmp_path / "train.txt", "a b\n\nc d e f g\n")
    texts = read_lines(p)
    with pytest.raises(DataError) as e:
        encode_corpus(texts, word_tok, max_len=4, overflow="error")
    msg = str(e.value)
    assert msg.startswith(f"{p}: line 3 has 6 tokens incl. EOS")
    assert "expected at most max_len=4" in msg
    # Explicit source / line numbers for plain lists.
    with pytest.raises(DataError, match=r"^mine\.txt: line 1 has 6 tokens"):
        encode_corpus(["c d e f g"], word_tok, max_len=4, overflow="error", source="mine.txt")
    with pytest.raises(ConfigError, match="overflow policy 'wrap'"):
        encode_corpus(["a"], word_tok, max_len=4, overflow="wrap")


def test_encode_corpus_unknown_words(word_tok):
    c = encode_corpus(["a zzz"], word_tok, max_len=5)
    assert c.tokens[0, 1].item() == UNK_ID


def test_encode_corpus_ids_tokenizer_equal_lengths(tmp_path):
    tok = build_tokenizer("ids", [], vocab_size=100)
    p = _write(tmp_path / "oracle.txt", "0 1 2 3\n4 5 6 7 8 9\n10 11 12\n")
    c = encode_corpus(read_lines(p), tok, max_len=3)
    assert c.tokens.tolist() == [[0, 1, 2], [4, 5, 6], [10, 11, 12]]
    assert c.n_truncated == 2 and c.lengths.tolist() == [3, 3, 3]
    with pytest.raises(DataError) as e:
        encode_corpus(read_lines(p), tok, max_len=5)
    msg = str(e.value)
    assert msg.startswith(f"{p}: line 2 has 5 tokens but line 1 has 4")
    assert "expected equal-length sequences" in msg
    bad = _write(tmp_path / "bad.txt", "1 2\n3 x\n")
    with pytest.raises(DataError, match=r"bad\.txt: line 2: token 'x' is not an integer"):
        encode_corpus(read_lines(bad), tok, max_len=5)
    big = _write(tmp_path / "big.txt", "1 2\n\n3 100\n")
    with pytest.raises(DataError, match=r"big\.txt: line 3: token id 100 is out of range"):
        encode_corpus(read_lines(big), tok, max_len=5)


# ----------------------------------------------------------------------------------------------- batching


def test_iterate_batches_trims_to_longest_in_batch(word_tok):
    texts = ["a", "a b c d e f", "b", "c", "a b"]
    c = encode_corpus(texts, word_tok, max_len=10)
    assert c.tokens.shape[1] == 7
    batches = list(iterate_batches(c, batch_size=2, shuffle=False))
    assert [b[0].shape for b in batches] == [(2, 7), (2, 2), (1, 3)]
    assert [b[1].tolist() for b in batches] == [[2, 7], [2, 2], [3]]
    assert torch.equal(batches[1][0], c.tokens[2:4, :2])
    assert len(list(iterate_batches(c, 2, shuffle=False, drop_last=True))) == 2


def test_iterate_batches_shuffle_is_seeded(word_tok):
    c = encode_corpus([" ".join("abcdefgh"[: i % 8 + 1]) for i in range(20)], word_tok, max_len=10)

    def order(seed):
        g = torch.Generator().manual_seed(seed)
        return [tuple(map(tuple, b[0].tolist())) for b in iterate_batches(c, 4, shuffle=True, generator=g)]

    assert order(1) == order(1)
    assert order(1) != order(2)
    rows = sorted(r for b in order(1) for r in b)
    full = sorted(tuple(r[: n]) for r, n in zip(c.tokens.tolist(), c.lengths.tolist()))
    assert sorted(tuple(x for x in r if x != PAD_ID) for r in rows) == full  # every row exactly once
    for toks, lens in iterate_batches(c, 4, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert toks.shape[1] == int(lens.max())


def test_iterate_batches_plain_tensor():
    t = torch.arange(12).view(4, 3)
    out = list(iterate_batches(t, 3, shuffle=False))
    assert torch.equal(out[0][0], t[:3]) and out[0][1].tolist() == [3, 3, 3]
    assert torch.equal(out[1][0], t[3:])


# -------------------------------------------------------------------------------------------------- pairs


def test_encode_pairs_left_padded_prompts_and_labels(tmp_path):
    tok = build_tokenizer("word", ["a b c d e f g h"])
    p = _write(
        tmp_path / "pairs.jsonl",
        "\n".join(json.dumps(r) for r in [
            {"prompt": "a", "response": "b c", "label": "pos"},
            {"prompt": "a b c", "response": "d", "label": "neg"},
        ]),
    )
    recs = read_jsonl(p, fields=("prompt", "response"))
    pairs = encode_pairs(recs, tok, max_prompt_len=8, max_response_len=8)
    a, b, c, d = (tok.encode(x)[0] for x in "abcd")
    assert pairs.prompts.tolist() == [[PAD_ID, PAD_ID, a], [a, b, c]]
    assert pairs.prompt_lengths.tolist() == [1, 3]
    assert pairs.prompt_mask().tolist() == [[False, False, True], [True, True, True]]
    assert pairs.responses.tolist() == [[b, c, EOS_ID], [d, EOS_ID, PAD_ID]]
    assert pairs.response_lengths.tolist() == [3, 2]
    assert pairs.response_mask().tolist() == [[True, True, True], [True, True, False]]
    assert pairs.label_map == {"neg": 0, "pos": 1}
    assert pairs.labels.tolist() == [1, 0]
    # A given label map is applied; an unknown label is an error naming the line.
    again = encode_pairs(recs, tok, 8, 8, label_map={"pos": 5, "neg": 7})
    assert again.labels.tolist() == [5, 7]
    with pytest.raises(DataError, match=r"pairs\.jsonl: line 2: unknown label 'neg'"):
        encode_pairs(recs, tok, 8, 8, label_map={"pos": 0})


def test_encode_pairs_overflow():
    tok = build_tokenizer("word", ["a b c d e f g h"])
    recs = [{"prompt": "a b c d", "response": "e f g"}, {"prompt": "a", "response": "b"}]
    t = encode_pairs(recs, tok, max_prompt_len=2, max_response_len=2)
    assert t.n_truncated == 1 and t.labels is None
    assert t.prompts[0].tolist() == tok.encode("c d")  # prompts keep their LAST tokens
    assert t.responses[0].tolist() == tok.encode("e f")  # responses keep their first, no EOS
    d = encode_pairs(recs, tok, 2, 2, overflow="drop")
    assert d.n_dropped == 1 and len(d) == 1 and d.line_numbers == [2]
    with pytest.raises(DataError, match=r"^pairs: line 1: prompt has 4 tokens \(expected at most 2"):
        encode_pairs(recs, tok, 2, 2, overflow="error", source="pairs")
    with pytest.raises(DataError, match=r'line 1: field "response" missing'):
        encode_pairs([{"prompt": "a"}], tok, 2, 2)
    with pytest.raises(ConfigError, match="no pad token"):
        encode_pairs(recs, build_tokenizer("ids", [], vocab_size=5), 2, 2)


# -------------------------------------------------------------------------------------------------- clean


def test_normalize_text():
    assert normalize_text("  ｆｕｌｌ　width\t\ttext \n") == "full width text"  # NFKC + whitespace
    assert normalize_text("e\u0301") == "\u00e9"  # composed
    assert normalize_text("a\x00b\x07c") == "abc"  # control characters removed
    assert normalize_text("a  b", collapse_whitespace=False) == "a  b"
    assert normalize_text("，", unicode_form="NFC") == "，"
    assert normalize_text("，") == ","
    with pytest.raises(ConfigError, match="unicode_form"):
        normalize_text("a", unicode_form="NFX")


def test_dedup_after_normalization_order_preserving():
    kept, n = dedup(["b", "a  x", "b ", "a x", "c", "ａ x"])
    assert kept == ["b", "a  x", "c"]
    assert n == 3
    raw, n_raw = dedup(["a", "a ", "a"], key=None)
    assert raw == ["a", "a "] and n_raw == 1


def test_clean_texts_report():
    texts, report = clean_texts(["Hello  world", "hello world", "Hello world", "   ", "ｘ"])
    assert texts == ["Hello world", "hello world", "x"]
    assert report == {"input": 5, "normalized_changed": 3, "empty_removed": 1, "duplicates_removed": 1,
                      "output": 3}
    texts, report = clean_texts(["a", "a", "a "], normalize=False, dedup=False)
    assert texts == ["a", "a", "a "] and report["output"] == 3


# -------------------------------------------------------------------------------------------------- stats


def test_corpus_stats_and_overlap(tmp_path):
    train = _write(tmp_path / "train.txt", "the cat sat\nthe dog\nthe cat sat\na b c d e f g h i j\n\nx\n")
    test = _write(tmp_path / "test.txt", "the dog\nnew line here\nx\nthe cat\n")
    s = corpus_stats(train, test_path=test, max_len=4)
    assert s["lines"] == 5
    assert s["tokens"] == 3 + 2 + 3 + 10 + 1
    assert s["vocab_size"] == 4 + 10 + 1  # the cat sat dog, a..j, x
    assert s["length"] == {"min": 1, "mean": 3.8, "median": 3, "max": 10}
    assert sum(b["count"] for b in s["histogram"]) == 5
    assert s["histogram"][0]["lo"] == 1 and s["histogram"][-1]["hi"] >= 10
    assert s["duplicate_lines"] == 1
    assert s["over_max_len"] == 1  # only the 10-word line: 3 + EOS fits in 4
    t = s["test"]
    assert t["lines"] == 4
    assert t["overlap_lines"] == 2 and t["overlap_fraction"] == 0.5  # "the dog", "x"
    assert t["unk_fraction"] == pytest.approx(3 / 8)  # new line here
    json.dumps(s)  # serialisable for --json

    text = format_stats(s)
    assert str(train) in text and str(test) in text
    assert "lines" in text and "2 (50.00%)" in text
    assert "#" * 40 in text  # the tallest histogram bar
    assert len(text.splitlines()) >= 12


def test_corpus_stats_char_kind(tmp_path):
    p = _write(tmp_path / "poems.txt", "床前明月光\n疑是地上霜\n")
    s = corpus_stats(p, tokenizer_kind="char")
    assert s["tokens"] == 10 and s["vocab_size"] == 10 and s["length"]["max"] == 5
    assert s["histogram"] == [{"lo": 5, "hi": 5, "count": 2}]
    with pytest.raises(DataError, match="file not found"):
        corpus_stats(tmp_path / "missing.txt")
