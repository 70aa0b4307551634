"""The MLE engine, checkpoints, resume, the NaN guard and the core CLI, end to end on tiny data."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch
from safetensors.torch import load_file

from llmgan.cli import main
from llmgan.config import config_from_dict, load_config
from llmgan.errors import CheckpointError, ConfigError, TrainingDiverged
from llmgan.run import load_run
from llmgan.training.checkpoint import Checkpointer
from llmgan.training.engine import Trainer
from llmgan.training.evaluation import corpus_nll


def make_corpus(path, n=300, seed=0):
    """Sentences with clear structure: 'the <adj> <noun> <verb> the <noun>'."""
    rng = random.Random(seed)
    adj, noun, verb = ["red", "big", "old", "small"], ["cat", "dog", "bird", "man", "car"], ["sees", "likes", "eats"]
    lines = [f"the {rng.choice(adj)} {rng.choice(noun)} {rng.choice(verb)} the {rng.choice(noun)}" for _ in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def tiny_config(train_file, **train):
    t = {"epochs": 3, "batch_size": 16, "lr": 0.01, "progress": False, "eval_every": 1, "log_every": 5}
    t.update(train)
    return config_from_dict(
        {
            "name": "tiny",
            "seed": 3,
            "data": {"train": train_file, "tokenizer": "word", "max_len": 12},
            "generator": {"name": "lstm", "kwargs": {"embed_dim": 16, "hidden_dim": 16}},
            "train": t,
            "eval": {"n_samples": 50},
        }
    )


def test_mle_lowers_validation_nll(tmp_path):
    cfg = tiny_config(make_corpus(tmp_path / "train.txt"), epochs=4)
    tr = Trainer(cfg, str(tmp_path / "run"))
    tr.setup()
    before = corpus_nll(tr.generator, tr.data.valid)
    tr.logger.close()
    final = Trainer(cfg, str(tmp_path / "run2")).run()
    assert final["valid_nll"] < before - 0.5, (before, final)
    evals = [r for r in map(json.loads, open(tmp_path / "run2" / "metrics.jsonl")) if r["phase"] == "eval"]
    assert len(evals) == 4 and evals[-1]["valid_nll"] < evals[0]["valid_nll"]
    run = load_run(str(tmp_path / "run2"))
    assert corpus_nll(run.generator, tr.data.valid) == pytest.approx(final["valid_nll"], rel=1e-5)


def test_resume_after_interruption_gives_same_weights(tmp_path):
    cfg = tiny_config(make_corpus(tmp_path / "train.txt"), epochs=3, checkpoint_every=1)
    Trainer(cfg, str(tmp_path / "full")).run()
    full = load_run(str(tmp_path / "full")).generator.state_dict()

    interrupted = Trainer(cfg, str(tmp_path / "cut"))
    original = interrupted.maybe_stop

    def stop_mid_epoch():  # as if SIGTERM arrived during epoch 2
        if interrupted.state["mle_step"] == 25:
            interrupted._stop = True
        original()

    interrupted.maybe_stop = stop_mid_epoch
    with pytest.raises(SystemExit):
        interrupted.run()
    state = json.load(open(os.path.join(Checkpointer(str(tmp_path / "cut")).latest(), "state.json")))
    assert state["state"]["mle_step"] == 25 and state["state"]["batch"] > 0  # mid-epoch checkpoint
    Trainer(cfg, str(tmp_path / "cut"), resume=True).run()
    resumed = load_run(str(tmp_path / "cut")).generator.state_dict()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(make_corpus(tmp_path / "train.txt"), epochs=3)
    tr = Trainer(cfg, str(tmp_path / "run"))
    calls = {"n": 0}
    tr_setup = tr.setup

    def setup():
        tr_setup()
        real = tr.generator.weighted_nll

        def poisoned(*a, **k):
            calls["n"] += 1
            out = real(*a, **k)
            return out * float("nan") if calls["n"] > 30 else out  # NaN in epoch 2

        tr.generator.weighted_nll = poisoned

    tr.setup = setup
    with pytest.raises(TrainingDiverged, match=r"MLE loss became nan .*last good checkpoint: .*step-"):
        tr.run()
    run = load_run(str(tmp_path / "run"))  # the epoch-1 checkpoint is intact
    assert all(torch.isfinite(v).all() for v in run.generator.state_dict().values())


def test_oracle_cli_and_training_on_random_oracle(tmp_path, capsys):
    out = tmp_path / "oracle"
    assert main(["oracle", "--out", str(out), "--n", "200", "--seq-len", "6", "--random", "--vocab", "30",
                 "--seed", "1"]) == 0
    lines = (out / "train.txt").read_text().splitlines()
    assert len(lines) == 200 and all(len(line.split()) == 6 for line in lines)
    assert all(0 <= int(x) < 30 for line in lines for x in line.split())
    cfg = load_config(None, [
        f"data.oracle={out / 'oracle.safetensors'}", "data.tokenizer=ids", "data.seq_len=6",
        "data.oracle_samples=300", "data.oracle_test_samples=100", "train.epochs=2", "train.progress=false",
        "generator.kwargs={embed_dim: 8, hidden_dim: 8}", "eval.n_samples=200",
    ])
    final = Trainer(cfg, str(tmp_path / "run")).run()
    assert 0 < final["oracle_nll"] < 10
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--json", "--n-samples", "100"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"oracle_nll", "test_nll"}
    assert main(["generate", str(tmp_path / "run"), "-n", "3"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 3 and all(len(r.split()) == 6 for r in rows)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.tokenizer=morse"], "data.tokenizer: expected word|char|bpe|ids"),
        (["train.batch_size=0"], "train.batch_size: expected >= 1"),
        (["train.epochs=many"], "train.epochs: expected an integer"),
        (["train.nonsense=1"], "unknown config key train.'nonsense'"),
        (["data.max_len=-3"], "data.max_len: expected >= 1"),
    ],
)
def test_impossible_configs_are_one_line_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.train=x.txt", *overrides])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_reports_user_errors_on_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  train: missing.txt\n", encoding="utf-8")
    assert main(["train", str(cfg), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llmgan: error:") and "missing.txt" in err[0]
    assert main(["generate", str(tmp_path / "nowhere")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n", encoding="utf-8")
    assert main(["train", str(bad)]) == 2
    assert "is not valid YAML" in capsys.readouterr().err


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    cfg = tiny_config(make_corpus(tmp_path / "train.txt"), epochs=1)
    Trainer(cfg, str(tmp_path / "run")).run()
    latest = Checkpointer(str(tmp_path / "run")).latest()
    path = os.path.join(latest, "generator.safetensors")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or unreadable safetensors"):
        load_run(str(tmp_path / "run"))
    assert main(["generate", str(tmp_path / "run")]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_checkpoint_is_atomic(tmp_path):
    """A crash while writing leaves no partial checkpoint: `latest` still names the old, complete one."""
    model = torch.nn.Linear(3, 2)
    ck = Checkpointer(str(tmp_path), keep=2)
    first = ck.save(1, {"m": model}, {}, {"phase": "mle"})

    class Boom(torch.nn.Module):
        def state_dict(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ck.save(2, {"m": model, "boom": Boom()}, {}, {"phase": "mle"})
    assert ck.latest() == first
    assert not [n for n in os.listdir(ck.dir) if n.startswith(".tmp")]
    assert sorted(n for n in os.listdir(ck.dir) if n.startswith("step-")) == ["step-0000001"]


def test_train_refuses_to_overwrite_a_run(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "train.txt", n=60)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{train: {corpus}, max_len: 12}}\ntrain: {{epochs: 1, batch_size: 16}}\n"
                   "generator: {kwargs: {embed_dim: 8, hidden_dim: 8}}\neval: {n_samples: 20}\n", encoding="utf-8")
    run = str(tmp_path / "r")
    assert main(["train", str(cfg), "--out", run, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", str(cfg), "--out", run, "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(cfg), "--out", run, "--no-progress", "--resume", "--set", "train.epochs=2"]) == 0


def _torchrun_train(tmp_path, config_yaml: str, port: int) -> list[dict]:
    """Write the config, train it under torchrun with 2 gloo processes, return the run's metrics records."""
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_yaml, encoding="utf-8")
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
         "-m", "llmgan.cli", "train", str(cfg), "--out", str(run), "--device", "cpu"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in open(run / "metrics.jsonl")]


