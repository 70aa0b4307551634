"""Send a real signal to a running ``llmgan`` process and time its exit (tests/test_faults.py, test_demo.py)."""

from __future__ import annotations

import signal
import subprocess
import time


def signal_and_wait(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60.0) -> tuple[float, str]:
    """Send ``sig``, wait for the exit; return (seconds from the signal to the exit, stderr). The process
    is killed if it outlives ``timeout`` (or if anything here fails)."""
    try:
        t0 = time.time()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=timeout)
        return time.time() - t0, err
    finally:
        if proc.poll() is None:
            proc.kill()
