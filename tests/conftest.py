"""Session fixtures shared by several test modules (one tiny model build per test run)."""

from __future__ import annotations

import pytest
from helpers import build_bench_models


@pytest.fixture(scope="session")
def bench_models(tmp_path_factory):
    """The tiny int8 benchmark model, its Edge TPU-op copy and labelled samples (see helpers)."""
    return build_bench_models(tmp_path_factory.mktemp("bench"))
