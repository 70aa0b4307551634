"""Conditional data and SFT (prompt masking), class-conditional sampling, the offline applications."""

from __future__ import annotations

import json
import random

import pytest
import torch

from llmgan.apps import code as code_app
from llmgan.apps import text as text_app
from llmgan.apps import translation as tr_app
from llmgan.apps.sandbox import run_python
from llmgan.config import config_from_dict
from llmgan.data.conditional import label_prompt, trim_prompt
from llmgan.models.generators import build_generator

V, BOS, EOS, PAD = 30, 1, 2, 0


def gpt(seed: int = 0):
    torch.manual_seed(seed)
    return build_generator("gpt", vocab_size=V, d_model=32, n_layers=2, n_heads=4, max_len=64,
                           bos_id=BOS, eos_id=EOS, pad_id=PAD).eval()


def test_sft_loss_only_from_response_positions():
    """SFT loss == a full-sequence loss over [prompt, BOS, response] with the prompt positions masked; the
    prompt positions' targets do not matter and receive no gradient."""
    g = gpt()
    B, P, T = 3, 4, 5
    prompt = torch.randint(4, V, (B, P))
    resp = torch.randint(4, V, (B, T))
    w = torch.full((B, T), 1.0 / (B * T))
    sft = g.weighted_nll(resp, w, prompt=prompt)

    inputs = torch.cat([prompt, torch.full((B, 1), BOS), resp[:, :-1]], 1)  # (B, P + T)
    h, _ = g.forward_hidden(inputs, g.init_state(B))
    logits = (h @ g.lm_head.weight.t() + g.lm_head.bias).detach().requires_grad_(True)

    def full_loss(prompt_targets):
        targets = torch.cat([prompt_targets, resp], 1)  # positions 0..P-1 predict prompt tokens / BOS
        weights = torch.cat([torch.zeros(B, P), w], 1)
        lp = logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
        return -(weights * lp).sum()

    a = full_loss(torch.cat([prompt[:, 1:], torch.full((B, 1), BOS)], 1))
    b = full_loss(torch.randint(0, V, (B, P)))  # different prompt targets
    assert torch.allclose(a, sft, atol=1e-5) and torch.allclose(a, b)
    a.backward()
    assert logits.grad[:, :P].abs().max() == 0 and logits.grad[:, P:].abs().max() > 0


def test_sft_left_padding_and_trim():
    g = gpt(1)
    prompt = torch.randint(4, V, (2, 3))
    padded = torch.cat([torch.full((2, 2), PAD), prompt], 1)
    resp = torch.randint(4, V, (2, 4))
    assert torch.equal(trim_prompt(padded, PAD), prompt)
    assert torch.allclose(g.log_probs(resp, prompt=padded), g.log_probs(resp, prompt=prompt), atol=1e-5)


def _pairs_run(tmp_path, records, extra_data=None, epochs=1, steps=None, name="run", lr=3e-3):
    from llmgan.training.engine import Trainer

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = {"train": str(path), "tokenizer": "word", "max_len": 12, "max_prompt_len": 12, "split": [0.8, 0.1, 0.1]}
    data.update(extra_data or {})
    cfg = config_from_dict({
        "name": name, "device": "cpu", "seed": 0, "data": data,
        "generator": {"name": "gpt", "kwargs": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 32}},
        "train": {"epochs": epochs, "max_steps": steps, "batch_size": 32, "lr": lr, "optimizer": "adamw",
                  "progress": False, "log_every": 1000},
        "eval": {"n_samples": 8, "batch_size": 8},
    })
    run_dir = str(tmp_path / name)
    metrics = Trainer(cfg, run_dir).run()
    return run_dir, metrics


