"""The HTTP service: generation, detection, health and clear 400s, on loopback."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from llmgan.config import config_from_dict
from llmgan.serve.app import make_server
from llmgan.training.engine import Trainer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    lines = [f"the {a} {n} runs" for a in ("red", "big", "old") for n in ("cat", "dog", "car", "man")] * 10
    (tmp / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = config_from_dict({
        "data": {"train": str(tmp / "train.txt"), "max_len": 8},
        "generator": {"kwargs": {"embed_dim": 8, "hidden_dim": 8}},
        "discriminator": {"name": "cnn", "kwargs": {"filter_sizes": [2, 3], "num_filters": [4, 4]}},
        "train": {"epochs": 1, "batch_size": 16, "progress": False},
        "adversarial": {"algorithm": "seqgan", "rounds": 1, "d_pretrain_steps": 1, "d_steps": 1, "d_epochs": 1,
                        "d_samples": 32, "g_batch_size": 8, "params": {"rollouts": 2}},
        "eval": {"n_samples": 20},
    })
    Trainer(cfg, str(tmp / "run")).run()
    srv = make_server(str(tmp / "run"), port=0, max_n=16)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def call(url, body=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_health_and_generate(server):
    status, h = call(server + "/health")
    assert status == 200 and h["algorithm"] == "seqgan" and h["discriminator"] is True
    status, out = call(server + "/generate", {"n": 3, "temperature": 0.7, "seed": 5})
    assert status == 200 and len(out["samples"]) == 3 and all(isinstance(s, str) for s in out["samples"])
    assert call(server + "/generate", {"n": 3, "temperature": 0.7, "seed": 5})[1] == out  # seeded: reproducible


def test_detect(server):
    status, out = call(server + "/detect", {"texts": ["the red cat runs", "dog dog the the"]})
    assert status == 200 and len(out["results"]) == 2
    assert all(0.0 <= r["p_human"] <= 1.0 and r["label"] in ("human", "generated") for r in out["results"])


@pytest.mark.parametrize("body, message", [
    ({"n": 0}, "field 'n'"),
    ({"n": 1000}, "field 'n'"),
    ({"temperature": "hot"}, "field 'temperature': expected float"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
])
def test_bad_requests_are_400_with_one_line(server, body, message):
    status, out = call(server + "/generate", body)
    assert status == 400 and message in out["error"] and "\n" not in out["error"]


def test_unknown_route_is_404(server):
    assert call(server + "/nothing")[0] == 404
    assert call(server + "/detect", {"texts": []})[0] == 400


def test_generate_with_density_ratio_resampling(server):
    status, out = call(server + "/generate", {"n": 3, "resample": "sir", "candidates": 4, "seed": 1})
    assert status == 200 and len(out["samples"]) == 3
    assert out["resample"]["method"] == "sir" and 1.0 <= out["resample"]["ess_mean"] <= 4.0
    assert call(server + "/generate", {"n": 3, "resample": "sir", "candidates": 4, "seed": 1})[1] == out
    status, out = call(server + "/generate", {"n": 2, "resample": "rejection", "candidates": 64})
    assert status == 200 and 0.0 < out["resample"]["acceptance_rate"] <= 1.0
    status, out = call(server + "/generate", {"resample": "bogus"})
    assert status == 400 and "resample" in out["error"]
    status, out = call(server + "/generate", {"resample": "sir", "ratio_from": "ebm"})
    assert status == 400 and "residual_ebm" in out["error"]
