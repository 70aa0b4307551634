"""LeakGAN: the hierarchical generator's leak, its losses and rewards, and a run through the engine."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from llmgan.algorithms.leakgan import intrinsic_rewards, manager_cosine, rank_rescale, token_values
from llmgan.config import config_from_dict
from llmgan.models.discriminators.cnn import CNNDiscriminator
from llmgan.models.generators import build_generator
from llmgan.models.generators.leakgan import LeakGANGenerator, LeakGANGeneratorConfig, attach_discriminator
from llmgan.models.generators.oracle import random_oracle, save_oracle_file
from llmgan.rewards import mc_rollout_rewards
from llmgan.run import load_run
from llmgan.training.engine import Trainer

V, T = 30, 8
D_KW = {"emb_dim": 8, "filter_sizes": [1, 2, 3], "num_filters": [4, 5, 6]}  # 15 features


def tiny_pair(seed: int = 0) -> tuple[LeakGANGenerator, CNNDiscriminator]:
    torch.manual_seed(seed)
    g = LeakGANGenerator(LeakGANGeneratorConfig(vocab_size=V, embed_dim=8, hidden_dim=8, goal_size=4,
                                                feature_dim=15, bos_id=0, eos_id=None, pad_id=None))
    d = CNNDiscriminator(V, **D_KW)
    return g, d


def test_registry_builds_leakgan():
    g = build_generator("leakgan", vocab_size=V, feature_dim=15, bos_id=0, eos_id=None, pad_id=None)
    assert isinstance(g, LeakGANGenerator)


def test_goals_use_the_discriminators_features():
    g, d = tiny_pair()
    x = torch.randint(0, V, (4, T))
    no_leak = g.log_probs(x)  # zero features before a fn is set
    attach_discriminator(g, d)
    leak = g.log_probs(x)
    assert not torch.allclose(no_leak, leak)
    with torch.no_grad():  # a different D -> different features -> different logits
        for p in d.parameters():
            p.add_(0.5 * torch.randn_like(p))
    assert not torch.allclose(leak, g.log_probs(x))
    # the manager's first input is the (zero) feature of the empty prefix, so only later steps change
    assert torch.allclose(no_leak[:, 0], leak[:, 0])


def test_feature_fast_path_matches_per_prefix_calls():
    g, d = tiny_pair()
    attach_discriminator(g, d)
    x = torch.randint(0, V, (3, T))
    fast = g.all_prefix_features(x)
    g._all_prefix_fn = None
    slow = g.all_prefix_features(x)
    assert fast.shape == (3, T + 1, 15)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert torch.equal(slow[:, 0], torch.zeros(3, 15))


def test_stepped_features_match_whole_prefix_features_while_sampling():
    """Sampling steps D's prefix features forward from a carry (only the new windows, from D's vocabulary
    tables): the same features as recomputing D on every prefix, so the same samples; and the tables
    follow D's updates."""
    from llmgan.models.discriminators.cnn import PrefixFeatureStepper

    g, d = tiny_pair()
    attach_discriminator(g, d)
    assert isinstance(g._stepper, PrefixFeatureStepper)
    x = torch.randint(0, V, (5, T))
    carry = g._stepper.init_carry(5, x.device)
    for t in range(1, T + 1):  # prefixes shorter and longer than the widest filter (3)
        feats, carry = g._stepper.step(x[:, :t], carry)
        torch.testing.assert_close(feats, d.features(x[:, :t]).detach(), atol=1e-5, rtol=1e-5)
    stepped = g.sample(64, T, generator=torch.Generator().manual_seed(3)).tokens
    stepper, g._stepper = g._stepper, None
    whole = g.sample(64, T, generator=torch.Generator().manual_seed(3)).tokens
    assert torch.equal(stepped, whole)
    g._stepper = stepper
    with torch.no_grad():  # an updated D: the stepper rebuilds its tables
        for p in d.parameters():
            p.add_(0.3 * torch.randn_like(p))
    feats, _ = g._stepper.step(x[:, :1], g._stepper.init_carry(5, x.device))
    torch.testing.assert_close(feats, d.features(x[:, :1]).detach(), atol=1e-5, rtol=1e-5)
    attach_discriminator(g, CNNDiscriminator(V, pad_id=0, **D_KW))  # pads after EOS: whole-prefix path
    assert g._stepper is None and g.sample(4, T).tokens.shape == (4, T)


