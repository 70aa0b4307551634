"""LeakGAN (Guo et al. 2018): a hierarchical generator steered by the discriminator's leaked features.

Needs ``generator.name: leakgan`` (``llmgan.models.generators.leakgan``): its MANAGER reads D's
feature f_t of the current prefix and emits a goal g_t (a direction in D's feature space); the WORKER
scores tokens against the projected sum of the last c goals. ``setup`` connects the run's D to the
generator, so every sample, rollout and teacher-forced pass sees D's current features.

G update (one batch of fresh samples; features f_0..f_T of every prefix, goals g_1..g_T, where the
goal for token t was made from f_{t-1}):

* values Q: mean sigmoid(D) of k Monte-Carlo rollouts (by G itself) of the prefixes of length
  c, 2c, ... and D's score of the full sequence; each token takes the value of the first valued
  prefix that contains it. "Bootstrapped rescaled activation": within each column, over the batch,
  Q_i <- sigmoid(delta * (0.5 - rank_i / B)) with rank 1 the highest (ties share their mean rank).
* MANAGER: minimize -sum_t Q_t cos(f_{t-1+c} - f_{t-1}, g_t) (the change over the next c tokens,
  cut at the end of the sequence): goals learn to point where the features of good text move.
* WORKER: REINFORCE with the intrinsic reward r_t = mean_{i=1..c} cos(f_t - f_{t-i}, g_{t-i+1})
  (did the features move the way the goals asked), optionally plus ``extrinsic_weight * Q_t``.

Interleaved training: during D pre-training, after every ``pretrain_mle_every`` D refreshes,
``pretrain_mle_steps`` MLE steps (worker NLL + the manager's unweighted cosine loss, with D's
features); during the rounds, ``mle_steps`` such steps after every ``mle_every``-th round.

Why MLE lives here and not in the engine's "mle" phase: LeakGAN's MLE needs D's features, and the
engine pre-trains G before D exists. The engine's MLE phase still works (through ``weighted_nll``,
with zero features; only the worker learns there) but the preset sets ``train.epochs: 0``.

Differences from the reference code (CR-Gjx/LeakGAN), and why:

* Dense manager loss (every step, sliding window of goals) as in the paper, not once per c-block.
* The rank uses mean ranks for ties, and Q is not divided by the number of rollouts afterwards
  (a constant factor). The reference ``rescale`` assigns ranks in dict iteration order, not sorted.
* One optimizer for G (worker and manager parameter sets are disjoint with ``detach_goals``, so one
  step of the summed loss equals the reference's two Adam steps, up to the shared gradient clip).
* No learning-rate decay (the reference decays by 0.96 every 200 / 30 steps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from llmgan.algorithms.base import Algorithm, GANContext, register
from llmgan.errors import ConfigError
from llmgan.losses import realness
from llmgan.rewards import mc_rollout_rewards


@dataclass
class LeakGANParams:
    rollouts: int = 4  # Monte-Carlo rollouts per valued prefix (LeakGAN code: 4)
    reward_every: int = 4  # value prefixes of length r, 2r, ... and the full one (LeakGAN code: r = c = 4); 1: all
    rescale: bool = True  # bootstrapped rescaled activation (rank-based rewards, LeakGAN: on)
    rescale_delta: float = 16.0  # delta in sigmoid(delta * (0.5 - rank/B)) (LeakGAN code: 16)
    extrinsic_weight: float = 0.0  # worker advantage = intrinsic + this * Q (paper: worker sees intrinsic only)
    intrinsic_weight: float = 1.0  # weight of the worker's intrinsic (goal-following) reward
    pretrain_mle_every: int = 5  # during D pre-training, MLE after every this many refreshes (code: 5); 0: off
    pretrain_mle_steps: int = 1256  # ... this many steps (code: 8 epochs of 10,000 / 64 = 1256)
    mle_every: int = 15  # interleaved MLE after every this many rounds (LeakGAN COCO code: 15); 0: off
    mle_steps: int = 157  # ... this many steps (one epoch of 10,000 / 64)
    mle_batch_size: int = 64  # batch size of the interleaved MLE steps (LeakGAN: 64)


# ---- pure functions (tested on hand-made values) -------------------------------------------------
def rank_rescale(values: Tensor, delta: float) -> Tensor:
    """Bootstrapped rescaled activation: values (B, N) -> sigmoid(delta * (0.5 - rank / B)) per column.

    rank is 1 for the highest value of a column, B for the lowest; tied values share their mean rank.
    """
    B = values.size(0)
    # [i, j, n]: is values[j, n] greater than (equal to) values[i, n]?
    greater = (values.unsqueeze(0) > values.unsqueeze(1)).sum(1).float()
    equal = (values.unsqueeze(0) == values.unsqueeze(1)).sum(1).float()  # includes i itself
    rank = greater + (equal + 1) / 2
    return torch.sigmoid(delta * (0.5 - rank / B))


def manager_cosine(features: Tensor, goals: Tensor, c: int) -> Tensor:
    """cos(f_{t-1+c} - f_{t-1}, g_t) for every goal: features (B, T+1, F), goals (B, T, F) -> (B, T).

    goals[:, j] was made from features[:, j] (the prefix before token j); its target is the feature
    change over the next c tokens, cut at the end of the sequence.
    """
    T = goals.size(1)
    ahead = torch.clamp(torch.arange(T, device=goals.device) + c, max=T)
    change = features[:, ahead] - features[:, :T]
    return F.cosine_similarity(change, goals, dim=-1)


def intrinsic_rewards(features: Tensor, goals: Tensor, c: int) -> Tensor:
    """Worker reward per token: features (B, T+1, F), goals (B, T, F) -> (B, T).

    r[:, j] (token j, 0-based) = mean over i = 1..c with j+1-i >= 0 of
    cos(features[:, j+1] - features[:, j+1-i], goals[:, j+1-i]): the feature change since a goal
    was set, compared with that goal.
    """
    B, T, _ = goals.shape
    total = goals.new_zeros(B, T)
    count = goals.new_zeros(T)
    for i in range(1, min(c, T) + 1):
        cos = F.cosine_similarity(features[:, i:] - features[:, :-i], goals[:, : T + 1 - i], dim=-1)  # (B, T+1-i)
        total[:, i - 1 :] += cos
        count[i - 1 :] += 1
    return total / count


def token_values(block_values: Tensor, every: int, T: int) -> Tensor:
    """Per-token values (B, T) from values of the prefixes of length every, 2*every, ..., T (B, N)."""
    idx = torch.clamp(torch.arange(T, device=block_values.device) // every, max=block_values.size(1) - 1)
    return block_values[:, idx]


# ---- the algorithm ---------------------------------------------------------------------------------
@register("leakgan")
class LeakGAN(Algorithm):
    Params = LeakGANParams

    def setup(self, ctx: GANContext) -> None:
        from llmgan.models.generators.leakgan import LeakGANGenerator, attach_discriminator

        if not isinstance(ctx.generator, LeakGANGenerator):
            raise ConfigError("adversarial.algorithm leakgan: needs generator.name: leakgan")
        p = self.params
        if p.rollouts < 1 or p.reward_every < 1:
            raise ConfigError("adversarial.params: rollouts and reward_every must be >= 1")
        # The feature fn holds the D module itself, so later D updates (and a resume's weights) show.
        attach_discriminator(ctx.generator, ctx.discriminator)

    def start(self, ctx: GANContext) -> None:
        from llmgan.models.generators.leakgan import attach_discriminator

        attach_discriminator(ctx.generator, ctx.discriminator)

    def score_fn(self, ctx: GANContext):
        D = ctx.discriminator

        @torch.no_grad()
        def score(tokens: Tensor) -> Tensor:  # (N, T) -> (N,) probability of "real"
            was = D.training
            D.eval()
            with ctx.autocast():
                out = realness(D(tokens).float(), ctx.cfg.loss)
            D.train(was)
            return out

        return score

    @torch.no_grad()
    def prefix_values(self, ctx: GANContext, tokens: Tensor) -> Tensor:
        """Q of the prefixes of length r, 2r, ..., T (r = reward_every): (B, ceil(T / r))."""
        p, G = self.params, ctx.generator
        score = self.score_fn(ctx)
        B, T = tokens.shape
        was = G.training
        G.eval()
        try:
            if p.reward_every == 1:  # every prefix: the shared staircase rollouts
                return mc_rollout_rewards(G, score, tokens, p.rollouts, ctx.rng)
            k = p.rollouts
            pad = G.pad_id if G.pad_id is not None else 0
            values = []
            for s in range(p.reward_every, T, p.reward_every):
                # state after [BOS, y_1 .. y_{s-1}]; the rollouts then feed y_s and sample the rest
                _, state = G.forward_hidden(torch.cat([G._bos(B), tokens[:, : s - 1]], 1), G.init_state(B))
                cont = G.sample(B * k, T - s, state=state.repeat(k), first_token=tokens[:, s - 1].repeat_interleave(k),
                                generator=ctx.rng).tokens
                full = torch.cat([tokens[:, :s].repeat_interleave(k, 0), cont], 1)
                if G.eos_id is not None:  # a prefix that already ended stays ended
                    ended = (tokens[:, :s] == G.eos_id).any(1).repeat_interleave(k)[:, None]
                    full[:, s:] = torch.where(ended, torch.full_like(full[:, s:], pad), full[:, s:])
                values.append(score(full).view(B, k).mean(1))
            values.append(score(tokens))
            return torch.stack(values, 1)
        finally:
            G.train(was)

    def g_step(self, ctx: GANContext) -> dict:
        p, G = self.params, ctx.generator
        c = G.cfg.step_size
        t0 = time.time()
        samples = ctx.sample(ctx.cfg.g_batch_size)
        tokens, mask = samples.tokens, samples.mask().float()
        t1 = time.time()
        raw = self.prefix_values(ctx, tokens)  # (B, N)
        q_blocks = rank_rescale(raw, p.rescale_delta) if p.rescale else raw
        Q = token_values(q_blocks, p.reward_every, tokens.size(1))  # (B, T)
        t2 = time.time()
        G.train()
        with ctx.autocast():
            out = G.leak_forward(tokens)
        logp = out.log_probs.float()
        goals = out.goals.float()
        r_int = intrinsic_rewards(out.features, goals.detach(), c)
        adv = p.intrinsic_weight * r_int + p.extrinsic_weight * Q
        n = mask.sum().clamp(min=1)
        worker_loss = -(adv * logp * mask).sum() / n
        manager_loss = -(Q * manager_cosine(out.features, goals, c) * mask).sum() / n
        g_loss = ctx.update_generator(worker_loss + manager_loss)
        stats = {
            "g_loss": g_loss,
            "worker_loss": float(worker_loss.detach()),
            "manager_loss": float(manager_loss.detach()),
            "reward_mean": float(raw.mean()),
            "reward_std": float(raw.std()) if raw.numel() > 1 else 0.0,
            "intrinsic_mean": float((r_int * mask).sum() / n),
        }
        t3 = time.time()
        if p.mle_every > 0 and (ctx.round + 1) % p.mle_every == 0:
            stats.update(self.mle(ctx, p.mle_steps))
        ctx.log(time_sample_s=t1 - t0, time_rollout_s=t2 - t1, time_g_update_s=t3 - t2, time_mle_s=time.time() - t3)
        return stats

    def d_step(self, ctx: GANContext) -> dict:
        stats = super().d_step(ctx)
        p = self.params
        # d_pretrain_step counts the refreshes finished before this one
        every = p.pretrain_mle_every
        if ctx.phase == "d_pretrain" and every > 0 and (ctx.d_pretrain_step + 1) % every == 0:
            stats.update(self.mle(ctx, p.pretrain_mle_steps))
        return stats

    def mle(self, ctx: GANContext, steps: int) -> dict:
        """Supervised steps on real data with D's features: worker NLL + manager cosine loss."""
        G = ctx.generator
        c = G.cfg.step_size
        G.train()
        w_tot = m_tot = 0.0
        for _ in range(steps):
            tokens, lengths = ctx.real_batch(self.params.mle_batch_size)
            mask = ctx.mask(tokens, lengths).float()
            with ctx.autocast():
                out = G.leak_forward(tokens)
            logp = out.log_probs.float()
            n = mask.sum().clamp(min=1)
            worker = -(logp * mask).sum() / n
            manager = -(manager_cosine(out.features, out.goals.float(), c) * mask).sum() / n
            ctx.update_generator(worker + manager)
            w_tot += float(worker.detach())
            m_tot += float(manager.detach())
        steps = max(steps, 1)
        return {"mle_worker_loss": w_tot / steps, "mle_manager_loss": m_tot / steps}
