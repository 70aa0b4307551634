"""Temperature sweeps (quality–diversity curves) and the HTML/Markdown report."""

from __future__ import annotations

import csv
import json
import os
import random
import re

import pytest
import torch

from llmgan.cli import main
from llmgan.config import config_from_dict
from llmgan.errors import ConfigError
from llmgan.models.generators.oracle import random_oracle, save_oracle_file
from llmgan.report import build_report
from llmgan.run import load_run
from llmgan.sweep import parse_temperatures, read_sweep_csv, sweep, temperature_nll
from llmgan.training.engine import Trainer
from llmgan.training.evaluation import corpus_nll, held_out_corpus

SUBJ = ["the cat", "a dog", "my friend", "the teacher", "a bird"]
VERB = ["sees", "likes", "eats", "finds"]
OBJ = ["the fish", "an apple", "the ball", "a book", "the tree"]
SPECIAL = "x<y&z"  # ends every sentence: samples must show it HTML-escaped


def _text_cfg(corpus: str, name: str, epochs: int = 4, **extra) -> dict:
    cfg = {
        "name": name, "seed": 0, "threads": 1, "device": "cpu",
        "data": {"train": corpus, "max_len": 10},
        "generator": {"name": "lstm", "kwargs": {"embed_dim": 16, "hidden_dim": 32}},
        "train": {"epochs": epochs, "batch_size": 32, "lr": 0.01, "progress": False, "log_every": 5,
                  "checkpoint_every": 100},
        "eval": {"n_samples": 64},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trained word-level MLE run, a tiny SeqGAN run and a tiny random-oracle run."""
    root = tmp_path_factory.mktemp("sweep")
    rng = random.Random(0)
    corpus = root / "corpus.txt"
    lines = [f"{rng.choice(SUBJ)} {rng.choice(VERB)} {rng.choice(OBJ)} {SPECIAL}" for _ in range(500)]
    corpus.write_text("\n".join(lines) + "\n")
    text = root / "mle_text"
    Trainer(config_from_dict(_text_cfg(str(corpus), "mle_text")), str(text)).run()
    gan = root / "seqgan_text"
    adv = {"algorithm": "seqgan", "rounds": 2, "d_steps": 1, "d_epochs": 1, "d_pretrain_steps": 2, "d_samples": 128,
           "g_batch_size": 16, "eval_every": 1, "params": {"rollouts": 2}}
    cfg = _text_cfg(str(corpus), "seqgan_text", epochs=2, adversarial=adv, discriminator={"name": "cnn", "kwargs": {}})
    Trainer(config_from_dict(cfg), str(gan)).run()
    oracle_path = root / "oracle.safetensors"
    save_oracle_file(random_oracle(vocab_size=40, embed_dim=8, hidden_dim=8, seed=3), str(oracle_path))
    oracle = root / "mle_oracle"
    ocfg = {
        "name": "mle_oracle", "seed": 0, "threads": 1, "device": "cpu",
        "data": {"oracle": str(oracle_path), "tokenizer": "ids", "seq_len": 8, "oracle_samples": 256,
                 "oracle_test_samples": 128},
        "generator": {"name": "lstm", "kwargs": {"embed_dim": 8, "hidden_dim": 16}},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "progress": False, "checkpoint_every": 100},
        "eval": {"n_samples": 64},
    }
    Trainer(config_from_dict(ocfg), str(oracle)).run()
    return {"text": str(text), "gan": str(gan), "oracle": str(oracle), "root": root}


def test_parse_temperatures():
    t = parse_temperatures("0.5:1.5:11")
    assert len(t) == 11 and t[0] == 0.5 and t[-1] == 1.5 and t[5] == 1.0 and t[2] == 0.7
    assert parse_temperatures("0.7, 1,1.3") == [0.7, 1.0, 1.3]
    assert parse_temperatures("2:2:1") == [2.0]
    for bad in ("0.5:1.5", "a:b:3", "0:1:3", "1:2:0", "", "1,-1", "nan"):
        with pytest.raises(ConfigError):
            parse_temperatures(bad)


def test_temperature_nll_at_one_is_corpus_nll(runs):
    run = load_run(runs["text"])
    test = held_out_corpus(run)
    assert temperature_nll(run.generator, test, 1.0) == pytest.approx(corpus_nll(run.generator, test), rel=1e-5)
    # a very hot model is near uniform over the vocabulary
    hot = temperature_nll(run.generator, test, 1e4)
    assert hot == pytest.approx(torch.log(torch.tensor(float(run.tokenizer.vocab_size))).item(), rel=1e-2)


def test_sweep_text_lower_temperature_less_diverse(runs, tmp_path):
    temps = [0.3, 1.0, 2.0]
    rows = sweep([runs["text"], runs["gan"]], temps, out_dir=str(tmp_path), n_samples=100)
    assert len(rows) == 2 * len(temps)
    for name in ("mle_text", "seqgan_text"):
        mine = [r for r in rows if r["run"] == name]
        assert [r["temperature"] for r in mine] == temps
        assert all(r["quality_metric"] == "bleu_4" and r["diversity_metric"] == "self_bleu_4" for r in mine)
    sb = [r["self_bleu_4"] for r in rows if r["run"] == "mle_text"]
    assert sb[0] > sb[1] > sb[2], sb  # colder sampling: samples resemble each other more
    for ext in ("csv", "md", "png"):
        assert os.path.getsize(tmp_path / f"sweep.{ext}") > 0
    back = read_sweep_csv(str(tmp_path / "sweep.csv"))
    assert len(back) == len(rows) and back[0]["self_bleu_4"] == pytest.approx(rows[0]["self_bleu_4"])
    md = (tmp_path / "sweep.md").read_text()
    assert md.startswith("| run | temperature |") and md.count("\n") == len(rows) + 2


def test_sweep_oracle_cli_json(runs, tmp_path, capsys):
    rc = main(["sweep", runs["oracle"], "--temperatures", "0.5,1,1.5", "--n-samples", "64", "--out", str(tmp_path),
               "--json", "--device", "cpu"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["temperature"] for r in rows] == [0.5, 1.0, 1.5]
    assert all(r["kind"] == "oracle" and r["quality"] == r["oracle_nll"] and r["diversity"] == r["test_nll"]
               for r in rows)
    with open(tmp_path / "sweep.csv", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_report_renders(runs, tmp_path):
    out = tmp_path / "report"
    index = build_report([runs["text"], runs["gan"], runs["oracle"]], str(out), n_samples=64,
                         temperatures="0.5,1,1.5")
    html = open(index, encoding="utf-8").read()
    assert index == str(out / "index.html")
    # text runs have ~20 metric columns: the table is transposed (a row per metric, a column per run)
    table = html[html.index('<table class="transposed">') : html.index("</table>")]
    for name in ("mle_text", "seqgan_text", "mle_oracle"):
        assert f"<th>{name}</th>" in table
    assert "oracle_nll" in table and "bleu_4" in table and "seqgan" in table and "detector_auroc →0.5" in table
    # the recomputed oracle NLL (last group) shows its standard error beside it
    row = re.findall(r'<td class="name">oracle_nll ↓</td>(.*?)</tr>', table)[-1]
    assert re.search(r"<td>\d\.\d{4} ± 0\.\d{4}</td>$", row)
    imgs = re.findall(r'<img src="([^"]+)"', html)
    assert "sweep/sweep.png" in imgs and "curves/d_loss.png" in imgs and "curves/oracle_nll.png" in imgs
    for src in imgs:
        assert not os.path.isabs(src) and os.path.getsize(out / src) > 0
    # ten samples per run, HTML-escaped
    assert html.count('<ol class="samples">') == 3
    assert html.count("<li>") >= 30
    assert "x&lt;y&amp;z" in html and SPECIAL not in html
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| metric | mle_text | seqgan_text | mle_oracle |" in md
    assert "![quality-diversity curves](sweep/sweep.png)" in md and SPECIAL in md


def test_report_cli_with_existing_sweep(runs, tmp_path, capsys):
    sweep_dir = tmp_path / "sw"
    sweep([runs["text"]], [0.8, 1.2], out_dir=str(sweep_dir), n_samples=32)
    out = tmp_path / "rep"
    rc = main(["report", runs["text"], "--out", str(out), "--sweep", str(sweep_dir), "--n-samples", "32",
               "--n-show", "3", "--device", "cpu"])
    assert rc == 0 and capsys.readouterr().out.strip() == str(out / "index.html")
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "temperatures 0.8, 1.2" in html and (out / "sweep" / "sweep.png").is_file()
    assert html.count("<li>") == 3
