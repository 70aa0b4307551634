"""The density-ratio curves on the oracle frontier (issue 11): a run's generator corrected by its
discriminator (or residual EBM) read as r = p_data / p_G, over a temperature sweep x K candidates.

    python benchmarks/density_ratio.py RUN [RUN ...] [--ratio-from d|ebm] [--temperatures 0.8,0.9,1.0,1.1,1.2]
        [--candidates 1,2,4,8,16,64] [--rejection 64] [--n-samples 10000] [--n-proposal 10000]
        [--out benchmarks/results/density_ratio_frontier.csv] [--write]

Per run and temperature T, rows with the columns of ``oracle_frontier.csv`` (``run``, ``algorithm``,
``seed``, ``temperature``, ``oracle_nll``, ``test_nll``) and what the density-ratio points need besides:

* K = 1 (``algorithm`` = the run's own, ``mle`` for a residual_ebm run whose G is the frozen MLE model):
  NLL_oracle of plain samples at T, NLL_test of the tempered G (``llmgan sweep``'s axes).
* K > 1 (``<base>+sir``): NLL_oracle of SIR samples (K candidates at T each, one kept w.p. ∝ r), and as
  NLL_test the corrected model ``p_T r / Z_T`` -- the law SIR tends to as K grows -- with log Z_T
  importance-sampled from ``--n-proposal`` samples at T (``test_nll_se``: its standard error; an
  ESTIMATE). SIR at finite K has no tractable density, so its coverage point is the K -> infinity one.
* ``<base>+rejection``: rejection sampling with up to ``--rejection`` candidates per output, with the
  acceptance rate; ``cost`` = generator samples (= ratio evaluations) per output, for every row.

``--write`` puts a Markdown table of the rows into docs/benchmarks.md (section ``density_ratio``).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.join(os.path.dirname(__file__), "..")
COLUMNS = ["run", "algorithm", "seed", "temperature", "oracle_nll", "test_nll", "method", "candidates",
           "test_nll_se", "cost", "ess_mean", "acceptance_rate", "n_samples", "ratio_from"]


def frontier_rows(run_dir: str, temperatures: list[float], candidates: list[int], rejection: int = 0,
                  ratio_from: str = "d", n_samples: int = 10000, n_proposal: int = 10000, seed: int = 0,
                  n_calibration: int = 500, device: str = "cpu") -> list[dict]:
    from llmgan.errors import ConfigError
    from llmgan.metrics.density_ratio import residual_nll, sequence_nll
    from llmgan.metrics.detection import _pad_to
    from llmgan.models.generators.oracle import oracle_nll
    from llmgan.resample import RatioModel, resample_run
    from llmgan.run import load_run
    from llmgan.sweep import temperature_nll
    from llmgan.training.evaluation import held_out_corpus, sample_tokens

    run = load_run(run_dir, device=device)
    if run.oracle is None:
        raise ConfigError(f"{run_dir}: not an oracle run (the frontier's axes need the oracle)")
    test = held_out_corpus(run)
    if test is None:
        raise ConfigError(f"{run_dir}: no held-out data")
    algo = run.cfg.adversarial.algorithm or "mle"
    base = "mle" if algo == "residual_ebm" else algo
    ratio = RatioModel(run, ratio_from)
    ratio.calibrate(n=n_calibration, seed=seed)
    pad = run.tokenizer.pad_id if run.tokenizer.pad_id is not None else 0
    test_tokens = _pad_to(test.tokens, run.max_len, pad)
    test_lengths = test.lengths.clamp(max=run.max_len)
    energy = -ratio.log_ratio(test_tokens)  # E = -log r of the held-out sequences (T-independent)
    name = os.path.basename(os.path.normpath(run_dir))
    common = {"run": name, "seed": run.cfg.seed, "n_samples": n_samples, "ratio_from": ratio_from}
    rows: list[dict] = []
    for temp in temperatures:
        rng = torch.Generator(device=run.generator.device).manual_seed(seed)
        plain, _ = sample_tokens(run.generator, n_samples, run.max_len, temperature=temp, rng=rng)
        rows.append({**common, "algorithm": base, "temperature": temp, "method": "plain", "candidates": 1,
                     "oracle_nll": oracle_nll(run.oracle, plain.to(run.generator.device)),
                     "test_nll": temperature_nll(run.generator, test, temp), "test_nll_se": 0.0, "cost": 1.0})
        proposal, _ = sample_tokens(run.generator, n_proposal, run.max_len, temperature=temp,
                                    rng=torch.Generator(device=run.generator.device).manual_seed(seed + 1))
        corrected = residual_nll(sequence_nll(run.generator, test_tokens, test_lengths, temperature=temp),
                                 energy, ratio.log_ratio(proposal), n_tokens=test_lengths)
        for k in [k for k in candidates if k > 1]:
            res = resample_run(run, n_samples, method="sir", candidates=k, temperature=temp, ratio=ratio,
                               rng=torch.Generator(device=run.generator.device).manual_seed(seed))
            rows.append({**common, "algorithm": f"{base}+sir", "temperature": temp, "method": "sir",
                         "candidates": k, "oracle_nll": oracle_nll(run.oracle, res.tokens.to(run.generator.device)),
                         "test_nll": corrected["nll_per_token"], "test_nll_se": corrected["nll_per_token_se"],
                         "cost": res.stats["cost_per_output"], "ess_mean": res.stats["ess_mean"]})
        if rejection > 0:
            res = resample_run(run, n_samples, method="rejection", candidates=rejection, temperature=temp,
                               ratio=ratio, rng=torch.Generator(device=run.generator.device).manual_seed(seed))
            row = {**common, "algorithm": f"{base}+rejection", "temperature": temp, "method": "rejection",
                   "candidates": rejection, "test_nll": corrected["nll_per_token"],
                   "test_nll_se": corrected["nll_per_token_se"], "cost": res.stats["cost_per_output"],
                   "acceptance_rate": res.stats["acceptance_rate"], "n_samples": res.stats["n_out"],
                   "oracle_nll": (oracle_nll(run.oracle, res.tokens.to(run.generator.device))
                                  if res.stats["n_out"] else float("nan"))}
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| run | algorithm | T | K | oracle NLL | test NLL (± SE) | cost/output | ESS | acceptance |"
    out = [head, "|" + "---|" * 9]

    def f(v, fmt="{:.3f}"):
        return "" if v is None or v == "" else fmt.format(v)

    for r in rows:
        out.append(f"| {r['run']} | {r['algorithm']} | {r['temperature']:g} | {r['candidates']} | "
                   f"{f(r['oracle_nll'])} | {f(r['test_nll'])} ± {f(r['test_nll_se'])} | {f(r['cost'], '{:.1f}')} | "
                   f"{f(r.get('ess_mean'), '{:.2f}')} | {f(r.get('acceptance_rate'))} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--ratio-from", choices=["d", "ebm"], default="d")
    p.add_argument("--temperatures", default="0.8,0.9,1.0,1.1,1.2")
    p.add_argument("--candidates", default="1,2,4,8,16,64")
    p.add_argument("--rejection", type=int, default=64, help="candidates per output for rejection (0: skip)")
    p.add_argument("--n-samples", type=int, default=10000)
    p.add_argument("--n-proposal", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "density_ratio_frontier.csv"))
    p.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    temps = [float(x) for x in a.temperatures.split(",")]
    ks = [int(x) for x in a.candidates.split(",")]
    rows = [r for run in a.runs for r in frontier_rows(run, temps, ks, a.rejection, a.ratio_from, a.n_samples,
                                                       a.n_proposal, a.seed, device=a.device)]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    table = markdown(rows)
    print(table)
    if a.write:
        from _doc import command, machine, update_section

        update_section("density_ratio", "## Density-ratio sampling on the oracle frontier\n\n"
                       f"`{command()}` on {machine()}. NLL_test of the `+sir`/`+rejection` rows is the corrected "
                       "model p_T·r/Z_T (K → ∞), log Z importance-sampled: an estimate with its SE.\n\n" + table)


if __name__ == "__main__":
    main()
