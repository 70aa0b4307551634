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


def _fresh_round() -> dict:
    """Progress inside one round, kept in the checkpoint's state so a stop mid-round resumes exactly:
    sub-steps done (g, mle, d), the latest statistics of each kind and the round's timings."""
    return {"g": 0, "mle": 0, "d": 0, "steps_done": False, "g_stats": {}, "d_stats": {}, "metrics": {},
            "mle_loss": None, "time_g_s": 0.0, "time_d_s": 0.0}


def _round_end(tr: Trainer, pos: dict) -> None:
    """After a round's updates: diversity probe, finiteness of every loss, the log line, evaluation."""
    a, ctx, st = tr.cfg.adversarial, tr.adversarial.ctx, tr.state
    probe = _probe(ctx)
    record = {**pos["g_stats"], **pos["d_stats"], **pos["metrics"], **_distinct(probe.tokens, probe.lengths),
              "time_g_s": pos["time_g_s"], "time_d_s": pos["time_d_s"], "round": st["round"]}
    if pos["mle_loss"] is not None:
        record["mle_loss"] = pos["mle_loss"]
    for k, v in record.items():
        if k.endswith("loss") and isinstance(v, float):
            tr.check_finite(v, f"{a.algorithm} {k}")
    tr.logger.log(tr.global_step, "adversarial", **record)
    if st["round"] % a.eval_every == 0 or st["round"] == a.rounds:
        tr.evaluate()


def adversarial_phases(tr: Trainer) -> None:
    """D pre-training, then the rounds; every G/MLE/D step and each round's end is a sub-step
    (``Trainer.sub_step``), and ``state["round_pos"]`` records how far the current round got."""
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
                t0 = time.time()
                stats = tr.sub_step(lambda: algo.d_step(ctx))
                st["d_pretrain"] += 1
                tr.logger.log(tr.global_step, "d_pretrain", refresh=st["d_pretrain"], time_s=time.time() - t0, **stats)
                if st["d_pretrain"] % 10 == 0 or st["d_pretrain"] == a.d_pretrain_steps:
                    info(f"[d_pretrain {st['d_pretrain']}/{a.d_pretrain_steps}] "
                         + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))
                # a refresh of the paper's schedules is minutes of CPU: a crash loses at most checkpoint_every
                if st["d_pretrain"] % a.checkpoint_every == 0 and st["d_pretrain"] < a.d_pretrain_steps:
                    tr.save()
        st["phase"] = "adversarial"
        tr.save()
    while True:
        pos = st.get("round_pos")
        if pos is None:
            if st["round"] >= a.rounds:
                break
            pos = st["round_pos"] = _fresh_round()
        if not pos["steps_done"]:
            ctx.metrics = dict(pos["metrics"])
            while pos["g"] < a.g_steps:
                t0 = time.time()
                pos["g_stats"] = tr.sub_step(lambda: algo.g_step(ctx) or {})
                pos["g"] += 1
                pos["time_g_s"] += time.time() - t0
                pos["metrics"] = dict(ctx.metrics)
            while pos["mle"] < a.mle_steps_per_round:
                pos["mle_loss"] = tr.sub_step(lambda: _mle_step(tr))
                pos["mle"] += 1
            while algo.uses_discriminator and pos["d"] < a.d_steps:
                t1 = time.time()
                pos["d_stats"] = tr.sub_step(lambda: algo.d_step(ctx) or {})
                pos["d"] += 1
                pos["time_d_s"] += time.time() - t1
                pos["metrics"] = dict(ctx.metrics)
            st["round"] += 1
            pos["steps_done"] = True
            dist_utils.assert_in_sync(tr.models(), f"adversarial round {st['round']}")
        tr.sub_step(lambda: _round_end(tr, pos))  # noqa: B023 - called at once, inside the iteration
        st["round_pos"] = None
        if st["round"] % a.checkpoint_every == 0 and st["round"] < a.rounds:
            tr.save()
