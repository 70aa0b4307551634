"""The code sandbox as a non-root caller: bwrap's user-namespace path, or its one-line refusal.

tests/test_sandbox.py runs as whoever runs the suite; as root (CI, this machine) bwrap needs no user
namespace and the child drops to uid 65534 itself. An ordinary user takes the other path
(``--unshare-user``), which only works where unprivileged user namespaces are allowed. Here a root test
process starts a child interpreter as uid 65534 (``setpriv``) that calls ``run_python`` the way a user's
own process would, and the host checks what got out. Each escape is also tried by that child without a
sandbox first (the control), so a pass means the sandbox stopped it, not that uid 65534 could not do it
anyway. The escapes run with the in-process hook off: the OS layer alone must hold.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from test_sandbox import SPAWN

NOBODY = 65534
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
SETPRIV = shutil.which("setpriv")
BWRAP = shutil.which("bwrap")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="not root: tests/test_sandbox.py already runs the non-root path"),
    pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed"),
    pytest.mark.skipif(BWRAP is None, reason="bubblewrap is not installed"),
]

# Runs as uid 65534. argv[1]: JSON with the host paths and port. Prints one JSON object.
CHILD = r'''
import dataclasses, json, os, socket, sys
from llmgan.apps import sandbox
a = json.loads(sys.argv[1])
out = {"uid": os.getuid(), "euid": os.geteuid(), "probe": sandbox._probe_bwrap()}
if out["probe"] is not None:
    try:
        sandbox.run_python("print(1)")
        out["refused"] = None
    except sandbox.SandboxUnavailable as e:
        out["refused"] = str(e)
    print(json.dumps(out))
    raise SystemExit(0)
# controls: without a sandbox uid 65534 can do each of these
out["control_read"] = open(a["secret"]).read()
socket.create_connection(("127.0.0.1", a["port"]), timeout=2).close()
with open(os.path.join(a["outside"], "control"), "w") as f:
    f.write("x")
runs = {}
for name, spec in a["programs"].items():
    r = sandbox.run_python(spec["code"], _hook=spec.get("hook", False), **spec.get("kw", {}))
    runs[name] = dataclasses.asdict(r)
out["runs"] = runs
print(json.dumps(out))
'''


def _as_nobody(argv: list[str]) -> list[str]:
    return [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


def _nobody_python() -> str | None:
    """An interpreter uid 65534 can run and read (the sandbox binds the binary it runs under)."""
    probe = "import os, sys; sys.exit(0 if os.access(os.path.realpath(sys.executable), os.R_OK) else 1)"
    for exe in dict.fromkeys([os.path.realpath(sys.executable), shutil.which("python3"), "/usr/bin/python3"]):
        if exe and subprocess.run(_as_nobody([exe, "-c", probe]), capture_output=True, timeout=30).returncode == 0:
            return exe
    return None


def _userns_works_unprivileged(outer: list[str]) -> bool:
    """Can uid 65534 start a bare bwrap with a user namespace here (independently of llmgan)?"""
    cmd = _as_nobody([*outer, BWRAP, "--unshare-user", "--ro-bind", "/", "/", "true"])
    return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0


@pytest.fixture
def outside():
    """A directory owned by uid 65534 outside any sandbox: its files are readable/writable by the child."""
    d = tempfile.mkdtemp(prefix="llmgan-nonroot-")
    os.chmod(d, 0o755)
    secret = os.path.join(d, "secret.txt")
    victim = os.path.join(d, "victim.txt")
    for p, text in ((secret, "TOP-SECRET-65534"), (victim, "keep me")):
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, 0o644)
        os.chown(p, NOBODY, NOBODY)
    os.chown(d, NOBODY, NOBODY)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _child(py: str, args: dict, outer: list[str] = ()) -> dict:
    env = {"PYTHONPATH": SRC, "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(_as_nobody([*outer, py, "-s", "-c", CHILD, json.dumps(args)]), capture_output=True,
                       text=True, env=env, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_escapes_are_refused_for_a_non_root_caller(outside):
    py = _nobody_python()
    if py is None:
        pytest.skip("no Python interpreter that uid 65534 can run and read")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    secret, victim = os.path.join(outside, "secret.txt"), os.path.join(outside, "victim.txt")
    programs = {
        "read": {"code": f"print(open({secret!r}).read())\n"},
        "passwd": {"code": "print(open('/etc/passwd').read())\n"},
        "shell": {"code": SPAWN + "spawn(['/bin/sh', '-c', 'echo PWNED'])\n"},
        "net": {"code": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                        "print('connected')\n"},
        "create": {"code": f"import os\nfd = os.open({os.path.join(outside, 'pwned')!r}, os.O_CREAT | os.O_WRONLY)\n"
                           "os.write(fd, b'x')\n"},
        "symlink": {"code": f"import os\nos.symlink({outside!r}, 'out')\nopen('out/pwned2', 'w').write('x')\n"},
        "remove": {"code": f"import os\nos.remove({victim!r})\n"},
        "nproc": {"code": "import os, time\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
                          "            time.sleep(3)\n            os._exit(0)\n        n += 1\nexcept Exception as e:\n"
                          "    print('stopped', n, type(e).__name__)\n", "kw": {"timeout": 10.0, "max_procs": 16}},
        "forkbomb": {"code": "import os\nwhile True:\n    try:\n        os.fork()\n"
                             "    except Exception:\n        pass\n",
                     "kw": {"timeout": 2.0}},
        "flood": {"code": "while True:\n    print('x' * 1000)\n", "kw": {"timeout": 20.0, "max_output": 100_000}},
        "ordinary": {"code": "import os\nopen('scratch.txt', 'w').write('ok')\n"
                             "print(os.getuid(), open('scratch.txt').read())\n", "hook": True},
    }
    try:
        out = _child(py, {"secret": secret, "port": port, "outside": outside, "programs": programs})
        srv.settimeout(0.5)
        connections = 0
        while True:
            try:
                srv.accept()[0].close()
                connections += 1
            except TimeoutError:
                break
    finally:
        srv.close()
    assert out["uid"] == NOBODY and out["euid"] == NOBODY
    if not _userns_works_unprivileged([]):
        # no unprivileged user namespaces here: the tool must refuse, in one line, rather than run unsandboxed
        assert out["probe"] and out["refused"] and "\n" not in out["refused"], out
        assert "--unsafe-exec" in out["refused"]
        return
    assert out["probe"] is None, out  # bare bwrap works for uid 65534 here, so llmgan's sandbox must too
    assert out["control_read"] == "TOP-SECRET-65534" and os.path.exists(os.path.join(outside, "control"))
    runs = out["runs"]
    assert all(r["isolation"] == "bwrap" for r in runs.values())
    assert not runs["read"]["ok"] and "TOP-SECRET" not in runs["read"]["stdout"]
    assert not runs["passwd"]["ok"] and "root:" not in runs["passwd"]["stdout"]
    assert "PWNED" not in runs["shell"]["stdout"]
    assert connections == 1 and "connected" not in runs["net"]["stdout"]  # the control's, none from inside
    assert not runs["create"]["ok"] and not os.path.exists(os.path.join(outside, "pwned"))
    assert not runs["symlink"]["ok"] and not os.path.exists(os.path.join(outside, "pwned2"))
    assert not runs["remove"]["ok"] and open(victim).read() == "keep me"
    assert "stopped" in runs["nproc"]["stdout"], runs["nproc"]
    assert int(runs["nproc"]["stdout"].split()[1]) <= 16
    assert not runs["forkbomb"]["ok"] and runs["forkbomb"]["timed_out"]
    assert runs["flood"]["output_truncated"] and len(runs["flood"]["stdout"]) <= 100_000
    assert runs["ordinary"]["ok"] and runs["ordinary"]["stdout"].split() == [str(NOBODY), "ok"], runs["ordinary"]


def test_refuses_in_one_line_where_user_namespaces_are_disabled():
    """A real failure, not a mocked one: the child runs in a bwrap that forbids further user namespaces
    (what a locked-down container does), so the sandbox cannot start and running must be refused."""
    py = _nobody_python()
    if py is None:
        pytest.skip("no Python interpreter that uid 65534 can run and read")
    outer = [BWRAP, "--dev-bind", "/", "/", "--unshare-user", "--disable-userns", "--"]
    if subprocess.run(_as_nobody([*outer, "true"]), capture_output=True, timeout=30).returncode != 0:
        pytest.skip("bwrap --disable-userns cannot start here (bubblewrap < 0.8 or no user namespaces at all)")
    assert not _userns_works_unprivileged(outer)  # the premise: inside it, bare bwrap fails too
    out = _child(py, {}, outer)
    assert out["probe"] and out["probe"].startswith("bwrap cannot start"), out
    msg = out["refused"]
    assert msg and "\n" not in msg and msg.startswith("refusing to run model-written code: no OS sandbox (")
    assert "--unsafe-exec" in msg
