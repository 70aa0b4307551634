"""Oracle runs validate on their own held-out oracle sample, never on the test set (so early stopping never
selects on test), and never split held-out sets off the training samples."""

from __future__ import annotations

import json
import os

from llmgan.config import load_config
from llmgan.training.data_setup import prepare_data
from llmgan.training.engine import Trainer

ORACLE = ["data.oracle=seqgan", "data.tokenizer=ids", "data.seq_len=20", "data.oracle_samples=64",
          "data.oracle_test_samples=32"]


def _rows(path) -> list[str]:
    return open(path).read().splitlines()


def test_oracle_run_samples_a_validation_set_apart_from_test_and_train(tmp_path):
    run = tmp_path / "run"
    data = prepare_data(load_config(None, ORACLE), str(run))
    valid, test, train = (_rows(run / "data" / f"{n}.txt") for n in ("valid", "test", "train"))
    assert len(valid) == 32 and len(test) == 32 and len(train) == 64  # valid size follows oracle_test_samples
    assert not set(valid) & set(test) and not set(valid) & set(train)  # disjoint (20 tokens of a 5000-word oracle)
    assert data.valid.tokens.tolist() != data.test.tokens.tolist() and len(data.valid) == 32
    assert [" ".join(map(str, r[:n])) for r, n in zip(data.valid.tokens.tolist(), data.valid.lengths.tolist())] == valid
    # as many validation as training samples: still disjoint (a validation stream that replayed the training
    # stream, e.g. seed + 2**32 on the 32-bit CPU generator, gives the training set back row for row)
    same = tmp_path / "same"
    prepare_data(load_config(None, [*ORACLE, "data.oracle_valid_samples=64"]), str(same))
    assert not set(_rows(same / "data" / "valid.txt")) & set(_rows(same / "data" / "train.txt"))
    # the validation stream is its own: the same seed draws the same set again, and changing the validation
    # sample leaves train and test exactly as before (published oracle benchmarks keep their data)
    again, other = tmp_path / "again", tmp_path / "other"
    prepare_data(load_config(None, ORACLE), str(again))
    assert _rows(again / "data" / "valid.txt") == valid
    prepare_data(load_config(None, [*ORACLE, "data.oracle_valid_samples=8"]), str(other))
    assert len(_rows(other / "data" / "valid.txt")) == 8
    assert _rows(other / "data" / "test.txt") == test and _rows(other / "data" / "train.txt") == train


def test_oracle_run_with_a_training_file_samples_valid_instead_of_splitting_train(tmp_path):
    """The demo's path: data.train and data.test given, no data.valid: all training samples stay training."""
    src = tmp_path / "src"
    prepare_data(load_config(None, ORACLE), str(src))
    cfg = load_config(None, [*ORACLE, f"data.train={src / 'data' / 'train.txt'}",
                             f"data.test={src / 'data' / 'test.txt'}", "data.oracle_valid_samples=16"])
    data = prepare_data(cfg, str(tmp_path / "run"))
    assert len(data.train) == 64 and len(data.valid) == 16 and len(data.test) == 32
    assert not set(_rows(tmp_path / "run" / "data" / "valid.txt")) & set(_rows(src / "data" / "test.txt"))


def test_early_stopping_reads_the_validation_nll_not_the_test_nll(tmp_path):
    cfg = load_config(None, [*ORACLE, "train.epochs=2", "train.eval_every=1", "train.progress=false",
                             "train.early_stopping=5", "generator.kwargs={embed_dim: 8, hidden_dim: 8}",
                             "eval.n_samples=16", "threads=1"])
    tr = Trainer(cfg, str(tmp_path / "run"))
    final = tr.run()
    records = [json.loads(x) for x in open(os.path.join(tr.run_dir, "metrics.jsonl"))]
    evals = [r for r in records if r.get("phase") == "eval"]
    # the validation NLL the engine tracks is the valid file's, which is not the test file
    assert final["valid_nll"] != final["test_nll"]
    assert tr.state["best_valid"] == min(r["valid_nll"] for r in evals)
    tr.state.update(best_valid=1.0, bad_evals=0)
    assert tr._early_stop({"valid_nll": 2.0, "test_nll": 0.5}) is False and tr.state["bad_evals"] == 1
    assert tr._early_stop({"test_nll": 0.5}) is False and tr.state["bad_evals"] == 1  # test alone never counts
