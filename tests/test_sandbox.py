"""The code sandbox is a boundary: each escape that worked against the old audit-hook sandbox is refused.

Every escape runs in three modes: bubblewrap with the audit hook (the default), bubblewrap with the hook
turned off (the OS layer alone must hold), and the hook alone (``unsafe=True``, what ``--unsafe-exec``
runs when no OS sandbox can start). Each check is made on the host: the file is not there, the victim is
still there, the server saw no connection, the secret was not printed.
"""

from __future__ import annotations

import socket
import sys
import time

import pytest

from llmgan.apps import sandbox
from llmgan.apps.sandbox import SandboxUnavailable, run_python

HAVE_BWRAP = sandbox.sandbox_backend() is not None
WHY_NOT = sandbox._probe_bwrap() or ""

MODES = [
    pytest.param("bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason=f"no OS sandbox here: {WHY_NOT}")),
    pytest.param("bwrap-no-hook", marks=pytest.mark.skipif(not HAVE_BWRAP, reason=f"no OS sandbox here: {WHY_NOT}")),
    "hook-only",
]

# Starts a program with _posixsubprocess.fork_exec, which raises no audit event in Python 3.11.
SPAWN = r'''
import _posixsubprocess, os
def spawn(argv):
    r, w = os.pipe()
    pid = _posixsubprocess.fork_exec([os.fsencode(a) for a in argv], [os.fsencode(argv[0])], False, (w,), None,
                                     None, -1, -1, -1, -1, -1, -1, r, w, True, False, -1, None, None, None, -1,
                                     None, False)
    os.close(w)
    os.waitpid(pid, 0)
'''


def run(mode: str, code: str, monkeypatch, **kw):
    if mode == "hook-only":
        monkeypatch.setattr(sandbox, "_probe_bwrap", lambda: "disabled for this test")
        r = run_python(code, unsafe=True, **kw)
        assert r.isolation == "hook-only"
        return r
    r = run_python(code, _hook=(mode == "bwrap"), **kw)
    assert r.isolation == "bwrap"
    return r


@pytest.mark.parametrize("mode", MODES)
def test_cannot_read_etc_passwd(mode, monkeypatch):
    r = run(mode, "print(open('/etc/passwd').read())\n", monkeypatch)
    assert not r.ok and "root:" not in r.stdout


@pytest.mark.parametrize("mode", MODES)
def test_cannot_start_a_shell_through_fork_exec(mode, monkeypatch):
    r = run(mode, SPAWN + "spawn(['/bin/sh', '-c', 'echo PWNED'])\n", monkeypatch)
    assert "PWNED" not in r.stdout


@pytest.mark.parametrize("mode", MODES)
def test_no_network_even_to_the_hosts_loopback(mode, monkeypatch):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    # A child interpreter started through fork_exec has no audit hook: only the OS layer stops it.
    child = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')"
    code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            f"    print('connected')\nexcept OSError as e:\n    print('refused', e)\n"
            + SPAWN + f"spawn([{sys.executable!r}, '-I', '-S', '-c', {child!r}])\n")
    try:
        r = run(mode, code, monkeypatch)
        with pytest.raises(TimeoutError):
            srv.accept()
    finally:
        srv.close()
    assert "connected" not in r.stdout


@pytest.mark.parametrize("mode", MODES)
def test_cannot_create_files_outside_with_os_open(mode, monkeypatch, tmp_path):
    target = tmp_path / "pwned"
    r = run(mode, f"import os\nfd = os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)\nos.write(fd, b'x')\n",
            monkeypatch)
    assert not r.ok and not target.exists()


@pytest.mark.parametrize("mode", MODES)
def test_cannot_write_outside_through_a_symlink(mode, monkeypatch, tmp_path):
    r = run(mode, f"import os\nos.symlink({str(tmp_path)!r}, 'out')\nopen('out/pwned', 'w').write('x')\n",
            monkeypatch)
    assert not r.ok and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("mode", MODES)
def test_cannot_delete_files_outside(mode, monkeypatch, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    r = run(mode, f"import os\nos.remove({str(victim)!r})\n", monkeypatch)
    assert not r.ok and victim.read_text() == "keep me"


@pytest.mark.parametrize("mode", MODES)
def test_process_count_is_capped(mode, monkeypatch):
    # Each child sleeps, so live processes pile up until RLIMIT_NPROC (or the hook) says no.
    code = ("import os, time\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
            "            time.sleep(3)\n            os._exit(0)\n        n += 1\nexcept Exception as e:\n"
            "    print('stopped', n, type(e).__name__)\n")
    r = run(mode, code, monkeypatch, timeout=10.0, max_procs=16)
    assert "stopped" in r.stdout, r.stderr
    assert int(r.stdout.split()[1]) <= 16


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb_is_stopped_within_the_timeout(mode, monkeypatch):
    t0 = time.monotonic()
    r = run(mode, "import os\nwhile True:\n    try:\n        os.fork()\n    except Exception:\n        pass\n",
            monkeypatch, timeout=2.0)
    assert not r.ok and time.monotonic() - t0 < 8.0


@pytest.mark.parametrize("mode", MODES)
def test_infinite_output_is_cut_at_the_cap(mode, monkeypatch):
    t0 = time.monotonic()
    r = run(mode, "while True:\n    print('x' * 1000)\n", monkeypatch, timeout=20.0, max_output=100_000)
    assert r.output_truncated and not r.ok and not r.timed_out
    assert len(r.stdout) + len(r.stderr) <= 100_000
    assert time.monotonic() - t0 < 10.0  # killed at the cap, not at the timeout


@pytest.mark.skipif(not HAVE_BWRAP, reason=f"no OS sandbox here: {WHY_NOT}")
def test_ordinary_programs_still_run():
    r = run_python("import json, math, collections\nx = input()\nprint(json.dumps([x, math.factorial(5)]))\n"
                   "open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())\n", stdin="hi\n")
    assert r.ok and r.stdout.split() == ['["hi",', '120]', "ok"]


def test_refuses_without_an_os_sandbox(monkeypatch):
    monkeypatch.setattr(sandbox, "_probe_bwrap", lambda: "bubblewrap is not installed (apt-get install bubblewrap)")
    with pytest.raises(SandboxUnavailable) as e:
        run_python("print(1)")
    msg = str(e.value)
    assert "\n" not in msg and "--unsafe-exec" in msg and "bubblewrap is not installed" in msg


def test_probe_reports_a_missing_bwrap(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    assert "not installed" in sandbox._probe_bwrap.__wrapped__()


def test_code_app_refuses_or_runs_unsafe_on_request(monkeypatch):
    from llmgan.apps import code as code_app

    monkeypatch.setattr(sandbox, "_probe_bwrap", lambda: "disabled for this test")
    with pytest.raises(SandboxUnavailable):
        code_app.score(["print ( 1 )"], ["1"])
    assert code_app.score(["print ( 1 )", "print ( 2 )"], ["1", "1"], unsafe=True) == {"pass_rate": 0.5}
