"""Output filters: drop generated texts an operator will not publish, and say why.

A filter is a blocklist (whole words or phrases, case-insensitive by default), regular expressions,
and any number of classifiers (a Python callable ``text -> bool`` meaning "block", or a run's
discriminator: block when its ``p_human`` is below a threshold). A blocked text is dropped and counted,
with the first reason that matched logged on the ``llmgan.filters`` logger; it is never altered.

A filter config file (``--filter-config FILE``, JSON or YAML)::

    blocklist: [badword, "two words"]     # optional
    blocklist_file: words.txt             # optional, one entry per line
    regex: ["\\b\\d{3}-\\d{2}-\\d{4}\\b"]    # optional, Python syntax
    case_sensitive: false                 # optional (default false)
    discriminator: {run: RUN_DIR, min_p_human: 0.2}   # optional
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llmgan.errors import ConfigError

log = logging.getLogger("llmgan.filters")

_KEYS = {"blocklist", "blocklist_file", "regex", "case_sensitive", "discriminator"}


@dataclass
class FilterResult:
    kept: list[int]  # indices of the texts that passed, in order
    dropped: list[tuple[int, str]]  # (index, reason)

    @property
    def counts(self) -> dict[str, int]:
        """Dropped texts per reason kind (``blocklist``, ``regex``, ``classifier:NAME``)."""
        return dict(Counter(r.split(" ", 1)[0] for _, r in self.dropped))


@dataclass
class OutputFilter:
    blocklist: Sequence[str] = ()
    regex: Sequence[str] = ()
    case_sensitive: bool = False
    # name -> batch verdicts: True (block), False/"" (keep), or a non-empty string (block; it says why)
    classifiers: dict[str, Callable[[Sequence[str]], Sequence[bool | str]]] = field(default_factory=dict)
    config_hash: str | None = None  # sha256 of the config file it came from

    def __post_init__(self) -> None:
        flags = 0 if self.case_sensitive else re.IGNORECASE
        words = [w.strip() for w in self.blocklist if w.strip()]
        # whole words/phrases: "ass" must not block "class"
        self._block = [(w, re.compile(r"(?<!\w)" + re.escape(w) + r"(?!\w)", flags)) for w in words]
        self._regex = []
        for p in self.regex:
            try:
                self._regex.append((p, re.compile(p, flags)))
            except re.error as e:
                raise ConfigError(f"filter regex {p!r}: {e}") from None

    def add_classifier(self, name: str, blocks: Callable[[str], bool]) -> None:
        """A per-text callable returning True for texts to block."""
        self.classifiers[name] = lambda texts: [bool(blocks(t)) for t in texts]

    def apply(self, texts: Sequence[str]) -> FilterResult:
        reasons: dict[int, str] = {}
        for i, t in enumerate(texts):
            for w, rx in self._block:
                if rx.search(t):
                    reasons[i] = f"blocklist {w!r}"
                    break
            else:
                for p, rx in self._regex:
                    if rx.search(t):
                        reasons[i] = f"regex {p!r}"
                        break
        rest = [i for i in range(len(texts)) if i not in reasons]
        for name, clf in self.classifiers.items():
            if not rest:
                break
            verdict = list(clf([texts[i] for i in rest]))
            if len(verdict) != len(rest):
                raise ConfigError(f"filter classifier {name}: returned {len(verdict)} verdicts for {len(rest)} texts")
            for i, blocked in zip(rest, verdict):
                if blocked:  # the kind comes first: FilterResult.counts keys on it
                    detail = f" ({blocked})" if isinstance(blocked, str) else ""
                    reasons[i] = f"classifier:{name}{detail}"
            rest = [i for i in rest if i not in reasons]
        for i in sorted(reasons):
            log.warning("filter dropped sample %d: %s", i, reasons[i])
        return FilterResult(kept=[i for i in range(len(texts)) if i not in reasons],
                            dropped=sorted(reasons.items()))


def discriminator_classifier(run_dir: str, min_p_human: float, device: str = "cpu"):
    """Block texts a run's discriminator scores below ``min_p_human`` (it thinks them generated/unlike data)."""
    from llmgan.detect import Detector
    from llmgan.run import load_run

    det = Detector(load_run(run_dir, device=device))

    def verdicts(texts: Sequence[str]) -> list[str | bool]:
        # the score goes into the logged reason: an operator sees how far below the bar a sample was
        return [f"p_human {float(p):.3f} < {min_p_human:g}" if float(p) < min_p_human else False
                for p in det.p_human(list(texts))]

    return verdicts


def load_filter(path: str, device: str = "cpu") -> OutputFilter:
    """Read a filter config file (JSON or YAML; see the module docstring)."""
    try:
        raw = open(path, "rb").read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read filter config ({e.strerror})") from None
    try:
        import yaml

        cfg = yaml.safe_load(raw.decode("utf-8")) or {}
    except (UnicodeDecodeError, Exception) as e:  # yaml raises many types; JSON is YAML
        raise ConfigError(f"{path}: not a JSON/YAML filter config ({type(e).__name__})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {sorted(_KEYS)}")
    unknown = set(cfg) - _KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown filter key(s) {sorted(unknown)}; expected {sorted(_KEYS)}")
    words = list(cfg.get("blocklist") or [])
    if cfg.get("blocklist_file"):
        bf = os.path.join(os.path.dirname(os.path.abspath(path)), cfg["blocklist_file"])
        try:
            with open(bf, encoding="utf-8") as f:
                words += [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as e:
            raise ConfigError(f"{path}: blocklist_file {bf}: {e.strerror}") from None
    regex = cfg.get("regex") or []
    if isinstance(regex, str) or not all(isinstance(r, str) for r in regex):
        raise ConfigError(f"{path}: regex: expected a list of strings")
    flt = OutputFilter(blocklist=[str(w) for w in words], regex=regex,
                       case_sensitive=bool(cfg.get("case_sensitive", False)),
                       config_hash=hashlib.sha256(raw).hexdigest())
    d = cfg.get("discriminator")
    if d:
        if not isinstance(d, dict) or "run" not in d:
            raise ConfigError(f"{path}: discriminator: expected {{run: RUN_DIR, min_p_human: P}}")
        p = float(d.get("min_p_human", 0.5))
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{path}: discriminator.min_p_human: expected a probability, got {p}")
        flt.classifiers["discriminator"] = discriminator_classifier(str(d["run"]), p, device)
    return flt


def filter_summary(res: FilterResult) -> str:
    return json.dumps({"dropped": len(res.dropped), "by_reason": res.counts})
