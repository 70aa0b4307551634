"""`make demo` end to end at tiny budgets: oracle data, MLE, SeqGAN, MLE continued, table, report."""

import json
import os

from llmgan.demo import main


def test_quick_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quick", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "SeqGAN, +2 rounds (ours)" in printed and "MLE (SeqGAN paper)" in printed and "9.038" in printed
    summary = json.load(open(out / "summary.json"))
    assert len(summary) == 3 and all(5.0 < v["oracle_nll"] < 12.0 for v in summary.values())
    html = open(out / "report" / "index.html", encoding="utf-8").read()
    assert "seqgan" in html and "mle_continued" in html and "<img" in html
    assert os.path.isfile(out / "oracle" / "train.txt")
