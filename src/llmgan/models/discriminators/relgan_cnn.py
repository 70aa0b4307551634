"""RelGAN's multi-representation CNN discriminator (Nie et al., ICLR 2019).

Facts from the reference implementation (weilinie/RelGAN, ``models/rmc_vanilla.py``):

* one embedding matrix ``(V, dis_emb_dim)`` with ``dis_emb_dim = 64``; ``num_rep = 64``
  representations, so each representation is a slice of ``emb_dim_single = dis_emb_dim / num_rep = 1``
  embedding dims (the (V, 64) embedding is *not* replicated per representation);
* a conv with kernel ``(width, emb_dim_single)`` and stride ``emb_dim_single`` along the embedding
  axis, i.e. the same filters are shared by all representations; widths [2, 3, 4, 5] x 300 filters;
* ReLU, max-over-time, highway (on each representation's 1200 features), dropout (keep 0.75),
  ``Linear(1200, 100)`` then ``Linear(100, 1)`` (no nonlinearity in between, as in the reference);
* one logit per (sample, representation): the losses are averaged over all ``B * num_rep`` logits;
* optional spectral normalisation of the conv and linear layers (``sn``).

Here each representation is folded into the batch: (B, L, R*S) -> (B*R, L, S), followed by the same
causal conv bank + cumulative max as :class:`CNNDiscriminator` (so per-prefix scores and padding masks
work identically). :meth:`forward` returns the mean over representations (B,); use
:meth:`forward_reps` to get all of them (B, R) for the reference RelGAN loss.

Cost note: the highway runs on ``B * num_rep`` rows of 1200 features (~12 GMAC forward for B=64 with
the defaults), as in the paper; it dominates the run time: one forward+backward of 64 x 20 soft
one-hots (V=5000) takes ~1.7-1.9 s on one CPU thread (bf16 autocast: ~1.3x faster).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from llmgan.errors import ConfigError

from .base import Discriminator, Highway, check_dropout, check_positive
from .cnn import CausalConvBank, check_filters


class RelGANDiscriminator(Discriminator):
    """RelGAN multi-representation CNN discriminator.

    Args:
        vocab_size: V.
        emb_dim: total embedding size ``dis_emb_dim`` (64).
        num_rep: number of representations R (64); must divide ``emb_dim``.
        filter_sizes / num_filters: ([2, 3, 4, 5], [300] * 4).
        hidden_dim: size of the layer after the highway (100).
        dropout: 0.25 (keep 0.75).
        sn: spectral normalisation on convs and linear layers.
        pad_id: optional padding id.
    """

    def __init__(
        self,
        vocab_size: int,
        emb_dim: int = 64,
        num_rep: int = 64,
        filter_sizes: Sequence[int] = (2, 3, 4, 5),
        num_filters: Sequence[int] = (300, 300, 300, 300),
        hidden_dim: int = 100,
        dropout: float = 0.25,
        sn: bool = False,
        pad_id: int | None = None,
    ) -> None:
        super().__init__(vocab_size, emb_dim, pad_id)
        check_positive("num_rep", num_rep)
        check_positive("hidden_dim", hidden_dim)
        if emb_dim % num_rep != 0:
            raise ConfigError(f"num_rep must divide emb_dim={emb_dim}, got num_rep={num_rep}")
        check_filters(filter_sizes, num_filters)
        check_dropout(dropout)
        self.num_rep = num_rep
        self.emb_dim_single = emb_dim // num_rep
        self.convs = CausalConvBank(self.emb_dim_single, filter_sizes, num_filters)
        self.feature_dim = self.convs.out_dim
        self.highway = Highway(self.feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, 1)
        if sn:
            for conv in self.convs.convs:
                spectral_norm(conv)
            spectral_norm(self.fc)
            spectral_norm(self.out)

    def _rep_features(self, x: Tensor, prompt: Tensor | None, per_step: bool) -> tuple[Tensor, int]:
        """Highway features per representation: (B, R, C), or (B, R, L, C) with per_step; and P."""
        emb, valid, p_len = self.embed_inputs(x, prompt)  # (B, L, E)
        b, length, _ = emb.shape
        r, s = self.num_rep, self.emb_dim_single
        if valid is not None:
            emb = emb * valid.unsqueeze(-1).to(emb.dtype)
        # Fold representations into the batch: rep i uses embedding dims [i*s, (i+1)*s).
        h = emb.view(b, length, r, s).permute(0, 2, 1, 3).reshape(b * r, length, s)
        v = None if valid is None else valid.repeat_interleave(r, dim=0)  # (B*R, L)
        # Without a prompt, rows start at position 0: whole windows only (the reference's VALID conv).
        full = p_len == 0 and (valid is None or bool(valid[:, 0].all()))
        pooled = self.convs(h, v, per_step, full_windows=full)  # (B*R, C) or (B*R, L, C)
        feats = self.highway(pooled)
        return feats.view(b, r, *feats.shape[1:]), p_len

    def forward_reps(self, x: Tensor, prompt: Tensor | None = None, *, per_step: bool = False) -> Tensor:
        """Logits of every representation: (B, R), or (B, T, R) per prefix of x with per_step."""
        feats, p_len = self._rep_features(x, prompt, per_step)
        logits = self.out(self.fc(self.dropout(feats))).squeeze(-1)  # (B, R) or (B, R, L)
        if per_step:
            return logits[:, :, p_len:].transpose(1, 2)
        return logits

    def forward(self, x: Tensor, prompt: Tensor | None = None, *, per_step: bool = False) -> Tensor:
        """Mean logit over representations: (B,), or (B, T) with per_step."""
        return self.forward_reps(x, prompt, per_step=per_step).mean(dim=-1)

    def features(self, x: Tensor, prompt: Tensor | None = None) -> Tensor:
        """Highway features averaged over representations (before dropout): (B, sum(num_filters))."""
        return self._rep_features(x, prompt, per_step=False)[0].mean(dim=1)
