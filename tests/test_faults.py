"""Faults during training: SIGTERM inside every phase, kill -9 at seeded random moments, a second signal.

Each interrupted run is resumed and must end with exactly (bitwise, on CPU) the weights, optimizer
states and RNG-driven results of an uninterrupted run; after every kill ``latest`` must name a
complete checkpoint. The long variant (20 kill points across MLE, D pre-training and rounds) is
benchmarks/fault_injection.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from llmgan import interrupt
from llmgan.config import config_from_dict
from llmgan.models.generators.oracle import random_oracle, save_oracle_file
from llmgan.run import load_run
from llmgan.training.checkpoint import Checkpointer
from llmgan.training.engine import Trainer
from signals import signal_and_wait

SRC = os.path.join(os.path.dirname(__file__), "..", "src")


@pytest.fixture(scope="module")
def oracle_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("oracle") / "oracle.safetensors")
    save_oracle_file(random_oracle(vocab_size=30, embed_dim=8, hidden_dim=8, seed=5), path)
    return path


def fault_config(oracle_path: str, algorithm: str = "seqgan", **adv) -> dict:
    """SeqGAN in miniature with every phase present: 2 MLE epochs, 2 D pre-training refreshes, 2 rounds
    of 2 G steps (8-token samples, 2 rollouts: 7 rollout batches per G step) and 2 D steps of 2 epochs
    x 2 minibatches. Checkpoints after every epoch and round, as a kill -9 needs them."""
    params = {"seqgan": {"rollouts": 2}, "maligan": {}, "gad": {"group_size": 4, "ppo_epochs": 2}}[algorithm]
    return {
        "name": "faults",
        "seed": 3,
        "data": {"oracle": oracle_path, "tokenizer": "ids", "seq_len": 8, "oracle_samples": 96,
                 "oracle_test_samples": 32},
        "generator": {"name": "lstm", "kwargs": {"embed_dim": 16, "hidden_dim": 16}},
        "discriminator": {"name": "cnn", "kwargs": {"emb_dim": 16, "filter_sizes": [2, 3], "num_filters": [8, 8]}},
        "train": {"epochs": 2, "batch_size": 32, "progress": False, "log_every": 1, "checkpoint_every": 1},
        "adversarial": {"algorithm": algorithm, "rounds": 2, "g_steps": 2, "d_steps": 2, "d_epochs": 2,
                        "d_pretrain_steps": 2, "d_samples": 32, "d_batch_size": 16, "g_batch_size": 16,
                        "eval_every": 1, "checkpoint_every": 1, "params": params, **adv},
        "eval": {"n_samples": 32, "batch_size": 16},
    }


def final_tensors(run_dir: str) -> dict[str, torch.Tensor]:
    """Every tensor of the run's latest checkpoint (weights, optimizer moments, RNG states)."""
    ckpt = Checkpointer(run_dir).latest()
    assert ckpt is not None
    out = {}
    for name in sorted(os.listdir(ckpt)):
        if name.endswith(".safetensors"):
            out.update({f"{name}:{k}": v for k, v in load_file(os.path.join(ckpt, name)).items()})
    return out


def metric_records(run_dir: str) -> list[dict]:
    """metrics.jsonl without what differs between any two runs (wall-clock times and speeds)."""
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if not (k == "time" or k.startswith("time_") or k.endswith("_per_s"))}
            for r in records]


def assert_same_metrics(reference_dir: str, run_dir: str) -> None:
    """The resumed run's metrics.jsonl holds the uninterrupted run's lines, each once, in order."""
    expected, got = metric_records(reference_dir), metric_records(run_dir)
    assert len(got) == len(expected), f"{len(got)} metrics lines, {len(expected)} uninterrupted"
    assert got == expected


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"differ after resume: {different[:5]}"