def test_torchrun_two_processes(tmp_path):
    """Data-parallel MLE under torchrun (gloo, CPU): both ranks train, rank 0 alone logs and checkpoints."""
    corpus = make_corpus(tmp_path / "train.txt", n=200)
    records = _torchrun_train(
        tmp_path,
        f"data: {{train: {corpus}, max_len: 12}}\ntrain: {{epochs: 2, batch_size: 16, progress: false}}\n"
        "generator: {kwargs: {embed_dim: 8, hidden_dim: 8}}\neval: {n_samples: 20}\nthreads: 1\n",
        port=29517,
    )
    run = tmp_path / "run"
    finals = [r for r in records if r["phase"] == "final"]
    assert len(finals) == 1  # one writer
    # 200 lines -> 180 train rows after the split, 90 per rank -> 6 batches per rank per epoch
    mle_steps = json.load(open(os.path.join(Checkpointer(str(run)).latest(), "state.json")))["state"]["mle_step"]
    assert mle_steps == 2 * 6
    assert load_run(str(run)).generator is not None


@pytest.mark.parametrize("algorithm", ["seqgan", "gsgan"])
def test_torchrun_adversarial_keeps_ranks_in_sync(tmp_path, algorithm):
    """Adversarial training under torchrun (2 gloo processes): each rank samples its own fakes and
    rollouts, gradients are averaged, and the engine's per-round check finds G, D and the rollout policy
    identical on both ranks (it raises otherwise); rank 0 alone writes the metrics and checkpoints."""
    corpus = make_corpus(tmp_path / "train.txt", n=200)
    records = _torchrun_train(
        tmp_path,
        f"data: {{train: {corpus}, max_len: 12}}\ntrain: {{epochs: 1, batch_size: 16, progress: false}}\n"
        "generator: {kwargs: {embed_dim: 8, hidden_dim: 8}}\neval: {n_samples: 20}\nthreads: 1\n"
        "discriminator: {kwargs: {emb_dim: 8, filter_sizes: [2, 3], num_filters: [6, 6]}}\n"
        f"adversarial: {{algorithm: {algorithm}, rounds: 3, d_pretrain_steps: 1, d_steps: 1, d_epochs: 1, "
        "d_samples: 32, d_batch_size: 16, g_batch_size: 8, eval_every: 3, checkpoint_every: 3"
        + (", params: {rollouts: 2}}\n" if algorithm == "seqgan" else "}\n"),
        port=29519,
    )
    assert [r["round"] for r in records if r["phase"] == "adversarial"] == [1, 2, 3]  # one writer
    assert len([r for r in records if r["phase"] == "final"]) == 1


