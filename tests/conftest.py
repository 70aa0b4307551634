"""Shared test setup: one torch thread (the CI machine has 2 cores and tests may run beside other work)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture
def shared_data():
    """Path of ../shared/data; skips the test cleanly when it is absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip("../shared/data is absent")
    return os.path.abspath(SHARED_DATA)
