"""Generators: incremental == teacher-forced, KV cache == recompute, padding, losses, sampling, oracle."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmgan.errors import ConfigError
from llmgan.models.base import Generator, State
from llmgan.models.generators import (
    GPTGenerator,
    GPTGeneratorConfig,
    LSTMGenerator,
    build_generator,
    load_seqgan_oracle,
    oracle_nll,
    random_oracle,
)
from llmgan.models.sampling import sample_from_hidden

V = 41  # not a multiple of the sampler's block size (7): exercises the padded output layer
BOS, EOS, PAD = 1, 2, 0


def make(kind: str, seed: int = 0, **kw) -> Generator:
    """A small generator in eval mode (no dropout), deterministic by seed."""
    torch.manual_seed(seed)
    if kind == "lstm":
        kw = {"embed_dim": 16, "hidden_dim": 24, "num_layers": 2, **kw}
        g = build_generator("lstm", vocab_size=V, **kw)
    else:
        kw = {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_len": 64, **kw}
        g = build_generator("gpt", vocab_size=V, **kw)
        # GPT's N(0, 0.02) init makes near-uniform, input-insensitive outputs; larger weights make
        # every comparison below sensitive to a wrong position, mask or cache entry.
        with torch.no_grad():
            for p in g.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, 0.3)
    return g.eval()


def rand_tokens(B: int, T: int, seed: int = 1, low: int = 3) -> torch.Tensor:
    """Ordinary tokens (no BOS/EOS/PAD) so padding detection is unambiguous."""
    return torch.randint(low, V, (B, T), generator=torch.Generator().manual_seed(seed))


def left_pad(rows: list[torch.Tensor]) -> torch.Tensor:
    P = max(r.numel() for r in rows)
    out = torch.full((len(rows), P), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        if r.numel():
            out[i, P - r.numel() :] = r
    return out


def step_log_probs(g: Generator, tokens: torch.Tensor, prompt=None, z=None) -> torch.Tensor:
    """log p(tokens) (B, T) by feeding one token at a time through ``step``."""
    B, T = tokens.shape
    state = g.init_state(B, prompt=prompt, z=z)
    tok = torch.full((B,), g.bos_id, dtype=torch.long)
    out = []
    for t in range(T):
        logits, state = g.step(tok, state)
        out.append(logits.log_softmax(-1).gather(1, tokens[:, t : t + 1]))
        tok = tokens[:, t]
    return torch.cat(out, 1)


KINDS = ["lstm", "gpt"]


# --- step API / KV cache -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("with_prompt", [False, True])
def test_step_equals_teacher_forced(kind, with_prompt):
    g = make(kind)
    tokens = rand_tokens(5, 12)
    prompt = None
    if with_prompt:
        prompt = left_pad([rand_tokens(1, n, seed=10 + n)[0] for n in (4, 1, 0, 3, 4)])
    with torch.no_grad():
        full = g.log_probs(tokens, prompt=prompt)
        inc = step_log_probs(g, tokens, prompt=prompt)
    torch.testing.assert_close(inc, full, atol=1e-5, rtol=0)


def no_cache_sample(g: Generator, n: int, T: int, seed: int, prompt=None, **kw):
    """Reference sampler: recompute the whole forward over the growing prefix at every step."""
    gen = torch.Generator().manual_seed(seed)
    seq = torch.full((n, 1), g.bos_id, dtype=torch.long)
    lps = []
    with torch.no_grad():
        for _ in range(T):
            h, _ = g.forward_hidden(seq, g.init_state(n, prompt=prompt))
            tok, lp = sample_from_hidden(h[:, -1], g.lm_head.weight, g.lm_head.bias, generator=gen, **kw)
            seq = torch.cat([seq, tok[:, None]], 1)
            lps.append(lp)
    return seq[:, 1:], torch.stack(lps, 1)


@pytest.mark.parametrize("with_prompt", [False, True])
@pytest.mark.parametrize("kw", [{}, {"temperature": 0.7, "top_k": 10}])
def test_gpt_kv_cache_sampling_equals_recompute(with_prompt, kw):
    g = make("gpt", eos_id=None)
    n, T = 16, 20
    prompt = left_pad([rand_tokens(1, 1 + i % 5, seed=i)[0] for i in range(n)]) if with_prompt else None
    s = g.sample(n, T, prompt=prompt, generator=torch.Generator().manual_seed(7), **kw)
    ref_tokens, ref_lps = no_cache_sample(g, n, T, 7, prompt=prompt, **kw)
    assert torch.equal(s.tokens, ref_tokens)
    torch.testing.assert_close(s.log_probs, ref_lps, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_state_repeat_then_continue_matches_rows(kind):
    g = make(kind)
    B, k = 3, 4
    prompt = left_pad([rand_tokens(1, n, seed=20 + n)[0] for n in (2, 5, 3)])
    cont = rand_tokens(B * k, 3, seed=5)  # a different continuation for every copy
    with torch.no_grad():
        state = g.init_state(B, prompt=prompt).repeat(k)
        for t in range(cont.size(1)):
            logits, state = g.step(cont[:, t], state)
        for b in range(B):
            for j in range(k):
                s = g.init_state(1, prompt=prompt[b : b + 1])
                for t in range(cont.size(1)):
                    ref, s = g.step(cont[b * k + j, t : t + 1], s)
                torch.testing.assert_close(logits[b * k + j], ref[0], atol=1e-5, rtol=0)
        # select undoes repeat: keeping copy 0 of every row gives the same logits again
        state0 = g.init_state(B, prompt=prompt).repeat(k).select(torch.arange(0, B * k, k))
        l0, _ = g.step(cont[::k, 0], state0)
        l1, _ = g.step(cont[::k, 0], g.init_state(B, prompt=prompt))
        torch.testing.assert_close(l0, l1, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_left_padded_prompt_equals_unpadded(kind):
    g = make(kind)
    rows = [rand_tokens(1, n, seed=30 + n)[0] for n in (6, 2, 0, 4)]
    padded = left_pad(rows)
    tokens = rand_tokens(len(rows), 7, seed=8)
    with torch.no_grad():
        logits, _ = g.step(torch.full((len(rows),), BOS), g.init_state(len(rows), prompt=padded))
        lp = g.log_probs(tokens, prompt=padded)
        for b, r in enumerate(rows):
            prompt_b = r[None] if r.numel() else None
            ref_logits, _ = g.step(torch.full((1,), BOS), g.init_state(1, prompt=prompt_b))
            torch.testing.assert_close(
                logits[b].log_softmax(-1), ref_logits[0].log_softmax(-1), atol=1e-5, rtol=0
            )
            torch.testing.assert_close(
                lp[b], g.log_probs(tokens[b : b + 1], prompt=prompt_b)[0], atol=1e-5, rtol=0
            )


def test_gpt_max_len_error_and_padding_does_not_count():
    g = make("gpt", max_len=8)
    with pytest.raises(ConfigError, match="max_len"):
        g.log_probs(rand_tokens(2, 9))
    g.log_probs(rand_tokens(2, 8))  # exactly max_len positions is fine
    # 10 cache slots but only 6 + 1 BOS real positions in row 0, 1 + 1 in row 1: fits
    prompt = left_pad([rand_tokens(1, 6)[0], rand_tokens(1, 1)[0]])
    prompt = torch.cat([torch.full((2, 4), PAD), prompt], 1)
    g.log_probs(rand_tokens(2, 1), prompt=prompt)
    with pytest.raises(ConfigError, match="max_len"):
        g.sample(2, 5, prompt=prompt)


# --- losses ------------------------------------------------------------------------------------
def _grads(g: Generator, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in g.parameters() if p.requires_grad]
    return [
        x if x is not None else torch.zeros_like(p)
        for x, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params)
    ]


def _reference_log_probs(g: Generator, tokens: torch.Tensor) -> torch.Tensor:
    """Plain autograd: full logits, F.log_softmax, gather."""
    logits = g.lm_head(g.hidden(tokens))  # (B, T, V)
    return F.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weights_kind", ["dense", "with_zeros", "advantages"])
def test_weighted_nll_value_and_grad(kind, weights_kind):
    g = make(kind)
    B, T = 24, 13  # 312 rows > the fused layer's 256-row chunk
    tokens = rand_tokens(B, T, low=0)
    gen = torch.Generator().manual_seed(3)
    if weights_kind == "dense":
        w = torch.full((B, T), 1.0 / (B * T))
    else:
        w = torch.randn(B, T, generator=gen)
        if weights_kind == "with_zeros":
            w = w.abs() * (torch.rand(B, T, generator=gen) < 0.6)
    loss = g.weighted_nll(tokens, w)
    ref = -(_reference_log_probs(g, tokens) * w).sum()
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(loss, -(g.log_probs(tokens) * w).sum(), atol=1e-5, rtol=1e-5)
    # Both sides are float32 (softmax vs log_softmax: ~2e-6 relative error each against float64) and
    # the gradient sums V terms that nearly cancel, so allow a few 1e-5 absolute.
    for a, b in zip(_grads(g, g.weighted_nll(tokens, w)), _grads(g, ref)):
        torch.testing.assert_close(a, b, atol=4e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_log_probs_grad_matches_autograd(kind):
    g = make(kind)
    tokens = rand_tokens(24, 13, low=0)
    r = torch.randn(24, 13, generator=torch.Generator().manual_seed(4))  # arbitrary upstream grad
    lp = g.log_probs(tokens)
    ref = _reference_log_probs(g, tokens)
    torch.testing.assert_close(lp, ref, atol=1e-5, rtol=0)
    for a, b in zip(_grads(g, (lp * r).sum()), _grads(g, (ref * r).sum())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# --- sampling ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("feed", ["hard", "soft"])
def test_gumbel_relaxed_carries_gradient(kind, feed):
    g = make(kind, tie_weights=False) if kind == "gpt" else make(kind)
    g.train(False)
    r = g.sample_relaxed(6, 8, tau=0.5, generator=torch.Generator().manual_seed(0), feed=feed)
    assert r.soft.shape == (6, 8, V) and r.tokens.shape == (6, 8)
    assert torch.equal(r.tokens, r.soft.argmax(-1))
    torch.testing.assert_close(r.soft.sum(-1), torch.ones(6, 8))
    probe = torch.randn(6, 8, V, generator=torch.Generator().manual_seed(1))
    (r.soft * probe).sum().backward()
    emb = g.embedding.weight if kind == "lstm" else g.tok_emb.weight
    for p in (g.lm_head.weight, g.lm_head.bias, emb):
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_samples_stop_at_eos(kind):
    g = make(kind)
    with torch.no_grad():
        g.lm_head.bias.zero_()
        g.lm_head.bias[EOS] = 4.0  # EOS gets a large share of the mass at every step
    n, T = 200, 30
    s = g.sample(n, T, generator=torch.Generator().manual_seed(0))
    tokens, lengths = s.tokens, s.lengths
    assert tokens.shape[0] == n and tokens.shape[1] <= T
    is_eos = tokens == EOS
    ended = is_eos.any(1)
    assert ended.float().mean() > 0.9 and (lengths < tokens.size(1)).any()
    first = is_eos.float().argmax(1)
    expect = torch.where(ended, first + 1, torch.full_like(first, tokens.size(1)))
    assert torch.equal(lengths, expect)
    after = ~s.mask()
    assert (tokens[after] == PAD).all()
    assert (s.log_probs[after] == 0).all()
    assert (s.log_probs[s.mask()] < 0).all()
    assert ((tokens == EOS).sum(1) <= 1).all()  # nothing (in particular no 2nd EOS) after the end
    with torch.no_grad():
        g.lm_head.bias[EOS] = 100.0
    s = g.sample(8, T)
    assert (s.lengths == 1).all() and (s.tokens[:, 0] == EOS).all()


@pytest.mark.parametrize("kind", KINDS)
def test_latent_z_controls_sample(kind):
    g = make(kind, latent_dim=8)
    gz = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(32, 8, generator=gz), torch.randn(32, 8, generator=gz)

    def draw(z):
        return g.sample(32, 10, z=z, generator=torch.Generator().manual_seed(5)).tokens

    assert torch.equal(draw(z1), draw(z1))
    assert not torch.equal(draw(z1), draw(z2))
    # z reaches the teacher-forced path too, and step == teacher forcing with z
    tokens = rand_tokens(4, 6)
    with torch.no_grad():
        lp = g.log_probs(tokens, z=z1[:4])
        assert not torch.allclose(lp, g.log_probs(tokens, z=z2[:4]))
        torch.testing.assert_close(step_log_probs(g, tokens, z=z1[:4]), lp, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        make(kind).init_state(2, z=z1[:2])


def test_gpt_mle_lowers_nll():
    torch.manual_seed(0)
    g = GPTGenerator(GPTGeneratorConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=4, max_len=32))
    # corpus: arithmetic runs (s, s+1, ...) mod 10 shifted past the special tokens, then EOS
    gen = torch.Generator().manual_seed(0)
    starts = torch.randint(0, 10, (64, 1), generator=gen)
    corpus = torch.cat([(starts + torch.arange(11)) % 10 + 3, torch.full((64, 1), EOS)], 1)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(g.nll(corpus))
    for _ in range(40):
        opt.zero_grad()
        g.nll(corpus).backward()
        opt.step()
    with torch.no_grad():
        after = float(g.nll(corpus))
    assert before > 3.0  # ~ log(41) = 3.7 at init
    assert after < 0.5 * before, (before, after)


def test_build_generator_registry():
    assert isinstance(build_generator("lstm", vocab_size=10), LSTMGenerator)
    g = build_generator("gpt", vocab_size=10, d_model=16, n_heads=2)
    assert isinstance(g, GPTGenerator) and g.lm_head.weight is g.tok_emb.weight
    assert build_generator("gpt", vocab_size=10, tie_weights=False).lm_head.weight is not g.tok_emb.weight
    with pytest.raises(ConfigError, match="unknown generator"):
        build_generator("rnn", vocab_size=10)
    with pytest.raises(ConfigError):
        build_generator("gpt", vocab_size=10, d_model=30, n_heads=4)
    with pytest.raises(ConfigError):
        build_generator("gpt", vocab_size=10, no_such_field=1)


def test_gpt_state_layout():
    g = make("gpt")
    prompt = left_pad([rand_tokens(1, 3)[0], rand_tokens(1, 1)[0]])
    s = g.init_state(2, prompt=prompt)
    assert isinstance(s, State) and s.pos == 3 and len(s.tensors) == 2
    for k, v in s.tensors:
        assert k.shape == v.shape == (2, 4, 3, 8)
    assert s.extra["key_mask"].tolist() == [[True, True, True], [False, False, True]]
    assert s.extra["offset"].tolist() == [0, 2]
    _, s = g.step(torch.tensor([BOS, BOS]), s)
    assert s.pos == 4 and s.tensors[0][0].shape == (2, 4, 4, 8) and s.extra["key_mask"].shape == (2, 4)


# --- SeqGAN oracle -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seqgan_oracle():
    return load_seqgan_oracle()


def test_seqgan_oracle_own_samples_nll(seqgan_oracle):
    s = seqgan_oracle.sample(10_000, 20, generator=torch.Generator().manual_seed(0))
    assert s.tokens.shape == (10_000, 20) and (s.lengths == 20).all()  # no EOS in the oracle
    nll = oracle_nll(seqgan_oracle, s.tokens)
    assert abs(nll - 5.75) < 0.02, nll  # the published "real data" oracle NLL
    # the sampler's own log-probs agree with the teacher-forced score
    assert abs(-float(s.log_probs.mean()) - nll) < 1e-3


def test_seqgan_oracle_uniform_nll(seqgan_oracle):
    u = torch.randint(0, 5000, (2000, 20), generator=torch.Generator().manual_seed(0))
    nll = oracle_nll(seqgan_oracle, u)
    assert abs(nll - 11.4) < 0.2, nll
    assert nll > math.log(5000)  # worse than a uniform model


def test_random_oracle_deterministic_and_any_size():
    a, b, c = (
        random_oracle(vocab_size=50, seed=3),
        random_oracle(vocab_size=50, seed=3),
        random_oracle(50, seed=4),
    )
    pa, pb, pc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    for vocab, T in [(50, 7), (7, 33), (300, 1)]:
        o = random_oracle(vocab_size=vocab, embed_dim=8, hidden_dim=12, seed=1)
        s = o.sample(9, T, generator=torch.Generator().manual_seed(0))
        assert s.tokens.shape == (9, T) and int(s.tokens.max()) < vocab and (s.lengths == T).all()
        assert math.isfinite(oracle_nll(o, s.tokens))


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch.backends.mkldnn.flags noise
def test_fused_loss_and_sampling_under_bf16_autocast():
    """train.precision=bf16 runs models under autocast: the fused output layer and the sampler stay fp32.

    On a CPU without native bf16 (AVX2 only) oneDNN has no bf16 LSTM primitive, so there the LSTM runs
    torch's own kernel (oneDNN off: autocast leaves that op in fp32) while everything else stays under
    bf16 autocast; the engine itself trains such a CPU in fp32 (llmgan.training.precision).
    """
    from contextlib import nullcontext

    from llmgan.models.generators.lstm import LSTMGenerator, LSTMGeneratorConfig
    from llmgan.training.precision import bf16_unsupported_reason

    torch.manual_seed(0)
    g = LSTMGenerator(LSTMGeneratorConfig(vocab_size=50, embed_dim=8, hidden_dim=8))
    tokens = torch.randint(0, 50, (4, 6))
    w = torch.full((4, 6), 1 / 24)
    ref = g.weighted_nll(tokens, w)
    native = bf16_unsupported_reason("cpu") is None
    with (nullcontext() if native else torch.backends.mkldnn.flags(enabled=False)), \
            torch.autocast("cpu", dtype=torch.bfloat16):
        loss = g.weighted_nll(tokens, w)
        lp = g.log_probs(tokens)
        s = g.sample(3, 5, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.dtype == torch.float32 and abs(float(loss.detach()) - float(ref.detach())) < 0.05
    assert lp.dtype == torch.float32 and s.tokens.shape == (3, 5)
    assert g.lm_head.weight.grad is not None and torch.isfinite(g.lm_head.weight.grad).all()


def test_rng_on_keeps_a_generator_already_on_the_device():
    from llmgan.models.sampling import rng_on

    g = torch.Generator().manual_seed(3)
    assert rng_on(g, "cpu") is g and rng_on(None, "cpu") is None


@pytest.mark.parametrize("kind", KINDS)
def test_sample_is_its_step_loop_with_every_option(kind):
    # one sampling loop: sample() collects sample_steps(); bans and the watermark act in the steps, and a
    # consumer that stops iterating stops the sampling (the server's deadline between two tokens)
    from llmgan.models.watermark import Watermark

    g = make(kind, eos_id=EOS, bos_id=BOS, pad_id=PAD).eval()
    wm = Watermark(b"s" * 32, gamma=0.25, delta=4.0, context=2)
    prompt = left_pad([rand_tokens(1, 3, seed=5)[0], rand_tokens(1, 5, seed=6)[0]])
    kw = {"temperature": 0.9, "top_k": 12, "prompt": prompt, "ban_ids": torch.tensor([3, 4, 5]), "watermark": wm}
    s = g.sample(2, 10, generator=torch.Generator().manual_seed(2), **kw)
    cols = list(g.sample_steps(2, 10, generator=torch.Generator().manual_seed(2), **kw))
    got = torch.stack([t for t, _ in cols], 1)
    assert torch.equal(got, s.tokens[:, : got.size(1)]) and (s.tokens[:, got.size(1):] == PAD).all()
    assert torch.equal(torch.stack([lp for _, lp in cols], 1), s.log_probs[:, : got.size(1)])
    assert not torch.isin(s.tokens, torch.tensor([3, 4, 5])).any()
    plain = g.sample(2, 10, generator=torch.Generator().manual_seed(2), temperature=0.9, top_k=12, prompt=prompt)
    assert not torch.equal(plain.tokens, s.tokens)  # the options change the draw
    steps = []
    real = g._sample_next
    g._sample_next = lambda *a, **k: (steps.append(1), real(*a, **k))[1]
    it = g.sample_steps(2, 10)
    assert steps == []  # lazy: nothing runs before the first step is asked for
    next(it), next(it)
    assert len(steps) == 2
    with pytest.raises(ConfigError, match="temperature"):
        g.sample_steps(2, 10, temperature=float("nan"))  # checked at the call, before any step
