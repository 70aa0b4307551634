"""llmgan: adversarial training of language models on one engine."""

__version__ = "0.1.0"
