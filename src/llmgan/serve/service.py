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
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from llmgan.errors import LLMGanError

if TYPE_CHECKING:
    from llmgan.filters import OutputFilter
    from llmgan.models.watermark import Watermark

log = logging.getLogger("llmgan.serve")


class Stopped(Exception):
    """The request's deadline passed or its client went away; ``reason`` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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
    max_candidates: int = 16  # resample: candidates per output (each costs a sample and a D score)


@dataclass
class Generated:
    texts: list[str]
    tokens: list[int]
    finish: list[str]
    log_probs: list[float | None]
    prompt_tokens: int
    realness: list[float] | None = None
    filtered: dict | None = None  # {"dropped": k, "by_reason": {...}} when the model has an output filter
    provenance: dict | None = None
    resample: dict | None = None  # the resampler's statistics (resampled generation only)
    log_ratio: list[float] | None = None
    kept: list[int] = field(default_factory=list)  # which sampled rows these are (an output filter drops some)


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
                 calibration_n: int = 500, sweeps: Sequence[str] = (), watermark: Watermark | None = None,
                 output_filter: OutputFilter | None = None, batch_window_s: float | None = 0.002,
                 max_batch_rows: int = 256):
        from llmgan.provenance import checkpoint_hash
        from llmgan.run import load_run

        self.id = model_id
        self.run_dir = os.path.abspath(run_dir)
        self.run = load_run(run_dir, device=device)
        self.limits = limits or Limits()
        self.lock = threading.Lock()
        self.active = 0  # generate() calls in progress (a lone one skips the batcher)
        self._active_lock = threading.Lock()
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
        self.watermark = watermark  # the key stays here: responses carry its key_id only
        self.output_filter = output_filter
        self.checkpoint_sha256 = checkpoint_hash(self.run.checkpoint)  # once, not per response
        # batch_window_s None: no batching (every request samples alone, as seeded ones always do)
        self.batcher = Batcher(self, batch_window_s, max_batch_rows) if batch_window_s is not None else None
        self.ratios, self.ratio_notes = self._ratio_models(calibration_n)
        self.records = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
        self.sweep_rows = self._sweep(sweeps)

    def _ratio_models(self, calibration_n: int) -> tuple[dict[str, Any], dict[str, str]]:
        """The density-ratio models ``resample`` uses, calibrated now (at start-up, as the detector):
        ``d`` for a run with a discriminator, ``ebm`` for a residual EBM run."""
        from llmgan.resample import EBM_ALGORITHM, RatioModel

        ratios: dict[str, Any] = {}
        notes = {"d": "no discriminator in this run", "ebm": f"not a {EBM_ALGORITHM} run (use ratio_from d)"}
        if not self.has_discriminator:
            return ratios, notes
        source = "ebm" if self.algorithm == EBM_ALGORITHM else "d"
        if source == "ebm":
            notes["d"] = "a residual EBM run: its ratio is ratio_from ebm"
        try:
            rm = RatioModel(self.run, source)
            rm.calibrate(n=calibration_n)
            ratios[source] = rm
        except LLMGanError as e:  # e.g. a rankgan ranker is no density ratio
            notes[source] = str(e).splitlines()[0].replace(self.run_dir, self.id).replace(self.run.run_dir, self.id)
        return ratios, notes

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
                       "max_texts": self.limits.max_texts, "max_candidates": self.limits.max_candidates},
            "resample": sorted(self.ratios),
            "watermark_key_id": self.watermark.key_id if self.watermark is not None else None,
            "filter_config_sha256": self.output_filter.config_hash if self.output_filter is not None else None,
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

    def ban_ids(self, tokens: list[str] | None) -> tuple[int, ...]:
        """A request's ``ban`` -> sorted token ids, checked as ``llmgan generate --ban`` checks them (422 on a
        token outside the vocabulary, or a list that leaves nothing to sample)."""
        from llmgan.errors import ConfigError
        from llmgan.training.evaluation import ban_token_ids

        try:
            ids = ban_token_ids(self.run.tokenizer, tokens, what="ban")
        except ConfigError as e:
            raise invalid("ban", str(e).removeprefix("ban: ")) from None
        return () if ids is None else tuple(int(i) for i in ids.tolist())

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
                 score: bool = False, on_delta: Callable[[int, str], None] | None = None,
                 ban: tuple[int, ...] = ()) -> Generated:
        """``n`` samples per prompt (or ``n`` in all without prompts). ``on_delta(row, text)`` streams the
        new text of each row after every token.

        Requests without a seed and without streaming go through the model's :class:`Batcher` (one
        sampling call for the requests that arrive together) unless the model is idle and no other
        request for it is in progress: then there is nothing to batch with, and the request samples at
        once (no hand-over to the batcher's thread, no window). A seeded request is always sampled on
        its own, from its own random stream, so the same seed gives the same samples whatever else is
        running."""
        job = Job(n=n, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                  prompts=[list(p) for p in prompts] if prompts is not None else None, z=z, deadline=deadline,
                  score=score, on_delta=on_delta, ban=ban)
        batchable = self.batcher is not None and seed is None and on_delta is None
        with self._active_lock:
            self.active += 1
            alone = self.active == 1
        try:
            if batchable and not (alone and self.lock.acquire(blocking=False)):
                return self.batcher.submit(job)
            if not batchable:
                self._acquire(deadline)
            try:  # the lock is held here
                self._sample([job], check=deadline.check)
            finally:
                self.lock.release()
            return job.outcome()
        finally:
            with self._active_lock:
                self.active -= 1

    def _sample(self, jobs: Sequence[Job], check: Callable[[], None]) -> None:
        """One sampling call for ``jobs`` (the caller holds the lock; all share ``Job.key``), through the
        generator's own step loop (``Generator.sample_steps``: bans, watermark, top-k/p, temperature,
        latent z and prompts are the code every other path uses). Each job gets its ``result`` or its
        ``error``; a fault in one job's post-processing is that job's alone. ``check()`` runs before every
        step and raises :class:`Stopped` to end the call."""
        g, tok = self.run.generator, self.run.tokenizer
        pad = tok.pad_id if tok.pad_id is not None else 0
        j0 = jobs[0]
        try:
            prompt = None
            if j0.prompts is not None:
                from llmgan.detect import _left_pad

                prompt = _left_pad([p for j in jobs for p in j.prompts for _ in range(j.n)], pad).to(g.device)
            z = torch.cat([j.z for j in jobs]) if j0.z is not None else None
            rows = sum(j.rows for j in jobs)
            # one job: its own seed (None: a fresh stream); a batch never has seeds (see Batcher)
            rng = torch.Generator(device=g.device).manual_seed(j0.seed) if j0.seed is not None else None
            ids: list[list[int]] = [[] for _ in range(rows)]
            done = [False] * rows
            emitted = [""] * rows
            lps = [0.0] * rows
            stream = j0.on_delta if len(jobs) == 1 else None
            ban_ids = torch.tensor(j0.ban, dtype=torch.long, device=g.device) if j0.ban else None
            steps = g.sample_steps(rows, j0.max_tokens, temperature=j0.temperature, top_k=j0.top_k, top_p=j0.top_p,
                                   prompt=prompt, z=z, generator=rng, ban_ids=ban_ids, watermark=self.watermark)
            while True:
                check()
                step = next(steps, None)
                if step is None:
                    break
                for i, (t, lp) in enumerate(zip(step[0].tolist(), step[1].tolist())):
                    if done[i]:
                        continue
                    ids[i].append(t)
                    lps[i] += lp
                    done[i] = g.eos_id is not None and t == g.eos_id
                    if stream is not None:
                        text = tok.decode(ids[i])
                        # a tokenizer may rewrite earlier text once more tokens come: send only
                        # what extends what was sent (the rest follows when it does)
                        if text.startswith(emitted[i]) and len(text) > len(emitted[i]):
                            stream(i, text[len(emitted[i]):])
                            emitted[i] = text
        except Stopped as e:
            for j in jobs:
                j.fail(j.deadline.timeout_error() if e.reason == "timeout" or j.deadline.left() <= 0 else e)
            return
        except Exception as e:  # noqa: BLE001 - the sampling call failed as a whole
            if len(jobs) == 1:
                j0.fail(e)
                return
            log.warning("a batch of %d requests failed (%s); sampling each alone", len(jobs), type(e).__name__)
            for j in jobs:  # so that only the request at fault fails
                self._sample([j], check=j.deadline.check)
            return
        start = 0
        for j in jobs:
            sl = slice(start, start + j.rows)
            start += j.rows
            try:
                j.succeed(self._finish(j, ids[sl], done[sl], lps[sl], emitted[sl] if stream is not None else None))
            except Exception as e:  # noqa: BLE001 - this request's fault; its neighbours still get theirs
                j.fail(e)

    def _finish(self, job: Job, ids: list[list[int]], done: list[bool], lps: list[float],
                emitted: list[str] | None) -> Generated:
        """One job's rows -> its response: decoded, filtered (dropped and counted), scored, with provenance."""
        tok = self.run.tokenizer
        texts = [tok.decode(r) for r in ids]
        if emitted is not None and job.on_delta is not None:
            for i, text in enumerate(texts):
                if text != emitted[i] and text.startswith(emitted[i]):
                    job.on_delta(i, text[len(emitted[i]):])
        keep = list(range(len(texts)))
        filtered = None
        if self.output_filter is not None:
            res = self.output_filter.apply(texts)
            keep = res.kept
            filtered = {"dropped": len(res.dropped), "by_reason": res.counts}
        out = Generated([texts[i] for i in keep], [len(ids[i]) for i in keep],
                        ["stop" if done[i] else "length" for i in keep], [lps[i] for i in keep],
                        sum(len(p) for p in job.prompts) * job.n if job.prompts is not None else 0, filtered=filtered,
                        kept=keep)
        if job.score and self.detector is not None and keep:
            ptexts = None
            if job.prompts is not None:
                ptexts = [tok.decode(job.prompts[i // job.n]) for i in keep]
            out.realness = [float(x) for x in self.detector.p_human(out.texts, ptexts)]
        out.provenance = self.provenance(job.sampling(), job.seed, filtered)
        return out

    def provenance(self, sampling: dict[str, Any], seed: int | None, filtered: dict | None) -> dict[str, Any]:
        """``llmgan generate``'s sidecar record (llmgan.provenance) for a response, without the run's
        directory (a server path: clients never see one); the weights were hashed once at start-up."""
        from llmgan.provenance import provenance

        rec = provenance(self.run, sampling, seed, self.watermark, self.output_filter, filtered,
                         checkpoint_sha256=self.checkpoint_sha256)
        rec.pop("run_dir", None)
        return rec

    def resampled(self, *, n: int, method: str, candidates: int, ratio_from: str, max_tokens: int,
                  temperature: float, top_k: int | None, top_p: float | None, seed: int | None,
                  prompt: list[int] | None, deadline: Deadline, score: bool = False,
                  ban: tuple[int, ...] = ()) -> Generated:
        """``n`` samples corrected by the run's density ratio (llmgan.resample: ``sir`` or ``rejection``
        among ``candidates`` per output), calibrated at start-up; filtered and scored as plain samples."""
        from llmgan.resample import resample_run

        if self.watermark is not None:  # as llmgan generate: the resamplers do not watermark (yet)
            raise ApiError(400, f"model {self.id!r} is served with a watermark; resampled generation does not "
                                "watermark, so it is off for this model", param="resample")
        ratio = self.ratios.get(ratio_from)
        if ratio is None:
            raise ApiError(400, f"model {self.id!r} cannot resample with ratio_from {ratio_from!r}: "
                                f"{self.ratio_notes.get(ratio_from, 'no such ratio model')}", param="ratio_from")
        g = self.run.generator
        self._acquire(deadline)
        try:
            rng = torch.Generator(device=g.device)
            if seed is not None:
                rng.manual_seed(seed)
            else:
                rng.seed()
            res = resample_run(self.run, n, method=method, candidates=candidates, max_len=max_tokens,
                               prompts=torch.tensor([prompt], dtype=torch.long) if prompt is not None else None,
                               temperature=temperature, top_k=top_k, top_p=top_p, rng=rng, ratio=ratio,
                               ban_ids=torch.tensor(ban, dtype=torch.long, device=g.device) if ban else None)
            rows = [r[:ln] for r, ln in zip(res.tokens.tolist(), res.lengths.tolist())]
            done = [g.eos_id is not None and bool(r) and r[-1] == g.eos_id for r in rows]
            # rejection may keep fewer than n; every row belongs to the one prompt
            job = Job(n=max(1, len(rows)), max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      seed=seed, prompts=[prompt] if prompt is not None else None, z=None, deadline=deadline,
                      score=score, ban=ban,
                      extra={"resample": method, "candidates": candidates, "ratio_from": ratio_from})
            out = self._finish(job, rows, done, [0.0] * len(rows), None)
        finally:
            self.lock.release()
        log_r = res.log_r.tolist()
        out.log_probs = [None] * len(out.texts)  # not returned by the resamplers
        out.log_ratio = [float(log_r[i]) for i in out.kept]
        out.resample = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in res.stats.items() if isinstance(v, (int, float, str))}
        return out

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


@dataclass
class Job:
    """One generation request on its way through :meth:`ModelService._sample` (alone or in a batch)."""

    n: int
    max_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int | None
    prompts: list[list[int]] | None
    z: torch.Tensor | None
    deadline: Deadline
    score: bool = False
    on_delta: Callable[[int, str], None] | None = None
    ban: tuple[int, ...] = ()  # token ids never sampled (sorted, as ModelService.ban_ids gives them)
    extra: dict = field(default_factory=dict)
    result: Generated | None = None
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def rows(self) -> int:
        return self.n * (len(self.prompts) if self.prompts is not None else 1)

    def key(self) -> tuple:
        """Requests with equal keys can share one sampling call: every option that the step loop applies
        to all rows alike. Prompts and z are per row, so only their presence must agree."""
        return (self.max_tokens, self.temperature, self.top_k, self.top_p, self.ban, self.prompts is None,
                self.z is None)

    def sampling(self) -> dict[str, Any]:
        return {"n": self.n, "max_tokens": self.max_tokens, "temperature": self.temperature, "top_k": self.top_k,
                "top_p": self.top_p, "prompts": len(self.prompts) if self.prompts is not None else 0,
                "z": self.z is not None, **({"ban": list(self.ban)} if self.ban else {}), **self.extra}

    def dead(self) -> bool:
        return self.deadline.cancelled.is_set() or self.deadline.left() <= 0

    def succeed(self, out: Generated) -> None:
        self.result = out
        self.finished.set()

    def fail(self, e: BaseException) -> None:
        self.error = e
        self.finished.set()

    def outcome(self) -> Generated:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Batcher:
    """Per-model micro-batching: requests that arrive within ``window_s`` of each other (or while the
    model is busy with an earlier batch) and share sampling options (:meth:`Job.key`) are sampled in
    one call of up to ``max_rows`` rows, and the rows are split back per request.

    Only requests without a seed come here: rows of one call draw from one random stream, so a batched
    request's samples depend on its neighbours, and a seed could not give the same samples twice.
    Each request waits for its own deadline only; a batch stops early only when every request in it is
    gone (timed out or its client left).
    """

    def __init__(self, service: ModelService, window_s: float = 0.002, max_rows: int = 256):
        self.service, self.window_s, self.max_rows = service, window_s, max_rows
        self.queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.calls = 0  # sampling calls made (tests and the benchmark read it)
        self.batched_jobs = 0

    def submit(self, job: Job) -> Generated:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"batcher-{self.service.id}", daemon=True)
                self._thread.start()
        self.queue.put(job)
        if not job.finished.wait(max(0.0, job.deadline.left())):
            job.deadline.cancelled.set()  # the batch may drop it (or finish it unread)
            raise job.deadline.timeout_error()
        return job.outcome()

    def _collect(self) -> list[Job]:
        jobs = [self.queue.get()]
        end = time.monotonic() + self.window_s
        while sum(j.rows for j in jobs) < self.max_rows:
            try:
                left = end - time.monotonic()
                jobs.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return jobs

    def groups(self, jobs: Sequence[Job]) -> list[list[Job]]:
        """Jobs grouped by key, in arrival order, each group at most ``max_rows`` rows (a job bigger than
        that is a group of its own)."""
        out: list[list[Job]] = []
        open_: dict[tuple, list[Job]] = {}
        for j in jobs:
            g = open_.get(j.key())
            if g is None or sum(x.rows for x in g) + j.rows > self.max_rows:
                g = []
                out.append(g)
                open_[j.key()] = g
            g.append(j)
        return out

    def _loop(self) -> None:
        svc = self.service
        while True:
            jobs = self._collect()
            for group in self.groups(jobs):
                live = [j for j in group if not j.dead()]
                for j in group:
                    if j.dead():
                        j.fail(Stopped("gone before sampling"))
                if not live:
                    continue
                try:
                    with svc.lock:
                        self.calls += 1
                        self.batched_jobs += len(live)

                        def check(live: list[Job] = live) -> None:
                            if all(j.dead() for j in live):
                                raise Stopped("cancelled")

                        svc._sample(live, check)
                except BaseException as e:  # noqa: BLE001 - never let the batcher thread die
                    log.error("batcher for %s failed", svc.id, exc_info=e)
                    for j in live:
                        if not j.finished.is_set():
                            j.fail(e)


class Registry:
    """The loaded models by id (the run directory's name; a clash is refused at start-up)."""

    def __init__(self, services: Sequence[ModelService]):
        self.models: dict[str, ModelService] = {}
        for s in services:
            if s.id in self.models:
                raise LLMGanError(f"serve: two runs are named {s.id!r}; give each run directory a distinct name")
            self.models[s.id] = s

    @staticmethod
    def model_id(run_dir: str) -> str:
        return os.path.basename(os.path.normpath(run_dir))

    @classmethod
    def load(cls, run_dirs: Sequence[str], *, watermarks: dict[str, Watermark] | None = None,
             filters: dict[str, OutputFilter] | None = None, **kwargs: Any) -> Registry:
        """One service per run; ``watermarks`` / ``filters``: model id -> the key / filter it samples with."""
        return cls([ModelService(d, cls.model_id(d), watermark=(watermarks or {}).get(cls.model_id(d)),
                                 output_filter=(filters or {}).get(cls.model_id(d)), **kwargs) for d in run_dirs])

    def get(self, model: str | None) -> ModelService:
        if model is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise ApiError(400, f"several models are loaded: name one of {sorted(self.models)}", param="model")
        s = self.models.get(model)
        if s is None:
            raise ApiError(404, f"model {model!r} not found; loaded: {sorted(self.models)}", "not_found", "model")
        return s
