"""Generators (autoregressive LMs) and a name -> class registry for configs and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmgan.errors import ConfigError
from llmgan.models.base import Generator
from llmgan.models.generators.gpt import GPTGenerator, GPTGeneratorConfig
from llmgan.models.generators.leakgan import LeakGANGenerator, LeakGANGeneratorConfig
from llmgan.models.generators.lstm import LSTMGenerator, LSTMGeneratorConfig
from llmgan.models.generators.oracle import load_seqgan_oracle, oracle_nll, random_oracle
from llmgan.models.generators.rmc import RMCGenerator, RMCGeneratorConfig

_REGISTRY: dict[str, Callable[..., Generator]] = {
    "lstm": lambda **kw: LSTMGenerator(LSTMGeneratorConfig(**kw)),
    "gpt": lambda **kw: GPTGenerator(GPTGeneratorConfig(**kw)),
    "leakgan": lambda **kw: LeakGANGenerator(LeakGANGeneratorConfig(**kw)),
    "rmc": lambda **kw: RMCGenerator(RMCGeneratorConfig(**kw)),
}


def build_generator(name: str, **kwargs: Any) -> Generator:
    """Build a generator by registry name ("lstm", "gpt") from its config fields as keywords."""
    try:
        factory = _REGISTRY[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown generator {name!r}; expected one of {sorted(_REGISTRY)}") from None
    try:
        return factory(**kwargs)
    except TypeError as e:  # an unknown / missing config field: say so on one line
        raise ConfigError(f"generator {name!r}: {e}") from None


__all__ = [
    "GPTGenerator",
    "GPTGeneratorConfig",
    "LSTMGenerator",
    "LSTMGeneratorConfig",
    "build_generator",
    "load_seqgan_oracle",
    "oracle_nll",
    "random_oracle",
]
