"""The service on a real uvicorn socket (127.0.0.1 only): limits that hold against malformed and slow
clients, a bounded load run, and the official ``openai`` client unchanged.

Every loop here is bounded in count and time; the server runs in a daemon thread and is stopped by the
fixture.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import psutil
import pytest

from llmgan.serve.app import Settings
from llmgan.serve.service import Limits, Registry
from serve_runs import running_server, serve_runs  # noqa: F401 - serve_runs: the session fixture

HEADER_TIMEOUT = 0.6
LIVE: dict = {}  # the live server's registry, for tests that look inside


@pytest.fixture(scope="module")
def live(serve_runs):  # noqa: F811
    registry = Registry.load([serve_runs["gan"], serve_runs["mle"]], calibration_n=40,
                             limits=Limits(max_n=8, max_tokens=16, max_texts=16, timeout_s=10))
    LIVE["registry"] = registry
    settings = Settings(max_body=64 * 1024, body_timeout_s=HEADER_TIMEOUT, max_concurrent=8)
    with running_server(registry, settings, header_timeout=HEADER_TIMEOUT) as port:
        yield port


def raw(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send bytes, read until the server closes (or ``wait`` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def healthy(port: int) -> bool:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/health")
    ok = c.getresponse().status == 200
    c.close()
    return ok


def head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"{extra}\r\n").encode()


def test_negative_content_length_cannot_smuggle_a_big_body(live):
    big = json.dumps({"model": "gan", "texts": ["the cat"] * 400_000}).encode()  # ~4 MiB
    r = raw(live, head("/v1/score", "Content-Length: -1\r\n") + big)
    assert status_of(r) == 400
    r = raw(live, head("/v1/score", "Content-Length: 20\r\n") + big)  # understated: 20 bytes are the body
    assert 400 <= status_of(r) < 500
    assert healthy(live)


def test_chunked_body_is_counted_and_stopped(live):
    chunk = b"x" * 16384
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(16)) + b"0\r\n\r\n"  # 256 KiB
    r = raw(live, head("/v1/score", "Transfer-Encoding: chunked\r\n") + body)
    assert status_of(r) == 413 and b"request body over" in r
    assert healthy(live)


def test_slow_loris_headers_are_closed(live):
    conns = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", live), timeout=5)
        s.sendall(b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finish
        conns.append(s)
    drip = socket.create_connection(("127.0.0.1", live), timeout=5)
    drip.sendall(b"GET /health HTTP/1.1\r\n")
    t0 = time.monotonic()
    dripping = True
    while dripping and time.monotonic() - t0 < HEADER_TIMEOUT * 4:  # a byte every 0.1 s does not reset it
        try:
            drip.sendall(b"X")
        except OSError:
            dripping = False
        time.sleep(0.1)
    assert not dripping or drip.recv(10) == b""
    assert healthy(live)  # the server answers others meanwhile
    closed = 0
    for s in conns:
        try:
            closed += s.recv(10) == b""
        except (TimeoutError, ConnectionResetError):
            closed += 0
        s.close()
    drip.close()
    assert closed == 50


def test_slow_body_gets_408(live):
    with socket.create_connection(("127.0.0.1", live), timeout=5) as s:
        s.sendall(head("/v1/score", "Content-Length: 100\r\n") + b'{"texts": ')
        t0 = time.monotonic()
        r = s.recv(65536)
        assert status_of(r) == 408 and time.monotonic() - t0 < HEADER_TIMEOUT * 5


def test_openai_client_unchanged(live):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{live}/v1", api_key="unused", max_retries=0, timeout=20)
    models = [m.id for m in client.models.list()]
    assert models == ["gan", "mle"]
    out = client.completions.create(model="gan", prompt="", max_tokens=8, n=3, seed=7, temperature=0.8)
    assert len(out.choices) == 3 and out.usage.completion_tokens > 0
    streamed = {i: "" for i in range(3)}
    finished = set()
    for chunk in client.completions.create(model="gan", prompt="", max_tokens=8, n=3, seed=7, temperature=0.8,
                                           stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.text
            if c.finish_reason:
                finished.add(c.index)
    assert [streamed[i] for i in range(3)] == [c.text for c in out.choices] and finished == {0, 1, 2}
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="", max_tokens=2)
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model="gan", prompt="", max_tokens=2, top_p=5)


def test_a_stream_whose_client_leaves_stops_sampling(live, monkeypatch):
    svc = LIVE["registry"].get("gan")
    g = svc.run.generator
    steps = []
    step = g._sample_next

    def slow_step(*a, **k):  # 50 ms a token, and no end token: 16 tokens would take 0.8 s
        steps.append(1)
        time.sleep(0.05)
        return step(*a, **k)

    monkeypatch.setattr(g, "_sample_next", slow_step)
    monkeypatch.setattr(g, "eos_id", None)
    body = json.dumps({"model": "gan", "max_tokens": 16, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", live), timeout=5) as s:
        s.sendall(head("/v1/completions", f"Content-Length: {len(body)}\r\n") + body)
        got = b""
        while b"data: " not in got and len(got) < 65536:
            got += s.recv(65536)
        assert b"data: " in got  # the first token came; now the client goes away
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3 and not svc.lock.acquire(blocking=False):
        time.sleep(0.01)
    else:
        svc.lock.release()
    assert len(steps) < 12, f"{len(steps)} of 16 tokens sampled for a client that left after the first"


MALFORMED = [b"{not json", b'{"model": "gan", "temperature": NaN}', b'{"model": "gan", "nn": 2}',
             b'{"model": "gan", "n": 99}', b'{"model": "gan", "texts": [""]}']


def test_bounded_load_mixed_and_malformed(live):
    """1,000 requests from 16 clients (twice the server's 8 in flight), 10% malformed, beside slow-loris
    sockets: every valid request ends in 200 once its client honours 429, every malformed one in one
    4xx, no 5xx, the server alive and its memory flat."""
    proc = psutil.Process()
    finals: list[tuple[bool, int]] = []  # (request was valid, final status)
    refused: list[int] = []  # 429s seen before the final answer
    lock = threading.Lock()

    def send(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, http.client.HTTPConnection]:
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", live, timeout=20)
            return r.status, conn
        except (http.client.HTTPException, OSError):
            conn.close()
            return -1, http.client.HTTPConnection("127.0.0.1", live, timeout=20)

    def client(k: int, n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", live, timeout=20)
        for i in range(n):
            j = k * 1000 + i
            valid = j % 10 != 0
            if not valid:
                path, body = "/v1/completions", MALFORMED[(j // 10) % len(MALFORMED)]
            elif j % 3 == 0:
                path, body = "/v1/score", json.dumps({"model": "gan", "texts": ["the red cat runs"] * 2}).encode()
            else:
                path, body = "/v1/completions", json.dumps({"model": ("gan", "mle")[j % 2], "max_tokens": 6,
                                                            "n": 2}).encode()
            for attempt in range(400):  # a client that honours 429 retries after a short back-off
                code, conn = send(conn, path, body)
                if code != 429:
                    break
                with lock:
                    refused.append(code)
                time.sleep(min(0.2, 0.01 * (attempt + 1)))
            with lock:
                finals.append((valid, code))
        conn.close()

    def run(per_client: int) -> None:
        threads = [threading.Thread(target=client, args=(k, per_client)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)

    run(10)  # warm-up: allocator and caches settle
    rss0 = proc.memory_info().rss
    slow = [socket.create_connection(("127.0.0.1", live), timeout=5) for _ in range(8)]
    for s in slow:
        s.sendall(b"POST /v1/score HTTP/1.1\r\n")
    finals.clear()
    t0 = time.monotonic()
    run(1000 // 16 + 1)
    elapsed = time.monotonic() - t0
    for s in slow:
        s.close()
    growth = (proc.memory_info().rss - rss0) / 2**20
    assert len(finals) >= 1000
    valid_codes = sorted({c for v, c in finals if v})
    malformed_codes = sorted({c for v, c in finals if not v})
    assert valid_codes == [200], valid_codes
    assert set(malformed_codes) <= {400, 422} and malformed_codes, malformed_codes
    assert elapsed < 240, f"1,000 requests took {elapsed:.0f} s"
    assert healthy(live)
    assert growth < 64, f"RSS grew {growth:.0f} MiB over 1,000 requests"


def test_cli_serves_and_refuses_an_open_host_without_a_key(serve_runs, capsys):  # noqa: F811
    import os
    import re
    import subprocess
    import sys

    from llmgan.cli import main

    assert main(["serve", serve_runs["mle"], "--host", "0.0.0.0"]) == 2  # refused before loading anything
    assert "--api-key" in capsys.readouterr().err
    assert main(["serve", serve_runs["mle"], "--max-n", "0"]) == 2
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))
    proc = subprocess.Popen([sys.executable, "-m", "llmgan.cli", "serve", serve_runs["mle"], serve_runs["gan"],
                             "--port", "0", "--calibration-n", "20", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        port = int(m.group(1))
        for _ in range(100):
            try:
                if healthy(port):
                    break
            except OSError:
                time.sleep(0.05)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/health")
        assert json.loads(c.getresponse().read()) == {"status": "ok", "models": ["gan", "mle"]}
        c.close()
    finally:
        proc.terminate()
        proc.wait(20)
    assert "GET /health" in proc.stdout.read()  # the access log line
