"""Benchmark llmgan's BLEU-2..5 and Self-BLEU-2..5 against nltk.

Times 10,000 generated vs 10,000 reference sentences (COCO captions from ../shared/data when
present, otherwise synthetic Zipfian sentences of ~20 tokens), times nltk on a 200-sentence subset
and extrapolates it to the full set, and checks agreement with nltk on a 50-sentence subset.

    .venv/bin/python benchmarks/bench_bleu.py --n 10000 --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN_FILE = os.path.join(ROOT, "..", "shared", "data", "image_coco.txt")
REF_FILE = os.path.join(ROOT, "..", "shared", "data", "testdata", "image_coco_test.txt")
ORDERS = (2, 3, 4, 5)


def _synthetic(n: int, seed: int, vocab: int = 5000, mean_len: int = 20) -> list[list[str]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab + 1)
    p = 1.0 / ranks
    p /= p.sum()
    lens = np.clip(rng.poisson(mean_len, size=n), 1, None)
    return [[f"w{t}" for t in rng.choice(vocab, size=k, p=p)] for k in lens]


def _load(n: int, synthetic: bool) -> tuple[list[list[str]], list[list[str]], str]:
    from llmgan.metrics import tokenize_lines

    if not synthetic and os.path.isfile(GEN_FILE) and os.path.isfile(REF_FILE):
        with open(GEN_FILE, encoding="utf-8") as f:
            gen = tokenize_lines(f)[:n]
        with open(REF_FILE, encoding="utf-8") as f:
            ref = tokenize_lines(f)[:n]
        if len(gen) >= n and len(ref) >= n:
            return gen, ref, "COCO image captions (../shared/data)"
        print(f"(COCO files hold {len(gen)}/{len(ref)} lines < {n}: using synthetic data)")
    return _synthetic(n, 0), _synthetic(n, 1), "synthetic Zipfian sentences (~20 tokens)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="generated and reference sentences (default 10000)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads for numpy (default 1)")
    ap.add_argument("--nltk-subset", type=int, default=200, help="sentences timed with nltk (default 200)")
    ap.add_argument("--check", type=int, default=50, help="sentences checked against nltk (default 50)")
    ap.add_argument("--synthetic", action="store_true", help="use synthetic data even if COCO is present")
    args = ap.parse_args(argv)
    # Must be set before numpy is imported to take effect; the 2-core CI box is shared.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    from llmgan.metrics import bleu, bleu_scores, self_bleu, self_bleu_scores

    gen, ref, source = _load(args.n, args.synthetic)
    mean_len = np.mean([len(s) for s in gen])
    print(f"data: {source}; {len(gen)} generated vs {len(ref)} references, mean length {mean_len:.1f}")

    t = time.perf_counter()
    b = bleu(gen, ref, ORDERS)
    t_bleu = time.perf_counter() - t
    t = time.perf_counter()
    sb = self_bleu(gen, ORDERS)
    t_self = time.perf_counter() - t
    print(f"llmgan BLEU-2..5      : {t_bleu:8.3f} s  " + "  ".join(f"{k}={v:.4f}" for k, v in b.items()))
    print(f"llmgan Self-BLEU-2..5 : {t_self:8.3f} s  " + "  ".join(f"{k}={v:.4f}" for k, v in sb.items()))

    sm = SmoothingFunction().method1
    weights = [tuple(1.0 / n for _ in range(n)) for n in ORDERS]
    k = min(args.nltk_subset, len(gen))
    t = time.perf_counter()
    for h in gen[:k]:
        sentence_bleu(ref, h, weights, smoothing_function=sm)
    t_nltk = (time.perf_counter() - t) * len(gen) / k
    print(f"nltk BLEU-2..5 (timed on {k} hypotheses, extrapolated to {len(gen)}): {t_nltk:8.0f} s "
          f"(~{t_nltk / max(t_bleu, 1e-9):.0f}x slower; Self-BLEU costs about the same)")

    # Agreement: per-sentence scores of the first `check` sentences against the FULL reference set
    # (and, for Self-BLEU, all other generated sentences), computed by nltk itself.
    c = min(args.check, len(gen))
    per_b = bleu_scores(gen, ref, ORDERS)
    per_s = self_bleu_scores(gen, ORDERS)
    worst = 0.0
    for i in range(c):
        nb = sentence_bleu(ref, gen[i], weights, smoothing_function=sm)
        ns = sentence_bleu(gen[:i] + gen[i + 1:], gen[i], weights, smoothing_function=sm)
        for j, n in enumerate(ORDERS):
            worst = max(worst, abs(nb[j] - per_b[f"bleu_{n}"][i]), abs(ns[j] - per_s[f"self_bleu_{n}"][i]))
    ok = worst <= 1e-6
    print(f"agreement with nltk on {c} sentences (BLEU and Self-BLEU, n=2..5): max |diff| = {worst:.2e} "
          f"-> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