def test_log_probs_match_sampling_and_steps():
    g, d = tiny_pair()
    attach_discriminator(g, d)
    g.eval()
    s = g.sample(6, T, generator=torch.Generator().manual_seed(1))
    lp = g.log_probs(s.tokens)
    assert torch.allclose(lp, s.log_probs, atol=1e-5)
    # step() one token at a time gives the same distribution
    state = g.init_state(6)
    tok = g._bos(6).squeeze(1)
    for t in range(T):
        logits, state = g.step(tok, state)
        assert torch.allclose(logits.log_softmax(-1).gather(1, s.tokens[:, t : t + 1]).squeeze(1), lp[:, t], atol=1e-5)
        tok = s.tokens[:, t]
    assert state.tensors[5].shape == (6, T - 1)  # the prefix of consumed tokens
    # weighted_nll is -sum(w * log p)
    w = torch.rand(6, T)
    assert torch.allclose(g.weighted_nll(s.tokens, w), -(w * lp).sum(), atol=1e-4)


def test_shared_staircase_rollouts_run_on_leakgan():
    g, d = tiny_pair()
    attach_discriminator(g, d)
    x = torch.randint(0, V, (3, T))
    r = mc_rollout_rewards(g, lambda t: torch.sigmoid(d(t)), x, 2, torch.Generator().manual_seed(0))
    assert r.shape == (3, T) and torch.all((r > 0) & (r < 1))


def test_worker_gradient_does_not_reach_the_manager():
    g, d = tiny_pair()
    attach_discriminator(g, d)
    g.nll(torch.randint(0, V, (4, T))).backward()
    assert all(p.grad is None for m in g.managed_modules() for p in m.parameters())
    assert g.worker_out.weight.grad is not None and g.goal_proj.weight.grad is not None


def test_manager_cosine_on_hand_made_vectors():
    # T = 3 goals, c = 2, F = 2; features of prefixes of length 0..3
    f = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 3.0]]])
    g = torch.tensor([[[1.0, 1.0], [0.0, 1.0], [0.0, -2.0]]])
    cos = manager_cosine(f, g, c=2)
    # goal 0: f2 - f0 = (1, 1) vs (1, 1) -> 1; goal 1: f3 - f1 = (0, 3) vs (0, 1) -> 1;
    # goal 2: cut at the end: f3 - f2 = (0, 2) vs (0, -2) -> -1
    assert torch.allclose(cos, torch.tensor([[1.0, 1.0, -1.0]]), atol=1e-6)


def test_intrinsic_reward_on_hand_made_vectors():
    f = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]])  # prefixes of length 0, 1, 2
    g = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # goal made before token 0, before token 1
    r = intrinsic_rewards(f, g, c=2)
    # token 0: i=1 only: cos(f1 - f0, g0) = cos((1,0),(1,0)) = 1
    # token 1: i=1: cos(f2 - f1, g1) = cos((0,1),(0,1)) = 1; i=2: cos(f2 - f0, g0) = cos((1,1),(1,0)) = 1/sqrt2
    expected = torch.tensor([[1.0, (1 + 1 / math.sqrt(2)) / 2]])
    assert torch.allclose(r, expected, atol=1e-6)
    assert torch.allclose(r, torch.tensor([[F.cosine_similarity(f[0, 1], g[0, 0], dim=0), expected[0, 1]]]))


def test_rank_rescale_on_hand_made_values():
    v = torch.tensor([[0.9, 0.2], [0.1, 0.2], [0.5, 0.7]])
    out = rank_rescale(v, delta=12.0)
    s = torch.sigmoid
    # column 0: ranks 1, 3, 2; column 1: 0.7 is rank 1, the tied 0.2's share ranks 2 and 3 -> 2.5
    col0 = s(12.0 * (0.5 - torch.tensor([1 / 3, 3 / 3, 2 / 3])))
    col1 = s(12.0 * (0.5 - torch.tensor([2.5 / 3, 2.5 / 3, 1 / 3])))
    assert torch.allclose(out, torch.stack([col0, col1], 1), atol=1e-6)
    # only the order matters
    assert torch.allclose(rank_rescale(v * 100 - 3, 12.0), out)


