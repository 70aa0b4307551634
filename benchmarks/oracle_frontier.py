"""Every algorithm on the oracle's quality–diversity plane beside temperature-tuned MLE.

    python benchmarks/oracle_frontier.py [--mle-epochs 10] [--seeds 0,1,2] [--budget-min 1]
        [--temperatures 0.6,0.7,0.8,0.9,1.0,1.1] [--n-samples 1000] [--run NAME=RUN_DIR ...] [--write]

1. MLE (configs/mle_oracle.yaml) for ``--mle-epochs`` epochs, once per seed in ``--seeds``;
2. every algorithm in ``--algorithms`` from MLE seed 0 (LeakGAN from scratch: own pre-training), each
   capped at ``--budget-min`` of wall time (its last checkpoint is swept);
3. ``--run NAME=RUN_DIR``: further runs to place (e.g. a long ``benchmarks/reproduce.py`` run);
4. each run swept over the temperatures (``llmgan sweep``'s definition: NLL_oracle of samples, NLL_test
   of the temperature-scaled model, the same sampling seed at every temperature);
5. the frontier gap of every point against MLE seed 0's Pareto curve (src/llmgan/frontier.py), with
   MLE seeds 1.. giving the seed-noise band.

``--write`` writes ``benchmarks/results/oracle_frontier.csv``, ``docs/img/oracle_frontier.png`` and the
``oracle-frontier`` section of docs/benchmarks.md. ``--reuse`` keeps runs already in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# the in-process sweeps must use this tree's llmgan, as the training subprocesses do (PYTHONPATH below):
# a code snapshot run from the venv of a moving checkout once crashed mid-run on the other tree's code
sys.path.insert(0, os.path.join(ROOT, "src"))
CSV = os.path.join(ROOT, "benchmarks", "results", "oracle_frontier.csv")
PNG = os.path.join(ROOT, "docs", "img", "oracle_frontier.png")
ALGORITHMS = "seqgan,maligan,rankgan,leakgan,relgan,gsgan,textgan,wgangp,scratchgan,gad"
# Cuts that let one round fit a one-minute budget (the same kind of cuts as the oracle-gan table);
# every cut is printed in the docs section.
SHORT = {
    "seqgan": ["adversarial.d_pretrain_steps=2", "adversarial.d_samples=2000", "adversarial.d_steps=1",
               "adversarial.d_epochs=1"],
    "rankgan": ["adversarial.d_pretrain_steps=1", "adversarial.d_samples=2000", "adversarial.d_steps=1",
                "adversarial.params.d_pretrain_epochs=1"],
    "leakgan": ["adversarial.d_pretrain_steps=1", "adversarial.d_samples=2000", "adversarial.d_steps=1",
                "adversarial.params.pretrain_mle_every=1", "adversarial.params.pretrain_mle_steps=300"],
    "maligan": ["adversarial.d_samples=2000"],
    "gad": ["adversarial.d_pretrain_steps=2", "adversarial.d_samples=2000"],
    "relgan": ["generator.name=lstm", "generator.kwargs={embed_dim: 32, hidden_dim: 32}"],
    "textgan": ["adversarial.d_pretrain_steps=5"],
}


def train(cfg: str, out: str, sets: list[str], threads: int, budget_min: float | None,
          resume: bool = False) -> float:
    cmd = [sys.executable, "-m", "llmgan.cli", "train", os.path.join(ROOT, "configs", cfg), "--out", out,
           "--threads", str(threads), "--device", "cpu", "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    if resume:
        cmd.append("--resume")
    print("$ llmgan train " + " ".join(cmd[4:]), flush=True)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    try:
        subprocess.run(cmd, check=True, env=env, timeout=None if budget_min is None else budget_min * 60)
    except subprocess.TimeoutExpired:
        print(f"{out}: stopped at its {budget_min} min budget; its last checkpoint is swept", flush=True)
    except subprocess.CalledProcessError as e:  # one failing algorithm must not lose the others' points
        print(f"{out}: llmgan train failed (exit {e.returncode}); see its output above", flush=True)
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_frontier"))
    p.add_argument("--mle-epochs", type=int, default=10)
    p.add_argument("--mle-run", default=None, metavar="RUN_DIR",
                   help="use this finished MLE run as seed 0 (e.g. benchmarks/reproduce.py mle's 120 epochs; "
                        "its epochs must equal --mle-epochs) instead of training one")
    p.add_argument("--seeds", default="0,1,2", help="MLE seeds (seed 0 is the reference curve)")
    p.add_argument("--algorithms", default=ALGORITHMS)
    p.add_argument("--budget-min", type=float, default=1.0)
    p.add_argument("--temperatures", default="0.6,0.7,0.8,0.9,1.0,1.1")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR", help="another run to place")
    p.add_argument("--reuse", action="store_true", help="keep runs already in --out")
    p.add_argument("--only", default=None, metavar="NAMES",
                   help="sweep only these runs (comma-separated names); the others' points are read back from "
                        "oracle_frontier.csv, where an earlier invocation wrote them at the same temperatures "
                        "(checked) and --n-samples (the CSV does not record it: keep it the same)")
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    from llmgan import frontier
    from llmgan.sweep import parse_temperatures, sweep

    temps = parse_temperatures(a.temperatures)
    seeds = [int(s) for s in a.seeds.split(",") if s]
    os.makedirs(a.out, exist_ok=True)
    runs: list[tuple[str, str, int, str]] = []  # (name, algorithm, seed, run_dir)
    walls: dict[str, float] = {}
    common = ["eval.n_samples=1000", "train.checkpoint_every=1"]
    for s in seeds:
        d = os.path.join(a.out, f"mle_s{s}")
        if s == seeds[0] and a.mle_run:
            d = os.path.abspath(a.mle_run)
            if not os.path.isfile(os.path.join(d, "checkpoints", "latest")):
                p.error(f"--mle-run: {d} has no checkpoint")
        elif not (a.reuse and _finished(d)):  # an MLE run stopped part-way is resumed, not redone
            resume = a.reuse and os.path.isfile(os.path.join(d, "checkpoints", "latest"))
            walls[d] = train("mle_oracle.yaml", d, [f"seed={s}", f"train.epochs={a.mle_epochs}",
                                                    "train.eval_every=5", *common], a.threads, None, resume)
        runs.append((f"mle_s{s}", "mle", s, d))
    mle0 = runs[0][3]
    if a.mle_run:  # a long run may still be training when this starts: GANs start from its final weights
        while not _finished(mle0):
            print(f"waiting for {mle0} to finish", flush=True)
            time.sleep(60)
    for algo in [x for x in a.algorithms.split(",") if x]:
        d = os.path.join(a.out, algo)
        if not (a.reuse and os.path.isfile(os.path.join(d, "checkpoints", "latest"))):
            init = [] if algo == "leakgan" else [f"train.init_from={mle0}"]
            sets = [*init, "train.epochs=0", *common, "adversarial.checkpoint_every=1",
                    "adversarial.eval_every=1", *SHORT.get(algo, [])]
            if os.path.isdir(d):
                import shutil

                shutil.rmtree(d)
            walls[d] = train(f"{algo}_oracle.yaml", d, sets, a.threads, a.budget_min)
        if os.path.isfile(os.path.join(d, "checkpoints", "latest")):
            runs.append((algo, algo, 0, d))
        else:
            print(f"{algo}: no checkpoint within its budget; left out", flush=True)
    for spec in a.run:
        name, _, d = spec.partition("=")
        runs.append((name, name.split("_")[0], 0, d))
    only = set(a.only.split(",")) if a.only else None
    unknown = sorted(only - {r[0] for r in runs}) if only else []
    if unknown:
        p.error(f"--only: no run named {', '.join(unknown)}")
    earlier = frontier.read_csv(CSV) if only and os.path.isfile(CSV) else []
    rows = []
    for name, algo, seed, d in runs:
        if only and name not in only:
            kept = [r for r in earlier if r["run"] == name]
            if sorted(r["temperature"] for r in kept) != sorted(temps):
                p.error(f"--only: {CSV} has no points of {name} at temperatures {a.temperatures}: sweep it too")
            rows += kept
            continue
        for r in sweep([d], temps, n_samples=a.n_samples, seed=0):
            rows.append({"run": name, "algorithm": algo, "seed": seed, "temperature": r["temperature"],
                         "oracle_nll": r["oracle_nll"], "test_nll": r["test_nll"]})
        print(f"swept {name}", flush=True)
    ref = [r for r in rows if r["run"] == runs[0][0]]
    others = [r for r in rows if r["run"] != runs[0][0]]
    noise = frontier.noise_band([r["gap"] for r in frontier.frontier_gaps(ref, [x for x in others
                                 if x["algorithm"] == "mle"])])
    table = frontier.gap_markdown(ref, others, noise)
    print(table)
    if a.write:
        from _doc import command, machine, update_section

        os.makedirs(os.path.dirname(CSV), exist_ok=True)
        frontier.merge_csv(rows, CSV)  # other benchmarks' points (density_ratio.py, seqgan_sir.sh) stay
        os.makedirs(os.path.dirname(PNG), exist_ok=True)
        frontier.plot_frontier(ref, others, PNG, title=f"Oracle frontier ({a.n_samples} samples per point; "
                               f"MLE {a.mle_epochs} epochs; adversarial runs {a.budget_min} min each)")
        meta = {os.path.basename(d): round(w / 60, 1) for d, w in walls.items()} or "none trained here (--reuse)"
        cuts = "; ".join(f"{k}: {', '.join(v)}" for k, v in SHORT.items() if k in a.algorithms.split(",")) or "none"
        mle_note = f"; seed {seeds[0]} is the run {a.mle_run}" if a.mle_run else ""
        swept_note = (f" Swept by this command: {', '.join(sorted(only))}; the other runs' points are those an "
                      "earlier invocation wrote to the CSV at the same temperatures and sample count.") if only else ""
        body = f"""## Oracle frontier: every algorithm against temperature-tuned MLE

