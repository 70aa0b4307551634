"""GAD-style discriminator-reward RL (Ye et al. 2025, "Black-Box On-Policy Distillation of Large
Language Models", Generative Adversarial Distillation): the modern LLM form of a policy-gradient GAN.

Value function ``max_G min_D E[-log sigmoid(D(y_real) - D(G(x)))]``: D is trained with the
Bradley-Terry loss on (real, generated) pairs and its score of a sample is the generator's reward,
optimised with GRPO. Per G step:

1. sample ``n_groups x K`` sequences (K = ``group_size``, paper: 8). Conditional runs (prompt/response
   data, ``RunData.train_prompts``): a group is K responses to ONE training prompt, drawn with its
   reference response (``GANContext.real_pairs``). Unconditional runs: a group is K samples.
2. reward per sequence from D (no gradient): ``logodds`` = D's logit (the paper's D(G(x)); with
   prompts ``D(response, prompt=prompt)``), or ``bradley_terry`` = log sigmoid(D(sample) - D(real))
   against the prompt's reference response (conditional) or a real sequence drawn per sample.
3. advantages: group-normalised (GRPO, ``(r - mean_g) / (std_g + eps)``, sample std) or RLOO (``advantage: rloo``),
   the same for every token of a sequence.
4. ``ppo_epochs`` updates reusing the samples and their old log-probs (the policy before step 4; every
   log-prob, old, reference and current, with dropout off like the sampling: see ``no_dropout``):
   PPO's clipped surrogate ``-min(rho A, clip(rho, 1 - eps, 1 + eps) A)``, rho = pi / pi_old per token,
   plus ``kl_coef * KL(pi || pi_ref)`` to the frozen post-MLE (= SFT) reference, both policies reading
   the same prompt. The KL is the per-token k3
   estimator ``exp(d) - d - 1``, d = log pi_ref - log pi (verl's ``low_var_kl``, the paper's setting;
   unbiased, always >= 0, clamped like verl), evaluated on the sampled tokens. Both terms are averaged
   over all valid tokens of the batch (token-mean).

D update (online, each round): the Bradley-Terry loss ``-log sigmoid(D(real) - D(fake))`` (losses.py
``rsgan``; any other kind via ``d_loss``) on the round's own on-policy samples, each paired with a real
sequence -- with prompts, the reference response of the SAME prompt, both scored given the prompt --,
gradient norm clipped at ``d_grad_clip`` (paper 0.2). During D pre-training (the paper's warm-up
stage, after the engine's MLE phase = SFT on the responses) the fakes are fresh samples (for random
training prompts when conditional). GAD's frozen-discriminator ablation is ``adversarial.d_steps: 0``:
D is trained in the warm-up only and then fixed.

Log-probabilities use the sampling temperature: ``log softmax(lm_head(h) / tau)`` equals the fused
output layer applied to ``h / tau`` with bias ``b / tau``, so no (B, T, V) logits are formed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from llmgan.algorithms.base import Algorithm, GANContext, register, train_discriminator
from llmgan.errors import ConfigError
from llmgan.losses import LOSS_KINDS, d_loss, realness_logits
from llmgan.models.base import Generator
from llmgan.models.output import token_log_probs
from llmgan.rewards import group_normalized_advantages, rloo_advantages


@dataclass
class GADParams:
    group_size: int = 8  # K samples per group (GAD: rollout.n = 8)
    reward: str = "logodds"  # logodds: D's logit (GAD) | bradley_terry: log sigmoid(D(x) - D(real))
    advantage: str = "grpo"  # grpo: group mean/std normalised (GAD) | rloo: leave-one-out baseline
    clip_eps: float = 0.2  # PPO ratio clip (GAD via verl: 0.2)
    ppo_epochs: int = 1  # updates per batch of samples (GAD: 1 mini-batch = the whole batch, 1 epoch)
    kl_coef: float = 0.001  # weight of the k3 KL to the reference (GAD: kl_loss_coef 0.001, low_var_kl)
    temperature: float = 1.0  # sampling temperature of the rollouts (GAD chat runs: 0.8; see the preset)
    d_loss: str = "bradley_terry"  # D loss: bradley_terry (GAD; = losses.py rsgan) or any losses.py kind
    d_grad_clip: float | None = 0.2  # D gradient-norm clip (GAD: critic.grad_clip 0.2)


def policy_log_probs(gen: Generator, tokens: Tensor, temperature: float = 1.0, prompt: Tensor | None = None) -> Tensor:
    """Per-token log pi(y_t | prompt, y_<t) at a sampling temperature: tokens (B, T) -> (B, T), differentiable.

    ``prompt`` (B, P) left-padded ids conditions each row (None: unconditional)."""
    h = gen.hidden(tokens, prompt)
    B, T, H = h.shape
    bias = gen.lm_head.bias
    lp = token_log_probs(
        h.reshape(B * T, H) / temperature,
        gen.lm_head.weight,
        None if bias is None else bias / temperature,
        tokens.clamp(0, gen.vocab_size - 1).reshape(-1),
    )
    return lp.view(B, T)


@contextmanager
def no_dropout(*modules: torch.nn.Module) -> Iterator[None]:
    """Run the block with ``modules`` in eval mode (dropout off; gradients still flow), then restore their modes.

    Why the policy's log-probs are all taken without dropout -- the old ones (at sampling time, no grad),
    the reference's and the current, differentiated ones: samples are drawn in eval mode, so the policy
    that sampled is the dropout-free network; with dropout on, two forwards of the SAME weights differ by
    noise, the first PPO epoch's ratio pi / pi_old is not 1 and clipping fires on a policy that has not
    moved (HF GPT-2 has dropout 0.1, LoRA 0.05). With the current log-probs dropout-free too, the ratio is
    exactly 1 at the first epoch and the gradient is the one of the policy that sampled. TRL does the same
    with ``disable_dropout`` (on by default in its DPO and distillation trainers, an option in GRPO).
    """
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(modules, was):
            m.train(w)


def k3_kl(log_p: Tensor, log_ref: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref) on samples of pi: exp(d) - d - 1 with d = log_ref - log_p.

    Shapes (B, T) -> (B, T). d is clamped to [-20, 20] and the result to [-10, 10] (as verl's low_var_kl)
    so one wildly off token cannot blow the loss up.
    """
    d = (log_ref - log_p).clamp(-20.0, 20.0)
    return (torch.exp(d) - d - 1.0).clamp(-10.0, 10.0)


