"""Rewards for policy-gradient GANs (llmgan.rewards): REINFORCE direction, batched MC rollouts against the
naive reference, rollout bookkeeping (TextGAN-PyTorch issue #62: a reshape without a transpose put
rewards on the wrong sequence), EOS handling, group/RLOO advantages, moving-average baseline, returns."""

from __future__ import annotations

import math

import pytest
import torch

from llmgan.models.generators.lstm import LSTMGenerator, LSTMGeneratorConfig
from llmgan.models.generators.oracle import random_oracle
from llmgan.rewards import (
    MovingAverageBaseline,
    discounted_returns,
    group_normalized_advantages,
    mc_rollout_rewards,
    naive_mc_rollout_rewards,
    rloo_advantages,
    rollout_completions,
)


def tiny_generator(vocab: int = 8, eos: int | None = None, seed: int = 0) -> LSTMGenerator:
    torch.manual_seed(seed)
    pad = 0 if eos is not None else None
    bos = 1 if eos is not None else 0
    cfg = LSTMGeneratorConfig(vocab_size=vocab, embed_dim=8, hidden_dim=8, bos_id=bos, eos_id=eos, pad_id=pad)
    return LSTMGenerator(cfg)


def even_fraction(x: torch.Tensor) -> torch.Tensor:
    return (x % 2 == 0).float().mean(1)


