"""schemathesis against the app's own OpenAPI document: generated requests to every operation, a
bounded number of examples each, and never a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install schemathesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from llmgan.serve.app import Settings, create_asgi  # noqa: E402
from llmgan.serve.service import Limits, Registry  # noqa: E402
from serve_runs import serve_runs  # noqa: E402,F401 - the session fixture


@pytest.fixture(scope="module")
def app(serve_runs):  # noqa: F811
    # one model: a generated request that leaves out "model" reaches it, so sampling and scoring run
    registry = Registry.load([serve_runs["gan"]], calibration_n=40,
                             limits=Limits(max_n=4, max_tokens=8, max_texts=4, timeout_s=10))
    return create_asgi(registry, Settings(max_concurrent=64))


def test_no_server_errors(app):
    # driven here rather than with schemathesis' pytest plugin: the schema needs the trained runs of a
    # fixture, and the plugin's lazy fixture loader does not work with this pytest
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 9
    seen: dict[str, set[int]] = {}

    def checker(op):
        @given(op.as_strategy())
        @settings(max_examples=5, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call_and_validate(checks=[not_a_server_error])
            seen.setdefault(op.label, set()).add(response.status_code)

        return check

    for op in operations:
        checker(op)()
    assert all(code < 500 for codes in seen.values() for code in codes), seen
    assert len(seen) == len(operations) and "GET /health" in seen
    assert sum(200 in codes for label, codes in seen.items() if label.startswith("POST")) >= 2, seen