@pytest.fixture(scope="module")
def reference_run(oracle_path, tmp_path_factory):
    """One uninterrupted run per algorithm: its final tensors and its number of fault points
    (``get.run_dir(algorithm)``: its directory, for its metrics.jsonl)."""
    cache: dict[str, tuple[dict, int]] = {}
    dirs: dict[str, str] = {}

    def get(algorithm: str) -> tuple[dict, int]:
        if algorithm not in cache:
            run_dir = str(tmp_path_factory.mktemp(f"full-{algorithm}"))
            counter = _EventCounter()
            with counter:
                Trainer(config_from_dict(fault_config(oracle_path, algorithm)), run_dir).run()
            cache[algorithm], dirs[algorithm] = (final_tensors(run_dir), counter.n), run_dir
        return cache[algorithm]

    def run_dir(algorithm: str) -> str:
        get(algorithm)
        return dirs[algorithm]

    get.run_dir = run_dir
    return get


# ------------------------------------------------------------------------------------- SIGTERM
# Where the signal arrives: (phase, which sub-step, which interruption point inside it). None for the
# interruption point means "right after an MLE optimizer step" (MLE steps have no point inside).
SIGTERM_POINTS = {
    "mle_step": lambda tr, n: tr.state["phase"] == "mle" and tr.state["mle_step"] == 3 and n is None,
    # the epoch-1 evaluation, 3 token steps into its sampling (point 1 is the batch loop's, 2 the first token's)
    "mle_eval": lambda tr, n: tr.state["phase"] == "mle" and tr.state["epoch"] == 1 and n == 5,
    # 3rd D minibatch of the 2nd pre-training refresh: D and its Adam moments were already updated twice
    "d_pretrain_minibatch": lambda tr, n: tr.state["phase"] == "d_pretrain" and tr.state["d_pretrain"] == 1
    and n == 3 + 8,  # 8 token steps of sampling come first
    # the 2nd G step of round 1, inside Monte-Carlo rollouts (after 8 sampling steps, 3 rollout batches)
    "rollout_batch": lambda tr, n: _pos(tr, "g") == 1 and n == 8 + 3,
    # the 2nd D step of round 2, mid-minibatches
    "round_d_minibatch": lambda tr, n: tr.state["round"] == 1 and _pos(tr, "d") == 1 and n == 8 + 3,
    # the round's end: evaluation sampling after the updates (round counter already moved)
    "round_end_eval": lambda tr, n: _pos(tr, "steps_done") is True and n == 8 * 32 // 16 + 3,
    # after the rollouts, while D scores them (8 sampling steps, 7 rollout batches, then scoring)
    "rollout_scoring": lambda tr, n: _pos(tr, "g") == 0 and tr.state["round"] == 0 and n == 8 + 7 + 1,
    # the evaluation's oracle NLL, after its 2 sampling batches of 1 + 8 points each
    "eval_oracle_nll": lambda tr, n: tr.state["phase"] == "mle" and tr.state["epoch"] == 2 and n == 2 * 9 + 1,
}
# where the stop must be taken for the points added against long uninterruptible stretches at the
# paper's sizes (docs/reliability.md, benchmarks/sigterm_latency.py): the function holding the point
STOPPED_IN = {"rollout_scoring": ("score_completions", "_point_then"), "eval_oracle_nll": ("oracle_nll",)}


def _pos(tr: Trainer, key: str):
    pos = tr.state.get("round_pos")
    return None if pos is None or tr.state["phase"] != "adversarial" else pos[key]


class _Trigger:
    """Sends this process SIGTERM at the chosen moment and records whether the stop took effect right
    there (StopRequested raised by that very interruption point) rather than at a later boundary."""

    def __init__(self, tr: Trainer, when, sig: int = signal.SIGTERM):
        self.tr, self.when, self.sig = tr, when, sig
        self.sub, self.n, self.fired, self.raised_there = None, 0, False, False

    def point(self, original):
        def point() -> None:
            if self.tr._sub is not self.sub:
                self.sub, self.n = self.tr._sub, 0
            self.n += 1
            fire = not self.fired and self.tr._sub is not None and self.when(self.tr, self.n)
            if fire:
                self.fired, self.caller = True, sys._getframe(1).f_code.co_name
                os.kill(os.getpid(), self.sig)  # the real handler runs here
            try:
                original()
            except interrupt.StopRequested:
                self.raised_there = fire
                raise

        return point

    def after_step(self, original):
        def step(*a, **k):
            out = original(*a, **k)
            if not self.fired and self.when(self.tr, None):
                self.fired = True
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        return step


