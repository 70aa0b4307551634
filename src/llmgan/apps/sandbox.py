"""Run untrusted (model-written) Python in a sandboxed subprocess.

Layers, each cheap and each independent of the others:

* a separate interpreter started with ``python -I -S`` (isolated: no user site, no PYTHON* env vars,
  no current directory on sys.path) in an empty temporary working directory with an empty environment;
* ``resource`` limits set in the child before exec: CPU seconds, address space, file size, open files,
  no core dumps;
* a wall-clock timeout; the child runs in its own session and the whole process group is killed;
* a PEP 578 audit hook installed before the program runs, which cannot be removed from Python code:
  it refuses sockets (no network), subprocesses/exec/fork, ctypes/dlopen, and opening files for
  writing outside the temporary directory.

This is a guard against accidents and casual misuse by generated programs (the apps' use case),
not a security boundary against a determined attacker; use a container/VM for that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Runs inside the child: installs the audit hook, then executes the program from the file argv[1].
_PRELUDE = r'''
import sys
def _hook(event, args, _tmp=sys.argv[2]):
    if event.startswith(("socket.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                         "os.system", "ctypes.", "os.kill", "pty.", "webbrowser.")):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        import os.path
        if not os.path.abspath(str(args[0])).startswith(_tmp):
            raise PermissionError("sandbox: writing outside the sandbox directory is not allowed")
src = open(sys.argv[1]).read()
code = compile(src, "<program>", "exec")
sys.addaudithook(_hook)
del _hook
exec(code, {"__name__": "__main__"})
'''


@dataclass
class RunResult:
    """Outcome of one sandboxed run."""

    ok: bool  # exit status 0 and no timeout
    stdout: str
    stderr: str
    returncode: int | None  # None on timeout
    timed_out: bool


def _limits(cpu_s: int, mem_mb: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_python(code: str, timeout: float = 5.0, mem_mb: int = 512, stdin: str = "") -> RunResult:
    """Execute ``code`` in the sandbox; stdout/stderr are captured (truncated to 64 KiB each)."""
    with tempfile.TemporaryDirectory(prefix="llmgan-sandbox-") as tmp:
        tmp = os.path.realpath(tmp)
        prog = os.path.join(tmp, "program.py")
        with open(prog, "w", encoding="utf-8") as f:
            f.write(code)
        cpu = max(1, int(timeout) + 1)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _PRELUDE, prog, tmp],
            cwd=tmp,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own process group: a timeout kills everything it started
            preexec_fn=lambda: _limits(cpu, mem_mb),
            text=True,
        )
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
    rc = None if timed_out else proc.returncode
    return RunResult(rc == 0, out[-65536:], err[-65536:], rc, timed_out)
