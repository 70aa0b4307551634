"""MaliGAN (Che et al. 2017, "Maximum-Likelihood Augmented Discrete Generative Adversarial Networks").

G update: the discriminator's odds ``r_D(x) = D(x) / (1 - D(x))`` estimate ``p_data(x) / p_G(x)``; the
generator follows the importance-weighted MLE gradient

    grad = sum_b (w_b - b) grad log G(x_b),   w_b = r_D(x_b) / sum_b' r_D(x_b'),   b = mean_b w_b = 1/B

(normalised over the batch, so the weights sum to 1; the baseline b lowers the variance). With
``D = sigmoid(logit)`` the odds are ``exp(logit)``, so the normalised weights are exactly
``softmax(logits)`` over the batch, computed stably without ever forming ``D / (1 - D)``.
The loss is summed over the batch and the tokens (the weights already sum to one), as in
TextGAN-PyTorch's ``MaliGAN_G.adv_loss``. (TextGAN-PyTorch's ``get_mali_reward`` forms ``r / (1 - r)`` from
D's raw class-1 logit rather than its probability; this follows the paper.)

The weights sum to zero and depend on D alone, so many Adam steps against one fixed D (the preset's 50 per
round at 0.01, TextGAN-PyTorch's schedule) pull G onto what that D prefers: mode collapse by design of the
schedule, not of the estimator (configs/maligan_oracle.yaml). The paper's mixed MLE-Mali training, which
starts samples from real prefixes, is not implemented.

Sequence-level by default: TextGAN-PyTorch's ``get_mali_reward`` has a ``rollout_num`` loop, but it
re-scores the same full samples (only D's dropout differs) and performs no Monte-Carlo rollouts.
``rollouts > 0`` is an extension: the value of every prefix is the mean D probability of that many
rollouts (``llmgan.rewards.mc_rollout_rewards``, as in SeqGAN), turned into odds and normalised over
the batch per position.

D update: the engine's default (fresh samples vs real, binary cross-entropy), with the pre-training
epochs of the reference implementation (TextGAN: 2 per refresh in pre-training, 3 in adversarial).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from llmgan.algorithms.base import Algorithm, GANContext, register, train_discriminator
from llmgan.losses import realness, realness_logits
from llmgan.rewards import mc_rollout_rewards


@dataclass
class MaliGANParams:
    baseline: bool = True  # subtract b = mean normalised weight (= 1/B) (MaliGAN; TextGAN-PyTorch)
    rollouts: int = 0  # 0: one reward per sequence (paper, TextGAN-PyTorch); k > 0: k MC rollouts per prefix
    d_pretrain_epochs: int | None = 2  # epochs per refresh during D pre-training (TextGAN: 2); None: d_epochs


def mali_weights(logits: Tensor, baseline: bool = True) -> Tensor:
    """Normalised importance weights from D's logits over the batch (dim 0).

    logits (B,) or (B, T) (one column per prefix) -> (B,) or (B, T): ``softmax(logits, 0)`` (= the odds
    ``D / (1 - D)`` normalised to sum 1 over the batch) minus ``1/B`` when ``baseline``.
    """
    w = torch.softmax(logits.float(), dim=0)
    return w - 1.0 / logits.size(0) if baseline else w


def odds_logits(prob: Tensor, eps: float = 1e-6) -> Tensor:
    """log(p / (1 - p)) for a probability tensor (e.g. a Monte-Carlo mean of D), clamped away from 0 and 1."""
    p = prob.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


@register("maligan")
class MaliGAN(Algorithm):
    Params = MaliGANParams

    def g_step(self, ctx: GANContext) -> dict:
        p = self.params
        G, D = ctx.generator, ctx.discriminator
        samples = ctx.sample(ctx.cfg.g_batch_size)
        tokens, mask = samples.tokens, samples.mask()
        D.eval()
        with torch.no_grad(), ctx.autocast():
            if p.rollouts > 0:

                def score(x: Tensor) -> Tensor:
                    return realness(D(x).float(), ctx.cfg.loss)

                q = mc_rollout_rewards(G, score, tokens, p.rollouts, ctx.rng)  # (B, T) mean D of each prefix
                logits = odds_logits(q)
            else:
                logits = realness_logits(D(tokens).float(), ctx.cfg.loss)  # (B,), > 0 = real for every kind
        D.train()
        w = mali_weights(logits, p.baseline)
        weights = (w if w.dim() == 2 else w[:, None]) * mask  # (B, T), zero on padding
        with ctx.autocast():
            loss = G.weighted_nll(tokens, weights)
        g_loss = ctx.update_generator(loss)
        d_prob = torch.sigmoid(logits)
        return {
            "g_loss": g_loss,
            "reward_mean": float(d_prob.mean()),  # mean D(x) of the samples
            "mali_weight_max": float(torch.softmax(logits.float(), 0).max()),  # 1/B = uniform; ~1 = one sample
        }

    def d_step(self, ctx: GANContext) -> dict:
        p = self.params
        epochs = ctx.cfg.d_epochs
        if ctx.phase == "d_pretrain" and p.d_pretrain_epochs is not None:
            epochs = p.d_pretrain_epochs
        fake = ctx.sample(ctx.cfg.d_samples)
        real, _ = ctx.real_batch(ctx.cfg.d_samples)
        return train_discriminator(ctx, real, fake.tokens, epochs, kind=ctx.cfg.loss)