# --------------------------------------------------------------------------------------- REINFORCE
def test_reinforce_with_fixed_reward_raises_rewarded_sequence_log_prob():
    g = tiny_generator(vocab=6)
    target = torch.tensor([[3, 1, 4, 1, 5]])
    rng = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(g.parameters(), lr=0.05)
    with torch.no_grad():
        before = float(g.log_probs(target).sum())
    for _ in range(10):
        others = g.sample(31, 5, generator=rng).tokens
        tokens = torch.cat([target, others])
        reward = (tokens == target).all(1).float()  # +1 on the target sequence only
        weights = reward[:, None].expand_as(tokens) / tokens.size(0)
        loss = g.weighted_nll(tokens, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(g.log_probs(target).sum())
    assert after > before + 2.0, (before, after)


# --------------------------------------------------------------------------------------- MC rollouts
def test_batched_rollouts_match_naive_reward_distribution():
    torch.manual_seed(0)
    oracle = random_oracle(vocab_size=8, embed_dim=8, hidden_dim=8, seed=3)
    B, T, k = 3, 5, 300
    tokens = oracle.sample(B, T, generator=torch.Generator().manual_seed(1)).tokens
    batched = mc_rollout_rewards(oracle, even_fraction, tokens, k, torch.Generator().manual_seed(2))
    naive = naive_mc_rollout_rewards(oracle, even_fraction, tokens, k, torch.Generator().manual_seed(3))
    assert batched.shape == naive.shape == (B, T)
    # the full sequence is scored exactly
    torch.testing.assert_close(batched[:, -1], even_fraction(tokens))
    torch.testing.assert_close(naive[:, -1], even_fraction(tokens))
    # per-prefix std of one rollout's score, from an independent batch of completions
    comp = rollout_completions(oracle, tokens, k, torch.Generator().manual_seed(4))  # (T-1, B, k, T)
    std = even_fraction(comp.reshape(-1, T)).view(T - 1, B, k).std(-1).t()  # (B, T-1)
    tol = 5 * math.sqrt(2.0) * std / math.sqrt(k) + 1e-6  # 5 sigma of a difference of two k-means
    diff = (batched[:, :-1] - naive[:, :-1]).abs()
    assert bool((diff <= tol).all()), (diff, tol)
    assert float(std.max()) > 0  # the comparison is not vacuous


def test_rollouts_keep_each_rows_prefix_and_land_on_the_right_sequence():
    g = tiny_generator(vocab=12)
    B, T, k = 3, 7, 5  # all different, so a reshape mixing axes cannot pass
    rng = torch.Generator().manual_seed(0)
    tokens = g.sample(B, T, generator=rng).tokens
    tokens[:, 0] = torch.tensor([7, 9, 11])  # sequence id in the first token
    out = rollout_completions(g, tokens, k, torch.Generator().manual_seed(1))
    assert out.shape == (T - 1, B, k, T)
    for t in range(1, T):
        for b in range(B):
            assert torch.equal(out[t - 1, b, :, :t], tokens[b, :t].expand(k, t)), (t, b)
    # a deterministic score: the id in the first token -> every reward of row b is b's id
    rewards = mc_rollout_rewards(g, lambda x: x[:, 0].float(), tokens, k, torch.Generator().manual_seed(2))
    torch.testing.assert_close(rewards, tokens[:, :1].float().expand(B, T))
    # the token at position 3 is fixed for prefixes of length >= 4: rewards[b, t-1] == tokens[b, 3]
    rewards = mc_rollout_rewards(g, lambda x: x[:, 3].float(), tokens, k, torch.Generator().manual_seed(3))
    torch.testing.assert_close(rewards[:, 3:], tokens[:, 3:4].float().expand(B, T - 3))
    # rollouts are actually random after the prefix (position 1 varies across the k rollouts of t=1)
    assert len(set(out[0, :, :, 1].flatten().tolist())) > 1


def test_rollouts_respect_eos():
    eos, pad = 2, 0
    g = tiny_generator(vocab=8, eos=eos)
    with torch.no_grad():
        g.lm_head.bias[eos] += 2.0  # make EOS frequent in the rollouts
    T, k = 6, 8
    tokens = torch.tensor([[5, eos, pad, pad, pad, pad], [4, 5, 6, 7, 3, 5]])
    out = rollout_completions(g, tokens, k, torch.Generator().manual_seed(0))
    for t in range(2, T):  # row 0's prefix already holds its EOS: nothing is appended
        assert bool((out[t - 1, 0, :, t:] == pad).all()), t
    flat = out.reshape(-1, T)
    saw_eos = False
    for row in flat.tolist():  # after the first EOS of any completion, only padding
        if eos in row:
            saw_eos = True
            i = row.index(eos)
            assert all(v == pad for v in row[i + 1 :]), row
    assert saw_eos

    def n_tokens(x: torch.Tensor) -> torch.Tensor:
        return (x != pad).float().sum(1)

    rewards = mc_rollout_rewards(g, n_tokens, tokens, k, torch.Generator().manual_seed(1))
    torch.testing.assert_close(rewards[0, 1:], torch.full((T - 1,), 2.0))  # "5 EOS" for every prefix >= 2
    naive = naive_mc_rollout_rewards(g, n_tokens, tokens, k, torch.Generator().manual_seed(2))
    torch.testing.assert_close(naive[0, 1:], torch.full((T - 1,), 2.0))


# --------------------------------------------------------------------------------------- baselines
def test_group_normalized_advantages_hand_computed():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0, 4.0, 4.0])
    s = 1.0  # sample (Bessel-corrected) std of 1, 2, 3, as TRL and verl (the population std would be sqrt(2/3))
    expected = torch.tensor([-1 / s, 0.0, 1 / s, 0.0, 0.0, 0.0])
    torch.testing.assert_close(group_normalized_advantages(r, 3, eps=0.0 + 1e-12), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(group_normalized_advantages(r, 3, scale=False), torch.tensor([-1.0, 0, 1, 0, 0, 0]))
    # a group with identical rewards gives exactly zero advantage (no NaN from 0 / 0)
    assert torch.equal(group_normalized_advantages(r, 3)[3:], torch.zeros(3))


def test_rloo_advantages_hand_computed():
    r = torch.tensor([1.0, 2.0, 3.0, 0.0, 4.0, 8.0])
    # baselines: (2+3)/2, (1+3)/2, (1+2)/2 | (4+8)/2, (0+8)/2, (0+4)/2
    expected = torch.tensor([1 - 2.5, 2 - 2.0, 3 - 1.5, 0 - 6.0, 4 - 4.0, 8 - 2.0])
    torch.testing.assert_close(rloo_advantages(r, 3), expected)


def test_moving_average_baseline_hand_computed():
    b = MovingAverageBaseline(decay=0.5)
    first = b.update(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    torch.testing.assert_close(first, torch.tensor([2.0, 3.0]))  # initialised to the first batch mean
    second = b.update(torch.tensor([[5.0, 7.0], [7.0, 9.0]]))
    torch.testing.assert_close(second, torch.tensor([2.0, 3.0]))  # returns the value before the update
    torch.testing.assert_close(b.value, torch.tensor([4.0, 5.5]))  # 0.5 * [2, 3] + 0.5 * [6, 8]
    masked = MovingAverageBaseline(decay=0.9)
    masked.update(torch.tensor([[1.0, 100.0], [3.0, 4.0]]), torch.tensor([[True, False], [True, True]]))
    torch.testing.assert_close(masked.value, torch.tensor([2.0, 4.0]))


def test_discounted_returns_hand_computed():
    r = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    expected = torch.tensor([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0], [0.25, 0.5, 1.0]])
    torch.testing.assert_close(discounted_returns(r, 0.5), expected)
    masked = discounted_returns(r, 0.5, torch.tensor([[1, 1, 0], [1, 1, 1]]).float())
    torch.testing.assert_close(masked[0], torch.tensor([2.0, 2.0, 0.0]))
    torch.testing.assert_close(discounted_returns(r, 0.0), r)


@pytest.mark.parametrize("gamma", [1.0])
def test_discounted_returns_undiscounted_is_reverse_cumsum(gamma):
    r = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(discounted_returns(r, gamma), r.flip(1).cumsum(1).flip(1))
