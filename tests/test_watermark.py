"""Green-list watermark: every generator family writes it, detection separates it from plain sampling,
the false-positive rate holds on unwatermarked text, key files are handled as secrets, and the CLI works."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from llmgan.cli import main
from llmgan.errors import ConfigError
from llmgan.models.generators import build_generator
from llmgan.models.watermark import Watermark, generate_key, load_key

V = 200
KEY = bytes(range(32))


def family(kind: str, tmp_path_factory=None):
    torch.manual_seed(0)
    if kind == "lstm":
        return build_generator("lstm", vocab_size=V, embed_dim=16, hidden_dim=24).eval()
    if kind == "gpt":
        return build_generator("gpt", vocab_size=V, d_model=32, n_layers=2, n_heads=4, max_len=64).eval()
    if kind == "rmc":
        return build_generator("rmc", vocab_size=V).eval()
    if kind == "leakgan":
        return build_generator("leakgan", vocab_size=V).eval()
    raise AssertionError(kind)


def hf_family(tmp_path_factory):
    pytest.importorskip("transformers")
    from llmgan.config import ModelConfig
    from llmgan.data.hf_tokenizer import HFTokenizer
    from llmgan.models.factory import make_generator
    from llmgan.models.hf import make_tiny_hf_model

    words = [f"w{i}" for i in range(150)]
    texts = [" ".join(words[i:i + 10]) for i in range(0, 150, 10)]
    path = make_tiny_hf_model(str(tmp_path_factory.mktemp("hfwm") / "gpt2"), "gpt2", texts, pad_token=False, seed=0)
    tok = HFTokenizer(path)
    return make_generator(ModelConfig(name=f"hf:{path}"), tok).eval()


def z_scores(g, wm_sample: Watermark | None, wm_detect: Watermark, n: int = 12, T: int = 40, seed: int = 0):
    s = g.sample(n, T, generator=torch.Generator().manual_seed(seed), watermark=wm_sample)
    skip = {i for i in (g.eos_id, g.pad_id, getattr(g, "bos_id", None)) if i is not None}
    rows = [r[:int(length)] for r, length in zip(s.tokens.tolist(), s.lengths.tolist())]
    res = wm_detect.detect(rows, skip=skip)
    return [r["z"] for r in res["per_text"] if r["n_tokens"] >= 20], res["z"]


@pytest.mark.parametrize("kind", ["lstm", "gpt", "rmc", "leakgan", "hf-gpt2"])
def test_watermarked_samples_are_detected_and_plain_ones_are_not(kind, tmp_path_factory):
    g = hf_family(tmp_path_factory) if kind == "hf-gpt2" else family(kind)
    wm = Watermark(KEY, gamma=0.25, delta=4.0)
    n, T = (6, 32) if kind == "hf-gpt2" else (12, 40)  # HF steps are the slow ones
    marked, corpus_marked = z_scores(g, wm, wm, n, T)
    plain, corpus_plain = z_scores(g, None, wm, n, T)
    other_key, _ = z_scores(g, Watermark(bytes(range(1, 33)), gamma=0.25, delta=4.0), wm, n, T)
    assert len(marked) >= n // 2 and len(plain) >= n // 2
    assert min(marked) > 4.0, marked  # every long-enough watermarked text is flagged at z >= 4
    assert max(plain) < 4.0 and max(other_key) < 4.0, (plain, other_key)
    assert corpus_marked > 10 and abs(corpus_plain) < 4


def test_false_positive_rate_on_text_without_the_key():
    """Uniform random ids: the share of texts over the 1% one-sided z (2.326) is close to 1%."""
    wm = Watermark(KEY, gamma=0.25)
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(3, 5000, (3000, 60), generator=gen).tolist()
    z = [r["z"] for r in wm.detect(rows)["per_text"]]
    fpr = sum(v >= 2.326 for v in z) / len(z)
    assert 0.003 < fpr < 0.025, fpr
    assert abs(sum(z) / len(z)) < 0.1  # centred: green membership is Bernoulli(gamma) under the null


def test_green_lists_depend_on_key_and_context_and_have_size_gamma():
    wm = Watermark(KEY, gamma=0.25, context=2)
    ctx = torch.tensor([[5, 7], [5, 8], [6, 7]])
    m = wm.green_mask(ctx, 4000)
    assert abs(m.float().mean().item() - 0.25) < 0.02
    assert (m[0] != m[1]).any() and (m[0] != m[2]).any()  # every context token matters
    assert (Watermark(bytes(range(1, 33)), gamma=0.25, context=2).green_mask(ctx, 4000) != m).any()
    assert wm.is_green([5, 7], int(m[0].nonzero()[0])) and not wm.is_green([5, 7], int((~m[0]).nonzero()[0]))


def test_repeated_pairs_are_scored_once():
    wm = Watermark(KEY, gamma=0.25)
    green = next(t for t in range(100) if wm.is_green([9], t))
    ids = [9, green] * 50  # a degenerate repetitive text
    assert wm.score_ids(ids)["n_tokens"] == 2  # (9, green) and (green, 9)
    assert wm.score_ids(ids, ignore_repeated=False)["n_tokens"] == 99


def test_key_files(tmp_path):
    wm = generate_key(gamma=0.5, delta=1.5, context=2)
    path = str(tmp_path / "wm.key")
    wm.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back = load_key(path)
    assert (back.key, back.gamma, back.delta, back.context) == (wm.key, 0.5, 1.5, 2)
    assert wm.key.hex() not in wm.key_id and len(wm.key_id) == 16
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        wm.save(path)
    (tmp_path / "bad.key").write_text('{"format": "something else"}')
    for bad, msg in [(tmp_path / "bad.key", "not a watermark key file"), (tmp_path / "none.key", "not found")]:
        with pytest.raises(ConfigError, match=msg) as e:
            load_key(str(bad))
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="gamma"):
        Watermark(KEY, gamma=1.5)


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    from llmgan.config import config_from_dict
    from llmgan.training.engine import Trainer

    root = tmp_path_factory.mktemp("wmrun")
    words = [f"w{i}" for i in range(120)]
    rng = torch.Generator().manual_seed(0)
    lines = [" ".join(words[j] for j in torch.randint(0, 120, (12,), generator=rng).tolist()) for _ in range(300)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    cfg = {"seed": 0, "threads": 1, "device": "cpu",
           "data": {"train": str(root / "train.txt"), "max_len": 24, "min_freq": 1},
           "generator": {"name": "lstm", "kwargs": {"embed_dim": 16, "hidden_dim": 16}},
           "train": {"epochs": 1, "batch_size": 64, "progress": False, "checkpoint_every": 100},
           "eval": {"n_samples": 16}}
    Trainer(config_from_dict(cfg), str(root / "run")).run()
    return root / "run"


def test_cli_keygen_generate_detect(word_run, tmp_path, capsys):
    made = tmp_path / "made.key"
    assert main(["watermark", "keygen", "--out", str(made), "--delta", "4"]) == 0
    assert load_key(str(made)).delta == 4.0
    assert main(["watermark", "keygen", "--out", str(made)]) == 2  # never overwrites a key
    key = tmp_path / "wm.key"  # a fixed key from here on: the samples, hence the asserts, are deterministic
    Watermark(KEY, delta=4.0).save(str(key))
    capsys.readouterr()
    marked, plain = tmp_path / "marked.txt", tmp_path / "plain.txt"
    gen = ["generate", str(word_run), "-n", "20", "--max-len", "24", "--seed", "0"]
    assert main([*gen, "--watermark", str(key), "--out", str(marked)]) == 0
    assert main([*gen, "--out", str(plain)]) == 0
    capsys.readouterr()
    results = {}
    for name, path in (("marked", marked), ("plain", plain)):
        assert main(["watermark", "detect", str(path), "--key", str(key), "--run", str(word_run), "--json"]) == 0
        results[name] = json.loads(capsys.readouterr().out)
    assert set(results["marked"]) >= {"z", "p_value", "detected", "per_text"}
    assert results["marked"]["detected"] and results["marked"]["z"] > 8 and results["marked"]["p_value"] < 1e-6, (
        results["marked"]["z"], results["plain"]["z"])
    assert not results["plain"]["detected"] and results["plain"]["z"] < 4
    assert len(results["marked"]["per_text"]) == 20
    assert main(["watermark", "detect", str(marked), "--key", str(key)]) == 2  # no tokenizer: one line
    assert "--run" in capsys.readouterr().err
