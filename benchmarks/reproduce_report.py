"""The ``reproduce`` section of docs/benchmarks.md, regenerated from benchmarks/results/reproduce.jsonl:
one row per (name, seed) saying how far along its schedule it is, and the oracle-NLL curves beside the
original SeqGAN log (``python benchmarks/reproduce.py --report``)."""

from __future__ import annotations

import json
import os
import re

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PNG = os.path.join(ROOT, "docs", "img", "reproduce_curves.png")
SEQGAN_LOG = os.path.join(ROOT, "..", "shared", "data", "seqgan_oracle", "seqgan_reference_log.txt")
PUBLISHED = {"mle": 9.038, "seqgan": 8.736, "rankgan": 8.247, "leakgan": 7.038, "relgan": 6.680}


def read(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def progress(line: dict) -> str:
    """How far along its schedule a line is: ``MLE epoch 40/150`` or ``round 75/200 (after 120 MLE epochs)``."""
    s = line.get("schedule") or {}
    if line.get("round"):
        return f"round {line['round']}/{s.get('rounds', '?')}"
    return f"MLE epoch {line.get('epoch')}/{s.get('mle_epochs', '?')}"


def seqgan_reference() -> list[tuple[int, float]]:
    """(adversarial round, NLL_oracle) of the original SeqGAN log's adversarial part."""
    if not os.path.isfile(SEQGAN_LOG):
        return []
    out, adv = [], False
    for ln in open(SEQGAN_LOG, encoding="utf-8"):
        if ln.startswith("adversarial"):
            adv = True
        m = re.match(r"epoch:\s+(\d+)\s+nll:\s+([\d.]+)", ln)
        if adv and m:
            out.append((int(m.group(1)), float(m.group(2))))
    return out


def table(lines: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for ln in lines:
        groups.setdefault((ln["name"], ln["seed"]), []).append(ln)
    rows = ["| run | seed | how far | last oracle NLL | best | published | wall | device, threads, CPU | command |",
            "|---|---|---|---|---|---|---|---|---|"]
    for (name, seed), ls in groups.items():
        ls = sorted(ls, key=lambda r: (r["step"], r["phase"] == "final"))
        last = ls[-1]
        vals = [r["oracle_nll"] for r in ls if isinstance(r.get("oracle_nll"), (int, float))]
        pub = PUBLISHED.get(name.split("_")[0], "")
        rows.append(f"| {name} | {seed} | {progress(last)}{' (finished)' if last['phase'] == 'final' else ''} | "
                    f"{last['oracle_nll']:.3f} | {min(vals):.3f} | {pub} | {last['wall_s'] / 3600:.2f} h | "
                    f"{last['device']}, {last['threads']}, {last['cpu']} | `{last['command']}` |")
    return "\n".join(rows)


def plot(lines: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a_mle, a_adv) = plt.subplots(1, 2, figsize=(12, 4.5))
    groups: dict[str, list[dict]] = {}
    for ln in lines:
        groups.setdefault(f"{ln['name']} (seed {ln['seed']})", []).append(ln)
    for label, ls in groups.items():
        mle = sorted((r["epoch"], r["oracle_nll"]) for r in ls if not r.get("round") and r["phase"] != "final")
        adv = sorted((r["round"], r["oracle_nll"]) for r in ls if r.get("round"))
        if mle:
            a_mle.plot(*zip(*mle), "o-", ms=3, label=label)
        if adv:
            a_adv.plot(*zip(*adv), "o-", ms=3, label=label)
    ref = seqgan_reference()
    if ref:
        a_adv.plot(*zip(*ref), "k:", label="SeqGAN original log")
    for ax, xl in ((a_mle, "MLE epoch"), (a_adv, "adversarial round / step")):
        ax.set_xlabel(xl)
        ax.set_ylabel("NLL_oracle (lower is better)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    a_mle.set_title("MLE pre-training", fontsize=10)
    a_adv.set_title("adversarial phase", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write(results: str) -> None:
    from _doc import update_section

    lines = read(results)
    body = ["## Long runs of the papers' schedules (`benchmarks/reproduce.py`)", "",
            "Regenerated from `benchmarks/results/reproduce.jsonl` by `python benchmarks/reproduce.py --report`. "
            "Every row is a **prefix** of its schedule unless it says finished; \"how far\" is its last "
            "evaluation. Wall time is training time summed over the sessions that ran it, on a shared "
            "machine (other jobs on the same 2 cores), so it is noisy. Schedules: "
            "`python benchmarks/reproduce.py --list`.", ""]
    if lines:
        body += [table(lines), ""]
        os.makedirs(os.path.dirname(PNG), exist_ok=True)
        plot(lines, PNG)
        body += ["![long-run curves](img/reproduce_curves.png)", ""]
    else:
        body += ["No evaluation recorded yet.", ""]
    update_section("reproduce", "\n".join(body))
