"""SFT vs SFT + GAD (online D) vs SFT + GAD (frozen D) vs SFT + SPIN on the synthetic translation task,
at equal generator compute.

    python benchmarks/llm_translation.py                   # full run (minutes, 1 CPU thread); docs/benchmarks.md
    python benchmarks/llm_translation.py --quick --no-doc  # smoke run (the tiny budget leaves BLEU at 0)

Protocol. ``llmgan data make translation`` data (``--n`` pairs, seed 0, 90/5/5 split); one SFT warm-up run
(our ``gpt`` generator, word tokenizer) shared by every arm; then each arm starts from that checkpoint
(``train.init_from``) and spends the SAME generator budget:

* ``SFT (warm-up)``       -- the shared starting point, no extra compute;
* ``SFT + SFT``           -- the budget spent on more SFT steps (is any gain just more training?);
* ``SFT + GAD``           -- GAD with prompts (groups of K responses per prompt, D's logit reward, KL leash),
                             online Bradley-Terry D updates (small ``transformer`` discriminator);
* ``SFT + GAD, frozen D`` -- GAD's ablation: the same D warm-up, then ``d_steps: 0`` (D fixed);
* ``SFT + SPIN``          -- self-play against the previous iterate (``beta`` 0.1).

Equal generator compute = the same number of generator TOKEN-PASSES: every token a generator network
(G itself, or its frozen reference/opponent copy, which is the same network) processes in a forward
pass counts 1 -- prompt prefill, each sampling step, teacher-forced scoring -- and tokens of a pass that
is back-propagated count 3 (forward + backward ~ 2 x forward). Counted by wrapping the generator's
forward, paused during evaluation and the engine's per-round diversity probe. An arm stops after the
round (or SFT step) in which it reaches the budget. Discriminator compute is not part of the budget;
wall time per arm (everything: G, D, sampling) is reported next to it.

Evaluation on the test pairs: BLEU-4 (corpus) and exact match, greedy and sampled at temperature 1; and a
quality-diversity sweep at temperatures 0.5 / 0.8 / 1.0 / 1.2: BLEU-4, exact match, Self-BLEU-4 of the
test outputs (lower = less alike) and unique@4 (distinct responses among 4 samples per prompt, for the
first 100 test prompts; 1/4 = always the same response). Seeds fixed (data 0, training 0, sampling 1234).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _doc import command, machine, update_section  # noqa: E402
from llmgan.apps.translation import score  # noqa: E402
from llmgan.cli_llm import make_app_data  # noqa: E402
from llmgan.config import config_from_dict  # noqa: E402
from llmgan.metrics import self_bleu  # noqa: E402
from llmgan.training import adversarial as adv_mod  # noqa: E402
from llmgan.training.conditional import sample_for_prompts  # noqa: E402
from llmgan.training.engine import Trainer  # noqa: E402

TEMPS = (0.5, 0.8, 1.0, 1.2)


# ------------------------------------------------------------------------------------------ compute
class TokenCounter:
    """Generator token-passes (see the module docstring); ``paused`` excludes evaluation work."""

    def __init__(self) -> None:
        self.total = 0.0
        self.paused = 0

    def add(self, inputs: torch.Tensor, module: torch.nn.Module) -> None:
        if self.paused:
            return
        n = float(inputs.shape[0] * inputs.shape[1])
        trains = torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())
        self.total += 3.0 * n if trains else n


def _count_forward(gen: torch.nn.Module, counter: TokenCounter) -> None:
    """Wrap the gpt generator's ``_forward`` (shared by prompt prefill, sampling steps and teacher forcing)."""
    inner = gen._forward

    def counted(inputs, state, new_real):
        counter.add(inputs, gen)
        return inner(inputs, state, new_real)

    gen._forward = counted


_ACTIVE: dict = {}


class BudgetTrainer(Trainer):
    """The engine, stopping an arm once its generator token-passes reach ``budget`` (None: no limit)."""

    def __init__(self, cfg, run_dir: str, budget: float | None = None):
        super().__init__(cfg, run_dir)
        self.budget = budget
        self.counter = TokenCounter()

    def setup(self) -> None:
        super().setup()
        counter = self.counter
        _ACTIVE["counter"] = counter  # the probe below pauses the counter of the arm that is running
        adv = self.adversarial
        for g in (self.generator, adv.reference if adv is not None else None):
            if g is not None:
                _count_forward(g, counter)
        inner_eval = self.evaluate

        def paused_eval(*a, **k):
            counter.paused += 1
            try:
                return inner_eval(*a, **k)
            finally:
                counter.paused -= 1

        self.evaluate = paused_eval
        if self.budget is not None:  # checked after every optimizer step of G (SFT step or adversarial update)
            for opt in (self.g_opt, adv.g_opt if adv is not None else None):
                if opt is not None:
                    opt.register_step_post_hook(lambda *_: self._budget_check())

    def _budget_check(self) -> None:
        if self.counter.total < self.budget:
            return
        st = self.state
        if st["phase"] == "mle":  # finish this SFT step, then stop
            self.cfg.train.max_steps = int(st["mle_step"]) + 1
        else:  # finish the current round (its D step included), then stop
            self.cfg.adversarial.rounds = min(self.cfg.adversarial.rounds, int(st["round"]) + 1)


