"""A small HTTP service over any run directory (standard library only; one model, one lock).

    GET  /health            {"status": "ok", "run": ..., "algorithm": ..., "discriminator": bool}
    POST /generate          {"n": 4, "temperature": 1.0, "top_k": null, "top_p": null, "max_len": null,
                             "prompt": null, "seed": null}            -> {"samples": [...]}
                            density-ratio sampling (llmgan.resample): "resample": "sir" | "rejection",
                            "candidates": 8, "ratio_from": "d" | "ebm"  -> also {"resample": {stats}}
    POST /detect            {"texts": ["...", ...]}                   -> {"results": [{"p_human", "label"}]}

Bad requests get status 400 and ``{"error": "<one line>"}``. Generation is serialised with a lock
(torch modules are not re-entrant for training-mode toggles) and capped by ``max_n``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from llmgan.errors import LLMGanError

MAX_BODY = 1 << 20  # 1 MiB of JSON is far more than any legitimate request needs


class RequestError(Exception):
    """A client error: status 400 with this message."""


def _field(body: dict, name: str, kind: type, default: Any, low: float | None = None, high: float | None = None):
    value = body.get(name, default)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RequestError(f"field {name!r}: expected {kind.__name__}, got {type(value).__name__}")
    if low is not None and value < low or high is not None and value > high:
        raise RequestError(f"field {name!r}: expected a value in [{low}, {high}], got {value}")
    return value


class LLMGanService:
    """The model side of the server: validated requests in, JSON-able dicts out."""

    def __init__(self, run_dir: str, device: str = "cpu", max_n: int = 256):
        from llmgan.run import load_run

        self.run = load_run(run_dir, device=device)
        self.max_n = max_n
        self.lock = threading.Lock()
        self._detector = None
        self._ratios: dict = {}  # ratio_from -> calibrated llmgan.resample.RatioModel

    def health(self) -> dict:
        has_d = False
        try:
            self.run.discriminator()
            has_d = True
        except LLMGanError:
            pass
        return {"status": "ok", "run": self.run.run_dir, "algorithm": self.run.cfg.adversarial.algorithm or "mle",
                "generator": self.run.cfg.generator.name, "discriminator": has_d, "checkpoint": self.run.checkpoint}

    def generate(self, body: dict) -> dict:
        n = _field(body, "n", int, 1, 1, self.max_n)
        temperature = _field(body, "temperature", float, 1.0, 0.0, 100.0)
        top_k = _field(body, "top_k", int, None, 1, self.run.tokenizer.vocab_size)
        top_p = _field(body, "top_p", float, None, 0.0, 1.0)
        max_len = _field(body, "max_len", int, self.run.max_len, 1, 4096)
        seed = _field(body, "seed", int, None, 0, 2**63 - 1)
        prompt_text = _field(body, "prompt", str, None)
        g = self.run.generator
        rng = torch.Generator(device=g.device).manual_seed(seed) if seed is not None else None
        prompt = None
        if prompt_text is not None:
            ids = self.run.encode_prompt(prompt_text)
            if not ids:
                raise RequestError("field 'prompt': encodes to no tokens")
            prompt = torch.tensor([ids] * n, dtype=torch.long, device=g.device)
        resample = _field(body, "resample", str, None)
        if resample is not None:  # density-ratio sampling (issue 11)
            return self._resampled(body, resample, n, temperature, top_k, top_p, max_len, seed, prompt)
        with self.lock, torch.no_grad():
            s = g.sample(n, max_len, temperature=temperature, top_k=top_k, top_p=top_p, prompt=prompt, generator=rng)
        tok = self.run.tokenizer
        rows = s.tokens.cpu().tolist()
        lengths = s.lengths.cpu().tolist()
        texts = [tok.decode(r[:m]) for r, m in zip(rows, lengths)]
        return {"samples": texts, "n": n, "temperature": temperature}

    def _resampled(self, body: dict, method: str, n: int, temperature: float, top_k, top_p, max_len: int,
                   seed: int | None, prompt) -> dict:
        from llmgan.resample import METHODS, RATIO_SOURCES, RatioModel, resample_run

        if method not in METHODS:
            raise RequestError(f"field 'resample': expected one of {', '.join(METHODS)}, got {method!r}")
        candidates = _field(body, "candidates", int, 8, 1, 1024)
        ratio_from = _field(body, "ratio_from", str, "d")
        if ratio_from not in RATIO_SOURCES:
            raise RequestError(f"field 'ratio_from': expected one of {', '.join(RATIO_SOURCES)}, got {ratio_from!r}")
        with self.lock:
            ratios = self._ratios
            if ratio_from not in ratios:  # calibrated once per server (ratio_calibration.json when stored)
                ratio = RatioModel(self.run, ratio_from)
                ratio.calibrate()
                ratios[ratio_from] = ratio
            res = resample_run(self.run, n, method=method, candidates=candidates, max_len=max_len,
                               prompts=prompt[:1].cpu() if prompt is not None else None, temperature=temperature,
                               top_k=top_k, top_p=top_p, ratio=ratios[ratio_from],
                               rng=torch.Generator(device=self.run.generator.device).manual_seed(
                                   seed if seed is not None else int(torch.randint(0, 2**62, (1,)))))
        tok = self.run.tokenizer
        texts = [tok.decode(r[:m]) for r, m in zip(res.tokens.tolist(), res.lengths.tolist())]
        return {"samples": texts, "n": len(texts), "temperature": temperature, "resample": res.stats}

    def detect(self, body: dict) -> dict:
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise RequestError("field 'texts': expected a non-empty list of strings")
        if len(texts) > self.max_n:
            raise RequestError(f"field 'texts': at most {self.max_n} texts per request")
        from llmgan.detect import Detector

        with self.lock:
            if self._detector is None:  # the run's D with its calibrated threshold (detector.json)
                detector = Detector(self.run)
                detector.load_or_calibrate()
                self._detector = detector
            results = self._detector.classify(texts)
        return {"results": results, "threshold": self._detector.threshold}


def make_handler(service: LLMGanService):
    class Handler(BaseHTTPRequestHandler):
        server_version = "llmgan"

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args) -> None:  # quiet by default; the CLI prints one line at start
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") in ("", "/health"):
                self._send(200, service.health())
            else:
                self._send(404, {"error": f"no route GET {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            routes = {"/generate": service.generate, "/detect": service.detect}
            route = routes.get(self.path.rstrip("/"))
            if route is None:
                self._send(404, {"error": f"no route POST {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    raise RequestError(f"request body over {MAX_BODY} bytes")
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    body = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise RequestError(f"request body is not JSON ({e.__class__.__name__})") from None
                if not isinstance(body, dict):
                    raise RequestError("request body must be a JSON object")
                self._send(200, route(body))
            except RequestError as e:
                self._send(400, {"error": str(e)})
            except LLMGanError as e:
                self._send(400, {"error": str(e).splitlines()[0]})
            except Exception as e:  # noqa: BLE001 - a server must answer, not die
                self._send(500, {"error": f"internal error: {e.__class__.__name__}: {e}"})

    return Handler


def make_server(run_dir: str, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
                max_n: int = 256) -> ThreadingHTTPServer:
    service = LLMGanService(run_dir, device=device, max_n=max_n)
    return ThreadingHTTPServer((host, port), make_handler(service))
