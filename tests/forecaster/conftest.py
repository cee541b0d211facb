"""Fixtures for the forecaster tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """``main()`` sets torch's intra-op thread count (``--cpu_threads``); leave the test process as
    it was for the next test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
