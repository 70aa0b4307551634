"""Diagnostic for benchmarks/distill.py: is GAD's D near chance because of the task or because of its
warm-up? The same CNN D, teacher samples and SeqKD student as a finished distill run's ``seqkd+gad`` arm,
warmed up longer (``--refreshes`` refreshes of ``--d-samples`` x ``--d-epochs`` at ``--d-lr``; the arm:
10 x 512 x 1 at 5e-4), then ``--rounds`` GAD rounds (default 1; the arm's 100 to see whether the longer
warm-up changes what GAD does). Its ``metrics.jsonl`` holds ``d_pair_acc`` per refresh (on the
refresh's own training pairs, as in the arm); compare with ``distill.py --report --probe`` (the exact
log-ratio's pair accuracy on held-out samples).

    python benchmarks/distill_d_warmup.py [--distill-out runs/distill] [--student gpt1] [--refreshes 40]
        [--d-samples 512] [--d-epochs 3] [--d-lr 1e-3] [--rounds 1] [--out runs/distill_d_warmup]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.join(os.path.dirname(__file__), "..")


def main() -> None:
    from distill import STUDENTS, _cfg, _train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--distill-out", default=os.path.join(ROOT, "runs", "distill"))
    p.add_argument("--student", default="gpt1", choices=sorted(STUDENTS))
    p.add_argument("--refreshes", type=int, default=40)
    p.add_argument("--d-samples", type=int, default=512)
    p.add_argument("--d-epochs", type=int, default=3)
    p.add_argument("--d-lr", type=float, default=1e-3)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--max-len", type=int, default=32)
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "distill_d_warmup"))
    a = p.parse_args()
    torch.set_num_threads(1)
    src = a.distill_out
    seqkd = os.path.join(src, a.student, "seqkd")
    if not os.path.isfile(os.path.join(seqkd, "checkpoints", "latest")):
        sys.exit(f"distill_d_warmup: {seqkd} has no checkpoint (run benchmarks/distill.py first)")
    gad = {"algorithm": "gad", "rounds": a.rounds, "g_steps": 1, "g_batch_size": 64, "g_lr": 5e-4, "d_lr": a.d_lr,
           "d_pretrain_steps": a.refreshes, "d_samples": a.d_samples, "d_steps": 1, "d_epochs": a.d_epochs,
           "d_batch_size": 64, "eval_every": a.rounds, "checkpoint_every": a.rounds, "loss": "rsgan",
           "params": {"group_size": 8, "reward": "logodds", "d_loss": "bradley_terry", "kl_coef": 0.001}}
    cfg = _cfg("distill_d_warmup", os.path.join(src, "teacher_train.txt"), os.path.join(src, "teacher_test.txt"),
               STUDENTS[a.student], 0, 0, "cpu", a.max_len, gad, init_from=seqkd)
    _train(cfg, os.path.join(a.out, a.student))


if __name__ == "__main__":
    main()
