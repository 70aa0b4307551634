"""Regenerate docs/configuration.md from the comments in src/llmgan/config.py."""

import dataclasses
import inspect
import re
import sys

sys.path.insert(0, "src")
from llmgan import config as C  # noqa: E402

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
         "Algorithm-specific keys go under `adversarial.params`; see each `src/llmgan/algorithms/<name>.py`.", ""]
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
open("docs/configuration.md", "w", encoding="utf-8").write("\n".join(lines))
print("wrote docs/configuration.md")
