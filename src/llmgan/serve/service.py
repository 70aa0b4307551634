"""The model side of ``llmgan serve``: one :class:`ModelService` per loaded run, no HTTP in here.

Every public method is synchronous and runs in a worker thread (never on the event loop). One lock per
model serialises its torch work (a run's modules are shared and torch already uses every core for one
call); different models run in parallel. Work checks its deadline between two tokens, so a request
that runs out of time stops sampling instead of holding the model for its full ``max_tokens``.
The detector is calibrated here, at start-up, so no request ever calibrates or writes to disk.
"""

from __future__ import annotations

import csv
import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llmgan.errors import LLMGanError
from llmgan.serve.sampling import Stopped, sample_steps


class ApiError(Exception):
    """A request the server refuses: an HTTP status, one line, an OpenAI error type and the field."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type, param
        self.headers = headers or {}


def invalid(param: str, message: str) -> ApiError:
    return ApiError(422, f"{param}: {message}", "invalid_request_error", param)


@dataclass
class Limits:
    """Per-model caps on one request's work (the CLI's --max-n/--max-tokens/--max-texts/--timeout)."""

    max_n: int = 64
    max_tokens: int = 512
    max_texts: int = 256
    timeout_s: float = 30.0


@dataclass
class Generated:
    texts: list[str]
    tokens: list[int]
    finish: list[str]
    log_probs: list[float]
    prompt_tokens: int
    realness: list[float] | None = None


@dataclass
class Deadline:
    """When a request must be done, and whether its client is still there."""

    at: float
    timeout_s: float
    cancelled: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, timeout_s: float) -> Deadline:
        return cls(time.monotonic() + timeout_s, timeout_s)

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Stopped("cancelled")
        if time.monotonic() > self.at:
            raise Stopped("timeout")

    def timeout_error(self) -> ApiError:
        return ApiError(503, f"the request did not finish within the server's {self.timeout_s:g} s limit; ask "
                             "for fewer samples or tokens, or retry later", "timeout", headers={"Retry-After": "1"})


_SKIP = {"step", "phase", "time", "epoch", "round", "refresh"}
_MAX_POINTS = 400  # per series: enough for a curve on a page, small enough for a phone


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_metrics(path: str) -> list[dict]:
    """metrics.jsonl records; a torn or corrupt line (a run still writing) is skipped, not fatal."""
    out: list[dict] = []
    if not os.path.isfile(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict):
                out.append(r)
    return out


class ModelService:
    def __init__(self, run_dir: str, model_id: str, *, device: str = "cpu", limits: Limits | None = None,
                 calibration_n: int = 500, sweeps: Sequence[str] = ()):
        from llmgan.run import load_run

        self.id = model_id
        self.run_dir = os.path.abspath(run_dir)
        self.run = load_run(run_dir, device=device)
        self.limits = limits or Limits()
        self.lock = threading.Lock()
        cfg = self.run.cfg
        self.algorithm = cfg.adversarial.algorithm or "mle"
        tok = self.run.tokenizer
        self.conditional = self.run.is_conditional
        self.chat = bool(self.conditional and cfg.data.label_field is None and getattr(tok, "has_chat_template", False))
        latent = getattr(self.run.generator, "latent", None)
        self.latent_dim = int(latent.in_features) if latent is not None else 0
        self.has_discriminator = os.path.isfile(os.path.join(self.run.checkpoint, "discriminator.safetensors"))
        self.detector = None
        self.detector_note = "no discriminator in this run"
        if self.has_discriminator:
            from llmgan.detect import Detector

            try:
                det = Detector(self.run)
                det.load_or_calibrate(n=calibration_n)  # at start-up: requests never calibrate
                self.detector = det
            except LLMGanError as e:  # e.g. a rankgan ranker: serve generation, refuse scoring
                self.detector_note = str(e).splitlines()[0].replace(self.run_dir, model_id).replace(run_dir, model_id)
        self.created = int(os.path.getmtime(self.run.checkpoint))
        self.records = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
        self.sweep_rows = self._sweep(sweeps)

    # --- what the run is --------------------------------------------------------------------------
    def metrics_summary(self) -> dict[str, float]:
        """The last ``final`` record's numbers, else the last ``eval`` record's."""
        for phase in ("final", "eval"):
            last = [r for r in self.records if r.get("phase") == phase]
            if last:
                return {k: float(v) for k, v in last[-1].items() if k not in _SKIP and _finite_number(v)}
        return {}

    def card(self) -> dict:
        d = self.run.cfg.data
        data = d.train or d.oracle or ""
        cal = None
        if self.detector is not None:
            cal = {k: v for k, v in self.detector.calibration.items() if k in
                   ("threshold", "balanced_accuracy", "auroc", "n_human", "n_generated", "checkpoint")}
        return {
            "id": self.id, "created": self.created, "algorithm": self.algorithm,
            "generator": self.run.cfg.generator.name, "data": os.path.basename(str(data)),
            "conditional": self.conditional, "chat": self.chat, "discriminator": self.detector is not None,
            "detector": cal, "latent_dim": self.latent_dim,
            "limits": {"max_n": self.limits.max_n, "max_tokens": self.limits.max_tokens,
                       "max_texts": self.limits.max_texts},
            "metrics": self.metrics_summary(),
        }

    def series(self) -> dict[str, list[list[float]]]:
        """``phase:metric`` -> [[step, value], ...] for the page's curves (thinned to _MAX_POINTS)."""
        out: dict[str, list[list[float]]] = {}
        for r in self.records:
            step, phase = r.get("step"), r.get("phase")
            if not _finite_number(step) or not isinstance(phase, str):
                continue
            for k, v in r.items():
                if k not in _SKIP and _finite_number(v) and not k.startswith("time"):
                    out.setdefault(f"{phase}:{k}", []).append([float(step), float(v)])
        for k, pts in out.items():
            if len(pts) > _MAX_POINTS:
                stride = math.ceil(len(pts) / _MAX_POINTS)
                out[k] = pts[::stride] + ([pts[-1]] if (len(pts) - 1) % stride else [])
        return out

    def _sweep(self, sweeps: Sequence[str]) -> list[dict]:
        """Rows of the quality-diversity sweep that belong to this run: RUN_DIR/sweep/sweep.csv and any
        --sweep file, matched by run directory. Paths are dropped: the page gets numbers only."""
        files = [os.path.join(self.run_dir, "sweep", "sweep.csv"), *sweeps]
        rows: list[dict] = []
        for path in files:
            if not os.path.isfile(path):
                continue
            with open(path, encoding="utf-8", newline="") as f:
                for r in csv.DictReader(f):
                    # by directory (relative ones resolve against our cwd, as llmgan sweep wrote
                    # them), else by the run's name
                    mine = (path == files[0] or os.path.abspath(r.get("run_dir") or "") == self.run_dir
                            or (not r.get("run_dir") and r.get("run") == self.id))
                    if not mine:
                        continue
                    row: dict[str, Any] = {}
                    for k in ("temperature", "quality", "diversity"):
                        try:
                            row[k] = float(r.get(k) or "nan")
                        except ValueError:
                            row[k] = float("nan")
                    if all(math.isfinite(row[k]) for k in row):
                        row["quality_metric"] = r.get("quality_metric") or "quality"
                        row["diversity_metric"] = r.get("diversity_metric") or "diversity"
                        rows.append(row)
        return rows

    # --- checks ---------------------------------------------------------------------------------------
    def check_n(self, n: int, param: str = "n") -> None:
        if n > self.limits.max_n:
            raise invalid(param, f"at most {self.limits.max_n} samples per request for model {self.id!r}, got {n}")

    def check_max_tokens(self, max_tokens: int | None) -> int:
        m = max_tokens if max_tokens is not None else self.run.max_len
        if m > self.limits.max_tokens:
            raise invalid("max_tokens", f"at most {self.limits.max_tokens} for model {self.id!r}, got {m}")
        return m

    def prompt_ids(self, prompt: str | None, param: str = "prompt") -> list[int] | None:
        """Encoded prompt of a conditional run (required), None for an unconditional one (refused)."""
        if not self.conditional:
            if prompt:
                raise invalid(param, f"model {self.id!r} is unconditional: it takes no prompt (send none, or "
                                     "use a conditional run)")
            return None
        if prompt is None or not prompt.strip():
            raise invalid(param, f"model {self.id!r} is conditional: a non-empty prompt is required")
        ids = self.run.encode_prompt(prompt)
        if not ids:
            raise invalid(param, "the prompt encodes to no tokens")
        return ids[-self.run.cfg.data.max_prompt_len:]  # as in training: a long prompt keeps its last tokens

    def chat_prompt_ids(self, messages: Sequence[dict]) -> list[int]:
        if not self.chat:
            raise ApiError(400, f"model {self.id!r} has no chat template (chat needs a conditional run on a "
                                "tokenizer with one); use POST /v1/completions", param="model")
        text = self.run.tokenizer.hf.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return self.run.tokenizer.encode(text)[-self.run.cfg.data.max_prompt_len:]

    def latent(self, z: list[list[float]] | None, n: int) -> torch.Tensor | None:
        if z is None:
            return None
        if self.latent_dim == 0:
            raise invalid("z", f"model {self.id!r} has no latent code (its generator was built with latent_dim=0)")
        if len(z) != n or any(len(row) != self.latent_dim for row in z):
            raise invalid("z", f"expected {n} rows (one per sample) of {self.latent_dim} numbers")
        return torch.tensor(z, dtype=torch.float32, device=self.run.generator.device)

    def check_texts(self, texts: Sequence[str], prompts: Sequence[str] | None) -> None:
        if len(texts) > self.limits.max_texts:
            raise invalid("texts", f"at most {self.limits.max_texts} texts per request for model {self.id!r}")
        for i, t in enumerate(texts):
            if not t.strip():
                raise invalid(f"texts.{i}", "empty text: there is nothing to score")
        if self.detector is None:
            raise ApiError(400, f"model {self.id!r} cannot score texts: {self.detector_note}", param="model")
        if self.conditional:
            if prompts is None or len(prompts) != len(texts):
                raise invalid("prompts", f"model {self.id!r} is conditional: give one prompt per text")
        elif prompts is not None:
            raise invalid("prompts", f"model {self.id!r} is unconditional: it takes no prompts")

    # --- work (worker threads) -------------------------------------------------------------------------
    def _acquire(self, deadline: Deadline) -> None:
        if not self.lock.acquire(timeout=max(0.0, deadline.left())):
            raise deadline.timeout_error()

    def generate(self, *, n: int, max_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
                 seed: int | None, prompts: Sequence[list[int]] | None, z: torch.Tensor | None, deadline: Deadline,
                 score: bool = False, on_delta: Callable[[int, str], None] | None = None) -> Generated:
        """``n`` samples per prompt (or ``n`` in all without prompts). ``on_delta(row, text)`` streams the
        new text of each row after every token."""
        g, tok = self.run.generator, self.run.tokenizer
        pad = tok.pad_id if tok.pad_id is not None else 0
        prompt = None
        rows = n
        if prompts is not None:
            from llmgan.detect import _left_pad

            rows = n * len(prompts)
            prompt = _left_pad([p for p in prompts for _ in range(n)], pad).to(g.device)
        self._acquire(deadline)
        try:
            rng = torch.Generator(device=g.device).manual_seed(seed) if seed is not None else None
            ids: list[list[int]] = [[] for _ in range(rows)]
            done = [False] * rows
            emitted = [""] * rows
            lps = [0.0] * rows
            try:
                for t_tok, t_lp in sample_steps(g, rows, max_tokens, temperature=temperature, top_k=top_k,
                                                top_p=top_p, prompt=prompt, z=z, generator=rng, check=deadline.check):
                    for i, (t, lp) in enumerate(zip(t_tok.tolist(), t_lp.tolist())):
                        if done[i]:
                            continue
                        ids[i].append(t)
                        lps[i] += lp
                        done[i] = g.eos_id is not None and t == g.eos_id
                        if on_delta is not None:
                            text = tok.decode(ids[i])
                            # a tokenizer may rewrite earlier text once more tokens come: send only
                            # what extends what was sent (the rest follows when it does)
                            if text.startswith(emitted[i]) and len(text) > len(emitted[i]):
                                on_delta(i, text[len(emitted[i]):])
                                emitted[i] = text
            except Stopped as e:
                if e.reason == "timeout":
                    raise deadline.timeout_error() from None
                raise
            texts = [tok.decode(r) for r in ids]
            if on_delta is not None:
                for i, text in enumerate(texts):
                    if text != emitted[i] and text.startswith(emitted[i]):
                        on_delta(i, text[len(emitted[i]):])
            out = Generated(texts, [len(r) for r in ids], ["stop" if d else "length" for d in done], lps,
                            sum(len(p) for p in prompts) * n if prompts is not None else 0)
            if score and self.detector is not None:
                ptexts = None
                if prompts is not None:
                    ptexts = [tok.decode(p) for p in prompts for _ in range(n)]
                out.realness = [float(x) for x in self.detector.p_human(texts, ptexts)]
            return out
        finally:
            self.lock.release()

    def realness(self, texts: Sequence[str], prompts: Sequence[str] | None, deadline: Deadline) -> list[float]:
        self._acquire(deadline)
        try:
            return [float(x) for x in self.detector.p_human(list(texts), list(prompts) if prompts else None)]
        finally:
            self.lock.release()

    def detect(self, texts: Sequence[str], prompts: Sequence[str] | None, deadline: Deadline) -> list[dict]:
        self._acquire(deadline)
        try:
            return self.detector.classify(list(texts), list(prompts) if prompts else None)
        finally:
            self.lock.release()


class Registry:
    """The loaded models by id (the run directory's name; a clash is refused at start-up)."""

    def __init__(self, services: Sequence[ModelService]):
        self.models: dict[str, ModelService] = {}
        for s in services:
            if s.id in self.models:
                raise LLMGanError(f"serve: two runs are named {s.id!r}; give each run directory a distinct name")
            self.models[s.id] = s

    @classmethod
    def load(cls, run_dirs: Sequence[str], **kwargs: Any) -> Registry:
        return cls([ModelService(d, os.path.basename(os.path.normpath(d)), **kwargs) for d in run_dirs])

    def get(self, model: str | None) -> ModelService:
        if model is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise ApiError(400, f"several models are loaded: name one of {sorted(self.models)}", param="model")
        s = self.models.get(model)
        if s is None:
            raise ApiError(404, f"model {model!r} not found; loaded: {sorted(self.models)}", "not_found", "model")
        return s
