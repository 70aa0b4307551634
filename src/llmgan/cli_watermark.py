"""CLI for watermarking: ``llmgan watermark keygen`` and ``llmgan watermark detect``.

Registered through ``llmgan.cli.EXTRA_MODULES``; ``llmgan generate --watermark KEYFILE`` samples with the
key (see docs/safety.md). The mechanism is :mod:`llmgan.models.watermark`.
"""

from __future__ import annotations

import json
import os
import sys

from llmgan.errors import ConfigError


def cmd_keygen(args) -> int:
    from llmgan.models.watermark import generate_key

    wm = generate_key(gamma=args.gamma, delta=args.delta, context=args.context)
    wm.save(args.out)
    print(f"wrote watermark key {wm.key_id} (gamma {wm.gamma}, delta {wm.delta}, context {wm.context}) to "
          f"{args.out}; keep it secret: anyone holding it can detect and forge the watermark", file=sys.stderr)
    return 0


def _tokenizer_of(args):
    from llmgan.data import load_tokenizer

    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    if not args.run:
        raise ConfigError("watermark detect: --run RUN_DIR (or --tokenizer FILE) is needed to turn texts into "
                          "the token ids the watermark was written on")
    path = os.path.join(args.run, "tokenizer.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{args.run}: no tokenizer.json (is it a run directory?)")
    return load_tokenizer(path)


def detect_texts(texts: list[str], wm, tokenizer, z_threshold: float = 4.0, ignore_repeated: bool = True) -> dict:
    """Watermark detection on texts tokenized with ``tokenizer``: corpus ``z``/``p_value``/``detected`` and
    ``per_text`` (each with ``text``, ``n_tokens``, ``n_green``, ``z``, ``p_value``, ``detected``)."""
    skip = {i for i in (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) if i is not None}
    if tokenizer.kind == "ids":
        skip = set()  # the oracle's 0 is an ordinary token
    out = wm.detect([tokenizer.encode(t) for t in texts], z_threshold=z_threshold,
                    ignore_repeated=ignore_repeated, skip=skip)
    for r, t in zip(out["per_text"], texts):
        r["text"] = t
    return out


def cmd_detect(args) -> int:
    from llmgan.data import load_texts
    from llmgan.models.watermark import load_key

    wm = load_key(args.key)
    tok = _tokenizer_of(args)
    texts = list(load_texts(args.file, field=args.field))
    out = detect_texts(texts, wm, tok, z_threshold=args.z_threshold, ignore_repeated=not args.count_repeats)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    for r in out["per_text"]:
        print(f"{r['z']:.2f}\t{r['p_value']:.3g}\t{'watermarked' if r['detected'] else '-'}\t{r['text']}")
    print(f"corpus: z {out['z']:.2f}, p {out['p_value']:.3g}, {out['n_green']}/{out['n_tokens']} green tokens, "
          f"{'watermark detected' if out['detected'] else 'no watermark detected'} (z >= {args.z_threshold}); "
          f"{sum(r['detected'] for r in out['per_text'])}/{len(texts)} texts flagged", file=sys.stderr)
    return 0


def register(sub) -> None:
    w = sub.add_parser("watermark", help="green-list watermark: make a key, detect watermarked text")
    wsub = w.add_subparsers(dest="watermark_command", metavar="SUBCOMMAND")
    k = wsub.add_parser("keygen", help="write a new secret watermark key file")
    k.add_argument("--out", required=True, help="key file to write (created with mode 0600; never overwritten)")
    k.add_argument("--gamma", type=float, default=0.25, help="green fraction of the vocabulary")
    k.add_argument("--delta", type=float, default=2.0, help="logit bias added to green tokens")
    k.add_argument("--context", type=int, default=1, help="previous tokens that seed each green list")
    k.set_defaults(func=cmd_keygen)
    d = wsub.add_parser("detect", help="z-score and p-value per text and for the whole file")
    d.add_argument("file", help=".txt (one text per line) or JSONL")
    d.add_argument("--key", required=True, help="key file from watermark keygen")
    d.add_argument("--run", default=None, help="run directory whose tokenizer the texts were generated with")
    d.add_argument("--tokenizer", default=None, help="a tokenizer.json instead of --run")
    d.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    d.add_argument("--z-threshold", type=float, default=4.0, help="flag texts with z at least this")
    d.add_argument("--count-repeats", action="store_true",
                   help="score repeated (context, token) pairs every time (default: once; repeats inflate z)")
    d.add_argument("--json", action="store_true", help="one JSON object: z, p_value, detected, per_text, ...")
    d.set_defaults(func=cmd_detect)
