"""docs/configuration.md lists every config key (regenerate with scripts/gen_config_doc.py)."""

import dataclasses
import os

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