def test_token_values_take_their_blocks_value():
    q = torch.tensor([[1.0, 2.0, 3.0]])  # prefixes of length 4, 8, 10
    assert token_values(q, 4, 10).tolist() == [[1, 1, 1, 1, 2, 2, 2, 2, 3, 3]]


def test_end_to_end_through_the_engine(tmp_path, capsys):
    torch.manual_seed(0)
    oracle_path = str(tmp_path / "oracle.safetensors")
    save_oracle_file(random_oracle(vocab_size=V, embed_dim=8, hidden_dim=8, seed=1), oracle_path)
    cfg = config_from_dict({
        "name": "leak", "seed": 1,
        "data": {"oracle": oracle_path, "tokenizer": "ids", "seq_len": T, "oracle_samples": 128,
                 "oracle_test_samples": 64},
        "generator": {"name": "leakgan", "kwargs": {"embed_dim": 8, "hidden_dim": 8, "goal_size": 4,
                                                    "feature_dim": 15}},
        "discriminator": {"name": "cnn", "kwargs": {**D_KW, "dropout": 0.0}},
        "train": {"epochs": 1, "batch_size": 32, "progress": False, "lr": 0.01},
        "adversarial": {"algorithm": "leakgan", "rounds": 2, "d_pretrain_steps": 2, "d_steps": 1, "d_epochs": 1,
                        "d_samples": 64, "g_batch_size": 16, "eval_every": 1, "checkpoint_every": 1,
                        "params": {"rollouts": 2, "reward_every": 3, "pretrain_mle_every": 2,
                                   "pretrain_mle_steps": 2, "mle_every": 2, "mle_steps": 2, "mle_batch_size": 16}},
        "eval": {"n_samples": 64},
    })
    run_dir = str(tmp_path / "run")
    final = Trainer(cfg, run_dir).run()
    assert math.isfinite(final["oracle_nll"])
    rows = [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]
    adv = [r for r in rows if r["phase"] == "adversarial"]
    assert len(adv) == 2 and all(math.isfinite(r["manager_loss"]) for r in adv)
    assert "mle_worker_loss" in adv[1]  # interleaved MLE after round 2
    assert any("mle_manager_loss" in r for r in rows if r["phase"] == "d_pretrain")  # during D pre-training
    run = load_run(run_dir)
    assert run.generator.has_features  # load_run reattached the run's discriminator
    g = torch.Generator().manual_seed(0)
    s = run.generator.sample(5, T, generator=g)
    assert s.tokens.shape == (5, T) and int(s.tokens.max()) < V
    assert torch.allclose(run.generator.log_probs(s.tokens), s.log_probs, atol=1e-5)


def test_leakgan_needs_its_generator(tmp_path):
    from llmgan.errors import ConfigError

    oracle_path = str(tmp_path / "oracle.safetensors")
    save_oracle_file(random_oracle(vocab_size=V, embed_dim=8, hidden_dim=8, seed=1), oracle_path)
    cfg = config_from_dict({
        "data": {"oracle": oracle_path, "tokenizer": "ids", "seq_len": T, "oracle_samples": 32,
                 "oracle_test_samples": 32},
        "generator": {"name": "lstm", "kwargs": {"embed_dim": 8, "hidden_dim": 8}},
        "discriminator": {"name": "cnn", "kwargs": D_KW},
        "train": {"epochs": 0, "progress": False},
        "adversarial": {"algorithm": "leakgan", "rounds": 1},
    })
    with pytest.raises(ConfigError, match="generator.name: leakgan"):
        Trainer(cfg, str(tmp_path / "run")).setup()


def test_temperature_nll_reads_leakgans_own_head():
    """`llmgan sweep` scales LeakGAN's goal-weighted head (it has no lm_head): at T=1 it is corpus_nll."""
    from llmgan.data.datasets import EncodedCorpus
    from llmgan.metrics.nll import corpus_nll
    from llmgan.sweep import temperature_nll

    g, _ = tiny_pair()
    tokens = torch.randint(1, V, (12, T), generator=torch.Generator().manual_seed(4))
    corpus = EncodedCorpus(tokens, torch.full((12,), T))
    assert temperature_nll(g, corpus, 1.0) == pytest.approx(corpus_nll(g, corpus), rel=1e-5)
    assert temperature_nll(g, corpus, 0.5) != pytest.approx(temperature_nll(g, corpus, 1.0), rel=1e-3)
