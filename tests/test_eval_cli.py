"""``llmgan metrics`` on arbitrary text files, and one-line errors of the evaluation commands."""

from __future__ import annotations

import json

import pytest

from llmgan import metrics as M
from llmgan.cli import main

GEN = ["the cat sat on the mat", "a dog ran in the park", "the cat ran on the mat", "birds fly over the sea"]
REF = ["the cat sat on a mat", "a dog runs in the park", "the sea is blue today", "the cat is on the mat"]


@pytest.fixture
def files(tmp_path):
    gen, ref = tmp_path / "gen.txt", tmp_path / "ref.txt"
    gen.write_text("\n".join(GEN) + "\n", encoding="utf-8")
    ref.write_text("\n".join(REF) + "\n", encoding="utf-8")
    return str(gen), str(ref)


def _run_json(capsys, argv):
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def test_metrics_matches_library(files, capsys):
    gen, ref = files
    out = _run_json(capsys, ["metrics", "--samples", gen, "--references", ref, "--json"])
    g, r = M.tokenize_lines(GEN), M.tokenize_lines(REF)
    expected = {**M.bleu(g, r, max_n=(2, 3, 4, 5)), **M.self_bleu(g, max_n=(2, 3, 4)), **M.distinct(g)}
    for k, v in expected.items():
        assert out[k] == pytest.approx(v, abs=1e-12), k
    assert out["n_samples"] == 4 and out["n_references"] == 4


def test_metrics_char_tokenizer_and_subset(files, capsys):
    gen, ref = files
    out = _run_json(capsys, ["metrics", "--samples", gen, "--references", ref, "--metrics", "bleu",
                             "--tokenizer", "char", "--json"])
    chars = M.tokenize_lines(GEN, "char"), M.tokenize_lines(REF, "char")  # characters, whitespace left out
    assert out["bleu_4"] == pytest.approx(M.bleu(*chars, max_n=4)["bleu_4"])
    assert chars[0][0] == [c for c in GEN[0] if c != " "]
    assert "self_bleu_2" not in out and "distinct_1" not in out
    # self_bleu and distinct need no references
    out = _run_json(capsys, ["metrics", "--samples", gen, "--metrics", "self_bleu,distinct", "--json"])
    assert "bleu_2" not in out and out["distinct_1"] == pytest.approx(M.distinct_n(M.tokenize_lines(GEN), 1))


def test_metrics_table_output(files, capsys):
    gen, ref = files
    assert main(["metrics", "--samples", gen, "--references", ref]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["metric", "value"] and any(line.startswith("bleu_4") for line in lines)


def _one_line_error(capsys, argv, needle: str) -> None:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("llmgan: error:") and "\n" not in err, err
    assert needle in err, err


def test_metrics_bad_inputs(files, tmp_path, capsys):
    gen, ref = files
    missing = str(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    _one_line_error(capsys, ["metrics", "--samples", missing, "--references", ref], "nope.txt")
    _one_line_error(capsys, ["metrics", "--samples", gen, "--references", missing], "nope.txt")
    _one_line_error(capsys, ["metrics", "--samples", str(empty), "--references", ref], "empty.txt")
    _one_line_error(capsys, ["metrics", "--samples", gen, "--references", str(empty)], "empty.txt")
    _one_line_error(capsys, ["metrics", "--samples", gen, "--references", ref, "--metrics", "bleu,rouge"], "rouge")
    _one_line_error(capsys, ["metrics", "--samples", gen], "--references")
    one = tmp_path / "one.txt"
    one.write_text("just one line\n", encoding="utf-8")
    _one_line_error(capsys, ["metrics", "--samples", str(one), "--metrics", "self_bleu"], "at least 2")


def test_sweep_and_report_bad_inputs(tmp_path, capsys):
    missing = str(tmp_path / "no_run")
    _one_line_error(capsys, ["sweep", missing, "--out", str(tmp_path / "o")], "no_run")
    _one_line_error(capsys, ["sweep", missing, "--out", str(tmp_path / "o"), "--temperatures", "1:0"], "--temperatures")
    _one_line_error(capsys, ["report", missing, "--out", str(tmp_path / "r")], "no_run")
    _one_line_error(capsys, ["report", missing, "--out", str(tmp_path / "r"), "--sweep", str(tmp_path)], "sweep.csv")


def test_metrics_orders_reach_self_bleu_5(files, capsys):
    gen, ref = files
    out = _run_json(capsys, ["metrics", "--samples", gen, "--references", ref, "--metrics", "bleu,self_bleu",
                             "--orders", "4,5", "--json"])
    g, r = M.tokenize_lines(GEN), M.tokenize_lines(REF)
    assert out["self_bleu_5"] == pytest.approx(M.self_bleu(g, max_n=(4, 5))["self_bleu_5"], abs=1e-12)
    assert out["bleu_5"] == pytest.approx(M.bleu(g, r, max_n=(4, 5))["bleu_5"], abs=1e-12)
    assert "self_bleu_2" not in out and "bleu_2" not in out
    _one_line_error(capsys, ["metrics", "--samples", gen, "--metrics", "self_bleu", "--orders", "4,x"], "--orders")
    _one_line_error(capsys, ["metrics", "--samples", gen, "--metrics", "self_bleu", "--orders", "0,9"], "from 1 to 8")


def test_error_line_is_one_write(tmp_path, monkeypatch):
    """Under torchrun every rank writes to one pipe: an error line written in two pieces (print's text,
    then its newline) lets another rank's line land between them, so it must be one write."""
    import sys

    writes: list[str] = []

    class Recorder:
        def write(self, s: str) -> int:
            writes.append(s)
            return len(s)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", Recorder())
    assert main(["metrics", "--samples", str(tmp_path / "nope.txt"), "--references", str(tmp_path / "r.txt")]) == 2
    errors = [w for w in writes if "llmgan: error:" in w]
    assert len(errors) == 1 and errors[0].endswith("\n") and errors[0].count("\n") == 1, writes
