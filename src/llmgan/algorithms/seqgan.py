"""SeqGAN (Yu et al. 2017): REINFORCE with Monte-Carlo rollout rewards from a CNN discriminator.

G update: sample a batch, value every prefix by k rollouts of a delayed copy of G (the rollout
policy), scored by D's probability of "real"; minimize -sum_t Q(y_{1:t}) log G(y_t | y_{<t}).
D update: the engine's default — fresh samples against real data, binary cross-entropy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from llmgan.algorithms.base import Algorithm, GANContext, register
from llmgan.losses import realness
from llmgan.rewards import mc_rollout_rewards


@dataclass
class SeqGANParams:
    rollouts: int = 16  # Monte-Carlo rollouts per prefix (SeqGAN: 16)
    rollout_update_rate: float = 0.8  # rollout policy <- rate * policy + (1 - rate) * G after each G step
    baseline: bool = False  # subtract the batch mean reward per position (not in the paper; lowers variance)


@register("seqgan")
class SeqGAN(Algorithm):
    Params = SeqGANParams

    def setup(self, ctx: GANContext) -> None:
        self.rollout_policy = ctx.generator.frozen_reference()

    def start(self, ctx: GANContext) -> None:
        self.rollout_policy.load_state_dict(ctx.generator.state_dict())

    def extra_models(self) -> dict:
        return {"rollout_policy": self.rollout_policy}

    def reward_fn(self, ctx: GANContext):
        D = ctx.discriminator

        def score(tokens: torch.Tensor) -> torch.Tensor:
            D.eval()
            with ctx.autocast():
                return realness(D(tokens).float(), ctx.cfg.loss)  # p(real), whatever D's sign convention

        return score

    def completion_scores(self, ctx: GANContext):
        """For the CNN discriminator: score rollouts reusing the windows they share with their prefix."""
        from llmgan.models.discriminators.cnn import CNNDiscriminator, score_completions

        D = ctx.discriminator
        if not isinstance(D, CNNDiscriminator):
            return None

        def score(tokens: torch.Tensor, completions: torch.Tensor):
            D.eval()
            with ctx.autocast():
                logits = score_completions(D, tokens, completions)
            return None if logits is None else realness(logits.float(), ctx.cfg.loss)

        return score

    def g_step(self, ctx: GANContext) -> dict:
        p = self.params
        t0 = time.time()
        samples = ctx.sample(ctx.cfg.g_batch_size)
        t1 = time.time()
        rewards = mc_rollout_rewards(self.rollout_policy, self.reward_fn(ctx), samples.tokens, p.rollouts, ctx.rng,
                                     score_completions=self.completion_scores(ctx))
        t2 = time.time()
        ctx.discriminator.train()
        mask = samples.mask()
        adv = rewards
        if p.baseline:
            adv = rewards - (rewards * mask).sum(0) / mask.sum(0).clamp(min=1)
        weights = adv * mask / samples.tokens.size(0)
        with ctx.autocast():
            loss = ctx.generator.weighted_nll(samples.tokens, weights)
        g_loss = ctx.update_generator(loss)
        self._update_rollout_policy(ctx)
        ctx.log(time_sample_s=t1 - t0, time_rollout_s=t2 - t1, time_g_update_s=time.time() - t2)
        return {"g_loss": g_loss, "reward_mean": float(rewards[mask].mean()), "reward_std": float(rewards[mask].std())}

    @torch.no_grad()
    def _update_rollout_policy(self, ctx: GANContext) -> None:
        """SeqGAN copies the token embedding and smooths the recurrent/output weights.

        The embedding is whatever the generator says it is (``embedding_parameters``, tied output
        layer included), not a name match. Pairs go by state_dict key, so a LoRA view (whose
        state_dict holds only the adapters) smooths exactly the weights that train.
        """
        r = self.params.rollout_update_rate
        copy_keys = ctx.generator.embedding_parameter_names()
        src = ctx.generator.state_dict()
        for name, q in self.rollout_policy.state_dict().items():  # tensors share the policy's storage
            p = src[name]
            if name in copy_keys or not q.is_floating_point():
                q.copy_(p)
            else:
                q.mul_(r).add_(p, alpha=1 - r)
