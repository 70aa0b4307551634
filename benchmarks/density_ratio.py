"""The density-ratio curves (issue 11): a run's generator corrected by its discriminator (or residual
EBM) read as r = p_data / p_G, over a temperature sweep x K candidates, on the oracle frontier and on COCO.

    python benchmarks/density_ratio.py RUN [RUN ...] [--ratio-from d|ebm] [--temperatures 0.7,0.85,1.0,1.15]
        [--candidates 1,2,4,8,16,64] [--rejection 64] [--n-samples 1000] [--n-proposal 10000]
        [--out benchmarks/results/density_ratio_frontier.csv] [--write]
    python benchmarks/density_ratio.py --coco [--data ../shared/data/image_coco.txt]
        [--coco-out runs/density_ratio/coco] [--mle-epochs 10] [--ebm-rounds 8] ... [--write]

Oracle runs (``RUN``): per run and temperature T, rows with the columns of ``oracle_frontier.csv``
(``run``, ``algorithm``, ``seed``, ``temperature``, ``oracle_nll``, ``test_nll``) and what the
density-ratio points need besides:

* K = 1 (``algorithm`` = the run's own, ``mle`` for a residual_ebm run whose G is the frozen MLE model):
  NLL_oracle of plain samples at T, NLL_test of the tempered G (``llmgan sweep``'s axes).
* K > 1 (``<base>+sir``): NLL_oracle of SIR samples (K candidates at T each, one kept w.p. ∝ r), and as
  NLL_test the corrected model ``p_T r / Z_T`` -- the law SIR tends to as K grows -- with log Z_T
  importance-sampled from ``--n-proposal`` samples at T (``test_nll_se``: its standard error; an
  ESTIMATE). SIR at finite K has no tractable density, so its coverage point is the K -> infinity one.
* ``<base>+rejection``: rejection sampling with up to ``--rejection`` candidates per output, with the
  acceptance rate; ``cost`` = generator samples (= ratio evaluations) per output, for every row;
  ``wall_s`` = the wall time of drawing and scoring them (not of the metrics).

``--write`` (oracle) puts the K > 1 and rejection rows into ``benchmarks/results/oracle_frontier.csv``
(one ``run`` per E-run x method x K, e.g. ``ebm_s0+sir_k8``; earlier rows of the same names are
replaced, every other row kept), plots them beside MLE seed 0's curve (docs/img/density_ratio_frontier.png)
and writes the section ``density-ratio`` of docs/benchmarks.md: the frontier-gap table of
:mod:`llmgan.frontier` against MLE seed 0 (rows ``mle_s0``.. of the CSV; seed band from ``mle_s1``..)
and the sampling cost.

``--from-csv A.csv,B.csv``: the rows of earlier invocations (``--out`` files) instead of sampling, e.g. one
invocation per run while others train, then one ``--from-csv ... --write``.

``--coco``: trains (if absent) an MLE LSTM on the COCO captions and a residual EBM (NCE) on it, then the
same sweep scored on text: BLEU-4 (against the test file), Self-BLEU-4, and test NLL (plain: the
tempered G; resampled: the corrected model's importance-sampled estimate). Skipped with one line when
the data file is absent. ``--write``: section ``density-ratio-coco``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(__file__))
ROOT = os.path.join(os.path.dirname(__file__), "..")
FRONTIER_CSV = os.path.join(ROOT, "benchmarks", "results", "oracle_frontier.csv")
PNG = os.path.join(ROOT, "docs", "img", "density_ratio_frontier.png")
COCO = os.path.join(ROOT, "..", "shared", "data", "image_coco.txt")
COLUMNS = ["run", "algorithm", "seed", "temperature", "oracle_nll", "test_nll", "method", "candidates",
           "test_nll_se", "cost", "wall_s", "ess_mean", "acceptance_rate", "n_samples", "ratio_from",
           "bleu_4", "self_bleu_4"]


def _sweep(run, temperatures: list[float], candidates: list[int], rejection: int, ratio, n_samples: int,
           n_proposal: int, seed: int, score: Callable[[torch.Tensor, torch.Tensor], dict], base: str,
           common: dict, on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Plain / SIR / rejection samples per temperature, each row scored by ``score(tokens, lengths)``,
    with the corrected model's NLL_test (importance-sampled) on the resampled rows."""
    from llmgan.metrics.density_ratio import residual_nll, sequence_nll
    from llmgan.metrics.detection import _pad_to
    from llmgan.resample import resample_run
    from llmgan.sweep import temperature_nll
    from llmgan.training.evaluation import held_out_corpus, sample_tokens

    test = held_out_corpus(run)
    if test is None:
        from llmgan.errors import ConfigError

        raise ConfigError(f"{run.run_dir}: no held-out data")
    dev = run.generator.device
    pad = run.tokenizer.pad_id if run.tokenizer.pad_id is not None else 0
    test_tokens = _pad_to(test.tokens, run.max_len, pad)
    test_lengths = test.lengths.clamp(max=run.max_len)
    energy = -ratio.log_ratio(test_tokens)  # E = -log r of the held-out sequences (T-independent)
    rows: list[dict] = []

    def add(row: dict) -> None:
        rows.append(row)
        if on_row is not None:  # written as it comes: a slow machine's partial sweep is still on disk
            on_row(row)

    for temp in temperatures:
        t0 = time.perf_counter()
        plain, plain_len = sample_tokens(run.generator, n_samples, run.max_len, temperature=temp,
                                         rng=torch.Generator(device=dev).manual_seed(seed))
        wall = time.perf_counter() - t0
        add({**common, "algorithm": base, "temperature": temp, "method": "plain", "candidates": 1,
                     **score(plain, plain_len), "test_nll": temperature_nll(run.generator, test, temp),
                     "test_nll_se": 0.0, "cost": 1.0, "wall_s": wall})
        proposal, _ = sample_tokens(run.generator, n_proposal, run.max_len, temperature=temp,
                                    rng=torch.Generator(device=dev).manual_seed(seed + 1))
        corrected = residual_nll(sequence_nll(run.generator, test_tokens, test_lengths, temperature=temp),
                                 energy, ratio.log_ratio(proposal), n_tokens=test_lengths)
        jobs = [("sir", k) for k in candidates if k > 1] + ([("rejection", rejection)] if rejection > 0 else [])
        for method, k in jobs:
            t0 = time.perf_counter()
            res = resample_run(run, n_samples, method=method, candidates=k, temperature=temp, ratio=ratio,
                               rng=torch.Generator(device=dev).manual_seed(seed))
            wall = time.perf_counter() - t0
            st = res.stats
            row = {**common, "algorithm": f"{base}+{method}", "temperature": temp, "method": method,
                   "candidates": k, "test_nll": corrected["nll_per_token"],
                   "test_nll_se": corrected["nll_per_token_se"], "cost": st["cost_per_output"], "wall_s": wall,
                   "ess_mean": st.get("ess_mean"), "acceptance_rate": st.get("acceptance_rate"),
                   "n_samples": st["n_out"]}
            # a rejection run whose budget ran out before 2 outputs has nothing to score
            row.update(score(res.tokens, res.lengths) if st["n_out"] >= 2 else {})
            add(row)
    return rows


