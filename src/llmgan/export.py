"""Export a run's generator to the formats the rest of the ecosystem loads (``llmgan export``).

``hf``: a Hugging Face model directory (``save_pretrained``, safetensors) plus the tokenizer, loadable
with ``AutoModelForCausalLM.from_pretrained`` / vLLM:

* ``hf:`` runs: the run's own causal LM; with LoRA the adapters are merged into the base weights
  (default) or written as a peft adapter (``merge_lora=False``: ``adapter_model.safetensors`` +
  ``adapter_config.json`` naming the base model);
* our GPT generator: mapped onto ``GPT2LMHeadModel`` weight by weight (pre-norm blocks, fused qkv,
  exact GELU, learned positions: the same network). GPT-2 has no output bias, so a generator built
  with one (``lm_bias``, the default) cannot be mapped exactly and is refused with one line, as are
  latent codes; the tokenizer is written for ``word`` and ``bpe`` runs.

``onnx``: the teacher-forced logits graph, input ``input_ids`` int64 [B, T], output ``logits`` float
[B, T, V] (row t: the next-token logits after ``input_ids[:, :t+1]``; a response is read after BOS, as
in training), batch and length dynamic, for the LSTM and GPT generators. When ``onnxruntime`` is
installed the export is checked against PyTorch's logits on random ids and the largest difference is
returned.

Sequence convention of both: feed ``[prompt..., BOS, y1, ...]``; the exported config names BOS/EOS/PAD.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmgan.errors import ConfigError
from llmgan.models.generators.gpt import GPTGenerator
from llmgan.models.generators.lstm import LSTMGenerator
from llmgan.run import LoadedRun

FORMATS = ("hf", "onnx")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError("export --format hf needs transformers: pip install 'llmgan[hf]'") from None
    return transformers


# ---------------------------------------------------------------------------------------- hf
def gpt_to_gpt2_state(g: GPTGenerator) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(GPT2Config keyword arguments, GPT2LMHeadModel state dict) holding exactly ``g``'s network.

    Raises ConfigError where GPT-2 has no place for a part of ``g`` (output bias, latent code)."""
    c = g.cfg
    if g.lm_head.bias is not None:
        raise ConfigError("export --format hf: this GPT generator has an output bias (lm_head.bias) and GPT-2 has "
                          "none; train with generator.kwargs.lm_bias: false, or export --format onnx")
    if c.latent_dim:
        raise ConfigError("export --format hf: a GPT generator with a latent code (latent_dim > 0) has no GPT-2 form")
    kw = {"vocab_size": c.vocab_size, "n_positions": c.max_len, "n_embd": c.d_model, "n_layer": c.n_layers,
          "n_head": c.n_heads, "n_inner": 4 * c.d_model, "activation_function": "gelu",  # F.gelu: exact (erf)
          "layer_norm_epsilon": g.ln_f.eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
          "tie_word_embeddings": bool(c.tie_weights), "bos_token_id": c.bos_id, "eos_token_id": c.eos_id,
          "pad_token_id": c.pad_id}
    sd = {k: v.detach().cpu() for k, v in g.state_dict().items()}
    out: dict[str, Tensor] = {"transformer.wte.weight": sd["tok_emb.weight"],
                              "transformer.wpe.weight": sd["pos_emb.weight"],
                              "transformer.ln_f.weight": sd["ln_f.weight"], "transformer.ln_f.bias": sd["ln_f.bias"]}
    # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out)
    names = {"ln1": "ln_1", "ln2": "ln_2", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj",
             "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
    for i in range(c.n_layers):
        for ours, theirs in names.items():
            w, b = sd[f"blocks.{i}.{ours}.weight"], sd[f"blocks.{i}.{ours}.bias"]
            out[f"transformer.h.{i}.{theirs}.weight"] = w if ours.startswith("ln") else w.t().contiguous()
            out[f"transformer.h.{i}.{theirs}.bias"] = b
    out["lm_head.weight"] = sd["lm_head.weight"]
    return kw, out


def hf_tokenizer_of(tokenizer: Any) -> Any | None:
    """A ``transformers`` fast tokenizer equal to the run's (hf, bpe, word kinds), else None."""
    tf = _transformers()
    kind = getattr(tokenizer, "kind", "")
    if kind == "hf":
        return tokenizer.hf
    from tokenizers import Tokenizer as RawTokenizer

    if kind == "bpe":
        raw = RawTokenizer.from_str(tokenizer.hf.to_str())
    elif kind == "word":
        from tokenizers import models, pre_tokenizers

        raw = RawTokenizer(models.WordLevel({t: i for i, t in enumerate(tokenizer.vocab)}, unk_token="<unk>"))
        raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    else:
        return None
    from llmgan.data.tokenizers import BOS, EOS, PAD, UNK

    return tf.PreTrainedTokenizerFast(tokenizer_object=raw, unk_token=UNK, bos_token=BOS, eos_token=EOS,
                                      pad_token=PAD)


def export_hf(run: LoadedRun, out: str, merge_lora: bool = True) -> dict[str, Any]:
    """Write ``run``'s generator as a Hugging Face model directory; returns what was written."""
    from llmgan.models.hf import HFCausalLMGenerator

    tf = _transformers()
    g = run.generator
    os.makedirs(out, exist_ok=True)
    info: dict[str, Any] = {"format": "hf", "out": out}
    if isinstance(g, HFCausalLMGenerator):
        model = g.model
        if g.adapter_keys:
            if merge_lora:
                model = model.merge_and_unload()
                info["lora"] = "merged"
            else:
                info["lora"] = "adapter"
        model.save_pretrained(out, safe_serialization=True)
    elif isinstance(g, GPTGenerator):
        kw, sd = gpt_to_gpt2_state(g)
        model = tf.GPT2LMHeadModel(tf.GPT2Config(**kw))
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]  # causal-mask buffers
        if missing or unexpected:  # a mapping bug, not user error
            raise RuntimeError(f"GPT -> GPT-2 mapping incomplete: missing {missing}, unexpected {unexpected}")
        if kw["tie_word_embeddings"]:
            model.tie_weights()
        model.save_pretrained(out, safe_serialization=True)
    else:
        raise ConfigError(f"export --format hf: a {type(g).__name__} has no Hugging Face form (hf: and gpt "
                          "generators export; use --format onnx for lstm)")
    tok = hf_tokenizer_of(run.tokenizer)
    if tok is not None:
        tok.save_pretrained(out)
    info["tokenizer"] = tok is not None
    return info


