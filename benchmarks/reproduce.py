"""The papers' oracle schedules as resumable long runs, logged one JSON line per evaluation.

    python benchmarks/reproduce.py NAME [--threads N] [--device D] [--run-dir DIR] [--results FILE]
    python benchmarks/reproduce.py --list
    python benchmarks/reproduce.py --report          # table + curves into docs/benchmarks.md

NAME is one of ``mle``, ``seqgan``, ``rankgan``, ``leakgan``, ``relgan`` (RMC generator, Tmax 1),
``relgan_t100`` (the same with the script's beta_max 100), ``relgan_lstm`` (RelGAN with an LSTM
generator). Each runs ``llmgan train`` on its preset with the paper's schedule, checkpointing as it
goes; run the same command again and it continues from the run's latest checkpoint (``--resume``, exact).
While training runs, every new evaluation in the run's ``metrics.jsonl`` is appended to
``benchmarks/results/reproduce.jsonl`` as

    {"name", "seed", "phase", "step", "epoch", "round", "oracle_nll", "test_nll", "valid_nll",
     "wall_s", "precision", "threads", "cpu", "device", "schedule", "command"}

(``test_nll`` is only measured at the final evaluation; the evaluations during training measure the
validation split, ``valid_nll``). ``wall_s`` is training wall time summed over the sessions that ran
it (gaps between a stop and its resume are not counted). Lines already in the results file (same
name, seed, phase, step) are not written twice, so a resumed run just continues the record.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from _doc import cpu_model
from llmgan.fileio import read_jsonl_records

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "reproduce.jsonl")
SESSIONS = "reproduce_sessions.json"  # in the run directory: start times of the sessions that ran it


@dataclass(frozen=True)
class Schedule:
    config: str  # preset under configs/
    overrides: tuple[str, ...] = ()
    source: str = ""  # where the schedule comes from (checked against the authors' code)
    mle_epochs: int = 0
    rounds: int = 0
    extra: dict = field(default_factory=dict)


# RelGAN's preset checkpoints every 10 epochs / 100 steps (~30 min each on one CPU thread); a long run
# killed in between would lose that much, so it saves every 2 epochs / 20 steps (saving changes no result).
RELGAN_CKPT = ("train.checkpoint_every=2", "adversarial.checkpoint_every=20")

SCHEDULES: dict[str, Schedule] = {
    "mle": Schedule(
        "mle_oracle.yaml", (), "SeqGAN's MLE baseline: LSTM 32/32, Adam 1e-2, batch 64, 120 epochs",
        mle_epochs=120),
    "seqgan": Schedule(
        "seqgan_oracle.yaml", (),
        "LantaoYu/SeqGAN sequence_gan.py: 120 MLE epochs, 50 D pre-training steps x 3 epochs, 200 rounds "
        "of 1 G step (16 rollouts) + 5 x (10,000 fresh samples, 3 D epochs)", mle_epochs=120, rounds=200),
    "rankgan": Schedule(
        "rankgan_oracle.yaml", (), "RankGAN (Lin et al. 2017) as its paper / preset", mle_epochs=120, rounds=200),
    "leakgan": Schedule(
        "leakgan_oracle.yaml", (),
        "CR-Gjx/LeakGAN Synthetic Data: 10 interleaved pre-training cycles, then 800 adversarial iterations",
        mle_epochs=0, rounds=800),
    "relgan": Schedule(
        "relgan_oracle.yaml", ("adversarial.params.max_temperature=1.0", *RELGAN_CKPT),
        "weilinie/RelGAN oracle_relgan.py + oracle_train.py: RMC (1 slot, 2 heads x 256), 150 MLE epochs "
        "(Adam 1e-2, batch 64, clip 5), 3,000 steps of 1 G + 5 D (Adam 1e-4, RSGAN, clip 5), exp schedule "
        "with N = 5000; Tmax 1 for length 20 (the author, RelGAN issue #22)", mle_epochs=150, rounds=3000),
    "relgan_t100": Schedule(
        "relgan_oracle.yaml", RELGAN_CKPT,
        "as relgan with the script's largest beta_max, 100 (3,000 steps reach 100 ** 0.6)",
        mle_epochs=150, rounds=3000),
    "relgan_lstm": Schedule(
        "relgan_oracle.yaml",
        ("generator.name=lstm", "generator.kwargs={embed_dim: 32, hidden_dim: 32}",
         "adversarial.params.max_temperature=1.0", *RELGAN_CKPT),
        "RelGAN's lstm_vanilla jobs: LSTM generator (hidden 32) under RelGAN's schedule, Tmax 1",
        mle_epochs=150, rounds=3000),
}


def train_command(name: str, run_dir: str, threads: int, device: str, seed: int,
                  extra: list[str] | None = None, resume: bool = False) -> list[str]:
    s = SCHEDULES[name]
    cmd = [sys.executable, "-m", "llmgan.cli", "train", os.path.join(ROOT, "configs", s.config),
           "--out", run_dir, "--threads", str(threads), "--device", device, "--no-progress",
           "--set", f"seed={seed}"]
    for o in (*s.overrides, *(extra or [])):
        cmd += ["--set", o]
    if resume:
        cmd.append("--resume")
    return cmd


def wall_times(records: list[dict], session_starts: list[float]) -> list[float]:
    """Training wall seconds at each record: time since its session's start plus the whole length of
    every earlier session (a session ends at its last record; the gap to the next start is idle)."""
    starts = sorted(session_starts) or [min((r["time"] for r in records), default=0.0)]
    ends: list[float] = []
    for i, s0 in enumerate(starts):
        nxt = starts[i + 1] if i + 1 < len(starts) else float("inf")
        inside = [r["time"] for r in records if s0 <= r["time"] < nxt]
        ends.append(max(inside, default=s0))
    out = []
    for r in records:
        t = r["time"]
        idx = max([i for i, s0 in enumerate(starts) if s0 <= t], default=0)
        out.append(sum(ends[i] - starts[i] for i in range(idx)) + (t - starts[idx]))
    return out


def result_lines(name: str, seed: int, run_dir: str, threads: int, device: str, command: str,
                 precision: str = "fp32", label: str | None = None) -> list[dict]:
    """Every evaluation (phase eval / final) in the run's metrics.jsonl as a reproduce.jsonl line."""
    records = read_jsonl_records(os.path.join(run_dir, "metrics.jsonl"))
    records = [r for r in records if "time" in r and "phase" in r]
    sess_path = os.path.join(run_dir, SESSIONS)
    sessions = json.load(open(sess_path, encoding="utf-8")) if os.path.isfile(sess_path) else []
    walls = wall_times(records, sessions)
    s = SCHEDULES[name]
    cpu = cpu_model()
    out = []
    for r, w in zip(records, walls):
        if r["phase"] not in ("eval", "final"):
            continue
        rnd = int(r.get("round", 0) or 0)
        out.append({
            "name": label or name, "seed": seed, "phase": ("adversarial" if rnd > 0 else "mle") if r["phase"] == "eval"
            else "final", "step": r["step"], "epoch": r.get("epoch"), "round": rnd,
            "oracle_nll": r.get("oracle_nll"), "test_nll": r.get("test_nll"), "valid_nll": r.get("valid_nll"),
            "wall_s": round(w, 1), "precision": precision, "threads": threads, "cpu": cpu, "device": device,
            "schedule": {"mle_epochs": s.mle_epochs, "rounds": s.rounds}, "command": command,
        })
    return out


