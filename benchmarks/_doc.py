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


def machine() -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), {time.strftime('%Y-%m-%d')}")


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def update_section(name: str, body: str) -> None:
    text = open(DOC, encoding="utf-8").read() if os.path.isfile(DOC) else HEADER
    block = f"<!-- BEGIN {name} -->\n{body.strip()}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = DOC + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, DOC)
