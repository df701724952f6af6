"""Session fixtures shared by several test modules (one tiny model build per test run)."""

from __future__ import annotations

import pytest
from helpers import build_bench_models


@pytest.fixture(scope="session")
def bench_models(tmp_path_factory):
    """The tiny int8 benchmark model, its Edge TPU-op copy and labelled samples (see helpers)."""
    return build_bench_models(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module", autouse=True)
def _module_stage_cache(tmp_path_factory):
    """Module-scoped fixtures that build get a shared stage cache of their module, never ~/.cache/edgecnn."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGECNN_CACHE", str(tmp_path_factory.mktemp("edgecnn-cache-module")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _stage_cache(tmp_path_factory, monkeypatch):
    """Each test gets an empty shared stage cache, so no test restores another test's stages."""
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path_factory.mktemp("edgecnn-cache")))
