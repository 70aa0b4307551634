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

import torch

from llmgan.algorithms.base import GANContext, build_algorithm
from llmgan.models.factory import make_discriminator
from llmgan.training import distributed as dist_utils
from llmgan.training.logging import info


def build_adversarial(tr) -> None:
    """Attach discriminator, optimizers, algorithm and context to a Trainer (before any resume)."""
    from llmgan.training.engine import make_optimizer

    a = tr.cfg.adversarial
    tr.algorithm = build_algorithm(a.algorithm, a.params)
    tr.discriminator = None
    tr.d_opt = None
    if tr.algorithm.uses_discriminator:
        tr.discriminator = make_discriminator(tr.cfg.discriminator, tr.data.tokenizer).to(tr.device)
        tr.d_opt = make_optimizer(tr.discriminator.parameters(), "adam", a.d_lr)
    tr.adv_g_opt = make_optimizer(tr.generator.parameters(), tr.cfg.train.optimizer, a.g_lr,
                                  tr.cfg.train.weight_decay, tr.cfg.train.betas)
    tr.reference = None
    if getattr(tr.algorithm, "needs_reference", False):
        tr.reference = tr.generator.frozen_reference()
    tr.reference_generator = lambda: tr.reference
    tr.gan_ctx = GANContext(tr)
    tr.algorithm.setup(tr.gan_ctx)

    def models():
        out = {}
        if tr.discriminator is not None:
            out["discriminator"] = tr.discriminator
        if tr.reference is not None:
            out["reference"] = tr.reference
        out.update(tr.algorithm.extra_models())
        return out

    def optimizers():
        out = {"generator_adv": tr.adv_g_opt}
        if tr.d_opt is not None:
            out["discriminator"] = tr.d_opt
        out.update(getattr(tr.algorithm, "extra_optimizers", lambda: {})())
        return out

    tr.algorithm_models = models
    tr.algorithm_optimizers = optimizers


def _distinct(tokens: torch.Tensor, lengths: torch.Tensor) -> dict:
    from llmgan.metrics import distinct

    seqs = [[str(x) for x in row[:n]] for row, n in zip(tokens.tolist(), lengths.tolist())]
    return distinct(seqs, ns=(1, 2))


def _mle_step(tr) -> float:
    ctx = tr.gan_ctx
    prompt = None
    if ctx.conditional:  # SFT step: responses given their prompts
        prompt, tokens, lengths = ctx.real_pairs(tr.cfg.adversarial.g_batch_size)
    else:
        tokens, lengths = ctx.real_batch(tr.cfg.adversarial.g_batch_size)
    mask = ctx.mask(tokens, lengths)
    with tr.autocast():
        loss = tr.generator.weighted_nll(tokens, mask.float() / mask.sum(), prompt=prompt)
    return ctx.update_generator(loss)


def _probe(ctx: GANContext, n: int = 256):
    """Fresh samples for the per-round diversity probe: responses to random training prompts when conditional."""
    if ctx.conditional:
        prompt, _, _ = ctx.real_pairs(n)
        return ctx.sample(n, prompt=prompt)
    return ctx.sample(n)


def adversarial_phases(tr) -> None:
    a, algo, ctx, st = tr.cfg.adversarial, tr.algorithm, tr.gan_ctx, tr.state
    if not st.get("algo_started"):
        if tr.reference is not None:
            tr.reference.load_state_dict(tr.generator.state_dict())
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
