"""CLI for the LLM features: ``detect``, ``data make`` (application datasets) and ``apps eval``.

Registered through ``llmgan.cli.EXTRA_MODULES``; each command is a thin layer over
:mod:`llmgan.detect` and :mod:`llmgan.apps`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from llmgan.errors import ConfigError, LLMGanError


# ---------------------------------------------------------------------------------------- detect
def cmd_detect(args) -> int:
    from llmgan.detect import detect

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold: expected a probability in [0, 1], got {args.threshold}")
    from llmgan.training.distributed import resolve_device

    out = detect(args.run_dir, args.file, threshold=args.threshold, real=args.real, fake=args.fake,
                 n_calibration=args.n_calibration, recalibrate=args.recalibrate, seed=args.seed,
                 device=resolve_device(args.device))
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    for r in out["results"]:
        print(f"{r['p_human']:.4f}\t{r['label']}\t{r['text']}")
    summary = [f"threshold {out['threshold']:.4f}"]
    cal = out.get("calibration") or {}
    if "balanced_accuracy" in cal:
        summary.append(f"validation balanced accuracy {cal['balanced_accuracy']:.4f}")
    if "auroc" in out:
        summary.append(f"AUROC {out['auroc']:.4f}, balanced accuracy {out['balanced_accuracy']:.4f}")
    print("; ".join(summary), file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------- data make
def _write_jsonl(path: str, records: list[dict]) -> None:
    from llmgan.training.checkpoint import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def make_app_data(app: str, out: str, n: int = 2000, seed: int = 0, input_path: str | None = None,
                  split: tuple[float, float, float] = (0.9, 0.05, 0.05)) -> dict[str, int]:
    """Write ``out/{train,valid,test}.jsonl`` for an application; returns the record counts."""
    from llmgan.data import split_texts

    if app == "translation":
        from llmgan.apps.translation import make_records

        recs = make_records(n, seed)
    elif app == "code":
        from llmgan.apps.code import make_records

        recs = make_records(n, seed)
    elif app in ("summarization", "dialogue"):
        if not input_path:
            raise ConfigError(f"data make {app}: --input FILE.jsonl is required (your own data, see docs/llm.md)")
        from llmgan.apps.text import convert

        recs = convert(input_path, app)
    else:
        raise ConfigError(f"data make: unknown application {app!r} (translation|code|summarization|dialogue)")
    parts = split_texts(recs, list(split), seed=seed)
    os.makedirs(out, exist_ok=True)
    counts = {}
    for name, part in zip(("train", "valid", "test"), parts):
        _write_jsonl(os.path.join(out, f"{name}.jsonl"), part)
        counts[name] = len(part)
    return counts


def cmd_data_make(args) -> int:
    counts = make_app_data(args.app, args.out, n=args.n, seed=args.seed, input_path=args.input)
    print(f"wrote {', '.join(f'{k}.jsonl ({v})' for k, v in counts.items())} to {args.out}")
    return 0


# ---------------------------------------------------------------------------------------- apps eval
def evaluate_app(run, app: str, data: str | None = None, n: int | None = None, seed: int = 0,
                 greedy: bool = True, temperature: float = 1.0, unsafe_exec: bool = False) -> dict:
    """Generate a response for each test prompt and score it with the application's metric."""
    import torch

    from llmgan.data import read_jsonl
    from llmgan.detect import _left_pad
    from llmgan.training.conditional import sample_for_prompts

    path = data or run.cfg.data.test
    if not path:
        raise ConfigError("apps eval: no test file (pass --data FILE.jsonl)")
    recs = list(read_jsonl(path, fields=("prompt", "response")))[: n or None]
    pad = run.tokenizer.pad_id if run.tokenizer.pad_id is not None else 0
    prompts = _left_pad([run.encode_prompt(r["prompt"]) for r in recs], pad)
    tokens, _ = sample_for_prompts(run.generator, prompts, run.max_len, top_k=1 if greedy else None,
                                   temperature=temperature, rng=torch.Generator().manual_seed(seed))
    hyps = [run.tokenizer.decode(row) for row in tokens.tolist()]
    refs = [r["response"] for r in recs]
    if app == "translation":
        from llmgan.apps.translation import score

        result = score(hyps, refs)
    elif app == "code":
        from llmgan.apps.code import score

        if any("expected" not in r for r in recs):
            raise ConfigError(f"apps eval code: {path} records need an \"expected\" output (made by data make code)")
        result = score(hyps, [r["expected"] for r in recs], unsafe=unsafe_exec)
    elif app in ("summarization", "dialogue"):
        from llmgan.apps.text import score

        result = score(hyps, refs)
    else:
        raise ConfigError(f"apps eval: unknown application {app!r}")
    return {"n": len(recs), **result, "examples": [{"prompt": r["prompt"], "output": h} for r, h in
                                                   zip(recs[:3], hyps[:3])]}


