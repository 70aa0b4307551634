"""benchmarks/reproduce.py bookkeeping: wall time across resumed sessions, no duplicated lines."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up there
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


rp = _load("reproduce")


def test_wall_time_skips_the_gap_between_sessions():
    recs = [{"time": t} for t in (110.0, 150.0, 1010.0, 1030.0)]
    # session 1 starts at 100 and ends at its last record (150); session 2 starts at 1000
    assert rp.wall_times(recs, [100.0, 1000.0]) == [10.0, 50.0, 60.0, 80.0]


def test_result_lines_and_sync_do_not_duplicate(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    recs = [{"step": 10, "phase": "mle", "time": 105.0, "loss": 1.0},
            {"step": 157, "phase": "eval", "time": 120.0, "oracle_nll": 9.5, "valid_nll": 7.8, "epoch": 1, "round": 0},
            {"step": 160, "phase": "eval", "time": 130.0, "oracle_nll": 9.4, "valid_nll": 7.8, "epoch": 1, "round": 3}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n{cut by a cra")
    (run / rp.SESSIONS).write_text("[100.0]")
    lines = rp.result_lines("relgan", 0, str(run), 1, "cpu", "python benchmarks/reproduce.py relgan")
    assert [(ln["phase"], ln["step"], ln["round"], ln["wall_s"]) for ln in lines] == [
        ("mle", 157, 0, 20.0), ("adversarial", 160, 3, 30.0)]
    assert lines[0]["schedule"] == {"mle_epochs": 150, "rounds": 3000} and lines[0]["test_nll"] is None
    for key in ("name", "seed", "oracle_nll", "precision", "threads", "cpu", "command"):
        assert key in lines[0]
    out = tmp_path / "reproduce.jsonl"
    assert rp.sync(lines, str(out)) == 2
    assert rp.sync(lines, str(out)) == 0  # a resumed run re-reads its log: nothing twice
    assert len(out.read_text().splitlines()) == 2
    relabelled = rp.result_lines("relgan", 0, str(run), 1, "cpu", "...", label="relgan_mle10")
    assert {ln["name"] for ln in relabelled} == {"relgan_mle10"}
    assert rp.sync(relabelled, str(out)) == 2  # another label is another run: its lines are its own


def test_train_command_resumes_and_carries_the_schedule():
    cmd = rp.train_command("relgan", "/r", 1, "cpu", 0, ["train.eval_every=5"], resume=True)
    assert cmd[-1] == "--resume" and "adversarial.params.max_temperature=1.0" in cmd
    assert cmd[cmd.index("--threads") + 1] == "1" and "train.eval_every=5" in cmd


def test_report_progress_words():
    rr = _load("reproduce_report")
    assert rr.progress({"epoch": 40, "round": 0, "schedule": {"mle_epochs": 150, "rounds": 3000}}) == \
        "MLE epoch 40/150"
    assert rr.progress({"epoch": 150, "round": 75, "schedule": {"mle_epochs": 150, "rounds": 3000}}) == \
        "round 75/3000"
