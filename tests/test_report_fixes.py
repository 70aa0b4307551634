"""Report pieces a reader needs: continued runs after their parent, RelGAN's D accuracy, detector
AUROC's target, wide tables transposed, standard errors beside sampled metrics."""

from __future__ import annotations

import json

from llmgan.report import CURVES, _best, _cell, _header, _init_offset, _md_table, _RunInfo, curve_data

CURVE = {c.stem: c for c in CURVES}


def test_init_offset_from_checkpoint_name_and_parent_log(tmp_path):
    assert _init_offset(None) == 0
    assert _init_offset("runs/x/checkpoints/step-0000123") == 123
    assert _init_offset("runs/x/checkpoints/step-0000123.1/") == 123
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"step": 50, "phase": "mle"}, {"step": 3000, "phase": "final"})) + "\n")
    assert _init_offset(str(tmp_path)) == 3000


def test_continued_run_is_plotted_after_its_parent():
    parent = [{"step": 3000, "phase": "eval", "oracle_nll": 9.0}]
    child = [{"step": 1, "phase": "eval", "oracle_nll": 8.9}, {"step": 5, "phase": "final", "oracle_nll": 8.8}]
    data = curve_data([("mle", parent), ("seqgan", child)], CURVE["oracle_nll"], {"seqgan": 3000})
    xs = {name: x for name, _, x, _ in data}
    assert xs == {"mle": [3000], "seqgan": [3001, 3005]}
    # rounds are not shifted (they count the run's own adversarial rounds)
    adv = [{"round": 2, "phase": "adversarial", "g_loss": 1.0}]
    assert curve_data([("seqgan", adv)], CURVE["g_loss"], {"seqgan": 3000})[0][2] == [2]


def test_relgan_relativistic_accuracy_is_plotted():
    recs = [{"round": 1, "phase": "adversarial", "d_acc_rel": 0.9}]
    data = curve_data([("relgan", recs)], CURVE["d_acc"])
    assert [(n, label) for n, label, _, _ in data] == [("relgan", "relativistic")]


def _info(name, final=None, evaluation=None, summary=None):
    return _RunInfo(name, "/x", [], final or {}, summary or {"algorithm": "mle"}, evaluation or {}, data_key=("o",))


def test_detector_auroc_header_and_best_is_closest_to_half():
    assert _header("detector_auroc") == "detector_auroc →0.5"
    assert _header("oracle_nll") == "oracle_nll ↓" and _header("bleu_4") == "bleu_4 ↑"
    infos = [_info("a", evaluation={"detector_auroc": 0.95}), _info("b", evaluation={"detector_auroc": 0.45}),
             _info("c", evaluation={"detector_auroc": 0.3})]
    assert _best(infos, "evaluation", "detector_auroc") == {1}


def test_standard_error_in_cell_and_wide_tables_transposed():
    assert _cell({"oracle_nll": 9.05612, "oracle_nll_se": 0.01234}, "oracle_nll") == "9.0561 ± 0.0123"
    assert _cell({"test_nll": 7.5}, "test_nll") == "7.5000"
    narrow = [_info("a", evaluation={"oracle_nll": 9.1, "oracle_nll_se": 0.01}),
              _info("b", evaluation={"oracle_nll": 9.0})]
    md = _md_table(narrow)
    assert md.splitlines()[0] == "| run | algorithm | eval: oracle_nll ↓ |"  # the _se key is no column
    wide_eval = {f"bleu_{k}": 0.1 * k for k in range(2, 6)} | {f"self_bleu_{k}": 0.2 for k in range(2, 6)}
    wide_eval |= {f"distinct_{k}": 0.5 for k in range(1, 5)} | {"test_nll": 3.0}
    wide = [_info("a", evaluation=wide_eval), _info("b", evaluation={**wide_eval, "bleu_2": 0.9})]
    lines = _md_table(wide).splitlines()
    assert lines[0] == "| metric | a | b |"
    assert "| eval: bleu_2 ↑ | 0.2000 | **0.9000** |" in lines
    assert len(lines) == 2 + 1 + len(wide_eval)  # header, rule, algorithm row, one row per metric


def test_frontier_section_against_the_mle_run(tmp_path):
    from llmgan.report import frontier_section

    infos = [_info("mle"), _info("gan", summary={"algorithm": "seqgan"})]
    rows = [{"run": "mle", "kind": "oracle", "temperature": t, "test_nll": x, "oracle_nll": y}
            for t, x, y in ((0.8, 7.0, 8.0), (1.0, 5.0, 9.0))]
    rows.append({"run": "gan", "kind": "oracle", "temperature": 1.0, "test_nll": 6.0, "oracle_nll": 8.0})
    png, table = frontier_section(infos, rows, str(tmp_path))
    assert png == "sweep/frontier.png" and (tmp_path / png).stat().st_size > 0
    assert "| gan | seqgan | None | -0.500 | 1 | -0.500 | 0/1 |" in table  # MLE's curve at 6.0 is 8.5
    assert frontier_section(infos[:1], rows[:2], str(tmp_path)) is None  # nothing to compare
