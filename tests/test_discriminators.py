"""Discriminators: shapes, soft inputs, per-step scores, padding, prompts, configs, a short training run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmgan.errors import ConfigError
from llmgan.losses import d_loss
from llmgan.models.discriminators import (
    CNNDiscriminator,
    Discriminator,
    RelGANDiscriminator,
    TransformerDiscriminator,
    build_discriminator,
)

V = 30
PAD = 0

# Small configs keep the tests fast; the default (paper) configs are exercised in test_default_configs.
SMALL: dict[str, dict] = {
    "cnn": dict(emb_dim=16, filter_sizes=(1, 2, 3, 5), num_filters=(8, 8, 8, 8)),
    "relgan_cnn": dict(emb_dim=16, num_rep=8, filter_sizes=(2, 3), num_filters=(16, 16), hidden_dim=16),
    "transformer": dict(d_model=32, num_layers=2, num_heads=4),
}
NAMES = list(SMALL)


def make(name: str, seed: int = 0, **kw) -> Discriminator:
    torch.manual_seed(seed)
    return build_discriminator(name, V, **{**SMALL[name], **kw})


def ids(b: int, t: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, V, (b, t), generator=g)  # never PAD


@pytest.mark.parametrize("name", NAMES)
def test_shapes_ids_and_soft(name: str) -> None:
    d = make(name, pad_id=PAD)
    x = ids(3, 7)
    soft = torch.softmax(torch.randn(3, 7, V), -1)
    for inp in (x, soft):
        assert d(inp).shape == (3,)
        assert d(inp, per_step=True).shape == (3, 7)
        assert d.features(inp).shape == (3, d.feature_dim)
        assert d(inp, prompt=ids(3, 4, seed=2)).shape == (3,)
        assert d(inp, prompt=ids(3, 4, seed=2), per_step=True).shape == (3, 7)


@pytest.mark.parametrize("name", NAMES)
def test_soft_one_hot_equals_ids(name: str) -> None:
    d = make(name, pad_id=PAD).eval()
    x = ids(4, 9)
    x[0, -3:] = PAD  # padding is detected in soft inputs too (via argmax)
    soft = F.one_hot(x, V).float()
    torch.testing.assert_close(d(soft), d(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d(soft, per_step=True), d(x, per_step=True), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d.features(soft), d.features(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_soft_inputs(name: str) -> None:
    d = make(name)
    soft = torch.softmax(torch.randn(2, 6, V), -1).requires_grad_()
    d(soft).sum().backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0
    # Per-step scores also backpropagate, and position t's score ignores tokens after t (causal).
    soft2 = torch.softmax(torch.randn(2, 6, V), -1).requires_grad_()
    d.eval()
    d(soft2, per_step=True)[:, 2].sum().backward()
    assert soft2.grad[:, :3].abs().sum() > 0
    assert soft2.grad[:, 3:].abs().sum() == 0


@pytest.mark.parametrize("name", NAMES)
def test_per_step_equals_prefix_forward(name: str) -> None:
    d = make(name, pad_id=PAD).eval()
    x = ids(3, 12)
    prompt = ids(3, 3, seed=5)
    prompt[0, :2] = PAD  # left-padded prompt
    with torch.no_grad():
        dense = d(x, per_step=True)
        dense_p = d(x, prompt=prompt, per_step=True)
        for t in (0, 1, 4, 11):
            torch.testing.assert_close(dense[:, t], d(x[:, : t + 1]), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(dense_p[:, t], d(x[:, : t + 1], prompt=prompt), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_padding_is_masked(name: str) -> None:
    d = make(name, pad_id=PAD).eval()
    x = ids(3, 6)
    padded = torch.cat([x, torch.full((3, 5), PAD)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(d(padded), d(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(d.features(padded), d.features(x), atol=1e-5, rtol=1e-5)
        # Per-step scores at trailing pads stay at the whole sequence's score.
        dense = d(padded, per_step=True)
        torch.testing.assert_close(dense[:, 5:], d(x)[:, None].expand(3, 6), atol=1e-5, rtol=1e-5)
        # Left-padding a prompt does not change anything either.
        prompt = ids(3, 2, seed=3)
        left = torch.cat([torch.full((3, 4), PAD), prompt], dim=1)
        torch.testing.assert_close(d(x, prompt=left), d(x, prompt=prompt), atol=1e-5, rtol=1e-5)
        # The prompt does matter (it is prepended).
        assert not torch.allclose(d(x, prompt=prompt), d(x), atol=1e-4)


def test_cnn_sequences_shorter_than_filters() -> None:
    torch.manual_seed(0)
    d = CNNDiscriminator(V).eval()  # SeqGAN defaults: widths up to 20
    assert d.feature_dim == 1720
    for t in (1, 3, 25):
        assert d(ids(2, t)).shape == (2,)
        assert torch.isfinite(d(ids(2, t), per_step=True)).all()


def test_default_configs() -> None:
    torch.manual_seed(0)
    cnn = build_discriminator("cnn", V)
    assert [c.kernel_size[0] for c in cnn.convs.convs] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20]
    assert cnn.dropout.p == 0.25 and cnn.embedding.weight.shape == (V, 64)
    rel = build_discriminator("relgan_cnn", V)
    assert isinstance(rel, RelGANDiscriminator)
    assert rel.num_rep == 64 and rel.emb_dim_single == 1 and rel.feature_dim == 1200
    x = ids(2, 5)
    assert rel.forward_reps(x).shape == (2, 64)
    assert rel.forward_reps(x, per_step=True).shape == (2, 5, 64)
    rel.eval()
    torch.testing.assert_close(rel(x), rel.forward_reps(x).mean(-1))
    tr = build_discriminator("transformer", V)
    assert isinstance(tr, TransformerDiscriminator)
    assert tr.d_model == 64 and len(tr.layers) == 2 and tr.max_len == 256
    assert tr.layers[0].norm_first


def test_relgan_spectral_norm_builds() -> None:
    d = make("relgan_cnn", sn=True)
    assert d(ids(2, 4)).shape == (2,)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="discriminator name 'lstm'"):
        build_discriminator("lstm", V)
    with pytest.raises(ConfigError, match="bad option"):
        build_discriminator("cnn", V, nonsense=1)
    with pytest.raises(ConfigError, match="num_rep"):
        RelGANDiscriminator(V, emb_dim=64, num_rep=7)
    with pytest.raises(ConfigError, match="num_heads"):
        TransformerDiscriminator(V, d_model=30, num_heads=4)
    with pytest.raises(ConfigError, match="num_filters"):
        CNNDiscriminator(V, filter_sizes=(1, 2), num_filters=(3,))
    with pytest.raises(ConfigError, match="pad_id"):
        CNNDiscriminator(V, pad_id=V)
    with pytest.raises(ConfigError, match="vocab_size"):
        CNNDiscriminator(0)
    with pytest.raises(ConfigError, match="dropout"):
        CNNDiscriminator(V, dropout=1.0)
    with pytest.raises(ConfigError, match="causal"):
        TransformerDiscriminator(V, causal=False)(ids(1, 3), per_step=True)
    with pytest.raises(ConfigError, match="max_len"):
        TransformerDiscriminator(V, max_len=4)(ids(1, 5))
    for msg in ("discriminator name 'x'",):
        with pytest.raises(ConfigError) as e:
            build_discriminator("x", V)
        assert msg in str(e.value) and "\n" not in str(e.value)


def test_bad_input_shapes() -> None:
    d = make("cnn")
    with pytest.raises(ValueError, match="vocab_size"):
        d(torch.rand(2, 3, V + 1))
    with pytest.raises(ValueError):
        d(torch.rand(2, 3))  # float but not (B, T, V)


def _batch(n: int, t: int, real: bool, g: torch.Generator) -> torch.Tensor:
    """Real: arithmetic sequences (x[t+1] = x[t] + 1 mod V, never PAD). Fake: uniform random tokens."""
    if real:
        start = torch.randint(1, V, (n, 1), generator=g)
        return (start - 1 + torch.arange(t)) % (V - 1) + 1
    return torch.randint(1, V, (n, t), generator=g)


@pytest.mark.parametrize("name", NAMES)
def test_short_training_separates_distributions(name: str) -> None:
    d = make(name)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    t = 10
    for _ in range(150):
        real, fake = _batch(32, t, True, g), _batch(32, t, False, g)
        # Fakes go in as one-hots, so the soft-input path is what gets trained on them.
        loss = d_loss(d(real), d(F.one_hot(fake, V).float()), "nonsaturating")
        opt.zero_grad()
        loss.backward()
        opt.step()
    d.eval()
    with torch.no_grad():
        real, fake = _batch(200, t, True, g), _batch(200, t, False, g)
        acc = ((d(real) > 0).float().mean() + (d(fake) < 0).float().mean()) / 2
    assert acc.item() > 0.9, acc.item()


@pytest.mark.parametrize("name", ["cnn", "relgan_cnn"])
def test_conv_implementations_agree(name: str) -> None:
    """The unfold+GEMM and the conv1d paths of the conv bank compute the same function."""
    d = make(name, pad_id=PAD).eval()
    x = ids(3, 8)
    x[1, -2:] = PAD
    with torch.no_grad():
        ref = (d(x), d(x, per_step=True))
        d.convs.use_unfold = not d.convs.use_unfold
        alt = (d(x), d(x, per_step=True))
    for a, b in zip(ref, alt):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_cnn_pools_whole_windows_like_seqgan_valid_convolutions():
    """Full-length rows pool only windows wholly inside the sequence (SeqGAN's VALID conv)."""
    torch.manual_seed(0)
    d = CNNDiscriminator(30, emb_dim=8, filter_sizes=(2, 5), num_filters=(4, 3), dropout=0.0).eval()
    x = torch.randint(0, 30, (6, 7))
    with torch.no_grad():
        ht = d.embed(x).transpose(1, 2)
        pooled = torch.cat([torch.relu(conv(ht).max(-1).values) for conv in d.convs.convs], dim=1)
        expected = d.out(d.highway(pooled)).squeeze(-1)
        torch.testing.assert_close(d(x), expected, atol=1e-5, rtol=1e-5)
        # a row shorter than the widest filter still scores (its causal windows), and equals per-step
        short = x[:, :3]
        torch.testing.assert_close(d(short), d(x, per_step=True)[:, 2], atol=1e-5, rtol=1e-5)


def test_cnn_scores_rollout_completions_like_plain_forward():
    """The prefix-sharing rollout scorer equals scoring every completion separately."""
    from llmgan.models.discriminators.cnn import score_completions
    from llmgan.models.generators.oracle import random_oracle
    from llmgan.rewards import rollout_completions

    policy = random_oracle(vocab_size=40, seed=2)
    g = torch.Generator().manual_seed(0)
    tokens = policy.sample(5, 9, generator=g).tokens
    comps = rollout_completions(policy, tokens, 3, g)  # (8, 5, 3, 9)
    torch.manual_seed(1)
    d = CNNDiscriminator(40, emb_dim=8, filter_sizes=(1, 3, 9), num_filters=(4, 5, 6)).eval()
    with torch.no_grad():
        plain = d(comps.reshape(-1, 9)).view(8, 5, 3)
    for method in ("table", "conv", "auto"):
        torch.testing.assert_close(score_completions(d, tokens, comps, method), plain, atol=1e-5, rtol=1e-5)
    # under bf16 autocast the window sums stay fp32 (only the highway runs in bf16): close to fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = score_completions(d, tokens, comps, "table").float()
    assert (low - plain).abs().max() < 0.05
    assert score_completions(d.train(), tokens, comps) is None  # dropout active: no shortcut


def test_unfold_whole_window_pooling_matches_masked_path_and_gradients():
    """The few-channel fast path (im2col, pooled in GEMM layout, custom max backward) equals the
    general masked path in value and in gradients, and never routes gradient to non-maximal windows."""
    from llmgan.models.discriminators.cnn import CausalConvBank

    torch.manual_seed(0)
    bank = CausalConvBank(1, (2, 3, 5), (4, 6, 3))
    assert bank.use_unfold
    h = torch.randn(7, 9, 1, requires_grad=True)
    fast = bank(h, None, False, full_windows=True)  # valid None: the fast path
    grads_fast = torch.autograd.grad(fast.pow(2).sum(), [h, *bank.parameters()])
    all_valid = torch.ones(7, 9, dtype=torch.bool)
    slow = bank(h, all_valid, False, full_windows=True)  # a mask: the general path, same semantics
    grads_slow = torch.autograd.grad(slow.pow(2).sum(), [h, *bank.parameters()])
    torch.testing.assert_close(fast, slow)
    for a, b in zip(grads_fast, grads_slow):
        torch.testing.assert_close(a, b)
    # the sparse backward against finite differences (float64; distinct values, so no ties)
    from llmgan.models.discriminators.cnn import _WindowLinearMax

    cols = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_WindowLinearMax.apply, (cols, weight, bias))


def test_relgan_discriminator_trains_under_bf16_autocast():
    """The sparse-backward conv bank runs under CPU bf16 autocast (GEMM in bf16, gradients in fp32)."""
    from llmgan.models.discriminators.relgan_cnn import RelGANDiscriminator

    torch.manual_seed(0)
    d = RelGANDiscriminator(30, emb_dim=8, num_rep=4, filter_sizes=(2, 3), num_filters=(6, 6), hidden_dim=8).eval()
    x = torch.softmax(torch.randn(5, 7, 30), -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = d(x).float()
    low.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in d.parameters())
    with torch.no_grad():
        assert (low - d(x)).abs().max() < 0.05