def same_rows(a: Tensor, b: Tensor, pad: int) -> Tensor:
    """(N,) bool: row i of a and of b hold the same sequence (right-padded with ``pad``, widths may differ)."""
    w = max(a.size(1), b.size(1))
    a = F.pad(a, (0, w - a.size(1)), value=pad)
    b = F.pad(b, (0, w - b.size(1)), value=pad)
    return (a == b).all(1)


def bradley_terry_loss(real: Tensor, fake: Tensor) -> Tensor:
    """GAD's discriminator loss on paired scores: mean of ``-log sigmoid(D(real_i) - D(fake_i))``.

    real, fake: (N,) logits where row i of both belongs to the same prompt (the teacher's / reference
    response and G's). Equal to ``losses.d_loss(real, fake, "rsgan")``.
    """
    return F.softplus(-(real - fake)).mean()


def gad_policy_loss(
    log_p: Tensor, old_log_p: Tensor, ref_log_p: Tensor, adv: Tensor, mask: Tensor, clip_eps: float, kl_coef: float
) -> tuple[Tensor, dict]:
    """Clipped-ratio policy loss + k3 KL penalty, token-mean over ``mask``.

    log_p (B, T) current (differentiable), old_log_p (B, T) at sampling time, ref_log_p (B, T) under the
    reference, adv (B,) per sequence, mask (B, T) bool. Returns (scalar loss, stats: kl, clip_frac, ratio).
    """
    m = mask.float()
    n = m.sum().clamp(min=1)
    ratio = torch.exp(log_p - old_log_p)
    a = adv[:, None].to(ratio.dtype)
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    kl = k3_kl(log_p, ref_log_p)
    loss = ((-surrogate + kl_coef * kl) * m).sum() / n
    with torch.no_grad():
        clipped = ((ratio - 1).abs() > clip_eps).float()
        stats = {"kl": float((kl * m).sum() / n), "clip_frac": float((clipped * m).sum() / n),
                 "ratio_mean": float((ratio * m).sum() / n)}
    return loss, stats


