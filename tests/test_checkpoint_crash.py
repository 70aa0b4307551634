"""Crash safety of checkpoints: a save killed between any two of its file operations leaves
``latest`` naming a complete checkpoint, the old one or the new one, and nothing that breaks the
next save.

A kill is simulated in-process: the k-th file operation (mkdir, open, write of a safetensors file,
fsync, rename, replace, unlink, rmdir, rmtree) raises, and so does every operation after it, so the
save's own clean-up handlers cannot tidy up (a killed process runs none). A safetensors write that is
hit is left torn (half its bytes). This checks what a kill leaves; what a power cut leaves also needs
the fsyncs, whose order the last test checks.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

import llmgan.tensor_files as tensor_files
from llmgan.training.checkpoint import Checkpointer, checkpoint_key


class SimulatedCrash(BaseException):
    """Not an Exception: nothing in the code under test may catch it and carry on."""


class Killer:
    """Counts file operations; the ``crash_at``-th and every later one raises SimulatedCrash."""

    def __init__(self, crash_at: int | None):
        self.crash_at = crash_at
        self.calls = 0
        self.dead = False
        self.log: list[tuple] = []

    def wrap(self, name: str, fn: Callable) -> Callable:
        def op(*args, **kwargs):
            if self.dead:
                raise SimulatedCrash(f"dead (tried {name})")
            self.calls += 1
            if self.calls == self.crash_at:
                self.dead = True
                if name == "save_file":  # killed mid-write: a torn file under the temp name
                    fn(*args, **kwargs)
                    path = args[1]
                    with open(path, "r+b") as f:
                        f.truncate(os.path.getsize(path) // 2)
                raise SimulatedCrash(f"killed at operation {self.calls} ({name})")
            self.log.append((name, *args))
            return fn(*args, **kwargs)

        return op


OS_OPS = ("mkdir", "open", "fsync", "replace", "rename", "unlink", "rmdir")


@contextmanager
def file_ops(monkeypatch, killer: Killer) -> Iterator[None]:
    with monkeypatch.context() as m:
        for name in OS_OPS:
            m.setattr(os, name, killer.wrap(name, getattr(os, name)))
        m.setattr(shutil, "rmtree", killer.wrap("rmtree", shutil.rmtree))
        m.setattr(tensor_files, "save_file", killer.wrap("save_file", tensor_files.save_file))
        yield


def tagged(tag: float) -> tuple[torch.nn.Linear, torch.optim.Adam]:
    """A model and optimizer whose every tensor holds ``tag``: a loaded checkpoint mixing files from
    two saves shows up as two different values."""
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(tag)
            opt.state[p]["exp_avg"].fill_(tag)
    return model, opt


def save(ck: Checkpointer, step: int, tag: float, monkeypatch=None, killer: Killer | None = None) -> str | None:
    """``ck.save`` of a tagged model; with a killer, only the save itself runs under it (torch's lazy
    imports in the optimizer step must not be the ones killed)."""
    model, opt = tagged(tag)
    if killer is None:
        return ck.save(step, {"m": model}, {"m": opt}, {"phase": "mle", "tag": tag})
    with file_ops(monkeypatch, killer):
        return ck.save(step, {"m": model}, {"m": opt}, {"phase": "mle", "tag": tag})


def loaded_tag(path: str) -> float:
    """Load a checkpoint into fresh objects; every file must come from the same save."""
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    state = Checkpointer.load(path, {"m": model}, {"m": opt})
    tag = state["tag"]
    for p in model.parameters():
        assert torch.all(p == tag), f"{path}: weights from another save than its state.json"
        assert torch.all(opt.state[p]["exp_avg"] == tag), f"{path}: optimizer from another save"
    return tag


def entries(ck: Checkpointer) -> list[str]:
    return sorted(os.listdir(ck.dir)) if os.path.isdir(ck.dir) else []


def junk(ck: Checkpointer) -> list[str]:
    return [n for n in entries(ck) if n.startswith(".")]


def checkpoints(ck: Checkpointer) -> list[str]:
    return [n for n in entries(ck) if checkpoint_key(n) is not None]


def plant_leftovers(ck: Checkpointer) -> None:
    """What earlier killed saves leave: a temp checkpoint, a half-pruned one, a pointer temp file."""
    os.makedirs(os.path.join(ck.dir, ".tmp-abc123"))
    open(os.path.join(ck.dir, ".tmp-abc123", "m.safetensors"), "wb").write(b"\x00" * 10)
    os.makedirs(os.path.join(ck.dir, ".tmp-pruned-step-0000001"))
    open(os.path.join(ck.dir, ".latest.xyz.tmp"), "w").write("step-00")


# (keep, saves before, (step, tag) of the interrupted save, plant leftovers first)
SCENARIOS = {
    "first_save": (2, [], (1, 1.0), False),
    "new_step": (2, [(1, 10.0)], (2, 1.0), False),
    "same_step": (2, [(5, 10.0)], (5, 1.0), False),
    "new_step_prunes": (2, [(1, 10.0), (2, 11.0)], (3, 1.0), False),
    "same_step_prunes_the_only_old_one": (1, [(4, 10.0), (4, 11.0)], (4, 1.0), False),
    "after_an_earlier_crash": (2, [(5, 10.0)], (6, 1.0), True),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_save_killed_at_every_file_operation_leaves_a_complete_latest(scenario, tmp_path, monkeypatch, capsys):
    keep, before, (step, tag), leftovers = SCENARIOS[scenario]
    # a kill keeps what reached the page cache, so fsync changes nothing seen here (the fsync-order
    # test below covers power cuts); counted as an operation still, but not paid ~5 ms a call
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    old_tag = before[-1][1] if before else None
    k = 0
    while True:
        k += 1
        assert k < 500, "the save never completed"
        run_dir = str(tmp_path / f"k{k}")
        ck = Checkpointer(run_dir, keep=keep)
        for s, t in before:
            save(ck, s, t)
        if leftovers:
            plant_leftovers(ck)
        names_before = checkpoints(ck)
        killer = Killer(crash_at=k)
        try:
            save(ck, step, tag, monkeypatch, killer)
        except SimulatedCrash:
            crashed = True
        else:
            crashed = False
        capsys.readouterr()

        # a fresh process looks at what the kill left
        fresh = Checkpointer(run_dir, keep=keep)
        latest = fresh.latest()
        assert "warning" not in capsys.readouterr().err, f"k={k}: `latest` named a missing checkpoint"
        if latest is None:
            assert old_tag is None and crashed, f"k={k}: the previous checkpoint was lost"
        else:
            got = loaded_tag(latest)
            assert got in ({old_tag, tag} if crashed else {tag}), f"k={k}: latest holds tag {got}"
        for name in checkpoints(fresh):  # never a half-written or half-pruned step-* directory
            assert loaded_tag(os.path.join(fresh.dir, name)) in {t for _, t in before} | {tag}, f"k={k}: {name}"
        if crashed and latest is not None and got == old_tag:
            # until the pointer moved, the old checkpoint directory is untouched
            assert os.path.basename(latest) in names_before

        # and the next save works, cleans up after the kill and prunes to `keep`
        path = save(fresh, step, 99.0)
        assert fresh.latest() == path and loaded_tag(path) == 99.0
        assert junk(fresh) == [], f"k={k}: leftovers {junk(fresh)}"
        assert len(checkpoints(fresh)) <= keep
        if not crashed:
            break
    assert k > 10  # the injector really saw the save's operations (sanity of the test itself)


def test_a_kill_mid_save_leaves_nothing_that_breaks_the_next_saves(tmp_path, monkeypatch):
    """Killed after its temp files exist, a save leaves them; the next saves (same step and new
    ones) succeed, remove them, and resume loads the newest."""
    ck = Checkpointer(str(tmp_path), keep=2)
    save(ck, 3, 10.0)
    killer = Killer(crash_at=None)
    save(ck, 3, 1.0, monkeypatch, killer)
    ops = killer.calls
    # crash just before the checkpoint directory is renamed into place: a full temp dir is left
    rename_at = next(i for i, op in enumerate(killer.log, 1) if op[0] == "rename")
    with pytest.raises(SimulatedCrash):
        save(ck, 3, 2.0, monkeypatch, Killer(crash_at=rename_at))
    assert any(n.startswith(".tmp-") for n in junk(ck)), "the kill should have left a temp dir"
    assert ops > rename_at
    for step, tag in ((3, 3.0), (3, 4.0), (4, 5.0)):
        save(ck, step, tag)
        assert junk(ck) == []
    assert checkpoints(ck) == ["step-0000003.3", "step-0000004"]
    assert loaded_tag(ck.latest()) == 5.0


def test_resaves_of_one_step_get_new_names_and_latest_moves(tmp_path):
    ck = Checkpointer(str(tmp_path), keep=3)
    paths = [save(ck, 7, float(t)) for t in range(4)]
    assert [os.path.basename(p) for p in paths] == ["step-0000007", "step-0000007.1", "step-0000007.2",
                                                   "step-0000007.3"]
    assert checkpoints(ck) == ["step-0000007.1", "step-0000007.2", "step-0000007.3"]
    assert ck.latest() == paths[-1] and loaded_tag(ck.latest()) == 3.0
    save(ck, 8, 8.0)
    assert checkpoints(ck) == ["step-0000007.2", "step-0000007.3", "step-0000008"]
    # numeric order, not string order: step-0000007.10 comes after step-0000007.9
    assert checkpoint_key("step-0000007.10") > checkpoint_key("step-0000007.9") > checkpoint_key("step-0000007")


def test_saves_after_latest_left_by_a_killed_run_are_pruned(tmp_path):
    """A run killed after renaming step-3 into place but before moving `latest` resumes from step-2;
    when it re-saves step 2, that step-3 (sorted after the new `latest`) is dropped, not kept forever."""
    ck = Checkpointer(str(tmp_path), keep=2)
    save(ck, 2, 2.0)
    save(ck, 3, 3.0)
    with open(os.path.join(ck.dir, "latest"), "w", encoding="utf-8") as f:
        f.write("step-0000002\n")  # as if killed before the pointer moved
    assert loaded_tag(ck.latest()) == 2.0
    save(ck, 2, 20.0)  # the resumed run re-saves step 2 (D pre-training does)
    assert checkpoints(ck) == ["step-0000002", "step-0000002.1"]
    assert loaded_tag(ck.latest()) == 20.0
    save(ck, 3, 30.0)
    assert checkpoints(ck) == ["step-0000002.1", "step-0000003"]
    assert loaded_tag(ck.latest()) == 30.0


def test_latest_naming_a_missing_checkpoint_falls_back_with_a_warning(tmp_path, capsys):
    ck = Checkpointer(str(tmp_path), keep=3)
    save(ck, 1, 1.0)
    save(ck, 2, 2.0)
    shutil.rmtree(os.path.join(ck.dir, "step-0000002"))
    assert loaded_tag(ck.latest()) == 1.0
    err = capsys.readouterr().err
    assert "warning" in err and "step-0000002" in err and "step-0000001" in err and err.count("\n") == 1
    with open(os.path.join(ck.dir, "latest"), "w", encoding="utf-8") as f:
        f.write("../../etc\n")  # not a checkpoint name: never followed
    assert loaded_tag(ck.latest()) == 1.0
    shutil.rmtree(os.path.join(ck.dir, "step-0000001"))
    from llmgan.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no other checkpoint is complete"):
        ck.latest()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="maps fsync'd descriptors to paths via /proc")
def test_fsyncs_come_before_the_renames_they_make_durable(tmp_path, monkeypatch):
    """For a power cut: each file's data is on disk before its rename, the checkpoint folder before
    it is renamed into place, and the checkpoints folder before `latest` names the new entry and
    before anything is pruned."""
    ck = Checkpointer(str(tmp_path), keep=1)
    save(ck, 1, 1.0)
    events: list[tuple[str, str, str]] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd):
        events.append(("fsync", os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")), ""))
        return real_fsync(fd)

    def replace(src, dst, *a, **k):
        events.append(("move", os.path.realpath(src), os.path.realpath(dst)))
        return real_replace(src, dst, *a, **k)

    def rename(src, dst, *a, **k):
        events.append(("move", os.path.realpath(src), os.path.realpath(dst)))
        return real_rename(src, dst, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fsync)
        m.setattr(os, "replace", replace)
        m.setattr(os, "rename", rename)
        save(ck, 1, 2.0)  # a re-save that prunes the old one
    cdir = os.path.realpath(ck.dir)
    synced: list[str] = []
    moves = 0
    placed = pointed = False  # the new checkpoint renamed into place / `latest` replaced
    for kind, a, b in events:
        if kind == "fsync":
            synced.append(a)
            continue
        moves += 1
        name = os.path.basename(b)
        if name.startswith(".tmp-pruned-"):
            assert pointed and synced[-1] == cdir, "pruned before `latest` moved durably"
        elif name == "latest":
            assert placed and synced.count(cdir) >= 1, "`latest` moved before the new checkpoint's name was on disk"
            assert synced[-1] == a, "`latest` renamed before its data was on disk"
            pointed = True
        else:
            assert a in synced, f"{b} renamed into place before its data was on disk"
            placed = placed or checkpoint_key(name) is not None
    assert placed and pointed and moves >= 7  # 4 files, the checkpoint folder, `latest`, the pruned one
