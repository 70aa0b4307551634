"""Evaluation subcommands of the ``llmgan`` CLI: ``sweep``, ``report`` and ``metrics``.

    llmgan sweep RUN_DIR [RUN_DIR ...] --temperatures 0.5:1.5:11 --out DIR [--data TEST] [--n-samples N] [--json]
    llmgan report RUN_DIR [RUN_DIR ...] --out DIR [--sweep DIR] [--n-samples N]
    llmgan metrics --samples GEN.txt [--references REF.txt] [--metrics bleu,self_bleu,distinct,fed]
                   [--tokenizer nltk|whitespace|char] [--json]

``metrics`` scores any text files, from any model: no run directory is involved. Its BLEU is the one
``evaluate`` / ``sweep`` / ``report`` compute with their default ``--bleu-references raw``: the same
samples give the same numbers (docs/configuration.md, "BLEU").
Registered through ``llmgan.cli.EXTRA_MODULES``; errors are LLMGanError, printed as one line, exit 2.
"""

from __future__ import annotations

import json
import sys

from llmgan.errors import ConfigError, DataError

METRIC_NAMES = ("bleu", "self_bleu", "distinct", "fed")
DEFAULT_METRICS = "bleu,self_bleu,distinct"  # fed loads a sentence encoder: asked for explicitly


