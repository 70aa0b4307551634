"""Core speed on the SeqGAN setup (10k x 20 tokens, V=5000, LSTM 32/32, batch 64), 1 torch thread:

* one MLE epoch: llmgan (fused chunked output layer + loss) vs a plain nn.LSTM + Linear + cross_entropy loop;
* sampling 10,000 sequences of 20 tokens: llmgan's two-level inverse-CDF sampler vs torch.multinomial.

    python benchmarks/bench_core.py [--threads 1] [--write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))


def mle_epoch_llmgan(data, seed=0):
    from llmgan.models.generators.lstm import LSTMGenerator, LSTMGeneratorConfig

    torch.manual_seed(seed)
    g = LSTMGenerator(LSTMGeneratorConfig(vocab_size=5000, bos_id=0, eos_id=None, pad_id=None))
    opt = torch.optim.Adam(g.parameters(), lr=0.01)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    w = None
    t = time.perf_counter()
    for s in range(0, len(data), 64):
        b = data[perm[s : s + 64]]
        if w is None or w.shape != b.shape:
            w = torch.full(b.shape, 1.0 / b.numel())
        loss = g.weighted_nll(b, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(g.parameters(), 5.0)
        opt.step()
    return time.perf_counter() - t


def mle_epoch_plain(data, seed=0):
    torch.manual_seed(seed)
    emb, lstm, head = torch.nn.Embedding(5000, 32), torch.nn.LSTM(32, 32, batch_first=True), torch.nn.Linear(32, 5000)
    params = [*emb.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=0.01)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    t = time.perf_counter()
    for s in range(0, len(data), 64):
        b = data[perm[s : s + 64]]
        inp = torch.cat([torch.zeros(b.size(0), 1, dtype=torch.long), b[:, :-1]], 1)
        h, _ = lstm(emb(inp))
        loss = F.cross_entropy(head(h).reshape(-1, 5000), b.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
    return time.perf_counter() - t


def sample_multinomial(oracle, n, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    with torch.no_grad():
        state = oracle.init_state(n)
        tok = torch.zeros(n, dtype=torch.long)
        for _ in range(T):
            logits, state = oracle.step(tok, state)
            tok = torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(1)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from _doc import command, machine, update_section
    from llmgan.models.generators.oracle import load_seqgan_oracle, oracle_nll

    oracle = load_seqgan_oracle()
    data = oracle.sample(10000, 20, generator=torch.Generator().manual_seed(0)).tokens
    ours = min(mle_epoch_llmgan(data, s) for s in range(a.repeats))
    plain = min(mle_epoch_plain(data, s) for s in range(a.repeats))
    times = []
    for s in range(a.repeats):
        t = time.perf_counter()
        out = oracle.sample(10000, 20, generator=torch.Generator().manual_seed(s)).tokens
        times.append(time.perf_counter() - t)
    samp = min(times)
    own = oracle_nll(oracle, out)
    multi = sample_multinomial(oracle, 10000, 20)
    tok = 10000 * 20
    rows = [
        ("MLE epoch, llmgan (fused chunked output + loss)", f"{ours:.2f} s", f"{tok / ours:,.0f} tokens/s", "<= 5 s"),
        ("MLE epoch, plain nn.LSTM + Linear + cross_entropy", f"{plain:.2f} s", f"{tok / plain:,.0f} tokens/s", ""),
        ("sample 10k x 20, llmgan two-level inverse CDF", f"{samp:.2f} s", f"{tok / samp:,.0f} tokens/s", "<= 4 s"),
        ("sample 10k x 20, torch.multinomial", f"{multi:.2f} s", f"{tok / multi:,.0f} tokens/s", ""),
    ]
    body = ["## Core speed: MLE epoch and sampling (SeqGAN setup)", "",
            f"Command: `{command()}` — best of {a.repeats}; machine: {machine()}.", "",
            "| what | time | throughput | bar |", "|---|---|---|---|"]
    body += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
    body += ["", f"Oracle NLL of the sampler's 10k samples under the oracle: {own:.3f} (RelGAN paper: 5.750); "
             "tests/test_sampling.py checks the sampler's distribution with chi-square tests."]
    text = "\n".join(body)
    print(text)
    if a.write:
        update_section("core-speed", text)


if __name__ == "__main__":
    main()
