"""Keras 3 models (torch backend) as players: ``keras:<file.py>:<factory>`` generators and discriminators
train in the engine on an oracle (MLE, then two SeqGAN rounds), checkpoint, reload and sample; and
``import llmgan`` never imports keras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")  # what llmgan.models.keras sets before its first import
pytest.importorskip("keras", reason="keras players need the 'keras' extra: pip install 'llmgan[keras]'")

from llmgan.config import ModelConfig, config_from_dict  # noqa: E402
from llmgan.data import build_tokenizer  # noqa: E402
from llmgan.errors import ConfigError  # noqa: E402
from llmgan.models.factory import make_discriminator, make_generator  # noqa: E402
from llmgan.models.generators.oracle import random_oracle, save_oracle_file  # noqa: E402
from llmgan.run import load_run  # noqa: E402
from llmgan.training.engine import Trainer  # noqa: E402

MODELS = '''
import keras


def generator(vocab_size, units=16):
    return keras.Sequential([keras.layers.Embedding(vocab_size, units),
                             keras.layers.LSTM(units, return_sequences=True),
                             keras.layers.Dense(vocab_size)])


def discriminator(vocab_size, units=16):
    return keras.Sequential([keras.layers.Embedding(vocab_size, units), keras.layers.LSTM(units),
                             keras.layers.Dense(1)])


def softmax_generator(vocab_size):
    return keras.Sequential([keras.layers.Embedding(vocab_size, 8),
                             keras.layers.Dense(vocab_size, activation="softmax")])
'''


@pytest.fixture
def models_file(tmp_path) -> str:
    path = tmp_path / "keras_models.py"
    path.write_text(MODELS)
    return str(path)


def test_keras_generator_is_causal_and_matches_its_keras_logits(models_file):
    tok = build_tokenizer("word", ["a b c d e f"])
    g = make_generator(ModelConfig(f"keras:{models_file}:generator", {"units": 8}), tok).eval()
    y = torch.randint(0, g.vocab_size, (3, 6))
    inputs = torch.cat([torch.full((3, 1), g.bos_id), y[:, :-1]], 1)
    with torch.no_grad():
        ref = g.model(inputs, training=False).log_softmax(-1).gather(-1, y[..., None])[..., 0]
        torch.testing.assert_close(g.log_probs(y), ref, atol=1e-5, rtol=1e-5)
        s = g.sample(4, 6, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(s.log_probs[s.mask()], g.log_probs(s.tokens)[s.mask()], atol=1e-5, rtol=1e-5)
    # gradients reach the Keras variables through the fused loss
    g.train()
    g.weighted_nll(y, torch.full((3, 6), 1 / 18)).backward()
    assert all(p.grad is not None for p in g.parameters() if p.requires_grad)
    with pytest.raises(ConfigError, match="last layer must be Dense"):
        make_generator(ModelConfig(f"keras:{models_file}:softmax_generator"), tok)
    with pytest.raises(ConfigError, match="no callable 'nope'"):
        make_generator(ModelConfig(f"keras:{models_file}:nope"), tok)
    d = make_discriminator(ModelConfig(f"keras:{models_file}:discriminator"), tok)
    assert d(y).shape == (3,) and d(y, prompt=y[:, :2]).shape == (3,)


def test_keras_lstm_trains_mle_and_seqgan_on_the_oracle(models_file, tmp_path):
    oracle = str(tmp_path / "oracle.safetensors")
    save_oracle_file(random_oracle(vocab_size=30, embed_dim=8, hidden_dim=8, seed=5), oracle)
    cfg = config_from_dict({
        "name": "keras_seqgan", "seed": 0,
        "data": {"oracle": oracle, "tokenizer": "ids", "seq_len": 8, "oracle_samples": 256, "oracle_test_samples": 64},
        "generator": {"name": f"keras:{models_file}:generator", "kwargs": {"units": 16}},
        "discriminator": {"name": f"keras:{models_file}:discriminator", "kwargs": {"units": 8}},
        "train": {"epochs": 4, "batch_size": 32, "lr": 0.01, "progress": False, "log_every": 1, "eval_every": 1},
        "adversarial": {"algorithm": "seqgan", "rounds": 2, "g_steps": 1, "d_steps": 1, "d_epochs": 1,
                        "d_pretrain_steps": 1, "d_samples": 32, "d_batch_size": 16, "g_batch_size": 8,
                        "eval_every": 1, "checkpoint_every": 1, "params": {"rollouts": 2}},
        "eval": {"n_samples": 64, "batch_size": 32},
    })
    run_dir = str(tmp_path / "run")
    final = Trainer(cfg, run_dir).run()
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    mle = [r["oracle_nll"] for r in records if r["phase"] == "eval" and r["round"] == 0 and "oracle_nll" in r]
    assert len(mle) >= 2 and mle[-1] < mle[0] - 0.05, mle  # MLE learns the oracle
    adv = [r for r in records if r.get("phase") == "adversarial" and "g_loss" in r]
    assert [r["round"] for r in adv] == [1, 2] and all(r["d_loss"] == r["d_loss"] for r in adv)
    assert final["oracle_nll"] == final["oracle_nll"]
    run = load_run(run_dir)  # the Keras weights come back from the safetensors checkpoint
    s = run.generator.sample(4, run.max_len, generator=torch.Generator().manual_seed(0))
    assert s.tokens.shape == (4, 8) and int(s.tokens.max()) < 30


def test_import_llmgan_does_not_import_keras():
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = ("import sys, llmgan, llmgan.cli, llmgan.models.factory, llmgan.run; "
            "assert 'keras' not in sys.modules, 'keras imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": src})
    assert proc.returncode == 0, proc.stderr[-2000:]
