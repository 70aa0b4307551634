"""WGAN / WGAN-GP for text, in this project's users' sign convention (``losses.py`` kind ``wgan``).

The critic's output scores how *fake* a text looks and both players minimise:

    L_D = E[D(x_real)] - E[D(G(z))]  (+ lambda * E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat between
                                        real one-hots and fake (soft) one-hots; WGAN-GP)
    L_G = E[D(G(z))]

(``adversarial.loss: wgan_standard`` flips both signs for a critic that scores realness.)

G is reached by Gumbel-softmax (``estimator: gumbel``, default: L_G on D(soft samples), gradient through
the relaxation; temperature as in RelGAN) or by policy gradient (``estimator: reinforce``: hard samples,
reward = -D(x) (the critic's "realness"), batch-mean baseline, ``-sum_t A log G(y_t | y_<t)``).
D takes ``adversarial.d_steps`` critic steps (n_critic = 5, Gulrajani et al. 2017, Algorithm 1) per G
step, each on one minibatch of fresh samples.

"wgangp": gradient penalty lambda = 10, Adam betas (0.5, 0.9) for both players (Gulrajani et al.).
"wgan": no penalty; optional weight clipping of the critic (``clip_value``; Arjovsky et al. used 0.01
with RMSProp).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from llmgan.algorithms.base import GANContext, register
from llmgan.algorithms.relgan import GumbelAlgorithm, GumbelParams, frozen, sampling_rng
from llmgan.errors import ConfigError
from llmgan.losses import d_loss, g_loss, gradient_penalty

WGAN_KINDS: tuple[str, ...] = ("wgan", "wgan_gp", "wgan_standard")


@dataclass
class WGANGPParams(GumbelParams):
    estimator: str = "gumbel"  # gumbel | reinforce: how G's loss reaches G's parameters
    gp_weight: float = 10.0  # lambda of the gradient penalty (WGAN-GP: 10); 0: none
    clip_value: float | None = None  # clamp critic weights to [-c, c] after each step (WGAN: 0.01); None: off
    d_betas: list[float] = field(default_factory=lambda: [0.5, 0.9])  # critic Adam betas (WGAN-GP: 0.5, 0.9)
    g_betas: list[float] | None = field(default_factory=lambda: [0.5, 0.9])  # G's adversarial Adam betas; None: keep
    d_grad_clip: float | None = None  # no gradient clipping in WGAN-GP (the penalty does that job)
    per_representation: bool = False  # critic scores (B,) (the mean over RelGAN representations)


@dataclass
class WGANParams(WGANGPParams):
    gp_weight: float = 0.0  # plain WGAN: no penalty
    clip_value: float | None = None  # set e.g. 0.01 for the original weight clipping


@register("wgangp")
class WGANGP(GumbelAlgorithm):
    Params = WGANGPParams

    def setup(self, ctx: GANContext) -> None:
        super().setup(ctx)
        p = self.params
        if ctx.cfg.loss not in WGAN_KINDS:
            raise ConfigError(
                f"adversarial.loss: {self.name} needs one of {', '.join(WGAN_KINDS)} (got {ctx.cfg.loss!r}); "
                "'wgan' is the users' convention (the critic scores fakeness)"
            )
        if p.estimator not in ("gumbel", "reinforce"):
            raise ConfigError(f"adversarial.params.estimator: expected gumbel|reinforce, got {p.estimator!r}")
        if p.gp_weight < 0:
            raise ConfigError(f"adversarial.params.gp_weight: expected >= 0, got {p.gp_weight}")
        # WGAN-GP's Adam betas; set on the engine's optimizers (a resume restores the same values).
        for opt, betas in ((ctx.d_opt, p.d_betas), (ctx.g_opt, p.g_betas)):
            if betas is not None and opt is not None and "betas" in opt.defaults:
                for group in opt.param_groups:
                    group["betas"] = (float(betas[0]), float(betas[1]))

    def _realness(self, kind: str, scores: torch.Tensor) -> torch.Tensor:
        """Scores turned into "higher = more real" (the users' critic scores fakeness)."""
        return scores if kind == "wgan_standard" else -scores

    def g_step(self, ctx: GANContext) -> dict:
        kind, n = ctx.cfg.loss, ctx.cfg.g_batch_size
        D = ctx.discriminator
        D.train()
        if self.params.estimator == "gumbel":
            fake = self.relaxed(ctx, n)
            with frozen(D):
                loss = g_loss(self.scores(ctx, fake.soft), kind=kind)
            ctx.log(temperature=self.beta(ctx))
            return {"g_loss": ctx.update_generator(loss)}
        # REINFORCE: reward = the critic's realness of each hard sample, batch-mean baseline.
        z = self.latent(ctx, n)
        samples = ctx.sample(n, z=z)
        with torch.no_grad():
            reward = self._realness(kind, self.scores(ctx, samples.tokens))  # (B,)
        adv = reward - reward.mean()
        mask = samples.mask()
        weights = adv[:, None] * mask / n  # (B, T)
        G = ctx.generator
        G.train()
        with ctx.autocast():
            loss = G.weighted_nll(samples.tokens, weights, z=z)
        return {"g_loss": ctx.update_generator(loss), "reward_mean": float(reward.mean())}

    def d_step(self, ctx: GANContext) -> dict:
        p, kind, n = self.params, ctx.cfg.loss, ctx.cfg.d_batch_size
        D = ctx.discriminator
        real, _ = ctx.real_batch(n)
        V = D.vocab_size
        if p.estimator == "gumbel":
            with torch.no_grad():
                fake = self.relaxed(ctx, n).soft  # (B, T, V), detached
        else:
            fake = F.one_hot(ctx.sample(n, z=self.latent(ctx, n)).tokens, V).float()
        D.train()
        real_s, fake_s = self.scores(ctx, real), self.scores(ctx, fake)
        loss = d_loss(real_s, fake_s, kind=kind)
        gp = torch.zeros((), device=ctx.device)
        if p.gp_weight > 0:
            with ctx.autocast():
                gp = gradient_penalty(
                    lambda x: D(x).float(), F.one_hot(real, V).float(), fake, p.gp_weight, generator=sampling_rng(ctx)
                )
        value = ctx.update_discriminator(loss + gp, clip=p.d_grad_clip)
        if p.clip_value is not None:
            with torch.no_grad():
                for w in D.parameters():
                    w.clamp_(-p.clip_value, p.clip_value)
        # Wasserstein estimate E[realness(real)] - E[realness(fake)] (>= 0 once the critic has learned).
        w = float((self._realness(kind, real_s).mean() - self._realness(kind, fake_s).mean()).detach())
        return {"d_loss": value, "gp": float(gp.detach()), "wasserstein": w}


@register("wgan")
class WGAN(WGANGP):
    """WGAN without the penalty (optionally with weight clipping)."""

    Params = WGANParams
