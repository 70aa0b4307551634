"""CUDA-only checks, run by benchmarks/gpu_suite.sh on a GPU machine (skipped without one)."""

from __future__ import annotations

import pytest
import torch

from llmgan.models.generators.rmc import RMCGenerator, RMCGeneratorConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_rmc_on_cuda_matches_cpu():
    torch.manual_seed(0)
    G = RMCGenerator(RMCGeneratorConfig(vocab_size=100, embed_dim=8, mem_slots=2, head_size=16, num_heads=2))
    ids = torch.randint(3, 100, (4, 9))
    h_cpu, _ = G.forward_hidden(ids, G.init_state(4))
    Gc = G.to("cuda")
    h_gpu, _ = Gc.forward_hidden(ids.cuda(), Gc.init_state(4))
    torch.testing.assert_close(h_gpu.cpu(), h_cpu, rtol=1e-4, atol=1e-4)


def test_oracle_mle_trains_on_cuda(tmp_path):
    from llmgan.config import config_from_dict
    from llmgan.models.generators.oracle import random_oracle, save_oracle_file
    from llmgan.training.engine import Trainer
    from llmgan.training.logging import read_metrics

    oracle = tmp_path / "oracle.safetensors"
    save_oracle_file(random_oracle(vocab_size=40, embed_dim=8, hidden_dim=8, seed=3), str(oracle))
    cfg = {"name": "cuda_mle", "seed": 0, "device": "cuda",
           "data": {"oracle": str(oracle), "tokenizer": "ids", "seq_len": 8, "oracle_samples": 256,
                    "oracle_test_samples": 128},
           "generator": {"name": "lstm", "kwargs": {"embed_dim": 8, "hidden_dim": 16}},
           "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "progress": False},
           "eval": {"n_samples": 64}}
    Trainer(config_from_dict(cfg), str(tmp_path / "run")).run()
    final = [r for r in read_metrics(str(tmp_path / "run")) if r["phase"] == "final"]
    assert final and final[-1]["oracle_nll"] > 0


def test_a_cpu_seeded_rng_samples_a_cuda_model_reproducibly():
    """`llmgan generate/evaluate/detect --seed` seed a CPU torch.Generator whatever the model's device."""
    from llmgan.models.generators.lstm import LSTMGenerator, LSTMGeneratorConfig

    torch.manual_seed(0)
    G = LSTMGenerator(LSTMGeneratorConfig(vocab_size=50, embed_dim=8, hidden_dim=16)).to("cuda")
    a = G.sample(16, 10, generator=torch.Generator().manual_seed(7)).tokens
    b = G.sample(16, 10, generator=torch.Generator().manual_seed(7)).tokens
    c = G.sample(16, 10, generator=torch.Generator().manual_seed(8)).tokens
    assert a.is_cuda and torch.equal(a, b) and not torch.equal(a, c)