# ---------------------------------------------------------------------------------------- onnx
class TeacherForcedLogits(nn.Module):
    """input_ids (B, T) -> logits (B, T, V) of a generator, written with plain ops so that the traced
    graph keeps B and T dynamic (the sampling paths' cache and mask shortcuts are not needed here)."""

    def __init__(self, g: nn.Module):
        super().__init__()
        if not isinstance(g, GPTGenerator | LSTMGenerator):
            raise ConfigError(f"export --format onnx: supports the lstm and gpt generators, not {type(g).__name__}")
        if getattr(getattr(g, "cfg", None), "latent_dim", 0):
            raise ConfigError("export --format onnx: generators with a latent code (latent_dim > 0) are not supported")
        self.g = g

    def forward(self, input_ids: Tensor) -> Tensor:
        g = self.g
        if isinstance(g, LSTMGenerator):
            h, _ = g.lstm(g.embedding(input_ids))  # zero initial state, as init_state without a prompt
            return g.lm_head(h)
        T = input_ids.size(1)
        x = g.tok_emb(input_ids) + g.pos_emb(torch.arange(T, device=input_ids.device))[None]
        nh = g.cfg.n_heads
        for blk in g.blocks:
            a = blk.attn
            y = blk.ln1(x)
            B, _, C = y.shape
            q, k, v = (t.reshape(B, T, nh, C // nh).transpose(1, 2) for t in a.qkv(y).split(C, dim=2))
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + a.proj(att)
            x = x + blk.mlp(blk.ln2(x))
        return g.lm_head(g.ln_f(x))


def torch_logits(g: nn.Module, input_ids: Tensor) -> Tensor:
    """The generator's own logits (B, T, V) for input_ids, through its Generator interface (the reference)."""
    h, _ = g.forward_hidden(input_ids, g.init_state(input_ids.size(0)))
    return g.lm_head(h)


def export_onnx(run: LoadedRun, out: str, opset: int = 18, check: bool = True) -> dict[str, Any]:
    """Write ``out/model.onnx`` (+ ``llmgan_export.json`` with the special ids); returns what was written,
    with ``max_abs_diff`` against PyTorch when onnxruntime is installed."""
    g = run.generator.cpu().eval()
    wrapper = TeacherForcedLogits(g).eval()
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.onnx")
    ids = torch.randint(0, g.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            torch.onnx.export(wrapper, (ids,), path, input_names=["input_ids"], output_names=["logits"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                            "logits": {0: "batch", 1: "sequence"}},
                              opset_version=opset, dynamo=False)
    except ImportError as e:
        raise ConfigError(f"export --format onnx needs onnx: pip install 'llmgan[onnx]' ({e})") from None
    meta = {"input": "input_ids", "output": "logits", "vocab_size": g.vocab_size, "bos_id": g.bos_id,
            "eos_id": g.eos_id, "pad_id": g.pad_id, "generator": run.cfg.generator.name}
    from llmgan.fileio import atomic_write_text

    atomic_write_text(os.path.join(out, "llmgan_export.json"), json.dumps(meta, indent=1) + "\n")
    info: dict[str, Any] = {"format": "onnx", "out": path}
    if check:
        info["max_abs_diff"] = check_onnx(path, g)
    return info


def check_onnx(path: str, g: nn.Module, batch: int = 3, length: int = 11) -> float | None:
    """Largest |onnxruntime - PyTorch| logit on random ids of a shape other than the traced one (None
    without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    ids = torch.randint(0, g.vocab_size, (batch, length), generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(["logits"], {"input_ids": ids.numpy()})[0])
    with torch.no_grad():
        ref = torch_logits(g, ids)
    return float((got - ref).abs().max())


def export_run(run_dir: str, fmt: str, out: str, merge_lora: bool = True) -> dict[str, Any]:
    from llmgan.run import load_run

    if fmt not in FORMATS:
        raise ConfigError(f"export: --format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    run = load_run(run_dir)
    return export_hf(run, out, merge_lora) if fmt == "hf" else export_onnx(run, out)


__all__ = ["FORMATS", "TeacherForcedLogits", "export_hf", "export_onnx", "export_run", "gpt_to_gpt2_state",
           "torch_logits"]
