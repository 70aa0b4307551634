"""LSTM generator (SeqGAN's sizes by default: embedding 32, hidden 32, one layer)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from llmgan.models.base import Generator, State


@dataclass
class LSTMGeneratorConfig:
    vocab_size: int = 5000
    embed_dim: int = 32  # SeqGAN: 32
    hidden_dim: int = 32  # SeqGAN: 32
    num_layers: int = 1
    dropout: float = 0.0  # between LSTM layers (only with num_layers > 1)
    latent_dim: int = 0  # > 0: a latent code z ~ N(0, I) sets the initial (h, c) (TextGAN's G(z))
    bos_id: int = 1
    eos_id: int | None = 2
    pad_id: int | None = 0
    init_std: float | None = 0.1  # N(0, std) for every parameter, as SeqGAN (0.1); None: PyTorch defaults


class LSTMGenerator(Generator):
    def __init__(self, cfg: LSTMGeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id = cfg.vocab_size, cfg.bos_id, cfg.eos_id, cfg.pad_id
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.lstm = nn.LSTM(
            cfg.embed_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.lm_head = nn.Linear(cfg.hidden_dim, cfg.vocab_size)
        self.latent = nn.Linear(cfg.latent_dim, 2 * cfg.num_layers * cfg.hidden_dim) if cfg.latent_dim > 0 else None
        self._register_latent_flag()
        if cfg.init_std is not None:
            for p in self.parameters():
                nn.init.normal_(p, 0.0, cfg.init_std)

    def embed(self, x: Tensor) -> Tensor:
        if x.dtype.is_floating_point:  # soft one-hots (B, T, V)
            return x @ self.embedding.weight
        return self.embedding(x)

    def init_state(self, batch: int, prompt: Tensor | None = None, z: Tensor | None = None) -> State:
        L, H = self.cfg.num_layers, self.cfg.hidden_dim
        if z is not None:
            if self.latent is None:
                raise ValueError("this generator was built with latent_dim=0; it takes no z")
            hc = torch.tanh(self.latent(z)).view(batch, 2, L, H)
            h, c = hc[:, 0], hc[:, 1]  # (B, L, H) each
        else:
            h = torch.zeros(batch, L, H, device=self.device)
            c = torch.zeros(batch, L, H, device=self.device)
        state = State((h, c))
        if prompt is not None and prompt.size(1) > 0:
            state = self._consume_prompt(prompt, state)
        return state

    def _consume_prompt(self, prompt: Tensor, state: State) -> State:
        """Run the LSTM over left-padded prompts (B, P); rows end in their own final state."""
        pad = self.pad_id if self.pad_id is not None else -1
        lengths = (prompt != pad).sum(1)  # (B,)
        P = prompt.size(1)
        # left-padded -> right-aligned at the start: shift each row left by its padding
        shift = P - lengths
        idx = (torch.arange(P, device=prompt.device)[None, :] + shift[:, None]).clamp(max=P - 1)
        right_padded = prompt.gather(1, idx)
        h0, c0 = (t.transpose(0, 1).contiguous() for t in state.tensors)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(right_padded), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        _, (h, c) = self.lstm(packed, (h0, c0))
        empty = (lengths == 0)[None, :, None]
        h = torch.where(empty, h0, h)
        c = torch.where(empty, c0, c)
        return State((h.transpose(0, 1), c.transpose(0, 1)), pos=state.pos + P)

    def forward_hidden(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        h0, c0 = (t.transpose(0, 1).contiguous() for t in state.tensors)  # (L, B, H)
        out, (h, c) = self.lstm(self.embed(inputs), (h0, c0))  # out (B, T, H)
        return out, State((h.transpose(0, 1), c.transpose(0, 1)), pos=state.pos + inputs.size(1))