Command: `{command()}`; machine: {machine()}, shared with other jobs (timings noisy).
MLE: {a.mle_epochs} epochs per seed (seeds {a.seeds}{mle_note}); each adversarial run starts from MLE seed 0 (LeakGAN
from scratch) and is stopped after {a.budget_min} min of wall time (wall minutes: {json.dumps(meta)});
cuts for one-minute rounds: {cuts}. Each point: {a.n_samples} samples at one temperature (same sampling
seed at every temperature). Points: `benchmarks/results/oracle_frontier.csv`.{swept_note}

Gap = the run's NLL_oracle minus MLE seed 0's Pareto curve at the same NLL_test (negative: better than
temperature-tuned MLE); "outside" = its NLL_test lies outside MLE's range. Seed-noise band: ±{noise:.3f}
(the largest |gap| of MLE's other seeds against seed 0's curve).

{table}

![oracle frontier](img/oracle_frontier.png)
"""
        update_section("oracle-frontier", body)
    return 0


def _records(run_dir: str) -> list[dict]:
    from llmgan.fileio import read_jsonl_records

    return read_jsonl_records(os.path.join(run_dir, "metrics.jsonl"))


def _finished(run_dir: str) -> bool:
    return any(r.get("phase") == "final" for r in _records(run_dir))


if __name__ == "__main__":
    sys.exit(main())
