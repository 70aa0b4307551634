"""Residual energy-based model (Deng, Bakhtin, Ott, Szlam, Ranzato, ICLR 2020, "Residual Energy-Based
Models for Text Generation").

The model is ``p(x) = p_G(x) exp(-E(x)) / Z``: the MLE generator G, frozen, corrected by an energy E
(any discriminator architecture: CNN, Transformer, HF encoder). E is trained by noise-contrastive
estimation with G as the noise distribution: with one noise sample per data sample, NCE is binary
classification of real against G's samples with logit ``log(p_G exp(-E) / p_G) = -E(x)``, i.e. the
engine's discriminator update with the ``vanilla`` (binary cross-entropy) loss and ``E = -logit``. At
the optimum ``-E(x) = log p_data(x) / p_G(x)`` (so Z -> 1) -- the density ratio
``llmgan generate --resample ... --ratio-from ebm`` samples with, and ``llmgan evaluate`` scores as
``ebm_nll`` (NLL of held-out data under p, log Z estimated by importance sampling with G).

G never changes here (``g_step`` does nothing): the noise distribution must stay the one E is trained
against. ``adversarial.rounds`` x ``d_steps`` refreshes (fresh G samples each) train E after
``d_pretrain_steps`` refreshes; ``d_samples``/``d_epochs``/``d_batch_size``/``d_lr`` as for any D.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmgan.algorithms.base import Algorithm, GANContext, register
from llmgan.errors import ConfigError

NCE_LOSSES = ("vanilla", "nonsaturating")  # both train D by binary cross-entropy (losses.d_loss)


@dataclass
class ResidualEBMParams:
    pass  # one noise sample per data sample (the paper's setting): nothing to choose


@register("residual_ebm")
class ResidualEBM(Algorithm):
    Params = ResidualEBMParams

    def setup(self, ctx: GANContext) -> None:
        if ctx.cfg.loss not in NCE_LOSSES:
            raise ConfigError(f"adversarial.loss: residual_ebm trains E by noise-contrastive estimation (binary "
                              f"cross-entropy); use vanilla, got {ctx.cfg.loss!r}")
        if ctx.cfg.mle_steps_per_round:
            raise ConfigError("adversarial.mle_steps_per_round: residual_ebm keeps G frozen (it is the NCE noise "
                              "distribution); set it to 0")

    def g_step(self, ctx: GANContext) -> dict:
        # G is the frozen noise distribution of NCE: no update. g_loss 0 is logged so the round's record has
        # the key every algorithm's has (the engine's finiteness check, reports).
        return {"g_loss": 0.0}
