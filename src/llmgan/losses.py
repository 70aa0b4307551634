"""GAN losses on discriminator outputs, and the WGAN-GP gradient penalty.

``real`` / ``fake`` are raw discriminator outputs (logits) of any shape (e.g. (B,), (B, T) per-step, or
(B, R) for RelGAN's representations); every loss is a mean over all elements, and both players
*minimise* the returned value. Notation: sigma = sigmoid, r = D(x_real), f = D(G(z)); all forms use
``softplus``: ``-log sigma(z) = softplus(-z)`` and ``-log(1 - sigma(z)) = softplus(z)`` (stable).

==================  ==============================================  ==========================================
kind                L_D                                             L_G
==================  ==============================================  ==========================================
``vanilla``         softplus(-r) + softplus(f)                      -softplus(f)       (= log(1 - sigma(f)))
``nonsaturating``   softplus(-r) + softplus(f)                      softplus(-f)       (= -log sigma(f))
``wgan``            E[r] - E[f]                                     E[f]
``wgan_gp``         same as ``wgan`` (add :func:`gradient_penalty`)  E[f]
``wgan_standard``   E[f] - E[r]                                     -E[f]
``hinge``           relu(1 - r) + relu(1 + f)                       -E[f]
``lsgan``           0.5 (r - 1)^2 + 0.5 f^2                         0.5 (f - 1)^2
``rsgan``           softplus(-(r - f))   (BCE(r - f, 1))            softplus(-(f - r))  (BCE(f - r, 1))
``ragan``           softplus(-(r - E f)) + softplus(f - E r)        softplus(-(f - E r)) + softplus(r - E f)
==================  ==============================================  ==========================================

**WGAN sign convention.** In ``wgan`` / ``wgan_gp`` (this project's users' convention) the critic's
output scores *fakeness*: the critic minimises ``E[D(x_real)] - E[D(G(z))]`` (pushing fakes up and
reals down) and the generator minimises ``E[D(G(z))]``. That is the usual WGAN with the critic's sign
flipped. ``wgan_standard`` is the textbook form where the output scores realness (critic minimises
``E[D(G(z))] - E[D(x_real)]``, generator minimises ``-E[D(G(z))]``), matching the "logit > 0 means
real" convention of the other kinds. Use one or the other consistently for a given critic.

``rsgan`` pairs ``real[i]`` with ``fake[i]`` (shapes must match); ``ragan`` compares each output with the
other side's batch mean. Their generator losses need ``real``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from llmgan.errors import ConfigError

LOSS_KINDS: tuple[str, ...] = (
    "vanilla", "nonsaturating", "wgan", "wgan_gp", "wgan_standard", "hinge", "lsgan", "rsgan", "ragan",
)
# Kinds whose generator loss depends on the real scores too.
RELATIVISTIC_KINDS: frozenset[str] = frozenset({"rsgan", "ragan"})


def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ConfigError(f"loss kind {kind!r} is unknown; valid: {', '.join(LOSS_KINDS)}")


def d_loss(real: Tensor, fake: Tensor, kind: str = "nonsaturating") -> Tensor:
    """Discriminator/critic loss (scalar) to minimise.

    real: D outputs on real data, any shape; fake: D outputs on generated data, any shape (the same
    shape as ``real`` for ``rsgan``). See the module docstring for the formulas and WGAN signs.
    """
    _check_kind(kind)
    if kind in ("vanilla", "nonsaturating"):
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind in ("wgan", "wgan_gp"):
        return real.mean() - fake.mean()  # critic scores fakeness
    if kind == "wgan_standard":
        return fake.mean() - real.mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "lsgan":
        return 0.5 * (real - 1.0).pow(2).mean() + 0.5 * fake.pow(2).mean()
    if kind == "rsgan":
        _check_paired(real, fake)
        return F.softplus(-(real - fake)).mean()
    # ragan
    return F.softplus(-(real - fake.mean())).mean() + F.softplus(fake - real.mean()).mean()


def g_loss(fake: Tensor, real: Tensor | None = None, kind: str = "nonsaturating") -> Tensor:
    """Generator loss (scalar) to minimise.

    fake: D outputs on generated data, any shape; real: D outputs on real data, required by ``rsgan``
    and ``ragan`` (ignored otherwise; pass it detached if G should not push D's real scores — only
    the gradient w.r.t. G's parameters matters to the generator step anyway).
    """
    _check_kind(kind)
    if kind in RELATIVISTIC_KINDS and real is None:
        raise ValueError(f"g_loss(kind={kind!r}) needs the real scores (real=...)")
    if kind == "vanilla":
        return -F.softplus(fake).mean()  # = mean log(1 - sigma(f)), the minimax form
    if kind == "nonsaturating":
        return F.softplus(-fake).mean()
    if kind in ("wgan", "wgan_gp"):
        return fake.mean()
    if kind in ("wgan_standard", "hinge"):
        return -fake.mean()
    if kind == "lsgan":
        return 0.5 * (fake - 1.0).pow(2).mean()
    assert real is not None
    if kind == "rsgan":
        _check_paired(real, fake)
        return F.softplus(-(fake - real)).mean()
    # ragan
    return F.softplus(-(fake - real.mean())).mean() + F.softplus(real - fake.mean()).mean()


# Kinds whose critic output scores FAKENESS (see "WGAN sign convention" above).
FAKENESS_KINDS: frozenset[str] = frozenset({"wgan", "wgan_gp"})


def realness_logits(logits: Tensor, kind: str) -> Tensor:
    """D's outputs turned so that larger means "more real" for a D trained with loss ``kind``.

    The identity for every kind but ``wgan``/``wgan_gp``, whose critic scores fakeness (negated). Every
    place that reads D's output as a reward or as p(real) goes through this (or :func:`realness`), so a
    run trained with the ``wgan`` convention is not rewarded or judged backwards.
    """
    _check_kind(kind)
    return -logits if kind in FAKENESS_KINDS else logits


def realness(logits: Tensor, kind: str) -> Tensor:
    """p(real) read from D's outputs: ``sigmoid(realness_logits(logits, kind))``.

    A calibrated probability only for the cross-entropy kinds (vanilla, nonsaturating, rsgan/ragan as a
    pairwise logit); for the WGAN, hinge and least-squares kinds a monotone score in (0, 1), which is
    what thresholds, rankings and AUROC need.
    """
    return torch.sigmoid(realness_logits(logits, kind))


def _check_paired(real: Tensor, fake: Tensor) -> None:
    if real.shape != fake.shape:
        raise ValueError(
            f"rsgan pairs real and fake scores: shapes differ {tuple(real.shape)} vs {tuple(fake.shape)}"
        )


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real_soft: Tensor,
    fake_soft: Tensor,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP penalty ``weight * E[(||grad_x critic(x_hat)||_2 - 1)^2]`` (Gulrajani et al. 2017).

    real_soft, fake_soft: (B, T, V) one-hot / soft one-hot inputs (any shape with batch first, equal).
    ``x_hat = alpha * real + (1 - alpha) * fake`` with one ``alpha ~ U[0, 1)`` per sample (drawn with
    ``generator`` if given, for reproducibility). The inputs are detached, so the penalty trains only
    the critic; the graph is kept (``create_graph=True``) so the penalty can be backpropagated into
    the critic's parameters. The critic's outputs (any shape) are summed before differentiation, so
    each sample's gradient norm is taken over its own input only.
    """
    if real_soft.shape != fake_soft.shape:
        raise ValueError(f"real and fake shapes differ: {tuple(real_soft.shape)} vs {tuple(fake_soft.shape)}")
    if weight < 0:
        raise ConfigError(f"gp_weight must be >= 0, got {weight!r}")
    real = real_soft.detach()
    fake = fake_soft.detach().to(real.dtype)
    alpha_shape = (real.size(0),) + (1,) * (real.dim() - 1)
    alpha = torch.rand(alpha_shape, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    # eps inside the sqrt: the norm's gradient is finite even when grad == 0.
    norm = torch.sqrt(grad.flatten(1).pow(2).sum(dim=1) + 1e-12)
    return weight * (norm - 1.0).pow(2).mean()
