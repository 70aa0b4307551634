"""Watermark radioactivity (Sander et al. 2024) on the SeqGAN oracle: does a student trained by SFT on a
watermarked teacher's samples carry the watermark into its own, unwatermarked sampling?

Teacher: the exact SeqGAN oracle sampling with the watermark (gamma 0.25, previous-token context, delta
as given). Students: fresh LSTMs (embedding 32, hidden 32, the oracle's shape) trained by MLE on the
teacher's watermarked samples, and a control trained the same way on the teacher's plain samples. Each
student then samples without any watermark; the key scores those samples.

    .venv/bin/python benchmarks/bench_radioactivity.py --n-train 5000 --epochs 8 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--delta", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from _doc import command, machine, update_section
    from llmgan.models.generators import LSTMGenerator, load_seqgan_oracle, oracle_nll
    from llmgan.models.watermark import Watermark

    t0 = time.time()
    oracle = load_seqgan_oracle()
    wm = Watermark(bytes(range(32)), gamma=0.25, delta=args.delta)

    def student(data: torch.Tensor, seed: int) -> LSTMGenerator:
        torch.manual_seed(seed)
        g = LSTMGenerator(dataclasses.replace(oracle.cfg))  # the oracle's architecture, fresh init
        for p in g.parameters():
            torch.nn.init.normal_(p, 0.0, 0.1)
        g.requires_grad_(True)
        g.train()
        opt = torch.optim.Adam(g.parameters(), lr=0.01)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(args.epochs):
            perm = torch.randperm(data.size(0), generator=gen)
            for i in range(0, data.size(0), 64):
                loss = g.nll(data[perm[i:i + 64]])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return g.eval()

    def score(tokens: torch.Tensor) -> tuple[float, float, float]:
        res = wm.detect(tokens.tolist())
        z = np.array([r["z"] for r in res["per_text"]])
        return res["z"], float(np.mean(z)), float((z >= 2.3263).mean())

    teacher = {
        "watermarked": oracle.sample(args.n_train, 20, generator=torch.Generator().manual_seed(0), watermark=wm).tokens,
        "plain": oracle.sample(args.n_train, 20, generator=torch.Generator().manual_seed(0)).tokens,
    }
    rows = []
    for name, data in teacher.items():
        rows.append((f"teacher samples ({name}, training data)", *score(data[: args.n_eval]), oracle_nll(oracle, data)))
        g = student(data, seed=1)
        with torch.no_grad():
            s = g.sample(args.n_eval, 20, generator=torch.Generator().manual_seed(2)).tokens
        rows.append((f"SFT student trained on {name} samples, its own plain sampling", *score(s),
                     oracle_nll(oracle, s)))
    minutes = (time.time() - t0) / 60
    for r in rows:
        print(f"{r[0]}: corpus z {r[1]:.1f}, mean per-text z {r[2]:.2f}, flagged at 1% FPR {r[3]:.3f}, "
              f"oracle NLL {r[4]:.3f}")
    if args.no_doc:
        return 0
    body = [
        "## Watermark radioactivity: SFT on a watermarked teacher (SeqGAN oracle)", "",
        f"Command: `{command()}`; machine: {machine()}. Teacher: the exact SeqGAN oracle sampling "
        f"{args.n_train} texts of 20 tokens with the watermark (gamma 0.25, previous-token context, delta "
        f"{args.delta}) and, for the control, without. Students: fresh LSTMs of the oracle's shape trained by "
        f"MLE ({args.epochs} epochs, Adam 0.01, batch 64) on those texts; each student then samples "
        f"{args.n_eval} texts WITHOUT the watermark, scored with the key (repeated pairs once).", "",
        "| texts scored | corpus z | mean per-text z | flagged at z >= 2.326 (1% FPR) | oracle NLL |",
        "|---|---:|---:|---:|---:|",
    ]
    body += [f"| {r[0]} | {r[1]:.1f} | {r[2]:.2f} | {r[3]:.3f} | {r[4]:.3f} |" for r in rows]
    wz, cz = rows[1][1], rows[3][1]
    body += ["", f"Reading (one seed): the SFT student of the watermarked teacher "
             f"{'carries' if wz - cz > 4 else 'does not carry'} the watermark into its own plain sampling at "
             f"corpus level (z {wz:.1f} vs {cz:.1f} for the control over {args.n_eval} texts); per text it is weak "
             f"({rows[1][3]:.1%} vs {rows[3][3]:.1%} flagged at 1% FPR)."]
    body += ["", "The adversarially trained student (GAD against a D that never saw the key) beside an SFT one "
             "on the same budget: section \"Watermark radioactivity: adversarial (GAD) vs SFT students\" "
             "(benchmarks/bench_radioactivity_adv.py).",
             "", f"(This took {minutes:.1f} min on a machine shared with other work.)"]
    update_section("watermark-radioactivity", "\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