@pytest.mark.parametrize("where", list(SIGTERM_POINTS))
def test_sigterm_inside_every_phase_checkpoints_and_resumes_exactly(where, oracle_path, tmp_path, monkeypatch,
                                                                   reference_run):
    expected, _ = reference_run("seqgan")
    cfg = fault_config(oracle_path)
    run_dir = str(tmp_path / "cut")
    tr = Trainer(config_from_dict(cfg), run_dir)
    trig = _Trigger(tr, SIGTERM_POINTS[where])
    with monkeypatch.context() as m:
        m.setattr(interrupt, "point", trig.point(interrupt.point))
        m.setattr(tr, "supervised_step", trig.after_step(tr.supervised_step))
        with pytest.raises(SystemExit) as exit_info:
            tr.run()
    assert exit_info.value.code == 143
    assert trig.fired
    if where != "mle_step":
        assert trig.raised_there, "the stop waited for a later boundary instead of the interruption point"
    if where in STOPPED_IN:
        assert trig.caller in STOPPED_IN[where], trig.caller
    assert signal.getsignal(signal.SIGTERM) is not None and not interrupt.requested()  # handlers restored
    with open(os.path.join(Checkpointer(run_dir).latest(), "state.json")) as f:
        state = json.load(f)["state"]
    if where in ("rollout_batch", "round_d_minibatch", "round_end_eval"):  # mid-round: where exactly
        pos = state["round_pos"]
        assert pos is not None
        assert {"rollout_batch": (1, 0, False), "round_d_minibatch": (2, 1, False),
                "round_end_eval": (2, 2, True)}[where] == (pos["g"], pos["d"], pos["steps_done"])
    Trainer(config_from_dict(cfg), run_dir, resume=True).run()
    assert_bitwise_equal(expected, final_tensors(run_dir))
    # no metrics line twice (a stopped evaluation, or a round end, is redone on resume) and none missing
    assert_same_metrics(reference_run.run_dir("seqgan"), run_dir)


def test_stop_inside_a_gad_g_step_resumes_exactly(oracle_path, tmp_path, monkeypatch, reference_run):
    """A second algorithm family (GAD: groups of responses, PPO epochs): a stop while the second G step
    of round 1 samples its groups resumes to the uninterrupted run's tensors."""
    expected, _ = reference_run("gad")
    cfg = fault_config(oracle_path, "gad")
    run_dir = str(tmp_path / "cut")
    tr = Trainer(config_from_dict(cfg), run_dir)
    trig = _Trigger(tr, lambda tr, n: _pos(tr, "g") == 1 and n == 4)
    with monkeypatch.context() as m:
        m.setattr(interrupt, "point", trig.point(interrupt.point))
        with pytest.raises(SystemExit):
            tr.run()
    assert trig.raised_there
    Trainer(config_from_dict(cfg), run_dir, resume=True).run()
    assert_bitwise_equal(expected, final_tensors(run_dir))


def test_sigint_is_honoured_like_sigterm_with_status_130(oracle_path, tmp_path, monkeypatch, reference_run):
    expected, _ = reference_run("seqgan")
    cfg = fault_config(oracle_path)
    run_dir = str(tmp_path / "cut")
    tr = Trainer(config_from_dict(cfg), run_dir)
    trig = _Trigger(tr, SIGTERM_POINTS["rollout_batch"], sig=signal.SIGINT)
    # Python's own Ctrl-C handler as the one before the run, whatever this process inherited (a job started
    # in the background by a shell inherits SIGINT ignored)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with monkeypatch.context() as m:
            m.setattr(interrupt, "point", trig.point(interrupt.point))
            with pytest.raises(SystemExit) as exit_info:
                tr.run()
        assert exit_info.value.code == 130 and trig.raised_there
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C behaves as before again
    finally:
        signal.signal(signal.SIGINT, inherited)
    Trainer(config_from_dict(cfg), run_dir, resume=True).run()
    assert_bitwise_equal(expected, final_tensors(run_dir))


