"""Write one benchmark's section of docs/benchmarks.md (between BEGIN/END markers), keeping the rest."""

from __future__ import annotations

import os
import platform
import re
import sys
import time

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md")
HEADER = """# Benchmarks

Every figure here was measured by the script named in its section, with the command shown, on the
machine described there. Re-running a script rewrites its own section only.
"""


# The instruction-set extensions that decide how fast (and in which precisions) torch runs on a CPU.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo(key: str) -> str | None:
    """The first ``key : value`` of /proc/cpuinfo (Linux), or None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip().lower() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (what lscpu prints): every timing depends on it."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The CPU's vector extensions among ISA_FLAGS, e.g. "avx2 fma" on an AVX2-only CPU."""
    flags = set((_cpuinfo("flags") or "").split())
    found = [f for f in ISA_FLAGS if f in flags]
    return " ".join(found) if found else "flags unknown"


def machine() -> str:
    """One line for a benchmark's section: CPU model and vector extensions, cores, Python, torch, threads, date."""
    import torch

    return (f"{cpu_model()} ({cpu_isa()}), {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s), {time.strftime('%Y-%m-%d')}")


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def update_section(name: str, body: str, doc: str = DOC) -> None:
    """Replace (or append) section ``name`` of ``doc`` (default docs/benchmarks.md), atomically."""
    text = open(doc, encoding="utf-8").read() if os.path.isfile(doc) else HEADER
    block = f"<!-- BEGIN {name} -->\n{body.strip()}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = doc + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, doc)
