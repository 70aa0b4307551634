"""Run untrusted (model-written) Python under an OS-level sandbox (bubblewrap), with a second in-process layer.

The boundary is :command:`bwrap` (Debian package ``bubblewrap``). Each program runs

* in new mount, PID, network, IPC, UTS (and cgroup, where possible) namespaces; with no network
  namespace shared the program sees only its own, empty loopback: no route anywhere, not even to the
  host's 127.0.0.1;
* on a root file system that holds only: the shared libraries (``/usr/lib``, ``/usr/lib64``) and the
  interpreter's own ``lib`` directory, read-only; the interpreter binary, read-only; a minimal ``/dev``;
  and a size-capped tmpfs ``/sandbox`` as working directory (the program file is bound read-only into
  it). There is no ``/etc``, no ``/bin`` (so no shell), no ``/home``, no ``/proc``, no host ``/tmp``;
* as an unprivileged user: when llmgan runs as root, the child drops to uid/gid 65534 before any program
  code runs (so ``RLIMIT_NPROC`` is enforced, which it is not for root); otherwise bwrap runs in a new
  user namespace as the calling user; bwrap always sets ``no_new_privs``;
* under rlimits: CPU seconds, address space, file size, open files, processes, no core dumps;
* with a wall-clock timeout and a cap on captured output, both enforced while reading: the whole
  sandbox (its PID namespace) is killed when either is hit;
* with ``--die-with-parent`` and ``--new-session`` (no terminal injection through the caller's tty).

The second layer is the PEP 578 audit hook installed in the child before the program runs: it refuses
sockets, subprocesses/exec/fork, ctypes, importing the modules that reach around audit events
(``_posixsubprocess``, ``_socket``, ``_ctypes`` ...), and opening, listing, writing, deleting, renaming
or linking paths outside the sandbox directory (paths resolved with ``realpath``). The hook alone is not
a boundary (CPython code can reach around audit hooks); it is used alone only when the caller passes
``unsafe=True`` (``--unsafe-exec``), which is refused by default. See docs/safety.md.

What the sandbox does not protect against: kernel exploits (it shares the host kernel, with no seccomp
filter), CPU/memory contention within the limits given, side channels, and reading the files that are
bound in (system libraries and the Python standard library, which are public anyway).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from llmgan.errors import LLMGanError

SANDBOX_DIR = "/sandbox"  # the working directory inside bwrap
SANDBOX_UID = 65534  # nobody: what a root caller drops to inside the sandbox

# Runs inside the child: drops root in bwrap (as root it keeps uid 0 without a user namespace), installs the
# audit hook (unless disabled for tests of the OS layer alone), then executes the program file argv[1].
_PRELUDE = r'''
import os, sys
if "d" in sys.argv[3] and os.getuid() == 0:
    os.setgroups([]); os.setgid(@UID@); os.setuid(@UID@)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("sandbox: could not drop root")
_tmp = os.path.realpath(sys.argv[2])
_ro = tuple(os.path.realpath(p) for p in sys.argv[4:])
_prog = os.path.realpath(sys.argv[1])
_BAD_EVENTS = ("socket.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.system",
               "os.kill", "os.killpg", "os.putenv", "os.unsetenv", "ctypes.", "pty.", "webbrowser.")
_BAD_IMPORTS = frozenset(("_posixsubprocess", "subprocess", "_socket", "socket", "_ctypes", "ctypes", "fcntl",
                          "termios", "pty", "_multiprocessing", "multiprocessing", "mmap", "_posixshmem",
                          "resource", "_signal", "select", "ssl", "_ssl"))
_PATH_EVENTS = {"os.remove": 0, "os.rename": 0, "os.rmdir": 0, "os.mkdir": 0, "os.symlink": 0,
                "os.link": 0, "os.truncate": 0, "os.chmod": 0, "os.chown": 0, "os.utime": 0,
                "shutil.rmtree": 0, "shutil.copyfile": 0, "shutil.move": 0, "os.chdir": 0, "os.chflags": 0,
                "os.setxattr": 0, "os.removexattr": 0, "os.mkfifo": 0, "os.mknod": 0}
_TWO_PATHS = ("os.rename", "os.link", "os.symlink", "shutil.copyfile", "shutil.move")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def _inside(p, roots):
    if isinstance(p, int):
        return True  # an already-open descriptor: its opening was checked
    p = os.path.realpath(os.fsdecode(p))
    return any(p == r or p.startswith(r + os.sep) for r in roots)

def _hook(event, args):
    if event.startswith(_BAD_EVENTS):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "import" and args[0].split(".")[0] in _BAD_IMPORTS:
        raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None))[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS)
        if writing and not _inside(path, (_tmp,)):
            raise PermissionError("sandbox: writing outside the sandbox directory is not allowed")
        if not writing and not _inside(path, (_tmp,) + _ro):
            raise PermissionError("sandbox: reading outside the sandbox directory is not allowed")
    elif event in ("os.listdir", "os.scandir") and args and args[0] is not None:
        if not _inside(args[0], (_tmp,) + _ro):
            raise PermissionError("sandbox: listing outside the sandbox directory is not allowed")
    elif event in _PATH_EVENTS:
        paths = args[:2] if event in _TWO_PATHS else args[:1]
        for p in paths:
            if isinstance(p, (str, bytes, os.PathLike)) and not _inside(p, (_tmp,)):
                raise PermissionError(f"sandbox: {event} outside the sandbox directory is not allowed")
        if event == "os.symlink":  # a link inside pointing outside would be followed by later opens
            target = os.path.join(os.path.dirname(os.fsdecode(args[1])), os.fsdecode(args[0]))
            if not _inside(target, (_tmp,)):
                raise PermissionError("sandbox: a symlink pointing outside the sandbox directory is not allowed")

with open(_prog, encoding="utf-8") as f:
    src = f.read()
code = compile(src, "<program>", "exec")
if "h" in sys.argv[3]:
    sys.addaudithook(_hook)
exec(code, {"__name__": "__main__"})
'''.replace("@UID@", str(SANDBOX_UID))


class SandboxUnavailable(LLMGanError):
    """No OS-level sandbox can start here; running model-written code was refused."""


@dataclass
class RunResult:
    """Outcome of one sandboxed run."""

    ok: bool  # exit status 0, no timeout, output within the cap
    stdout: str
    stderr: str
    returncode: int | None  # None when killed (timeout or output cap)
    timed_out: bool
    output_truncated: bool = False  # the output cap was hit and the program was killed
    isolation: str = "bwrap"  # "bwrap" (OS sandbox + hook) or "hook-only" (--unsafe-exec)


def _interpreter() -> str:
    return os.path.realpath(sys.executable)


def _stdlib_dirs() -> list[str]:
    """Directories the interpreter needs read-only: its lib dir (stdlib, lib-dynload, libpython)."""
    import sysconfig

    dirs = {os.path.realpath(sysconfig.get_paths()["stdlib"]),
            os.path.realpath(os.path.join(sys.base_prefix, "lib"))}
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        dirs.add(os.path.realpath(libdir))
    return sorted(d for d in dirs if os.path.isdir(d))


def _system_lib_dirs() -> list[str]:
    return [d for d in ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64")
            if os.path.isdir(d) and not os.path.islink(d)]


def _ancestors(paths: list[str]) -> list[str]:
    out: set[str] = set()
    for p in paths:
        parent = os.path.dirname(p)
        while parent not in ("/", ""):
            out.add(parent)
            parent = os.path.dirname(parent)
    return sorted(out, key=lambda p: (p.count("/"), p))


def _bwrap_argv(prog_host: str, tmpfs_bytes: int) -> list[str]:
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    exe = _interpreter()
    libs = _system_lib_dirs()
    std = [d for d in _stdlib_dirs() if not any(d == s or d.startswith(s + "/") for s in libs)]
    binds = libs + std + [exe]
    argv = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv", "--setenv", "LANG", "C.UTF-8",
            "--hostname", "sandbox"]
    if os.geteuid() == 0:
        # As root bwrap needs no user namespace; the prelude drops to SANDBOX_UID with these two
        # capabilities, after which the process holds none (setuid from 0 clears them).
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user"]
    # bwrap creates missing parents 0700, which the unprivileged child could not traverse.
    for d in _ancestors(binds + [SANDBOX_DIR + "/x"]):
        if not any(d == b or d.startswith(b + "/") for b in binds):
            argv += ["--perms", "0755", "--dir", d]
    for d in libs + std:
        argv += ["--ro-bind", d, d]
    if not any(exe.startswith(d + "/") for d in libs + std):
        argv += ["--ro-bind", exe, exe]
    for link, target in (("/lib", "usr/lib"), ("/lib64", "usr/lib64")):
        if os.path.islink(link) and os.path.isdir(os.path.join("/", target)):
            argv += ["--symlink", target, link]
    argv += ["--dev", "/dev", "--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", SANDBOX_DIR,
             "--ro-bind", prog_host, SANDBOX_DIR + "/.program.py", "--chdir", SANDBOX_DIR]
    return argv


@functools.lru_cache(maxsize=1)
def sandbox_backend() -> str | None:
    """``"bwrap"`` when bubblewrap is installed and can start a sandbox here, else ``None`` (probed once)."""
    return "bwrap" if _probe_bwrap() is None else None


@functools.lru_cache(maxsize=1)
def _probe_bwrap() -> str | None:
    """None when bwrap works, else why not (one line)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    try:
        r = _run("print(6 * 7)", timeout=20.0, mem_mb=512, stdin="", max_output=4096, max_procs=16,
                 hook=True, use_bwrap=True)
    except OSError as e:
        return f"bwrap cannot start: {e}"
    if r.stdout.strip() != "42":
        return f"bwrap cannot start a sandbox here: {(r.stderr.strip().splitlines() or ['no output'])[-1]}"
    return None


