"""Policy-gradient GANs (MaliGAN, RankGAN, ScratchGAN, GAD): their math on hand-made numbers, each one end
to end through the real engine on a tiny random oracle, and a NaN stopping the run cleanly."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from llmgan.algorithms.gad import gad_policy_loss, k3_kl, policy_log_probs
from llmgan.algorithms.maligan import mali_weights, odds_logits
from llmgan.algorithms.rankgan import rank_probs, rank_scores, ranker_loss
from llmgan.algorithms.scratchgan import dense_rewards, scratchgan_advantages
from llmgan.config import config_from_dict
from llmgan.errors import TrainingDiverged
from llmgan.models.discriminators.cnn import CNNDiscriminator
from llmgan.models.generators.lstm import LSTMGenerator, LSTMGeneratorConfig
from llmgan.models.generators.oracle import random_oracle, save_oracle_file
from llmgan.rewards import MovingAverageBaseline
from llmgan.run import load_run
from llmgan.training.engine import Trainer

ALGOS = ["maligan", "rankgan", "scratchgan", "gad"]


# --------------------------------------------------------------------------------------- MaliGAN
def test_maligan_normalized_importance_weights():
    probs = torch.tensor([0.5, 0.8, 0.2])  # odds 1, 4, 0.25
    logits = torch.log(probs / (1 - probs))
    w = mali_weights(logits, baseline=False)
    torch.testing.assert_close(w, torch.tensor([1.0, 4.0, 0.25]) / 5.25)
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    wb = mali_weights(logits, baseline=True)
    torch.testing.assert_close(wb, torch.tensor([1.0, 4.0, 0.25]) / 5.25 - 1 / 3)
    torch.testing.assert_close(wb.sum(), torch.tensor(0.0), atol=1e-6, rtol=0)
    # huge logits do not overflow (odds never formed explicitly)
    assert torch.isfinite(mali_weights(torch.tensor([200.0, 0.0]))).all()
    # per-position weights (rollouts): normalised over the batch for each column
    cols = mali_weights(torch.stack([logits, logits.flip(0)], 1), baseline=False)
    torch.testing.assert_close(cols.sum(0), torch.ones(2))
    torch.testing.assert_close(odds_logits(probs), logits)


# --------------------------------------------------------------------------------------- RankGAN
def test_rankgan_rank_scores_and_probabilities():
    feats = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    ref = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # cosines: s0 -> (1, 1/sqrt2), s1 -> (0, 1/sqrt2); summed over U and scaled by gamma = 2
    s = rank_scores(feats, ref, gamma=2.0)
    torch.testing.assert_close(s, torch.tensor([2 * (1 + 1 / math.sqrt(2)), 2 / math.sqrt(2)]))
    comp = torch.tensor([0.5, -1.0])
    p = rank_probs(s, comp)
    e = torch.exp
    expected = e(s) / (e(s) + e(comp).sum())
    torch.testing.assert_close(p, expected)
    # a candidate equal to every member of C gets 1 / (|C| + 1)
    torch.testing.assert_close(rank_probs(torch.tensor([0.3]), torch.full((4,), 0.3)), torch.tensor([0.2]))
    # ranker loss: -(mean log P(real) - mean log P(fake)), softmax over real and fake together
    real, fake = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.5, -1.0])
    log_p = torch.log_softmax(torch.cat([real, fake]), 0)
    torch.testing.assert_close(ranker_loss(real, fake), -(log_p[:2].mean() - log_p[2:].mean()))
    torch.testing.assert_close(ranker_loss(real, fake), -(real.mean() - fake.mean()))  # the normaliser cancels


# --------------------------------------------------------------------------------------- ScratchGAN
def test_scratchgan_discounted_returns_with_ewma_baseline():
    ln3 = math.log(3.0)  # 2 * sigmoid(+-ln 3) - 1 = +-0.5
    logits = torch.tensor([[ln3, -ln3, ln3], [0.0, 0.0, ln3]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    torch.testing.assert_close(dense_rewards(logits[:1]), torch.tensor([[0.5, -0.5, 0.5]]))
    base = MovingAverageBaseline(decay=0.08)
    adv, ret, b = scratchgan_advantages(logits, mask, gamma=0.5, baseline=base)
    # row 0: R2 = .5, R1 = -.5 + .25 = -.25, R0 = .5 - .125 = .375; row 1: rewards 0, 0, (masked) -> 0
    torch.testing.assert_close(ret, torch.tensor([[0.375, -0.25, 0.5], [0.0, 0.0, 0.0]]))
    mean1 = (0.375 - 0.25 + 0.5) / 5  # mean over the 5 valid positions
    torch.testing.assert_close(b, torch.tensor(mean1))
    torch.testing.assert_close(adv, torch.tensor([[0.375, -0.25, 0.5], [0.0, 0.0, 0.0]]) - mean1 * mask.float())
    # second batch: b <- 0.08 * b + 0.92 * mean(R), read after the update (as the reference code)
    logits2 = torch.full((2, 3), ln3)
    _, ret2, b2 = scratchgan_advantages(logits2, torch.ones(2, 3, dtype=torch.bool), 0.5, base)
    torch.testing.assert_close(b2, torch.tensor(0.08 * mean1 + 0.92 * float(ret2.mean())))
    # no baseline: advantages are the masked returns
    adv0, _, _ = scratchgan_advantages(logits, mask, 0.5, None)
    torch.testing.assert_close(adv0, ret)


# --------------------------------------------------------------------------------------- GAD
def test_gad_clipped_ratio_objective_and_kl():
    old = torch.log(torch.tensor([[0.2], [0.4], [0.3]]))
    ratios = torch.tensor([[1.5], [0.5], [1.1]])
    log_p = (old + torch.log(ratios)).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 1.0])
    mask = torch.ones(3, 1, dtype=torch.bool)
    loss, stats = gad_policy_loss(log_p, old, log_p.detach(), adv, mask, clip_eps=0.2, kl_coef=0.0)
    # min(1.5*1, 1.2*1) = 1.2;  min(0.5*-1, 0.8*-1) = -0.8;  min(1.1, 1.1) = 1.1
    torch.testing.assert_close(loss, torch.tensor(-(1.2 - 0.8 + 1.1) / 3))
    assert stats["clip_frac"] == pytest.approx(2 / 3)
    loss.backward()
    # clipped tokens carry no gradient; the unclipped one gets -ratio * A / n
    torch.testing.assert_close(log_p.grad, torch.tensor([[0.0], [0.0], [-1.1 / 3]]))
    # k3 KL: exp(d) - d - 1 with d = log_ref - log_p; zero when equal, >= 0 always
    lp, lr = torch.log(torch.tensor([[0.25]])), torch.log(torch.tensor([[0.5]]))
    torch.testing.assert_close(k3_kl(lp, lr), torch.tensor([[2.0 - math.log(2.0) - 1.0]]))
    assert float(k3_kl(lr, lr)) == 0.0
    # on the first PPO epoch (ratio 1) the policy part is -mean(A); the KL term adds kl_coef * mean(k3)
    lp2 = torch.log(torch.tensor([[0.25, 0.5], [0.5, 0.5]]))
    ref2 = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.25]]))
    m2 = torch.tensor([[True, True], [True, False]])
    loss2, stats2 = gad_policy_loss(lp2, lp2, ref2, torch.tensor([2.0, -1.0]), m2, 0.2, kl_coef=0.1)
    kl_mean = (2.0 - math.log(2.0) - 1.0) / 3
    torch.testing.assert_close(loss2, torch.tensor(-(2 + 2 - 1) / 3 + 0.1 * kl_mean))
    assert stats2["kl"] == pytest.approx(kl_mean, rel=1e-5)


def test_gad_policy_log_probs_use_the_sampling_temperature():
    torch.manual_seed(0)
    g = LSTMGenerator(LSTMGeneratorConfig(vocab_size=11, embed_dim=8, hidden_dim=8, bos_id=0, eos_id=None, pad_id=None))
    tokens = torch.randint(0, 11, (3, 5))
    torch.testing.assert_close(policy_log_probs(g, tokens, 1.0), g.log_probs(tokens))
    h = g.hidden(tokens)
    expected = torch.log_softmax(g.lm_head(h) / 0.7, -1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(policy_log_probs(g, tokens, 0.7), expected)


# --------------------------------------------------------------------------------------- end to end
ALGO_PARAMS = {
    "maligan": {},
    "rankgan": {"rollouts": 2, "ref_size": 4},
    "scratchgan": {},
    "gad": {"group_size": 4, "ppo_epochs": 2, "reward": "bradley_terry"},
}


@pytest.fixture(scope="module")
def oracle_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("oracle") / "oracle.safetensors")
    save_oracle_file(random_oracle(vocab_size=30, embed_dim=8, hidden_dim=8, seed=5), path)
    return path


def tiny_config(oracle_path: str, algo: str, **adv) -> dict:
    return {
        "name": f"tiny_{algo}",
        "seed": 0,
        "data": {"oracle": oracle_path, "tokenizer": "ids", "seq_len": 8, "oracle_samples": 128,
                 "oracle_test_samples": 64},
        "generator": {"name": "lstm", "kwargs": {"embed_dim": 16, "hidden_dim": 16}},
        "discriminator": {"name": "cnn", "kwargs": {"emb_dim": 16, "filter_sizes": [2, 3], "num_filters": [8, 8]}},
        "train": {"epochs": 1, "batch_size": 32, "progress": False, "log_every": 1},
        "adversarial": {"algorithm": algo, "rounds": 2, "g_steps": 1, "d_steps": 1, "d_epochs": 1,
                        "d_pretrain_steps": 1, "d_samples": 32, "d_batch_size": 16, "g_batch_size": 16,
                        "eval_every": 1, "checkpoint_every": 1, "params": ALGO_PARAMS[algo], **adv},
        "eval": {"n_samples": 32, "batch_size": 32},
    }


@pytest.mark.parametrize("algo", ALGOS)
def test_end_to_end_through_the_engine(algo, oracle_path, tmp_path):
    run_dir = str(tmp_path / algo)
    final = Trainer(config_from_dict(tiny_config(oracle_path, algo)), run_dir).run()
    assert math.isfinite(final["oracle_nll"])
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    adv = [r for r in records if r["phase"] == "adversarial"]
    assert [r["round"] for r in adv] == [1, 2]
    for r in adv:
        assert math.isfinite(r["g_loss"]) and math.isfinite(r["d_loss"])
    if algo == "gad":
        for key in ("reward_mean", "reward_std", "zero_var_groups", "response_len", "kl", "clip_frac"):
            assert key in adv[-1], key
        assert adv[-1]["response_len"] == 8.0  # the oracle has no EOS
    run = load_run(run_dir)
    s = run.generator.sample(4, run.max_len, generator=torch.Generator().manual_seed(0))
    assert s.tokens.shape == (4, 8) and int(s.tokens.max()) < 30


@pytest.mark.parametrize("algo", ALGOS)
def test_nan_in_the_generator_loss_stops_the_run_with_an_intact_checkpoint(algo, oracle_path, tmp_path, monkeypatch):
    # D turns NaN after MLE and D pre-training: the first G update sees NaN rewards
    fwd, feats = CNNDiscriminator.forward, CNNDiscriminator.features
    monkeypatch.setattr(CNNDiscriminator, "forward", lambda self, *a, **k: fwd(self, *a, **k) * float("nan"))
    monkeypatch.setattr(CNNDiscriminator, "features", lambda self, *a, **k: feats(self, *a, **k) * float("nan"))
    run_dir = str(tmp_path / algo)
    cfg = config_from_dict(tiny_config(oracle_path, algo, d_pretrain_steps=0))
    cfg.train.epochs = 0
    with pytest.raises(TrainingDiverged, match=r"loss became nan .*last good checkpoint: .*step-"):
        Trainer(cfg, run_dir).run()
    run = load_run(run_dir)  # the checkpoint written before the failure is complete and loads
    assert run.generator.sample(2, 8).tokens.shape == (2, 8)
