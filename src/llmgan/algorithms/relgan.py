"""RelGAN (Nie et al., ICLR 2019), and the Gumbel-softmax machinery its family shares.

G update: draw a Gumbel-softmax batch ``soft = softmax(beta * (logits + g))`` (B, T, V) whose gradient
reaches G; score it with D; minimise ``g_loss(kind)`` (RSGAN by default) through the soft samples.
D update: one minibatch: a fresh relaxed batch (detached) against a random real batch (ids, which D
embeds exactly like one-hots), ``d_loss(kind)``, D's gradient norm clipped to 5.

``beta`` is an *inverse* temperature annealed from 1 to ``max_temperature`` over N rounds, with
RelGAN's schedules (``exp``: ``beta_n = max ** (n / N)``; ``lin``, ``log``, ``sigmoid``, ``quad``,
``sqrt``, ``no``). The sampler takes ``tau = 1 / beta``.

Facts from the reference code (weilinie/RelGAN ``run.py``, ``oracle/experiments/oracle_relgan.py``,
``oracle/oracle_gan/oracle_train.py``): gsteps 1, dsteps 5 per adversarial step, each a single
minibatch of 64 with a fresh real batch and a fresh generator sample; Adam 1e-4 (0.9, 0.999) for both
players; gradients clipped to global norm 5.0; the RelGAN discriminator's loss is taken over all
``B * num_rep`` logits (``per_representation``); the next generator input is the *hard* sampled token;
the temperature schedule's N is fixed at 5000 in their code whatever ``nadv_steps`` is
(``schedule_steps``; default here: the run's adversarial rounds). There is no D pre-training.

:class:`GumbelAlgorithm` holds what GSGAN, WGAN-GP and TextGAN reuse (``gsgan.py``, ``wgangp.py``,
``textgan.py``): the schedule, relaxed sampling (with a latent z when G has one), D scoring and the
minibatch D step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from llmgan.algorithms.base import Algorithm, GANContext, register
from llmgan.errors import ConfigError
from llmgan.losses import LOSS_KINDS, RELATIVISTIC_KINDS, d_loss, g_loss
from llmgan.models.base import Relaxed

SCHEDULES: tuple[str, ...] = ("no", "lin", "exp", "log", "sigmoid", "quad", "sqrt")


def inverse_temperature(max_temp: float, step: int, total: int, schedule: str = "exp", start: float = 1.0) -> float:
    """RelGAN's annealed inverse temperature beta at adversarial step ``step`` of ``total`` (N).

    Goes from ``start`` (1 in RelGAN) at step 0 to ``max_temp`` at step N (held there afterwards);
    ``no`` is ``max_temp`` throughout. With r = n / N:
    exp ``start * (max/start) ** r``; lin ``start + (max - start) r``; quad ``... r^2``; sqrt ``... sqrt r``;
    log ``... log(1 + n) / log(1 + N)``; sigmoid ``... / (1 + exp(20 (1/2 - r)))`` (~start at 0, ~max at N).
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"temperature_schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if schedule == "no":
        return float(max_temp)
    total = max(int(total), 1)
    n = min(max(int(step), 0), total)
    r = n / total
    span = max_temp - start
    if schedule == "exp":
        return float(start * (max_temp / start) ** r)
    if schedule == "lin":
        return float(start + span * r)
    if schedule == "quad":
        return float(start + span * r * r)
    if schedule == "sqrt":
        return float(start + span * math.sqrt(r))
    if schedule == "log":
        return float(start + span * math.log1p(n) / math.log1p(total))
    return float(start + span / (1.0 + math.exp(20.0 * (0.5 - r))))  # sigmoid


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """No parameter gradients for ``module`` inside (G steps: D's weights get none, which saves work),
    while gradients still flow *through* it to its inputs."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def sampling_rng(ctx: GANContext) -> torch.Generator | None:
    """The run's sampling RNG when it lives on the models' device (it is a CPU generator); else None
    (torch cannot draw CUDA tensors from a CPU generator; the global, seeded CUDA RNG is used then)."""
    rng = ctx.rng
    return rng if rng is not None and rng.device.type == ctx.device.type else None


def pad_after_eos(relaxed: Relaxed, eos_id: int | None, pad_id: int | None) -> Relaxed:
    """Replace every position after a row's first EOS by a constant one-hot PAD (tokens too).

    The relaxed sampler never stops; real sequences are padded after EOS, and discriminators mask PAD
    (by argmax for soft inputs). Without this, "anything after EOS" would tell fake from real.
    soft (B, T, V), tokens (B, T). No-op when the vocabulary has no EOS or PAD (the oracle).
    """
    if eos_id is None or pad_id is None:
        return relaxed
    is_eos = relaxed.tokens == eos_id
    after = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # (B, T): strictly after the first EOS
    if not bool(after.any()):
        return relaxed
    pad_row = F.one_hot(torch.tensor(pad_id, device=relaxed.soft.device), relaxed.soft.size(-1)).to(relaxed.soft)
    soft = torch.where(after.unsqueeze(-1), pad_row, relaxed.soft)
    tokens = relaxed.tokens.masked_fill(after, pad_id)
    return Relaxed(soft, tokens)


@dataclass
class GumbelParams:
    max_temperature: float = 100.0  # largest inverse temperature beta_max (RelGAN oracle: 100; real data 100/1000)
    temperature_schedule: str = "exp"  # no | lin | exp | log | sigmoid | quad | sqrt (RelGAN: exp)
    start_temperature: float = 1.0  # beta at round 0 (RelGAN: 1)
    schedule_steps: int | None = None  # N of the schedule; None: adversarial.rounds (RelGAN's code: 5000)
    feed: str = "hard"  # next G input: the hard sampled token (RelGAN) or the soft vector ("soft")
    d_grad_clip: float | None = 5.0  # clip D's gradient norm (RelGAN: 5.0); None: off
    per_representation: bool = True  # RelGAN D: loss over all B x num_rep logits (as the reference)
    use_latent: bool = True  # G built with latent_dim > 0: draw z ~ N(0, I) per sample


class GumbelAlgorithm(Algorithm):
    """Shared Gumbel-softmax G/D steps; subclasses change the losses. Not registered itself."""

    Params = GumbelParams

    def setup(self, ctx: GANContext) -> None:
        p = self.params
        if p.temperature_schedule not in SCHEDULES:
            raise ConfigError(
                f"adversarial.params.temperature_schedule: expected one of {', '.join(SCHEDULES)}, "
                f"got {p.temperature_schedule!r}"
            )
        if p.feed not in ("hard", "soft"):
            raise ConfigError(f"adversarial.params.feed: expected hard|soft, got {p.feed!r}")
        if p.max_temperature <= 0 or p.start_temperature <= 0:
            raise ConfigError("adversarial.params.max_temperature/start_temperature: expected > 0")
        if ctx.cfg.loss not in LOSS_KINDS:
            raise ConfigError(f"adversarial.loss: expected one of {', '.join(LOSS_KINDS)}, got {ctx.cfg.loss!r}")

    def start(self, ctx: GANContext) -> None:
        # MLE trained G from the zero state (no z). A fresh latent layer would turn every z into a random
        # initial state and undo pre-training; zeroed, G(z) starts as the MLE model and learns to use z.
        latent = getattr(ctx.generator, "latent", None)
        if self.params.use_latent and latent is not None:
            with torch.no_grad():
                latent.weight.zero_()
                latent.bias.zero_()
            ctx.generator.set_latent_sampling(True)  # generate/evaluate then draw z as training does

    # --- pieces -------------------------------------------------------------------------------
    def beta(self, ctx: GANContext) -> float:
        p = self.params
        total = p.schedule_steps if p.schedule_steps is not None else ctx.cfg.rounds
        return inverse_temperature(p.max_temperature, ctx.round, total, p.temperature_schedule, p.start_temperature)

    def latent(self, ctx: GANContext, n: int) -> Tensor | None:
        """z ~ N(0, I) (n, latent_dim) when G takes one (and use_latent), else None."""
        dim = int(getattr(getattr(ctx.generator, "cfg", None), "latent_dim", 0) or 0)
        if not self.params.use_latent or dim <= 0:
            return None
        return torch.randn(n, dim, generator=ctx.data_rng).to(ctx.device)

    def relaxed(self, ctx: GANContext, n: int) -> Relaxed:
        """n Gumbel-softmax samples at the current temperature: soft (n, T, V) with gradient to G."""
        G = ctx.generator
        G.train()
        with ctx.autocast():
            r = G.sample_relaxed(
                n, ctx.max_len, 1.0 / self.beta(ctx), z=self.latent(ctx, n), generator=sampling_rng(ctx),
                feed=self.params.feed,
            )
        return pad_after_eos(r, G.eos_id, G.pad_id)

    def scores(self, ctx: GANContext, x: Tensor) -> Tensor:
        """D's logits for ids (B, T) or soft (B, T, V): (B, R) per representation (RelGAN D with
        ``per_representation``), else (B,). float32."""
        D = ctx.discriminator
        with ctx.autocast():
            if self.params.per_representation and hasattr(D, "forward_reps"):
                return D.forward_reps(x).float()
            return D(x).float()

    # --- the two updates ------------------------------------------------------------------------
    def g_step(self, ctx: GANContext) -> dict:
        n = ctx.cfg.g_batch_size
        fake = self.relaxed(ctx, n)
        ctx.discriminator.train()  # RelGAN keeps D's dropout on in the G step too
        with frozen(ctx.discriminator):
            fake_s = self.scores(ctx, fake.soft)
            real_s = None
            if ctx.cfg.loss in RELATIVISTIC_KINDS:  # only these G losses look at the real scores
                with torch.no_grad():
                    real_s = self.scores(ctx, ctx.real_batch(n)[0])
            loss = g_loss(fake_s, real_s, kind=ctx.cfg.loss)
        ctx.log(temperature=self.beta(ctx))
        return {"g_loss": ctx.update_generator(loss)}

    def d_step(self, ctx: GANContext) -> dict:
        n = ctx.cfg.d_batch_size
        with torch.no_grad():
            fake = self.relaxed(ctx, n).soft
        real, _ = ctx.real_batch(n)
        ctx.discriminator.train()
        real_s, fake_s = self.scores(ctx, real), self.scores(ctx, fake)
        loss = d_loss(real_s, fake_s, kind=ctx.cfg.loss)
        value = ctx.update_discriminator(loss, clip=self.params.d_grad_clip)
        real_s, fake_s = real_s.detach(), fake_s.detach()
        if ctx.cfg.loss in RELATIVISTIC_KINDS:  # only the real - fake difference means anything here
            return {"d_loss": value, "d_acc_rel": float((real_s > fake_s).float().mean())}
        return {
            "d_loss": value,
            "d_acc_real": float((real_s > 0).float().mean()),
            "d_acc_fake": float((fake_s <= 0).float().mean()),
        }


@dataclass
class RelGANParams(GumbelParams):
    pass  # RelGAN's defaults are GumbelParams' (beta_max 100, exp schedule, hard feed, clip 5, all reps)


@register("relgan")
class RelGAN(GumbelAlgorithm):
    """RelGAN: the shared Gumbel-softmax steps with RSGAN (``adversarial.loss``) and RelGAN's schedule."""

    Params = RelGANParams
