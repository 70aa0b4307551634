"""SPIN (self-play fine-tuning): the loss on hand-made log-probs, one step moves log p(y_ref) up relative to
log p(y_gen), the opponent is refreshed exactly at iteration boundaries, and end-to-end conditional and
unconditional runs through the real engine."""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch

from llmgan.algorithms.spin import SPIN, sequence_log_probs, spin_loss
from llmgan.apps import translation as tr_app
from llmgan.config import config_from_dict
from llmgan.models.generators import build_generator
from llmgan.training.engine import Trainer


def _cfg(tmp_path, params: dict | None = None, rounds: int = 3, conditional: bool = True):
    """A tiny SPIN run on the synthetic translation task (or, unconditional, on its target sentences)."""
    recs = tr_app.make_records(240, seed=1)
    if conditional:
        path = tmp_path / "train.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
        data = {"train": str(path), "prompt_field": "prompt", "response_field": "response", "max_prompt_len": 8}
    else:
        path = tmp_path / "train.txt"
        path.write_text("".join(r["response"] + "\n" for r in recs))
        data = {"train": str(path)}
    return config_from_dict({
        "name": "spin", "device": "cpu", "seed": 0,
        "data": {**data, "tokenizer": "word", "max_len": 8, "split": [0.8, 0.1, 0.1]},
        "generator": {"name": "gpt", "kwargs": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 24}},
        "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3, "optimizer": "adamw", "progress": False,
                  "log_every": 1000},
        "adversarial": {"algorithm": "spin", "rounds": rounds, "g_batch_size": 16, "g_lr": 1e-3, "eval_every": 100,
                        "checkpoint_every": 100, "params": params or {}},
        "eval": {"n_samples": 8, "batch_size": 8},
    })


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_spin_loss_hand_computed():
    lp_real, opp_real = torch.tensor([-2.0, -5.0]), torch.tensor([-3.0, -4.0])
    lp_gen, opp_gen = torch.tensor([-4.0, -1.0]), torch.tensor([-3.5, -2.0])
    # margins: (1 - (-0.5)) = 1.5 and (-1 - 1) = -2; loss = mean log(1 + exp(-beta * margin))
    expected = (math.log1p(math.exp(-0.15)) + math.log1p(math.exp(0.2))) / 2
    loss, stats = spin_loss(lp_real, opp_real, lp_gen, opp_gen, beta=0.1)
    assert loss.item() == pytest_approx(expected)
    assert stats["margin"] == pytest_approx(-0.25) and stats["pair_acc"] == 0.5
    assert stats["reward_real"] == pytest_approx(0.1 * (1.0 - 1.0) / 2)
    assert stats["reward_gen"] == pytest_approx(0.1 * (-0.5 + 1.0) / 2)
    # at theta = opponent every margin is 0: loss log 2, whatever the samples
    z = torch.zeros(3)
    assert spin_loss(z - 1, z - 1, z - 7, z - 7, beta=0.1)[0].item() == pytest_approx(math.log(2.0))


def pytest_approx(x: float):
    return pytest.approx(x, rel=1e-6, abs=1e-7)


def test_one_step_raises_reference_over_generated():
    torch.manual_seed(0)
    V = 20
    g = build_generator("gpt", vocab_size=V, d_model=32, n_layers=1, n_heads=2, max_len=32, bos_id=1, eos_id=2,
                        pad_id=0)
    opp = copy.deepcopy(g).requires_grad_(False).eval()
    g.eval()  # no dropout noise in the comparison
    prompt = torch.randint(3, V, (4, 5))
    y_ref, y_gen = torch.randint(3, V, (4, 6)), torch.randint(3, V, (4, 6))
    mask = torch.ones(4, 6, dtype=torch.bool)
    with torch.no_grad():
        o_ref, o_gen = sequence_log_probs(opp, y_ref, mask, prompt), sequence_log_probs(opp, y_gen, mask, prompt)

    def gap() -> float:
        with torch.no_grad():
            diff = sequence_log_probs(g, y_ref, mask, prompt) - sequence_log_probs(g, y_gen, mask, prompt)
            return float(diff.mean())

    before = gap()
    opt = torch.optim.SGD(g.parameters(), lr=0.5)
    loss, _ = spin_loss(sequence_log_probs(g, y_ref, mask, prompt), o_ref,
                        sequence_log_probs(g, y_gen, mask, prompt), o_gen, beta=0.1)
    assert loss.item() == pytest_approx(math.log(2.0))  # theta = opponent before the step
    loss.backward()
    opt.step()
    assert gap() > before + 1e-3


