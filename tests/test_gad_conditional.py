"""GAD with prompts: groups share a prompt, advantages are normalised within each prompt's K samples, the KL
leash reads the prompt, D's Bradley-Terry loss pairs each response with its own prompt's reference, and a
conditional GAD run goes end to end through the real engine (then ``llmgan generate --prompt`` works)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import llmgan.algorithms.gad as gad_mod
from llmgan.algorithms.gad import bradley_terry_loss, k3_kl, policy_log_probs
from llmgan.apps import translation as tr_app
from llmgan.config import config_from_dict
from llmgan.losses import d_loss
from llmgan.training.engine import Trainer

K = 4


def _cfg(tmp_path, algorithm: str = "gad", params: dict | None = None, rounds: int = 3, **adv) -> dict:
    recs = tr_app.make_records(240, seed=1)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return config_from_dict({
        "name": algorithm, "device": "cpu", "seed": 0,
        "data": {"train": str(path), "prompt_field": "prompt", "response_field": "response", "tokenizer": "word",
                 "max_len": 8, "max_prompt_len": 8, "split": [0.8, 0.1, 0.1]},
        "generator": {"name": "gpt", "kwargs": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 24}},
        "discriminator": {"name": "cnn", "kwargs": {"emb_dim": 16, "filter_sizes": [1, 2, 3], "num_filters": [8, 8, 8],
                                                   "dropout": 0.0}},
        "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3, "optimizer": "adamw", "progress": False,
                  "log_every": 1000},
        "adversarial": {"algorithm": algorithm, "rounds": rounds, "g_steps": 1, "d_steps": 1, "d_epochs": 1,
                        "d_pretrain_steps": 2, "d_samples": 32, "d_batch_size": 16, "g_batch_size": 16,
                        "g_lr": 1e-3, "d_lr": 1e-3, "eval_every": 100, "checkpoint_every": 100,
                        "params": {"group_size": K, **(params or {})} if algorithm == "gad" else (params or {}),
                        **adv},
        "eval": {"n_samples": 8, "batch_size": 8},
    })


@pytest.fixture
def trainer(tmp_path):
    tr = Trainer(_cfg(tmp_path), str(tmp_path / "run"))
    tr.setup()  # data, models, algorithm and GANContext, no training
    return tr


def _decode_prompt(tok, row) -> str:
    return tok.decode([t for t in row.tolist() if t != tok.pad_id])


# ------------------------------------------------------------------------------------------ groups
def test_groups_share_a_prompt_and_advantages_are_normalized_per_prompt(trainer, monkeypatch):
    ctx, algo = trainer.adversarial.ctx, trainer.adversarial.algorithm
    seen: dict = {}
    real_sample = ctx.sample

    def sample(n, generator=None, **kw):
        out = real_sample(n, generator=generator, **kw)
        seen["prompt"], seen["tokens"] = kw.get("prompt"), out.tokens
        return out

    def capture(log_p, old_log_p, ref_log_p, adv, mask, clip_eps, kl_coef):
        seen["adv"] = adv.clone()
        return orig(log_p, old_log_p, ref_log_p, adv, mask, clip_eps, kl_coef)

    orig = gad_mod.gad_policy_loss
    monkeypatch.setattr(ctx, "sample", sample)
    monkeypatch.setattr(gad_mod, "gad_policy_loss", capture)
    D = ctx.discriminator
    stats = algo.g_step(ctx)
    prompt, tokens, adv = seen["prompt"], seen["tokens"], seen["adv"]
    n_groups = ctx.cfg.g_batch_size // K
    assert prompt is not None and prompt.size(0) == n_groups * K == tokens.size(0)
    groups = prompt.view(n_groups, K, -1)
    assert bool((groups == groups[:, :1]).all()), "the K rows of a group must share one prompt"
    assert len({tuple(g[0].tolist()) for g in groups}) > 1, "different groups draw different prompts"
    # hand-computed GRPO advantages from D's scores of (prompt, response) (D is unchanged by a G step)
    with torch.no_grad():
        D.eval()
        r = D(tokens, prompt=prompt).float().view(n_groups, K)
    expected = (r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=True, keepdim=True) + 1e-6)  # TRL/verl's std
    torch.testing.assert_close(adv.view(n_groups, K), expected, atol=1e-4, rtol=1e-4)
    a = adv.view(n_groups, K)
    torch.testing.assert_close(a.mean(1), torch.zeros(n_groups), atol=1e-5, rtol=0)
    torch.testing.assert_close(a.std(1, unbiased=True), torch.ones(n_groups), atol=1e-3, rtol=0)
    for key in ("reward_mean", "reward_std", "zero_var_groups", "response_len", "kl"):
        assert key in stats and math.isfinite(stats[key])
    # the prompt's responses are scored, not an unconditional score: D reads the prompt
    assert not torch.allclose(D(tokens, prompt=prompt), D(tokens))


def test_bradley_terry_reward_uses_the_prompts_reference(trainer):
    ctx, algo = trainer.adversarial.ctx, trainer.adversarial.algorithm
    algo.params.reward = "bradley_terry"
    prompts, refs, _ = ctx.real_pairs(3)
    prompt, ref = prompts.repeat_interleave(K, 0), refs.repeat_interleave(K, 0)
    tokens = ctx.sample(3 * K, prompt=prompt).tokens
    r = algo.rewards(ctx, tokens, prompt, ref, K)
    D = ctx.discriminator.eval()
    with torch.no_grad():
        expected = torch.nn.functional.logsigmoid(D(tokens, prompt=prompt) - D(ref, prompt=prompt))
    torch.testing.assert_close(r, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ KL
def test_kl_to_reference_reads_the_prompt(trainer, monkeypatch):
    ctx, algo = trainer.adversarial.ctx, trainer.adversarial.algorithm
    ref = ctx.reference()
    with torch.no_grad():  # a reference that differs from G, so the KL is not identically 0
        torch.manual_seed(0)
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))
    seen: dict = {}
    orig = gad_mod.gad_policy_loss

    def capture(log_p, old_log_p, ref_log_p, adv, mask, clip_eps, kl_coef):
        seen.update(old=old_log_p.clone(), ref=ref_log_p.clone(), mask=mask.clone())
        return orig(log_p, old_log_p, ref_log_p, adv, mask, clip_eps, kl_coef)

    real_sample = ctx.sample

    def sample(n, generator=None, **kw):
        out = real_sample(n, generator=generator, **kw)
        seen.update(prompt=kw["prompt"], tokens=out.tokens)
        return out

    monkeypatch.setattr(gad_mod, "gad_policy_loss", capture)
    monkeypatch.setattr(ctx, "sample", sample)
    algo.g_step(ctx)
    tokens, prompt, m = seen["tokens"], seen["prompt"], seen["mask"].float()
    with torch.no_grad():
        ref_same = policy_log_probs(ref, tokens, algo.params.temperature, prompt)
        other = prompt.roll(K, 0)  # every row gets another group's prompt
        ref_other = policy_log_probs(ref, tokens, algo.params.temperature, other)
    torch.testing.assert_close(seen["ref"], ref_same, atol=1e-5, rtol=1e-5)  # the leash used the prompt

    def kl(ref_lp):
        return float((k3_kl(seen["old"], ref_lp) * m).sum() / m.sum())

    assert abs(kl(ref_same) - kl(ref_other)) > 1e-3, "changing the prompt must change the KL"


# ------------------------------------------------------------------------------------------ D
def test_bradley_terry_d_loss_on_hand_made_logits():
    real, fake = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 1.0, -1.0])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0)) + math.log(2.0)) / 3
    assert bradley_terry_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(bradley_terry_loss(real, fake), d_loss(real, fake, "rsgan"))
    # only the difference matters: shifting both sides changes nothing
    torch.testing.assert_close(bradley_terry_loss(real + 5, fake + 5), bradley_terry_loss(real, fake))


def test_d_step_pairs_each_response_with_its_own_prompts_reference(trainer, monkeypatch):
    ctx, algo = trainer.adversarial.ctx, trainer.adversarial.algorithm
    tok = ctx.tokenizer
    D = ctx.discriminator
    calls: list = []
    forward = D.forward

    def recording(x, prompt=None, **kw):
        calls.append((x.detach().clone(), None if prompt is None else prompt.clone()))
        return forward(x, prompt=prompt, **kw)

    sampled: set = set()  # (prompt row, response row) of every fake G wrote
    real_sample = ctx.sample

    def sample(n, generator=None, **kw):
        out = real_sample(n, generator=generator, **kw)
        sampled.update((tuple(p.tolist()), tuple(t.tolist())) for p, t in zip(kw["prompt"], out.tokens))
        return out

    clips: list = []
    update = ctx.update_discriminator

    def update_discriminator(loss, clip=None):
        clips.append(clip)
        return update(loss, clip=clip)

    monkeypatch.setattr(D, "forward", recording)
    monkeypatch.setattr(ctx, "sample", sample)
    monkeypatch.setattr(ctx, "update_discriminator", update_discriminator)
    trainer.state["phase"] = "d_pretrain"  # warm-up: fresh G responses for random training prompts
    stats = algo.d_step(ctx)
    assert clips and set(clips) == {algo.params.d_grad_clip}  # GAD clips D's gradient norm (0.2)
    assert calls and len(calls) % 2 == 0 and 0.0 <= stats["d_pair_acc"] <= 1.0
    for (real, p_real), (fake, p_fake) in zip(calls[::2], calls[1::2]):
        assert p_real is not None and torch.equal(p_real, p_fake)  # both sides of a pair read one prompt
        for prow, rrow, frow in zip(p_real, real, fake):  # the real side is that prompt's reference translation
            assert tok.decode(rrow.tolist()) == tr_app.translate(_decode_prompt(tok, prow))
            assert (tuple(prow.tolist()), tuple(frow.tolist())) in sampled  # the fake side, G's answer to it


# ------------------------------------------------------------------------------------------ end to end
def test_conditional_gad_end_to_end_then_generate(tmp_path, capsys):
    from llmgan.cli import main

    run_dir = str(tmp_path / "run")
    final = Trainer(_cfg(tmp_path, rounds=3), run_dir).run()
    assert math.isfinite(final["test_nll"])
    recs = [json.loads(x) for x in open(f"{run_dir}/metrics.jsonl")]
    adv = [r for r in recs if r.get("phase") == "adversarial"]
    assert len(adv) == 3
    for key in ("reward_mean", "reward_std", "zero_var_groups", "response_len", "kl", "d_loss", "d_pair_acc"):
        assert all(math.isfinite(r[key]) for r in adv), key
    assert any(r.get("phase") == "d_pretrain" for r in recs)
    capsys.readouterr()
    prompt = tr_app.make_records(1, seed=5)[0]["prompt"]
    assert main(["generate", run_dir, "--prompt", prompt, "-n", "2", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 2 and all(x["prompt"] == prompt and isinstance(x["response"], str) for x in lines)
    # `llmgan evaluate` scores a conditional run given its prompts: the same test NLL as the engine's
    # conditional evaluation (the test split re-carved from data.train), samples answer test prompts
    assert main(["evaluate", run_dir, "--json", "--n-samples", "30"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_prompts"] == 24 and result["n_samples"] == 30
    assert result["test_nll"] == pytest.approx(final["test_nll"], rel=1e-5)
    assert 0.0 <= result["bleu_2"] <= 1.0
    assert main(["evaluate", run_dir, "--metrics", "nll_gen"]) != 0
    assert "not defined for a conditional run" in capsys.readouterr().err


def test_frozen_d_ablation_keeps_d_fixed(tmp_path):
    """GAD's ablation: D trained in the warm-up only (``d_steps: 0``), then fixed during RL."""
    tr = Trainer(_cfg(tmp_path, rounds=2, d_steps=0), str(tmp_path / "frozen"))
    tr.run()
    recs = [json.loads(x) for x in open(tmp_path / "frozen" / "metrics.jsonl")]
    assert sum(r.get("phase") == "d_pretrain" for r in recs) == 2  # the warm-up trained D
    adv = [r for r in recs if r.get("phase") == "adversarial"]
    assert len(adv) == 2 and all("d_loss" not in r and math.isfinite(r["reward_mean"]) for r in adv)


