"""RelGAN's generator: a Relational Memory Core (Santoro et al. 2018) language model.

Facts from the reference implementation (weilinie/RelGAN ``utils/models/relational_memory.py`` and
``models/rmc_vanilla.py``); the oracle experiments use mem_slots=1, head_size=256, num_heads=2 and a
32-dim token embedding:

* memory: ``slots`` rows of size ``D = head_size * num_heads``, initialised to the identity matrix
  padded with zeros (each slot distinct);
* each step the embedded token is projected to D (with bias) and appended to the memory as an extra
  row; one block of multi-head attention over ``[memory; input]`` (fused q/k/v projection without bias
  followed by LayerNorm; key size = head size; queries scaled by ``(2 * key + head) ** -0.5``, the
  reference's quirk, kept so pre-trained behaviour matches), residual + LayerNorm, a 2-layer ReLU MLP
  of width D, residual + LayerNorm; the input row is dropped again;
* LSTM-like gating per unit: ``i, f = sigmoid(W_i x + U tanh(M) + b)`` (input bias 0, forget bias 1),
  ``M' = i * tanh(M_attended) + f * M``;
* the step's output is the flattened new memory (slots * D), mapped to logits by ``lm_head``.

Initialisation uses PyTorch's defaults (the reference uses truncated normals with std 1/sqrt(fan_in),
which is close to them); the memory, gating and attention computations are the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from llmgan.models.base import Generator, State


@dataclass
class RMCGeneratorConfig:
    vocab_size: int = 5000
    embed_dim: int = 32  # RelGAN gen_emb_dim: 32
    mem_slots: int = 1  # RelGAN oracle: 1
    head_size: int = 256  # RelGAN oracle: 256 (real data: 256 / 512)
    num_heads: int = 2  # RelGAN: 2
    bos_id: int = 1
    eos_id: int | None = 2
    pad_id: int | None = 0
    latent_dim: int = 0  # > 0: a latent code z is added (through tanh(Linear)) to the initial memory


class RelationalMemory(nn.Module):
    """One RMC cell: (input (B, D), memory (B, N, D)) -> new memory (B, N, D)."""

    def __init__(self, mem_slots: int, head_size: int, num_heads: int, forget_bias: float = 1.0,
                 input_bias: float = 0.0) -> None:
        super().__init__()
        self.mem_slots, self.head_size, self.num_heads = mem_slots, head_size, num_heads
        self.mem_size = head_size * num_heads  # D
        self.key_size = head_size
        self.qkv_size = 2 * self.key_size + head_size  # per head
        total = self.qkv_size * num_heads
        self.qkv = nn.Linear(self.mem_size, total, bias=False)
        self.qkv_norm = nn.LayerNorm(total)
        self.attn_norm = nn.LayerNorm(self.mem_size)
        self.mlp = nn.Sequential(
            nn.Linear(self.mem_size, self.mem_size), nn.ReLU(), nn.Linear(self.mem_size, self.mem_size)
        )
        self.mlp_norm = nn.LayerNorm(self.mem_size)
        # input and forget gates for every memory unit ("unit" gate style), from input and tanh(memory)
        self.gate_in = nn.Linear(self.mem_size, 2 * self.mem_size, bias=False)
        self.gate_mem = nn.Linear(self.mem_size, 2 * self.mem_size, bias=False)
        self.forget_bias, self.input_bias = forget_bias, input_bias

    def initial_memory(self, batch: int, device: torch.device) -> Tensor:
        """Identity rows padded (or truncated) to D: (B, N, D)."""
        eye = torch.eye(self.mem_slots, device=device)
        if self.mem_size >= self.mem_slots:
            mem = F.pad(eye, (0, self.mem_size - self.mem_slots))
        else:
            mem = eye[:, : self.mem_size]
        return mem.unsqueeze(0).expand(batch, -1, -1).contiguous()

    def precompute(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The input row's per-token work, for every step at once: x (B, T, D) -> (normalised q/k/v of
        the input row (B, T, H * qkv), input-gate pre-activations (B, T, 2D)).

        Neither depends on the memory, so one large matrix product over all T replaces T small ones
        (RMC MLE is bound by these products: ~6 M multiply-adds per token)."""
        return self.qkv_norm(self.qkv(x)), self.gate_in(x)

    def step(self, xqkv: Tensor, xgate: Tensor, mem: Tensor) -> Tensor:
        """One memory update from a precomputed input row: xqkv (B, H * qkv), xgate (B, 2D), mem (B, N, D)
        -> new memory (B, N, D).

        Equal to the reference's block over ``[memory; input]`` with the input row dropped afterwards:
        everything after the attention is row-wise, so only the memory rows' queries, attention
        outputs, norms and MLP are computed (the input row contributes its keys and values only)."""
        B, N, _ = mem.shape
        H = self.num_heads
        mqkv = self.qkv_norm(self.qkv(mem))  # (B, N, H * qkv)
        qkv = torch.cat([mqkv, xqkv.unsqueeze(1)], dim=1)  # (B, N + 1, H * qkv)
        qkv = qkv.view(B, N + 1, H, self.qkv_size).transpose(1, 2)  # (B, H, N + 1, qkv)
        q, k, v = qkv.split([self.key_size, self.key_size, self.head_size], dim=-1)
        q = q[:, :, :N] * self.qkv_size**-0.5  # reference scales by the whole q/k/v size, not sqrt(key_size)
        w = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (B, H, N, N + 1)
        att = (w @ v).transpose(1, 2).reshape(B, N, self.mem_size)
        m = self.attn_norm(mem + att)
        next_mem = self.mlp_norm(m + self.mlp(m))  # (B, N, D)
        gates = self.gate_mem(torch.tanh(mem)) + xgate.unsqueeze(1)  # (B, N, 2D)
        i, f = gates.chunk(2, dim=-1)
        i = torch.sigmoid(i + self.input_bias)
        f = torch.sigmoid(f + self.forget_bias)
        return i * torch.tanh(next_mem) + f * mem

    def forward(self, x: Tensor, mem: Tensor) -> Tensor:
        """x: projected input (B, D); mem: (B, N, D) -> new memory (B, N, D)."""
        xqkv, xgate = self.precompute(x)
        return self.step(xqkv, xgate, mem)


