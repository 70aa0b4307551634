"""Adversarial phases of the engine: discriminator pre-training, then rounds of G and D updates.

    d_pretrain:  d_pretrain_steps x algo.d_step                      (fresh samples each time)
    adversarial: rounds x [ g_steps x algo.g_step,
                            mle_steps_per_round x teacher-forced MLE  (optional, LeakGAN/RankGAN style),
                            d_steps x algo.d_step ]                  eval every N rounds, checkpoints

Each round logs the algorithm's own statistics (losses, rewards, D accuracy on real and fake), the
distinct-n of fresh samples (collapse shows up there first) and the time split between G and D.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from llmgan.algorithms.base import Algorithm, GANContext, build_algorithm
from llmgan.models.factory import make_discriminator
from llmgan.training import distributed as dist_utils
from llmgan.training.logging import info
from llmgan.training.optim import make_optimizer

if TYPE_CHECKING:  # the Trainer drives these phases; only its type is needed here
    from llmgan.training.engine import Trainer


class AdversarialSetup:
    """What an adversarial run adds to the Trainer: D, the adversarial optimizers, the frozen MLE
    reference, the algorithm and the GANContext it is handed. The Trainer owns one (built before any
    resume, so a checkpoint can load into every module and optimizer listed here)."""

    def __init__(self, tr: Trainer):
        a, t = tr.cfg.adversarial, tr.cfg.train
        self.algorithm: Algorithm = build_algorithm(a.algorithm, a.params)
        if tr.data.train_prompts is not None and not self.algorithm.supports_prompts:
            from llmgan.errors import ConfigError

            raise ConfigError(
                f"adversarial.algorithm: {a.algorithm} does not condition on prompts, and this run's data is "
                "conditional (data.prompt_field/label_field set); use gad or spin, or unconditional data"
            )
        self.discriminator: torch.nn.Module | None = None
        self.d_opt: torch.optim.Optimizer | None = None
        if self.algorithm.uses_discriminator:
            self.discriminator = make_discriminator(tr.cfg.discriminator, tr.data.tokenizer).to(tr.device)
            self.d_opt = make_optimizer(self.discriminator.parameters(), "adam", a.d_lr)
        self.g_opt = make_optimizer(tr.generator.parameters(), t.optimizer, a.g_lr, t.weight_decay, t.betas)
        self.reference: torch.nn.Module | None = None
        if self.algorithm.needs_reference:
            self.reference = tr.generator.frozen_reference()
        self.ctx = GANContext(
            generator=tr.generator,
            discriminator=self.discriminator,
            g_opt=self.g_opt,
            d_opt=self.d_opt,
            cfg=a,
            device=tr.device,
            max_len=tr.max_len,
            rng=tr.sample_rng,
            data_rng=tr.data_rng,
            data=tr.data,
            progress=tr.state,
            step_fn=tr.optimizer_step,
            autocast=tr.autocast,
            reference=self.reference,
            grad_clip=t.grad_clip,
        )
        self.algorithm.setup(self.ctx)

    def models(self) -> dict[str, torch.nn.Module]:
        out: dict[str, torch.nn.Module] = {}
        if self.discriminator is not None:
            out["discriminator"] = self.discriminator
        if self.reference is not None:
            out["reference"] = self.reference
        out.update(self.algorithm.extra_models())
        return out

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        out: dict[str, torch.optim.Optimizer] = {"generator_adv": self.g_opt}
        if self.d_opt is not None:
            out["discriminator"] = self.d_opt
        out.update(self.algorithm.extra_optimizers())
        return out


def _distinct(tokens: torch.Tensor, lengths: torch.Tensor) -> dict:
    from llmgan.metrics import distinct

    seqs = [[str(x) for x in row[:n]] for row, n in zip(tokens.tolist(), lengths.tolist())]
    return distinct(seqs, ns=(1, 2))


def _mle_step(tr: Trainer) -> float:
    """One teacher-forced step on real data (responses given their prompts when conditional)."""
    ctx = tr.adversarial.ctx
    prompt = None
    if ctx.conditional:
        prompt, tokens, lengths = ctx.real_pairs(tr.cfg.adversarial.g_batch_size)
    else:
        tokens, lengths = ctx.real_batch(tr.cfg.adversarial.g_batch_size)
    return tr.supervised_step(tokens, lengths, prompt, tr.adversarial.g_opt)


def _probe(ctx: GANContext, n: int = 256):
    """Fresh samples for the per-round diversity probe: responses to random training prompts when conditional."""
    if ctx.conditional:
        prompt, _, _ = ctx.real_pairs(n)
        return ctx.sample(n, prompt=prompt)
    return ctx.sample(n)


def adversarial_phases(tr: Trainer) -> None:
    adv = tr.adversarial
    a, algo, ctx, st = tr.cfg.adversarial, adv.algorithm, adv.ctx, tr.state
    if not st.get("algo_started"):
        if adv.reference is not None:
            adv.reference.load_state_dict(tr.generator.state_dict())
        algo.start(ctx)
        st["algo_started"] = True
    if st["phase"] == "d_pretrain":
        if algo.uses_discriminator:
            while st["d_pretrain"] < a.d_pretrain_steps:
                tr.maybe_stop()
                t0 = time.time()
                stats = algo.d_step(ctx)
                st["d_pretrain"] += 1
                tr.logger.log(tr.global_step, "d_pretrain", refresh=st["d_pretrain"], time_s=time.time() - t0, **stats)
                if st["d_pretrain"] % 10 == 0 or st["d_pretrain"] == a.d_pretrain_steps:
                    info(f"[d_pretrain {st['d_pretrain']}/{a.d_pretrain_steps}] "
                         + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))
                    tr.save()
        st["phase"] = "adversarial"
        tr.save()
    while st["round"] < a.rounds:
        tr.maybe_stop()
        ctx.metrics = {}
        t0 = time.time()
        g_stats: dict = {}
        for _ in range(a.g_steps):
            g_stats = algo.g_step(ctx) or {}
        t_g = time.time() - t0
        mle_loss = None
        for _ in range(a.mle_steps_per_round):
            mle_loss = _mle_step(tr)
        t1 = time.time()
        d_stats: dict = {}
        if algo.uses_discriminator:
            for _ in range(a.d_steps):
                d_stats = algo.d_step(ctx) or {}
        t_d = time.time() - t1
        st["round"] += 1
        dist_utils.assert_in_sync(tr.models(), f"adversarial round {st['round']}")
        probe = _probe(ctx)
        record = {**g_stats, **d_stats, **ctx.metrics, **_distinct(probe.tokens, probe.lengths),
                  "time_g_s": t_g, "time_d_s": t_d, "round": st["round"]}
        if mle_loss is not None:
            record["mle_loss"] = mle_loss
        for k, v in record.items():
            if k.endswith("loss") and isinstance(v, float):
                tr.check_finite(v, f"{a.algorithm} {k}")
        tr.logger.log(tr.global_step, "adversarial", **record)
        if st["round"] % a.eval_every == 0 or st["round"] == a.rounds:
            tr.evaluate()
        if st["round"] % a.checkpoint_every == 0 and st["round"] < a.rounds:
            tr.save()
