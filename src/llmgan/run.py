"""Load a finished (or interrupted) run directory: config, tokenizer, models from the latest checkpoint.

Every command that takes a RUN_DIR (generate, evaluate, sweep, report, detect, serve) reads only
the run layout written by the engine, so it works on any run from any algorithm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import yaml

from llmgan.config import RunConfig, config_from_dict
from llmgan.data import EncodedCorpus, Tokenizer, encode_corpus, load_texts, load_tokenizer
from llmgan.errors import CheckpointError, LLMGanError
from llmgan.models.base import Generator
from llmgan.models.factory import make_discriminator, make_generator
from llmgan.training.checkpoint import Checkpointer, load_model_weights, verify_checkpoint_file


@dataclass
class LoadedRun:
    run_dir: str
    cfg: RunConfig
    tokenizer: Tokenizer
    generator: Generator
    checkpoint: str
    oracle: Generator | None = None
    _discriminator: torch.nn.Module | None = None

    @property
    def max_len(self) -> int:
        return self.cfg.eval.max_len or (self.cfg.data.seq_len if self.cfg.data.oracle else self.cfg.data.max_len)

    def discriminator(self) -> torch.nn.Module:
        """The run's discriminator (adversarial runs only)."""
        if self._discriminator is None:
            path = os.path.join(self.checkpoint, "discriminator.safetensors")
            if not os.path.isfile(path):
                raise CheckpointError(f"{self.run_dir}: this run has no discriminator (an MLE-only run?)")
            d = make_discriminator(self.cfg.discriminator, self.tokenizer).to(self.generator.device)
            verify_checkpoint_file(self.checkpoint, "discriminator.safetensors")
            load_model_weights(d, path)
            self._discriminator = d.eval()
        return self._discriminator

    def encode_file(self, path: str) -> EncodedCorpus:
        """Encode a held-out text file with this run's tokenizer and length limit."""
        texts = load_texts(path, field=self.cfg.data.field)
        return encode_corpus(list(texts), self.tokenizer, self.max_len, overflow="truncate", source=path)

    @property
    def is_conditional(self) -> bool:
        """Trained on prompt/response pairs or class labels (data.prompt_field / data.label_field)."""
        return self.cfg.data.prompt_field is not None or self.cfg.data.label_field is not None

    def encode_prompt(self, text: str) -> list[int]:
        """Prompt ids as in training: a class-conditional run takes the label (``pos`` -> ``<label=pos>``),
        hf tokenizers with a chat template wrap the prompt in it (llmgan.data.conditional)."""
        from llmgan.data.conditional import format_prompt, label_prompt

        d = self.cfg.data
        if d.label_field is not None and not text.startswith("<label="):
            text = label_prompt(text)
        return self.tokenizer.encode(format_prompt(self.tokenizer, text, d) if self.is_conditional else text)

    def held_out_path(self) -> str | None:
        """The run's test file: the configured one, or the oracle's held-out samples."""
        if self.cfg.data.test:
            return self.cfg.data.test
        p = os.path.join(self.run_dir, "data", "test.txt")
        return p if os.path.isfile(p) else None


def pick_checkpoint(run_dir: str, cfg: RunConfig, which: str = "auto") -> str:
    """The checkpoint a command loads: ``latest``, ``best`` (early stopping's best validation NLL), or
    ``auto``: the best one of an MLE run trained with early stopping, the latest otherwise (an
    adversarial run's result is its last round, not its pre-training's best validation epoch)."""
    if which not in ("auto", "latest", "best"):
        raise LLMGanError(f"checkpoint: expected auto|latest|best, got {which!r}")
    ckpts = Checkpointer(run_dir)
    best = ckpts.best() if which != "latest" else None
    if which == "best" and best is None:
        raise CheckpointError(f"{run_dir}: no best checkpoint (written only by runs with train.early_stopping)")
    if best is not None and (which == "best" or not cfg.adversarial.algorithm):
        return best
    ckpt = ckpts.latest()
    if ckpt is None:
        raise CheckpointError(f"{run_dir}: no checkpoint yet (checkpoints/latest missing)")
    return ckpt


def load_run(run_dir: str, device: str | torch.device = "cpu", checkpoint: str = "auto") -> LoadedRun:
    """Config, tokenizer and generator of a run; ``checkpoint``: which one (see :func:`pick_checkpoint`)."""
    if not os.path.isdir(run_dir):
        raise LLMGanError(f"{run_dir}: run directory not found")
    cfg_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(cfg_path):
        raise LLMGanError(f"{run_dir}: not a run directory (config.yaml missing)")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = config_from_dict(yaml.safe_load(f) or {})
    except yaml.YAMLError as e:
        raise LLMGanError(f"{cfg_path}: corrupt run config ({e})") from None
    except LLMGanError as e:  # an edited or foreign config: say which file
        raise type(e)(f"{cfg_path}: {e}") from None
    tokenizer = load_tokenizer(os.path.join(run_dir, "tokenizer.json"))
    ckpt = pick_checkpoint(run_dir, cfg, checkpoint)
    generator = make_generator(cfg.generator, tokenizer)
    verify_checkpoint_file(ckpt, "generator.safetensors")
    load_model_weights(generator, os.path.join(ckpt, "generator.safetensors"))
    generator.to(device).eval()
    oracle = None
    if cfg.data.oracle:
        from llmgan.training.data_setup import load_oracle

        oracle = load_oracle(cfg.data.oracle).to(device)
    run = LoadedRun(run_dir, cfg, tokenizer, generator, ckpt, oracle)
    if hasattr(generator, "set_feature_fn") and os.path.isfile(os.path.join(ckpt, "discriminator.safetensors")):
        # LeakGAN samples with its discriminator's leaked features: reattach the run's D.
        from llmgan.models.generators.leakgan import attach_discriminator

        attach_discriminator(generator, run.discriminator())
    return run
