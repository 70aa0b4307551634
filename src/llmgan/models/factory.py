"""Build generators and discriminators from a run's config and tokenizer.

The token ids a generator needs (vocabulary size, BOS/EOS/PAD) always come from the run's
tokenizer, so a model and its data can never disagree about the vocabulary.
"""

from __future__ import annotations

from llmgan.config import ModelConfig
from llmgan.data.tokenizers import token_ids
from llmgan.errors import ConfigError
from llmgan.models.base import Generator


def make_generator(cfg: ModelConfig, tokenizer) -> Generator:
    from llmgan.models.generators import build_generator

    kwargs = dict(cfg.kwargs)
    for k in ("vocab_size", "bos_id", "eos_id", "pad_id"):
        if k in kwargs:
            raise ConfigError(f"generator.kwargs.{k}: set by the tokenizer, remove it from the config")
    if cfg.name.startswith("hf:"):  # a Hugging Face causal LM (llmgan.models.hf)
        from llmgan.models.hf import build_hf_generator

        return build_hf_generator(cfg.name, tokenizer, **kwargs)
    if cfg.name.startswith("keras:"):  # a Keras 3 model on the torch backend (llmgan.models.keras)
        from llmgan.models.keras import build_keras_generator

        return build_keras_generator(cfg.name, tokenizer, **kwargs)
    kwargs.update(token_ids(tokenizer))
    return build_generator(cfg.name, **kwargs)


def make_discriminator(cfg: ModelConfig, tokenizer):
    from llmgan.models.discriminators import build_discriminator

    kwargs = dict(cfg.kwargs)
    if "vocab_size" in kwargs:
        raise ConfigError("discriminator.kwargs.vocab_size: set by the tokenizer, remove it from the config")
    if cfg.name.startswith("hf:"):  # a Hugging Face encoder / causal LM backbone (llmgan.models.hf)
        from llmgan.models.hf import build_hf_discriminator

        return build_hf_discriminator(cfg.name, tokenizer, **kwargs)
    if cfg.name.startswith("keras:"):
        from llmgan.models.keras import build_keras_discriminator

        return build_keras_discriminator(cfg.name, tokenizer, **kwargs)
    if tokenizer.pad_id is not None:
        kwargs.setdefault("pad_id", tokenizer.pad_id)
    return build_discriminator(cfg.name, vocab_size=tokenizer.vocab_size, **kwargs)
