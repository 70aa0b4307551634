"""Why ``configs/gad_translation.yaml`` collapses from SFT (issue 11, part 5): the preset and one change
at a time, from the same SFT model, round by round.

    python benchmarks/gad_translation_probe.py [--n 20000] [--rounds 40] [--every 10] [--arms preset,lr,kl,frozen]
        [--out runs/gad_probe] [--write]

1. ``llmgan data make translation --n N`` (the preset's first step) into ``OUT/data``.
2. SFT: the preset's own MLE phase (``train.epochs`` 3, its generator), no adversarial phase.
3. Each arm: the preset's adversarial phase from that SFT model (``train.init_from``), ``--rounds``
   rounds, scored every ``--every`` rounds on the first 200 test prompts: greedy BLEU-4 and BLEU-4 at
   T = 1, with the training signals of that round (reward std, share of zero-variance groups, KL,
   D pair accuracy, response length). Arms: ``preset`` (as shipped: g_lr 5e-4, kl_coef 0.001),
   ``lr`` (only ``g_lr`` 1e-5), ``kl`` (only ``kl_coef`` 0.1), ``frozen`` (``d_steps`` 0).

``--write``: section ``gad-translation-probe`` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import yaml

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.join(os.path.dirname(__file__), "..")
PRESET = os.path.join(ROOT, "configs", "gad_translation.yaml")
SIGNALS = ("reward_mean", "reward_std", "zero_var_groups", "kl", "d_pair_acc", "response_len")
# one change at a time against the preset as it shipped when the collapse was reported (g_lr 5e-4, kl_coef 0.001)
SHIPPED = {"g_lr": 5e-4, "params": {"kl_coef": 0.001}}
ARMS = {
    "preset": {},
    "lr": {"g_lr": 1e-5},
    "kl": {"params": {"kl_coef": 0.1}},
    "frozen": {"d_steps": 0},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _preset() -> dict:
    with open(PRESET, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _score(tr, n: int = 200) -> dict:
    from llmgan.apps.translation import score
    from llmgan.training.conditional import sample_for_prompts

    g, tok, data = tr.generator, tr.data.tokenizer, tr.data
    prompts = data.test_prompts[:n]
    refs = [tok.decode(row[:k].tolist()) for row, k in zip(data.test.tokens[:n], data.test.lengths[:n])]

    def bleu(**kw) -> float:
        toks = sample_for_prompts(g, prompts, tr.max_len, **kw)[0]
        return score([tok.decode(r) for r in toks.tolist()], refs)["bleu4"]

    with torch.no_grad():
        return {"greedy_bleu4": bleu(top_k=1), "bleu4_t1": bleu(temperature=1.0, rng=torch.Generator().manual_seed(1))}


def run_arm(name: str, over: dict, sft: str, data: str, out: str, rounds: int, every: int) -> list[dict]:
    from llmgan.config import config_from_dict
    from llmgan.training.engine import Trainer

    raw = _preset()
    raw["data"].update(train=f"{data}/train.jsonl", valid=f"{data}/valid.jsonl", test=f"{data}/test.jsonl")
    adv = _merge(_merge(raw["adversarial"], SHIPPED), over)
    adv.update(rounds=rounds, eval_every=every, checkpoint_every=10**6)
    raw.update(adversarial=adv, device="cpu", threads=1)
    raw["train"].update(init_from=sft, epochs=0, progress=False, checkpoint_every=10**6)
    run_dir = os.path.join(out, name)
    if os.path.isdir(run_dir):
        import shutil

        shutil.rmtree(run_dir)
    tr = Trainer(config_from_dict(raw), run_dir)
    rows: list[dict] = []
    original = tr.evaluate
    t0 = time.perf_counter()

    def evaluate(final: bool = False) -> dict:  # the probe's scores beside the engine's own evaluation
        m = original(final)
        if not final:
            rows.append({"arm": name, "round": tr.state.get("round", 0), **_score(tr),
                         "wall_s": time.perf_counter() - t0})
        return m

    save = tr.save

    def save_and_score(*args, **kw):  # G is built inside run(): score the SFT start at the first D warm-up save
        if not rows and tr.state.get("phase") == "d_pretrain":
            rows.append({"arm": name, "round": 0, **_score(tr), "wall_s": time.perf_counter() - t0})
        return save(*args, **kw)

    tr.evaluate, tr.save = evaluate, save_and_score
    tr.run()
    recs = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8")]
    by_round = {r["round"]: r for r in recs if r.get("phase") == "adversarial"}
    warm = [r for r in recs if r.get("phase") == "d_pretrain"]
    for row in rows:
        src = by_round.get(row["round"]) or (warm[-1] if row["round"] == 0 and warm else {})
        row.update({k: src[k] for k in SIGNALS if k in src})
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| arm | round | greedy BLEU-4 | BLEU-4 @T=1 | reward mean | reward std | zero-var groups | KL | "
           "D pair acc | response len |", "|" + "---|" * 10]

    def f(v):
        return "" if v is None else f"{v:.3f}"

    for r in rows:
        out.append(f"| {r['arm']} | {r['round']} | {f(r['greedy_bleu4'])} | {f(r['bleu4_t1'])} | "
                   + " | ".join(f(r.get(k)) for k in SIGNALS) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--arms", default="preset,lr,kl,frozen")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "gad_probe"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from llmgan.cli_llm import make_app_data
    from llmgan.config import config_from_dict
    from llmgan.training.engine import Trainer

    t0 = time.perf_counter()
    data = os.path.join(a.out, "data")
    if not os.path.isfile(os.path.join(data, "test.jsonl")):
        make_app_data("translation", data, n=a.n, seed=0)
    sft = os.path.join(a.out, "sft")
    if not os.path.isfile(os.path.join(sft, "checkpoints", "latest")):
        raw = _preset()
        raw.pop("adversarial")
        raw["data"].update(train=f"{data}/train.jsonl", valid=f"{data}/valid.jsonl", test=f"{data}/test.jsonl")
        raw.update(device="cpu", threads=1)
        raw["train"].update(progress=False)
        Trainer(config_from_dict(raw), sft).run()
    rows = [r for arm in a.arms.split(",") for r in run_arm(arm, ARMS.get(arm, {}), sft, data, a.out, a.rounds,
                                                            a.every)]
    table = markdown(rows)
    print(table)
    if a.write:
        from _doc import command, machine, update_section

        update_section("gad-translation-probe", "## GAD on translation from SFT: why the preset collapsed\n\n"
                       f"Command: `{command()}`; machine: {machine()}, machine shared; "
                       f"{(time.perf_counter() - t0) / 60:.1f} min in all. First 200 test prompts.\n\n" + table)


if __name__ == "__main__":
    main()
