"""GAN losses against hand-computed values (math.log/exp, independent of the implementation)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llmgan.errors import ConfigError
from llmgan.losses import LOSS_KINDS, d_loss, g_loss, gradient_penalty

R = [2.0, -1.0]  # D outputs on real data
FK = [0.5, -0.5]  # D outputs on fake data


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def mean(v: list[float]) -> float:
    return sum(v) / len(v)


def t(v: list[float]) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


def expected_d(kind: str) -> float:
    if kind in ("vanilla", "nonsaturating"):
        return mean([-math.log(sig(r)) for r in R]) + mean([-math.log(1 - sig(f)) for f in FK])
    if kind in ("wgan", "wgan_gp"):
        return mean(R) - mean(FK)
    if kind == "wgan_standard":
        return mean(FK) - mean(R)
    if kind == "hinge":
        return mean([max(0.0, 1 - r) for r in R]) + mean([max(0.0, 1 + f) for f in FK])
    if kind == "lsgan":
        return 0.5 * mean([(r - 1) ** 2 for r in R]) + 0.5 * mean([f**2 for f in FK])
    if kind == "rsgan":
        return mean([-math.log(sig(r - f)) for r, f in zip(R, FK)])
    if kind == "ragan":
        mr, mf = mean(R), mean(FK)
        return mean([-math.log(sig(r - mf)) for r in R]) + mean([-math.log(1 - sig(f - mr)) for f in FK])
    raise AssertionError(kind)


def expected_g(kind: str) -> float:
    if kind == "vanilla":
        return mean([math.log(1 - sig(f)) for f in FK])
    if kind == "nonsaturating":
        return mean([-math.log(sig(f)) for f in FK])
    if kind in ("wgan", "wgan_gp"):
        return mean(FK)
    if kind in ("wgan_standard", "hinge"):
        return -mean(FK)
    if kind == "lsgan":
        return 0.5 * mean([(f - 1) ** 2 for f in FK])
    if kind == "rsgan":
        return mean([-math.log(sig(f - r)) for r, f in zip(R, FK)])
    if kind == "ragan":
        mr, mf = mean(R), mean(FK)
        return mean([-math.log(sig(f - mr)) for f in FK]) + mean([-math.log(1 - sig(r - mf)) for r in R])
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_d_loss_hand_computed(kind: str) -> None:
    assert d_loss(t(R), t(FK), kind).item() == pytest.approx(expected_d(kind), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_g_loss_hand_computed(kind: str) -> None:
    assert g_loss(t(FK), t(R), kind).item() == pytest.approx(expected_g(kind), rel=1e-9, abs=1e-12)


def test_some_literal_numbers() -> None:
    # Written-out values for real=[2, -1], fake=[0.5, -0.5] as a second, implementation-free check.
    assert d_loss(t(R), t(FK), "wgan").item() == pytest.approx(0.5)  # (2-1)/2 - 0
    assert d_loss(t(R), t(FK), "hinge").item() == pytest.approx(2.0)  # mean(0, 2) + mean(1.5, 0.5)
    assert d_loss(t(R), t(FK), "lsgan").item() == pytest.approx(1.375)  # 0.5*mean(1, 4) + 0.5*0.25
    assert g_loss(t(FK), kind="lsgan").item() == pytest.approx(0.625)  # 0.5*mean(0.25, 2.25)
    assert g_loss(t(FK), kind="nonsaturating").item() == pytest.approx(0.7240770, abs=1e-6)


def test_wgan_sign_convention() -> None:
    """``wgan``: critic output scores fakeness; both minimise. ``wgan_standard``: the usual signs."""
    real = torch.tensor([1.0, 3.0], requires_grad=True)
    fake = torch.tensor([-2.0, 0.0], requires_grad=True)
    d_loss(real, fake, "wgan").backward()
    # Minimising L_D pushes real scores down and fake scores up (gradient descent: x -= lr * grad).
    assert torch.all(real.grad > 0) and torch.all(fake.grad < 0)
    fake2 = fake.detach().clone().requires_grad_()
    g_loss(fake2, kind="wgan").backward()
    assert torch.all(fake2.grad > 0)  # G lowers the fakeness of its samples
    assert d_loss(real, fake, "wgan_gp").item() == d_loss(real, fake, "wgan").item()
    assert d_loss(real, fake, "wgan_standard").item() == pytest.approx(-d_loss(real, fake, "wgan").item())
    assert g_loss(fake, kind="wgan_standard").item() == pytest.approx(-g_loss(fake, kind="wgan").item())


def test_stable_for_large_logits() -> None:
    big = torch.tensor([1e4, -1e4])
    for kind in LOSS_KINDS:
        assert torch.isfinite(d_loss(big, -big, kind)), kind
        assert torch.isfinite(g_loss(-big, big, kind)), kind


def test_unknown_kind_message() -> None:
    with pytest.raises(ConfigError) as e:
        d_loss(t(R), t(FK), "wgan-gp")
    msg = str(e.value)
    assert "'wgan-gp'" in msg and "wgan_gp" in msg and "hinge" in msg and "\n" not in msg
    with pytest.raises(ConfigError):
        g_loss(t(FK), kind="bogus")


def test_relativistic_needs_real() -> None:
    with pytest.raises(ValueError, match="real"):
        g_loss(t(FK), kind="rsgan")


def test_gradient_penalty_linear_unit_norm_is_zero() -> None:
    torch.manual_seed(0)
    b, seq, v = 4, 3, 5
    w = torch.randn(seq, v, dtype=torch.float64)
    w = w / w.norm()  # gradient of the linear critic w.r.t. each sample has norm exactly 1

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x * w).sum(dim=(1, 2))

    real = torch.nn.functional.one_hot(torch.randint(0, v, (b, seq)), v).double()
    fake = torch.softmax(torch.randn(b, seq, v, dtype=torch.float64), -1)
    gp = gradient_penalty(critic, real, fake, weight=10.0)
    assert gp.item() == pytest.approx(0.0, abs=1e-9)
    # Scaling the critic by 3 gives gradient norm 3: penalty = 10 * (3 - 1)^2 = 40 exactly.
    gp3 = gradient_penalty(lambda x: 3 * critic(x), real, fake, weight=10.0)
    assert gp3.item() == pytest.approx(40.0)


def test_gradient_penalty_nonlinear_positive_and_differentiable() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5, 8), nn.Tanh(), nn.Linear(8, 1))
    real = torch.nn.functional.one_hot(torch.randint(0, 5, (6, 3)), 5).float()
    fake = torch.softmax(torch.randn(6, 3, 5), -1).requires_grad_()
    g = torch.Generator().manual_seed(1)
    gp = gradient_penalty(lambda x: net(x).squeeze(-1), real, fake, generator=g)
    assert gp.item() > 0
    gp.backward()  # create_graph=True: the penalty reaches the critic's parameters
    assert net[1].weight.grad is not None and net[1].weight.grad.abs().sum() > 0
    assert fake.grad is None  # inputs are detached: the penalty trains only the critic
    # Reproducible with the same generator seed.
    g2 = torch.Generator().manual_seed(1)
    gp2 = gradient_penalty(lambda x: net(x).squeeze(-1), real, fake, generator=g2)
    assert gp2.item() == pytest.approx(gp.item())


def test_realness_follows_each_kinds_sign_convention():
    from llmgan.losses import realness, realness_logits

    x = torch.tensor([2.0, -1.0])
    for kind in LOSS_KINDS:
        # the convention: minimising d_loss pushes real outputs this way, so realness must rise with it
        real = torch.zeros(2, requires_grad=True)
        d_loss(real, torch.zeros(2), kind).backward()
        toward_real = -real.grad.sign()  # the direction D moves real outputs
        expected = torch.sigmoid(x * toward_real)
        torch.testing.assert_close(realness(x, kind), expected, msg=kind)
        torch.testing.assert_close(realness_logits(x, kind), x * toward_real, msg=kind)
    with pytest.raises(ConfigError, match="unknown"):
        realness(x, "wasserstein")