def test_opponent_refreshes_at_iteration_boundaries(tmp_path):
    tr = Trainer(_cfg(tmp_path, params={"iterate_every": 2}), str(tmp_path / "run"))
    tr.setup()
    ctx, algo = tr.adversarial.ctx, tr.adversarial.algorithm
    assert isinstance(algo, SPIN) and tr.adversarial.discriminator is None and algo.iteration_length(ctx) == 2
    ctx.sync_reference()  # what the engine does when adversarial training starts (opponent = SFT model)
    opp0 = copy.deepcopy(ctx.reference())
    refreshed = []
    for r in range(5):
        tr.state["round"] = r
        g_before = copy.deepcopy(ctx.generator)
        stats = algo.g_step(ctx)
        refreshed.append(stats["opponent_refreshed"])
        if r in (2, 4):  # boundary: the opponent became the generator as it was when the round began
            assert _same(ctx.reference(), g_before)
        elif r < 2:
            assert _same(ctx.reference(), opp0)
        assert not _same(ctx.generator, ctx.reference())  # G moved on; the opponent is frozen
        assert all(not p.requires_grad for p in ctx.reference().parameters())
    assert refreshed == [0.0, 0.0, 1.0, 0.0, 1.0]
    # a second g_step within the same round (g_steps > 1) does not refresh again
    assert algo.g_step(ctx)["opponent_refreshed"] == 0.0
    # default: one pass over the training pairs per iteration
    algo.params.iterate_every = None
    assert algo.iteration_length(ctx) == math.ceil(ctx.n_train / ctx.cfg.g_batch_size)


def test_spin_conditional_end_to_end(tmp_path, capsys):
    from llmgan.cli import main
    from llmgan.training.checkpoint import Checkpointer

    run_dir = str(tmp_path / "spin")
    final = Trainer(_cfg(tmp_path, params={"iterate_every": 2}, rounds=4), run_dir).run()
    assert math.isfinite(final["test_nll"])
    recs = [json.loads(x) for x in open(f"{run_dir}/metrics.jsonl")]
    adv = [r for r in recs if r.get("phase") == "adversarial"]
    assert len(adv) == 4 and not any(r.get("phase") == "d_pretrain" for r in recs)
    assert [r["opponent_refreshed"] for r in adv] == [0.0, 0.0, 1.0, 0.0]
    assert all(math.isfinite(r["g_loss"]) and math.isfinite(r["margin"]) for r in adv)
    assert abs(adv[0]["g_loss"] - math.log(2.0)) < 1e-4  # first step: theta = opponent
    ckpt = Checkpointer(run_dir).latest()
    assert os.path.isfile(os.path.join(ckpt, "reference.safetensors"))  # the opponent is checkpointed
    capsys.readouterr()
    assert main(["generate", run_dir, "--prompt", "bipo vevu kuve zovo", "-n", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_spin_unconditional_end_to_end(tmp_path):
    run_dir = str(tmp_path / "uncond")
    tr = Trainer(_cfg(tmp_path, rounds=2, conditional=False), run_dir)
    final = tr.run()
    assert tr.data.train_prompts is None and math.isfinite(final["test_nll"])
    adv = [r for r in map(json.loads, open(f"{run_dir}/metrics.jsonl")) if r.get("phase") == "adversarial"]
    assert len(adv) == 2 and all(math.isfinite(r["g_loss"]) and 0 <= r["pair_acc"] <= 1 for r in adv)
