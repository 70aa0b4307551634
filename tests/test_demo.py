"""`make demo` end to end at tiny budgets: oracle data, MLE, SeqGAN, MLE continued, table, report."""

import json
import os

import pytest

from llmgan.demo import main


def test_quick_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quick", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "torch threads: 1 (--threads)" in printed and "estimated time: about" in printed
    assert "SeqGAN, +2 rounds (ours)" in printed and "MLE (SeqGAN paper)" in printed and "9.038" in printed
    summary = json.load(open(out / "summary.json"))
    assert len(summary) == 3 and all(5.0 < v["oracle_nll"] < 12.0 for v in summary.values())
    html = open(out / "report" / "index.html", encoding="utf-8").read()
    assert "seqgan" in html and "mle_continued" in html and "<img" in html
    assert os.path.isfile(out / "oracle" / "train.txt")


def test_thread_count_explicit_setting_wins_else_free_cores(monkeypatch):
    import llmgan.demo as demo

    monkeypatch.setattr(demo.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(demo.os, "getloadavg", lambda: (2.6, 1.0, 1.0))
    monkeypatch.delenv("TORCH_NUM_THREADS", raising=False)
    assert demo._thread_count(None)[0] == 1  # 4 cores, 3 busy
    monkeypatch.setattr(demo.os, "getloadavg", lambda: (0.2, 1.0, 1.0))
    assert demo._thread_count(None)[0] == 4
    monkeypatch.setattr(demo.os, "getloadavg", lambda: (9.0, 1.0, 1.0))
    assert demo._thread_count(None)[0] == 1  # never 0
    monkeypatch.setenv("TORCH_NUM_THREADS", "3")
    assert demo._thread_count(None) == (3, "TORCH_NUM_THREADS")
    assert demo._thread_count(2) == (2, "--threads")


def test_estimate_scales_with_the_measured_blocks():
    from llmgan.demo import estimate_seconds

    full = dict(n_data=10000, n_eval=10000, mle_epochs=20, cont_epochs=3, rounds=20, rollouts=16, d_pretrain=10,
                d_samples=5000, eval_every=10, report_samples=1000)
    fast = estimate_seconds({"train_step": 0.005, "sample_1000": 0.05}, **full)
    assert 60 < fast < 600  # idle-machine speeds: minutes, as the 2.5 min measured on an idle 2-core machine
    assert estimate_seconds({"train_step": 0.05, "sample_1000": 0.5}, **full) == pytest.approx(10 * fast)
