"""Monte-Carlo rollouts, SeqGAN's delayed rollout policy and frozen snapshots on every generator family:
our LSTM, our GPT (KV cache), and a tiny Hugging Face causal LM built from a config (in-place KV
buffers, LoRA snapshots). Issue 9 items 2, 3 and 12."""

from __future__ import annotations

import pytest
import torch

from llmgan.models.base import Generator, State
from llmgan.models.generators.gpt import GPTGenerator, GPTGeneratorConfig
from llmgan.models.generators.lstm import LSTMGenerator, LSTMGeneratorConfig
from llmgan.rewards import mc_rollout_rewards, rollout_completions

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song", "one two three four five"]


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    pytest.importorskip("transformers")
    from llmgan.models.hf import make_tiny_hf_model

    root = tmp_path_factory.mktemp("hf_roll")
    return {
        "gpt2": make_tiny_hf_model(str(root / "gpt2"), "gpt2", TEXTS, pad_token=True, seed=0),
        "llama": make_tiny_hf_model(str(root / "llama"), "llama", TEXTS, pad_token=True, seed=1),
    }


def hf_generator(path: str, sharpen: bool = True, **kw) -> Generator:
    from llmgan.config import ModelConfig
    from llmgan.data.hf_tokenizer import HFTokenizer
    from llmgan.models.factory import make_generator

    g = make_generator(ModelConfig(name=f"hf:{path}", kwargs=kw), HFTokenizer(path))
    if sharpen:  # larger weights: outputs depend sharply on positions and cache entries
        with torch.no_grad():
            for n, p in g.named_parameters():
                if "lora" not in n and p.dim() > 1:
                    p.mul_(8.0)
    return g.eval()


def make(kind: str, request) -> Generator:
    """lstm | gpt | hf:gpt2 | hf:llama (the tiny HF models only built when asked for)."""
    torch.manual_seed(0)
    if kind == "lstm":
        return LSTMGenerator(LSTMGeneratorConfig(vocab_size=12, embed_dim=8, hidden_dim=8, init_std=0.5)).eval()
    if kind == "gpt":
        g = GPTGenerator(GPTGeneratorConfig(vocab_size=12, d_model=16, n_layers=2, n_heads=2, max_len=16))
        with torch.no_grad():
            for p in g.parameters():
                if p.dim() > 1:
                    p.mul_(20.0)  # away from near-uniform outputs, so a wrong cache shows
        return g.eval()
    return hf_generator(request.getfixturevalue("tiny_hf")[kind.split(":")[1]])


KINDS = ["lstm", "gpt", "hf:gpt2", "hf:llama"]


# ------------------------------------------------------------------------------------ State.cat
def test_state_cat_concatenates_nested_tensors_and_extra_rowwise():
    a = State(((torch.zeros(2, 3), [torch.zeros(2, 1)]),), 4, {"mask": torch.zeros(2, 5), "flag": False, "n": 7})
    b = State(((torch.ones(1, 3), [torch.ones(1, 1)]),), 4, {"mask": torch.ones(1, 5), "flag": True, "n": 7})
    c = State.cat([a, b])
    assert c.pos == 4 and c.tensors[0][0].shape == (3, 3) and isinstance(c.tensors[0][1], list)
    assert c.tensors[0][1][0][:, 0].tolist() == [0, 0, 1]
    assert c.extra["mask"].shape == (3, 5) and c.extra["mask"][:, 0].tolist() == [0, 0, 1]
    assert c.extra["flag"] is True and c.extra["n"] == 7  # a row flag ORs; other values must agree
    with pytest.raises(ValueError, match="positions"):
        State.cat([a, State(b.tensors, 5, b.extra)])
    with pytest.raises(ValueError, match="differs"):
        State.cat([a, State(b.tensors, 4, {**b.extra, "n": 8})])
    with pytest.raises(ValueError, match="extra"):
        State.cat([a, State(b.tensors, 4, {"mask": b.extra["mask"]})])


