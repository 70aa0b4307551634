"""The server's sampling options beyond the OpenAI subset, through FastAPI's TestClient: micro-batching of
concurrent requests, density-ratio resampling, a start-up watermark key, output filters and provenance.
"""

from __future__ import annotations

import json
import logging
import os
import threading

import pytest
import torch
from fastapi.testclient import TestClient

from llmgan import __version__
from llmgan.filters import OutputFilter
from llmgan.models.watermark import Watermark
from llmgan.provenance import checkpoint_hash, provenance
from llmgan.serve.app import Settings, create_asgi
from llmgan.serve.service import Limits, ModelService, Registry
from serve_runs import serve_runs  # noqa: F401 - the session fixture

LIMITS = Limits(max_n=16, max_tokens=16, max_texts=8, timeout_s=20, max_candidates=8)
KEY = Watermark(b"k" * 32, gamma=0.25, delta=8.0)  # a strong bias: green tokens dominate


def client_for(*services: ModelService, **settings) -> TestClient:
    return TestClient(create_asgi(Registry(list(services)), Settings(**settings)), raise_server_exceptions=False)


def post(client, path, body):
    return client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def gan(serve_runs):  # noqa: F811
    return ModelService(serve_runs["gan"], "gan", calibration_n=40, limits=LIMITS, batch_window_s=0.002)


@pytest.fixture(scope="module")
def client(gan, serve_runs):  # noqa: F811
    mle = ModelService(serve_runs["mle"], "mle", calibration_n=40, limits=LIMITS)
    with client_for(gan, mle) as c:
        yield c


