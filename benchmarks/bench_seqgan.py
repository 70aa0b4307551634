"""SeqGAN speed on the exact oracle setup, 1 torch thread by default:

* the Monte-Carlo rollout step for one batch (64 sequences x 16 rollouts, paper CNN discriminator):
  llmgan's batched "staircase" rollouts vs the naive per-rollout, per-position loop
  (llmgan.rewards.naive_mc_rollout_rewards, the reference kept for this comparison), same run;
* one whole adversarial round of the paper's schedule (1 G step + 5 x (10k fresh samples + 3 D
  epochs on 20k sequences)) through the real engine, with its time split, in fp32 and bf16 autocast.

    python benchmarks/bench_seqgan.py [--threads 1] [--precisions fp32,bf16] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))


def rollout_step(policy, D, tokens, k, naive: bool, dtype=None):
    from llmgan.rewards import mc_rollout_rewards, naive_mc_rollout_rewards, rollout_completions

    def score(x):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            return torch.sigmoid(D(x).float())

    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    if naive:
        naive_mc_rollout_rewards(policy, score, tokens, k, g)
        return time.perf_counter() - t, None
    rollout_completions(policy, tokens, k, g)
    t_sample = time.perf_counter() - t
    mc_rollout_rewards(policy, score, tokens, k, torch.Generator().manual_seed(0))
    return time.perf_counter() - t - t_sample, t_sample  # whole step (sampling + scoring), sampling alone


def seqgan_round(precision: str, threads: int) -> dict:
    from llmgan.config import load_config
    from llmgan.training.engine import Trainer

    root = os.path.join(os.path.dirname(__file__), "..")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(os.path.join(root, "configs", "seqgan_oracle.yaml"), [
            "train.epochs=0", "adversarial.d_pretrain_steps=0", "adversarial.rounds=1", "adversarial.eval_every=1000",
            f"train.precision={precision}", "train.progress=false", "eval.n_samples=1000", f"threads={threads}"])
        t = time.perf_counter()
        Trainer(cfg, tmp).run()
        total = time.perf_counter() - t
        recs = [json.loads(line) for line in open(os.path.join(tmp, "metrics.jsonl"))]
    r = [x for x in recs if x["phase"] == "adversarial"][0]
    return {"round": r["time_g_s"] + r["time_d_s"], "g": r["time_g_s"], "rollout": r["time_rollout_s"],
            "sample": r["time_sample_s"], "g_update": r["time_g_update_s"], "d": r["time_d_s"], "run": total}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from _doc import command, machine, update_section
    from llmgan.models.discriminators import build_discriminator
    from llmgan.models.generators.oracle import load_seqgan_oracle

    torch.manual_seed(0)
    policy = load_seqgan_oracle()  # same shapes as SeqGAN's generator (LSTM 32/32, V=5000)
    D = build_discriminator("cnn", vocab_size=5000).eval()
    tokens = policy.sample(64, 20, generator=torch.Generator().manual_seed(1)).tokens
    rows = []
    for prec in a.precisions.split(","):
        step, samp = rollout_step(policy, D, tokens, 16, naive=False, dtype=prec)
        rows.append((f"rollout step, batched ({prec} D)", step, f"of which sampling {samp:.2f} s"))
    naive = None
    if not a.skip_naive:
        naive, _ = rollout_step(policy, D, tokens, 16, naive=True, dtype="fp32")
        rows.append(("rollout step, naive loop over rollouts and positions (fp32 D)", naive, ""))
    for n, t, note in rows:
        print(f"{n}: {t:.2f} s {note}", flush=True)
    rounds = {}
    for prec in a.precisions.split(","):
        rounds[prec] = seqgan_round(prec, a.threads)
        print(prec, rounds[prec], flush=True)
    body = ["## SeqGAN: rollout step and adversarial round (exact oracle setup)", "",
            f"Command: `{command()}`; machine: {machine()}.", "",
            "Rollout step: one batch of 64 sequences x 16 rollouts, every prefix, scored by the paper's CNN "
            "discriminator (bar: <= 4 s; TextGAN-PyTorch measured here: 41 s).", "",
            "| what | time | note |", "|---|---|---|"]
    body += [f"| {n} | {t:.2f} s | {note} |" for n, t, note in rows]
    if naive is not None:
        fp32 = rows[0][1]
        body += ["", f"Batched vs naive (fp32): **{naive / fp32:.1f}x** faster (bar: >= 5x)."]
    body += ["", "One adversarial round, paper schedule (1 G step with 16 rollouts; 5 x (10k fresh samples + "
             "3 D epochs over 10k real + 10k fake)); bar: <= 200 s fp32; TextGAN-PyTorch measured here: ~472 s.",
             "",
             "| precision | round | G step (sampling / rollouts+scoring / update) | D (5 refreshes) |",
             "|---|---|---|---|"]
    for prec, r in rounds.items():
        body.append(f"| {prec} | {r['round']:.1f} s | {r['g']:.1f} s ({r['sample']:.2f} / {r['rollout']:.1f} / "
                    f"{r['g_update']:.2f}) | {r['d']:.1f} s |")
    text = "\n".join(body)
    print(text)
    if a.write:
        update_section("seqgan-speed", text)


if __name__ == "__main__":
    main()
