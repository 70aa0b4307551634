"""How fast a training run honours SIGTERM at the paper's sizes, and where the seconds go.

    python benchmarks/sigterm_latency.py [--part gaps|cli|all] [--write-doc]

Two measurements (run with one torch thread; on a shared machine add ``nice``):

``gaps`` (in-process): runs a slice of the paper schedules and records every moment a stop can be
taken (an interruption point while a sub-step can be rolled back, or a step boundary). The longest
gap between two such moments, per phase, is the worst wait between a signal and the start of the
stop; then come the rollback of the sub-step and the stop's checkpoint, timed on the same models.
Each gap is given in wall seconds and in CPU seconds of this process: a gap whose CPU time is far
below its wall time was spent waiting (I/O, or other processes on the same cores), not computing.
Phases: SeqGAN oracle (``configs/seqgan_oracle.yaml``) MLE steps and the evaluation on 10,000
samples, a D step on 10,000 samples x 3 epochs with SeqGAN's CNN D, a G step with a rollout batch
of 64 x 16 rollouts; RelGAN (``configs/relgan_oracle.yaml``) RMC MLE steps.

``cli`` (end to end): ``llmgan train`` on the same configs, SIGTERM inside each phase, timed from
the signal to the process's exit (status 143), with the engine's own breakdown line (wait for the
interruption point, rollback, checkpoint).

``--write-doc`` writes the results into docs/reliability.md between its ``sigterm-latency`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "src"))

import torch  # noqa: E402

from _doc import cpu_isa, cpu_model, update_section  # noqa: E402
from llmgan import interrupt  # noqa: E402
from llmgan.config import load_config  # noqa: E402
from llmgan.training.engine import Trainer  # noqa: E402

SEQGAN = os.path.join(ROOT, "configs", "seqgan_oracle.yaml")
RELGAN = os.path.join(ROOT, "configs", "relgan_oracle.yaml")
DOC = os.path.join(ROOT, "docs", "reliability.md")


class _Enough(Exception):
    """Ends a profiled slice once it has covered what it measures."""


def _label(tr: Trainer) -> str:
    st = tr.state
    phase = st["phase"]
    if phase == "mle":
        return "MLE evaluation (10,000 samples)" if tr._sub is not None else "MLE step"
    if phase == "d_pretrain":
        return "D step (pre-training)"
    pos = st.get("round_pos")
    if pos is None:
        return "final evaluation"
    if not pos["steps_done"] and pos["g"] < tr.cfg.adversarial.g_steps:
        return "G step (rollouts)"
    if not pos["steps_done"]:
        return "D step (round)"
    return "round end (probe, evaluation)"


class GapProfile:
    """Max wall/CPU gap between consecutive stop-capable moments, by phase label."""

    def __init__(self, tr: Trainer, until):
        self.tr, self.until = tr, until
        self.last: tuple[float, float] | None = None
        self.last_label = ""
        self.gaps: dict[str, tuple[float, float]] = {}
        self.count: dict[str, int] = {}

    def mark(self) -> None:
        now = (time.perf_counter(), time.process_time())
        label = _label(self.tr)
        if self.last is not None:  # a gap belongs to the phase it began in (a signal then waits for its end)
            wall, cpu = now[0] - self.last[0], now[1] - self.last[1]
            if wall > self.gaps.get(self.last_label, (0.0, 0.0))[0]:
                self.gaps[self.last_label] = (wall, cpu)
        self.count[label] = self.count.get(label, 0) + 1
        self.last, self.last_label = now, label
        if self.until(self.tr):
            raise _Enough

    def install(self, monkey: list) -> None:
        tr, prof = self.tr, self
        original_point, original_stop = interrupt.point, Trainer.maybe_stop

        def point() -> None:
            if tr._sub is not None and tr._sub.rollbackable:
                prof.mark()
            original_point()

        def maybe_stop(self_tr: Trainer) -> None:
            prof.mark()
            original_stop(self_tr)

        # every module calls interrupt.point through the module attribute, so one patch covers all
        monkey.append((interrupt, "point", original_point))
        monkey.append((Trainer, "maybe_stop", original_stop))
        interrupt.point = point
        Trainer.maybe_stop = maybe_stop


def _restore(monkey: list) -> None:
    for obj, name, value in reversed(monkey):
        setattr(obj, name, value)
    monkey.clear()


def _timed_stop_costs(tr: Trainer) -> dict:
    """Rollback (a D step's copy of D and Adam put back) and the stop's checkpoint, on this run's models."""
    from llmgan.training.engine import _SubStep
    from llmgan.training.logging import MetricsLogger

    out = {}
    tr.logger = MetricsLogger(tr.run_dir, tensorboard=False)  # run() closed its own on the way out
    sub = _SubStep(tr)
    if tr.adversarial is not None and tr.adversarial.discriminator is not None:
        t0 = time.perf_counter()
        sub.before_update(tr.adversarial.discriminator, tr.adversarial.d_opt)
        sub.before_update(tr.generator, tr.adversarial.g_opt)
        out["snapshot_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sub.rollback()
    out["rollback_s"] = time.perf_counter() - t0
    fsyncs = [0, 0.0]
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        t = time.perf_counter()
        real_fsync(fd)
        fsyncs[0] += 1
        fsyncs[1] += time.perf_counter() - t

    os.fsync = fsync
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        tr.save()
        out["checkpoint_s"], out["checkpoint_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    finally:
        os.fsync = real_fsync
    out["fsyncs"], out["fsync_s"] = fsyncs[0], fsyncs[1]
    ckpt = tr.checkpointer.latest()
    out["checkpoint_mb"] = sum(os.path.getsize(os.path.join(ckpt, n)) for n in os.listdir(ckpt)) / 1e6
    return out


def profile(config: str, overrides: list[str], until) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(config, overrides + ["train.progress=false", "threads=1"])
        tr = Trainer(cfg, run_dir)
        prof = GapProfile(tr, until)
        tr._gap_profile = prof
        monkey: list = []
        prof.install(monkey)
        try:
            tr.run()
        except _Enough:
            pass
        finally:
            _restore(monkey)
        print(json.dumps({"partial": True, "gaps": prof.gaps, "count": prof.count}), flush=True)
        costs = _timed_stop_costs(tr)
    return {"gaps": prof.gaps, "count": prof.count, **costs}


def _marks(label: str, n: int):
    """Stop a profiled slice once ``label`` has had ``n`` stop-capable moments (its longest gap is then
    known: the gaps repeat, one per minibatch / token step / rollout batch)."""
    def until(tr: Trainer) -> bool:
        prof = tr._gap_profile
        return prof.count.get(label, 0) >= n

    return until


def profile_slices() -> list[tuple[str, str, list[str], object]]:
    return [
        # SeqGAN: one MLE epoch (157 steps; a max_steps cut would end MLE mid-epoch, without its
        # evaluation), the epoch-end evaluation on 10,000 samples, 150 minibatches of a D step on 10,000
        # samples (with the sampling of its 10,000 fakes), then the stop's costs with D in memory
        ("seqgan_oracle", SEQGAN, ["train.epochs=1", "adversarial.d_pretrain_steps=1"],
         _marks("D step (pre-training)", 150 + 21)),
        # SeqGAN: straight to round 1: a whole G step (sampling 64, 19 rollout batches of 64 x 16, scoring)
        ("seqgan_oracle", SEQGAN, ["train.epochs=0", "adversarial.d_pretrain_steps=0", "adversarial.rounds=1"],
         _marks("D step (round)", 2)),
        # RelGAN: 20 RMC MLE steps
        ("relgan_oracle", RELGAN, ["train.max_steps=20", "train.epochs=1"], lambda tr: tr.state["mle_step"] >= 20),
    ]


def part_gaps(out: list, which: list[int] | None = None) -> list[dict]:
    for i, (config_name, config, overrides, until) in enumerate(profile_slices()):
        if which is not None and i not in which:
            continue
        r = {"config": config_name, "overrides": overrides, **profile(config, overrides, until)}
        out.append(r)
        print(json.dumps(r), flush=True)
    return out


# --------------------------------------------------------------------------------------- end to end
_BREAKDOWN = re.compile(r"stopped on request .*")


def _wait(pred, proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"training ended before the signal: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    raise RuntimeError("the phase to interrupt never started")


def _metrics(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _has_latest(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, "checkpoints", "latest"))


def _logged(phase: str, step: int = 0):
    return lambda d: any(r.get("phase") == phase and r.get("step", 0) >= step for r in _metrics(d))


CLI_CASES = [
    # name, config, overrides, "phase started" predicate, seconds to wait after it
    # one whole epoch (157 steps), logged at its last step: the evaluation starts right after that line
    ("SeqGAN MLE epoch-end evaluation (10,000 samples)", SEQGAN, ["train.epochs=1", "train.log_every=157"],
     _logged("mle", 157), 1.0),
    ("SeqGAN D pre-training step (10,000 x 3 epochs)", SEQGAN, ["train.epochs=0"], _has_latest, 3.0),
    ("SeqGAN G step (64 x 16 rollouts)", SEQGAN, ["train.epochs=0", "adversarial.d_pretrain_steps=0"],
     _has_latest, 1.0),
    ("RelGAN RMC MLE step", RELGAN, [], _logged("mle", 10), 0.5),
]


# the phase each case must have stopped in (the engine's line names it): a case whose signal landed
# elsewhere (the phase ended first) is reported as such, not as a measurement of that phase
EXPECTED_PHASE = {"SeqGAN MLE epoch-end evaluation (10,000 samples)": "mle",
                  "SeqGAN D pre-training step (10,000 x 3 epochs)": "d_pretrain",
                  "SeqGAN G step (64 x 16 rollouts)": "adversarial", "RelGAN RMC MLE step": "mle"}


def part_cli() -> list[dict]:
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src"), "OMP_NUM_THREADS": "1"}
    results = []
    for name, config, overrides, started, delay in CLI_CASES:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = os.path.join(tmp, "run")
            cmd = [sys.executable, "-m", "llmgan.cli", "train", config, "--out", run_dir, "--threads", "1",
                   "--no-progress"]
            for o in ["train.log_every=10"] + overrides:  # a case's own overrides win
                cmd += ["--set", o]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                _wait(lambda: started(run_dir), proc, timeout=600)  # noqa: B023 - used at once
                time.sleep(delay)
                t0 = time.perf_counter()
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=120)
                elapsed = time.perf_counter() - t0
            finally:
                if proc.poll() is None:
                    proc.kill()
            found = _BREAKDOWN.findall(err)
            engine = found[-1] if found else " ".join(err.strip().splitlines()[-1:])
            results.append({"case": name, "returncode": proc.returncode, "exit_s": elapsed, "engine": engine,
                            "in_phase": f"in phase {EXPECTED_PHASE[name]};" in engine})
            print(json.dumps(results[-1]), flush=True)
    return results


def render(gaps: list[dict] | None, cli: list[dict] | None) -> str:
    lines = [f"Measured by `python benchmarks/sigterm_latency.py` on {cpu_model()} ({cpu_isa()}), "
             f"{os.cpu_count()} cores, 1 torch thread, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; "
             "the machine was shared with other jobs, so wall times are noisy (CPU seconds are not).", ""]
    if gaps:
        lines += ["Longest wait between a signal and the next moment a stop can be taken, per phase "
                  "(in-process, wall / CPU seconds of this process):", "",
                  "| config | phase | stop-capable moments | longest gap, wall s | its CPU s |",
                  "| --- | --- | --- | --- | --- |"]
        for r in gaps:
            for label, (wall, cpu) in sorted(r["gaps"].items()):
                lines.append(f"| {r['config']} | {label} | {r['count'].get(label, 0)} | {wall:.3f} | {cpu:.3f} |")
        lines += ["", "| config | snapshot of D + G before their first update, s | rollback, s | stop checkpoint, s "
                  "(CPU s) | fsyncs (their s) | checkpoint size, MB |", "| --- | --- | --- | --- | --- | --- |"]
        for r in gaps:
            lines.append(f"| {r['config']} | {r.get('snapshot_s', 0):.3f} | {r['rollback_s']:.3f} | "
                         f"{r['checkpoint_s']:.3f} ({r['checkpoint_cpu_s']:.3f}) | {r['fsyncs']} "
                         f"({r['fsync_s']:.3f}) | {r['checkpoint_mb']:.1f} |")
    if cli:
        lines += ["", "End to end, `llmgan train` given SIGTERM inside each phase:", "",
                  "| phase | stopped in that phase | exit status | signal to exit, s | engine's breakdown |",
                  "| --- | --- | --- | --- | --- |"]
        for r in cli:
            where = {True: "yes", False: "**no** (the phase ended first)", None: "not checked"}[r.get("in_phase")]
            lines.append(f"| {r['case']} | {where} | {r['returncode']} | {r['exit_s']:.2f} | {r['engine']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("gaps", "cli", "all"), default="all")
    ap.add_argument("--write-doc", action="store_true")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--slices", type=int, nargs="*", help="only these in-process slices (0: SeqGAN MLE, "
                    "evaluation and D step; 1: SeqGAN G step; 2: RelGAN MLE)")
    ap.add_argument("--render-log", help="render (and with --write-doc, write) the results lines of an earlier "
                    "run's stdout instead of measuring")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.render_log:
        with open(args.render_log, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.startswith("{")]
        gaps = [r for r in rows if "config" in r and "rollback_s" in r] or None
        cli = [r for r in rows if "case" in r] or None
    else:
        gaps = part_gaps([], args.slices) if args.part in ("gaps", "all") else None
        cli = part_cli() if args.part in ("cli", "all") else None
    body = render(gaps, cli)
    print(body)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"gaps": gaps, "cli": cli}, f, indent=1)
    if args.write_doc:
        update_section("sigterm-latency", body, DOC)
    ok = all(r["returncode"] == 143 and r["exit_s"] < 10 and r.get("in_phase") is not False for r in cli or [])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
