"""Adversarial algorithms. Importing this package registers each one by name."""

from llmgan.algorithms.base import ALGORITHMS, Algorithm, GANContext, build_algorithm, register

from llmgan.algorithms import gad  # noqa: F401,E402  (registration)
from llmgan.algorithms import gsgan  # noqa: F401,E402  (registration)
from llmgan.algorithms import leakgan  # noqa: F401,E402  (registration)
from llmgan.algorithms import maligan  # noqa: F401,E402  (registration)
from llmgan.algorithms import rankgan  # noqa: F401,E402  (registration)
from llmgan.algorithms import relgan  # noqa: F401,E402  (registration)
from llmgan.algorithms import scratchgan  # noqa: F401,E402  (registration)
from llmgan.algorithms import seqgan  # noqa: F401,E402  (registration)
from llmgan.algorithms import textgan  # noqa: F401,E402  (registration)
from llmgan.algorithms import wgangp  # noqa: F401,E402  (registration)

__all__ = ["ALGORITHMS", "Algorithm", "GANContext", "build_algorithm", "register"]