@pytest.mark.parametrize("kind", KINDS)
def test_state_cat_then_step_equals_stepping_each_part(kind, request):
    """A concatenated cache continues every row exactly as its own part would (same logits)."""
    g = make(kind, request)
    x = torch.randint(3, g.vocab_size, (3, 4))
    with torch.no_grad():
        _, s1 = g.forward_hidden(x[:2], g.init_state(2))
        _, s2 = g.forward_hidden(x[2:], g.init_state(1))
        tok = torch.randint(3, g.vocab_size, (3,))
        both, _ = g.step(tok, State.cat([s1, s2]))
        l1, _ = g.step(tok[:2], s1)
        l2, _ = g.step(tok[2:], s2)
    torch.testing.assert_close(both, torch.cat([l1, l2]), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------ rollouts
@pytest.mark.parametrize("kind", KINDS)
def test_rollouts_keep_prefixes_and_equal_the_naive_greedy_continuation(kind, request):
    """Greedy rollouts (temperature 0) from the batched staircase equal, row by row, the greedy
    continuation of each prefix computed on its own; sampled rollouts keep every prefix."""
    g = make(kind, request)
    B, T, k = 2, 6, 3
    tokens = g.sample(B, T, generator=torch.Generator().manual_seed(1)).tokens
    comp = rollout_completions(g, tokens, k, torch.Generator().manual_seed(2), temperature=0.0)
    assert comp.shape == (T - 1, B, k, T)
    pad = g.pad_id if g.pad_id is not None else 0
    for t in range(1, T):
        assert torch.equal(comp[t - 1, :, :, :t], tokens[:, None, :t].expand(B, k, t))
        with torch.no_grad():
            _, st = g.forward_hidden(torch.cat([g._bos(B), tokens[:, : t - 1]], 1), g.init_state(B))
            cont = g.sample(B, T - t, state=st, first_token=tokens[:, t - 1], temperature=0.0).tokens
        if g.eos_id is not None:  # a prefix that already ended stays padded
            ended = (tokens[:, :t] == g.eos_id).any(1, keepdim=True)
            cont = torch.where(ended, torch.full_like(cont, pad), cont)
        for j in range(k):
            assert torch.equal(comp[t - 1, :, j, t:], cont), (kind, t, j)
    sampled = rollout_completions(g, tokens, k, torch.Generator().manual_seed(3))
    assert bool(((sampled >= 0) & (sampled < g.vocab_size)).all())
    for t in range(1, T):
        assert torch.equal(sampled[t - 1, :, :, :t], tokens[:, None, :t].expand(B, k, t))
    assert not torch.equal(sampled[0, :, 0], sampled[0, :, 1]) or kind == "lstm"  # rollouts differ


@pytest.mark.parametrize("kind", ["gpt", "hf:gpt2"])
def test_mc_rollout_rewards_on_kv_cache_generators(kind, request):
    g = make(kind, request)
    tokens = g.sample(3, 5, generator=torch.Generator().manual_seed(0)).tokens
    score = lambda x: (x % 2 == 0).float().mean(1)  # noqa: E731
    r = mc_rollout_rewards(g, score, tokens, 4, torch.Generator().manual_seed(1))
    assert r.shape == (3, 5) and bool(((r >= 0) & (r <= 1)).all())
    torch.testing.assert_close(r[:, -1], score(tokens))


# ------------------------------------------------------------------------------------ SeqGAN rollout policy
class _Ctx:
    def __init__(self, generator: Generator):
        self.generator = generator


@pytest.mark.parametrize("kind", ["lstm", "gpt", "hf:gpt2", "hf:llama"])
def test_seqgan_rollout_policy_copies_the_token_embedding_and_smooths_the_rest(kind, request):
    from llmgan.algorithms.seqgan import SeqGAN, SeqGANParams

    g = make(kind, request)
    algo = SeqGAN(SeqGANParams(rollout_update_rate=0.8))
    algo.setup(_Ctx(g))
    policy = algo.rollout_policy
    before = {n: t.clone() for n, t in policy.state_dict().items()}
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p))  # G moved away from the policy
    algo._update_rollout_policy(_Ctx(g))
    emb = g.embedding_parameter_names()
    assert emb, kind
    after, cur = policy.state_dict(), g.state_dict()
    for n, q in after.items():
        if n in emb:
            assert torch.equal(q, cur[n]), n
        elif q.is_floating_point():
            torch.testing.assert_close(q, 0.8 * before[n] + 0.2 * cur[n], msg=n)
    emb_weight = g.embedding_parameters()[0]
    # the embedding really is the token table (tied output layers included), not e.g. positions
    assert emb_weight.size(0) == g.vocab_size
    if kind in ("gpt", "hf:gpt2"):
        assert g.lm_head.weight is emb_weight  # tied: one object, copied (under both names), never smoothed
    elif kind == "hf:llama":  # untied output layer: smoothed like the rest
        assert g.lm_head.weight is not emb_weight and not any("lm_head" in n for n in emb)