def test_sft_run_and_generate_with_prompt(tmp_path, capsys):
    from llmgan.cli import main
    from llmgan.run import load_run
    from llmgan.training.data_setup import prepare_data

    recs = tr_app.make_records(120, seed=3)
    run_dir, metrics = _pairs_run(tmp_path, recs, {"prompt_field": "prompt"})
    assert "valid_nll" in metrics and "test_nll" in metrics
    run = load_run(run_dir)
    assert run.is_conditional
    data = prepare_data(run.cfg, str(tmp_path / "scratch"))
    # targets are the responses only: no prompt token is ever a training target
    responses, prompts = {r["response"] for r in recs}, {r["prompt"] for r in recs}
    for row, n, p in zip(data.train.tokens.tolist(), data.train.lengths.tolist(), data.train_prompts.tolist()):
        assert row[n - 1] == run.tokenizer.eos_id and run.tokenizer.decode(row[:n]) in responses
        assert run.tokenizer.decode(p) in prompts  # prompts are inputs, aligned row by row
    assert main(["generate", run_dir, "--prompt", recs[0]["prompt"], "-n", "2", "--json", "--device", "cpu"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 2 and lines[0]["prompt"] == recs[0]["prompt"]


def test_class_conditional_sampling(tmp_path):
    from llmgan.models.discriminators import build_discriminator
    from llmgan.run import load_run

    rng = random.Random(0)
    pos_words, neg_words = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]
    recs = [{"text": " ".join(rng.choice(pos_words if i % 2 else neg_words) for _ in range(5)),
             "label": "pos" if i % 2 else "neg"} for i in range(200)]
    run_dir, _ = _pairs_run(tmp_path, recs, {"label_field": "label"}, epochs=30, steps=120, name="cls", lr=1e-2)
    run = load_run(run_dir)
    tok = run.tokenizer
    for label, words, other in (("pos", pos_words, neg_words), ("neg", neg_words, pos_words)):
        p = torch.tensor([run.encode_prompt(label)] * 20)
        assert run.encode_prompt(label) == tok.encode(label_prompt(label))
        s = run.generator.sample(20, 6, prompt=p, generator=torch.Generator().manual_seed(0))
        words_out = [w for row in s.tokens.tolist() for w in tok.decode(row).split()]
        own = sum(w in words for w in words_out)
        assert own >= 0.9 * len(words_out) and not any(w in other for w in words_out[:5]), words_out[:10]
    # D judges real/fake per class: the label prompt is prepended
    d = build_discriminator("cnn", vocab_size=tok.vocab_size, pad_id=tok.pad_id)
    x = torch.randint(4, tok.vocab_size, (4, 6))
    assert d(x, prompt=torch.tensor([run.encode_prompt("pos")] * 4)).shape == (4,)


# ------------------------------------------------------------------------------------------------ apps
def test_translation_data_and_metric():
    recs = tr_app.make_records(50, seed=1)
    assert recs == tr_app.make_records(50, seed=1) and recs != tr_app.make_records(50, seed=2)
    src = "zz"
    for r in recs:
        assert tr_app.translate(r["prompt"]) == r["response"]
        assert len(r["prompt"].split()) == len(r["response"].split())
    # the reordering rule: adjective after its noun, verb last (no adverb here)
    w = tr_app.SOURCE_WORDS
    s = f"{w['adj'][0]} {w['noun'][0]} {w['verb'][0]} {w['noun'][1]}"
    d = tr_app.DICTIONARY
    assert tr_app.translate(s) == f"{d[w['noun'][0]]} {d[w['adj'][0]]} {d[w['noun'][1]]} {d[w['verb'][0]]}"
    refs = [r["response"] for r in recs]
    assert tr_app.score(refs, refs) == {"bleu4": 1.0, "exact_match": 1.0}
    assert tr_app.score([src] * 50, refs)["bleu4"] == 0.0
    assert 0 < tr_app.corpus_bleu(["a b c d e"], ["a b c d f"]) < 1


def test_code_data_and_sandbox():
    from llmgan.apps.sandbox import sandbox_backend

    if sandbox_backend() is None:  # tests/test_sandbox.py covers the refusal
        pytest.skip("no OS sandbox (bubblewrap) here")
    recs = code_app.make_records(5, seed=0)
    for r in recs[:3]:
        assert code_app.check_program(r["response"], r["expected"])  # a correct program passes
    assert not code_app.check_program(recs[0]["response"], str(int(recs[0]["expected"]) + 1))  # wrong output
    assert not code_app.check_program("print ( 1 / 0 )", "0")  # crashes
    loop = run_python("while True:\n    pass\n", timeout=1.0)
    assert loop.timed_out and not loop.ok
    net = run_python("import socket\ns = socket.create_connection(('127.0.0.1', 9))\nprint('connected')\n")
    assert not net.ok and "sandbox" in net.stderr and "connected" not in net.stdout
    sub = run_python("import os\nos.system('echo hi')\n")
    assert not sub.ok and "sandbox" in sub.stderr
    assert code_app.score([r["response"] for r in recs[:2]] + ["print ( 0 )"],
                          [r["expected"] for r in recs[:2]] + ["1"]) == {"pass_rate": 2 / 3}


def test_data_make_cli_and_text_fixture(tmp_path, capsys):
    from llmgan.cli import main

    assert main(["data", "make", "translation", "--out", str(tmp_path / "tr"), "--n", "40", "--seed", "1"]) == 0
    assert main(["apps", "make", "code", "--out", str(tmp_path / "code"), "--n", "40"]) == 0
    for d in ("tr", "code"):
        n = sum(len((tmp_path / d / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "valid", "test"))
        assert n == 40
    rec = json.loads((tmp_path / "code" / "train.jsonl").read_text().splitlines()[0])
    assert set(rec) == {"prompt", "response", "expected"}
    fixture = tmp_path / "summ.jsonl"
    fixture.write_text("".join(json.dumps({"document": f"doc {i} says many things about topic {i}",
                                           "summary": f"topic {i}"}) + "\n" for i in range(20)))
    assert main(["data", "make", "summarization", "--input", str(fixture), "--out", str(tmp_path / "s")]) == 0
    first = json.loads((tmp_path / "s" / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"prompt", "response"} and first["response"].startswith("topic")
    dlg = tmp_path / "dlg.jsonl"
    dlg.write_text(json.dumps({"context": ["hi", "hello"], "response": "how are you"}) + "\n")
    assert text_app.convert(str(dlg), "dialogue") == [{"prompt": "hi <sep> hello", "response": "how are you"}]
    assert text_app.rouge_l("a b c", "a b c") == 1.0 and text_app.rouge_l("x", "a b") == 0.0
    assert main(["data", "make", "summarization", "--out", str(tmp_path / "x")]) == 2  # --input required
    capsys.readouterr()


def test_conditional_config_validation():
    from llmgan.errors import ConfigError

    with pytest.raises(ConfigError, match="prompt_field"):
        config_from_dict({"data": {"train": "x", "prompt_field": "p", "label_field": "l"}})
