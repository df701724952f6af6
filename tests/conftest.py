"""Session fixtures shared by several test modules (one tiny model build per test run)."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
from helpers import build_bench_models


@pytest.fixture(scope="session")
def bench_models(tmp_path_factory):
    """The tiny int8 benchmark model, its Edge TPU-op copy and labelled samples (see helpers)."""
    return build_bench_models(tmp_path_factory.mktemp("bench"))


@pytest.fixture
def http_dir():
    """Start a local HTTP server for a folder; yields ``serve(folder) -> base_url``."""
    servers = []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            return None

    def serve(folder: Path) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


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


# In CI (CI set, as .ci/run does) a skipped test is a failure: every program and file the
# tests need is installed by the README's set-up (tools/dev.sh), so a skip there means a
# set-up step broke, and a green run would hide it. Locally a skip stays a skip, with its reason.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and not item.get_closest_marker("xfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped in CI, where the README's set-up (bash tools/dev.sh test) must provide "
                           f"everything: {reason}")
