"""Adversarial algorithms. Importing this package registers each one by name."""

from llmgan.algorithms import (
    gad,  # noqa: F401,E402  (registration)
    gsgan,  # noqa: F401,E402  (registration)
    leakgan,  # noqa: F401,E402  (registration)
    maligan,  # noqa: F401,E402  (registration)
    rankgan,  # noqa: F401,E402  (registration)
    relgan,  # noqa: F401,E402  (registration)
    residual_ebm,  # noqa: F401,E402  (registration)
    scratchgan,  # noqa: F401,E402  (registration)
    seqgan,  # noqa: F401,E402  (registration)
    spin,  # noqa: F401,E402  (registration)
    textgan,  # noqa: F401,E402  (registration)
    wgangp,  # noqa: F401,E402  (registration)
)
from llmgan.algorithms.base import ALGORITHMS, Algorithm, GANContext, build_algorithm, register

__all__ = ["ALGORITHMS", "Algorithm", "GANContext", "build_algorithm", "register"]
