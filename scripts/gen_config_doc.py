"""Regenerate docs/configuration.md from the comments in src/llmgan/config.py."""

import dataclasses
import inspect
import re
import sys

sys.path.insert(0, "src")
from llmgan import config as C  # noqa: E402

BLEU_SECTION = """## BLEU

`llmgan evaluate`, `sweep`, `report` and `metrics` compute one BLEU: each sample scored with nltk's
`sentence_bleu` against the whole reference set (uniform weights, smoothing method1), averaged over
samples; Self-BLEU scores each sample against the other samples (`llmgan.metrics.bleu`). Two choices
define what is counted, and each command says which it used (`bleu_references`, `bleu_tokenizer` in
its output):

* **References** (`eval.bleu_references`, `--bleu-references`):
  * `raw` (default): the held-out texts as written, read as `llmgan metrics --references TEST.txt`
    reads them. A generated `<unk>` matches nothing, as in Texygen and TextGAN-PyTorch (whose
    vocabularies cover the test set, so their references never hold `<unk>`). `llmgan evaluate RUN`
    and `llmgan generate RUN --out GEN.txt` + `llmgan metrics --samples GEN.txt --references TEST.txt`
    give the same numbers for the same samples (same `--seed`, `-n` = `--n-samples`, the default
    `eval.batch_size` of 1000, and `--ban` for each of `eval.ban_tokens`).
  * `vocab`: the references mapped through the run's vocabulary and back (out-of-vocabulary words
    become `<unk>` and match a generated `<unk>`; rows cut to the run's `max_len`). Higher than
    `raw` whenever the run samples `<unk>`; not comparable with published tables.
* **Tokens** (`eval.bleu_tokenizer`, `--bleu-tokenizer`, `llmgan metrics --tokenizer`), for BLEU,
  Self-BLEU and distinct-n alike:
  * `nltk`: `nltk.word_tokenize(line, preserve_line=True)`, Texygen's tokenization (`night.` ->
    `night`, `.`), with a literal `<unk>` kept as one token. `preserve_line` skips the punkt sentence
    splitter (it needs a data download); on one-sentence lines such as COCO captions and EMNLP news
    it gives the same tokens. Default of `llmgan metrics`.
  * `whitespace`: `str.split()`. `char`: one token per character, whitespace left out.
  * `auto` (default of the run commands): `char` for char runs, `whitespace` for integer-id
    (oracle) runs, `nltk` otherwise.

A blank line of a samples file is an empty sample (score 0), as `llmgan generate` writes one;
blank lines of a references file are skipped. `eval.ban_tokens` (e.g. `["<unk>"]`) bans tokens
from every evaluation sample (training-time evaluation, `evaluate`, `sweep`, `report`);
`llmgan generate --ban TOKEN` does the same for `generate`.
""".splitlines() + [""]

SECTIONS = [("", C.RunConfig), ("data", C.DataConfig), ("generator / discriminator", C.ModelConfig),
            ("train", C.TrainConfig), ("adversarial", C.AdversarialConfig), ("eval", C.EvalConfig)]


