"""What a new user ran into (issue 15), each now a test: best checkpoint vs pruning, init_from with
another tokenizer, --resume on a typo, sampling options the CLI accepted and then crashed on or
ignored, --prompt on an unconditional run, a data.split that does not sum to 1."""

from __future__ import annotations

import os
import random

import pytest
import torch
from safetensors.torch import load_file

from llmgan.cli import main
from llmgan.config import config_from_dict, load_config
from llmgan.errors import CheckpointError, ConfigError
from llmgan.models.generators.oracle import random_oracle, save_oracle_file
from llmgan.run import load_run
from llmgan.training.checkpoint import Checkpointer
from llmgan.training.engine import Trainer


def make_corpus(path, n=200, seed=0) -> str:
    rng = random.Random(seed)
    words = ["red", "big", "cat", "dog", "sees", "likes", "the", "reality"]
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(6)) for _ in range(n)) + "\n")
    return str(path)


def word_config(train_file: str, **train) -> dict:
    return {
        "name": "tiny", "seed": 1,
        "data": {"train": train_file, "tokenizer": "word", "max_len": 8},
        "generator": {"name": "lstm", "kwargs": {"embed_dim": 8, "hidden_dim": 8}},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.01, "progress": False, **train},
        "eval": {"n_samples": 20, "batch_size": 20},
    }


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("word")
    run_dir = str(d / "run")
    Trainer(config_from_dict(word_config(make_corpus(d / "train.txt"))), run_dir).run()
    return run_dir


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llmgan: error: "), err
    return err[0]


# ------------------------------------------------------------------------------ best checkpoint
def test_best_checkpoint_survives_pruning_and_is_what_generate_and_evaluate_load(tmp_path, monkeypatch):
    """Early stopping with keep_checkpoints 2: the epoch of the best validation NLL (here epoch 3 of 5,
    as epoch 6's 4.245 in the report) is kept and is what load_run gives by default."""
    cfg = config_from_dict(word_config(make_corpus(tmp_path / "train.txt"), epochs=10, early_stopping=2,
                                       keep_checkpoints=2, checkpoint_every=1))
    scripted = iter([4.6, 4.4, 4.245, 4.3, 4.275, 4.2])  # best at epoch 3, then 2 evaluations worse
    real = Trainer.evaluate

    def evaluate(self, final=False):
        metrics = real(self, final)
        if not final:
            metrics["valid_nll"] = next(scripted)
        return metrics

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    run_dir = str(tmp_path / "run")
    Trainer(cfg, run_dir).run()
    ckpts = Checkpointer(run_dir)
    best, latest = ckpts.best(), ckpts.latest()
    assert best is not None and os.path.isdir(best) and best != latest
    import json

    with open(os.path.join(best, "state.json")) as f:
        state = json.load(f)["state"]
    assert state["epoch"] == 3 and state["best_valid"] == pytest.approx(4.245)
    # pruning kept the 2 newest and the best
    assert len([n for n in os.listdir(ckpts.dir) if n.startswith("step-")]) == 3
    run = load_run(run_dir)
    assert run.checkpoint == best
    best_g = load_file(os.path.join(best, "generator.safetensors"))
    assert all(torch.equal(best_g[k], v) for k, v in run.generator.state_dict().items())
    assert load_run(run_dir, checkpoint="latest").checkpoint == latest
    # resume continues from latest, never from best
    resumed = Trainer(cfg, run_dir, resume=True)
    resumed.setup()
    resumed.logger.close()
    assert resumed.latest_checkpoint == latest
    assert main(["generate", run_dir, "-n", "2", "--device", "cpu", "--checkpoint", "best"]) == 0


def test_best_is_not_used_by_default_for_adversarial_runs(word_run):
    # an MLE run without early stopping has no best: latest, and --checkpoint best says why not
    assert load_run(word_run).checkpoint == Checkpointer(word_run).latest()
    with pytest.raises(CheckpointError, match="no best checkpoint .*early_stopping"):
        load_run(word_run, checkpoint="best")