# ------------------------------------------------------------------------------------ HF in-place KV cache
def _step_all(g: Generator, n_steps: int, batch: int = 2) -> tuple[list[torch.Tensor], State]:
    torch.manual_seed(5)
    toks = torch.randint(3, g.vocab_size, (n_steps, batch))
    state = g.init_state(batch)
    logits = []
    with torch.no_grad():
        for t in range(n_steps):
            lg, state = g.step(toks[t], state)
            logits.append(lg)
    return logits, state


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hf_in_place_cache_samples_the_same_tokens_as_concatenation(arch, tiny_hf, monkeypatch):
    import llmgan.models.hf as hf

    g = hf_generator(tiny_hf[arch])
    prompt = torch.randint(3, g.vocab_size, (3, 2))
    prompt[0, 0] = g.pad_id  # a left-padded row
    fast = g.sample(3, 30, prompt=prompt, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(hf, "IN_PLACE_KV", False)
    slow = g.sample(3, 30, prompt=prompt, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fast.tokens, slow.tokens)
    torch.testing.assert_close(fast.log_probs, slow.log_probs)


def test_hf_cache_copies_each_position_a_bounded_number_of_times(tiny_hf):
    """T sampling steps copy O(T) cache elements (growing buffers), not O(T^2) (a full copy per step)."""
    g = hf_generator(tiny_hf["gpt2"])
    T = 60
    st = g.init_state(2)
    storages, buffers = set(), {}
    with torch.no_grad():
        for _ in range(T):
            _, st = g.step(torch.full((2,), 3), st)
            storages.add(st.tensors[0][0].data_ptr())  # a new storage = the layer's cache was copied
            buffers.update({id(b): b for b in st.cache if b is not None})
    # growth 1.5 from 16 slots: 16, 24, 36, 54, 81 -> a handful of copies; concatenation gives one per step
    assert len(storages) <= 6, len(storages)
    final = sum(k.numel() + v.numel() for k, v in st.tensors)
    copied = sum(b.copied for b in buffers.values())
    assert final <= copied <= 3.5 * final, (copied, final)  # geometric growth: <= final * (1 + 1/0.5)


def test_hf_in_place_cache_never_modifies_an_older_state(tiny_hf):
    """Branching: continuing an old state twice (rollouts reuse prefixes) gives identical results."""
    g = hf_generator(tiny_hf["llama"])
    with torch.no_grad():
        _, s = g.forward_hidden(torch.randint(3, g.vocab_size, (2, 3)), g.init_state(2))
        _, s = g.step(torch.full((2,), 4), s)  # s now sits at the end of its buffers
        la, sa = g.step(torch.full((2,), 5), s)
        _, sa2 = g.step(torch.full((2,), 6), sa)
        lb, sb = g.step(torch.full((2,), 7), s)  # a second branch from s: must not overwrite sa's positions
        la_again, _ = g.step(torch.full((2,), 5), s)
        l_next, _ = g.step(torch.full((2,), 8), sa)
        l_next_ref, _ = g.step(torch.full((2,), 8), sa.repeat(1))  # a copy: no shared buffer
    torch.testing.assert_close(la, la_again)
    torch.testing.assert_close(l_next, l_next_ref)
    assert not torch.allclose(la, lb)


def test_hf_gumbel_sampling_still_backpropagates(tiny_hf):
    """With autograd on, steps concatenate: no in-place write into tensors the backward needs."""
    g = hf_generator(tiny_hf["gpt2"], sharpen=False).train()
    r = g.sample_relaxed(2, 5, tau=1.0, generator=torch.Generator().manual_seed(0))
    r.soft.sum(1)[:, 4].sum().backward()
    assert g.embedding_parameters()[0].grad is not None


# ------------------------------------------------------------------------------------ LoRA snapshots
LORA = {"lora": {"r": 4, "alpha": 8, "dropout": 0.1}}


def _train_adapters(g: Generator, steps: int = 3) -> None:
    g.train()
    opt = torch.optim.Adam([p for p in g.parameters() if p.requires_grad], lr=5e-2)
    y = torch.randint(3, g.vocab_size, (4, 6))
    for _ in range(steps):
        loss = g.weighted_nll(y, torch.full(y.shape, 1.0 / y.numel()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    g.eval()


def test_lora_reference_is_a_light_frozen_snapshot_of_the_adapters(tiny_hf):
    from llmgan.models.hf import LoRASnapshot

    g = hf_generator(tiny_hf["gpt2"], **LORA)
    ref = g.frozen_reference()
    assert isinstance(ref, LoRASnapshot)
    y = torch.randint(3, g.vocab_size, (3, 6))
    with torch.no_grad(), g.model.disable_adapter():
        base = g.log_probs(y)
    _train_adapters(g)
    with torch.no_grad():
        trained = g.log_probs(y)
        ref_lp = ref.log_probs(y)
    assert not torch.allclose(trained, base, atol=1e-3)  # the adapters moved G
    torch.testing.assert_close(ref_lp, base, atol=1e-5, rtol=1e-5)  # untrained snapshot = the base model
    # its state is the adapters only: a checkpoint holds no second base model
    sd = ref.state_dict()
    assert set(sd) == set(g.adapter_keys) and all("lora_" in k for k in sd)
    assert sum(t.numel() for t in sd.values()) < 0.2 * sum(t.numel() for t in g.state_dict().values())
    # a refresh (GAD's post-SFT reference, SPIN's opponent) takes the generator's full state dict
    ref.load_state_dict(g.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ref.log_probs(y), trained, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ref.sample(2, 5, generator=torch.Generator().manual_seed(0)).tokens,
                                   g.sample(2, 5, generator=torch.Generator().manual_seed(0)).tokens)
    _train_adapters(g)  # ... and stays frozen while G keeps training
    with torch.no_grad():
        torch.testing.assert_close(ref.log_probs(y), trained, atol=1e-5, rtol=1e-5)
    # the generator got its own adapters back, trainable, in its own mode
    assert all(g.get_parameter(k).requires_grad for k in g.adapter_keys)
    g.train()
    ref.log_probs(y)
    assert g.training


def test_lora_snapshot_checkpoint_roundtrip_and_live_graph(tiny_hf, tmp_path):
    from llmgan.training.checkpoint import load_model_weights, save_tensors

    g = hf_generator(tiny_hf["llama"], **LORA)
    _train_adapters(g, 2)
    ref = g.frozen_reference()
    path = str(tmp_path / "reference.safetensors")
    save_tensors(ref.state_dict(), path)
    _train_adapters(g, 2)
    fresh = g.frozen_reference()  # a resumed run builds a new snapshot, then loads the saved one
    load_model_weights(fresh, path)
    y = torch.randint(3, g.vocab_size, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(fresh.log_probs(y), ref.log_probs(y))
    # a snapshot call between G's forward and backward leaves G's gradient as it was
    g.eval()
    g.zero_grad()
    g.weighted_nll(y, torch.full(y.shape, 0.1)).backward()
    want = [g.get_parameter(k).grad.clone() for k in g.adapter_keys]
    g.zero_grad()
    loss = g.weighted_nll(y, torch.full(y.shape, 0.1))
    with torch.no_grad():
        ref.log_probs(y)
    loss.backward()
    for k, w in zip(g.adapter_keys, want):
        torch.testing.assert_close(g.get_parameter(k).grad, w, msg=k)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hf_greedy_sampling_equals_transformers_generate(arch, tiny_hf):
    """The in-place cache decodes exactly what transformers' own generate() decodes (greedy)."""
    g = hf_generator(tiny_hf[arch])
    torch.manual_seed(3)
    prompt = torch.randint(4, g.vocab_size, (3, 3))
    ours = g.sample(3, 20, prompt=prompt, temperature=0.0).tokens
    inputs = torch.cat([prompt, torch.full((3, 1), g.bos_id)], 1)  # our convention: [prompt, BOS] -> response
    with torch.no_grad():
        theirs = g.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                                  max_new_tokens=20, eos_token_id=g.eos_id, pad_token_id=g.pad_id)[:, 4:]
    theirs = torch.cat([theirs, torch.full((3, 20 - theirs.size(1)), g.pad_id)], 1)
    assert torch.equal(ours, theirs), (ours, theirs)
    assert int((ours != g.pad_id).sum()) >= 20  # long enough to cross several cache steps
