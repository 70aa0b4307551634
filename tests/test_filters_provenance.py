"""Output filters drop (never alter) and log what they block; provenance sidecars match the run."""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np
import pytest

from llmgan.cli import main
from llmgan.errors import ConfigError, LLMGanError
from llmgan.filters import OutputFilter, load_filter
from llmgan.models.watermark import Watermark, load_key
from llmgan.run import load_run
from test_watermark import word_run  # noqa: F401 - the module's trained run fixture


def test_filter_blocks_and_logs_with_reasons(caplog):
    flt = OutputFilter(blocklist=["Ass", "two words"], regex=[r"\b\d{3}-\d{4}\b"])
    flt.add_classifier("shouty", lambda t: t.isupper())
    texts = ["a class act", "what an ass", "call 555-1234 now", "TWO WORDS here", "HELLO", "fine text"]
    with caplog.at_level(logging.WARNING, logger="llmgan.filters"):
        res = flt.apply(texts)
    assert res.kept == [0, 5]  # "class" is not the word "ass"; kept texts come back by index, unaltered
    assert dict(res.dropped) == {1: "blocklist 'Ass'", 2: "regex '\\\\b\\\\d{3}-\\\\d{4}\\\\b'",
                                 3: "blocklist 'two words'", 4: "classifier:shouty"}
    assert res.counts == {"blocklist": 2, "regex": 1, "classifier:shouty": 1}
    assert sum("filter dropped sample" in r.message for r in caplog.records) == 4
    assert OutputFilter(blocklist=["Ass"], case_sensitive=True).apply(["what an ass"]).kept == [0]


def test_filter_config_file(tmp_path):
    (tmp_path / "words.txt").write_text("# comment\nfoo\n")
    cfg = tmp_path / "f.yaml"
    cfg.write_text("blocklist: [bar]\nblocklist_file: words.txt\nregex: ['^x']\n")
    flt = load_filter(str(cfg))
    assert flt.apply(["foo", "bar", "xyz", "ok"]).kept == [3]
    assert flt.config_hash == hashlib.sha256(cfg.read_bytes()).hexdigest()
    for text, msg in [("blocklst: [a]\n", "unknown filter key"), ("regex: ['(']\n", "filter regex"),
                      ("- a\n", "expected a mapping")]:
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=msg) as e:
            load_filter(str(cfg))
        assert "\n" not in str(e.value)


