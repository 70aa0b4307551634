"""``llmgan serve`` under concurrent load, with and without micro-batching (docs/benchmarks.md, section
``serve``).

Starts the real server (``python -m llmgan.cli serve``, uvicorn on 127.0.0.1, one torch thread) on a small
trained run, then drives it with 1, 4 and 16 concurrent keep-alive clients, each sending unseeded
``POST /v1/completions`` requests back to back (unseeded: only those are batched). Reported per arm and
client count: p50/p99 latency and requests/s. Arms: ``--no-batching``, and batching with each window
given by ``--windows``.

    python benchmarks/bench_serve.py [--run RUN_DIR] [--requests 40] [--write]

Without ``--run`` a small word-level LSTM (embed 32, hidden 64, 16 tokens) is trained for one epoch on
a synthetic corpus in a temporary directory first. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))


def train_run(root: str) -> str:
    from llmgan.config import config_from_dict
    from llmgan.training.engine import Trainer

    words = [f"the {a} {n} {v} {w}" for a in ("red", "big", "old", "new", "small") for n in ("cat", "dog", "car",
             "man", "bird") for v in ("runs", "sits", "waits") for w in ("here", "there", "now")]
    train = os.path.join(root, "train.txt")
    with open(train, "w", encoding="utf-8") as f:
        f.write("\n".join(words * 4) + "\n")
    run_dir = os.path.join(root, "bench")
    Trainer(config_from_dict({
        "data": {"train": train, "tokenizer": "word", "max_len": 16},
        "generator": {"kwargs": {"embed_dim": 32, "hidden_dim": 64}},
        "train": {"epochs": 1, "batch_size": 32, "progress": False}, "eval": {"n_samples": 20},
    }), run_dir).run()
    return run_dir


def start_server(run_dir: str, extra: list[str]) -> tuple[subprocess.Popen, int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.path.join(HERE, "..", "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "llmgan.cli", "serve", run_dir, "--port", str(port),
                             "--threads", "1", "--max-concurrent", "64", "--log-level", "warning", *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
    raise SystemExit("server did not start within 60 s")


def drive(port: int, clients: int, per_client: int, body: dict) -> dict:
    data = json.dumps(body).encode()
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(per_client):
            t0 = time.perf_counter()
            c.request("POST", "/v1/completions", body=data, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt) if r.status == 200 else errors.__setitem__(0, errors[0] + 1)
        c.close()

    # warm-up: first requests pay for lazy start-up (the batcher thread, allocator)
    drive_one = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(5):
        drive_one.request("POST", "/v1/completions", body=data, headers={"Content-Type": "application/json"})
        drive_one.getresponse().read()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {"clients": clients, "requests": len(lat), "errors": errors[0], "p50_ms": 1e3 * q[49],
            "p99_ms": 1e3 * q[98], "rps": len(lat) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="a run directory (default: train a small one)")
    ap.add_argument("--requests", type=int, default=40, help="requests per client")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--windows", default="0,2", help="batching windows in ms (comma-separated)")
    ap.add_argument("--n", type=int, default=1, help="samples per request")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    run_dir = args.run or train_run(tmp.name)
    body = {"n": args.n, "max_tokens": args.max_tokens, "temperature": 1.0}
    arms = [("off", ["--no-batching"])] + [(f"batched, {w} ms window", ["--batch-window-ms", w])
                                           for w in args.windows.split(",")]
    rows = []
    load_before = os.getloadavg()
    for name, extra in arms:
        proc, port = start_server(run_dir, extra)
        try:
            for c in (int(x) for x in args.clients.split(",")):
                r = {"arm": name, **drive(port, c, args.requests, body)}
                print(json.dumps(r), flush=True)
                rows.append(r)
        finally:
            proc.terminate()
            proc.wait(10)
    if not args.write:
        return
    from _doc import command, machine, update_section

    load_after = os.getloadavg()
    off = {r["clients"]: r for r in rows if r["arm"] == "off"}
    reading = []
    for c, base in off.items():
        best = max((r for r in rows if r["clients"] == c and r["arm"] != "off"), key=lambda r: r["rps"])
        reading.append(f"{c} client(s): {base['rps']:.1f} -> {best['rps']:.1f} requests/s "
                       f"({best['rps'] / base['rps']:.1f}x, {best['arm']}), p50 {base['p50_ms']:.0f} -> "
                       f"{best['p50_ms']:.0f} ms, p99 {base['p99_ms']:.0f} -> {best['p99_ms']:.0f} ms")

    lines = ["## Serving: micro-batching under concurrent load", "",
             f"`{command()}` on {machine()}. **The machine was shared with other jobs while "
             f"this ran (1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
             f"{os.cpu_count()} cores): timings are noisy; compare arms within one run, not across runs.**", "",
             f"The real server (uvicorn on 127.0.0.1, `--threads 1`) on a word-level LSTM (embed 32, hidden 64); "
             f"each client sends unseeded `POST /v1/completions` (n={args.n}, max_tokens={args.max_tokens}) back "
             f"to back on one keep-alive connection, {args.requests} requests per client. Latency is per request, "
             "as the client sees it.", "",
             "| batching | clients | requests | errors | p50 ms | p99 ms | requests/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['rps']:.1f} |")
    lines += ["", "Reading (batching off vs the best batched arm): " + "; ".join(reading) + ". Batching pays "
              "where several requests wait for the model at once: one sampling call of k rows costs far less "
              "than k calls. Only unseeded requests are batched (docs/serve.md)."]
    update_section("serve", "\n".join(lines))
    print("wrote the serve section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
