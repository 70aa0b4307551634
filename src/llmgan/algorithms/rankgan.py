"""RankGAN (Lin et al. 2017, "Adversarial Ranking for Language Generation").

The discriminator is a *ranker*: it embeds sentences (``discriminator.features``, the CNN's highway
features) and scores a sentence s against a reference set U of real sentences by cosine similarity,

    alpha(s | U) = gamma * sum_{u in U} cos(y_s, y_u)                                   (score)
    P(s | U, C)  = exp(alpha(s | U)) / sum_{s' in C u {s}} exp(alpha(s' | U))          (rank score)

The sum over U (not the mean) and ``gamma = 1``, ``|U| = 16`` follow the authors' code
(cookielee77/RankGan-NIPS2017 ``ranker.py``/``main.py``); the paper writes the expectation over U,
which is the same up to a factor |U| in gamma.

D update: each minibatch holds ``d_batch_size`` real and ``d_batch_size`` generated sentences and a
fresh reference set; the comparison set is the whole minibatch, and the ranker minimises
``-(mean_real log P - mean_fake log P)`` (rank real sentences above generated ones).

G update: SeqGAN's REINFORCE with Monte-Carlo rollouts (16, delayed rollout policy with update rate
0.8), the reward of a (completed) sentence being its rank score ``P(s | U, C)``. As in the authors'
code the comparison set C is the batch of generated sentences (``comparison: generated``; the paper's
alternative, human-written sentences, is ``comparison: real``), and one reference set is drawn per G
step. The loss is ``-sum_{b,t} Q_bt log G(y_bt | y_<t)`` (summed, as in the authors' code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from llmgan.algorithms.base import GANContext, register, train_discriminator
from llmgan.algorithms.seqgan import SeqGAN
from llmgan.errors import ConfigError
from llmgan.rewards import mc_rollout_rewards


@dataclass
class RankGANParams:
    rollouts: int = 16  # Monte-Carlo rollouts per prefix (RankGAN code: 16)
    rollout_update_rate: float = 0.8  # rollout policy <- rate * policy + (1 - rate) * G (RankGAN code: 0.8)
    baseline: bool = False  # subtract the batch mean reward per position (not in the paper)
    gamma: float = 1.0  # temperature on the summed cosine similarities (RankGAN code: 1)
    ref_size: int = 16  # |U|, real reference sentences per ranking (RankGAN code: 16)
    comparison: str = "generated"  # G's comparison set C: generated (authors' code) | real (paper's C+)
    d_pretrain_epochs: int | None = 3  # epochs per refresh in ranker pre-training (RankGAN: 50 x 3); None: d_epochs


def rank_scores(feats: Tensor, ref_feats: Tensor, gamma: float) -> Tensor:
    """alpha(s | U) = gamma * sum_u cos(y_s, y_u): feats (N, F), ref_feats (R, F) -> (N,)."""
    sim = F.normalize(feats.float(), dim=-1) @ F.normalize(ref_feats.float(), dim=-1).t()  # (N, R)
    return gamma * sim.sum(1)


def rank_probs(scores: Tensor, comparison_scores: Tensor) -> Tensor:
    """P(s | U, C) for each candidate on its own against the set C.

    scores (N,) candidates' alpha; comparison_scores (M,) alpha of C. Returns (N,):
    ``exp(a_s) / (exp(a_s) + sum_c exp(a_c))`` (the candidate joins the comparison set), via logsumexp.
    """
    lse_c = torch.logsumexp(comparison_scores.float(), dim=0)
    return torch.exp(scores - torch.logaddexp(scores, lse_c.expand_as(scores)))


def ranker_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """-(mean log P(real) - mean log P(fake)), the softmax taken over real and fake together."""
    log_p = torch.log_softmax(torch.cat([real_scores, fake_scores]).float(), dim=0)
    n = real_scores.size(0)
    return -(log_p[:n].mean() - log_p[n:].mean())


@register("rankgan")
class RankGAN(SeqGAN):
    """Shares SeqGAN's delayed rollout policy (setup/start/extra_models and its update)."""

    Params = RankGANParams

    def setup(self, ctx: GANContext) -> None:
        if self.params.comparison not in ("generated", "real"):
            raise ConfigError(f"adversarial.params.comparison: expected generated|real, got {self.params.comparison!r}")
        if not hasattr(ctx.discriminator, "features"):
            raise ConfigError("rankgan needs a discriminator with features() (cnn, relgan_cnn, transformer)")
        super().setup(ctx)

    def reward_fn(self, ctx: GANContext, comparison: Tensor):
        """score_fn for the rollouts: token ids (N, T) -> rank score (N,) against one U and C."""
        D, p = ctx.discriminator, self.params
        ref, _ = ctx.real_batch(p.ref_size)
        D.eval()
        with torch.no_grad(), ctx.autocast():
            ref_feats = D.features(ref).float()
            comp_scores = rank_scores(D.features(comparison).float(), ref_feats, p.gamma)

        def score(tokens: Tensor) -> Tensor:
            D.eval()
            with ctx.autocast():
                return rank_probs(rank_scores(D.features(tokens).float(), ref_feats, p.gamma), comp_scores)

        return score

    def g_step(self, ctx: GANContext) -> dict:
        p = self.params
        samples = ctx.sample(ctx.cfg.g_batch_size)
        comparison = samples.tokens if p.comparison == "generated" else ctx.real_batch(ctx.cfg.g_batch_size)[0]
        rewards = mc_rollout_rewards(self.rollout_policy, self.reward_fn(ctx, comparison), samples.tokens,
                                     p.rollouts, ctx.rng)  # (B, T)
        ctx.discriminator.train()
        mask = samples.mask()
        adv = rewards
        if p.baseline:
            adv = rewards - (rewards * mask).sum(0) / mask.sum(0).clamp(min=1)
        with ctx.autocast():
            loss = ctx.generator.weighted_nll(samples.tokens, adv * mask)
        g_loss = ctx.update_generator(loss)
        self._update_rollout_policy(ctx)
        # rank score x (|C| + 1): 1 = ranked like an average member of the comparison set
        n_c = comparison.size(0) + 1
        return {"g_loss": g_loss, "reward_mean": float(rewards[mask].mean()),
                "rank_vs_uniform": float(rewards[:, -1].mean() * n_c)}

    def d_step(self, ctx: GANContext) -> dict:
        p, D, cfg = self.params, ctx.discriminator, ctx.cfg
        epochs = cfg.d_epochs
        if ctx.phase == "d_pretrain" and p.d_pretrain_epochs is not None:
            epochs = p.d_pretrain_epochs
        fake = ctx.sample(cfg.d_samples).tokens
        real, _ = ctx.real_batch(cfg.d_samples)

        def batch_loss(r: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            ref, _ = ctx.real_batch(p.ref_size)  # a fresh reference set per minibatch (authors' code)
            feats = D.features(torch.cat([r, f, ref])).float()
            ref_feats = feats[len(r) + len(f) :]
            s_r = rank_scores(feats[: len(r)], ref_feats, p.gamma)
            s_f = rank_scores(feats[len(r) : len(r) + len(f)], ref_feats, p.gamma)
            # "accuracy" of a ranker: a sentence ranked above / below the minibatch's median score
            med = torch.cat([s_r, s_f]).median().detach()
            return ranker_loss(s_r, s_f), (s_r > med).float().mean(), (s_f <= med).float().mean()

        return train_discriminator(ctx, real, fake, epochs, batch_loss=batch_loss)
