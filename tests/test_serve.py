"""The FastAPI service through FastAPI's TestClient: every endpoint, every error path, no paths leaked.

Real-socket limits (Content-Length, slow clients, load, the openai client) are in test_serve_http.py,
the page in a real browser in test_serve_browser.py.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
from fastapi.testclient import TestClient

from llmgan.serve.app import Settings, create_asgi
from llmgan.serve.service import Limits, Registry
from serve_runs import serve_runs  # noqa: F401 - the session fixture


@pytest.fixture(scope="module")
def registry(serve_runs):  # noqa: F811
    return Registry.load(list(serve_runs.values()), calibration_n=40,
                         limits=Limits(max_n=16, max_tokens=32, max_texts=8, timeout_s=20))


@pytest.fixture(scope="module")
def client(registry):
    with TestClient(create_asgi(registry, Settings(max_body=4096)), raise_server_exceptions=False) as c:
        yield c


def post(client, path, body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=raw, headers={"Content-Type": "application/json"})


def sse_events(text: str) -> list:
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# ----------------------------------------------------------------------------------------- happy paths
def test_health_lists_models_without_paths(client, serve_runs):  # noqa: F811
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok", "models": ["cond", "gan", "mle"]}
    root = str(serve_runs["gan"]).rsplit("/", 1)[0]
    for path in ("/health", "/v1/models", "/v1/models/gan/metrics"):
        assert root not in client.get(path).text  # no server path anywhere a client can read


def test_models_describe_each_run(client):
    cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
    assert cards["gan"]["algorithm"] == "seqgan" and cards["gan"]["discriminator"] is True
    assert 0 <= cards["gan"]["detector"]["auroc"] <= 1 and "valid_nll" in cards["gan"]["metrics"]
    assert cards["mle"]["discriminator"] is False and cards["mle"]["latent_dim"] == 3
    assert cards["cond"]["conditional"] is True and cards["cond"]["data"] == "pairs.jsonl"
    assert cards["gan"]["limits"] == {"max_n": 16, "max_tokens": 32, "max_texts": 8, "max_candidates": 16}
    assert cards["gan"]["resample"] == ["d"] and cards["mle"]["resample"] == []
    m = client.get("/v1/models/gan/metrics").json()
    assert any(k.endswith(":valid_nll") for k in m["series"]) and m["sweep"] == []


def test_page_is_served_at_root(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="model"' in r.text and 'id="generate"' in r.text and "/v1/generate" in r.text


def test_completions_seeded_and_reproducible(client):
    body = {"model": "gan", "prompt": "", "n": 3, "temperature": 0.7, "seed": 5, "max_tokens": 8}
    r = post(client, "/v1/completions", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "text_completion" and len(out["choices"]) == 3
    assert all(c["finish_reason"] in ("stop", "length") for c in out["choices"])
    assert out["usage"]["completion_tokens"] > 0
    again = post(client, "/v1/completions", body).json()
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in out["choices"]]


def test_stream_sends_tokens_that_add_up_to_the_unstreamed_text(client):
    body = {"model": "gan", "n": 4, "temperature": 1.0, "seed": 11, "max_tokens": 8}
    plain = [c["text"] for c in post(client, "/v1/completions", body).json()["choices"]]
    r = post(client, "/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]" and "usage" in events[-2]
    chunks = [e for e in events[:-2]]
    text = {i: [] for i in range(4)}
    for e in chunks:
        for c in e["choices"]:
            if c["text"]:
                text[c["index"]].append(c["text"])
    assert ["".join(text[i]) for i in range(4)] == plain
    # token by token: the word tokenizer's samples come one word per event
    assert [len(text[i]) for i in range(4)] == [len(p.split()) for p in plain] and sum(map(len, plain)) > 0
    assert {c["index"] for e in chunks for c in e["choices"] if c["finish_reason"]} == {0, 1, 2, 3}


def test_stream_and_batch_draw_through_the_generators_step_loop(client, registry, monkeypatch):
    # one sampling loop: the server's sampling (streamed, seeded or batched) is Generator.sample_steps,
    # so every option it has (watermark, bans, ...) is the same code everywhere
    g = registry.get("gan").run.generator
    calls = []
    real = type(g).sample_steps

    def spy(self, *a, **k):
        calls.append(k)
        return real(self, *a, **k)

    monkeypatch.setattr(type(g), "sample_steps", spy)
    body = {"model": "gan", "n": 2, "max_tokens": 6}
    for extra in ({"seed": 3}, {}, {"seed": 3, "stream": True}):
        assert post(client, "/v1/completions", {**body, **extra}).status_code == 200
    assert len(calls) == 3 and all("watermark" in k for k in calls)


def test_generate_scores_samples_as_score_does(client):
    r = post(client, "/v1/generate", {"model": "gan", "n": 4, "seed": 1, "top_k": 5, "max_tokens": 8})
    assert r.status_code == 200, r.text
    samples = r.json()["samples"]
    assert len(samples) == 4 and all(s["log_prob"] <= 0 and s["tokens"] >= 1 for s in samples)
    assert all(0 <= s["realness"] <= 1 for s in samples)
    texts = [s["text"] for s in samples if s["text"]]
    scores = post(client, "/v1/score", {"model": "gan", "texts": texts}).json()["scores"]
    want = [s["realness"] for s in samples if s["text"]]
    assert [round(s["realness"], 5) for s in scores] == [round(x, 5) for x in want]


def test_detect_labels_by_the_calibrated_threshold(client):
    r = post(client, "/v1/detect", {"model": "gan", "texts": ["the red cat runs", "dog dog the the"]})
    assert r.status_code == 200, r.text
    out = r.json()
    for d in out["results"]:
        assert d["label"] == ("human" if d["p_human"] >= out["threshold"] else "generated")


def test_latent_z_and_conditional_prompts(client, registry):
    r = post(client, "/v1/generate", {"model": "mle", "n": 2, "z": [[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]], "seed": 0})
    assert r.status_code == 200 and r.json()["samples"][0]["realness"] is None  # no D in an MLE run
    r = post(client, "/v1/completions", {"model": "cond", "prompt": ["red", "old"], "n": 2, "seed": 0})
    assert r.status_code == 200 and len(r.json()["choices"]) == 4
    # a prompt longer than training's max_prompt_len (4) keeps its last tokens, as training did
    svc = registry.get("cond")
    assert svc.prompt_ids("the the the the the red") == svc.prompt_ids("the the the red")
    long = {"model": "cond", "prompt": "cat " * 900, "seed": 0, "max_tokens": 4}
    assert post(client, "/v1/completions", long).status_code == 200


def test_chat_completions_use_the_chat_template(client, registry, monkeypatch):
    # a stand-in template on the word tokenizer (no hf model offline): the route must put the
    # templated messages in front of the response, with and without streaming
    svc = registry.get("cond")
    seen = []

    class Template:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            seen.append((messages, add_generation_prompt))
            return messages[-1]["content"]

    monkeypatch.setattr(svc, "chat", True)
    monkeypatch.setattr(svc.run.tokenizer, "hf", Template(), raising=False)
    body = {"model": "cond", "messages": [{"role": "user", "content": "red"}], "seed": 4, "max_tokens": 8}
    out = post(client, "/v1/chat/completions", body).json()
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["role"] == "assistant"
    assert seen[0] == ([{"role": "user", "content": "red"}], True)
    events = sse_events(post(client, "/v1/chat/completions", {**body, "stream": True}).text)
    streamed = "".join(c["delta"].get("content", "") for e in events[:-1] for c in e["choices"])
    assert streamed == out["choices"][0]["message"]["content"]


# ----------------------------------------------------------------------------------------- errors
NAN = b'{"model": "gan", "temperature": NaN}'


@pytest.mark.parametrize("path, body, status, param", [
    ("/v1/completions", NAN, 422, "temperature"),
    ("/v1/completions", b'{"model": "gan", "top_p": Infinity}', 422, "top_p"),
    ("/v1/completions", {"model": "gan", "nn": 3}, 422, "nn"),
    ("/v1/completions", {"model": "gan", "prompt": "the"}, 422, "prompt"),  # unconditional run
    ("/v1/completions", {"model": "cond"}, 422, "prompt"),  # conditional run without one
    ("/v1/completions", {"model": "gan", "n": 17}, 422, "n"),
    ("/v1/completions", {"model": "gan", "n": 0}, 422, "n"),
    ("/v1/completions", {"model": "gan", "max_tokens": 33}, 422, "max_tokens"),
    ("/v1/completions", {"model": "gan", "temperature": "hot"}, 422, "temperature"),
    ("/v1/completions", {"model": "nope"}, 404, "model"),
    ("/v1/completions", {"n": 1}, 400, "model"),  # three models loaded: name one
    ("/v1/completions", b"{not json", 400, None),
    ("/v1/completions", b"[1, 2]", 400, None),
    ("/v1/completions", b"", 400, None),
    ("/v1/generate", {"model": "gan", "top_k": 100000}, 422, "top_k"),
    ("/v1/generate", {"model": "gan", "z": [[1.0]]}, 422, "z"),
    ("/v1/generate", b'{"model": "mle", "z": [[NaN, 0, 0]]}', 422, "z.0.0"),  # unbounded floats too
    ("/v1/generate", {"model": "mle", "z": [[1.0]]}, 422, "z"),  # wrong width
    ("/v1/generate", {"model": "cond", "prompts": ["a"]}, 422, "prompts"),
    ("/v1/chat/completions", {"model": "gan", "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ("/v1/chat/completions", {"model": "gan", "messages": []}, 422, "messages"),
    ("/v1/detect", {"model": "gan", "texts": ["the red cat", ""]}, 422, "texts.1"),  # empty is not "human"
    ("/v1/detect", {"model": "gan", "texts": ["   "]}, 422, "texts.0"),
    ("/v1/detect", {"model": "gan", "texts": []}, 422, "texts"),
    ("/v1/detect", {"model": "gan", "texts": ["a"] * 9}, 422, "texts"),
    ("/v1/score", {"model": "mle", "texts": ["a"]}, 400, "model"),  # no discriminator
    ("/v1/score", {"model": "gan", "texts": ["a"], "prompts": ["b"]}, 422, "prompts"),
    ("/v1/score", {"model": "gan", "texts": "the red cat"}, 422, "texts"),
])
def test_bad_requests_get_one_line_json_errors(client, path, body, status, param):
    r = post(client, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param"} and err["param"] == param
    assert "\n" not in err["message"] and "Traceback" not in err["message"] and "/tmp" not in err["message"]


def test_unknown_routes_and_methods_are_json(client):
    r = client.get("/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = client.put("/v1/completions", content=b"{}")
    assert r.status_code == 405 and r.json()["error"]["type"] == "method_not_allowed"
    assert client.delete("/").status_code == 405


def test_body_over_the_limit_is_413_whatever_the_header_says(client):
    big = json.dumps({"model": "gan", "texts": ["x" * 5000]}).encode()
    assert post(client, "/v1/score", big).status_code == 413
    # no Content-Length at all (a streamed body): the bytes are counted as they come
    r = client.post("/v1/score", content=iter([big[:3000], big[3000:]]), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["message"].startswith("request body over")


def test_server_faults_are_500_without_their_text_and_logged(client, registry, monkeypatch, caplog):
    def boom(**kw):
        raise RuntimeError("secret detail /srv/private/run")

    monkeypatch.setattr(registry.get("gan"), "generate", boom)
    with caplog.at_level(logging.ERROR, logger="llmgan.serve"):
        r = post(client, "/v1/completions", {"model": "gan"})
    assert r.status_code == 500 and "secret" not in r.text and "/srv" not in r.text
    assert r.json()["error"]["type"] == "server_error"
    assert any("secret detail" in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)


def test_busy_model_times_out_with_503_and_frees_others(client, registry, monkeypatch):
    svc = registry.get("gan")
    monkeypatch.setattr(svc.limits, "timeout_s", 0.3)
    assert svc.lock.acquire()  # a long request holds the model
    try:
        r = post(client, "/v1/completions", {"model": "gan", "max_tokens": 4})
        assert r.status_code == 503 and r.json()["error"]["type"] == "timeout" and r.headers["retry-after"]
        # the other models are not behind that lock
        assert post(client, "/v1/completions", {"model": "mle", "max_tokens": 4}).status_code == 200
    finally:
        svc.lock.release()


def test_deadline_stops_sampling_between_tokens(client, registry, monkeypatch):
    svc = registry.get("gan")
    monkeypatch.setattr(svc.limits, "timeout_s", 1e-9)  # expired before the first token
    r = post(client, "/v1/generate", {"model": "gan", "max_tokens": 32})
    assert r.status_code == 503 and "limit" in r.json()["error"]["message"]
    assert svc.lock.acquire(blocking=False)  # and the model was released
    svc.lock.release()


def test_api_key(registry):
    app = create_asgi(registry, Settings(api_key="s3cret"))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200
        r = c.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_concurrency_cap_answers_429(registry):
    settings = Settings(max_concurrent=2)
    app = create_asgi(registry, settings)
    svc = registry.get("mle")
    results = []
    with TestClient(app, raise_server_exceptions=False) as c:
        svc.lock.acquire()  # two requests get in and wait on the model; the third finds the server full
        try:
            threads = [threading.Thread(target=lambda: results.append(
                post(c, "/v1/completions", {"model": "mle", "max_tokens": 2}).status_code)) for _ in range(2)]
            for t in threads:
                t.start()
            for _ in range(200):
                if app.in_flight == 2:
                    break
                threading.Event().wait(0.01)
            r = post(c, "/v1/completions", {"model": "mle"})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert c.get("/health").status_code == 200  # health is never capped
        finally:
            svc.lock.release()
        for t in threads:
            t.join(30)
    assert results == [200, 200] and app.in_flight == 0


def test_access_log_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="llmgan.serve.access"):
        post(client, "/v1/completions", {"model": "gan", "max_tokens": 2})
        post(client, "/v1/completions", {"model": "gan", "nn": 1})
    lines = [r.getMessage() for r in caplog.records if r.name == "llmgan.serve.access"]
    assert any('"POST /v1/completions HTTP/1.1" 200' in x and "model=gan" in x and "ms" in x for x in lines)
    assert any('"POST /v1/completions HTTP/1.1" 422' in x for x in lines)


def test_openapi_document_lists_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/completions", "/v1/chat/completions", "/v1/generate", "/v1/score", "/v1/detect", "/v1/models",
              "/health"):
        assert p in paths


def test_detector_is_calibrated_at_start_up_not_in_requests(client, registry, monkeypatch):
    from llmgan.detect import Detector

    svc = registry.get("gan")
    assert svc.detector.threshold is not None and svc.detector.calibration["n_human"] > 0

    def no(*a, **k):
        raise AssertionError("a request calibrated the detector")

    monkeypatch.setattr(Detector, "calibrate", no)
    monkeypatch.setattr(Detector, "load_or_calibrate", no)
    assert post(client, "/v1/detect", {"model": "gan", "texts": ["the red cat runs"]}).status_code == 200
    assert client.get("/v1/models/nope").status_code == 404
