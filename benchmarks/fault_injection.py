"""Long fault-injection run: 20 kills at seeded random moments across MLE, D pre-training and rounds.

    python benchmarks/fault_injection.py [--points 20] [--seed 15] [--algorithm seqgan]

A tiny SeqGAN-style run on a random oracle is trained once uninterrupted, counting its "events"
(optimizer steps and fsyncs: a kill on an fsync lands inside a checkpoint save). Then the same run is
killed at ``--points`` seeded random events, alternately with SIGKILL (kill -9: resume from the
last checkpoint) and SIGTERM (stop at the next interruption point: exit 143 and a checkpoint of
exactly where it was), each time in a forked child, and resumed until it finishes. After every kill
``latest`` must name a complete checkpoint that loads; at the end every tensor of the final
checkpoint (weights, optimizer moments, RNG states) must equal the uninterrupted run's, bitwise.
Exit status 0 when all of that holds, 1 otherwise. The short variant is tests/test_faults.py.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file

from llmgan.config import config_from_dict
from llmgan.models.generators.oracle import random_oracle, save_oracle_file
from llmgan.run import load_run
from llmgan.training.checkpoint import Checkpointer
from llmgan.training.engine import Trainer


def config(oracle: str, algorithm: str) -> dict:
    params = {"seqgan": {"rollouts": 2}, "maligan": {}, "gad": {"group_size": 4, "ppo_epochs": 2}}[algorithm]
    return {
        "name": "faults", "seed": 7,
        "data": {"oracle": oracle, "tokenizer": "ids", "seq_len": 10, "oracle_samples": 256,
                 "oracle_test_samples": 64},
        "generator": {"name": "lstm", "kwargs": {"embed_dim": 16, "hidden_dim": 16}},
        "discriminator": {"name": "cnn", "kwargs": {"emb_dim": 16, "filter_sizes": [2, 3], "num_filters": [8, 8]}},
        "train": {"epochs": 3, "batch_size": 32, "progress": False, "log_every": 1, "checkpoint_every": 1},
        "adversarial": {"algorithm": algorithm, "rounds": 4, "g_steps": 2, "d_steps": 2, "d_epochs": 2,
                        "d_pretrain_steps": 4, "d_samples": 64, "d_batch_size": 16, "g_batch_size": 16,
                        "eval_every": 2, "checkpoint_every": 1, "params": params},
        "eval": {"n_samples": 64, "batch_size": 32},
    }


class Events:
    """Counts optimizer steps and fsyncs; sends ``sig`` to this process at event ``at``."""

    def __init__(self, at: int | None = None, sig: int = signal.SIGKILL):
        self.n, self.at, self.sig = 0, at, sig

    def tick(self) -> None:
        self.n += 1
        if self.n == self.at:
            os.kill(os.getpid(), self.sig)

    def __enter__(self):
        self._fsync, self._step = os.fsync, Trainer.optimizer_step
        ev = self

        def fsync(fd):
            ev.tick()
            return ev._fsync(fd)

        def step(tr, *a, **k):
            ev.tick()
            return ev._step(tr, *a, **k)

        os.fsync, Trainer.optimizer_step = fsync, step
        return self

    def __exit__(self, *exc):
        os.fsync, Trainer.optimizer_step = self._fsync, self._step


def tensors(run_dir: str) -> dict[str, torch.Tensor]:
    ckpt = Checkpointer(run_dir).latest()
    out = {}
    for name in sorted(os.listdir(ckpt)):
        if name.endswith(".safetensors"):
            out.update({f"{name}:{k}": v for k, v in load_file(os.path.join(ckpt, name)).items()})
    return out


def killed_run(cfg: dict, run_dir: str, resume: bool, at: int, sig: int) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            with Events(at, sig):
                Trainer(config_from_dict(cfg), run_dir, resume=resume).run()
        except SystemExit as e:
            code = int(e.code or 0)
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--points", type=int, default=20)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--algorithm", default="seqgan", choices=["seqgan", "maligan", "gad"])
    a = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        oracle = os.path.join(tmp, "oracle.safetensors")
        save_oracle_file(random_oracle(vocab_size=40, embed_dim=8, hidden_dim=8, seed=5), oracle)
        cfg = config(oracle, a.algorithm)
        t0 = time.time()
        with Events() as ev:
            Trainer(config_from_dict(cfg), os.path.join(tmp, "full")).run()
        expected, n_events = tensors(os.path.join(tmp, "full")), ev.n
        print(f"uninterrupted: {n_events} events in {time.time() - t0:.1f} s", file=sys.stderr)
        rng = random.Random(a.seed)
        points = sorted(rng.sample(range(1, n_events), a.points))
        run_dir, resume, failures = os.path.join(tmp, "cut"), False, []
        for i, (prev, at) in enumerate(zip([0] + points, points)):
            sig = signal.SIGKILL if i % 2 == 0 else signal.SIGTERM
            status = killed_run(cfg, run_dir, resume, at - prev, sig)
            how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}")
            ok = (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL) if sig == signal.SIGKILL \
                else (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 143)
            latest = Checkpointer(run_dir).latest()
            if latest is not None:
                load_run(run_dir)  # a complete checkpoint: loads without error
                resume = True
            print(f"kill {i + 1:2d}/{a.points}: {signal.Signals(sig).name} at event {at} -> {how}, "
                  f"latest {os.path.basename(latest) if latest else 'none yet'}", file=sys.stderr)
            if not ok:
                failures.append(f"kill {i + 1}: expected {signal.Signals(sig).name}'s outcome, got {how}")
        Trainer(config_from_dict(cfg), run_dir, resume=resume).run()
        got = tensors(run_dir)
        differ = [k for k in expected if k not in got or not torch.equal(expected[k], got[k])]
        if differ:
            failures.append(f"final tensors differ from the uninterrupted run: {differ[:5]}")
        for f in failures:
            print("FAIL", f, file=sys.stderr)
        print(f"{a.points} kills ({a.algorithm}): " + ("final weights bitwise equal, latest always complete"
                                                         if not failures else f"{len(failures)} failures"))
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