def _ratio(run, ratio_from: str, n_calibration: int, seed: int):
    from llmgan.resample import RatioModel

    ratio = RatioModel(run, ratio_from)
    ratio.calibrate(n=n_calibration, seed=seed)
    return ratio


def frontier_rows(run_dir: str, temperatures: list[float], candidates: list[int], rejection: int = 0,
                  ratio_from: str = "d", n_samples: int = 10000, n_proposal: int = 10000, seed: int = 0,
                  n_calibration: int = 500, device: str = "cpu", on_row: Callable[[dict], None] | None = None
                  ) -> list[dict]:
    """The oracle rows of one run (module docstring)."""
    from llmgan.errors import ConfigError
    from llmgan.models.generators.oracle import oracle_nll
    from llmgan.run import load_run

    run = load_run(run_dir, device=device)
    if run.oracle is None:
        raise ConfigError(f"{run_dir}: not an oracle run (the frontier's axes need the oracle)")
    algo = run.cfg.adversarial.algorithm or "mle"
    base = "mle" if algo == "residual_ebm" else algo
    ratio = _ratio(run, ratio_from, n_calibration, seed)
    name = os.path.basename(os.path.normpath(run_dir))
    common = {"run": name, "seed": run.cfg.seed, "n_samples": n_samples, "ratio_from": ratio_from}

    def score(tokens: torch.Tensor, lengths: torch.Tensor) -> dict:
        return {"oracle_nll": oracle_nll(run.oracle, tokens.to(run.generator.device))}

    return _sweep(run, temperatures, candidates, rejection, ratio, n_samples, n_proposal, seed, score, base, common,
                  on_row)


