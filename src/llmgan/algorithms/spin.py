"""SPIN: self-play fine-tuning (Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak Language Models
to Strong Language Models").

No discriminator network: the generator plays against its own previous iterate. The "discriminator"
is the log-likelihood ratio between the current model p_theta and the frozen opponent p_opp, and the
two-player game collapses into one DPO-like logistic loss per (prompt x, reference y_ref, y_gen):

    loss = -log sigmoid(beta * [(log p_theta(y_ref|x) - log p_opp(y_ref|x))
                                - (log p_theta(y_gen|x) - log p_opp(y_gen|x))])

with y_gen ~ p_opp(.|x) and sequence log-probabilities (sums over the response tokens, EOS included).
Minimising it raises the likelihood of the human (reference) response relative to the opponent's own
response; at the fixed point p_theta = p_data the loss cannot be improved (the paper's Theorem 5.4).

Iterations. SPIN's iteration t samples y_gen from p_theta_t for every SFT prompt, trains theta_{t+1}
on those pairs, then makes theta_{t+1} the opponent. Here the opponent is the engine's frozen
reference (``GANContext.reference()``, checkpointed with the run; initialised to the post-SFT
generator, i.e. SPIN's iteration 0 opponent is the SFT model) and y_gen is sampled online from it --
the same distribution as the paper's pre-generated set, as the opponent does not change within an
iteration. Every ``iterate_every`` rounds the opponent is re-synced to the current generator
(``GANContext.sync_reference``); the default (None) is one "epoch" of rounds: ceil(N_train /
g_batch_size), the rounds one pass over the training pairs takes, which matches the paper's
"regenerate for the whole SFT set, then train" loop. Conditional runs (prompt/response data) use
(prompt, reference response) pairs; unconditional runs use real sequences with an empty prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from llmgan.algorithms.base import Algorithm, GANContext, register
from llmgan.algorithms.gad import no_dropout
from llmgan.errors import ConfigError


@dataclass
class SPINParams:
    beta: float = 0.1  # scale of the log-ratio margin (SPIN: lambda = 0.1, as DPO's beta)
    iterate_every: int | None = None  # rounds per SPIN iteration (None: one pass over the training set)
    temperature: float = 1.0  # opponent sampling temperature for y_gen (SPIN samples the model as is)
    top_p: float | None = None  # optional nucleus sampling of y_gen (None: full distribution)


def sequence_log_probs(gen, tokens: Tensor, mask: Tensor, prompt: Tensor | None = None) -> Tensor:
    """log p(y | prompt) summed over the masked tokens: tokens (B, T), mask (B, T) bool -> (B,)."""
    lp = gen.log_probs(tokens, prompt=prompt).float()
    return (lp * mask.float()).sum(1)


def spin_loss(
    logp_real: Tensor, logp_opp_real: Tensor, logp_gen: Tensor, logp_opp_gen: Tensor, beta: float
) -> tuple[Tensor, dict]:
    """SPIN's loss from sequence log-probs, all (B,): current model and opponent on y_ref and on y_gen.

    Returns (mean of -log sigmoid(beta * margin), stats) with margin = (lp_real - lp_opp_real) -
    (lp_gen - lp_opp_gen). Stats: the mean margin, the fraction of pairs ranked right (margin > 0) and
    the two log-ratios (reward_real, reward_gen as in DPO logs). Pairs with y_gen = y_ref have margin 0
    and count as not ranked right.
    """
    r_real = logp_real - logp_opp_real
    r_gen = logp_gen - logp_opp_gen
    margin = r_real - r_gen
    loss = -F.logsigmoid(beta * margin).mean()
    with torch.no_grad():
        stats = {
            "margin": float(margin.mean()),
            "pair_acc": float((margin > 0).float().mean()),
            "reward_real": float(beta * r_real.mean()),
            "reward_gen": float(beta * r_gen.mean()),
        }
    return loss, stats


@register("spin")
class SPIN(Algorithm):
    """Self-play fine-tuning: G against its frozen previous iterate; no discriminator network."""

    Params = SPINParams
    uses_discriminator = False
    supports_prompts = True  # a group / pair is built from a training prompt (ctx.real_pairs)
    needs_reference = True  # the opponent: the engine's frozen, checkpointed copy of G

    def setup(self, ctx: GANContext) -> None:
        p = self.params
        if p.beta <= 0:
            raise ConfigError(f"adversarial.params.beta: expected > 0, got {p.beta}")
        if p.iterate_every is not None and p.iterate_every < 1:
            raise ConfigError(f"adversarial.params.iterate_every: expected >= 1 or null, got {p.iterate_every}")
        if p.temperature <= 0:
            raise ConfigError(f"adversarial.params.temperature: expected > 0, got {p.temperature}")
        self._synced_at: int | None = None  # round of the last opponent refresh (in memory; see maybe_refresh)

    def iteration_length(self, ctx: GANContext) -> int:
        """Rounds per SPIN iteration: ``iterate_every``, or one pass over the training data."""
        if self.params.iterate_every is not None:
            return self.params.iterate_every
        return max(1, math.ceil(ctx.n_train / max(ctx.cfg.g_batch_size, 1)))

    def maybe_refresh(self, ctx: GANContext) -> bool:
        """Make the current G the opponent at an iteration boundary (rounds k * iteration_length, k >= 1).

        Checkpoints are written between rounds, before the next round's refresh, so a run resumed at a
        boundary still refreshes (its saved opponent is the previous iterate); ``_synced_at`` only keeps
        a round with several g_steps from refreshing more than once.
        """
        r = ctx.round
        if r == 0 or r % self.iteration_length(ctx) != 0 or self._synced_at == r:
            return False
        ctx.sync_reference()
        self._synced_at = r
        return True

    def g_step(self, ctx: GANContext) -> dict:
        p, G = self.params, ctx.generator
        refreshed = self.maybe_refresh(ctx)
        opp = ctx.reference()
        B = ctx.cfg.g_batch_size
        if ctx.conditional:
            prompt, real, lengths = ctx.real_pairs(B)
        else:
            prompt = None
            real, lengths = ctx.real_batch(B)
        real_mask = ctx.mask(real, lengths)
        kw = {} if prompt is None else {"prompt": prompt}
        gen = ctx.sample(B, generator=opp, temperature=p.temperature, top_p=p.top_p, **kw)  # y_gen ~ p_opp
        gen_mask = gen.mask()
        # y_ref and y_gen are both max_len wide: one batched pass of 2B rows per model
        both, both_mask = torch.cat([real, gen.tokens]), torch.cat([real_mask, gen_mask])
        both_prompt = None if prompt is None else torch.cat([prompt, prompt])
        with torch.no_grad(), ctx.autocast():
            opp_real, opp_gen = sequence_log_probs(opp, both, both_mask, both_prompt).chunk(2)
        # G's log-probs without dropout, like the opponent's (frozen, eval): right after a refresh G equals
        # the opponent and every margin must be exactly 0 (loss log 2); with dropout on, the margins would
        # be noise from two different dropout masks. As TRL's DPO trainer (disable_dropout, on by default).
        with no_dropout(G):
            with ctx.autocast():
                lp_real, lp_gen = sequence_log_probs(G, both, both_mask, both_prompt).chunk(2)
            loss, stats = spin_loss(lp_real, opp_real, lp_gen, opp_gen, p.beta)
            g_loss = ctx.update_generator(loss)
        return {
            "g_loss": g_loss,
            **stats,
            "response_len": float(gen.lengths.float().mean()),
            # y_gen == y_ref rows have margin 0 and no gradient: near convergence most pairs are such
            "gen_equals_ref": float((gen.tokens == real).all(1).float().mean()),
            "iteration": float(ctx.round // self.iteration_length(ctx)),
            "opponent_refreshed": float(refreshed),
        }
