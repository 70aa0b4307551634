"""Oracle NLL of every adversarial algorithm on the exact SeqGAN oracle (length 20), each started from
the same MLE-pretrained generator, next to MLE continued for the same number of rounds (one MLE
epoch per round, as in SeqGAN's figure) and the published figures. Writes a table and a PNG of the
curves to docs/benchmarks.md / docs/img/.

Each algorithm runs its preset (configs/<name>_oracle.yaml, the paper's hyperparameters); --rounds,
--set and --budget-min cut the schedule to what the machine can afford, and the table says exactly
what ran. On a GPU, the full schedules are one command:

    python benchmarks/oracle_gan.py --mle-run runs/bench_mle_oracle --rounds 0 --device cuda --write

(--rounds 0 keeps each preset's own number of rounds.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PUBLISHED = {"mle": 9.038, "seqgan": 8.736, "rankgan": 8.247, "leakgan": 7.038, "relgan": 6.680}
# Generators with their own architecture and pre-training (LeakGAN's manager/worker reads D's features
# during MLE): they start from scratch instead of from the shared LSTM MLE run.
OWN_PRETRAINING = {"leakgan"}


def run_algorithm(name: str, mle_run: str, out: str, rounds: int, extra: list[str], threads: int, device: str,
                  budget_min: float | None) -> float:
    cfg = os.path.join(ROOT, "configs", "mle_oracle.yaml" if name == "mle" else f"{name}_oracle.yaml")
    sets = ["train.progress=false", f"threads={threads}", f"device={device}"]
    if name not in OWN_PRETRAINING:
        sets.insert(0, f"train.init_from={mle_run}")
    if name == "mle":
        sets += [f"train.epochs={rounds}", "train.eval_every=1" if rounds <= 20 else "train.eval_every=5"]
    else:
        sets += ["train.epochs=0"] + ([f"adversarial.rounds={rounds}"] if rounds else [])
    sets += extra
    if os.path.isdir(out):
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "llmgan.cli", "train", cfg, "--out", out]
    for s in sets:
        cmd += ["--set", s]
    print("$ " + " ".join(cmd[2:]), flush=True)
    t = time.perf_counter()
    try:
        subprocess.run(cmd, check=True, timeout=None if budget_min is None else budget_min * 60)
    except subprocess.TimeoutExpired:
        print(f"{name}: stopped at the {budget_min} min budget; its last evaluation is reported", flush=True)
    return time.perf_counter() - t


def curve(run_dir: str) -> list[tuple[int, float]]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    pts = []
    for line in open(path, encoding="utf-8"):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r.get("phase") == "eval" and "oracle_nll" in r:
            x = r["round"] if r.get("round") else r.get("epoch", 0)
            pts.append((int(x), float(r["oracle_nll"])))
    return pts


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mle-run", required=True, help="MLE-pretrained run (benchmarks/oracle_mle.py writes one)")
    p.add_argument("--algorithms", default="seqgan,maligan,rankgan,leakgan,relgan,gsgan,textgan,wgangp,scratchgan,gad")
    p.add_argument("--rounds", type=int, default=20, help="adversarial rounds per algorithm (0: the preset's own)")
    p.add_argument("--mle-rounds", type=int, default=None, help="MLE-continued epochs (default: --rounds)")
    p.add_argument("--set", action="append", default=[], metavar="[ALGO:]KEY=VALUE",
                   help="override for one algorithm (seqgan:adversarial.d_samples=5000) or, without ALGO:, for all")
    p.add_argument("--budget-min", type=float, default=None, help="wall-clock cap per algorithm")
    p.add_argument("--budget-min-for", action="append", default=[], metavar="ALGO=MIN",
                   help="a different wall-clock cap for one algorithm (leakgan=15)")
    p.add_argument("--reuse", default="", help="comma list of algorithms whose run in --out is kept, not rerun "
                   "(their row comes from the run's bench.json: wall time and overrides)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_oracle_gan"))
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    from _doc import command, machine, update_section

    os.makedirs(a.out, exist_ok=True)
    names = ["mle"] + [n for n in a.algorithms.split(",") if n]
    start = curve(a.mle_run)[-1][1] if curve(a.mle_run) else float("nan")
    rows, curves = [], {}
    for name in names:
        extra = [s for s in a.set if ":" not in s.split("=", 1)[0]]  # KEY=VALUE: every algorithm
        extra += [s.split(":", 1)[1] for s in a.set if ":" in s.split("=", 1)[0] and s.split(":", 1)[0] == name]
        rounds = (a.mle_rounds or a.rounds) if name == "mle" else a.rounds
        run_dir = os.path.join(a.out, name)
        budgets = dict(b.split("=", 1) for b in a.budget_min_for)
        budget = float(budgets[name]) if name in budgets else a.budget_min
        meta_path = os.path.join(run_dir, "bench.json")
        if name in a.reuse.split(","):
            if not os.path.isfile(meta_path):
                sys.exit(f"--reuse {name}: {meta_path} not found (run it first)")
            meta = json.load(open(meta_path, encoding="utf-8"))
            wall, extra = meta["wall_s"], meta["overrides"]
            print(f"{name}: reusing {run_dir}", flush=True)
        else:
            wall = run_algorithm(name, a.mle_run, run_dir, rounds, extra, a.threads, a.device, budget)
            with open(meta_path, "w", encoding="utf-8") as f:
                json.dump({"wall_s": wall, "overrides": extra, "budget_min": budget}, f)
        pts = curve(run_dir)
        curves[name] = pts
        done = pts[-1][0] if pts else 0
        rows.append((name, done, pts[-1][1] if pts else float("nan"), min(v for _, v in pts) if pts else float("nan"),
                     wall, "; ".join(extra)))
    png = os.path.join(ROOT, "docs", "img", "oracle_gan_curves.png")
    os.makedirs(os.path.dirname(png), exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # left: everything (collapse shows as a plunge below the oracle's own 5.75); right: the band around
    # the MLE start where the algorithms differ, rounds on a log axis (runs span 5 to 400 rounds)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, zoom in zip(axes, (False, True)):
        for name, pts in curves.items():
            if pts:
                ax.plot([max(x, 1) for x, _ in pts], [y for _, y in pts], marker="o", ms=3, label=name)
        ax.axhline(PUBLISHED["mle"], ls=":", c="gray", label="MLE published (9.038)")
        ax.set_xlabel("adversarial round (MLE: epoch after pre-training)")
        ax.set_ylabel("oracle NLL (lower is better)")
        if zoom:
            ax.set_xscale("log")
            ax.set_ylim(8.7, 9.5)
            ax.set_title("zoom: oracle NLL 8.7-9.5, log rounds")
        else:
            ax.set_title("Exact SeqGAN oracle, length 20: oracle NLL from the same MLE start")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    own = [n for n in names if n in OWN_PRETRAINING]
    body = ["## Adversarial algorithms on the exact SeqGAN oracle", "",
            f"Command: `{command()}`; machine: {machine()}. Every run starts from the MLE run "
            f"`{os.path.relpath(a.mle_run, ROOT)}` (oracle NLL {start:.3f} at its last evaluation)"
            + (f", except {', '.join(own)} (own generator and pre-training, from scratch)." if own else "."), "",
            "| algorithm | rounds run | final oracle NLL | best | published | wall | overrides |",
            "|---|---|---|---|---|---|---|"]
    for name, done, final, best, wall, extra in rows:
        pub = PUBLISHED.get(name)
        body.append(f"| {name} | {done} | {final:.3f} | {best:.3f} | {pub if pub else ''} | {wall / 60:.1f} min | "
                    f"{extra} |")
    body += ["", "![oracle NLL curves](img/oracle_gan_curves.png)"]
    text = "\n".join(body)
    print(text)
    if a.write:
        update_section("oracle-gan", text)


if __name__ == "__main__":
    main()
