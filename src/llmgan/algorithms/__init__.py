"""Adversarial algorithms. Importing this package registers each one by name."""

from llmgan.algorithms.base import ALGORITHMS, Algorithm, GANContext, build_algorithm, register

from llmgan.algorithms import seqgan  # noqa: F401,E402  (registration)

__all__ = ["ALGORITHMS", "Algorithm", "GANContext", "build_algorithm", "register"]