def test_generate_filters_and_writes_provenance(word_run, tmp_path, capsys):  # noqa: F811
    key = tmp_path / "wm.key"
    Watermark(bytes(range(32))).save(str(key))  # fixed: the watermarked samples are deterministic
    blocked = [f"w{i}" for i in range(0, 120, 20)]  # 6 of 120 words: some samples hit them, most do not
    cfg = tmp_path / "filter.json"
    cfg.write_text(json.dumps({"blocklist": blocked}))
    out = tmp_path / "gen.txt"
    capsys.readouterr()
    assert main(["generate", str(word_run), "-n", "30", "--seed", "3", "--temperature", "0.9", "--out", str(out),
                 "--watermark", str(key), "--filter-config", str(cfg)]) == 0
    err = capsys.readouterr().err
    lines = out.read_text().splitlines()
    side = json.loads((tmp_path / "gen.txt.provenance.json").read_text())
    dropped = side["filter"]["dropped"]
    assert 0 < dropped < 30 and len(lines) == 30 - dropped and f"dropped {dropped} of 30" in err
    assert side["filter"]["by_reason"] == {"blocklist": dropped}
    assert not any(set(line.split()) & set(blocked) for line in lines)  # nothing blocked got through
    run = load_run(str(word_run))
    weights = os.path.join(run.checkpoint, "generator.safetensors")
    assert side["checkpoint_sha256"] == hashlib.sha256(open(weights, "rb").read()).hexdigest()
    assert side["checkpoint"] == os.path.basename(run.checkpoint)
    assert side["run_dir"] == os.path.abspath(word_run)
    assert side["seed"] == 3 and side["sampling"]["temperature"] == 0.9 and side["sampling"]["n"] == 30
    wm = load_key(str(key))
    assert side["watermark_key_id"] == wm.key_id and wm.key.hex() not in json.dumps(side)
    assert side["filter_config_sha256"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    assert side["file_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert side["llmgan_version"] and side["time"].endswith("Z")


@pytest.fixture(scope="module")
def d_run(tmp_path_factory):
    """test_detect's tiny MLE run with a briefly trained CNN discriminator, and 64 of its generator's texts."""
    from test_detect import _run_with_d

    return _run_with_d(tmp_path_factory.mktemp("dfilter"), "vanilla", n_fake_texts=64)


def test_discriminator_filter_blocks_what_the_run_d_rejects(d_run, caplog):
    from llmgan.detect import Detector

    run_dir, lines, fakes, tmp = d_run
    human, generated = lines[:32], [t for t in fakes if t][:32]
    texts = human + generated
    p = Detector(load_run(run_dir)).p_human(texts)
    bar = float(np.median(p))  # about half should go, so both "blocks" and "keeps" are exercised
    cfg = tmp / "dfilter.json"
    cfg.write_text(json.dumps({"blocklist": ["zebra"], "discriminator": {"run": run_dir, "min_p_human": bar}}))
    flt = load_filter(str(cfg))
    with caplog.at_level(logging.WARNING, logger="llmgan.filters"):
        res = flt.apply([*texts, "the zebra sat"])
    blocked = dict(res.dropped)
    assert set(blocked) == {i for i in range(len(texts)) if p[i] < bar} | {len(texts)}
    assert 0 < len(res.kept) < len(texts) and res.kept == sorted(res.kept)
    assert blocked[len(texts)] == "blocklist 'zebra'"  # an earlier rule's reason wins; D never sees it
    # D learned something: it rejects more generated texts than human ones at this bar
    assert sum(i >= len(human) for i in blocked if i < len(texts)) > sum(i < len(human) for i in blocked)
    for i, why in blocked.items():
        if i < len(texts):
            assert why == f"classifier:discriminator (p_human {p[i]:.3f} < {bar:g})"
    assert res.counts == {"blocklist": 1, "classifier:discriminator": len(blocked) - 1}
    logged = [r.getMessage() for r in caplog.records if r.name == "llmgan.filters"]
    assert len(logged) == len(blocked) and all("filter dropped sample" in m for m in logged)
    assert any("classifier:discriminator (p_human" in m for m in logged)


def test_discriminator_filter_in_generate(d_run, word_run, tmp_path, capsys):  # noqa: F811
    from llmgan.detect import Detector

    run_dir = d_run[0]
    cfg = tmp_path / "dfilter.yaml"
    cfg.write_text(f"discriminator: {{run: {run_dir}, min_p_human: 0.5}}\n")
    out = tmp_path / "gen.txt"
    capsys.readouterr()
    assert main(["generate", run_dir, "-n", "40", "--seed", "1", "--out", str(out), "--filter-config", str(cfg),
                 "--device", "cpu"]) == 0
    side = json.loads((tmp_path / "gen.txt.provenance.json").read_text())
    lines = out.read_text().splitlines()
    dropped = side["filter"]["dropped"]
    assert side["filter"]["by_reason"] == ({"classifier:discriminator": dropped} if dropped else {})
    assert 0 < dropped < 40 and len(lines) == 40 - dropped and f"dropped {dropped} of 40" in capsys.readouterr().err
    assert (Detector(load_run(run_dir)).p_human(lines) >= 0.5).all()  # nothing D rejects got through
    # an MLE-only run has no D to filter with: one line, at load time, before anything is generated
    (tmp_path / "nod.yaml").write_text(f"discriminator: {{run: {word_run}}}\n")
    with pytest.raises(LLMGanError, match=r"^[^\n]*: this run has no discriminator \(an MLE-only run\?\)$"):
        load_filter(str(tmp_path / "nod.yaml"))
