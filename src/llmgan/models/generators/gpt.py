"""GPT-style Transformer generator (nanoGPT-like, small, with a KV cache).

Token + learned position embeddings, ``n_layers`` pre-norm blocks

    x = x + attn(LayerNorm(x))      causal multi-head self-attention (F.scaled_dot_product_attention)
    x = x + mlp(LayerNorm(x))       Linear(d, 4d) -> GELU -> Linear(4d, d)

a final LayerNorm and ``lm_head`` (tied to the token embedding by default).

KV cache (``State``):

* ``tensors``: one ``(k, v)`` pair per layer, each (B, n_heads, T_so_far, head_dim), batch-first
  so ``State.repeat`` / ``State.select`` / ``State.cat`` work unchanged (Monte-Carlo rollouts, group sampling);
* ``pos``: number of cached positions (T_so_far), padding included;
* ``extra["key_mask"]`` (B, T_so_far) bool: False on left-padding keys, which nobody attends to;
* ``extra["offset"]`` (B,) long: number of left-padding tokens of each row. A row's position ids
  are ``cache index - offset``, so its first real token is at position 0 whatever the padding:
  a left-padded prompt gives exactly the distribution of the same prompt unpadded;
* ``extra["has_pad"]`` (python bool): whether any row has padding (else the cheaper mask-free
  attention paths are used); ``State.cat`` ORs it;
* ``extra["z"]`` (B, d_model), only with a latent code: see below.

Latent code: with ``latent_dim > 0``, ``init_state(z=...)`` projects z (B, latent_dim) with a
learned ``Linear(latent_dim, d_model)`` and ADDS the result to every position's input embedding
(prompt, BOS and response tokens alike). We prefer this to a prefix "memory" token because it
costs no position (max_len keeps its meaning), needs no special case in the padding mask and
gives z a direct path into every step, like TextGAN's G(z). ``z=None`` adds nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from llmgan.errors import ConfigError
from llmgan.models.base import Generator, State, left_padding


@dataclass
class GPTGeneratorConfig:
    vocab_size: int  # number of token ids (BOS/EOS/PAD included)
    d_model: int = 64  # width of the residual stream (= embedding size = lm_head input)
    n_layers: int = 2  # number of Transformer blocks
    n_heads: int = 4  # attention heads per block; must divide d_model
    max_len: int = 256  # most positions per row (prompt + BOS + response, left padding excluded)
    dropout: float = 0.0  # on embeddings, attention weights and residual branches (training only)
    latent_dim: int = 0  # > 0: a latent code z is projected to d_model and added to every input
    bos_id: int = 1  # start-of-response token, fed before the first generated token
    eos_id: int | None = 2  # sampling stops a row at this token; None: always max_len tokens
    pad_id: int | None = 0  # fills after EOS and marks left padding of prompts; None: no padding
    tie_weights: bool = True  # lm_head.weight is the token embedding matrix (fewer parameters)
    lm_bias: bool = True  # lm_head has a bias; False: the exact shapes of GPT-2 (``llmgan export --format hf``)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention over the cached keys/values plus the new positions."""

    def __init__(self, cfg: GPTGeneratorConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)  # q, k, v for all heads in one matmul
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: Tensor, past: tuple[Tensor, Tensor], attn_mask: Tensor | None, is_causal: bool
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (B, T, C), past (k, v) each (B, nh, S0, hd) -> out (B, T, C), new (k, v) (B, nh, S0+T, hd).

        attn_mask: None or bool (B, 1, T, S0+T), True where attending is allowed.
        """
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        v = v.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = torch.cat([past[0], k], dim=2)  # (B, nh, S, hd), S = S0 + T
        v = torch.cat([past[1], v], dim=2)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble the heads side by side
        return self.resid_drop(self.proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: GPTGeneratorConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTGeneratorConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(
        self, x: Tensor, past: tuple[Tensor, Tensor], attn_mask: Tensor | None, is_causal: bool
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, kv = self.attn(self.ln1(x), past, attn_mask, is_causal)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, kv


class GPTGenerator(Generator):
    def __init__(self, cfg: GPTGeneratorConfig):
        super().__init__()
        if cfg.d_model % cfg.n_heads != 0:
            raise ConfigError(f"d_model ({cfg.d_model}) must be a multiple of n_heads ({cfg.n_heads})")
        self.cfg = cfg
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id = (
            cfg.vocab_size,
            cfg.bos_id,
            cfg.eos_id,
            cfg.pad_id,
        )
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model)
        # With a bias: the sampling/loss code reads lm_head.bias, and a bias lets the unigram
        # distribution be learned without bending the (tied) embedding.
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.lm_bias)
        self.latent = nn.Linear(cfg.latent_dim, cfg.d_model) if cfg.latent_dim > 0 else None
        self._register_latent_flag()
        self.apply(self._init_weights)
        # GPT-2: scale the residual output projections by 1/sqrt(2 * n_layers) so the residual
        # stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layers))
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The token embedding (``lm_head.weight`` is the same Parameter when tied); not the position table."""
        return [self.tok_emb.weight]

    # --- Generator interface ------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        """Token ids (B, T) or soft one-hots (B, T, V) -> token embeddings (B, T, d_model)."""
        if x.dtype.is_floating_point:
            return x @ self.tok_emb.weight
        return self.tok_emb(x)

    def init_state(self, batch: int, prompt: Tensor | None = None, z: Tensor | None = None) -> State:
        """Empty KV cache, then the (left-padded) prompt (B, P) run through it, if any."""
        nh, hd = self.cfg.n_heads, self.cfg.d_model // self.cfg.n_heads
        dev, dtype = self.device, self.tok_emb.weight.dtype
        empty = torch.empty(batch, nh, 0, hd, device=dev, dtype=dtype)  # (B, nh, 0, hd)
        extra: dict = {
            "key_mask": torch.ones(batch, 0, dtype=torch.bool, device=dev),  # (B, 0)
            "offset": torch.zeros(batch, dtype=torch.long, device=dev),  # (B,)
            "has_pad": False,
        }
        if z is not None:
            if self.latent is None:
                raise ValueError("this generator was built with latent_dim=0; it takes no z")
            extra["z"] = self.latent(z.to(dtype))  # (B, d_model)
        state = State(tuple((empty, empty) for _ in self.blocks), 0, extra)
        if prompt is not None and prompt.size(1) > 0:
            n_pad, real = left_padding(prompt, batch, self.pad_id)  # (B,), (B, P)
            state.extra["offset"] = n_pad
            state.extra["has_pad"] = bool((n_pad > 0).any())
            _, state = self._forward(prompt, state, real)
        return state

    def forward_hidden(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        """inputs (B, T) ids or (B, T, V) soft one-hots continuing ``state`` -> hidden (B, T, d_model)."""
        return self._forward(inputs, state, None)

    # --- internals ----------------------------------------------------------------------------
    def _forward(self, inputs: Tensor, state: State, new_real: Tensor | None) -> tuple[Tensor, State]:
        """Shared body of forward_hidden and prompt consumption; new_real (B, T) bool marks the
        non-padding inputs (None: all real)."""
        B, T = inputs.shape[:2]
        S0 = state.pos  # cached positions
        offset = state.extra["offset"]  # (B,)
        if S0 + T > self.cfg.max_len:  # cheap upper bound first; the exact check needs the offsets
            longest = int((S0 + T - offset).max())
            if longest > self.cfg.max_len:
                raise ConfigError(
                    f"sequence of {longest} positions exceeds the GPT generator's max_len={self.cfg.max_len}"
                    " (prompt + BOS + response); build it with a larger max_len"
                )
        dev = inputs.device
        if new_real is None:
            new_real = torch.ones(B, T, dtype=torch.bool, device=dev)
        key_mask = torch.cat([state.extra["key_mask"], new_real], dim=1)  # (B, S), S = S0 + T
        q_idx = S0 + torch.arange(T, device=dev)  # (T,) cache index of each new position
        pos = (q_idx[None, :] - offset[:, None]).clamp(min=0)  # (B, T); padding clamps to 0, unused
        x = self.embed(inputs) + self.pos_emb(pos)  # (B, T, d_model)
        if "z" in state.extra:
            x = x + state.extra["z"][:, None, :]
        x = self.drop(x)

        attn_mask, is_causal = self._attn_mask(key_mask, q_idx, S0, bool(state.extra["has_pad"]))
        new_cache = []
        for block, past in zip(self.blocks, state.tensors):
            x, kv = block(x, past, attn_mask, is_causal)
            new_cache.append(kv)
        h = self.ln_f(x)  # (B, T, d_model)
        extra = dict(state.extra)
        extra["key_mask"] = key_mask
        return h, State(tuple(new_cache), S0 + T, extra)

    @staticmethod
    def _attn_mask(key_mask: Tensor, q_idx: Tensor, S0: int, has_pad: bool) -> tuple[Tensor | None, bool]:
        """(attn_mask (B, 1, T, S) bool or None, is_causal) for SDPA.

        Without padding the common cases need no mask tensor: a fresh sequence is plain causal,
        and one new position after a cache sees every key (the sampling loop).
        """
        T, S = q_idx.numel(), key_mask.size(1)
        if not has_pad:
            if S0 == 0:
                return None, T > 1
            if T == 1:
                return None, False
        k_idx = torch.arange(S, device=key_mask.device)  # (S,)
        causal = k_idx[None, :] <= q_idx[:, None]  # (T, S)
        # A padding query would see no key at all (softmax over nothing -> NaN, and NaN values
        # would then leak through 0-weights into later layers' keys); letting every position see
        # itself avoids that, and real queries still never see padding keys.
        visible = key_mask[:, None, :] | (k_idx[None, None, :] == q_idx[None, :, None])  # (B, T, S)
        return (causal[None] & visible)[:, None], False  # (B, 1, T, S), broadcast over heads
