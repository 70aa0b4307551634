"""A small Transformer-encoder sequence classifier.

token embedding + learned position embedding -> N pre-norm encoder layers
(``nn.TransformerEncoderLayer(norm_first=True, batch_first=True)``) -> final LayerNorm ->
mean pooling over non-pad tokens -> Linear(d_model, 1).

With ``causal=True`` (default) attention is causally masked, so the encoding of position ``t`` depends
only on ``x[:, :t+1]`` and a cumulative mean gives every prefix's pooled features in one pass:
``forward(x, per_step=True)[:, t] == forward(x[:, :t+1])``. ``causal=False`` gives a bidirectional
classifier (slightly stronger for whole-sequence scores) that cannot produce per-step scores.

Padding: pads are excluded from pooling and no real token attends to a pad (a pad query attends only
to itself, so no attention row is empty). Positions are counted over real tokens only, so neither
left-padding (prompts) nor right-padding changes a score.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llmgan.errors import ConfigError

from .base import Discriminator, check_dropout, check_positive


class TransformerDiscriminator(Discriminator):
    """Transformer encoder discriminator.

    Args:
        vocab_size: V.
        d_model: model width (64).
        num_layers: encoder layers (2).
        num_heads: attention heads (4); must divide d_model.
        dim_feedforward: FFN width (default 4 * d_model).
        dropout: dropout inside the encoder layers (0.1).
        max_len: maximum prompt + sequence length (256).
        causal: causal attention (needed for ``per_step``).
        pad_id: optional padding id.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        max_len: int = 256,
        causal: bool = True,
        pad_id: int | None = None,
    ) -> None:
        super().__init__(vocab_size, d_model, pad_id)
        check_positive("num_layers", num_layers)
        check_positive("num_heads", num_heads)
        check_positive("max_len", max_len)
        if d_model % num_heads != 0:
            raise ConfigError(f"num_heads must divide d_model={d_model}, got num_heads={num_heads}")
        dim_feedforward = 4 * d_model if dim_feedforward is None else dim_feedforward
        check_positive("dim_feedforward", dim_feedforward)
        check_dropout(dropout)
        self.d_model = d_model
        self.num_heads = num_heads
        self.max_len = max_len
        self.causal = causal
        self.feature_dim = d_model
        self.pos_embedding = nn.Embedding(max_len, d_model)
        # A plain ModuleList rather than nn.TransformerEncoder: avoids its nested-tensor conversion,
        # which does not support our per-sample 3-D attention masks.
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model, num_heads, dim_feedforward, dropout, activation="gelu",
                batch_first=True, norm_first=True,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)  # pre-norm stacks need a final norm
        self.out = nn.Linear(d_model, 1)

    def _attn_mask(self, valid: Tensor | None, length: int, device: torch.device) -> Tensor | None:
        """Bool mask, True = may NOT attend: (L, L), (B*heads, L, L), or None."""
        causal = (
            torch.ones(length, length, dtype=torch.bool, device=device).triu(1) if self.causal else None
        )
        if valid is None:
            return causal
        eye = torch.eye(length, dtype=torch.bool, device=device)
        blocked = ~valid.unsqueeze(1) & ~eye  # (B, L, L): keys that are pads, except self
        if causal is not None:
            blocked = blocked | causal
        return blocked.repeat_interleave(self.num_heads, dim=0)

    def _features(self, x: Tensor, prompt: Tensor | None, per_step: bool) -> tuple[Tensor, int]:
        """Pooled features (B, d), or (B, L, d) per prefix with per_step; and the prompt length P."""
        if per_step and not self.causal:
            raise ConfigError("per_step=True needs causal=True in the transformer discriminator config")
        emb, valid, p_len = self.embed_inputs(x, prompt)  # (B, L, d)
        b, length, _ = emb.shape
        if length > self.max_len:
            raise ConfigError(f"max_len={self.max_len} is shorter than the input length {length}")
        if valid is None:
            pos = torch.arange(length, device=emb.device).expand(b, length)
        else:
            # Count positions over real tokens so left pads do not shift positions.
            pos = (valid.long().cumsum(dim=1) - 1).clamp(min=0)
        h = emb + self.pos_embedding(pos).to(emb.dtype)
        mask = self._attn_mask(valid, length, emb.device)
        for layer in self.layers:
            h = layer(h, src_mask=mask)
        h = self.norm(h)
        w = torch.ones(b, length, 1, dtype=h.dtype, device=h.device) if valid is None \
            else valid.unsqueeze(-1).to(h.dtype)
        if per_step:
            # Prefix means; an all-pad prefix gets zero features (count clamped to 1).
            pooled = (h * w).cumsum(dim=1) / w.cumsum(dim=1).clamp(min=1.0)
        else:
            pooled = (h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)
        return pooled, p_len

    def forward(self, x: Tensor, prompt: Tensor | None = None, *, per_step: bool = False) -> Tensor:
        """x: (B, T) ids or (B, T, V) soft -> logits (B,), or (B, T) per prefix of x with per_step."""
        feats, p_len = self._features(x, prompt, per_step)
        logits = self.out(feats).squeeze(-1)
        return logits[:, p_len:] if per_step else logits

    def features(self, x: Tensor, prompt: Tensor | None = None) -> Tensor:
        """Mean-pooled final encodings: (B, d_model)."""
        return self._features(x, prompt, per_step=False)[0]
