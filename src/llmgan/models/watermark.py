"""Green-list watermark (Kirchenbauer et al., "A Watermark for Large Language Models", ICML 2023).

At each sampling step a keyed pseudo-random function of the previous ``context`` tokens splits the
vocabulary into a "green" fraction ``gamma`` and a red rest; ``delta`` is added to the green logits
before sampling. Text written that way holds more green tokens than chance; detection needs only the
key and the token ids: with ``T`` scored tokens of which ``G`` are green,
``z = (G - gamma T) / sqrt(T gamma (1 - gamma))`` and the one-sided p-value is ``1 - Phi(z)``. Under the
null (text written without the key) each token is green with probability ``gamma`` independently of
the text, so the false-positive rate at a z threshold holds whatever the text is, except for repeated
(context, token) pairs, which is why detection counts each pair once by default.

The PRF: green(context, token) = mix(h(key, context) ^ mix(token + k1)) / 2^32 < gamma, with ``mix`` a
32-bit integer finaliser (xor-shift-multiply) and ``h`` a chained mix over the context ids. It is
membership per (context, token), so the green set's size is gamma * V in expectation, not exactly,
which the z-test does not need. The key never leaves the key file: artefacts carry ``key_id``, a hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from llmgan.errors import ConfigError

_M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B  # < 2**27: products of 32-bit values stay inside int64
KEY_FORMAT = "llmgan-watermark-key"


def _mix(x: Tensor) -> Tensor:
    """32-bit integer finaliser on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _MUL) & _M32
    x = x ^ (x >> 16)
    x = (x * _MUL) & _M32
    return x ^ (x >> 16)