def _paused_probe(counter_of):
    inner = adv_mod._probe

    def probe(ctx, n: int = 256):
        c = counter_of(ctx)
        c.paused += 1
        try:
            return inner(ctx, n)
        finally:
            c.paused -= 1

    return probe


# ------------------------------------------------------------------------------------------ configs
def base_cfg(args, name: str, data_dir: str) -> dict:
    return {
        "name": name, "device": "cpu", "seed": 0, "threads": 1,
        "data": {"train": f"{data_dir}/train.jsonl", "valid": f"{data_dir}/valid.jsonl",
                 "test": f"{data_dir}/test.jsonl", "prompt_field": "prompt", "response_field": "response",
                 "tokenizer": "word", "max_prompt_len": 8, "max_len": 8},
        "generator": {"name": "gpt", "kwargs": {"d_model": 64, "n_layers": 2, "n_heads": 4, "max_len": 20}},
        # GAD recommends a discriminator like the generator: a small transformer over prompt ++ response
        "discriminator": {"name": "transformer", "kwargs": {"d_model": 64, "num_layers": 2, "num_heads": 4,
                                                           "max_len": 20, "dropout": 0.0}},
        "train": {"epochs": args.sft_epochs, "batch_size": 64, "lr": 1e-3, "optimizer": "adamw", "grad_clip": 1.0,
                  "progress": False, "log_every": 1000, "eval_every": 1000, "checkpoint_every": 1000},
        "eval": {"n_samples": 50, "batch_size": 256},
    }


def arm_cfg(args, arm: str, data_dir: str, sft_dir: str) -> dict:
    cfg = base_cfg(args, arm, data_dir)
    cfg["train"].update(init_from=sft_dir, epochs=0)
    if arm == "sft_more":
        cfg["train"].update(epochs=10_000)  # stopped by the budget
        return cfg
    gad_adv = {"rounds": 100_000, "g_steps": 1, "g_batch_size": 64, "g_lr": args.gad_lr, "d_lr": 1e-3,
               "d_steps": 1, "d_epochs": 1, "d_pretrain_steps": args.d_pretrain_steps, "d_samples": 512,
               "d_batch_size": 64, "eval_every": 100_000, "checkpoint_every": 100_000}
    if arm == "gad":
        cfg["adversarial"] = {**gad_adv, "algorithm": "gad", "params": {"group_size": 8, "kl_coef": args.gad_kl}}
    elif arm == "gad_frozen":
        cfg["adversarial"] = {**gad_adv, "algorithm": "gad", "d_steps": 0,
                              "params": {"group_size": 8, "kl_coef": args.gad_kl}}
    elif arm == "spin":
        cfg["adversarial"] = {"algorithm": "spin", "rounds": 100_000, "g_batch_size": 64, "g_lr": args.spin_lr,
                              "eval_every": 100_000, "checkpoint_every": 100_000, "params": {"beta": 0.1}}
    else:
        raise ValueError(arm)
    return cfg


# ------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(tr: Trainer, n_div: int = 100, k_div: int = 4) -> dict:
    g, tok, data = tr.generator, tr.data.tokenizer, tr.data
    prompts = data.test_prompts
    refs = [tok.decode(row[:n].tolist()) for row, n in zip(data.test.tokens, data.test.lengths)]
    out: dict = {}

    def decode(tokens):
        return [tok.decode(row) for row in tokens.tolist()]

    hyps = decode(sample_for_prompts(g, prompts, tr.max_len, top_k=1)[0])
    out["greedy"] = score(hyps, refs)
    for t in TEMPS:
        rng = torch.Generator().manual_seed(1234)
        hyps = decode(sample_for_prompts(g, prompts, tr.max_len, temperature=t, rng=rng)[0])
        res = score(hyps, refs)
        toks = [h.split() or ["<empty>"] for h in hyps]
        res["self_bleu4"] = self_bleu(toks, max_n=(4,))["self_bleu_4"]
        many = prompts[:n_div].repeat_interleave(k_div, 0)
        multi = decode(sample_for_prompts(g, many, tr.max_len, temperature=t, rng=rng)[0])
        res["unique_at_4"] = sum(len(set(multi[i : i + k_div])) for i in range(0, len(multi), k_div)) / len(multi)
        out[f"T={t}"] = res
    return out


