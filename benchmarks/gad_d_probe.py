"""Probe (issue 13, 2a): can a GAD-style D -- the CNN trained by Bradley-Terry on teacher vs student pairs,
as GAD's D step does -- learn to tell the watermarked teacher's samples from a student's, and with which
settings? Held-out pair accuracy (a fresh teacher text ranked above a fresh student text; 0.5 = chance) on
2000 + 2000 texts neither side was trained on, after every ``--eval-every`` refreshes of ``--samples`` fresh
student samples vs as many teacher texts from ``--teacher``. One D per entry of ``--grid``.

Used to choose bench_radioactivity_adv.py's D settings (results: benchmarks/results/radioactivity_adv_dprobe.jsonl):

    python benchmarks/gad_d_probe.py --run runs/bench_radioactivity/watermarked_s0_warmup \
        --teacher runs/bench_radioactivity/teacher_watermarked_s0.txt --eval-every 2 \
        --grid '[{"lr":1e-3,"bs":64,"refreshes":10,"samples":2000}]'
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
from llmgan.algorithms.gad import bradley_terry_loss  # noqa: E402
from llmgan.models.discriminators import build_discriminator  # noqa: E402
from llmgan.models.generators import load_seqgan_oracle  # noqa: E402
from llmgan.models.watermark import Watermark  # noqa: E402
from llmgan.run import load_run  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--run", required=True)
ap.add_argument("--teacher", required=True)
ap.add_argument("--temp", type=float, default=1.0, help="student sampling temperature")
ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--bs", type=int, default=512)
ap.add_argument("--refreshes", type=int, default=3)
ap.add_argument("--samples", type=int, default=1000)
ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--emb", type=int, default=32)
ap.add_argument("--filters", default="1,2,3")
ap.add_argument("--nf", type=int, default=64)
ap.add_argument("--clip", type=float, default=0.2)
ap.add_argument("--dropout", type=float, default=0.25)
ap.add_argument("--eval-every", type=int, default=1)
ap.add_argument("--grid", default="[{}]", help="JSON list of overrides, one D per entry")
base_args = ap.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)
gen = load_run(base_args.run).generator.eval()
teacher = torch.tensor([[int(t) for t in line.split()] for line in open(base_args.teacher) if line.strip()])
oracle = load_seqgan_oracle()
wm = Watermark(bytes(range(32)), gamma=0.25, delta=4.0)
g = torch.Generator().manual_seed(777)
with torch.no_grad():
    held_t = oracle.sample(2000, 20, generator=g, watermark=wm if "watermarked" in base_args.teacher else None).tokens
    held_s = gen.sample(2000, 20, generator=g, temperature=base_args.temp).tokens


def pair_acc(D: torch.nn.Module) -> float:
    """Held-out pair accuracy: teacher text i ranked above student text i (dropout off)."""
    D.eval()
    with torch.no_grad():
        acc = float((D(held_t).float() > D(held_s).float()).float().mean())
    D.train()
    return acc


for over in json.loads(base_args.grid):
    a = argparse.Namespace(**{**vars(base_args), **over})
    fs = [int(x) for x in a.filters.split(",")]
    D = build_discriminator("cnn", vocab_size=5000, emb_dim=a.emb, filter_sizes=fs, num_filters=[a.nf] * len(fs),
                            dropout=a.dropout)
    opt = torch.optim.Adam(D.parameters(), lr=a.lr)


    t0 = time.time()
    steps = 0
    out = {"args": vars(a), "acc": [(0, pair_acc(D))]}
    for r in range(a.refreshes):
        with torch.no_grad():
            fake = gen.sample(a.samples, 20, generator=g, temperature=a.temp).tokens
        real = teacher[torch.randint(len(teacher), (a.samples,), generator=g)]
        for _ in range(a.epochs):
            perm = torch.randperm(a.samples, generator=g)
            for s in range(0, a.samples, a.bs):
                idx = perm[s:s + a.bs]
                loss = bradley_terry_loss(D(real[idx]).float(), D(fake[idx]).float())
                opt.zero_grad()
                loss.backward()
                if a.clip:
                    torch.nn.utils.clip_grad_norm_(D.parameters(), a.clip)
                opt.step()
                steps += 1
        if (r + 1) % a.eval_every == 0 or r + 1 == a.refreshes:
            out["acc"].append((steps, pair_acc(D)))
    out["time_s"] = time.time() - t0
    print(json.dumps(out))
