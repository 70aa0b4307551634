"""The detector: threshold calibration (balanced accuracy), AUROC, and `llmgan detect` on a run."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from llmgan.detect import DETECTOR_FILE, Detector, auroc, balanced_accuracy, calibrate_threshold, detect


def test_calibrated_threshold_maximizes_balanced_accuracy():
    rng = np.random.default_rng(0)
    for trial in range(20):
        h = rng.normal(0.5, 1.0, size=rng.integers(1, 40)).round(1)  # rounding makes ties
        g = rng.normal(0.0, 1.0, size=rng.integers(1, 60)).round(1)
        thr, bacc = calibrate_threshold(h, g)
        scores = np.concatenate([h, g])
        labels = np.array([True] * len(h) + [False] * len(g))
        assert balanced_accuracy(scores, labels, thr) == pytest.approx(bacc)
        for t in np.concatenate([scores, scores + 1e-9, scores - 1e-9, np.linspace(-5, 5, 101)]):
            assert balanced_accuracy(scores, labels, t) <= bacc + 1e-12, (trial, t)


def test_auroc():
    assert auroc([0.9, 0.8, 0.7], [0.1, 0.2, 0.3]) == 1.0  # separable
    assert auroc([0.1, 0.2], [0.8, 0.9]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5  # ties count 1/2
    rng = random.Random(0)
    pos = [rng.random() for _ in range(30)] + [0.5] * 3
    neg = [rng.random() * 0.8 for _ in range(25)] + [0.5] * 2
    brute = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert auroc(pos, neg) == pytest.approx(brute)
    thr, bacc = calibrate_threshold([2.0, 3.0], [0.0, 1.0])
    assert 1.0 < thr < 2.0 and bacc == 1.0


@pytest.fixture(scope="module")
def run_with_d(tmp_path_factory):
    """A tiny MLE run plus a briefly trained CNN discriminator written into its latest checkpoint."""
    return _run_with_d(tmp_path_factory.mktemp("detect"), "vanilla")


def _run_with_d(tmp, kind: str, n_fake_texts: int = 20):
    """The run of ``run_with_d`` with D trained by the losses.py ``kind`` (recorded as adversarial.loss)."""
    from llmgan.config import config_from_dict
    from llmgan.losses import d_loss
    from llmgan.run import load_run
    from llmgan.training.checkpoint import save_tensors
    from llmgan.training.engine import Trainer

    rng = random.Random(0)
    words = "the a cat dog sat ran on in mat park big small".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 8))) for _ in range(200)]
    (tmp / "train.txt").write_text("\n".join(lines) + "\n")
    cfg = config_from_dict({
        "name": "det", "device": "cpu", "data": {"train": str(tmp / "train.txt"), "max_len": 12},
        "generator": {"name": "gpt", "kwargs": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_len": 16}},
        "discriminator": {"name": "cnn", "kwargs": {"emb_dim": 16, "filter_sizes": [2, 3], "num_filters": [16, 16]}},
        "train": {"epochs": 1, "batch_size": 32, "progress": False},
        "adversarial": {"loss": kind},
        "eval": {"n_samples": 8, "batch_size": 8},
    })
    run_dir = str(tmp / "run")
    Trainer(cfg, run_dir).run()
    run = load_run(run_dir)
    from llmgan.models.factory import make_discriminator
    from llmgan.training.evaluation import sample_tokens

    d = make_discriminator(cfg.discriminator, run.tokenizer)
    real = run.encode_file(str(tmp / "train.txt")).tokens[:128]
    fake, _ = sample_tokens(run.generator, 128, 12, rng=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    for _ in range(30):
        loss = d_loss(d(real), d(fake), kind)
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_tensors(d.state_dict(), os.path.join(run.checkpoint, "discriminator.safetensors"))
    texts = [run.tokenizer.decode(r) for r in fake[:n_fake_texts].tolist()]
    return run_dir, lines, texts, tmp


def test_detector_calibration_on_run(run_with_d):
    from llmgan.run import load_run

    run_dir, lines, fakes, tmp = run_with_d
    det = Detector(load_run(run_dir))
    cal = det.load_or_calibrate(n=64, seed=0)
    assert os.path.isfile(os.path.join(run_dir, DETECTOR_FILE))
    stored = json.loads(open(os.path.join(run_dir, DETECTOR_FILE)).read())
    assert stored["threshold"] == cal["threshold"] and stored["n_human"] > 0
    # the stored calibration is reused (same checkpoint), not recomputed
    det2 = Detector(load_run(run_dir))
    assert det2.load_or_calibrate(n=5, seed=99) == stored
    out = det2.classify(lines[:3])
    assert all(r["label"] in ("human", "generated") and 0 <= r["p_human"] <= 1 for r in out)


def test_detect_cli_reports_auroc(run_with_d, capsys):
    from llmgan.cli import main

    run_dir, lines, fakes, tmp = run_with_d
    f = tmp / "mixed.jsonl"
    f.write_text("".join(json.dumps({"text": t, "label": "human"}) + "\n" for t in lines[:20])
                 + "".join(json.dumps({"text": t, "label": "generated"}) + "\n" for t in fakes if t))
    assert main(["detect", run_dir, str(f), "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0.0 <= out["auroc"] <= 1.0 and len(out["results"]) == 20 + sum(1 for t in fakes if t)
    assert out["results"][0]["true_label"] == "human"
    real, fake = tmp / "real.txt", tmp / "fake.txt"
    real.write_text("\n".join(lines[:10]) + "\n")
    fake.write_text("\n".join(t for t in fakes if t) + "\n")
    assert main(["detect", run_dir, "--real", str(real), "--fake", str(fake), "--threshold", "0.5",
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "AUROC" in captured.err and captured.out.count("\n") == 10 + sum(1 for t in fakes if t)
    res = detect(run_dir, str(real), threshold=0.0)
    assert all(r["label"] == "human" for r in res["results"])  # p_human >= 0 always


@pytest.mark.parametrize("kind", ["wgan", "nonsaturating"])
def test_real_text_scores_as_human_whatever_the_loss_convention(kind, tmp_path):
    # a wgan critic scores FAKENESS (losses.py): read as sigmoid(logit), real text would look generated
    from llmgan.run import load_run

    run_dir, lines, fakes, _ = _run_with_d(tmp_path, kind, n_fake_texts=64)
    det = Detector(load_run(run_dir))
    fakes = [t for t in fakes if t]
    ph, pg = det.p_human(lines[:64]), det.p_human(fakes)
    assert auroc(ph, pg) > 0.7 and ph.mean() > pg.mean()  # read backwards: AUROC 1 - that (about 0.2)
    assert det.calibrate(n=64, save=False)["auroc"] > 0.7


def test_detect_refuses_a_rankgan_run(run_with_d):
    # RankGAN trains its D as a ranker (features only): the logit head detect would read never trains
    from llmgan.errors import ConfigError
    from llmgan.run import load_run

    run = load_run(run_with_d[0])
    run.cfg.adversarial.algorithm = "rankgan"
    with pytest.raises(ConfigError, match=r"^detect: .* is a rankgan run; its discriminator is a ranker [^\n]*$"):
        Detector(run)