@pytest.mark.parametrize("algorithm", ["seqgan", "maligan", "rankgan", "relgan", "gsgan", "textgan", "wgangp",
                                       "scratchgan"])
def test_algorithms_that_ignore_prompts_refuse_conditional_data(tmp_path, capsys, algorithm):
    """An algorithm whose updates never read the prompts must not train silently unconditioned on
    prompt/response data: one ConfigError line naming it (through the CLI, no traceback)."""
    from llmgan.algorithms.base import ALGORITHMS
    from llmgan.cli import main

    assert not ALGORITHMS[algorithm].supports_prompts
    cfg = _cfg(tmp_path, algorithm=algorithm)
    import yaml

    from llmgan.config import save_config

    save_config(cfg, str(tmp_path / "c.yaml"))
    assert yaml.safe_load(open(tmp_path / "c.yaml"))["adversarial"]["algorithm"] == algorithm
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("llmgan: error:")]
    assert len(err) == 1 and f"{algorithm} does not condition on prompts" in err[0], err


def test_d_pair_ties_count_the_responses_that_equal_their_reference(trainer, monkeypatch):
    # from a near-perfect SFT model most of G's responses ARE the reference: those pairs cannot be ranked
    # (Bradley-Terry's gradient is 0 there) and count as wrong in d_pair_acc; d_pair_ties says how many
    from llmgan.algorithms.gad import same_rows
    from llmgan.models.base import Samples

    ctx, algo = trainer.adversarial.ctx, trainer.adversarial.algorithm
    pad = ctx.pad_id
    assert same_rows(torch.tensor([[1, 2, pad]]), torch.tensor([[1, 2]]), pad).tolist() == [True]  # widths differ
    assert same_rows(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2]]), pad).tolist() == [False]
    pairs = ctx.real_pairs
    refs: dict = {}

    def real_pairs(n):
        out = pairs(n)
        refs["tokens"] = out[1]
        return out

    def sample(n, generator=None, **kw):  # G answers the first quarter of the prompts exactly, the rest wrongly
        t = refs["tokens"][:n].clone()
        t[n // 4:, 0] = (t[n // 4:, 0] + 1) % ctx.generator.vocab_size
        return Samples(t, torch.zeros(t.shape), (t != pad).sum(1))

    monkeypatch.setattr(ctx, "real_pairs", real_pairs)
    monkeypatch.setattr(ctx, "sample", sample)
    trainer.state["phase"] = "d_pretrain"
    stats = algo.d_step(ctx)
    assert stats["d_pair_ties"] == pytest.approx(0.25)
    assert stats["d_pair_acc"] <= 0.75 + 1e-9  # a tied pair is never ranked right
