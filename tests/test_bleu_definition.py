"""One BLEU definition for `evaluate`, `sweep`, `report` and `metrics`, and banning tokens at sampling."""

from __future__ import annotations

import glob
import json
import os
import random

import pytest
import torch

from llmgan import metrics as M
from llmgan.cli import main
from llmgan.config import config_from_dict
from llmgan.errors import ConfigError
from llmgan.models.sampling import sample_categorical, sample_from_hidden
from llmgan.run import load_run
from llmgan.sweep import sweep_loaded_run
from llmgan.training.engine import Trainer
from llmgan.training.evaluation import ban_token_ids, evaluate_run, held_out_corpus, reference_tokens

WORDS = ["the", "cat", "a", "dog", "sees", "likes", "fish", "ball", "big", "small"]


def _corpus(rng: random.Random, n: int, rare: str) -> list[str]:
    # every line has one word seen nowhere else: with min_freq 2 it is <unk> in training, so the
    # model learns to emit <unk>, and in the test file it is out of the vocabulary
    lines = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]
        words.insert(rng.randrange(len(words) + 1), f"{rare}{i}")
        lines.append(" ".join(words) + (" ." if i % 2 else "."))  # "x." vs "x ." : nltk splits both
    return lines


def _train(root, name: str, **eval_cfg) -> str:
    rng = random.Random(0)
    train, test = root / "train.txt", root / "test.txt"
    if not train.exists():
        train.write_text("\n".join(_corpus(rng, 300, "tr")) + "\n", encoding="utf-8")
        test.write_text("\n".join(_corpus(rng, 60, "te")) + "\n", encoding="utf-8")
    cfg = {
        "name": name, "seed": 0, "threads": 1, "device": "cpu",
        "data": {"train": str(train), "valid": str(test), "test": str(test), "max_len": 12, "min_freq": 2},
        "generator": {"name": "lstm", "kwargs": {"embed_dim": 16, "hidden_dim": 16}},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "progress": False, "checkpoint_every": 100},
        "eval": {"n_samples": 64, **eval_cfg},
    }
    out = root / name
    Trainer(config_from_dict(cfg), str(out)).run()
    return str(out)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("bleu"), "mle_unk")


def _json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def _generate(capsys, run_dir, path, *extra):
    assert main(["generate", run_dir, "-n", "64", "--seed", "0", "--out", str(path), *extra]) == 0
    capsys.readouterr()
    return path.read_text(encoding="utf-8").splitlines()


def test_evaluate_and_metrics_give_the_same_bleu(run_dir, tmp_path, capsys):
    """The same samples score the same through `evaluate` and `metrics --references test.txt`."""
    gen = _generate(capsys, run_dir, tmp_path / "gen.txt")
    # the case the definitions disagree on: generated <unk>s, and a test file with OOV words
    assert sum("<unk>" in line for line in gen) > 5
    test = load_run(run_dir).cfg.data.test
    ev = _json(capsys, ["evaluate", run_dir, "--n-samples", "64", "--seed", "0",
                        "--metrics", "bleu,self_bleu,distinct", "--json"])
    me = _json(capsys, ["metrics", "--samples", str(tmp_path / "gen.txt"), "--references", test, "--json"])
    assert ev["bleu_references"] == "raw" and ev["bleu_tokenizer"] == "nltk"
    keys = [k for k in me if k.startswith(("bleu_", "self_bleu_", "distinct_"))]
    assert len(keys) == 4 + 3 + 4
    for k in keys:
        assert ev[k] == pytest.approx(me[k], abs=1e-12), k
    # the other definition stays available by name, and it is the one that lets <unk> match <unk>
    vocab = _json(capsys, ["evaluate", run_dir, "--n-samples", "64", "--seed", "0", "--metrics", "bleu",
                           "--bleu-references", "vocab", "--json"])
    assert vocab["bleu_references"] == "vocab" and vocab["bleu_2"] > ev["bleu_2"] + 0.01


def test_sweep_scores_bleu_like_evaluate(run_dir):
    run = load_run(run_dir)
    row = sweep_loaded_run(run, [1.0], n_samples=64, seed=0)[0]
    ev = evaluate_run(run, metrics=["bleu", "self_bleu"], n_samples=64, rng=torch.Generator().manual_seed(0))
    assert row["bleu_4"] == pytest.approx(ev["bleu_4"], abs=1e-12)
    assert row["self_bleu_4"] == pytest.approx(ev["self_bleu_4"], abs=1e-12)


