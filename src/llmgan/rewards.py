"""Rewards for policy-gradient GANs: batched Monte-Carlo rollouts, dense per-step scores, baselines.

Monte-Carlo rollouts (SeqGAN): the value of prefix y_{1:t} is the mean discriminator reward of k
completions sampled from a rollout policy. Done naively this is T x k separate sampling runs that
each re-read the prefix. Here every rollout of every prefix is one row of ONE batched sampling loop
over time (a "staircase"):

    step s = 1 .. T-1:   the k rollouts of prefix length s join the batch, starting from the cached
                         policy state after y_{1:s-1} with next input y_s (state.repeat(k));
                         then every active row takes one sampling step.

All rows in the batch at step s have consumed exactly s tokens, so LSTM states and KV caches of
equal length concatenate. Total work is B*k*T(T-1)/2 row-steps (the minimum), in T-1 batched
steps, with no re-encoding of prefixes and no Python loop over rollouts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from llmgan import interrupt
from llmgan.models.base import Generator, State


@torch.no_grad()
def rollout_completions(
    policy: Generator,
    tokens: Tensor,
    n_rollouts: int,
    rng: torch.Generator | None = None,
    temperature: float = 1.0,
    prompt: Tensor | None = None,
) -> Tensor:
    """Complete every proper prefix of ``tokens`` (B, T) ``n_rollouts`` times.

    Returns (T-1, B, k, T) token ids: ``out[t-1, b, j]`` keeps ``tokens[b, :t]`` and continues it
    with the policy (prefix lengths t = 1..T-1). Positions after an EOS hold the pad id.
    """
    B, T = tokens.shape
    k = n_rollouts
    was = policy.training
    policy.eval()
    pad = policy.pad_id if policy.pad_id is not None else 0
    prefix_state = policy.init_state(B, prompt=prompt)
    prev = policy._bos(B).squeeze(1)  # input consumed to reach prefix state for length s
    active: State | None = None
    active_tok: Tensor | None = None  # (R,) the next input of each active row
    out = torch.full(((T - 1) * B * k, T), pad, dtype=torch.long, device=tokens.device)
    alive = torch.ones(0, dtype=torch.bool, device=tokens.device)
    for s in range(1, T):
        interrupt.point()  # one rollout batch per prefix length: SIGTERM is honoured here
        # prefix state after consuming [BOS, y_1 .. y_{s-1}]
        _, prefix_state = policy.forward_hidden(prev.unsqueeze(1), prefix_state)
        prev = tokens[:, s - 1]
        rows = slice((s - 1) * B * k, s * B * k)
        out[rows, :s] = tokens[:, :s].repeat_interleave(k, dim=0)
        new_state = prefix_state.repeat(k)
        new_tok = tokens[:, s - 1].repeat_interleave(k)
        new_alive = torch.ones(B * k, dtype=torch.bool, device=tokens.device)
        if policy.eos_id is not None:  # a prefix that already ended needs no completion
            new_alive = ~(tokens[:, :s] == policy.eos_id).any(1).repeat_interleave(k)
        active = new_state if active is None else State.cat([active, new_state])
        active_tok = new_tok if active_tok is None else torch.cat([active_tok, new_tok])
        alive = torch.cat([alive, new_alive])
        nxt, _, active = policy._sample_next(active_tok, active, temperature, None, None, rng)
        if policy.eos_id is not None:
            nxt = torch.where(alive, nxt, torch.full_like(nxt, pad))
            alive = alive & (nxt != policy.eos_id)
        out[: s * B * k, s] = nxt
        active_tok = nxt
    policy.train(was)
    return out.view(T - 1, B, k, T)


def _point_then(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    interrupt.point()  # per scoring batch: D on 4,096 rollouts is a long call with a large D
    return fn(x)


@torch.no_grad()
def mc_rollout_rewards(
    policy: Generator,
    score_fn: Callable[[Tensor], Tensor],
    tokens: Tensor,
    n_rollouts: int,
    rng: torch.Generator | None = None,
    score_batch: int = 4096,
    prompt: Tensor | None = None,
    score_completions: Callable[[Tensor, Tensor], Tensor | None] | None = None,
) -> Tensor:
    """SeqGAN's Q(y_{1:t}): mean score of k rollouts for t < T, the full sequence's score at t = T.

    ``score_fn`` maps token ids (N, T) to a reward per sequence (N,), e.g. sigmoid(D(x)).
    ``score_completions(tokens, completions)``, if given, may score all completions (T-1, B, k, T) at
    once -> (T-1, B, k), e.g. reusing the windows they share with their prefix; None falls back.
    Returns rewards (B, T); ``rewards[b, t-1]`` is the value of prefix ``tokens[b, :t]``.
    """
    B, T = tokens.shape
    completions = rollout_completions(policy, tokens, n_rollouts, rng, prompt=prompt)  # (T-1, B, k, T)
    scores = score_completions(tokens, completions) if score_completions is not None else None
    if scores is None:
        flat = completions.reshape(-1, T)
        scores = torch.cat([_point_then(score_fn, flat[i : i + score_batch]).float()
                            for i in range(0, flat.size(0), score_batch)])
    per_prefix = scores.float().reshape(T - 1, B, n_rollouts).mean(-1).t()  # (B, T-1)
    full = score_fn(tokens).float().view(B, 1)
    return torch.cat([per_prefix, full], dim=1)


@torch.no_grad()
def naive_mc_rollout_rewards(
    policy: Generator,
    score_fn: Callable[[Tensor], Tensor],
    tokens: Tensor,
    n_rollouts: int,
    rng: torch.Generator | None = None,
) -> Tensor:
    """Reference implementation: a Python loop over rollouts and positions, re-encoding each prefix
    (what TextGAN-PyTorch does, minus its reshape bug). Kept for tests and the speed benchmark."""
    B, T = tokens.shape
    rewards = torch.zeros(B, T)
    for _ in range(n_rollouts):
        for t in range(1, T):
            state = policy.init_state(B)
            inputs = torch.cat([policy._bos(B), tokens[:, : t - 1]], dim=1)
            _, state = policy.forward_hidden(inputs, state)
            cont = policy.sample(B, T - t, state=state, first_token=tokens[:, t - 1], generator=rng).tokens
            full = torch.cat([tokens[:, :t], cont], dim=1)
            if policy.eos_id is not None:
                ended = (tokens[:, :t] == policy.eos_id).any(1, keepdim=True)
                pad = policy.pad_id if policy.pad_id is not None else 0
                full[:, t:] = torch.where(ended, torch.full_like(full[:, t:], pad), full[:, t:])
            rewards[:, t - 1] += score_fn(full).float() / n_rollouts
    rewards[:, T - 1] = score_fn(tokens).float()
    return rewards


def group_normalized_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6, scale: bool = True) -> Tensor:
    """GRPO: rewards (G*K,) in consecutive groups of K -> (r - mean_group) / (std_group + eps).

    std_group is the sample (Bessel-corrected, ``unbiased=True``) standard deviation, as in TRL's
    ``GRPOTrainer`` (``rewards.view(-1, num_generations).std(dim=1)``) and verl's GRPO advantage
    (``torch.std``): the published GRPO/GAD runs use it, so advantages here have the same scale
    (sqrt((K-1)/K) of the population-std form: 0.94 at K = 8). group_size must be >= 2.
    """
    r = rewards.view(-1, group_size)
    adv = r - r.mean(1, keepdim=True)
    if scale:
        adv = adv / (r.std(1, keepdim=True, unbiased=True) + eps)
    return adv.reshape(-1)


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """RLOO: each sample's baseline is the mean reward of the other K-1 samples of its group."""
    r = rewards.view(-1, group_size)
    baseline = (r.sum(1, keepdim=True) - r) / max(group_size - 1, 1)
    return (r - baseline).reshape(-1)


class MovingAverageBaseline:
    """Exponential moving average of rewards per position (ScratchGAN's baseline)."""

    def __init__(self, decay: float = 0.99):
        self.decay = decay
        self.value: Tensor | None = None

    def update(self, rewards: Tensor, mask: Tensor | None = None) -> Tensor:
        """rewards (B, T) -> the baseline before this update (T,); then fold the batch in."""
        if mask is None:
            mask = torch.ones_like(rewards, dtype=torch.bool)
        m = mask.float()
        batch_mean = (rewards * m).sum(0) / m.sum(0).clamp(min=1)
        if self.value is None or self.value.shape != batch_mean.shape:
            self.value = batch_mean.detach().clone()
        baseline = self.value.clone()
        self.value = self.decay * self.value + (1 - self.decay) * batch_mean.detach()
        return baseline


def discounted_returns(rewards: Tensor, gamma: float, mask: Tensor | None = None) -> Tensor:
    """R_t = sum_{s>=t} gamma^(s-t) r_s over each row of rewards (B, T) (masked positions count 0)."""
    if mask is not None:
        rewards = rewards * mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.size(1) - 1, -1, -1):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out
