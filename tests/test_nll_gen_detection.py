"""nll_gen (reverse LM score) and detector AUROC."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from llmgan.cli import main
from llmgan.config import config_from_dict
from llmgan.errors import LLMGanError
from llmgan.metrics.detection import auroc, detector_auroc_for_run
from llmgan.metrics.nll_gen import nll_gen
from llmgan.run import load_run
from llmgan.training.engine import Trainer
from llmgan.training.evaluation import evaluate_run, held_out_corpus, sample_tokens

SUBJ = ["the cat", "a dog", "my friend", "the teacher", "a bird"]
VERB = ["sees", "likes", "eats", "finds"]
OBJ = ["the fish", "an apple", "the ball", "a book", "the tree"]


def _config(corpus: str, name: str, **extra) -> dict:
    cfg = {
        "name": name, "seed": 0, "threads": 1, "device": "cpu",
        "data": {"train": corpus, "max_len": 10},
        "generator": {"name": "lstm", "kwargs": {"embed_dim": 16, "hidden_dim": 24}},
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.01, "progress": False, "log_every": 5},
        "eval": {"n_samples": 64},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny MLE run and a tiny SeqGAN run on a structured word corpus."""
    root = tmp_path_factory.mktemp("nllgen")
    rng = random.Random(0)
    corpus = root / "corpus.txt"
    lines = [f"{rng.choice(SUBJ)} {rng.choice(VERB)} {rng.choice(OBJ)} ." for _ in range(400)]
    corpus.write_text("\n".join(lines) + "\n")
    mle = root / "mle"
    Trainer(config_from_dict(_config(str(corpus), "mle")), str(mle)).run()
    gan = root / "gan"
    adv = {"algorithm": "seqgan", "rounds": 2, "d_steps": 1, "d_epochs": 1, "d_pretrain_steps": 2, "d_samples": 128,
           "g_batch_size": 16, "eval_every": 2, "params": {"rollouts": 2}}
    cfg = _config(str(corpus), "gan", adversarial=adv, discriminator={"name": "cnn", "kwargs": {}})
    cfg["train"]["epochs"] = 2
    Trainer(config_from_dict(cfg), str(gan)).run()
    return {"mle": str(mle), "gan": str(gan)}


# ------------------------------------------------------------------------------------------ auroc
def test_auroc_hand_made():
    assert auroc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5  # all ties
    assert auroc([3.0, 4.0, 5.0], [0.0, 1.0]) == 1.0  # separable
    assert auroc([0.0], [1.0, 2.0]) == 0.0
    # pairs: 0.9 beats 3; 0.4 beats 0.1, ties 0.4, loses to 0.5 (1.5); 0.6 beats 3 -> U = 7.5 of 9
    assert auroc([0.9, 0.4, 0.6], [0.5, 0.4, 0.1]) == 7.5 / 9
    assert auroc(torch.tensor([2.0, 0.0]), np.array([1.0])) == 0.5


def test_auroc_matches_brute_force_and_sklearn():
    g = np.random.default_rng(0)
    pos, neg = g.integers(0, 6, size=57).astype(float), g.integers(0, 5, size=43).astype(float)  # many ties
    brute = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert auroc(pos, neg) == pytest.approx(brute, abs=1e-15)
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        return
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    assert auroc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)


def test_auroc_bad_inputs():
    with pytest.raises(LLMGanError, match="empty"):
        auroc([], [1.0])
    with pytest.raises(LLMGanError, match="NaN"):
        auroc([float("nan")], [1.0])


# ------------------------------------------------------------------------------------------ nll_gen
def test_nll_gen_real_samples_beat_garbage(runs):
    run = load_run(runs["mle"])
    test = held_out_corpus(run)
    assert test is not None and len(test) > 0
    train = run.encode_file(run.cfg.data.train)
    real_tokens, real_lengths = train.tokens[:300], train.lengths[:300]
    g = torch.Generator().manual_seed(1)
    V = run.tokenizer.vocab_size
    garbage = torch.randint(3, V, real_tokens.shape, generator=g)  # uniform over ordinary tokens
    garbage_lengths = torch.full((300,), real_tokens.size(1))
    kw = {"epochs": 3, "batch_size": 32, "lr": 0.01, "seed": 0}
    good = nll_gen(run, real_tokens, real_lengths, test, **kw)
    bad = nll_gen(run, garbage, garbage_lengths, test, **kw)
    assert good < bad - 0.5, (good, bad)
    assert nll_gen(run, real_tokens, real_lengths, test, **kw) == good  # seeded


def test_nll_gen_budget_in_steps(runs):
    run = load_run(runs["mle"])
    test = held_out_corpus(run)
    samples, lengths = sample_tokens(run.generator, 64, run.max_len, rng=torch.Generator().manual_seed(0))
    # zero steps: the untrained fresh model is near uniform; a few steps already beat it
    untrained = nll_gen(run, samples, lengths, test, epochs=1, max_steps=0)
    trained = nll_gen(run, samples, lengths, test, epochs=5, max_steps=20)
    assert trained < untrained
    assert untrained == pytest.approx(np.log(run.tokenizer.vocab_size), rel=0.2)


# ------------------------------------------------------------------------------------------ detector
def test_detector_auroc_for_run(runs):
    run = load_run(runs["gan"])
    test = held_out_corpus(run)
    samples, lengths = sample_tokens(run.generator, 64, run.max_len, rng=torch.Generator().manual_seed(0))
    value = detector_auroc_for_run(run, test, samples, lengths)
    assert 0.0 <= value <= 1.0
    # real data against itself: the detector cannot separate identical sets
    assert detector_auroc_for_run(run, test, test.tokens, test.lengths) == 0.5


def test_detector_auroc_needs_discriminator(runs):
    run = load_run(runs["mle"])
    test = held_out_corpus(run)
    with pytest.raises(LLMGanError, match="discriminator"):
        detector_auroc_for_run(run, test, test.tokens, test.lengths)


def test_evaluate_run_and_cli_with_new_metrics(runs, capsys):
    run = load_run(runs["gan"])
    out = evaluate_run(run, metrics=["nll_gen", "detector_auroc"], n_samples=64,
                       rng=torch.Generator().manual_seed(0))
    assert np.isfinite(out["nll_gen"]) and 0 <= out["detector_auroc"] <= 1
    rc = main(["evaluate", runs["gan"], "--metrics", "detector_auroc", "--n-samples", "64", "--json",
               "--device", "cpu"])
    assert rc == 0
    assert 0 <= json.loads(capsys.readouterr().out)["detector_auroc"] <= 1
    rc = main(["evaluate", runs["mle"], "--metrics", "detector_auroc", "--n-samples", "8", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("llmgan: error:") and "discriminator" in err and "\n" not in err
