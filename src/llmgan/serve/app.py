"""The FastAPI app of ``llmgan serve``: the OpenAI-compatible subset, our own endpoints, the page.

    POST /v1/completions        OpenAI completions (model, prompt, max_tokens, temperature, top_p, n,
                                seed, stream); ``stream: true`` answers with server-sent events
    POST /v1/chat/completions   the same for conditional runs whose tokenizer has a chat template
    POST /v1/generate           every sampling option, latent z, per-sample log-prob and D's realness,
                                density-ratio resampling (resample: sir|rejection, candidates, ratio_from)
    POST /v1/score              D's realness of texts
    POST /v1/detect             human/generated labels with the calibrated threshold
    GET  /v1/models             each loaded run: algorithm, data, detector calibration, metrics
    GET  /v1/models/{id}/metrics  training curves and sweep rows (for the page)
    GET  /health                {"status": "ok", "models": [...]} (no paths)
    GET  /                      the page

Generating responses carry ``provenance`` (llmgan.provenance's record, without server paths) and, for
a model served with an output filter, ``filtered`` (how many samples were dropped, by reason).

Every error is ``{"error": {"message", "type", "param"}}`` with a 4xx status for the client's fault
(400 bad JSON, 401 API key, 404, 405, 408 slow body, 413 body size, 422 invalid field, 429 full) and
a 5xx only for the server's (503 busy/timed out; 500 logged with its traceback, its text never sent).
Limits sit in one ASGI middleware, :class:`Guard`, in front of everything: it reads the whole body
itself (counting bytes, so a wrong Content-Length cannot get a larger body in), with a deadline.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmgan.errors import LLMGanError
from llmgan.serve import schemas as S
from llmgan.serve.service import ApiError, Deadline, Generated, ModelService, Registry, Stopped, invalid

log = logging.getLogger("llmgan.serve")
access_log = logging.getLogger("llmgan.serve.access")
PAGE = os.path.join(os.path.dirname(__file__), "static", "index.html")


@dataclass
class Settings:
    api_key: str | None = None
    max_body: int = 1 << 20  # 1 MiB of JSON is far more than any legitimate request needs
    body_timeout_s: float = 10.0  # the whole body must arrive within this (slow-loris bodies)
    max_concurrent: int = 16  # requests in flight (to /v1/...) before 429s


def error_body(status: int, message: str, type: str, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type, "param": param}}).encode()


def error_response(status: int, message: str, type: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param}}, status, headers=headers)


# ----------------------------------------------------------------------------------------- the guard
class Guard:
    """Pure ASGI middleware: access log, API key, concurrency cap, bounded body with a deadline.

    Pure ASGI (not BaseHTTPMiddleware) so that streaming responses pass through untouched and the body
    is read exactly once, here.
    """

    def __init__(self, app: Callable, settings: Settings):
        self.app, self.settings = app, settings
        self.in_flight = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 0}
        scope.setdefault("state", {})

        async def logged_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, logged_send)
        finally:
            client = scope.get("client")
            who = f"{client[0]}:{client[1]}" if client else "-"
            model = scope["state"].get("model", "-")
            access_log.info('%s - "%s %s HTTP/%s" %d %.1fms model=%s', who, scope["method"], scope["path"],
                            scope.get("http_version", "1.1"), status["code"], (time.perf_counter() - t0) * 1e3,
                            model)

    async def _reply(self, send: Callable, status: int, message: str, type: str, param: str | None = None,
                     headers: dict[str, str] | None = None) -> None:
        body = error_body(status, message, type, param)
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: dict, receive: Callable, send: Callable) -> None:
        s = self.settings
        path: str = scope["path"]
        api = path.startswith("/v1/")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if api and s.api_key is not None:
            auth = headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), s.api_key.encode()):
                await self._reply(send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                  "authentication_error", headers={"WWW-Authenticate": "Bearer"})
                return
        if api and self.in_flight >= s.max_concurrent:
            await self._reply(send, 429, f"the server is at its limit of {s.max_concurrent} requests in flight; "
                                         "retry shortly", "rate_limit_error", headers={"Retry-After": "1"})
            return
        self.in_flight += 1 if api else 0
        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(headers, receive, send)
                if body is None:
                    return
                sent = False

                async def replay() -> dict:
                    nonlocal sent
                    if not sent:
                        sent = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()  # after the body: the disconnect a stream listens for

                await self.app(scope, replay, send)
            else:
                await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1 if api else 0

    async def _read_body(self, headers: dict[str, str], receive: Callable, send: Callable) -> bytes | None:
        """The whole body, or None after answering 400/408/413. Bytes are counted as they come: the
        Content-Length header is only used to refuse early."""
        s = self.settings
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._reply(send, 400, "bad Content-Length header", "invalid_request_error")
                return None
            if int(declared) > s.max_body:
                await self._reply(send, 413, f"request body over {s.max_body} bytes", "invalid_request_error")
                return None
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + s.body_timeout_s
        while True:
            try:
                with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                await self._reply(send, 408, f"the request body did not arrive within {s.body_timeout_s:g} s",
                                  "invalid_request_error")
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > s.max_body:
                await self._reply(send, 413, f"request body over {s.max_body} bytes", "invalid_request_error")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


# ----------------------------------------------------------------------------------------- helpers
def _model(request: Request, registry: Registry, name: str | None) -> ModelService:
    svc = registry.get(name)
    request.scope["state"]["model"] = svc.id
    return svc


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


class _Stream:
    """Runs one generation in a worker thread and hands its text deltas to the event loop."""

    def __init__(self, work: Callable[..., Generated]):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.work = work

    def on_delta(self, row: int, text: str) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("delta", row, text))

    def start(self) -> asyncio.Task:
        async def run() -> None:
            try:
                out = await anyio.to_thread.run_sync(partial(self.work, on_delta=self.on_delta))
                self.queue.put_nowait(("done", None, out))
            except BaseException as e:  # noqa: BLE001 - handed to the response, which reports it
                self.queue.put_nowait(("error", None, e))

        return asyncio.ensure_future(run())


def _error_event(e: BaseException) -> dict:
    if isinstance(e, ApiError):
        return {"error": {"message": e.message, "type": e.type, "param": e.param}}
    log.error("error while streaming", exc_info=e)
    return {"error": {"message": "internal server error", "type": "server_error", "param": None}}


# ----------------------------------------------------------------------------------------- the app
def create_app(registry: Registry, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="llmgan", version="0.1.0",
                  description="Generation, scoring and detection with llmgan runs; an OpenAI-compatible subset.")
    app.state.registry = registry
    app.state.settings = settings
    err = {"model": S.ErrorResponse}
    responses = {c: err for c in (400, 401, 404, 413, 422, 429, 503)}

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        if e.status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, e.message)
        return error_response(e.status, e.message, e.type, e.param, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        first = (e.errors() or [{}])[0]
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        kind = first.get("type", "")
        if kind == "json_invalid":
            return error_response(400, "request body is not valid JSON", "invalid_request_error")
        if not loc:
            if kind == "missing":
                return error_response(400, "request body is missing: send a JSON object", "invalid_request_error")
            return error_response(400, "request body must be a JSON object", "invalid_request_error")
        param = ".".join(loc)
        msg = "unknown field" if kind == "extra_forbidden" else first.get("msg", "invalid value")
        return error_response(422, f"{param}: {msg}", "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 404:
            msg, kind = f"no route {request.method} {request.url.path}", "not_found"
        elif e.status_code == 405:
            msg, kind = f"method {request.method} not allowed on {request.url.path}", "method_not_allowed"
        else:
            msg, kind = str(e.detail).splitlines()[0], "invalid_request_error"
        return error_response(e.status_code, msg, kind, headers=getattr(e, "headers", None))

    @app.exception_handler(LLMGanError)
    async def _llmgan(request: Request, e: LLMGanError) -> JSONResponse:
        # a run-level refusal: one line, with the run's directory replaced by the model's name
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        for svc in registry.models.values():
            msg = msg.replace(svc.run_dir, svc.id).replace(svc.run.run_dir, svc.id)
        return error_response(400, msg, "invalid_request_error")

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=e)
        return error_response(500, "internal server error (logged on the server)", "server_error")

    async def in_thread(fn: Callable, *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))

    # --- pages and metadata ---------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        with open(PAGE, encoding="utf-8") as f:
            return HTMLResponse(f.read())

    @app.get("/health", response_model=S.Health)
    async def health() -> S.Health:
        return S.Health(models=sorted(registry.models))

    @app.get("/v1/models", response_model=S.ModelList, responses=responses)
    async def models() -> S.ModelList:
        return S.ModelList(data=[S.ModelCard(**svc.card()) for svc in registry.models.values()])

    @app.get("/v1/models/{model_id}", response_model=S.ModelCard, responses=responses)
    async def model_card(request: Request, model_id: str) -> S.ModelCard:
        return S.ModelCard(**_model(request, registry, model_id).card())

    @app.get("/v1/models/{model_id}/metrics", response_model=S.RunMetrics, responses=responses)
    async def model_metrics(request: Request, model_id: str) -> S.RunMetrics:
        svc = _model(request, registry, model_id)
        return S.RunMetrics(model=svc.id, series=svc.series(), sweep=svc.sweep_rows)

    # --- generation ---------------------------------------------------------------------------------
    def prepare(svc: ModelService, req: S.Sampling, prompts: list[list[int]] | None, *, top_k: int | None = None,
                z: Any = None, score: bool = False) -> tuple[Callable[..., Generated], Deadline]:
        rows = req.n * (len(prompts) if prompts is not None else 1)
        svc.check_n(rows)
        max_tokens = svc.check_max_tokens(req.max_tokens)
        if top_k is not None and top_k > svc.run.tokenizer.vocab_size:
            raise invalid("top_k", f"at most the vocabulary size, {svc.run.tokenizer.vocab_size}")
        ban = svc.ban_ids(req.ban)
        deadline = Deadline.start(svc.limits.timeout_s)
        work = partial(svc.generate, n=req.n, max_tokens=max_tokens, temperature=req.temperature, top_k=top_k,
                       top_p=req.top_p, seed=req.seed, prompts=prompts, z=z, deadline=deadline, score=score,
                       ban=ban)
        return work, deadline

    async def stream(svc: ModelService, work: Callable[..., Generated], deadline: Deadline,
                     chunk: Callable[[int, str | None, str | None], dict], usage: bool,
                     n_rows: int) -> StreamingResponse:
        if svc.output_filter is not None:  # a sample is sent as it is drawn: a filter could only drop it too late
            raise ApiError(400, f"model {svc.id!r} filters its outputs, so it does not stream (a dropped "
                                "sample would already be sent); send stream: false", param="stream")
        st = _Stream(work)
        st.task = st.start()  # held so the task is not collected while it runs
        first = await st.queue.get()
        if first[0] == "error":  # failed before the first token (busy, timed out): a plain HTTP error
            raise first[2]

        async def events() -> AsyncIterator[bytes]:
            item = first
            try:
                while True:
                    kind, row, x = item
                    if kind == "delta":
                        yield _sse(chunk(row, x, None))
                    elif kind == "done":
                        for i in range(n_rows):
                            yield _sse(chunk(i, None, x.finish[i]))
                        last = {**chunk(0, None, None), "choices": [], "provenance": x.provenance}
                        if usage:
                            last["usage"] = {"prompt_tokens": x.prompt_tokens, "completion_tokens": sum(x.tokens),
                                             "total_tokens": x.prompt_tokens + sum(x.tokens)}
                        yield _sse(last)  # no choices: clients read it as the usage chunk (and keep provenance)
                        yield b"data: [DONE]\n\n"
                        return
                    else:
                        if not (isinstance(x, Stopped) and x.reason == "cancelled"):
                            yield _sse(_error_event(x))
                        return
                    item = await st.queue.get()
            finally:
                deadline.cancelled.set()  # a client that left stops the sampling at its next token

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def usage_of(out: Generated) -> S.Usage:
        c = sum(out.tokens)
        return S.Usage(prompt_tokens=out.prompt_tokens, completion_tokens=c, total_tokens=out.prompt_tokens + c)

    def completion_prompts(svc: ModelService, prompt: str | list[str] | None) -> list[list[int]] | None:
        if isinstance(prompt, list):
            if not svc.conditional and all(not p for p in prompt):
                return None
            if not prompt:
                raise invalid("prompt", "an empty list: give at least one prompt")
            return [svc.prompt_ids(p, f"prompt.{i}") or [] for i, p in enumerate(prompt)]
        ids = svc.prompt_ids(prompt)
        return [ids] if ids is not None else None

    @app.post("/v1/completions", response_model=S.CompletionResponse, responses=responses)
    async def completions(request: Request, req: S.CompletionRequest) -> Any:
        svc = _model(request, registry, req.model)
        prompts = completion_prompts(svc, req.prompt)
        work, deadline = prepare(svc, req, prompts)
        cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if req.stream:
            def chunk(row: int, text: str | None, finish: str | None) -> dict:
                return {"id": cid, "object": "text_completion", "created": created, "model": svc.id,
                        "choices": [{"text": text or "", "index": row, "logprobs": None, "finish_reason": finish}]}

            rows = req.n * (len(prompts) if prompts else 1)
            return await stream(svc, work, deadline, chunk,
                                bool(req.stream_options and req.stream_options.include_usage), rows)
        out: Generated = await in_thread(work)
        return S.CompletionResponse(id=cid, created=created, model=svc.id, usage=usage_of(out), choices=[
            S.CompletionChoice(text=t, index=i, finish_reason=f)
            for i, (t, f) in enumerate(zip(out.texts, out.finish))], filtered=out.filtered, provenance=out.provenance)

    @app.post("/v1/chat/completions", response_model=S.ChatCompletionResponse, responses=responses)
    async def chat_completions(request: Request, req: S.ChatCompletionRequest) -> Any:
        svc = _model(request, registry, req.model)
        prompts = [svc.chat_prompt_ids([m.model_dump() for m in req.messages])]
        work, deadline = prepare(svc, req, prompts)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if req.stream:
            def chunk(row: int, text: str | None, finish: str | None) -> dict:
                delta = {} if text is None else {"role": "assistant", "content": text}
                return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": svc.id,
                        "choices": [{"index": row, "delta": delta, "finish_reason": finish}]}

            return await stream(svc, work, deadline, chunk,
                                bool(req.stream_options and req.stream_options.include_usage), req.n)
        out: Generated = await in_thread(work)
        return S.ChatCompletionResponse(id=cid, created=created, model=svc.id, usage=usage_of(out), choices=[
            S.ChatChoice(index=i, message=S.AssistantMessage(content=t), finish_reason=f)
            for i, (t, f) in enumerate(zip(out.texts, out.finish))], filtered=out.filtered, provenance=out.provenance)

    @app.post("/v1/generate", response_model=S.GenerateResponse, responses=responses)
    async def generate(request: Request, req: S.GenerateRequest) -> S.GenerateResponse:
        if req.stream:
            raise invalid("stream", "POST /v1/generate does not stream; use /v1/completions with stream: true")
        svc = _model(request, registry, req.model)
        ids = svc.prompt_ids(req.prompt)
        z = svc.latent(req.z, req.n)
        scored = req.score and svc.detector is not None
        if req.resample is not None:
            if z is not None:
                raise invalid("z", "resample draws fresh candidates: it takes no z")
            if req.candidates > svc.limits.max_candidates:
                raise invalid("candidates", f"at most {svc.limits.max_candidates} for model {svc.id!r}, "
                                            f"got {req.candidates}")
            svc.check_n(req.n)
            max_tokens = svc.check_max_tokens(req.max_tokens)
            if req.top_k is not None and req.top_k > svc.run.tokenizer.vocab_size:
                raise invalid("top_k", f"at most the vocabulary size, {svc.run.tokenizer.vocab_size}")
            out: Generated = await in_thread(
                svc.resampled, n=req.n, method=req.resample, candidates=req.candidates, ratio_from=req.ratio_from,
                max_tokens=max_tokens, temperature=req.temperature, top_k=req.top_k, top_p=req.top_p, seed=req.seed,
                prompt=ids, deadline=Deadline.start(svc.limits.timeout_s), score=scored, ban=svc.ban_ids(req.ban))
        else:
            work, _ = prepare(svc, req, [ids] if ids is not None else None, top_k=req.top_k, z=z, score=scored)
            out = await in_thread(work)
        return S.GenerateResponse(model=svc.id, filtered=out.filtered, resample=out.resample,
                                  provenance=out.provenance, samples=[
            S.GeneratedSample(text=t, tokens=k, finish_reason=f, log_prob=lp,
                              realness=None if out.realness is None else out.realness[i],
                              log_ratio=None if out.log_ratio is None else out.log_ratio[i])
            for i, (t, k, f, lp) in enumerate(zip(out.texts, out.tokens, out.finish, out.log_probs))])

    @app.post("/v1/score", response_model=S.ScoreResponse, responses=responses)
    async def score(request: Request, req: S.TextsRequest) -> S.ScoreResponse:
        svc = _model(request, registry, req.model)
        svc.check_texts(req.texts, req.prompts)
        out = await in_thread(svc.realness, req.texts, req.prompts, Deadline.start(svc.limits.timeout_s))
        return S.ScoreResponse(model=svc.id, scores=[S.Score(realness=r) for r in out])

    @app.post("/v1/detect", response_model=S.DetectResponse, responses=responses)
    async def detect(request: Request, req: S.TextsRequest) -> S.DetectResponse:
        svc = _model(request, registry, req.model)
        svc.check_texts(req.texts, req.prompts)
        out = await in_thread(svc.detect, req.texts, req.prompts, Deadline.start(svc.limits.timeout_s))
        return S.DetectResponse(model=svc.id, threshold=svc.detector.threshold,
                                results=[S.Detection(**r) for r in out])

    return app


def create_asgi(registry: Registry, settings: Settings | None = None) -> Guard:
    """The app behind its guard: what uvicorn (and the tests' clients) talk to."""
    settings = settings or Settings()
    return Guard(create_app(registry, settings), settings)