def _setup_torch(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _device(name: str):
    from llmgan.training.distributed import resolve_device

    return resolve_device(name)


def _positive(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


# ------------------------------------------------------------------------------------------ sweep
def cmd_sweep(args) -> int:
    from llmgan.sweep import parse_temperatures, sweep

    _setup_torch(args)
    temps = parse_temperatures(args.temperatures)  # validate before loading any run
    rows = sweep(args.run_dirs, temps, out_dir=args.out, data=args.data, n_samples=args.n_samples, seed=args.seed,
                 device=_device(args.device), bleu_references=args.bleu_references,
                 bleu_tokenizer=args.bleu_tokenizer)
    if args.json:
        print(json.dumps(rows))
    else:
        from llmgan.sweep import sweep_markdown

        print(sweep_markdown(rows))
        print(f"wrote sweep.csv, sweep.md, sweep.png to {args.out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------ report
def cmd_report(args) -> int:
    from llmgan.report import build_report

    _setup_torch(args)
    path = build_report(args.run_dirs, args.out, sweep_dir=args.sweep, n_samples=args.n_samples,
                        temperatures=args.temperatures, n_show=args.n_show, seed=args.seed, data=args.data,
                        device=_device(args.device), bleu_references=args.bleu_references,
                        bleu_tokenizer=args.bleu_tokenizer)
    print(path)
    return 0


# ------------------------------------------------------------------------------------------ metrics
def _read_tokenized(path: str, what: str, tokenizer: str) -> list[list[str]]:
    from llmgan.data import read_lines
    from llmgan.metrics import tokenize_lines

    lines = list(read_lines(path))  # DataError for missing / empty / binary / non-UTF-8 files
    if what == "samples":
        # A blank line is an empty sample (`llmgan generate` writes one for a sample that ended at
        # once); it scores 0, as in `llmgan evaluate` and Texygen. Reference files skip blank lines.
        with open(path, encoding="utf-8-sig", newline="") as f:
            lines = f.read().split("\n")
        if lines and lines[-1].strip() == "":
            lines.pop()  # the final newline ends the last line; it starts no sample
    toks = tokenize_lines(lines, tokenizer)  # the tokenization evaluate/sweep/report use
    if not any(toks):
        raise DataError(f"{path}: the {what} file holds no tokens")
    return toks


def parse_orders(spec: str | None) -> tuple[int, ...] | None:
    """``--orders "2,3,4,5"`` -> (2, 3, 4, 5); None -> None (each metric's default orders)."""
    if spec is None:
        return None
    try:
        orders = tuple(int(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--orders {spec!r}: expected a comma list of n-gram orders, e.g. 2,3,4,5") from None
    if not orders or any(not 1 <= n <= 8 for n in orders):
        raise ConfigError(f"--orders {spec!r}: orders must be whole numbers from 1 to 8")
    return tuple(sorted(set(orders)))


def score_texts(samples: list[list[str]], references: list[list[str]] | None, metrics: list[str],
                orders: tuple[int, ...] | None = None) -> dict:
    """The ``llmgan metrics`` values for tokenized samples (and references for BLEU / FED).

    BLEU-2..5 against the references and Self-BLEU-2..4, distinct-1..4 of the samples: the same
    orders ``llmgan evaluate`` reports for a run. ``orders`` replaces both BLEU's and Self-BLEU's
    (Caccia et al.'s axes need Self-BLEU-5 on EMNLP News).
    """
    from llmgan import metrics as M

    out: dict = {"n_samples": len(samples)}
    if references is not None:
        out["n_references"] = len(references)
    if "bleu" in metrics:
        out.update(M.bleu(samples, references, max_n=orders or (2, 3, 4, 5)))
    if "self_bleu" in metrics:
        if len(samples) < 2:
            raise DataError("self_bleu: the samples file needs at least 2 lines")
        out.update(M.self_bleu(samples, max_n=orders or (2, 3, 4)))
    if "distinct" in metrics:
        out.update(M.distinct(samples))
    if "fed" in metrics:
        out["fed"] = M.fed([" ".join(t) for t in samples], [" ".join(t) for t in references])
    return out


def cmd_metrics(args) -> int:
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if not metrics or unknown:
        bad = repr(unknown[0]) if unknown else "none given"
        raise ConfigError(f"--metrics: unknown metric {bad} (valid: {', '.join(METRIC_NAMES)})")
    needs_refs = [m for m in metrics if m in ("bleu", "fed")]
    if needs_refs and not args.references:
        raise ConfigError(f"--metrics {needs_refs[0]}: needs --references REF.txt")
    samples = _read_tokenized(args.samples, "samples", args.tokenizer)
    # a references file that was given is read (and checked) even when no chosen metric needs it
    refs = _read_tokenized(args.references, "references", args.tokenizer) if args.references else None
    result = score_texts(samples, refs, metrics, parse_orders(args.orders))
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        print(f"{'metric':<{width}}  value")
        for k, v in result.items():
            print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return 0


# ------------------------------------------------------------------------------------------ parser
def add_bleu_arguments(p) -> None:
    """``--bleu-references`` / ``--bleu-tokenizer``: the BLEU definition (default: the run's eval config)."""
    p.add_argument("--bleu-references", default=None, choices=["raw", "vocab"],
                   help="BLEU references: raw = the held-out texts as written, as `llmgan metrics` reads them; "
                        "vocab = mapped through the run's vocabulary (OOV -> <unk>). Default: eval.bleu_references "
                        "(raw)")
    p.add_argument("--bleu-tokenizer", default=None, choices=["auto", "nltk", "whitespace", "char"],
                   help="tokens of BLEU / Self-BLEU / distinct-n (default: eval.bleu_tokenizer, auto)")


def register(sub) -> None:
    """Add ``sweep``, ``report`` and ``metrics`` to the ``llmgan`` subparsers."""
    from llmgan.report import DEFAULT_REPORT_TEMPERATURES
    from llmgan.sweep import DEFAULT_TEMPERATURES

    s = sub.add_parser("sweep", help="quality-diversity curves: score runs over a grid of sampling temperatures")
    s.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    s.add_argument("--temperatures", default=DEFAULT_TEMPERATURES,
                   help=f"START:STOP:COUNT or a comma list (default {DEFAULT_TEMPERATURES})")
    s.add_argument("--out", required=True, help="directory for sweep.csv, sweep.md, sweep.png")
    s.add_argument("--data", default=None, help="held-out file (default: each run's test data)")
    s.add_argument("--n-samples", type=_positive, default=None,
                   help="samples per temperature (default: eval.n_samples)")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=None)
    add_bleu_arguments(s)
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser("report", help="HTML + Markdown report comparing runs: metrics, curves, sweep, samples")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", required=True, help="report directory (index.html, report.md, PNGs)")
    r.add_argument("--sweep", default=None, metavar="DIR", help="show this existing sweep instead of running one")
    r.add_argument("--temperatures", default=DEFAULT_REPORT_TEMPERATURES,
                   help=f"sweep grid when --sweep is not given (default {DEFAULT_REPORT_TEMPERATURES})")
    r.add_argument("--n-samples", type=_positive, default=None,
                   help="samples per run for evaluation and sweep (default: eval.n_samples)")
    r.add_argument("--n-show", type=int, default=10, help="sample texts shown per run (default 10)")
    r.add_argument("--data", default=None, help="held-out file (default: each run's test data)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto")
    r.add_argument("--threads", type=int, default=None)
    add_bleu_arguments(r)
    r.set_defaults(func=cmd_report)

    m = sub.add_parser("metrics", help="score text files from any model: BLEU, Self-BLEU, distinct-n, FED")
    m.add_argument("--samples", required=True, metavar="GEN.txt", help="generated texts, one per line")
    m.add_argument("--references", default=None, metavar="REF.txt", help="reference texts (for bleu, fed)")
    m.add_argument("--metrics", default=DEFAULT_METRICS,
                   help=f"comma list of {', '.join(METRIC_NAMES)} (default {DEFAULT_METRICS})")
    m.add_argument("--tokenizer", default="nltk", choices=["nltk", "whitespace", "char"],
                   help="how lines become tokens: nltk = Texygen's word tokenization (default), whitespace = "
                        "str.split(), char = characters without whitespace")
    m.add_argument("--orders", default=None, metavar="N,N,...",
                   help="n-gram orders of BLEU and Self-BLEU (default: BLEU 2,3,4,5 and Self-BLEU 2,3,4)")
    m.add_argument("--json", action="store_true", help="one JSON object")
    m.set_defaults(func=cmd_metrics)
