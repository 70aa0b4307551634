"""llmgan.integrations.trl: an online discriminator as TRL GRPOTrainer's reward (GAD on TRL), offline on CPU
with a tiny GPT-2-config student (examples/trl_gad.py): D learns while GRPO trains the student, two
processes under ``accelerate launch`` (gloo) end with the same D, and D resumes with TRL checkpoints."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("trl", reason="the TRL integration needs the 'trl' extra: pip install 'llmgan[trl]'")

from llmgan.apps.translation import make_records  # noqa: E402
from llmgan.data import build_tokenizer  # noqa: E402
from llmgan.errors import CheckpointError, ConfigError  # noqa: E402
from llmgan.integrations.trl import STATE_DIR, OnlineDiscriminatorReward  # noqa: E402
from llmgan.tensor_files import load_tensors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from trl_gad import run  # noqa: E402

TINY_CNN = {"emb_dim": 16, "filter_sizes": [2, 3], "num_filters": [16, 16]}


def salad(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(3, 7)))


def test_reward_trains_d_on_references_vs_completions_and_logs():
    recs = make_records(64, seed=1)
    tok = build_tokenizer("word", [r["prompt"] + " " + r["response"] for r in recs])
    words = sorted({w for r in recs for w in r["prompt"].split()})  # source words: wrong language for a response
    torch.manual_seed(0)
    reward = OnlineDiscriminatorReward("cnn", tok, lr=3e-3, discriminator_kwargs=TINY_CNN, name="d")
    rng = random.Random(0)
    logged: list[tuple[str, float]] = []
    for i in range(30):
        batch = recs[(8 * i) % 64: (8 * i) % 64 + 8]
        out = reward(prompts=[r["prompt"] for r in batch], completions=[salad(rng, words) for _ in batch],
                     completion_ids=None, response=[r["response"] for r in batch],
                     log_metric=lambda k, v: logged.append((k, v)))
        assert len(out) == 8 and all(isinstance(x, float) for x in out)
    acc = [h["pair_accuracy"] for h in reward.history]
    assert sum(acc[-5:]) / 5 >= 0.9 > sum(acc[:3]) / 3, acc  # measured before each update: fresh pairs
    assert reward.updates == 30 and reward.calls == 30
    assert {k for k, _ in logged} == {f"d/{m}" for m in
                                      ("loss", "pair_accuracy", "real_accuracy", "fake_accuracy", "reward_mean")}
    # the reward is D's logit of the completion: references now score above salads
    r_ref = reward(prompts=["x"], completions=[recs[0]["response"]], response=[recs[0]["response"]])
    r_fake = reward(prompts=["x"], completions=[salad(rng, words)], response=[recs[0]["response"]])
    assert r_ref[0] > r_fake[0]
    # an evaluation batch (the trainer's model in eval mode) is scored but does not train D
    reward._model = torch.nn.Linear(1, 1).eval()
    before = {k: v.clone() for k, v in reward.discriminator.state_dict().items()}
    reward(prompts=["x"], completions=["y"], response=[recs[0]["response"]])
    assert all(torch.equal(before[k], v) for k, v in reward.discriminator.state_dict().items())


def test_hf_model_as_the_discriminator(tmp_path):
    """An hf: backbone with its own vocabulary re-tokenizes the texts and trains as D (here a tiny GPT-2;
    hf:minilm, a real encoder, goes the same way, only slower to load)."""
    from llmgan.models.hf import make_tiny_hf_model

    path = make_tiny_hf_model(str(tmp_path / "d"), "gpt2", ["the cat sat", "a dog ran on"], seed=3)
    tok = build_tokenizer("word", ["the cat sat", "a dog ran"])
    reward = OnlineDiscriminatorReward(f"hf:{path}", tok, lr=1e-3, max_length=16)
    head = reward.discriminator.head.weight.detach().clone()
    out = reward(prompts=["p", "q"], completions=["dog dog dog", "cat"], response=["the cat sat", "a dog ran"])
    assert len(out) == 2 and reward.updates == 1
    assert not torch.equal(head, reward.discriminator.head.weight)


def test_reward_bad_input_one_line():
    tok = build_tokenizer("word", ["a b c"])
    with pytest.raises(ConfigError, match="loss"):
        OnlineDiscriminatorReward("cnn", tok, loss="nope", discriminator_kwargs=TINY_CNN)
    reward = OnlineDiscriminatorReward("cnn", tok, discriminator_kwargs=TINY_CNN)
    with pytest.raises(ConfigError, match="reference column 'response' is not among.*answer"):
        reward(prompts=["a"], completions=["b"], answer=["c"])
    # conversational records (TRL's chat format) are read by their contents
    out = reward(prompts=[[{"role": "user", "content": "a"}]], completions=[[{"role": "assistant", "content": "b"}]],
                 response=[[{"role": "assistant", "content": "c"}]])
    assert len(out) == 1


def test_gad_on_grpo_trainer_d_improves_while_student_trains(tmp_path):
    out = str(tmp_path / "run")
    trainer, reward, summary = run(["--out", out, "--steps", "24", "--batch-size", "16", "--d-steps", "2",
                                    "--d-lr", "3e-3", "--save-steps", "100"])
    assert summary["global_step"] == 24 and reward.calls == 24 and reward.updates == 48
    assert summary["pair_accuracy_last"] >= 0.75 and summary["pair_accuracy_last"] > summary["pair_accuracy_first"] \
        + 0.15, summary
    # TRL logged D's metrics next to its own
    logs = [e for e in trainer.state.log_history if "gad_discriminator/pair_accuracy" in e]
    assert len(logs) == 24 and all("gad_discriminator/loss" in e for e in logs)
    # the student was trained by GRPO on D's reward
    start = load_tensors(os.path.join(out, "student", "model.safetensors"))
    end = trainer.model.state_dict()
    assert max(float((start[k] - end[k].cpu()).abs().max()) for k in start if k in end) > 1e-3


def test_d_state_survives_checkpoint_and_resume(tmp_path):
    out = str(tmp_path / "run")
    common = ["--out", out, "--batch-size", "8", "--save-steps", "2"]
    _, reward, _ = run([*common, "--steps", "4"])
    ckpt = os.path.join(out, "checkpoint-4")
    saved = load_tensors(os.path.join(ckpt, STATE_DIR, "discriminator.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in reward.discriminator.state_dict().items())
    assert os.path.isfile(os.path.join(out, "checkpoint-2", STATE_DIR, "state.json"))
    # resume: the callback loads D, its optimizer and counters at train begin, and training goes on from them
    trainer, resumed, _ = run([*common, "--steps", "6", "--resume"])
    assert resumed._loaded_from == ckpt and resumed.calls == 6 and resumed.updates == 6
    # what the callback restores is exactly what was saved: weights, Adam moments, counters
    fresh = OnlineDiscriminatorReward("cnn", reward.tokenizer, discriminator_kwargs=TINY_CNN)
    cb = fresh.callback()
    cb.on_train_begin(SimpleNamespace(output_dir=out), SimpleNamespace(global_step=4), None, model=None)
    for k, v in fresh.discriminator.state_dict().items():
        assert torch.equal(v, saved[k]), k
    moments = load_tensors(os.path.join(ckpt, STATE_DIR, "optimizer.safetensors"))
    state = fresh.optimizer.state_dict()["state"]
    assert moments and all(torch.equal(state[int(key.split(".")[0])][key.split(".", 1)[1]], t)
                           for key, t in moments.items())
    assert (fresh.calls, fresh.updates) == (4, 4)
    # a checkpoint without D state: one clear error instead of silently restarting D
    import shutil

    shutil.rmtree(os.path.join(out, "checkpoint-6", STATE_DIR))
    with pytest.raises(CheckpointError, match="no discriminator state"):
        run([*common, "--steps", "8", "--resume"])


@pytest.mark.slow
def test_two_processes_under_accelerate_end_with_equal_d(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": "",  # always the CPU / gloo path this test is about
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = str(tmp_path / "ddp")
    # --multi_gpu picks torch's elastic launcher; with no GPU the trainer (use_cpu) joins a gloo group
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29617",
         str(ROOT / "tests" / "helpers" / "trl_ddp_worker.py"), out, "--steps", "4", "--save-steps", "100"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1 of 2" in proc.stdout and "rank 0 of 2" in proc.stdout
    assert proc.stdout.count("'d_updates': 4") == 2
    a, b = (load_tensors(os.path.join(out, f"d-rank{r}.safetensors")) for r in (0, 1))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