# ------------------------------------------------------------------------------ init_from, resume
def test_init_from_a_run_with_another_tokenizer_names_the_mismatch(tmp_path, word_run, capsys):
    oracle = str(tmp_path / "oracle.safetensors")
    save_oracle_file(random_oracle(vocab_size=30, embed_dim=8, hidden_dim=8, seed=5), oracle)
    ids_cfg = {"name": "ids", "seed": 0, "data": {"oracle": oracle, "tokenizer": "ids", "seq_len": 6,
                                                   "oracle_samples": 64, "oracle_test_samples": 16},
               "generator": {"name": "lstm", "kwargs": {"embed_dim": 8, "hidden_dim": 8}},
               "train": {"epochs": 1, "batch_size": 32, "progress": False}, "eval": {"n_samples": 16}}
    ids_run = str(tmp_path / "ids_run")
    Trainer(config_from_dict(ids_cfg), ids_run).run()
    # word data initialised from an ids run: was "token 'reality' is not an integer"
    cfg = word_config(make_corpus(tmp_path / "train.txt"), init_from=ids_run)
    with pytest.raises(ConfigError, match=r"init_from: .* the 'ids' tokenizer, this run's data.tokenizer is 'word'"):
        Trainer(config_from_dict(cfg), str(tmp_path / "a")).run()
    # an oracle (ids) run initialised from a word run: the vocabularies differ
    ids_cfg["train"]["init_from"] = word_run
    with pytest.raises(ConfigError, match=r"init_from: .*'word' tokenizer of \d+ tokens, this run has a 'ids'"):
        Trainer(config_from_dict(ids_cfg), str(tmp_path / "b")).run()


def test_resume_of_a_directory_that_does_not_exist_is_refused(tmp_path, capsys):
    cfg_path = tmp_path / "cfg.yaml"
    import json

    cfg_path.write_text(json.dumps(word_config(make_corpus(tmp_path / "train.txt"))))
    missing = str(tmp_path / "runs" / "doesnotexist")
    assert main(["train", str(cfg_path), "--out", missing, "--resume"]) == 2
    assert "is not a run directory" in one_error_line(capsys)
    assert not os.path.exists(missing)  # nothing trained from scratch


# ------------------------------------------------------------------------------ sampling options
@pytest.mark.parametrize("argv, flag", [
    (["-n", "0"], "-n"), (["-n", "-2"], "-n"), (["--temperature", "nan"], "--temperature"),
    (["--temperature", "-1"], "--temperature"), (["--temperature", "inf"], "--temperature"),
    (["--top-p", "1.5"], "--top-p"), (["--top-p", "0"], "--top-p"), (["--top-k", "-5"], "--top-k"),
    (["--top-k", "0"], "--top-k"), (["--max-len", "0"], "--max-len"),
])
def test_generate_refuses_bad_sampling_options_with_one_line(argv, flag, word_run, capsys):
    assert main(["generate", word_run, "--device", "cpu", *argv]) == 2
    assert one_error_line(capsys).startswith(f"llmgan: error: {flag}: expected")