def test_ranks_out_of_sync_is_a_clear_error(monkeypatch):
    """The sync check compares per-parameter checksums across ranks: a drifted rank is named."""
    import llmgan.training.distributed as D
    from llmgan.errors import TrainingDiverged

    calls = []

    def fake_all_reduce(t, op):  # as if the other rank held weights shifted by +1 (MAX) / -1 (MIN)
        calls.append(op)
        t.add_(1.0 if op == D.dist.ReduceOp.MAX else -1.0)

    monkeypatch.setattr(D, "world_size", lambda: 2)
    monkeypatch.setattr(D.dist, "all_reduce", fake_all_reduce)
    with pytest.raises(TrainingDiverged, match="generator's parameters differ across ranks"):
        D.assert_in_sync({"generator": torch.nn.Linear(3, 2)}, "adversarial round 4")
    assert len(calls) == 2


def test_generate_interpolates_latent_codes(tmp_path, capsys):
    """A generator with a latent code: --interpolate walks z0 -> z1; a fixed z plus the seed reproduces."""
    cfg = tiny_config(make_corpus(tmp_path / "train.txt", n=80), epochs=1)
    cfg.generator.kwargs["latent_dim"] = 4
    Trainer(cfg, str(tmp_path / "run")).run()
    run = load_run(str(tmp_path / "run"))
    with torch.no_grad():  # a visible effect of z, so the walk changes the samples
        run.generator.latent.weight.mul_(50)
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    a = run.generator.sample(2, 8, z=z, generator=torch.Generator().manual_seed(3)).tokens
    b = run.generator.sample(2, 8, z=z, generator=torch.Generator().manual_seed(3)).tokens
    assert torch.equal(a, b)
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "-n", "6", "--interpolate", "--seed", "1"]) == 0
    first = capsys.readouterr().out.strip().splitlines()
    assert main(["generate", str(tmp_path / "run"), "-n", "6", "--interpolate", "--seed", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == first and len(first) == 6
    assert main(["generate", str(tmp_path / "run"), "-n", "2", "--interpolate", "--seed", "2"]) == 0
    capsys.readouterr()
    cfg2 = tiny_config(make_corpus(tmp_path / "t2.txt", n=40), epochs=1)
    Trainer(cfg2, str(tmp_path / "plain")).run()
    assert main(["generate", str(tmp_path / "plain"), "--interpolate"]) == 2
    assert "latent" in capsys.readouterr().err


@pytest.mark.parametrize("algorithm", ["seqgan", "scratchgan", "gad"])
def test_adversarial_run_resumes_exactly(tmp_path, algorithm):
    """A run killed between adversarial rounds resumes to the same weights (G, D, the algorithm's own
    modules) — ScratchGAN's moving-average baseline travels in the checkpoint's algorithm state."""
    corpus = make_corpus(tmp_path / "train.txt", n=120)
    params = {"seqgan": {"rollouts": 2}, "scratchgan": {}, "gad": {"group_size": 4}}[algorithm]

    def cfg():
        c = tiny_config(corpus, epochs=1)
        c.discriminator.kwargs = {"filter_sizes": [2, 3], "num_filters": [6, 6]}
        c.adversarial.algorithm = algorithm
        c.adversarial.rounds, c.adversarial.d_pretrain_steps = 4, 2
        c.adversarial.d_steps, c.adversarial.d_epochs, c.adversarial.d_samples = 1, 1, 48
        c.adversarial.g_batch_size, c.adversarial.checkpoint_every = 8, 1
        c.adversarial.params = params
        return c

    Trainer(cfg(), str(tmp_path / "full")).run()
    cut = Trainer(cfg(), str(tmp_path / "cut"))
    original = cut.maybe_stop

    def stop_after_round_two():
        if cut.state["phase"] == "adversarial" and cut.state["round"] == 2:
            cut._stop = True
        original()

    cut.maybe_stop = stop_after_round_two
    with pytest.raises(SystemExit):
        cut.run()
    Trainer(cfg(), str(tmp_path / "cut"), resume=True).run()
    full_ckpt, cut_ckpt = Checkpointer(str(tmp_path / "full")).latest(), Checkpointer(str(tmp_path / "cut")).latest()
    assert json.load(open(os.path.join(cut_ckpt, "state.json")))["state"]["round"] == 4
    if algorithm == "scratchgan":
        saved = json.load(open(os.path.join(cut_ckpt, "state.json")))["state"]["algorithm"]["baseline"]
        assert saved is not None and len(saved["values"]) == 1  # the scalar EWMA was checkpointed
    names = ("generator", "discriminator") + (("rollout_policy",) if algorithm == "seqgan" else ())
    for name in names:
        fa = load_file(os.path.join(full_ckpt, f"{name}.safetensors"))
        fb = load_file(os.path.join(cut_ckpt, f"{name}.safetensors"))
        for k in fa:
            assert torch.equal(fa[k], fb[k]), (name, k)


def test_init_from_another_run(tmp_path):
    """train.init_from starts from another run's generator (and tokenizer); extra layers stay fresh."""
    corpus = make_corpus(tmp_path / "train.txt", n=80)
    Trainer(tiny_config(corpus, epochs=1), str(tmp_path / "base")).run()
    base = load_run(str(tmp_path / "base")).generator.state_dict()
    cfg = tiny_config(corpus, epochs=0, init_from=str(tmp_path / "base"))
    cfg.generator.kwargs["latent_dim"] = 3  # a latent layer the base run does not have
    Trainer(cfg, str(tmp_path / "next")).run()
    nxt = load_run(str(tmp_path / "next")).generator.state_dict()
    assert all(torch.equal(base[k], nxt[k]) for k in base)
    assert "latent.weight" in nxt and "latent.weight" not in base
    other = tiny_config(corpus, epochs=0, init_from=str(tmp_path / "base"))
    other.generator.kwargs["hidden_dim"] = 12
    with pytest.raises(CheckpointError, match="size mismatch"):
        Trainer(other, str(tmp_path / "bad")).run()


def test_partial_discriminator_section_keeps_its_default_name():
    """`discriminator: {kwargs: ...}` overlays the discriminator's defaults (name cnn), not the generator's."""
    from llmgan.config import config_from_dict

    cfg = config_from_dict({"data": {"oracle": "seqgan", "tokenizer": "ids"},
                            "discriminator": {"kwargs": {"emb_dim": 8}}, "generator": {"kwargs": {"hidden_dim": 8}}})
    assert cfg.discriminator.name == "cnn" and cfg.discriminator.kwargs == {"emb_dim": 8}
    assert cfg.generator.name == "lstm" and cfg.generator.kwargs == {"hidden_dim": 8}