def cmd_apps_eval(args) -> int:
    from llmgan.run import load_run
    from llmgan.training.distributed import resolve_device

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run = load_run(args.run_dir, device=resolve_device(args.device))
    res = evaluate_app(run, args.app, data=args.data, n=args.n, seed=args.seed, greedy=not args.sample,
                       unsafe_exec=args.unsafe_exec)
    print(json.dumps(res, ensure_ascii=False))
    return 0


# ---------------------------------------------------------------------------------------- register
def _add_make(parser_holder, name: str) -> None:
    m = parser_holder.add_parser(name, help="write an application's train/valid/test JSONL (docs/llm.md)")
    m.add_argument("app", choices=["translation", "code", "summarization", "dialogue"])
    m.add_argument("--out", required=True, help="output directory")
    m.add_argument("--n", type=int, default=2000, help="records to generate (translation, code)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--input", default=None, help="your JSONL file (summarization, dialogue)")
    m.set_defaults(func=cmd_data_make)


def _subparsers_of(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse keeps no public handle on a parser's subparsers
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def register(sub) -> None:
    d = sub.add_parser("detect", help="score texts as human vs generated with a run's discriminator")
    d.add_argument("run_dir")
    d.add_argument("file", nargs="?", default=None,
                   help='texts: .txt (one per line) or JSONL {"text"[, "label": "human"|"generated"]}')
    d.add_argument("--json", action="store_true", help="one JSON object with every result")
    d.add_argument("--threshold", type=float, default=None, help="p_human threshold (default: calibrated)")
    d.add_argument("--real", default=None, help="file of human texts (AUROC with --fake)")
    d.add_argument("--fake", default=None, help="file of generated texts (AUROC with --real)")
    d.add_argument("--n-calibration", type=int, default=500, help="validation texts used to calibrate")
    d.add_argument("--recalibrate", action="store_true", help="ignore a stored detector.json")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    d.add_argument("--threads", type=int, default=None)
    d.set_defaults(func=cmd_detect)

    data_parser = sub.choices.get("data")
    data_sub = _subparsers_of(data_parser) if data_parser is not None else None
    a = sub.add_parser("apps", help="LLM applications: make data, evaluate a run")
    asub = a.add_subparsers(dest="apps_command", metavar="SUBCOMMAND")
    if data_sub is not None:
        _add_make(data_sub, "make")  # llmgan data make ...
    _add_make(asub, "make")  # llmgan apps make ... (same thing)
    e = asub.add_parser("eval", help="generate for the test prompts and score (BLEU, pass rate, ROUGE-L)")
    e.add_argument("run_dir")
    e.add_argument("--app", required=True, choices=["translation", "code", "summarization", "dialogue"])
    e.add_argument("--data", default=None, help="test JSONL (default: the run's data.test)")
    e.add_argument("--n", type=int, default=None, help="evaluate the first N records")
    e.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    e.add_argument("--unsafe-exec", action="store_true",
                   help="code: run programs with only the in-process hook where no OS sandbox (bubblewrap) "
                        "can start (no security boundary; docs/safety.md)")
    e.set_defaults(func=cmd_apps_eval)


__all__ = ["LLMGanError", "evaluate_app", "make_app_data", "register"]
