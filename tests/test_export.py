"""llmgan export: Hugging Face directories that reload with AutoModelForCausalLM and give the run's
logits (our GPT mapped onto GPT-2; hf: runs with LoRA merged or kept as an adapter), and ONNX logits
graphs (LSTM, GPT) that match PyTorch to 1e-4 under onnxruntime."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from llmgan.cli import main  # noqa: E402
from llmgan.config import config_from_dict  # noqa: E402
from llmgan.errors import ConfigError  # noqa: E402
from llmgan.export import gpt_to_gpt2_state, torch_logits  # noqa: E402
from llmgan.models.generators import GPTGenerator, GPTGeneratorConfig  # noqa: E402
from llmgan.run import load_run  # noqa: E402
from llmgan.training.engine import Trainer  # noqa: E402

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song", "one two three four five"]


def train(tmp_path, name: str, generator: dict, tokenizer: str = "word") -> str:
    data = tmp_path / "train.txt"
    data.write_text("\n".join(TEXTS * 4) + "\n")
    cfg = config_from_dict({
        "name": name, "device": "cpu", "seed": 0,
        "data": {"train": str(data), "tokenizer": tokenizer, "max_len": 8},
        "generator": generator,
        "train": {"epochs": 2, "batch_size": 8, "lr": 1e-2, "progress": False},
        "eval": {"n_samples": 4, "batch_size": 4},
    })
    out = str(tmp_path / name)
    Trainer(cfg, out).run()
    return out


def ids_for(g, B: int = 3, T: int = 9) -> torch.Tensor:
    ids = torch.randint(0, g.vocab_size, (B, T), generator=torch.Generator().manual_seed(2))
    ids[:, 0] = g.bos_id  # a response is read after BOS
    return ids


def cli_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_gpt_export_hf_reloads_with_the_same_logits(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = train(tmp_path, "gpt", {"name": "gpt", "kwargs": {"d_model": 32, "n_layers": 2, "n_heads": 2,
                                                                "max_len": 16, "lm_bias": False}})
    out = str(tmp_path / "hf")
    info = cli_json(capsys, ["export", run_dir, "--format", "hf", "--out", out])
    assert info["tokenizer"] is True
    run = load_run(run_dir)
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = ids_for(run.generator)
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, torch_logits(run.generator, ids), atol=1e-4, rtol=1e-4)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.encode(TEXTS[1], add_special_tokens=False) == run.tokenizer.encode(TEXTS[1])
    assert (hf.config.bos_token_id, hf.config.eos_token_id) == (run.generator.bos_id, run.generator.eos_id)


def test_gpt_with_output_bias_or_latent_refused_with_one_line(capsys, tmp_path):
    with pytest.raises(ConfigError, match="output bias.*lm_bias: false"):
        gpt_to_gpt2_state(GPTGenerator(GPTGeneratorConfig(vocab_size=10)))
    with pytest.raises(ConfigError, match="latent"):
        gpt_to_gpt2_state(GPTGenerator(GPTGeneratorConfig(vocab_size=10, lm_bias=False, latent_dim=4)))
    assert main(["export", str(tmp_path / "nope"), "--format", "hf", "--out", str(tmp_path / "o")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_hf_lora_run_exports_merged_or_as_adapter(tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llmgan.models.hf import make_tiny_hf_model

    base = make_tiny_hf_model(str(tmp_path / "base"), "gpt2", TEXTS, pad_token=True, seed=0)
    run_dir = train(tmp_path, "lora", {"name": f"hf:{base}", "kwargs": {"lora": {"r": 4, "alpha": 8}}}, "hf")
    run = load_run(run_dir)
    ids = ids_for(run.generator)
    with torch.no_grad():
        ref = run.generator.model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base)(input_ids=ids).logits
    assert (ref - plain).abs().max() > 1e-3  # the adapters were trained: merging them matters
    merged = str(tmp_path / "merged")
    assert cli_json(capsys, ["export", run_dir, "--format", "hf", "--out", merged])["lora"] == "merged"
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(merged)(input_ids=ids).logits, ref,
                                   atol=1e-4, rtol=1e-4)
    adapter = str(tmp_path / "adapter")
    assert cli_json(capsys, ["export", run_dir, "--format", "hf", "--out", adapter, "--keep-adapter"])["lora"] \
        == "adapter"
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("gen", [{"name": "lstm", "kwargs": {"embed_dim": 16, "hidden_dim": 16}},
                                 {"name": "gpt", "kwargs": {"d_model": 32, "n_layers": 2, "n_heads": 2,
                                                            "max_len": 16}}])
def test_onnx_logits_match_pytorch(tmp_path, capsys, gen):
    pytest.importorskip("onnx", reason="ONNX export needs the 'onnx' extra")
    ort = pytest.importorskip("onnxruntime", reason="the ONNX check needs the 'onnx' extra")
    run_dir = train(tmp_path, gen["name"], gen)
    out = str(tmp_path / "onnx")
    info = cli_json(capsys, ["export", run_dir, "--format", "onnx", "--out", out])
    assert info["max_abs_diff"] is not None and info["max_abs_diff"] < 1e-4
    # independently: another batch size and length than the traced one, through the named input/output
    g = load_run(run_dir).generator
    sess = ort.InferenceSession(info["out"], providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids"] and [o.name for o in sess.get_outputs()] == ["logits"]
    ids = ids_for(g, B=5, T=13)
    got = torch.from_numpy(sess.run(["logits"], {"input_ids": ids.numpy()})[0])
    with torch.no_grad():
        ref = torch_logits(g, ids)
    assert got.shape == (5, 13, g.vocab_size)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tie", [True, False])
def test_gpt_to_gpt2_mapping_exact_on_large_weights(tie):
    """Weights scaled up so every detail of the network shows (GELU form, head split, layer norms)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    g = GPTGenerator(GPTGeneratorConfig(vocab_size=23, d_model=24, n_layers=2, n_heads=3, max_len=16, lm_bias=False,
                                        tie_weights=tie)).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.mul_(20.0 if p.dim() > 1 else 1.0).add_(0.1 * torch.randn_like(p))
    kw, sd = gpt_to_gpt2_state(g)
    hf = GPT2LMHeadModel(GPT2Config(**kw)).eval()
    hf.load_state_dict(sd, strict=False)
    ids = ids_for(g, B=2, T=12)
    with torch.no_grad():
        ref = torch_logits(g, ids)
        assert ref.std() > 1.0  # far from the small-activation regime where GELU variants agree
        torch.testing.assert_close(hf(input_ids=ids).logits, ref, atol=1e-4, rtol=1e-4)
