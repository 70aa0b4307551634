"""The SeqGAN synthetic oracle: a fixed, randomly initialised LSTM that plays "real data".

``load_seqgan_oracle()`` loads the exact oracle behind every published oracle-NLL figure (SeqGAN,
RankGAN, LeakGAN, RelGAN, Texygen), vendored from LantaoYu/SeqGAN ``save/target_params_py3.pkl``
as ``llmgan/assets/seqgan_oracle.npz``. Its cell is a standard LSTM:

    i, f, o = sigmoid(x W + h U + b);  c~ = tanh(x W_c + h U_c + b_c)
    c = f * c + i * c~;  h = o * tanh(c);  logits = h W_out + b_out

with zero initial state, token 0 as the start input (an ordinary vocabulary entry), sequences of
20 tokens and no end token. PyTorch's nn.LSTM computes the same function with gates stacked in
the order (i, f, g, o) and weights transposed, so the arrays map onto an ``LSTMGenerator``.

``random_oracle()`` builds a fresh oracle of any size from a seed, with N(0, 1) parameters as
SeqGAN's ``TargetLSTM`` initialiser does.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from llmgan import interrupt
from llmgan.errors import CheckpointError
from llmgan.models.generators.lstm import LSTMGenerator, LSTMGeneratorConfig

SEQGAN_SEQ_LEN = 20
SEQGAN_VOCAB = 5000


def _oracle_config(vocab_size: int, embed_dim: int, hidden_dim: int) -> LSTMGeneratorConfig:
    return LSTMGeneratorConfig(
        vocab_size=vocab_size, embed_dim=embed_dim, hidden_dim=hidden_dim, bos_id=0, eos_id=None, pad_id=None
    )


def oracle_from_arrays(arrays: dict[str, np.ndarray]) -> LSTMGenerator:
    """Build the oracle generator from SeqGAN's arrays (names as in SOURCES.md)."""
    try:
        emb = torch.as_tensor(np.asarray(arrays["embedding"]), dtype=torch.float32)
        gates = ["i", "f", "c", "o"]  # nn.LSTM order: input, forget, cell (g), output
        w_ih = torch.cat([torch.as_tensor(np.asarray(arrays[f"W_{g}"])).float().t() for g in gates])
        w_hh = torch.cat([torch.as_tensor(np.asarray(arrays[f"U_{g}"])).float().t() for g in gates])
        b_ih = torch.cat([torch.as_tensor(np.asarray(arrays[f"b_{g}"])).float() for g in gates])
        w_out = torch.as_tensor(np.asarray(arrays["W_out"]), dtype=torch.float32)
        b_out = torch.as_tensor(np.asarray(arrays["b_out"]), dtype=torch.float32)
    except KeyError as e:
        raise CheckpointError(f"oracle parameters: missing array {e.args[0]!r}") from None
    vocab, embed_dim = emb.shape
    hidden = w_hh.shape[1]
    if w_out.shape != (hidden, vocab) or w_ih.shape != (4 * hidden, embed_dim):
        raise CheckpointError(
            f"oracle parameters: inconsistent shapes W_out {tuple(w_out.shape)}, emb {tuple(emb.shape)}"
        )
    gen = LSTMGenerator(_oracle_config(vocab, embed_dim, hidden))
    with torch.no_grad():
        gen.embedding.weight.copy_(emb)
        gen.lstm.weight_ih_l0.copy_(w_ih)
        gen.lstm.weight_hh_l0.copy_(w_hh)
        gen.lstm.bias_ih_l0.copy_(b_ih)
        gen.lstm.bias_hh_l0.zero_()
        gen.lm_head.weight.copy_(w_out.t())
        gen.lm_head.bias.copy_(b_out)
    gen.requires_grad_(False)
    return gen.eval()


def load_seqgan_oracle() -> LSTMGenerator:
    """The exact SeqGAN oracle (V=5000, embedding 32, hidden 32), frozen, in eval mode."""
    with resources.files("llmgan.assets").joinpath("seqgan_oracle.npz").open("rb") as f:
        arrays = dict(np.load(f))
    return oracle_from_arrays(arrays)


def random_oracle(
    vocab_size: int = SEQGAN_VOCAB, embed_dim: int = 32, hidden_dim: int = 32, seed: int = 0, std: float = 1.0
) -> LSTMGenerator:
    """A fresh oracle with N(0, std^2) parameters, fully determined by ``seed``."""
    gen_rng = torch.Generator().manual_seed(seed)
    gen = LSTMGenerator(_oracle_config(vocab_size, embed_dim, hidden_dim))
    with torch.no_grad():
        for _, p in sorted(gen.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen_rng) * std)
        gen.lstm.bias_hh_l0.zero_()
    gen.requires_grad_(False)
    return gen.eval()


@torch.no_grad()
def oracle_nll(oracle: LSTMGenerator, tokens: torch.Tensor, batch_size: int = 1000) -> float:
    """Mean per-token NLL of ``tokens`` (N, T) under the oracle (SeqGAN's NLL_oracle)."""
    total, count = 0.0, 0
    for start in range(0, tokens.size(0), batch_size):
        interrupt.point()  # an evaluation on 10,000 samples: a stop need not wait for all of them
        batch = tokens[start : start + batch_size].to(oracle.device)
        lp = oracle.log_probs(batch)
        total += float(-lp.sum())
        count += lp.numel()
    return total / max(count, 1)


def save_oracle_file(oracle: LSTMGenerator, path: str) -> None:
    """Save a (random) oracle as safetensors with its sizes in the metadata."""
    from llmgan.tensor_files import save_tensors

    c = oracle.cfg
    meta = {
        "kind": "llmgan-oracle",
        "vocab_size": str(c.vocab_size),
        "embed_dim": str(c.embed_dim),
        "hidden_dim": str(c.hidden_dim),
    }
    save_tensors(oracle.state_dict(), path, metadata=meta)


def load_oracle_file(path: str) -> LSTMGenerator:
    """Load an oracle written by ``save_oracle_file`` (``llmgan oracle --random``)."""
    from safetensors import safe_open

    from llmgan.tensor_files import load_model_weights

    if not __import__("os").path.isfile(path):
        raise CheckpointError(f"{path}: oracle file not found (expected 'seqgan' or a .safetensors oracle)")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt file to the user
        raise CheckpointError(f"{path}: not a safetensors oracle ({str(e).splitlines()[0]})") from None
    if meta.get("kind") != "llmgan-oracle":
        raise CheckpointError(f"{path}: not an llmgan oracle file (metadata kind missing)")
    gen = LSTMGenerator(_oracle_config(int(meta["vocab_size"]), int(meta["embed_dim"]), int(meta["hidden_dim"])))
    load_model_weights(gen, path)
    gen.requires_grad_(False)
    return gen.eval()
