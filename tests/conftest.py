"""Shared fixtures: tiny models built from configs (no downloads), an isolated cache dir."""

from __future__ import annotations

import pytest

from dultra.model import LLaDAModelLM
from dultra.model.tokenizer import build_tiny_tokenizer
from tests.helpers import small_model


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Tests never read or write the user's ~/.cache/dultra."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DULTRA_CACHE", str(tmp_path_factory.mktemp("dultra-cache")))
    yield
    mp.undo()


@pytest.fixture
def model() -> LLaDAModelLM:
    return small_model()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()
