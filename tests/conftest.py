"""Test set-up. Without a GPU, Triton kernels run in Triton's interpreter, which must be switched on
before ``triton`` is first imported (it is read when ``@triton.jit`` decorates)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