@dataclass
class Watermark:
    """A secret key and the green-list parameters. ``context``: how many previous tokens seed the list."""

    key: bytes
    gamma: float = 0.25
    delta: float = 2.0
    context: int = 1
    _token_hash: dict[tuple[int, str], Tensor] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ConfigError("watermark key: expected at least 16 bytes of secret")
        if not 0.0 < self.gamma < 1.0:
            raise ConfigError(f"watermark gamma: expected a fraction in (0, 1), got {self.gamma}")
        if not (math.isfinite(self.delta) and self.delta >= 0):
            raise ConfigError(f"watermark delta: expected a finite number >= 0, got {self.delta}")
        if not (isinstance(self.context, int) and 1 <= self.context <= 16):
            raise ConfigError(f"watermark context: expected an integer 1..16, got {self.context}")
        d = hmac.new(self.key, b"llmgan-watermark-prf", hashlib.sha256).digest()
        self._k0 = int.from_bytes(d[:4], "little")
        self._k1 = int.from_bytes(d[4:8], "little")

    @property
    def key_id(self) -> str:
        """A public name for the key (a hash; it reveals nothing usable about the key)."""
        return hashlib.sha256(b"llmgan-watermark-id" + self.key).hexdigest()[:16]

    # ------------------------------------------------------------------------------------ green lists
    def _ctx_hash(self, ctx: Tensor) -> Tensor:
        """(B, context) token ids -> (B,) int64 context hash."""
        c = torch.full(ctx.shape[:1], self._k0, dtype=torch.long, device=ctx.device)
        for j in range(ctx.size(1)):
            c = _mix(c ^ (ctx[:, j].long() & _M32))
        return c

    def _vocab_hash(self, vocab: int, device: torch.device) -> Tensor:
        k = (vocab, str(device))
        if k not in self._token_hash:
            self._token_hash[k] = _mix((torch.arange(vocab, device=device) + self._k1) & _M32)
        return self._token_hash[k]

    def green_mask(self, ctx: Tensor, vocab: int) -> Tensor:
        """(B, context) previous ids -> (B, vocab) bool: the green list of each row."""
        u = _mix(self._ctx_hash(ctx)[:, None] ^ self._vocab_hash(vocab, ctx.device)[None, :])
        return u < int(self.gamma * 2**32)

    def logit_bias(self, ctx: Tensor, vocab: int) -> Tensor:
        """(B, vocab) float: ``delta`` on the green tokens, 0 elsewhere."""
        return self.green_mask(ctx, vocab).float() * self.delta

    def is_green(self, ctx: Sequence[int], token: int) -> bool:
        c = self._ctx_hash(torch.tensor([list(ctx)], dtype=torch.long))
        t = _mix(torch.tensor([(token + self._k1) & _M32]))
        return bool(_mix(c ^ t)[0] < int(self.gamma * 2**32))

    # ------------------------------------------------------------------------------------ detection
    def score_ids(self, ids: Sequence[int], ignore_repeated: bool = True,
                  skip: frozenset[int] | set[int] = frozenset()) -> dict:
        """Green count and z-score of one text's token ids.

        Tokens with fewer than ``context`` predecessors in ``ids`` are not scored (their context is not
        in the text); ids in ``skip`` (special tokens) are neither scored nor used as context.
        ``ignore_repeated`` scores each (context, token) pair once: repeats are not independent draws.
        """
        ids = [int(i) for i in ids if int(i) not in skip]
        h = self.context
        pairs = [(tuple(ids[i - h:i]), ids[i]) for i in range(h, len(ids))]
        if ignore_repeated:
            pairs = list(dict.fromkeys(pairs))
        if not pairs:
            return {"n_tokens": 0, "n_green": 0, "z": 0.0, "p_value": 1.0}
        ctx = torch.tensor([p[0] for p in pairs], dtype=torch.long)
        tok = torch.tensor([p[1] for p in pairs], dtype=torch.long)
        green = _mix(self._ctx_hash(ctx) ^ _mix((tok + self._k1) & _M32)) < int(self.gamma * 2**32)
        return self.z_test(int(green.sum()), len(pairs))

    def z_test(self, n_green: int, n_tokens: int) -> dict:
        if n_tokens == 0:
            return {"n_tokens": 0, "n_green": 0, "z": 0.0, "p_value": 1.0}
        g = self.gamma
        z = (n_green - g * n_tokens) / math.sqrt(n_tokens * g * (1 - g))
        return {"n_tokens": n_tokens, "n_green": n_green, "z": z, "p_value": 0.5 * math.erfc(z / math.sqrt(2))}

    def detect(self, texts_ids: Sequence[Sequence[int]], z_threshold: float = 4.0, ignore_repeated: bool = True,
               skip: frozenset[int] | set[int] = frozenset()) -> dict:
        """Per-text results and a corpus result (green counts pooled over every text)."""
        per = [self.score_ids(ids, ignore_repeated, skip) for ids in texts_ids]
        for r in per:
            r["detected"] = r["n_tokens"] > 0 and r["z"] >= z_threshold
        corpus = self.z_test(sum(r["n_green"] for r in per), sum(r["n_tokens"] for r in per))
        return {**corpus, "detected": corpus["n_tokens"] > 0 and corpus["z"] >= z_threshold,
                "z_threshold": z_threshold, "gamma": self.gamma, "key_id": self.key_id, "per_text": per}

    # ------------------------------------------------------------------------------------ key files
    def to_json(self) -> dict:
        return {"format": KEY_FORMAT, "version": 1, "key": self.key.hex(), "key_id": self.key_id,
                "gamma": self.gamma, "delta": self.delta, "context": self.context}

    def save(self, path: str) -> None:
        """Write the key file readable by its owner only (it is a secret)."""
        if os.path.exists(path):
            raise ConfigError(f"{path}: exists; refusing to overwrite a watermark key")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=1)
            f.write("\n")


def generate_key(gamma: float = 0.25, delta: float = 2.0, context: int = 1) -> Watermark:
    """A fresh 256-bit secret key."""
    return Watermark(secrets.token_bytes(32), gamma=gamma, delta=delta, context=context)


def load_key(path: str, delta: float | None = None) -> Watermark:
    """Read a key file made by ``llmgan watermark keygen`` (``delta`` overrides the stored bias)."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: watermark key file not found (llmgan watermark keygen --out FILE)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a watermark key file ({type(e).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != KEY_FORMAT:
        raise ConfigError(f"{path}: not a watermark key file (no \"format\": \"{KEY_FORMAT}\")")
    try:
        key = bytes.fromhex(d["key"])
        wm = Watermark(key, gamma=float(d["gamma"]), delta=float(d["delta"] if delta is None else delta),
                       context=int(d["context"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: bad watermark key file ({type(e).__name__}: {e})") from None
    return wm
