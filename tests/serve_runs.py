"""Tiny trained runs for the serve tests (session-scoped: trained once for all tests/test_serve*.py).

``gan``: an unconditional SeqGAN run with a discriminator (generation, score, detect);
``mle``: an unconditional MLE run with a latent code and no discriminator;
``cond``: a prompt -> response MLE run (conditional prompts; chat is tested on it with a stand-in template).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator

import pytest

from llmgan.config import config_from_dict
from llmgan.training.engine import Trainer

WORDS = [f"the {a} {n} runs" for a in ("red", "big", "old") for n in ("cat", "dog", "car", "man")]


def _train(cfg: dict, run_dir: str) -> str:
    Trainer(config_from_dict(cfg), run_dir).run()
    return run_dir


def build_runs(root: str) -> dict[str, str]:
    os.makedirs(root, exist_ok=True)
    train = os.path.join(root, "train.txt")
    with open(train, "w", encoding="utf-8") as f:
        f.write("\n".join(WORDS * 10) + "\n")
    pairs = os.path.join(root, "pairs.jsonl")
    with open(pairs, "w", encoding="utf-8") as f:
        for w in WORDS * 10:
            f.write(json.dumps({"prompt": w.split()[1], "response": w}) + "\n")
    small = {"epochs": 1, "batch_size": 16, "progress": False}
    runs = {
        "gan": _train({
            "data": {"train": train, "max_len": 8},
            "generator": {"kwargs": {"embed_dim": 8, "hidden_dim": 8}},
            "discriminator": {"name": "cnn", "kwargs": {"filter_sizes": [2, 3], "num_filters": [4, 4]}},
            "train": small,
            "adversarial": {"algorithm": "seqgan", "rounds": 1, "d_pretrain_steps": 1, "d_steps": 1, "d_epochs": 1,
                            "d_samples": 32, "g_batch_size": 8, "params": {"rollouts": 2}},
            "eval": {"n_samples": 20},
        }, os.path.join(root, "gan")),
        "mle": _train({
            "data": {"train": train, "max_len": 8},
            "generator": {"kwargs": {"embed_dim": 8, "hidden_dim": 8, "latent_dim": 3}},
            "train": small, "eval": {"n_samples": 20},
        }, os.path.join(root, "mle")),
        "cond": _train({
            "data": {"train": pairs, "prompt_field": "prompt", "response_field": "response", "tokenizer": "word",
                     "max_len": 8, "max_prompt_len": 4},
            "generator": {"kwargs": {"embed_dim": 8, "hidden_dim": 8}},
            "train": small, "eval": {"n_samples": 8},
        }, os.path.join(root, "cond")),
    }
    return runs


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory) -> dict[str, str]:
    return build_runs(str(tmp_path_factory.mktemp("serve_runs")))


@contextlib.contextmanager
def running_server(registry, settings, **server_kwargs) -> Iterator[int]:
    """The real HTTP server (uvicorn on a free 127.0.0.1 port, in a daemon thread) until the block ends;
    yields its port. Startup failing within 5 s fails the test rather than hanging it."""
    from llmgan.serve.app import create_asgi
    from llmgan.serve.server import bind, make_server

    sock = bind("127.0.0.1", 0)
    server = make_server(create_asgi(registry, settings), log_level="warning", **server_kwargs)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started, "the test server did not start within 5 s"
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