def _adv_stats(run_dir: str) -> dict:
    recs = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    adv = [r for r in recs if r.get("phase") == "adversarial"]
    if not adv:
        return {}
    last = adv[-max(1, len(adv) // 10):]  # the last 10% of rounds

    def mean(k):
        vals = [r[k] for r in last if k in r]
        return sum(vals) / len(vals) if vals else None

    return {"rounds": len(adv), "time_g_s": sum(r.get("time_g_s", 0.0) for r in adv),
            "time_d_s": sum(r.get("time_d_s", 0.0) for r in adv),
            **{k: mean(k) for k in ("reward_mean", "reward_std", "zero_var_groups", "kl", "d_pair_acc",
                                    "margin", "pair_acc", "gen_equals_ref", "response_len")}}


# ------------------------------------------------------------------------------------------ main
LABELS = {"sft": "SFT (warm-up)", "sft_more": "SFT + SFT", "gad": "SFT + GAD (online D)",
          "gad_frozen": "SFT + GAD (frozen D)", "spin": "SFT + SPIN"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/bench_llm_translation", help="work directory (data and runs)")
    ap.add_argument("--n", type=int, default=8000, help="translation pairs (90/5/5 split)")
    ap.add_argument("--sft-epochs", type=int, default=2, help="SFT warm-up epochs (shared by every arm)")
    ap.add_argument("--budget", type=float, default=1e6, help="generator token-passes per arm after SFT")
    ap.add_argument("--gad-lr", type=float, default=1e-4)
    ap.add_argument("--gad-kl", type=float, default=0.001, help="GAD's KL coefficient (paper: 0.001)")
    ap.add_argument("--spin-lr", type=float, default=1e-4)
    ap.add_argument("--d-pretrain-steps", type=int, default=10)
    ap.add_argument("--arms", default="sft_more,gad,gad_frozen,spin")
    ap.add_argument("--quick", action="store_true", help="tiny data and budget (smoke test)")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = ap.parse_args()
    if args.quick:
        args.n, args.sft_epochs, args.budget, args.d_pretrain_steps = 1500, 1, 6e4, 2
    torch.set_num_threads(1)
    t_start = time.time()
    data_dir = os.path.join(args.out, "data")
    make_app_data("translation", data_dir, n=args.n, seed=0)
    adv_mod._probe = _paused_probe(lambda ctx: _ACTIVE["counter"])

    results: dict = {}
    for arm in ["sft", *args.arms.split(",")]:  # fresh run directories (metrics.jsonl would append)
        shutil.rmtree(os.path.join(args.out, arm), ignore_errors=True)
    t0 = time.time()
    sft_dir = os.path.join(args.out, "sft")
    sft = BudgetTrainer(config_from_dict(base_cfg(args, "sft", data_dir)), sft_dir)
    sft.run()
    results["sft"] = {"eval": evaluate(sft), "tokens": 0.0, "n_test": len(sft.data.test), "wall_s": 0.0,
                      "sft_wall_s": time.time() - t0, "sft_tokens": sft.counter.total, "stats": {}}
    print(f"[sft] {results['sft']['sft_wall_s']:.0f}s {results['sft']['eval']['T=1.0']}", flush=True)
    for arm in args.arms.split(","):
        t0 = time.time()
        run_dir = os.path.join(args.out, arm)
        tr = BudgetTrainer(config_from_dict(arm_cfg(args, arm, data_dir, sft_dir)), run_dir, budget=args.budget)
        tr.run()
        wall = time.time() - t0
        results[arm] = {"eval": evaluate(tr), "tokens": tr.counter.total, "wall_s": wall,
                        "steps": int(tr.state["mle_step"]), "stats": _adv_stats(run_dir)}
        print(f"[{arm}] {wall:.0f}s tokens {tr.counter.total:.3g} {results[arm]['stats']} "
              f"{results[arm]['eval']['T=1.0']}", flush=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = report(args, results, time.time() - t_start)
    print(text)
    if not args.no_doc:
        update_section("llm-translation", text)


def report(args, results: dict, total_s: float) -> str:
    sft = results["sft"]
    lines = [
        "## Adversarial fine-tuning of a small LM on synthetic translation (GAD, SPIN)",
        "",
        f"Command: `{command()}` -- {total_s / 60:.1f} min in all; {machine()}.",
        "",
        f"Data: `llmgan data make translation --n {args.n} --seed 0` (90/5/5; "
        f"{results['sft'].get('n_test', '?')} test pairs). Generator: `gpt` (d_model 64, 2 layers, 4 heads), "
        "word tokenizer; "
        f"shared SFT warm-up of {args.sft_epochs} epochs ({sft['sft_wall_s']:.0f} s, "
        f"{sft['sft_tokens']:.3g} token-passes). Discriminator for GAD: `transformer` (d_model 64, 2 layers). "
        f"GAD: groups of 8 responses per prompt x 8 prompts, logit reward, GRPO advantages, clip 0.2, "
        f"k3 KL {args.gad_kl}, lr {args.gad_lr}, D warm-up {args.d_pretrain_steps} x 512 pairs. "
        f"SPIN: beta 0.1, 64 pairs per round, lr {args.spin_lr}, opponent refreshed once per pass over the "
        "training pairs.",
        "",
        f"**Equal generator compute**: every arm after the warm-up spends {args.budget:.3g} generator "
        "token-passes (tokens through the generator network or its frozen copy; back-propagated tokens count "
        "3x; sampling steps and prompt prefill count) and stops after the round in which it gets there. "
        "D's compute is extra and shows in the wall time.",
        "",
        "| arm | rounds / SFT steps | G token-passes | wall s | greedy BLEU-4 | greedy EM | BLEU-4 @T=1 | EM @T=1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, r in results.items():
        e = r["eval"]
        n = r["stats"].get("rounds", r.get("steps", 0))
        g, t1 = e["greedy"], e["T=1.0"]
        lines.append(f"| {LABELS[arm]} | {n} | {r['tokens']:.3g} | {r['wall_s']:.0f} | {g['bleu4']:.3f} | "
                     f"{g['exact_match']:.3f} | {t1['bleu4']:.3f} | {t1['exact_match']:.3f} |")
    lines += ["", "Quality-diversity sweep (test prompts; Self-BLEU-4 over the outputs, unique@4 per prompt):", "",
              "| arm | T | BLEU-4 | EM | Self-BLEU-4 | unique@4 |", "|---|---:|---:|---:|---:|---:|"]
    for arm, r in results.items():
        for t in TEMPS:
            e = r["eval"][f"T={t}"]
            lines.append(f"| {LABELS[arm]} | {t} | {e['bleu4']:.3f} | {e['exact_match']:.3f} | "
                         f"{e['self_bleu4']:.3f} | {e['unique_at_4']:.3f} |")
    lines += ["", "Training signals (mean over the last 10% of rounds):", "",
              "| arm | reward mean | reward std | zero-variance groups | KL | D pair acc | SPIN margin | "
              "SPIN pair acc | SPIN y_gen = y_ref | response len |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(x):
        return "-" if x is None else f"{x:.3f}"

    for arm, r in results.items():
        s = r["stats"]
        if not s:
            continue
        lines.append(f"| {LABELS[arm]} | {f(s.get('reward_mean'))} | {f(s.get('reward_std'))} | "
                     f"{f(s.get('zero_var_groups'))} | {f(s.get('kl'))} | {f(s.get('d_pair_acc'))} | "
                     f"{f(s.get('margin'))} | {f(s.get('pair_acc'))} | {f(s.get('gen_equals_ref'))} | "
                     f"{f(s.get('response_len'))} |")
    lines += ["", verdict(results)]
    return "\n".join(lines)


def verdict(results: dict) -> str:
    """A plain reading of the table (computed, so it cannot disagree with the numbers)."""
    def b(arm, key="T=1.0"):
        return results[arm]["eval"][key]["bleu4"] if arm in results else None

    base = b("sft_more")
    parts = []
    for arm in ("gad", "gad_frozen", "spin"):
        if arm in results and base is not None:
            d = b(arm) - base
            word = "beats" if d > 0.005 else ("matches" if abs(d) <= 0.005 else "does NOT beat")
            parts.append(f"{LABELS[arm]} {word} SFT + SFT at equal generator compute at T=1 "
                         f"(BLEU-4 {b(arm):.3f} vs {base:.3f}, greedy {b(arm, 'greedy'):.3f} vs "
                         f"{b('sft_more', 'greedy'):.3f})")
    return ("Reading (one seed, one data draw; differences of a point or two are within seed noise): "
            + "; ".join(parts) + ".")


if __name__ == "__main__":
    main()
