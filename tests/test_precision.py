"""train.precision: what each device supports, the documented bf16 fallback, fp16's CUDA check and loss scaling."""

from __future__ import annotations

import json
import os

import pytest
import torch

from llmgan.errors import ConfigError
from llmgan.training import precision as P

CPU = torch.device("cpu")
ROOT = os.path.join(os.path.dirname(__file__), "..", "configs")


@pytest.fixture
def fresh_probe():
    """The capability probe is cached per device type: clear it around a test that mocks it."""
    P.bf16_unsupported_reason.cache_clear()
    yield
    P.bf16_unsupported_reason.cache_clear()


def test_fp32_is_fp32_and_unknown_precision_is_one_config_line():
    assert P.resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(ConfigError, match=r"train.precision: expected fp32\|bf16\|fp16, got 'int8'"):
        P.resolve_precision("int8", CPU)


def test_fp16_off_cuda_is_refused_with_one_line():
    with pytest.raises(ConfigError) as e:
        P.resolve_precision("fp16", CPU)
    assert "fp16 needs a CUDA device" in str(e.value) and "\n" not in str(e.value)


def test_fp16_on_cpu_through_the_cli_exits_2_with_one_line(tmp_path, capsys):
    from llmgan.cli import main

    rc = main(["train", os.path.join(ROOT, "mle_oracle.yaml"), "--out", str(tmp_path / "r"),
               "--set", "train.precision=fp16", "--set", "device=cpu", "--set", "train.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and any("fp16 needs a CUDA device" in line for line in err)


def test_bf16_without_native_cpu_support_falls_back_to_fp32_with_one_warning(monkeypatch, capsys, fresh_probe):
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: False)
    probed = []
    monkeypatch.setattr(P, "bf16_autocast_runs", lambda dev: probed.append(dev))  # must not even be needed
    assert P.resolve_precision("bf16", CPU) == "fp32"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no native bf16" in err[0] and "training in fp32" in err[0]
    assert probed == []


def test_bf16_whose_ops_fail_under_autocast_falls_back_with_the_reason(monkeypatch, capsys, fresh_probe):
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(P, "bf16_autocast_runs", lambda dev: "could not create a primitive descriptor")
    assert P.resolve_precision("bf16", CPU) == "fp32"
    err = capsys.readouterr().err
    assert "could not create a primitive descriptor" in err and "training in fp32" in err


def test_bf16_where_supported_is_kept_and_autocasts_to_bf16(monkeypatch, fresh_probe):
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(P, "bf16_autocast_runs", lambda dev: None)
    assert P.resolve_precision("bf16", CPU) == "bf16"
    with P.autocast_context("bf16", CPU):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with P.autocast_context("fp32", CPU):
        assert not torch.is_autocast_enabled("cpu")


def test_the_real_probe_agrees_with_an_lstm_under_bf16_autocast(fresh_probe):
    """On this CPU, whatever it is: if the probe says bf16 works, an LSTM really runs under bf16 autocast."""
    if P.bf16_unsupported_reason("cpu") is not None:
        pytest.skip(f"CPU without working bf16 ({P.bf16_unsupported_reason('cpu')}): the fallback is tested above")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = torch.nn.LSTM(4, 4, batch_first=True)(torch.randn(2, 3, 4))
    assert out.dtype == torch.bfloat16


def test_bf16_run_on_a_cpu_without_it_trains_in_fp32(tmp_path, monkeypatch, capsys, fresh_probe):
    """The user's path: train.precision bf16 on an AVX2-only CPU trains (fp32, one warning), no oneDNN traceback."""
    from llmgan.cli import main

    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: False)
    run = tmp_path / "r"
    rc = main(["train", os.path.join(ROOT, "mle_oracle.yaml"), "--out", str(run), "--set", "train.precision=bf16",
               "--set", "device=cpu", "--set", "train.progress=false", "--set", "data.oracle_samples=64",
               "--set", "data.oracle_test_samples=16", "--set", "train.epochs=1", "--set", "eval.n_samples=16",
               "--set", "threads=1"])
    assert rc == 0
    assert "bf16 requested but this CPU has no native bf16" in capsys.readouterr().err
    final = [json.loads(x) for x in open(run / "metrics.jsonl") if '"final"' in x]
    assert final and all(v == v for v in final[-1].values() if isinstance(v, float))  # finite, not NaN


# ------------------------------------------------------------------------------------------- LossScaler
def _model_and_opt(seed: int = 0):
    torch.manual_seed(seed)
    m = torch.nn.Linear(3, 1)
    return m, torch.optim.SGD(m.parameters(), lr=0.1)


def _loss(m):
    return (m(torch.ones(2, 3)) ** 2).mean()


