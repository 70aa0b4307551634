"""Code generation: arithmetic programs whose output is executed (sandboxed) and checked.

A task describes a computation in words; the response is a one-line Python program that performs
it and prints the result, e.g.

    prompt:   "let x be 7 ; add 3 ; multiply by 4 ; print x"
    response: "x = 7 ; x = x + 3 ; x = x * 4 ; print ( x )"
    expected: "40"

Statements are ``;``-separated on one line and every token is space-separated, so the word
tokenizer handles the programs and the decoded text is still valid Python. A generated program
passes when it runs in :func:`llmgan.apps.sandbox.run_python` and prints exactly the expected value.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from llmgan.apps.sandbox import run_python

_OPS = [("add", "+"), ("subtract", "-"), ("multiply by", "*"), ("integer-divide by", "//"), ("modulo", "%")]


def make_task(rng: random.Random) -> dict[str, str]:
    var = rng.choice("xyzabn")
    value = rng.randint(0, 20)
    words, code = [f"let {var} be {value}"], [f"{var} = {value}"]
    for _ in range(rng.randint(1, 4)):
        name, op = rng.choice(_OPS)
        k = rng.randint(1, 9)  # never 0: no division by zero
        words.append(f"{name} {k}")
        code.append(f"{var} = {var} {op} {k}")
        value = eval(f"{value} {op} {k}")  # noqa: S307 - our own integer expression
    words.append(f"print {var}")
    code.append(f"print ( {var} )")
    return {"prompt": " ; ".join(words), "response": " ; ".join(code), "expected": str(value)}


def make_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [make_task(rng) for _ in range(n)]


def check_program(code: str, expected: str, timeout: float = 5.0, unsafe: bool = False) -> bool:
    """True when ``code`` runs in the sandbox and prints exactly ``expected`` (surrounding whitespace ignored).

    Raises :class:`llmgan.apps.sandbox.SandboxUnavailable` where no OS sandbox can start, unless ``unsafe``.
    """
    r = run_python(code, timeout=timeout, unsafe=unsafe)
    return r.ok and r.stdout.strip() == expected.strip()


def score(programs: Sequence[str], expected: Sequence[str], timeout: float = 5.0,
          unsafe: bool = False) -> dict[str, float]:
    """Pass rate of generated programs (each run sandboxed; ``unsafe``: see :func:`check_program`)."""
    passed = sum(check_program(p, e, timeout, unsafe) for p, e in zip(programs, expected))
    return {"pass_rate": passed / max(len(expected), 1)}