def text_rows(run_dir: str, temperatures: list[float], candidates: list[int], rejection: int = 0,
              ratio_from: str = "ebm", n_samples: int = 1000, n_proposal: int = 10000, seed: int = 0,
              n_calibration: int = 500, device: str = "cpu", on_row: Callable[[dict], None] | None = None
              ) -> list[dict]:
    """The rows of a text run: BLEU-4 / Self-BLEU-4 of the samples (``llmgan evaluate``'s definition)
    instead of NLL_oracle."""
    from llmgan.metrics import bleu, self_bleu
    from llmgan.run import load_run
    from llmgan.training.evaluation import _token_strings, bleu_tokenizer_for, held_out_corpus, reference_tokens

    run = load_run(run_dir, device=device)
    algo = run.cfg.adversarial.algorithm or "mle"
    base = "mle" if algo == "residual_ebm" else algo
    ratio = _ratio(run, ratio_from, n_calibration, seed)
    tok = bleu_tokenizer_for(run)
    refs = reference_tokens(run, None, run.cfg.eval.bleu_references, tok, held_out_corpus(run))
    common = {"run": os.path.basename(os.path.normpath(run_dir)), "seed": run.cfg.seed, "n_samples": n_samples,
              "ratio_from": ratio_from}

    def score(tokens: torch.Tensor, lengths: torch.Tensor) -> dict:
        gen = _token_strings(run, tokens, lengths, tok)
        return {"bleu_4": bleu(gen, refs, max_n=4)["bleu_4"], "self_bleu_4": self_bleu(gen, max_n=4)["self_bleu_4"]}

    return _sweep(run, temperatures, candidates, rejection, ratio, n_samples, n_proposal, seed, score, base, common,
                  on_row)


def _f(v, fmt: str = "{:.3f}") -> str:
    return "" if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def markdown(rows: list[dict], text: bool = False) -> str:
    q = "BLEU-4 | Self-BLEU-4" if text else "oracle NLL"
    head = f"| run | algorithm | T | K | {q} | test NLL (± SE) | cost/output | wall s | ESS | acceptance |"
    out = [head, "|" + "---|" * (10 + text)]
    for r in rows:
        qv = f"{_f(r.get('bleu_4'))} | {_f(r.get('self_bleu_4'))}" if text else _f(r.get("oracle_nll"))
        out.append(f"| {r['run']} | {r['algorithm']} | {r['temperature']:g} | {r['candidates']} | {qv} | "
                   f"{_f(r['test_nll'])} ± {_f(r['test_nll_se'])} | {_f(r['cost'], '{:.1f}')} | "
                   f"{_f(r.get('wall_s'), '{:.1f}')} | {_f(r.get('ess_mean'), '{:.2f}')} | "
                   f"{_f(r.get('acceptance_rate'))} |")
    return "\n".join(out)


def frontier_name(r: dict) -> str:
    """The ``run`` of a density-ratio point in oracle_frontier.csv: one curve per E-run x method x K."""
    return f"{r['run']}+{r['method']}" + (f"_k{r['candidates']}" if r["method"] == "sir" else "")


def write_frontier(rows: list[dict], path: str = FRONTIER_CSV, reference: str = "mle10") -> tuple[
        list[dict], list[dict], float, str]:
    """Merge the resampled rows into oracle_frontier.csv (same-named rows replaced); return (the reference
    MLE's seed-0 rows ``{reference}_s0``, the new rows as frontier points, the seed-noise band from
    ``{reference}_s1``, ``_s2``, ..., the gap table).

    ``reference`` names the MLE the E runs corrected: the CSV holds two MLE curves (``mle_s*``: 120 epochs,
    ``mle10_s*``: the 10-epoch model every E here was trained on), and a gap against the wrong one is
    meaningless. Only ``{reference}_s<digits>`` rows count (``mle10_scratchgan`` is no MLE seed)."""
    import re

    from llmgan import frontier

    points = [{**r, "run": frontier_name(r)} for r in rows if r["method"] != "plain"
              and math.isfinite(float(r.get("oracle_nll", float("nan"))))]
    merged = frontier.merge_csv(points, path)
    ref = [r for r in merged if r["run"] == f"{reference}_s0"]
    if not ref:
        from llmgan.errors import ConfigError

        raise ConfigError(f"{path}: no {reference}_s0 rows (run benchmarks/oracle_frontier.py first: MLE's curve)")
    seed_run = re.compile(rf"{re.escape(reference)}_s[1-9][0-9]*")
    seeds = [r for r in merged if seed_run.fullmatch(r["run"])]
    noise = frontier.noise_band([g["gap"] for g in frontier.frontier_gaps(ref, seeds)])
    return ref, points, noise, frontier.gap_markdown(ref, points, noise)