def test_generated_unk_does_not_match_a_reference_oov_word(run_dir):
    run = load_run(run_dir)
    test = held_out_corpus(run)
    raw = reference_tokens(run, None, run.cfg.eval.bleu_references, "nltk", test)  # the default
    vocab = reference_tokens(run, None, "vocab", "nltk", test)
    assert not any("<unk>" in r for r in raw) and all("<unk>" in r for r in vocab)
    # a hypothesis equal to a test line with its OOV word generated as <unk>
    hyp = vocab[0]
    assert hyp != raw[0] and len(hyp) == len(raw[0])
    assert M.bleu([hyp], vocab, max_n=2)["bleu_2"] == pytest.approx(1.0)
    assert M.bleu([hyp], raw, max_n=2)["bleu_2"] < 0.95
    # unigram view: <unk> is one token that matches nothing in the raw references
    assert M.tokenize_text("a <unk> dog.", "nltk") == ["a", "<unk>", "dog", "."]


def test_metrics_blank_sample_line_is_an_empty_sample(tmp_path, capsys):
    """`generate` writes an empty sample as a blank line: `metrics` scores it 0, as `evaluate` does."""
    gen, ref = tmp_path / "gen.txt", tmp_path / "ref.txt"
    gen.write_text("the cat sat\n\na dog ran\n\n", encoding="utf-8")  # samples 2 and 4 are empty
    ref.write_text("the cat sat\n\na dog ran\n", encoding="utf-8")  # a blank reference line is no reference
    out = _json(capsys, ["metrics", "--samples", str(gen), "--references", str(ref), "--json"])
    assert out["n_samples"] == 4 and out["n_references"] == 2
    assert out["bleu_2"] == pytest.approx(0.5)


def test_metrics_char_tokenizer_skips_whitespace():
    assert M.tokenize_lines(["床 前 明", "ab c"], "char") == [["床", "前", "明"], ["a", "b", "c"]]
    with pytest.raises(Exception, match="expected one of nltk, whitespace, char"):
        M.tokenize_text("x", "spaces")


# ------------------------------------------------------------------------------------------ banning
@pytest.mark.parametrize("kwargs", [{}, {"top_k": 5}, {"top_p": 0.9}, {"temperature": 0.0}, {"temperature": 0.5}])
def test_banned_ids_are_never_sampled(kwargs):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(512, 40, generator=g)
    logits[:, 7] += 8.0  # the banned ids would otherwise dominate (and win every greedy row)
    logits[:, 3] += 6.0
    ban = torch.tensor([3, 7])
    tok, lp = sample_categorical(logits, generator=g, ban_ids=ban, **kwargs)
    assert not torch.isin(tok, ban).any() and torch.isfinite(lp).all()
    hidden, weight = torch.randn(512, 8, generator=g), torch.randn(40, 8, generator=g)
    bias = torch.zeros(40)
    bias[ban] = 20.0
    tok, lp = sample_from_hidden(hidden, weight, bias, generator=g, ban_ids=ban, **kwargs)
    assert not torch.isin(tok, ban).any() and torch.isfinite(lp).all()
    tok, _ = sample_from_hidden(hidden, weight, bias, generator=g, **kwargs)
    assert torch.isin(tok, ban).float().mean() > 0.5  # without the ban they are drawn


def test_generate_ban_unk(run_dir, tmp_path, capsys):
    assert any("<unk>" in line for line in _generate(capsys, run_dir, tmp_path / "a.txt"))
    banned = _generate(capsys, run_dir, tmp_path / "b.txt", "--ban", "<unk>")
    assert not any("<unk>" in line.split() for line in banned)
    rc = main(["generate", run_dir, "--ban", "zebra"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--ban: 'zebra' is not a token" in err[0]


def test_ban_token_ids_refuses_banning_everything():
    from llmgan.data import build_tokenizer

    tok = build_tokenizer("word", ["a b"])
    with pytest.raises(ConfigError, match="nothing is left"):
        ban_token_ids(tok, tok.vocab)


def test_banned_unk_run_samples_have_no_unk(run_dir, tmp_path):
    """eval.ban_tokens reaches the training-time evaluation samples and `llmgan evaluate`."""
    banned = _train(tmp_path, "mle_no_unk", ban_tokens=["<unk>"])
    dumps = glob.glob(os.path.join(banned, "samples", "*.txt"))
    assert dumps
    for path in dumps:
        assert "<unk>" not in open(path, encoding="utf-8").read().split(), path
    run = load_run(banned)
    ev = evaluate_run(run, metrics=["distinct"], n_samples=64, rng=torch.Generator().manual_seed(0))
    unbanned = evaluate_run(run, metrics=["distinct"], n_samples=64, rng=torch.Generator().manual_seed(0),
                            ban_tokens=[])
    assert ev["distinct_1"] != unbanned["distinct_1"]  # the ban changed what evaluation sampled


def test_apps_eval_takes_threads(capsys, tmp_path):
    """`--threads` is parsed (before it was "unrecognized arguments"): the error is the missing run."""
    rc = main(["apps", "eval", str(tmp_path / "nope"), "--app", "translation", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "run directory not found" in err and "unrecognized" not in err