def test_max_len_is_honoured_not_replaced_by_the_default(word_run, capsys):
    assert main(["generate", word_run, "--device", "cpu", "-n", "3", "--max-len", "1", "--seed", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(len(line.split()) <= 1 for line in lines)


def test_evaluate_refuses_zero_samples(word_run, capsys):
    assert main(["evaluate", word_run, "--device", "cpu", "--n-samples", "0"]) == 2
    assert "--n-samples: expected at least 1" in one_error_line(capsys)
    assert main(["evaluate", word_run, "--device", "cpu", "--temperature", "nan"]) == 2
    assert "--temperature" in one_error_line(capsys)


def test_python_api_applies_the_same_validation(word_run):
    g = load_run(word_run).generator
    for kwargs, name in [({"top_p": 1.5}, "top_p"), ({"top_k": -5}, "top_k"), ({"temperature": float("nan")},
                                                                                 "temperature")]:
        with pytest.raises(ConfigError, match=name):
            g.sample(2, 4, **kwargs)
    from llmgan.training.evaluation import evaluate_run

    with pytest.raises(ConfigError, match="n_samples: expected at least 1"):
        evaluate_run(load_run(word_run), n_samples=0)


def test_prompt_on_an_unconditional_run_is_refused(word_run, capsys):
    assert main(["generate", word_run, "--device", "cpu", "--prompt", "the cat"]) == 2
    assert "unconditional" in one_error_line(capsys)


def test_data_split_must_sum_to_one(tmp_path):
    train = make_corpus(tmp_path / "train.txt")
    with pytest.raises(ConfigError, match=r"data.split: .* sum to 1, got \[0.5, 0.6, 0.1\] \(sum 1.2\)"):
        load_config(None, [f"data.train={train}", "data.split=[0.5, 0.6, 0.1]"])
    load_config(None, [f"data.train={train}", "data.split=[0.8, 0.1, 0.1]"])  # float rounding is fine


# ------------------------------------------------------------------------------ corrupt artefacts, disk full
def _copy_run(word_run: str, tmp_path) -> tuple[str, str]:
    import shutil

    run_dir = str(tmp_path / "copy")
    shutil.copytree(word_run, run_dir)
    return run_dir, os.path.join(Checkpointer(run_dir).latest(), "generator.safetensors")


@pytest.mark.parametrize("damage", ["bit_flip_in_data", "truncated", "bit_flip_in_header"])
def test_a_damaged_checkpoint_file_is_a_one_line_error_never_a_silent_load(damage, word_run, tmp_path, capsys):
    run_dir, path = _copy_run(word_run, tmp_path)
    data = bytearray(open(path, "rb").read())
    if damage == "bit_flip_in_data":
        data[-3] ^= 0x10  # a weight changes: safetensors itself cannot notice
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[12] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(CheckpointError, match=r"generator.safetensors: corrupt"):
        load_run(run_dir)
    assert main(["generate", run_dir, "-n", "1", "--device", "cpu"]) == 2
    assert "generator.safetensors: corrupt" in one_error_line(capsys)
    with pytest.raises(CheckpointError, match="corrupt"):  # resuming from it is refused the same way
        Checkpointer.load(Checkpointer(run_dir).latest(), {"generator": load_run(word_run).generator})


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    import errno

    import llmgan.training.checkpoint as ck

    cfg = config_from_dict(word_config(make_corpus(tmp_path / "train.txt"), epochs=3, checkpoint_every=1))
    real, calls = ck.save_tensors, {"n": 0}

    def save_tensors(tensors, path, **kw):
        calls["n"] += 1
        if calls["n"] > 3:  # 3 files per checkpoint: the second checkpoint's first file finds no space
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, **kw)

    monkeypatch.setattr(ck, "save_tensors", save_tensors)
    run_dir = str(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"disk full\); the previous checkpoint .*step-\d+ is intact"):
        Trainer(cfg, run_dir).run()
    monkeypatch.setattr(ck, "save_tensors", real)
    assert load_run(run_dir).generator is not None
    assert not [n for n in os.listdir(os.path.join(run_dir, "checkpoints")) if n.startswith(".tmp-")]


def test_an_unknown_config_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"unknown config key train.'epoch' \(did you mean train.epochs\?"):
        load_config(None, ["data.oracle=seqgan", "train.epoch=3"])


@pytest.mark.parametrize("fault, message", [
    ("tokenizer_of_another_vocabulary", r"generator.safetensors: weight 'embedding.weight' has shape .*vocabulary"),
    ("config_of_another_architecture", r"generator.safetensors: weight .* has shape .*size mismatch"),
    ("generator_file_missing", r"generator.safetensors: checkpoint file not found"),
    ("config_with_unknown_key", r"config.yaml: unknown config key 'bogus'"),
    ("tokenizer_missing", r"tokenizer.json: file not found"),
])
def test_mismatched_or_missing_run_files_are_one_line_errors(fault, message, word_run, tmp_path, capsys):
    import json

    run_dir, gen_path = _copy_run(word_run, tmp_path)
    tok, cfg = os.path.join(run_dir, "tokenizer.json"), os.path.join(run_dir, "config.yaml")
    if fault == "tokenizer_of_another_vocabulary":
        d = json.load(open(tok))
        d["vocab"] += ["zzz1", "zzz2"]
        d["vocab_size"] = len(d["vocab"])
        open(tok, "w").write(json.dumps(d))
    elif fault == "config_of_another_architecture":
        text = open(cfg).read()
        assert "hidden_dim: 8" in text
        open(cfg, "w").write(text.replace("hidden_dim: 8", "hidden_dim: 16"))
    elif fault == "generator_file_missing":
        os.remove(gen_path)
    elif fault == "config_with_unknown_key":
        open(cfg, "a").write("\nbogus: 1\n")
    else:
        os.remove(tok)
    assert main(["generate", run_dir, "-n", "1", "--device", "cpu"]) == 2
    import re

    assert re.search(message, one_error_line(capsys))