def _mean(rs: list[dict], key: str) -> float | None:
    return sum(float(r[key]) for r in rs) / len(rs) if rs and all(r.get(key) is not None for r in rs) else None


def cost_markdown(rows: list[dict]) -> str:
    """Sampling cost per method x K, averaged over runs and temperatures."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], int(r["candidates"])), []).append(r)
    out = ["| method | K | candidates (G samples = D passes) per output | wall ms per output | mean ESS | "
           "acceptance |", "|---|---|---|---|---|---|"]
    for (m, k), rs in groups.items():
        n_out = sum(int(r["n_samples"]) for r in rs) or 1
        out.append(f"| {m} | {k} | {_f(_mean(rs, 'cost'), '{:.1f}')} | "
                   f"{_f(1000 * sum(float(r['wall_s']) for r in rs) / n_out, '{:.2f}')} | "
                   f"{_f(_mean(rs, 'ess_mean'), '{:.2f}')} | {_f(_mean(rs, 'acceptance_rate'))} |")
    return "\n".join(out)


def train_coco(data: str, out: str, mle_epochs: int, ebm_rounds: int, d_samples: int, seed: int,
               device: str) -> str:
    """MLE LSTM 32/32 on COCO (configs/mle_coco.yaml, ``mle_epochs``), then a residual EBM on it (small CNN,
    NCE: ``ebm_rounds`` + 2 refreshes of ``d_samples``); each trained only if absent. Returns the EBM run."""
    from llmgan.config import load_config
    from llmgan.training.engine import Trainer

    test = os.path.join(os.path.dirname(data), "testdata", "image_coco_test.txt")
    mle, ebm = os.path.join(out, "mle"), os.path.join(out, "ebm")
    common = [f"data.train={data}", f"data.test={test}", f"seed={seed}", f"device={device}", "train.progress=false",
              "eval.n_samples=200"]
    if not os.path.isfile(os.path.join(mle, "checkpoints", "latest")):
        cfg = load_config(os.path.join(ROOT, "configs", "mle_coco.yaml"),
                          [*common, f"train.epochs={mle_epochs}", f"train.eval_every={mle_epochs}",
                           f"train.checkpoint_every={mle_epochs}"])
        Trainer(cfg, mle).run()
    if not os.path.isfile(os.path.join(ebm, "checkpoints", "latest")):
        cfg = load_config(os.path.join(ROOT, "configs", "mle_coco.yaml"), [
            *common, f"train.init_from={mle}", "train.epochs=0", "adversarial.algorithm=residual_ebm",
            "discriminator.name=cnn",
            "discriminator.kwargs={emb_dim: 32, filter_sizes: [2, 3, 4, 5], num_filters: [32, 32, 32, 32]}",
            f"adversarial.rounds={ebm_rounds}", "adversarial.d_pretrain_steps=2", f"adversarial.d_samples={d_samples}",
            "adversarial.d_steps=1", "adversarial.d_epochs=2", "adversarial.d_lr=0.001", "adversarial.d_batch_size=64",
            "adversarial.loss=vanilla", "adversarial.eval_every=1000", f"adversarial.checkpoint_every={ebm_rounds}"])
        Trainer(cfg, ebm).run()
    return ebm


def read_rows(paths: list[str]) -> list[dict]:
    """Rows of earlier ``--out`` CSVs, numbers as numbers (empty cells as None)."""
    rows = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                out: dict = {}
                for k, v in r.items():
                    if v == "":
                        out[k] = None
                    elif k in ("run", "algorithm", "method", "ratio_from"):
                        out[k] = v
                    elif k in ("candidates", "n_samples", "seed"):
                        out[k] = int(float(v))
                    else:
                        out[k] = float(v)
                rows.append(out)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*")
    p.add_argument("--ratio-from", choices=["d", "ebm"], default="d")
    p.add_argument("--temperatures", default="0.7,0.85,1.0,1.15")
    p.add_argument("--candidates", default="1,2,4,8,16,64")
    p.add_argument("--rejection", type=int, default=64, help="candidates per output for rejection (0: skip)")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--n-proposal", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "density_ratio_frontier.csv"))
    p.add_argument("--from-csv", default="", help="comma-separated --out CSVs of earlier invocations to report")
    p.add_argument("--coco", action="store_true", help="the COCO part (trains its own MLE and residual EBM runs)")
    p.add_argument("--data", default=COCO)
    p.add_argument("--coco-out", default=os.path.join(ROOT, "runs", "density_ratio", "coco"))
    p.add_argument("--mle-epochs", type=int, default=10)
    p.add_argument("--ebm-rounds", type=int, default=8)
    p.add_argument("--d-samples", type=int, default=5000)
    p.add_argument("--reference", default="mle10", help="the MLE curve of the gaps: rows REF_s0 of "
                   "oracle_frontier.csv, seed band from REF_s1, REF_s2 (mle10: the 10-epoch MLE the E runs corrected)")
    p.add_argument("--note", default="", help="a sentence for the section (what was cut, the reading)")
    p.add_argument("--write", action="store_true", help="write the results into docs/benchmarks.md (and the CSV)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    temps = [float(x) for x in a.temperatures.split(",")]
    ks = [int(x) for x in a.candidates.split(",")]
    if a.coco and not a.from_csv and not os.path.isfile(a.data):
        print(f"density_ratio --coco: {a.data} not found (see ../shared/data/SOURCES.md); COCO part skipped")
        return
    t0 = time.perf_counter()
    out = a.out if not a.coco else os.path.join(a.coco_out, "density_ratio_coco.csv")
    writer = None
    if not a.from_csv:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        fh = open(out, "w", newline="", encoding="utf-8")  # noqa: SIM115 - open for the whole sweep
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()

    def on_row(row: dict) -> None:
        assert writer is not None
        writer.writerow(row)
        fh.flush()

    if a.from_csv:  # with --coco: the rows of an earlier --coco invocation
        rows = read_rows(a.from_csv.split(","))
    elif a.coco:
        ebm = train_coco(a.data, a.coco_out, a.mle_epochs, a.ebm_rounds, a.d_samples, a.seed, a.device)
        rows = text_rows(ebm, temps, ks, a.rejection, "ebm", a.n_samples, a.n_proposal, a.seed, device=a.device,
                         on_row=on_row)
    else:
        if not a.runs:
            p.error("give oracle RUN directories, --from-csv, or --coco")
        rows = [r for run in a.runs for r in frontier_rows(run, temps, ks, a.rejection, a.ratio_from, a.n_samples,
                                                           a.n_proposal, a.seed, device=a.device,
                                                           on_row=on_row)]
    wall_min = (time.perf_counter() - t0) / 60
    if writer is not None:
        fh.close()
    table = markdown(rows, text=a.coco)
    print(table)
    print(cost_markdown(rows))
    if not a.write:
        return
    from _doc import command, machine, update_section

    cmd = command().replace(a.note, "TEXT") if a.note else command()  # the note is printed below, not twice
    where = (f"Command: `{cmd}`; machine: {machine()}, **machine shared** with other jobs "
             f"(wall times are noisy); " + (f"{wall_min:.1f} min in all." if not a.from_csv else
             "the tables are the rows of earlier invocations (their commands are below), not re-sampled."))
    if a.coco:
        update_section("density-ratio-coco", "## Density-ratio sampling on COCO captions\n\n" + where + "\n\n"
                       + (a.note + "\n\n" if a.note else "") + table + "\n\nSampling cost:\n\n" + cost_markdown(rows))
        return
    from llmgan import frontier

    ref, points, noise, gaps = write_frontier(rows, reference=a.reference)
    os.makedirs(os.path.dirname(PNG), exist_ok=True)
    shown = [r for r in points if r["method"] == "rejection" or int(r["candidates"]) in (4, 64)]
    frontier.plot_frontier(ref, shown, PNG, title="Density-ratio sampling (SIR K=4, 64; rejection) vs MLE's "
                           f"temperature curve ({a.reference}_s0)")
    update_section("density-ratio", "## Density-ratio sampling on the oracle frontier\n\n" + where + "\n\n"
                   + (a.note + "\n\n" if a.note else "")
                   + f"Frontier gap of each resampled curve against the temperature curve of `{a.reference}_s0` "
                   f"(the MLE the E runs corrected; rows `{a.reference}_s*` of "
                   "`benchmarks/results/oracle_frontier.csv`; negative = lower NLL_oracle than MLE at the same "
                   f"NLL_test; seed-noise band ±{noise:.3f} from that MLE's other seeds). NLL_test of every `+sir`/"
                   "`+rejection` point is the corrected model p_T·r/Z_T (the K → ∞ law), log Z importance-"
                   "sampled: an estimate with its SE (table below).\n\n" + gaps
                   + "\n\n![density-ratio frontier](img/density_ratio_frontier.png)\n\nAll points:\n\n" + table
                   + "\n\nSampling cost (mean over runs and temperatures):\n\n" + cost_markdown(rows))


if __name__ == "__main__":
    main()