# ------------------------------------------------------------------------------------- kill -9
class _EventCounter:
    """Counts the moments a kill -9 can land on: every optimizer step and every fsync (a checkpoint
    save does several: each file, each directory, the pointer). ``kill_at``: SIGKILL this process
    at that event (a fork of the test process, so the kill is real)."""

    def __init__(self, kill_at: int | None = None):
        self.n, self.kill_at = 0, kill_at

    def tick(self) -> None:
        self.n += 1
        if self.n == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def __enter__(self):
        self._fsync, self._step = os.fsync, Trainer.optimizer_step
        counter = self

        def fsync(fd):
            counter.tick()
            return counter._fsync(fd)

        def step(tr, *a, **k):
            counter.tick()
            return counter._step(tr, *a, **k)

        os.fsync, Trainer.optimizer_step = fsync, step
        return self

    def __exit__(self, *exc):
        os.fsync, Trainer.optimizer_step = self._fsync, self._step


def _run_and_kill(cfg: dict, run_dir: str, resume: bool, kill_at: int) -> int:
    """Train in a forked child that SIGKILLs itself at event ``kill_at``; returns the wait status."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            with _EventCounter(kill_at):
                Trainer(config_from_dict(cfg), run_dir, resume=resume).run()
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_9_at_seeded_random_moments_resumes_to_the_same_weights(oracle_path, tmp_path, reference_run):
    expected, n_events = reference_run("seqgan")
    cfg = fault_config(oracle_path)
    run_dir = str(tmp_path / "killed")
    rng = random.Random(15)
    # kill points spread over the whole run (MLE, D pre-training, rounds, saves); each counted from the
    # start of its own (resumed) process, so they move through the run as it progresses
    points = sorted(rng.sample(range(1, n_events), 4))
    resume, killed = False, 0
    for at in [points[0]] + [b - a for a, b in zip(points, points[1:])]:
        status = _run_and_kill(cfg, run_dir, resume, at)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        killed += 1
        if Checkpointer(run_dir).latest() is not None:  # latest names a complete checkpoint that loads
            run = load_run(run_dir)
            assert all(torch.isfinite(v).all() for v in run.generator.state_dict().values())
            resume = True
    assert killed == 4 and resume
    Trainer(config_from_dict(cfg), run_dir, resume=True).run()
    assert_bitwise_equal(expected, final_tensors(run_dir))
    # lines logged after the checkpoint a kill fell back to are dropped on resume, not repeated
    assert_same_metrics(reference_run.run_dir("seqgan"), run_dir)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_9_in_d_pretraining_loses_at_most_checkpoint_every_refreshes(oracle_path, tmp_path, reference_run):
    # a D pre-training refresh of the paper's schedule is minutes of CPU; with checkpoint_every 1 a kill
    # in the 2nd refresh must fall back to the end of the 1st, not to the end of MLE
    expected, _ = reference_run("seqgan")
    cfg = fault_config(oracle_path)
    run_dir = str(tmp_path / "killed")
    pid = os.fork()
    if pid == 0:  # child: SIGKILLs itself as the 2nd refresh starts; never returns into pytest
        sub_step = Trainer.sub_step

        def kill_in_second_refresh(tr, fn):
            if tr.state["phase"] == "d_pretrain" and tr.state["d_pretrain"] == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            return sub_step(tr, fn)

        Trainer.sub_step = kill_in_second_refresh
        try:
            Trainer(config_from_dict(cfg), run_dir).run()
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    with open(os.path.join(Checkpointer(run_dir).latest(), "state.json")) as f:
        state = json.load(f)["state"]
    assert (state["phase"], state["d_pretrain"]) == ("d_pretrain", 1)
    Trainer(config_from_dict(cfg), run_dir, resume=True).run()
    assert_bitwise_equal(expected, final_tensors(run_dir))


# ------------------------------------------------------------------------------------- real signals
def _train_command(cfg_path: str, run_dir: str) -> list[str]:
    return [sys.executable, "-m", "llmgan.cli", "train", cfg_path, "--out", run_dir, "--threads", "1"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.path.abspath(SRC), "OMP_NUM_THREADS": "1"}


def _wait_for(path: str, text: str, proc: subprocess.Popen, timeout: float = 120.0, count: int = 1) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.isfile(path) and open(path, encoding="utf-8").read().count(text) >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_sigterm_through_the_cli_exits_143_within_10_s_during_a_long_d_step(oracle_path, tmp_path):
    """One D step of 3 x 1,250 minibatches on 20,000 fresh samples (tens of seconds on a busy CPU, like
    a paper-sized D step): SIGTERM during the first one ends the process with status 143 within 10 s,
    with a checkpoint from which the step is redone."""
    cfg = fault_config(oracle_path, d_pretrain_steps=2, d_samples=20000, d_epochs=3)
    cfg_path = str(tmp_path / "cfg.yaml")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)  # JSON is YAML
    run_dir = str(tmp_path / "run")
    proc = subprocess.Popen(_train_command(cfg_path, run_dir), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(os.path.join(run_dir, "metrics.jsonl"), '"phase": "eval"', proc, count=2)  # MLE is over
        time.sleep(1.0)  # well inside the first D step
    except BaseException:
        proc.kill()
        raise
    elapsed, err = signal_and_wait(proc)
    assert proc.returncode == 143, err
    assert elapsed < 10, (elapsed, err.strip().splitlines()[-1:])  # the engine's line says where the time went
    assert "stopped on request" in err and "Traceback" not in err
    with open(os.path.join(Checkpointer(run_dir).latest(), "state.json")) as f:
        state = json.load(f)["state"]
    assert state["phase"] == "d_pretrain" and state["d_pretrain"] == 0


def test_a_second_signal_exits_at_once(oracle_path, tmp_path):
    """With the first stop slowed down (a save that hangs), a second SIGTERM ends the process at once
    with 143, and ``latest`` still names the previous complete checkpoint."""
    cfg = fault_config(oracle_path)
    cfg["adversarial"]["rounds"] = 1000
    script = f"""