def test_loss_scaler_is_a_plain_backward_and_step_for_fp32_and_bf16():
    for precision in ("fp32", "bf16"):
        m_ref, o_ref = _model_and_opt()
        _loss(m_ref).backward()
        o_ref.step()
        m, o = _model_and_opt()
        s = P.LossScaler(precision, CPU)
        s.backward(_loss(m), o)
        s.unscale_(o)
        s.step(o)
        assert not s.enabled and s.state_dict({"g": o}) == {}
        assert torch.equal(m.weight, m_ref.weight) and torch.equal(m.bias, m_ref.bias)


def test_fp16_loss_scaler_scales_unscales_before_clipping_and_steps_like_plain_training():
    m_ref, o_ref = _model_and_opt()
    _loss(m_ref).backward()
    g_ref = m_ref.weight.grad.clone()
    o_ref.step()
    m, o = _model_and_opt()
    s = P.LossScaler("fp16", CPU)  # GradScaler("cpu"): the scaling logic is device-independent
    s.backward(_loss(m), o)
    assert torch.allclose(m.weight.grad, g_ref * 65536.0)  # the backward saw the scaled loss
    s.unscale_(o)
    assert torch.allclose(m.weight.grad, g_ref)  # what grad clipping sees: the true gradient
    s.step(o)
    assert torch.allclose(m.weight, m_ref.weight) and torch.allclose(m.bias, m_ref.bias)


def test_fp16_loss_scaler_skips_an_overflowing_step_and_backs_off_per_optimizer():
    m, o = _model_and_opt()
    other, o2 = _model_and_opt(1)
    s = P.LossScaler("fp16", CPU)
    before = m.weight.detach().clone()
    s.backward(_loss(m) * float("inf"), o)
    s.unscale_(o)
    s.step(o)
    assert torch.equal(m.weight, before)  # skipped: no inf in the weights
    s.backward(_loss(other), o2)
    s.step(o2)
    state = json.loads(json.dumps(s.state_dict({"generator": o, "discriminator": o2})))  # JSON for state.json
    assert state["generator"]["scale"] == 32768.0 and state["discriminator"]["scale"] == 65536.0
    restored = P.LossScaler("fp16", CPU)
    restored.load_state_dict(state, {"generator": o, "discriminator": o2})
    assert restored.state_dict({"generator": o, "discriminator": o2}) == state


def _train_weights(tmp_path, name: str, monkeypatch, scaled: bool) -> tuple[dict, dict]:
    """A tiny MLE + MaliGAN run; ``scaled``: the engine's fp16 loss scaling on (autocast stays off: CPU)."""
    from llmgan.config import load_config
    from llmgan.training import engine

    if scaled:  # fp16 is CUDA-only; on CPU exercise the engine's scaler wiring alone, with fp32 arithmetic
        monkeypatch.setattr(engine, "resolve_precision", lambda requested, device: "fp16")
        monkeypatch.setattr(engine, "autocast_context", lambda precision, device: P.autocast_context("fp32", device))
    cfg = load_config(os.path.join(ROOT, "maligan_oracle.yaml"), [
        "data.oracle_samples=64", "data.oracle_test_samples=16", "train.epochs=1", "train.batch_size=16",
        "train.progress=false", "eval.n_samples=16", "threads=1", "generator.kwargs={embed_dim: 8, hidden_dim: 8}",
        "discriminator.kwargs={emb_dim: 8, filter_sizes: [2], num_filters: [4]}", "adversarial.rounds=1",
        "adversarial.g_steps=2", "adversarial.d_pretrain_steps=1", "adversarial.d_epochs=1",
        "adversarial.d_samples=16", "adversarial.g_batch_size=8", "adversarial.d_batch_size=8",
        "train.grad_clip=0.01",  # a clip that binds: it must see unscaled gradients
    ])
    tr = engine.Trainer(cfg, str(tmp_path / name))
    tr.run()
    monkeypatch.undo()
    state = json.load(open(os.path.join(tr.latest_checkpoint, "state.json")))["state"]
    weights = {f"g.{k}": v.clone() for k, v in tr.generator.state_dict().items()}
    weights.update({f"d.{k}": v.clone() for k, v in tr.adversarial.discriminator.state_dict().items()})
    return weights, state


def test_engine_and_gan_updates_go_through_the_loss_scaler(tmp_path, monkeypatch):
    """Loss scaling by 2^16 and unscaling before the clip is exact: the scaled run ends with the fp32 run's weights.

    Covers the engine's MLE step and GANContext._update (MaliGAN's G and D updates); the scales are checkpointed.
    """
    plain, plain_state = _train_weights(tmp_path, "plain", monkeypatch, scaled=False)
    scaled, state = _train_weights(tmp_path, "scaled", monkeypatch, scaled=True)
    assert plain_state["loss_scale"] == {}
    assert set(state["loss_scale"]) == {"generator", "generator_adv", "discriminator"}, state["loss_scale"]
    assert state["loss_scale"]["generator"]["scale"] == 65536.0
    for k in plain:
        assert torch.allclose(plain[k], scaled[k], rtol=1e-5, atol=1e-7), k
