"""Time of adversarial rounds of any preset (no MLE, no D pre-training), with the G/D time split.

    python benchmarks/bench_round.py --config configs/relgan_oracle.yaml --rounds 3 [--threads 1] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(__file__))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--bar", type=float, default=None, help="bar in seconds per round, shown in the table")
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from _doc import command, machine, update_section
    from llmgan.config import load_config
    from llmgan.training.engine import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["train.epochs=0", "adversarial.d_pretrain_steps=0", f"adversarial.rounds={a.rounds}",
                     "adversarial.eval_every=100000", "adversarial.checkpoint_every=100000",
                     "eval.n_samples=500", "train.progress=false", f"threads={a.threads}", *a.set]
        cfg = load_config(a.config, overrides)
        trainer = Trainer(cfg, tmp)
        trainer.run()
        recs = [json.loads(line) for line in open(os.path.join(tmp, "metrics.jsonl"))]
    rounds = [r for r in recs if r["phase"] == "adversarial"]
    g = statistics.median(r["time_g_s"] for r in rounds)
    d = statistics.median(r["time_d_s"] for r in rounds)
    name = cfg.adversarial.algorithm
    prec = trainer.precision  # what ran (bf16 falls back to fp32 on a CPU without it), not what was asked
    body = [f"## {name}: adversarial round time ({os.path.basename(a.config)}, {prec})", "",
            f"Command: `{command()}`; machine: {machine()}.", "",
            f"Generator `{cfg.generator.name}` {cfg.generator.kwargs}, discriminator `{cfg.discriminator.name}`; "
            f"{cfg.adversarial.g_steps} G step(s) + {cfg.adversarial.d_steps} D step(s) per round, batch "
            f"{cfg.adversarial.g_batch_size}. Median of {len(rounds)} rounds.", "",
            "| round | G steps | D steps | bar |", "|---|---|---|---|",
            f"| {g + d:.1f} s | {g:.1f} s | {d:.1f} s | {'' if a.bar is None else f'<= {a.bar:g} s'} |"]
    text = "\n".join(body)
    print(text)
    if a.write:
        update_section(f"round-{name}-{prec}", text)


if __name__ == "__main__":
    main()
