"""ScratchGAN (de Masson d'Autume et al. 2019, "Training Language GANs from Scratch").

Dense rewards instead of Monte-Carlo rollouts: the discriminator scores every prefix in one pass
(``D(x, per_step=True)`` -> (B, T) logits), and (deepmind-research ``scratchgan/losses.py``)

    r_t = 2 * sigmoid(D(y_{1:t})) - 1                  (in [-1, 1]; "more stable than MaskGAN's log D")
    R_t = sum_{s >= t} gamma^(s - t) r_s               (gamma = 0.23)
    A_t = R_t - b,  b <- decay * b + (1 - decay) * mean(R)   (one scalar EWMA over batch and time, decay 0.08)
    L_G = -mean_{b,t} A_t log G(y_t | y_<t)

The baseline is read *after* folding the current batch in, as the reference code does (its update op
runs before the advantage). Unlike the reference (which starts b at 0) the first batch initialises b
to its own mean; the baseline is checkpointed with the run (``state_dict``), so a resumed run continues
exactly. ``baseline: per_position`` keeps one EWMA per position instead. Rewards
are read with D in eval mode (no dropout noise in the reward; the reference shares D's training-mode
forward pass between the two losses).

D update: one step on a fresh batch of ``d_batch_size`` real and generated sequences, the per-prefix
logits trained with ``cfg.loss`` (ScratchGAN: cross-entropy, i.e. ``vanilla``) plus a small L2 penalty
(``l2 * sum ||w||^2 / 2``, ScratchGAN: 1e-6). Adam beta1 = 0.5 for D (``d_beta1``; G's comes from
``train.betas``). The large batches (512), learning rates and 1:1 G/D steps live in the preset.
Training from scratch works: set ``train.epochs: 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from llmgan.algorithms.base import Algorithm, GANContext, register
from llmgan.errors import ConfigError
from llmgan.losses import d_loss, realness_logits
from llmgan.rewards import MovingAverageBaseline, discounted_returns


@dataclass
class ScratchGANParams:
    gamma: float = 0.23  # discount factor of the cumulative reward (ScratchGAN: 0.23)
    baseline_decay: float = 0.08  # EWMA decay: b <- decay * b + (1 - decay) * mean R (ScratchGAN: 0.08)
    baseline: str = "scalar"  # scalar (ScratchGAN: one EWMA over batch and time) | per_position | none
    l2: float = 1e-6  # L2 regularisation of D's weights (ScratchGAN: 1e-6)
    d_beta1: float | None = 0.5  # Adam beta1 of the discriminator (ScratchGAN: 0.5); None: keep the engine's


def dense_rewards(logits: Tensor) -> Tensor:
    """ScratchGAN's per-step reward 2 * sigmoid(logit) - 1: (B, T) -> (B, T), in [-1, 1]."""
    return 2.0 * torch.sigmoid(logits.float()) - 1.0


def scratchgan_advantages(
    logits: Tensor, mask: Tensor, gamma: float, baseline: MovingAverageBaseline | None, per_position: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-step advantages from per-prefix logits (B, T) and a bool mask (B, T).

    Returns (advantages (B, T) zero on padding, discounted returns (B, T), the baseline used: a scalar
    tensor, or (T,) with ``per_position``). The baseline is updated with this batch first.
    """
    m = mask.float()
    returns = discounted_returns(dense_rewards(logits), gamma, m)
    if baseline is None:
        b = torch.zeros((), device=returns.device)
    elif per_position:
        baseline.update(returns, mask)
        b = baseline.value
    else:
        # one "position" holding every valid (b, t): the moving average of mean R over batch and time
        baseline.update(returns.reshape(-1, 1), mask.reshape(-1, 1))
        b = baseline.value.reshape(())
    return (returns - b) * m, returns, b


@register("scratchgan")
class ScratchGAN(Algorithm):
    Params = ScratchGANParams

    def setup(self, ctx: GANContext) -> None:
        p = self.params
        if p.baseline not in ("scalar", "per_position", "none"):
            raise ConfigError(f"adversarial.params.baseline: expected scalar|per_position|none, got {p.baseline!r}")
        self.baseline = None if p.baseline == "none" else MovingAverageBaseline(p.baseline_decay)
        if p.d_beta1 is not None and ctx.d_opt is not None:
            for group in ctx.d_opt.param_groups:  # set before a resume reloads the optimizer (which keeps it)
                group["betas"] = (p.d_beta1, group["betas"][1])

    def state_dict(self) -> dict:
        value = None if self.baseline is None or self.baseline.value is None else self.baseline.value
        # float32 -> Python float -> JSON round-trips exactly
        return {"baseline": None if value is None else {"shape": list(value.shape), "values": value.flatten().tolist()}}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        saved = state.get("baseline")
        if self.baseline is not None and saved is not None:
            values = torch.tensor(saved["values"], dtype=torch.float32, device=device)
            self.baseline.value = values.view(saved["shape"])

    def g_step(self, ctx: GANContext) -> dict:
        p = self.params
        G, D = ctx.generator, ctx.discriminator
        samples = ctx.sample(ctx.cfg.g_batch_size)
        mask = samples.mask()
        D.eval()
        with torch.no_grad(), ctx.autocast():
            logits = D(samples.tokens, per_step=True).float()  # (B, T): column t scores the prefix y_{1:t+1}
            logits = realness_logits(logits, ctx.cfg.loss)  # > 0 = real, whatever D's sign convention
        D.train()
        adv, returns, b = scratchgan_advantages(logits, mask, p.gamma, self.baseline, p.baseline == "per_position")
        with ctx.autocast():
            loss = G.weighted_nll(samples.tokens, adv / mask.sum().clamp(min=1))  # token mean
        g_loss = ctx.update_generator(loss)
        return {
            "g_loss": g_loss,
            "reward_mean": float(dense_rewards(logits)[mask].mean()),
            "return_mean": float(returns[mask].mean()),
            "baseline": float(b.mean()),
        }

    def d_step(self, ctx: GANContext) -> dict:
        D, bs = ctx.discriminator, ctx.cfg.d_batch_size
        fake = ctx.sample(bs)
        real, real_len = ctx.real_batch(bs)
        m_r, m_f = ctx.mask(real, real_len), fake.mask()
        D.train()
        with ctx.autocast():
            lr = D(real, per_step=True).float()
            lf = D(fake.tokens, per_step=True).float()
            loss = d_loss(lr[m_r], lf[m_f], ctx.cfg.loss)  # every valid prefix is one example
        if self.params.l2 > 0:
            loss = loss + self.params.l2 * 0.5 * sum(w.pow(2).sum() for w in D.parameters())
        d = ctx.update_discriminator(loss)
        return {"d_loss": d, "d_acc_real": float((lr[m_r] > 0).float().mean()),
                "d_acc_fake": float((lf[m_f] <= 0).float().mean())}
