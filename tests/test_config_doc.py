"""docs/configuration.md lists every config key (regenerate with scripts/gen_config_doc.py)."""

import dataclasses
import os
import re

from llmgan import config as C

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "configuration.md")


def test_every_config_field_is_documented():
    text = open(DOC, encoding="utf-8").read()
    for prefix, cls in [("", C.RunConfig), ("data.", C.DataConfig), ("train.", C.TrainConfig),
                        ("adversarial.", C.AdversarialConfig), ("eval.", C.EvalConfig)]:
        for f in dataclasses.fields(cls):
            if f.name in ("data", "generator", "discriminator", "train", "adversarial", "eval"):
                continue
            assert f"`{prefix}{f.name}`" in text, f"{prefix}{f.name} missing from docs/configuration.md"


def test_every_preset_config_loads(tmp_path):
    """Each shipped config parses and validates (data paths need not exist to validate)."""
    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    names = sorted(n for n in os.listdir(root) if n.endswith(".yaml"))
    assert "mle_oracle.yaml" in names and "seqgan_oracle.yaml" in names
    for name in names:
        cfg = C.load_config(os.path.join(root, name))
        if cfg.adversarial.algorithm:
            from llmgan.algorithms import build_algorithm

            build_algorithm(cfg.adversarial.algorithm, cfg.adversarial.params)


def _section(text: str, heading: str) -> str:
    """The text under a '### heading' line, up to the next heading."""
    start = text.index(f"\n### {heading}\n")
    nxt = [i for i in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if i >= 0]
    return text[start : min(nxt) if nxt else len(text)]


def test_every_algorithm_param_and_model_kwarg_is_documented():
    """Each algorithm's Params field and each model's keyword, under that algorithm's / model's heading,
    with its current default (regenerate with scripts/gen_config_doc.py when one changes)."""
    import inspect

    import llmgan.models.discriminators as D
    from llmgan.algorithms import ALGORITHMS
    from llmgan.models import generators as G
    from llmgan.models import hf

    text = open(DOC, encoding="utf-8").read()
    for name, algo in ALGORITHMS.items():
        sec = _section(text, f"adversarial.algorithm: {name}")
        for f in dataclasses.fields(algo.Params):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert f"| `adversarial.params.{f.name}` | `{default!r}` |" in sec, f"{name}: params.{f.name}"
    configs = {"lstm": G.LSTMGeneratorConfig, "gpt": G.GPTGeneratorConfig, "leakgan": G.LeakGANGeneratorConfig,
               "rmc": G.RMCGeneratorConfig}
    from llmgan.models.generators import _REGISTRY

    assert set(configs) == set(_REGISTRY), "a new generator: add it here and in scripts/gen_config_doc.py"
    from_tokenizer = ("vocab_size", "bos_id", "eos_id", "pad_id")
    for name, cls in configs.items():
        sec = _section(text, f"generator.name: {name}")
        for f in dataclasses.fields(cls):
            if f.name not in from_tokenizer:
                assert f"| `generator.kwargs.{f.name}` | `{f.default!r}` |" in sec, f"{name}: kwargs.{f.name}"

    def check_signature(fn, key: str, sec: str, skip) -> None:
        for p in inspect.signature(fn).parameters.values():
            if p.name not in ("self", *skip) and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                assert f"| `{key}.{p.name}` |" in sec, f"{key}.{p.name}"

    for name, cls in D.DISCRIMINATORS.items():
        heads = re.findall(r"\n### (discriminator\.name: .+)\n", text)
        sec = _section(text, next(h for h in heads if name in h.split(": ", 1)[1].split(" / ")))
        check_signature(cls.__init__, "discriminator.kwargs", sec, ("vocab_size", "pad_id"))
    gen_hf, disc_hf = _section(text, "generator.name: hf:PATH"), _section(text, "discriminator.name: hf:PATH")
    check_signature(hf.HFCausalLMGenerator.__init__, "generator.kwargs", gen_hf, ("path", *from_tokenizer))
    check_signature(hf.HFDiscriminator.__init__, "discriminator.kwargs", disc_hf,
                    ("vocab_size", "path", "pad_id", "run_tokenizer"))