@register("gad")
class GAD(Algorithm):
    Params = GADParams
    supports_prompts = True  # a group / pair is built from a training prompt (ctx.real_pairs)
    needs_reference = True

    def setup(self, ctx: GANContext) -> None:
        p = self.params
        if p.reward not in ("logodds", "bradley_terry"):
            raise ConfigError(f"adversarial.params.reward: expected logodds|bradley_terry, got {p.reward!r}")
        if p.advantage not in ("grpo", "rloo"):
            raise ConfigError(f"adversarial.params.advantage: expected grpo|rloo, got {p.advantage!r}")
        if p.d_loss != "bradley_terry" and p.d_loss not in LOSS_KINDS:
            raise ConfigError(f"adversarial.params.d_loss: expected bradley_terry or one of {', '.join(LOSS_KINDS)}")
        if p.group_size < 2:
            raise ConfigError(f"adversarial.params.group_size: expected >= 2, got {p.group_size}")
        if p.temperature <= 0:
            raise ConfigError(f"adversarial.params.temperature: expected > 0, got {p.temperature}")
        # the last G step's samples (D's on-policy fakes), with their prompts and references (None if unconditional)
        self._fresh: tuple[Tensor, Tensor | None, Tensor | None] | None = None

    @property
    def d_kind(self) -> str:
        """The losses.py kind D is trained with (Bradley-Terry is ``rsgan``)."""
        return "rsgan" if self.params.d_loss == "bradley_terry" else self.params.d_loss

    def state_dict(self) -> dict:
        """The cached on-policy samples (token ids), when a checkpoint falls between G and D steps."""
        if self._fresh is None:
            return {"fresh": None}
        return {"fresh": [None if t is None else t.tolist() for t in self._fresh]}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        fresh = state.get("fresh")
        self._fresh = None
        if fresh is not None:
            tokens, prompt, reference = (None if t is None else torch.tensor(t, dtype=torch.long, device=device)
                                         for t in fresh)
            self._fresh = (tokens, prompt, reference)

    @torch.no_grad()
    def rewards(self, ctx: GANContext, tokens: Tensor, prompt: Tensor | None = None,
                reference: Tensor | None = None, group_size: int = 1) -> Tensor:
        """D's reward (N,) of each sequence in tokens (N, T).

        prompt (N, P): D judges each response given its prompt. reference (N, T): the prompt's reference
        response for ``bradley_terry`` (rows of a group share it; it is scored once per group of
        ``group_size`` consecutive rows). Without a reference, ``bradley_terry`` draws a real sequence per row.
        """
        D, kind = ctx.discriminator, self.d_kind
        D.eval()
        kw = {} if prompt is None else {"prompt": prompt}
        with ctx.autocast():
            logits = realness_logits(D(tokens, **kw).float(), kind)  # > 0 = real, whatever D's sign convention
            if self.params.reward == "bradley_terry":
                if reference is None:
                    real, _ = ctx.real_batch(tokens.size(0))  # one reference per sample
                    ref_scores = D(real).float()
                else:
                    k = max(group_size, 1)
                    kw_ref = {} if prompt is None else {"prompt": prompt[::k]}
                    ref_scores = D(reference[::k], **kw_ref).float().repeat_interleave(k)
                logits = F.logsigmoid(logits - realness_logits(ref_scores, kind))
        D.train()
        return logits

    def g_step(self, ctx: GANContext) -> dict:
        p, G = self.params, ctx.generator
        K = p.group_size
        n_groups = max(1, ctx.cfg.g_batch_size // K)
        prompt = reference = None
        if ctx.conditional:  # a group = K responses to one training prompt (GAD: rollout.n per prompt)
            prompts, refs, _ = ctx.real_pairs(n_groups)
            prompt, reference = prompts.repeat_interleave(K, 0), refs.repeat_interleave(K, 0)
            samples = ctx.sample(n_groups * K, temperature=p.temperature, prompt=prompt)
        else:
            samples = ctx.sample(n_groups * K, temperature=p.temperature)  # groups are consecutive rows
        tokens, mask = samples.tokens, samples.mask()
        r = self.rewards(ctx, tokens, prompt, reference, K)  # (N,)
        adv = group_normalized_advantages(r, K) if p.advantage == "grpo" else rloo_advantages(r, K)
        ref = ctx.reference()
        stats: dict = {}
        g_loss = 0.0
        with no_dropout(G):  # old, reference and current log-probs all without dropout: see no_dropout
            with torch.no_grad(), ctx.autocast():
                old_lp = policy_log_probs(G, tokens, p.temperature, prompt).float()
                ref_lp = policy_log_probs(ref, tokens, p.temperature, prompt).float()  # KL given the same prompt
            for _ in range(max(p.ppo_epochs, 1)):
                with ctx.autocast():
                    lp = policy_log_probs(G, tokens, p.temperature, prompt).float()
                loss, stats = gad_policy_loss(lp, old_lp, ref_lp, adv, mask, p.clip_eps, p.kl_coef)
                g_loss = ctx.update_generator(loss)
        self._fresh = (tokens, prompt, reference)
        groups = r.view(n_groups, K)
        return {
            "g_loss": g_loss,
            "reward_mean": float(r.mean()),
            "reward_std": float(r.std()) if r.numel() > 1 else 0.0,
            "zero_var_groups": float((groups.std(1, unbiased=False) < 1e-8).float().mean()),  # no signal there
            "response_len": float(samples.lengths.float().mean()),
            **stats,
        }

    def d_step(self, ctx: GANContext) -> dict:
        p, D, cfg = self.params, ctx.discriminator, ctx.cfg
        if self._fresh is not None and ctx.phase != "d_pretrain":
            (fake, prompt, real), self._fresh = self._fresh, None  # on-policy: the samples G was just trained on
        elif ctx.conditional:  # warm-up: G's responses to random training prompts vs their references
            prompt, real, _ = ctx.real_pairs(cfg.d_samples)
            fake = ctx.sample(cfg.d_samples, temperature=p.temperature, prompt=prompt).tokens
        else:
            fake, prompt, real = ctx.sample(cfg.d_samples, temperature=p.temperature).tokens, None, None
        if real is None:
            real, _ = ctx.real_batch(fake.size(0))  # row i pairs with fake row i
        kind = self.d_kind
        T = real.size(1)
        pad = ctx.pad_id if ctx.pad_id is not None else 0
        # real row i travels with its prompt (packed after the response): both sides read the same prompt
        real_rows = real if prompt is None else torch.cat([real, prompt], 1)

        def batch_loss(r: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor, dict]:
            kw = {} if prompt is None else {"prompt": r[:, T:]}
            lr, lf = D(r[:, :T], **kw).float(), D(f, **kw).float()
            ar, af = realness_logits(lr.detach(), kind), realness_logits(lf.detach(), kind)  # > 0 = judged real
            # d_pair_acc: the pair is ranked right (what Bradley-Terry trains). d_pair_ties: G's response IS
            # the reference, so D cannot rank the pair (Bradley-Terry's gradient is 0 there, and the pair counts
            # as wrong in d_pair_acc): from a near-perfect SFT model most pairs are ties, D learns from the
            # few others and its reward among a group's distinct responses is mostly noise
            return d_loss(lr, lf, kind), (ar > 0).float().mean(), (af <= 0).float().mean(), \
                {"d_pair_acc": (ar > af).float().mean(), "d_pair_ties": same_rows(r[:, :T], f, pad).float().mean()}

        return train_discriminator(ctx, real_rows, fake, cfg.d_epochs, batch_loss=batch_loss, paired=True,
                                   clip=p.d_grad_clip)