def _count_own_processes() -> int:
    uid = os.getuid()
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _limits(cpu_s: int, mem_mb: int, nproc: int, fsize: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _reader(stream, sink: list[bytes], budget: list[int], over: threading.Event) -> None:
    """Read a pipe into ``sink`` while the shared byte ``budget`` lasts; set ``over`` when it runs out."""
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            return
        take = min(len(chunk), max(budget[0], 0))
        if take:
            sink.append(chunk[:take])
        budget[0] -= len(chunk)
        if budget[0] < 0:
            over.set()
            return  # stop reading: the caller kills the sandbox


def _run(code: str, *, timeout: float, mem_mb: int, stdin: str, max_output: int, max_procs: int,
         hook: bool, use_bwrap: bool) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="llmgan-sandbox-") as host_tmp:
        host_tmp = os.path.realpath(host_tmp)
        prog = os.path.join(host_tmp, "program.py")
        with open(prog, "w", encoding="utf-8") as f:
            f.write(code)
        os.chmod(prog, 0o644)  # readable by the unprivileged sandbox user
        cpu = max(1, int(timeout) + 1)
        fsize = max(max_output, 1 << 20)
        # RLIMIT_NPROC counts every process of the real uid: in bwrap a root caller's child becomes
        # SANDBOX_UID (a count of its own); otherwise it stays the caller, so leave room for theirs
        # (and for root outside bwrap the limit is not enforced at all: the hook's fork ban is all).
        nproc = max_procs if (os.geteuid() == 0 and use_bwrap) else _count_own_processes() + max_procs
        if use_bwrap:
            argv = _bwrap_argv(prog, tmpfs_bytes=16 << 20)
            work, prog_in = SANDBOX_DIR, SANDBOX_DIR + "/.program.py"
        else:
            argv, work, prog_in = [], host_tmp, prog
        ro = _stdlib_dirs()
        flags = ("h" if hook else "") + ("d" if use_bwrap else "") + "-"  # hook, drop root
        argv += [_interpreter(), "-I", "-S", "-c", _PRELUDE, prog_in, work, flags, *ro]
        proc = subprocess.Popen(
            argv, cwd=host_tmp, env={"LANG": "C.UTF-8"} if use_bwrap else {"PATH": "/nonexistent", "LANG": "C.UTF-8"},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # own process group: a kill reaches bwrap and, through it, the sandbox
            preexec_fn=lambda: _limits(cpu, mem_mb, nproc, fsize),
        )
        out: list[bytes] = []
        err: list[bytes] = []
        budget = [max_output]
        over = threading.Event()
        threads = [threading.Thread(target=_reader, args=(proc.stdout, out, budget, over), daemon=True),
                   threading.Thread(target=_reader, args=(proc.stderr, err, budget, over), daemon=True)]
        for t in threads:
            t.start()

        def feed() -> None:
            try:
                proc.stdin.write(stdin.encode("utf-8"))
                proc.stdin.close()
            except OSError:
                pass  # the program exited or closed stdin without reading it all

        threading.Thread(target=feed, daemon=True).start()
        deadline = time.monotonic() + timeout
        timed_out = False
        while proc.poll() is None:
            if over.is_set():
                break
            if time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # bwrap's death takes the PID namespace with it
        proc.wait()
        for t in threads:
            t.join(timeout=2.0)
        for s in (proc.stdout, proc.stderr):
            s.close()
    truncated = over.is_set()
    rc = None if (timed_out or truncated) else proc.returncode
    return RunResult(rc == 0, b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace"),
                     rc, timed_out, truncated, "bwrap" if use_bwrap else "hook-only")


def run_python(code: str, timeout: float = 5.0, mem_mb: int = 512, stdin: str = "", *, unsafe: bool = False,
               max_output: int = 65536, max_procs: int = 16, _hook: bool = True) -> RunResult:
    """Execute ``code`` in the sandbox; stdout+stderr are captured up to ``max_output`` bytes together.

    Raises :class:`SandboxUnavailable` when bubblewrap cannot start here, unless ``unsafe=True``, which
    runs the program with only the audit hook and rlimits (no boundary; see the module docstring).
    ``_hook=False`` turns the in-process layer off (tests of the OS layer alone).
    """
    why = _probe_bwrap()
    if why is None:
        return _run(code, timeout=timeout, mem_mb=mem_mb, stdin=stdin, max_output=max_output,
                    max_procs=max_procs, hook=_hook, use_bwrap=True)
    if not unsafe:
        raise SandboxUnavailable(f"refusing to run model-written code: no OS sandbox ({why}); "
                                 "pass --unsafe-exec (unsafe=True) to run it with only the in-process hook")
    return _run(code, timeout=timeout, mem_mb=mem_mb, stdin=stdin, max_output=max_output,
                max_procs=max_procs, hook=True, use_bwrap=False)