def sync(lines: list[dict], results: str) -> int:
    """Append the lines not yet in the results file (key: name, seed, phase, step); returns how many."""
    have = {(r.get("name"), r.get("seed"), r.get("phase"), r.get("step")) for r in read_jsonl_records(results)}
    new = [ln for ln in lines if (ln["name"], ln["seed"], ln["phase"], ln["step"]) not in have]
    if new:
        os.makedirs(os.path.dirname(results) or ".", exist_ok=True)
        with open(results, "a", encoding="utf-8") as f:
            for ln in new:
                f.write(json.dumps(ln) + "\n")
    return len(new)


def run(args: argparse.Namespace) -> int:
    name = args.name
    run_dir = os.path.abspath(args.run_dir or os.path.join(ROOT, "runs", "reproduce", f"{name}_s{args.seed}"))
    os.makedirs(run_dir, exist_ok=True)
    resume = os.path.isfile(os.path.join(run_dir, "checkpoints", "latest"))
    cmd = train_command(name, run_dir, args.threads, args.device, args.seed, args.set, resume)
    label = args.label or name
    shown = ("python benchmarks/reproduce.py " + name + f" --threads {args.threads} --device {args.device}"
             + (f" --seed {args.seed}" if args.seed else "") + "".join(f" --set {o}" for o in args.set or [])
             + (f" --label {label}" if args.label else ""))
    sess_path = os.path.join(run_dir, SESSIONS)
    sessions = json.load(open(sess_path, encoding="utf-8")) if os.path.isfile(sess_path) else []
    sessions.append(time.time())
    with open(sess_path, "w", encoding="utf-8") as f:
        json.dump(sessions, f)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print(("resuming " if resume else "starting ") + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)

    def stop(signum, _frame):  # `timeout` / kill: stop training too (its checkpoints stay), keep the record
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        sync(result_lines(name, args.seed, run_dir, args.threads, args.device, shown, label=label), args.results)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        try:
            rc = proc.wait(timeout=args.poll)
        except subprocess.TimeoutExpired:
            rc = None
        sync(result_lines(name, args.seed, run_dir, args.threads, args.device, shown, label=label), args.results)
        if rc is not None:
            return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", choices=sorted(SCHEDULES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=None, help="run directory (default runs/reproduce/NAME_sSEED)")
    p.add_argument("--results", default=RESULTS)
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--label", default=None,
                   help="the name its result lines carry (default NAME): a run with a changed schedule, e.g. "
                        "one started by train.init_from from another run's checkpoint, gets its own label")
    p.add_argument("--poll", type=float, default=60.0, help="seconds between copies of new evaluations")
    p.add_argument("--list", action="store_true", help="print every NAME with its schedule")
    p.add_argument("--report", action="store_true", help="write the table and curves into docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.list:
        for n, s in SCHEDULES.items():
            print(f"{n:12s} {s.source}")
        return 0
    if args.report:
        import reproduce_report

        reproduce_report.write(args.results)
        return 0
    if args.name is None:
        p.error("NAME is required (or --list / --report)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