def concurrently(client, bodies: list[dict]) -> list:
    out: list = [None] * len(bodies)

    def one(i: int) -> None:
        out[i] = post(client, "/v1/completions", bodies[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


# ----------------------------------------------------------------------------------------- batching
def held_batch(client, svc: ModelService, bodies: list[dict], monkeypatch, valid: int | None = None) -> list:
    """Send ``bodies`` at once while the model is busy (so none samples alone) with a 1 s batching window
    (so the batcher sees all of them together). ``valid``: how many reach the model (default: all)."""
    monkeypatch.setattr(svc.batcher, "window_s", 1.0)
    svc.lock.acquire()
    out: list = []
    t = threading.Thread(target=lambda: out.extend(concurrently(client, bodies)))
    t.start()
    try:
        for _ in range(1000):
            if svc.active >= (len(bodies) if valid is None else valid):
                break
            threading.Event().wait(0.005)
    finally:
        svc.lock.release()
    t.join(60)
    return out


def test_concurrent_requests_share_one_sampling_call(client, gan, monkeypatch):
    calls = []
    g = gan.run.generator
    real = type(g).sample_steps

    def spy(self, n, *a, **k):
        calls.append(n)
        return real(self, n, *a, **k)

    monkeypatch.setattr(type(g), "sample_steps", spy)
    bodies = [{"model": "gan", "n": n, "max_tokens": 6} for n in (1, 2, 3, 2, 1, 3)]
    before = gan.batcher.calls
    out = held_batch(client, gan, bodies, monkeypatch)
    assert [r.status_code for r in out] == [200] * 6, [r.text for r in out]
    # each request gets its own n back, its own usage, and tokens within its own cap
    assert [len(r.json()["choices"]) for r in out] == [b["n"] for b in bodies]
    assert calls == [12] and gan.batcher.calls - before == 1  # one call of 1+2+3+2+1+3 rows
    for r in out:
        assert r.json()["usage"]["completion_tokens"] <= 6 * len(r.json()["choices"])


def test_options_that_differ_are_not_mixed_and_caps_hold(client, gan, monkeypatch):
    bodies = [{"model": "gan", "n": 2, "max_tokens": 2}, {"model": "gan", "n": 3, "max_tokens": 7},
              {"model": "gan", "n": 1, "max_tokens": 2, "temperature": 0.5}, {"model": "gan", "n": 17}]
    before = gan.batcher.calls
    out = held_batch(client, gan, bodies, monkeypatch, valid=3)
    assert [r.status_code for r in out] == [200, 200, 200, 422]  # the per-model n cap still refuses
    assert out[3].json()["error"]["param"] == "n"
    assert gan.batcher.calls - before == 3  # three keys: (2 tokens, T=1), (7 tokens), (2 tokens, T=0.5)
    for r, b in zip(out[:3], bodies[:3]):
        ch = r.json()["choices"]
        assert len(ch) == b["n"]
        assert r.json()["usage"]["completion_tokens"] <= b["max_tokens"] * b["n"]


def test_a_failing_request_does_not_fail_its_neighbours(client, gan, monkeypatch, caplog):
    real = gan._finish

    def finish(job, *a, **k):
        if job.n == 2:
            raise RuntimeError("this request's own fault")
        return real(job, *a, **k)

    monkeypatch.setattr(gan, "_finish", finish)
    before = gan.batcher.calls
    with caplog.at_level(logging.ERROR, logger="llmgan.serve"):
        out = held_batch(client, gan, [{"model": "gan", "n": n, "max_tokens": 5} for n in (1, 2, 3)], monkeypatch)
    assert [r.status_code for r in out] == [200, 500, 200]
    assert gan.batcher.calls - before == 1 and len(out[2].json()["choices"]) == 3


def test_a_failing_batch_is_retried_request_by_request(client, gan, monkeypatch):
    g = gan.run.generator
    real = type(g).sample_steps

    def fragile(self, n, *a, **k):
        if n > 3:
            raise RuntimeError("too many rows")  # the batch fails as a whole; each request alone works
        return real(self, n, *a, **k)

    monkeypatch.setattr(type(g), "sample_steps", fragile)
    out = held_batch(client, gan, [{"model": "gan", "n": n, "max_tokens": 4} for n in (2, 2, 3)], monkeypatch)
    assert [r.status_code for r in out] == [200, 200, 200] and [len(r.json()["choices"]) for r in out] == [2, 2, 3]


def test_seeded_requests_are_not_batched_and_stay_reproducible(client, gan, monkeypatch):
    body = {"model": "gan", "n": 3, "seed": 9, "max_tokens": 8}
    quiet = post(client, "/v1/completions", body).json()["choices"]
    before = gan.batcher.batched_jobs
    out = held_batch(client, gan, [body, {"model": "gan", "n": 2, "max_tokens": 8}, body], monkeypatch)
    assert gan.batcher.batched_jobs - before == 1  # only the unseeded one went through the batcher
    assert out[0].json()["choices"] == quiet and out[2].json()["choices"] == quiet


def test_a_lone_request_skips_the_batcher(client, gan):
    before = gan.batcher.calls, gan.batcher.batched_jobs
    for _ in range(3):  # one after the other: the model is idle each time, there is nothing to batch with
        assert post(client, "/v1/completions", {"model": "gan", "max_tokens": 4}).status_code == 200
    assert (gan.batcher.calls, gan.batcher.batched_jobs) == before and gan.active == 0


def test_batching_off_samples_each_request_alone(serve_runs):  # noqa: F811
    svc = ModelService(serve_runs["gan"], "gan", calibration_n=40, limits=LIMITS, batch_window_s=None)
    calls = []
    g = svc.run.generator
    real = g.sample_steps
    g.sample_steps = lambda n, *a, **k: (calls.append(n), real(n, *a, **k))[1]
    with client_for(svc) as c:
        out = concurrently(c, [{"n": 2, "max_tokens": 4}] * 3)
    assert [r.status_code for r in out] == [200] * 3 and calls == [2, 2, 2] and svc.batcher is None


# ----------------------------------------------------------------------------------------- resample
def test_resample_sir_and_rejection(client, gan):
    from llmgan.resample import resample_run

    body = {"model": "gan", "n": 4, "seed": 3, "max_tokens": 8, "resample": "sir", "candidates": 4}
    r = post(client, "/v1/generate", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["samples"]) == 4 and all(s["log_ratio"] is not None and s["log_prob"] is None
                                            for s in out["samples"])
    st = out["resample"]
    assert st["method"] == "sir" and st["generator_samples"] == 16 and 1 <= st["ess_mean"] <= 4
    assert out["provenance"]["sampling"]["resample"] == "sir" and out["provenance"]["seed"] == 3
    # the same samples as the library's resampler with the same seed and the server's calibration
    want = resample_run(gan.run, 4, method="sir", candidates=4, max_len=8, ratio=gan.ratios["d"],
                        rng=torch.Generator().manual_seed(3))
    tok = gan.run.tokenizer
    assert [s["text"] for s in out["samples"]] == [tok.decode(t[:ln]) for t, ln in
                                                   zip(want.tokens.tolist(), want.lengths.tolist())]
    assert post(client, "/v1/generate", body).json()["samples"] == out["samples"]  # seeded: reproducible
    rej = post(client, "/v1/generate", {**body, "resample": "rejection"}).json()
    assert 0 <= rej["resample"]["acceptance_rate"] <= 1 and len(rej["samples"]) <= 4


@pytest.mark.parametrize("body, status, param", [
    ({"model": "gan", "resample": "sir", "candidates": 9}, 422, "candidates"),  # over the cap (8)
    ({"model": "gan", "resample": "sir", "candidates": 0}, 422, "candidates"),
    ({"model": "gan", "resample": "importance"}, 422, "resample"),
    ({"model": "gan", "resample": "sir", "ratio_from": "ebm"}, 400, "ratio_from"),  # not a residual EBM run
    ({"model": "mle", "resample": "sir"}, 400, "ratio_from"),  # no discriminator
    ({"model": "mle", "resample": "sir", "z": [[0.0, 0.0, 0.0]]}, 422, "z"),
])
def test_resample_bad_values(client, body, status, param):
    r = post(client, "/v1/generate", body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param and "\n" not in r.json()["error"]["message"]


# ----------------------------------------------------------------------------------------- bans
BANNED = ["the", "red", "runs"]  # 3 of the tiny run's 9 words


def _banned_count(resp) -> int:
    body = resp.json()
    texts = [c["text"] for c in body["choices"]] if "choices" in body else [s["text"] for s in body["samples"]]
    return sum(t.split().count(w) for t in texts for w in BANNED)


def test_ban_keeps_tokens_out_of_every_path_as_generate_does(client, gan, monkeypatch):
    """``ban`` (llmgan generate --ban): unbanned, the tiny run samples these words often; banned, no path
    (completions, seeded, batched, streamed, resampled) samples them, and a seeded banned request gives
    the library's own banned samples."""
    from llmgan.training.evaluation import ban_token_ids

    plain = post(client, "/v1/completions", {"model": "gan", "n": 16, "max_tokens": 8, "seed": 5})
    assert _banned_count(plain) >= 8  # the control: the model does sample them
    body = {"model": "gan", "n": 16, "max_tokens": 8, "seed": 5, "ban": BANNED}
    banned = post(client, "/v1/completions", body)
    assert banned.status_code == 200, banned.text
    assert _banned_count(banned) == 0
    g, tok = gan.run.generator, gan.run.tokenizer
    ids = ban_token_ids(tok, BANNED)
    want = g.sample(16, 8, generator=torch.Generator().manual_seed(5), ban_ids=ids)
    assert [c["text"] for c in banned.json()["choices"]] == [
        tok.decode(t[:ln]) for t, ln in zip(want.tokens.tolist(), want.lengths.tolist())]
    assert banned.json()["provenance"]["sampling"]["ban"] == ids.tolist()
    # batched: a banned and an unbanned request arriving together are not mixed into one call
    before = gan.batcher.calls
    out = held_batch(client, gan, [{"model": "gan", "n": 16, "max_tokens": 8, "ban": BANNED},
                                   {"model": "gan", "n": 16, "max_tokens": 8}], monkeypatch)
    assert [r.status_code for r in out] == [200, 200] and gan.batcher.calls - before == 2
    assert _banned_count(out[0]) == 0 and _banned_count(out[1]) > 0
    streamed = client.post("/v1/completions", json={**body, "stream": True}).text
    deltas = [c["text"] for line in streamed.splitlines() if line.startswith("data: {")
              for c in json.loads(line[6:])["choices"]]
    assert deltas and not any(w in d.split() for d in deltas if d for w in BANNED)
    sir = post(client, "/v1/generate", {"model": "gan", "n": 4, "seed": 3, "max_tokens": 8, "resample": "sir",
                                         "candidates": 4, "ban": BANNED})
    assert sir.status_code == 200, sir.text
    assert _banned_count(sir) == 0


@pytest.mark.parametrize("ban", [["nope"], "ALL"])
def test_bad_ban_is_one_422_naming_it(client, gan, ban):
    tokens = list(gan.run.tokenizer.vocab) if ban == "ALL" else ban  # ALL: nothing left to sample
    r = post(client, "/v1/completions", {"model": "gan", "ban": tokens})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["param"] == "ban" and "\n" not in err["message"]


# ----------------------------------------------------------------------------------------- watermark
def test_watermark_key_from_start_up_marks_every_path(serve_runs):  # noqa: F811
    svc = ModelService(serve_runs["gan"], "gan", calibration_n=40, limits=LIMITS, watermark=KEY)
    g, tok = svc.run.generator, svc.run.tokenizer
    with client_for(svc) as c:
        seeded = post(c, "/v1/generate", {"n": 8, "seed": 4, "max_tokens": 8, "score": False})
        assert seeded.status_code == 200
        texts = [s["text"] for s in seeded.json()["samples"]]
        # the seeded path samples exactly what Generator.sample does with the key
        want = g.sample(8, 8, generator=torch.Generator().manual_seed(4), watermark=KEY)
        assert texts == [tok.decode(t[:ln]) for t, ln in zip(want.tokens.tolist(), want.lengths.tolist())]
        batched = [s["text"] for s in post(c, "/v1/generate", {"n": 16, "max_tokens": 8}).json()["samples"]]
        events = c.post("/v1/completions", json={"n": 8, "max_tokens": 8, "stream": True}).text
        card = c.get("/v1/models/gan").json()
        refused = post(c, "/v1/generate", {"resample": "sir"})  # the resamplers do not watermark: refused
    streamed: dict[int, str] = {}
    for block in events.split("\n\n"):
        if block.startswith("data: {"):
            for ch in json.loads(block[6:])["choices"]:
                streamed[ch["index"]] = streamed.get(ch["index"], "") + ch["text"]
    skip = {i for i in (tok.bos_id, tok.eos_id, tok.pad_id) if i is not None}
    for name, group in (("seeded", texts), ("batched", batched), ("streamed", list(streamed.values()))):
        res = KEY.detect([tok.encode(t) for t in group if t], skip=skip, ignore_repeated=False)
        assert res["n_green"] / res["n_tokens"] > 0.6, (name, res["n_green"], res["n_tokens"])  # gamma is 0.25
    plain = [s["text"] for s in post(TestClient(create_asgi(Registry([ModelService(
        serve_runs["gan"], "gan", calibration_n=40, limits=LIMITS)]))), "/v1/generate",
        {"n": 16, "max_tokens": 8}).json()["samples"]]
    res = KEY.detect([tok.encode(t) for t in plain if t], skip=skip, ignore_repeated=False)
    assert res["n_green"] / res["n_tokens"] < 0.6  # without the key: about gamma
    assert card["watermark_key_id"] == KEY.key_id and seeded.json()["provenance"]["watermark_key_id"] == KEY.key_id
    assert KEY.key.hex() not in seeded.text + events + json.dumps(card)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "resample"


def test_serve_cli_refuses_bad_key_and_filter_files_in_one_line(serve_runs, tmp_path, capsys):  # noqa: F811
    from llmgan.cli import main

    bad = tmp_path / "wm.key"
    bad.write_text("{}")
    # refused before any run loads (in-process: the checks come first, so nothing starts)
    assert main(["serve", serve_runs["gan"], "--port", "0", "--watermark", str(bad)]) == 2
    assert main(["serve", serve_runs["gan"], "--port", "0", "--filter-config", f"nope={tmp_path / 'f.yaml'}"]) == 2
    assert main(["serve", serve_runs["gan"], "--port", "0", "--filter-config", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "not a watermark key file" in err[0] and "no loaded model is named 'nope'" in err[1]
    assert "cannot read filter config" in err[2] and len(err) == 3


def test_per_model_key_and_filter_specs(tmp_path):
    from llmgan.serve.cli import per_model

    runs = [str(tmp_path / "a"), str(tmp_path / "b") + "/"]
    assert per_model(["k.json"], runs, "--watermark") == {"a": "k.json", "b": "k.json"}  # plain: every model
    assert per_model(["b=k.json"], runs, "--watermark") == {"b": "k.json"}  # MODEL=FILE: that model only
    assert per_model(["all.json", "a=mine.json"], runs, "--watermark") == {"a": "mine.json", "b": "all.json"}
    assert per_model(None, runs, "--watermark") == {}


# ----------------------------------------------------------------------------------------- filters
def test_filter_drops_counts_and_logs(serve_runs, caplog):  # noqa: F811
    flt = OutputFilter(blocklist=["cat"], config_hash="f" * 64)
    svc = ModelService(serve_runs["gan"], "gan", calibration_n=40, limits=LIMITS, output_filter=flt)
    with client_for(svc) as c, caplog.at_level(logging.WARNING, logger="llmgan.filters"):
        r = post(c, "/v1/generate", {"n": 16, "seed": 2, "max_tokens": 8, "temperature": 1.5})
        out = r.json()
        comp = post(c, "/v1/completions", {"n": 16, "seed": 2, "max_tokens": 8, "temperature": 1.5}).json()
        stream = post(c, "/v1/completions", {"n": 2, "stream": True})
    assert r.status_code == 200, r.text
    texts = [s["text"] for s in out["samples"]]
    dropped = out["filtered"]["dropped"]
    assert dropped > 0 and len(texts) + dropped == 16 and out["filtered"]["by_reason"] == {"blocklist": dropped}
    assert not any("cat" in t.split() for t in texts)
    assert sum("filter dropped sample" in rec.getMessage() for rec in caplog.records) >= dropped
    assert [ch["text"] for ch in comp["choices"]] == texts and comp["filtered"] == out["filtered"]
    assert [ch["index"] for ch in comp["choices"]] == list(range(len(texts)))
    assert out["provenance"]["filter_config_sha256"] == "f" * 64 and out["provenance"]["filter"] == out["filtered"]
    assert stream.status_code == 400 and stream.json()["error"]["param"] == "stream"
    # the same seed without the filter: the kept samples are the unfiltered ones, unaltered
    plain = ModelService(serve_runs["gan"], "gan", calibration_n=40, limits=LIMITS)
    with client_for(plain) as c:
        every = [s["text"] for s in post(c, "/v1/generate", {"n": 16, "seed": 2, "max_tokens": 8,
                                                              "temperature": 1.5}).json()["samples"]]
    assert texts == [t for t in every if "cat" not in t.split()]


# ----------------------------------------------------------------------------------------- provenance
def test_provenance_matches_the_run_and_generates_sidecar(client, gan):
    r = post(client, "/v1/generate", {"model": "gan", "n": 2, "seed": 7, "max_tokens": 5, "temperature": 0.8})
    p = r.json()["provenance"]
    sidecar = provenance(gan.run, {}, 7)
    assert set(p) == set(sidecar) - {"run_dir"}  # the sidecar's fields, less the server's path
    assert p["checkpoint"] == os.path.basename(os.path.normpath(gan.run.checkpoint))
    assert p["checkpoint_sha256"] == checkpoint_hash(gan.run.checkpoint) and p["run_id"] == sidecar["run_id"]
    assert p["seed"] == 7 and p["llmgan_version"] == __version__ and p["watermark_key_id"] is None
    assert p["sampling"]["temperature"] == 0.8 and p["sampling"]["max_tokens"] == 5 and p["sampling"]["n"] == 2
    assert p["filter_config_sha256"] is None and p["filter"] is None
    comp = post(client, "/v1/completions", {"model": "gan", "n": 1, "max_tokens": 3}).json()
    assert comp["provenance"]["seed"] is None and comp["provenance"]["checkpoint_sha256"] == p["checkpoint_sha256"]
    root = os.path.dirname(gan.run_dir)
    assert root not in r.text and root not in json.dumps(comp)
    events = client.post("/v1/completions", json={"model": "gan", "n": 1, "max_tokens": 3, "stream": True}).text
    last = [json.loads(b[6:]) for b in events.split("\n\n") if b.startswith("data: {")][-1]
    assert last["choices"] == [] and last["provenance"]["checkpoint_sha256"] == p["checkpoint_sha256"]
