"""Fuzzing the HTTP API (issue 15, item 6): whatever a client sends, the server answers with a 2xx or
a 4xx carrying one-line JSON error, never a 5xx (an unhandled exception).

tests/test_serve_schema.py drives schemathesis with requests that FOLLOW the app's OpenAPI document
(every operation, positive mode). This file adds what that run does not send:

* schemathesis in negative mode: requests that violate the document (wrong types, missing fields,
  out-of-range values) for every operation;
* hypothesis-made bodies that no schema describes: any bytes, any JSON value, and objects mixing the
  API's real field names with extreme values (huge or negative integers, NaN and infinities,
  nested lists, long Unicode), under several content types.

Example counts are bounded (derandomized) so the file runs in seconds in ``make test``.
"""

from __future__ import annotations

import json
import os

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install schemathesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from llmgan.serve.app import Settings, create_asgi  # noqa: E402
from llmgan.serve.service import Limits, Registry  # noqa: E402
from serve_runs import serve_runs  # noqa: E402,F401 - the session fixture

EXAMPLES = int(os.environ.get("LLMGAN_HTTP_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
POSTS = ["/v1/completions", "/v1/chat/completions", "/v1/generate", "/v1/score", "/v1/detect"]
# the request fields of the API (llmgan.serve.schemas), so that fuzzed objects reach the validators
FIELDS = ["model", "prompt", "n", "max_tokens", "max_len", "temperature", "top_p", "top_k", "seed", "texts",
          "messages", "stop", "stream", "logprobs", "ban", "watermark", "user", "role", "content", "text"]


@pytest.fixture(scope="module")
def app(serve_runs):  # noqa: F811
    # the gan run: sampling, scoring and detection all reach a model (it has a discriminator)
    registry = Registry.load([serve_runs["gan"]], calibration_n=40,
                             limits=Limits(max_n=4, max_tokens=8, max_texts=4, timeout_s=10))
    return create_asgi(registry, Settings(max_concurrent=64))


@pytest.fixture(scope="module")
def client(app):
    # server exceptions become responses (a 500 is what the assertions look for), not test errors
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def assert_no_server_error(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        message = body["error"]["message"]
        assert isinstance(message, str) and message and "\n" not in message, body
        assert "Traceback" not in response.text


def test_schemathesis_negative_mode_finds_no_server_error(app):
    """Request bodies that break the OpenAPI document, for every POST operation: 4xx, never 5xx. (The
    GET operations have nothing to break but a model id, fuzzed below; schemathesis would spend its
    time proving that.)"""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [r.ok() for r in schema.get_all_operations()]
    posts = [op for op in operations if op.label.startswith("POST ")]
    assert sorted(op.label[5:] for op in posts) == sorted(POSTS)
    seen: dict[str, set[int]] = {}

    def checker(op):
        @given(case=op.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @settings(max_examples=min(EXAMPLES, 5), deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call()
            assert_no_server_error(response)
            seen.setdefault(op.label, set()).add(response.status_code)

        return check

    for op in posts:
        checker(op)()
    assert len(seen) == len(posts) and all(any(c >= 400 for c in codes) for codes in seen.values()), seen


json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", " ", "\u0000", "\ud7ff" * 3, "x" * 5000, "gan", "the red cat", "user", "assistant"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)), max_leaves=12)
api_objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)


@FUZZ
@given(path=st.sampled_from(POSTS), body=st.binary(max_size=300),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", None]))
def test_any_bytes_posted_to_any_endpoint_get_a_4xx_not_a_5xx(client, path, body, content_type):
    headers = {"content-type": content_type} if content_type else {}
    assert_no_server_error(client.post(path, content=body, headers=headers))


@FUZZ
@given(path=st.sampled_from(POSTS), value=json_values)
def test_any_json_value_posted_gets_a_4xx_not_a_5xx(client, path, value):
    body = json.dumps(value, allow_nan=True)  # NaN/Infinity as Python writes them: not strict JSON
    assert_no_server_error(client.post(path, content=body, headers={"content-type": "application/json"}))


@FUZZ
@given(path=st.sampled_from(POSTS), obj=api_objects)
def test_objects_with_real_field_names_and_extreme_values_get_no_5xx(client, path, obj):
    body = json.dumps(obj, allow_nan=True)
    assert_no_server_error(client.post(path, content=body, headers={"content-type": "application/json"}))


@FUZZ
@given(model_id=st.text(max_size=30), suffix=st.sampled_from(["", "/metrics"]))
def test_any_model_id_in_the_path_gets_no_5xx(client, model_id, suffix):
    from urllib.parse import quote

    assert_no_server_error(client.get(f"/v1/models/{quote(model_id, safe='')}{suffix}"))
