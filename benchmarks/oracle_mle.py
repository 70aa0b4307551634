"""MLE on the full SeqGAN setup (exact oracle, 10,000 samples, LSTM 32/32, batch 64, Adam 0.01):
oracle NLL every 5 epochs next to the original SeqGAN log, and training tokens/second.

    python benchmarks/oracle_mle.py [--epochs 120] [--threads 1] [--out runs/bench_mle] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.join(os.path.dirname(__file__), "..")
REFERENCE = os.path.join(ROOT, "..", "shared", "data", "seqgan_oracle", "seqgan_reference_log.txt")


def reference_mle() -> dict[int, float]:
    if not os.path.isfile(REFERENCE):
        return {}
    out, in_pre = {}, True
    for line in open(REFERENCE, encoding="utf-8"):
        if line.startswith("adversarial"):
            in_pre = False
        m = re.match(r"epoch:\s+(\d+)\s+nll:\s+([\d.]+)", line)
        if m and in_pre:
            out[int(m.group(1))] = float(m.group(2))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_mle_oracle"))
    p.add_argument("--write", action="store_true")
    p.add_argument("--reuse", action="store_true", help="report an existing --out run instead of training")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from _doc import command, machine, update_section
    from llmgan.config import load_config
    from llmgan.training.engine import Trainer

    if a.reuse:
        first = last = None
        for line in open(os.path.join(a.out, "metrics.jsonl")):
            stamp = json.loads(line)["time"]
            first, last = first or stamp, stamp
        wall = last - first
    else:
        if os.path.isdir(a.out):
            shutil.rmtree(a.out)
        cfg = load_config(os.path.join(ROOT, "configs", "mle_oracle.yaml"),
                          [f"train.epochs={a.epochs}", "train.progress=false", f"threads={a.threads}"])
        t = time.perf_counter()
        Trainer(cfg, a.out).run()
        wall = time.perf_counter() - t
    recs = [json.loads(line) for line in open(os.path.join(a.out, "metrics.jsonl"))]
    evals = {r["epoch"]: r["oracle_nll"] for r in recs if r["phase"] == "eval"}
    tps = [r["tokens_per_s"] for r in recs if r["phase"] == "mle" and "tokens_per_s" in r]
    ref = reference_mle()
    body = ["## MLE on the SeqGAN oracle: oracle NLL per epoch vs the original SeqGAN log", "",
            f"Command: `python benchmarks/oracle_mle.py --epochs {a.epochs} --threads {a.threads} "
            f"--out {os.path.relpath(a.out, ROOT)}` (table written by `{command()}`); machine: {machine()}. "
            f"{max(evals) if evals else 0} epochs run (the paper's schedule: 120); "
            f"wall time {wall / 60:.1f} min including evaluation (10,000 samples every 5 epochs); "
            f"training throughput median {sorted(tps)[len(tps) // 2]:,.0f} tokens/s.", "",
            "SeqGAN's log counts epochs from 0 before training; ours after each epoch, so our epoch e "
            "sits beside their e (both have seen e or e+1 epochs).", "",
            "| epoch | llmgan oracle NLL | SeqGAN log |", "|---|---|---|"]
    for e in sorted(evals):
        body.append(f"| {e} | {evals[e]:.3f} | {ref.get(e, float('nan')):.3f} |" if e in ref
                    else f"| {e} | {evals[e]:.3f} | |")
    body += ["", "Published MLE figure (SeqGAN paper, Table 1): 9.038."]
    text = "\n".join(body)
    print(text)
    if a.write:
        update_section("mle-oracle", text)


if __name__ == "__main__":
    main()
