"""CLI: ``llmgan export RUN --format hf|onnx --out DIR`` (registered through ``llmgan.cli.EXTRA_MODULES``)."""

from __future__ import annotations

import json


def cmd_export(args) -> int:
    from llmgan.export import export_run

    print(json.dumps(export_run(args.run_dir, args.format, args.out, merge_lora=not args.keep_adapter)))
    return 0


def register(sub) -> None:
    e = sub.add_parser("export", help="write a run's generator as a Hugging Face model or an ONNX logits graph")
    e.add_argument("run_dir")
    e.add_argument("--format", required=True, choices=["hf", "onnx"])
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--keep-adapter", action="store_true",
                   help="hf with LoRA: write the peft adapter instead of merging it into the weights")
    e.set_defaults(func=cmd_export)