class RMCGenerator(Generator):
    """Token embedding -> input projection -> Relational Memory (one step per token) -> lm_head.

    ``State.tensors = (memory (B, slots, D),)``; hidden states are the flattened memory (B, T, slots*D).
    """

    def __init__(self, cfg: RMCGeneratorConfig):
        super().__init__()
        if cfg.mem_slots < 1 or cfg.head_size < 1 or cfg.num_heads < 1:
            raise ValueError("mem_slots, head_size and num_heads must be >= 1")
        self.cfg = cfg
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id = cfg.vocab_size, cfg.bos_id, cfg.eos_id, cfg.pad_id
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.rmc = RelationalMemory(cfg.mem_slots, cfg.head_size, cfg.num_heads)
        D = self.rmc.mem_size
        self.input_proj = nn.Linear(cfg.embed_dim, D)
        self.hidden_dim = cfg.mem_slots * D
        self.lm_head = nn.Linear(self.hidden_dim, cfg.vocab_size)
        self.latent = nn.Linear(cfg.latent_dim, cfg.mem_slots * D) if cfg.latent_dim > 0 else None
        self._register_latent_flag()

    def embed(self, x: Tensor) -> Tensor:
        """ids (B, T) or soft one-hots (B, T, V) -> (B, T, E)."""
        if x.dtype.is_floating_point:
            return x @ self.embedding.weight.to(x.dtype)
        return self.embedding(x)

    def init_state(self, batch: int, prompt: Tensor | None = None, z: Tensor | None = None) -> State:
        mem = self.rmc.initial_memory(batch, self.device)  # (B, N, D)
        if z is not None:
            if self.latent is None:
                raise ValueError("this generator was built with latent_dim=0; it takes no z")
            mem = mem + torch.tanh(self.latent(z)).view_as(mem)
        state = State((mem,))
        if prompt is not None and prompt.size(1) > 0:
            # Left-padded prompts: a padding position leaves the memory unchanged, so every row ends in
            # the state of its own (unpadded) prompt.
            pad = self.pad_id if self.pad_id is not None else -1
            mem = state.tensors[0]
            x = self.input_proj(self.embed(prompt))  # (B, P, D)
            for t in range(prompt.size(1)):
                new = self.rmc(x[:, t], mem)
                mem = torch.where((prompt[:, t] == pad)[:, None, None], mem, new)
            state = State((mem,), pos=prompt.size(1))
        return state

    def forward_hidden(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        """inputs: ids (B, T) or soft (B, T, V) -> hidden (B, T, slots*D) and the state after them."""
        (mem,) = state.tensors  # (B, N, D)
        x = self.input_proj(self.embed(inputs))  # (B, T, D)
        xqkv, xgate = self.rmc.precompute(x)  # the memory-independent work, batched over T
        outs = []
        for t in range(x.size(1)):  # recurrent: one memory update per token
            mem = self.rmc.step(xqkv[:, t], xgate[:, t], mem)
            outs.append(mem.flatten(1))
        return torch.stack(outs, dim=1), State((mem,), pos=state.pos + inputs.size(1))
