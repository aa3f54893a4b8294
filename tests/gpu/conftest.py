"""The GPU tier fails without CUDA rather than skipping every test and exiting 0.

`pytest -m gpu tests/gpu` on a machine whose torch sees no CUDA device is a broken GPU
run, not a green one. The default CPU run (`-m 'not gpu'`) deselects these tests before
any fixture runs, so it is unaffected.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _cuda_device():
    if not torch.cuda.is_available():
        pytest.fail(
            f"tests/gpu need a CUDA device, and torch {torch.__version__} (CUDA build: "
            f"{torch.version.cuda}) sees none",
            pytrace=False,
        )