def comments(cls):
    src = inspect.getsource(cls)
    out = {}
    for line in src.splitlines():
        m = re.match(r"\s+(\w+): [^=]+= (.+?)\s+#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(3)
    return out


lines = ["# Configuration", "",
         "Every key of a run config, with its default. Generated from `src/llmgan/config.py` by",
         "`python scripts/gen_config_doc.py`; a test checks that every field is listed here.", "",
         "Override any key on the command line: `llmgan train CONFIG --set train.epochs=5 --set seed=1`.",
         "Stable override keys: `data.train`, `data.valid`, `data.test`, `train.epochs`, `train.max_steps`, `seed`.",
         "Algorithm-specific keys go under `adversarial.params`, model-specific ones under `generator.kwargs` /",
         "`discriminator.kwargs`: see the per-algorithm and per-model tables after the `eval` section.", ""]
for title, cls in SECTIONS:
    doc = comments(cls)
    lines += [f"## {title or 'top level'}", "", "| key | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type) or f.name in ("data", "generator", "discriminator", "train",
                                                            "adversarial", "eval") and title == "":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            continue
        prefix = f"{title}." if title and "/" not in title else ("generator." if "/" in title else "")
        lines.append(f"| `{prefix}{f.name}` | `{default!r}` | {doc.get(f.name, '').replace('|', chr(92) + '|')} |")
    lines.append("")
lines += ["`discriminator.name` defaults to `cnn` (the SeqGAN CNN); `discriminator.kwargs` go to its constructor.", ""]


def cell(v) -> str:
    return str(v).replace("|", chr(92) + "|")


def field_comments(cls) -> dict:
    """Inline comments of a dataclass's fields, inherited ones included (base classes first)."""
    out: dict = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            out.update(comments(base))
    return out


def dataclass_rows(prefix: str, cls, skip=()) -> list[str]:
    doc = field_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append(f"| `{prefix}{f.name}` | `{default!r}` | {cell(doc.get(f.name, ''))} |")
    return rows


def signature_rows(prefix: str, fn, skip=()) -> list[str]:
    rows = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", *skip) or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        default = "required" if p.default is p.empty else f"`{p.default!r}`"
        rows.append(f"| `{prefix}{p.name}` | {default} | |")
    return rows


TABLE = ["| key | default | meaning |", "|---|---|---|"]
from llmgan.algorithms import ALGORITHMS  # noqa: E402

lines += ["## adversarial.params, per algorithm", "",
          "The keys of `adversarial.params` for `adversarial.algorithm: NAME` (the fields of the algorithm's",
          "`Params` dataclass in `src/llmgan/algorithms/`); an unknown key is a one-line error.", ""]
for name in sorted(ALGORITHMS):
    rows = dataclass_rows("adversarial.params.", ALGORITHMS[name].Params)
    lines += [f"### adversarial.algorithm: {name}", ""] + (TABLE + rows if rows else ["No parameters."]) + [""]

import llmgan.models.discriminators as D  # noqa: E402
from llmgan.models import generators as G  # noqa: E402
from llmgan.models import hf  # noqa: E402

# generator name -> its config dataclass (test_config_doc.py checks this covers the registry)
GENERATOR_CONFIGS = {"lstm": G.LSTMGeneratorConfig, "gpt": G.GPTGeneratorConfig,
                     "leakgan": G.LeakGANGeneratorConfig, "rmc": G.RMCGeneratorConfig}
TOKENIZER_SET = ("vocab_size", "bos_id", "eos_id", "pad_id")  # the run's tokenizer sets these
lines += ["## generator.kwargs, per generator", "",
          "The keys of `generator.kwargs` for `generator.name: NAME` (the fields of the generator's config",
          f"dataclass; {', '.join(f'`{k}`' for k in TOKENIZER_SET)} come from the run's tokenizer and are",
          "refused).", ""]
for name, cls in GENERATOR_CONFIGS.items():
    lines += [f"### generator.name: {name}", ""] + TABLE
    lines += dataclass_rows("generator.kwargs.", cls, skip=TOKENIZER_SET) + [""]
lines += ["### generator.name: hf:PATH", "", "Keyword arguments of `llmgan.models.hf.HFCausalLMGenerator`.", ""]
lines += TABLE + signature_rows("generator.kwargs.", hf.HFCausalLMGenerator.__init__,
                                skip=("path", *TOKENIZER_SET)) + [""]
lines += ["## discriminator.kwargs, per discriminator", "",
          "The keys of `discriminator.kwargs` for `discriminator.name: NAME` (constructor arguments; `vocab_size`",
          "and `pad_id` come from the run's tokenizer). Aliases share a constructor.", ""]
seen: dict = {}
for name, cls in D.DISCRIMINATORS.items():
    seen.setdefault(cls, []).append(name)
for cls, names in seen.items():
    lines += [f"### discriminator.name: {' / '.join(names)}", ""] + TABLE
    lines += signature_rows("discriminator.kwargs.", cls.__init__, skip=("vocab_size", "pad_id")) + [""]
lines += ["### discriminator.name: hf:PATH", "", "Keyword arguments of `llmgan.models.hf.HFDiscriminator`.", ""]
lines += TABLE + signature_rows("discriminator.kwargs.", hf.HFDiscriminator.__init__,
                                skip=("vocab_size", "path", "pad_id", "run_tokenizer")) + [""]

lines += BLEU_SECTION
open("docs/configuration.md", "w", encoding="utf-8").write("\n".join(lines))
print("wrote docs/configuration.md")
