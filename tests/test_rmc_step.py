"""The RMC's batched step equals the reference block over [memory; input] (weilinie/RelGAN
relational_memory.py): attention, norms and MLP over every row, the input row dropped afterwards."""

from __future__ import annotations

import torch

from llmgan.models.generators.rmc import RelationalMemory, RMCGenerator, RMCGeneratorConfig


def reference_cell(rm: RelationalMemory, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
    """The unoptimised formulation, written out as the reference does it."""
    m = torch.cat([mem, x.unsqueeze(1)], dim=1)  # (B, N + 1, D)
    B, N1, _ = m.shape
    H = rm.num_heads
    qkv = rm.qkv_norm(rm.qkv(m)).view(B, N1, H, rm.qkv_size).transpose(1, 2)
    q, k, v = qkv.split([rm.key_size, rm.key_size, rm.head_size], dim=-1)
    w = torch.softmax((q * rm.qkv_size**-0.5) @ k.transpose(-1, -2), dim=-1)
    att = (w @ v).transpose(1, 2).reshape(B, N1, rm.mem_size)
    m = rm.attn_norm(m + att)
    m = rm.mlp_norm(m + rm.mlp(m))
    gates = rm.gate_mem(torch.tanh(mem)) + rm.gate_in(x.unsqueeze(1))
    i, f = gates.chunk(2, dim=-1)
    return torch.sigmoid(i + rm.input_bias) * torch.tanh(m[:, :-1]) + torch.sigmoid(f + rm.forget_bias) * mem


def test_forward_hidden_equals_reference_cell_with_several_slots():
    torch.manual_seed(0)
    G = RMCGenerator(RMCGeneratorConfig(vocab_size=50, embed_dim=8, mem_slots=3, head_size=8, num_heads=2))
    # a non-identity memory, so every slot's attention differs
    mem0 = torch.randn(4, 3, 16)
    ids = torch.randint(3, 50, (4, 7))
    hidden, state = G.forward_hidden(ids, type(G.init_state(4))((mem0,)))
    x = G.input_proj(G.embed(ids))
    mem, outs = mem0, []
    for t in range(ids.size(1)):
        mem = reference_cell(G.rmc, x[:, t], mem)
        outs.append(mem.flatten(1))
    torch.testing.assert_close(hidden, torch.stack(outs, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.tensors[0], mem, rtol=1e-5, atol=1e-5)
    # the single-step API (used for prompts) agrees too
    torch.testing.assert_close(G.rmc(x[:, 0], mem0), reference_cell(G.rmc, x[:, 0], mem0), rtol=1e-5, atol=1e-5)


def test_gradients_equal_reference_cell():
    torch.manual_seed(1)
    G = RMCGenerator(RMCGeneratorConfig(vocab_size=30, embed_dim=8, mem_slots=1, head_size=8, num_heads=2))
    ids = torch.randint(3, 30, (3, 5))
    hidden, _ = G.forward_hidden(ids, G.init_state(3))
    fast = torch.autograd.grad(hidden.square().sum(), list(G.rmc.parameters()))
    x = G.input_proj(G.embed(ids))
    mem, total = G.init_state(3).tensors[0], 0.0
    for t in range(ids.size(1)):
        mem = reference_cell(G.rmc, x[:, t], mem)
        total = total + mem.square().sum()
    ref = torch.autograd.grad(total, list(G.rmc.parameters()))
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
