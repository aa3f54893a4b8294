"""Shared fixtures: tiny models built from configs (no downloads), an isolated cache dir."""

from __future__ import annotations

import signal

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


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_delivered():
    """Ctrl-C tests need SIGINT: a shell starts background jobs (`make test &`) with it ignored,
    and Python then never raises KeyboardInterrupt, here or in the commands the tests start."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture
def model() -> LLaDAModelLM:
    return small_model()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()