import json, os, signal, sys, time
from llmgan.config import config_from_dict
from llmgan.training.engine import Trainer
cfg = config_from_dict(json.loads({json.dumps(json.dumps(cfg))}))
tr = Trainer(cfg, {str(tmp_path / "run")!r})
real_save = tr.save
def save():
    if tr._signal is not None:  # the stop's checkpoint: hang, as on a stalled disk
        print("saving", flush=True)
        time.sleep(120)
    real_save()
tr.save = save
tr.run()
"""
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(os.path.join(str(tmp_path / "run"), "metrics.jsonl"), '"adversarial"', proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().strip() == "saving"
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and time.time() - t0 < 5, err
    assert "second signal" in err
    assert load_run(str(tmp_path / "run")).generator is not None


_EXIT_AFTER = """
import atexit, sys
from llmgan.cli import exit_after
atexit.register(lambda: print("teardown ran", flush=True))
def entry():
    print("checkpoint written", end="")  # still buffered (a pipe): must reach the reader
    if sys.argv[1] == "fail":
        raise SystemExit("one-line error")
    if sys.argv[1] != "ok":
        raise SystemExit(int(sys.argv[1]))
    return 0
exit_after(entry)
"""


@pytest.mark.parametrize("how, code, teardown", [("143", 143, False), ("130", 130, False), ("ok", 0, True),
                                                 ("2", 2, True), ("fail", 1, True)])
def test_a_stop_on_request_exits_without_the_interpreter_teardown(how, code, teardown):
    """After the stop's checkpoint, the process skips the interpreter's teardown (seconds of freeing
    torch's objects, docs/reliability.md) but keeps what it printed; every other exit is a normal one."""
    env = {k: v for k, v in _env().items() if k != "PYTHONUNBUFFERED"}  # stdout a buffered pipe, as usual
    out = subprocess.run([sys.executable, "-c", _EXIT_AFTER, how], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == code, out.stderr
    assert out.stdout.startswith("checkpoint written")
    assert ("teardown ran" in out.stdout) is teardown, out.stdout
