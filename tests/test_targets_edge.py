"""Parse at the edge, pass types inward: one ``--target`` string is parsed exactly once.

``edgecnn.targets.parse_target`` is wrapped with a counter in every edgecnn module that
holds it (so a lazy ``from edgecnn.targets import parse_target`` inside a function is
counted too); then the real ``edgecnn verify`` / ``edgecnn bench`` run through click's
``CliRunner``, and ``run_benchmark`` runs from Python, each on a tiny model with the real
runner subprocess and the real TFLite runtime. Below the entry points the transports take
a parsed :class:`~edgecnn.targets.Target` only and refuse text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import tiny_bundle

from edgecnn.bench.adb import run_adb
from edgecnn.bench.harness import check_benchmark, run_benchmark
from edgecnn.bench.local import run_local
from edgecnn.bench.ssh import run_ssh
from edgecnn.cli import main
from edgecnn.targets import Target, parse_target


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """Every text ``parse_target`` is called with from now on, in order."""
    import edgecnn.bench.harness  # noqa: F401  (the modules below must be loaded to be patched)
    import edgecnn.bench.verify  # noqa: F401
    import edgecnn.cli  # noqa: F401

    original = edgecnn.targets.parse_target
    calls: list[str] = []

    def counting(text):
        calls.append(text)
        return original(text)

    holders = [m for name, m in sorted(sys.modules.items())
               if (name == "edgecnn" or name.startswith("edgecnn.")) and getattr(m, "parse_target", None) is original]
    assert edgecnn.targets in holders and sys.modules["edgecnn.cli"] in holders
    for module in holders:
        monkeypatch.setattr(module, "parse_target", counting)
    return calls


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory) -> Path:
    """A bundle of one tiny int8 classifier with 4 golden samples (no data set needed)."""
    return tiny_bundle(tmp_path_factory.mktemp("edge"), ("int8",), samples=4, seed=5)


def test_verify_cli_parses_the_target_once(small_bundle, parses):
    result = CliRunner().invoke(main, ["verify", str(small_bundle), "--target", "local", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # It really ran: the runner's outputs were compared with the golden ones on this machine.
    assert report["ok"] and [m["target"] for m in report["models"]] == ["local"]
    assert report["models"][0]["bit_exact"] and report["models"][0]["samples"] == 4
    assert parses == ["local"]


def test_bench_cli_parses_each_target_once(bench_models, parses):
    result = CliRunner().invoke(main, ["bench", str(bench_models["int8"]), "--target", "local", "--target", "local",
                                       "--runs", "2", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert [r["status"] for r in results] == ["ok", "ok"] and all(r["runs"] == 2 for r in results)
    assert parses == ["local", "local"]


def test_run_benchmark_parses_text_once_and_a_target_never(bench_models, parses):
    r = run_benchmark(bench_models["int8"], "local", runs=2, warmup=0, timeout_s=60)
    assert r["status"] == "ok" and r["target"] == "local"
    assert parses == ["local"]
    target = Target("local", "local")  # built without the parser
    r = run_benchmark(bench_models["int8"], target, runs=2, warmup=0, timeout_s=60)
    assert r["status"] == "ok"
    assert parses == ["local"]


def test_a_bad_target_fails_at_the_edge_before_the_bundle_is_opened(tmp_path, parses):
    # The bundle folder does not exist: the target is what the command complains about.
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "nobundle"), "--target", "corl"])
    assert result.exit_code == 5, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Invalid value for '--target'" in lines[0] and "did you mean 'coral'?" in lines[0]
    assert parses == ["corl"]


@pytest.mark.parametrize("call", [
    lambda model: run_local(model, "local"),
    lambda model: run_ssh(model, "ssh://pi@raspberrypi.invalid"),
    lambda model: run_adb(model, "android"),
    lambda model: check_benchmark(model, "local"),
], ids=["run_local", "run_ssh", "run_adb", "check_benchmark"])
def test_inner_functions_take_a_parsed_target_only(bench_models, parses, call):
    with pytest.raises(TypeError) as info:
        call(bench_models["int8"])
    message = str(info.value)
    assert "takes a Target, not str" in message and "parse_target" in message
    assert parses == []  # refused, not parsed
    # The same call with a parsed target is accepted (check_benchmark checks and returns).
    assert check_benchmark(bench_models["int8"], parse_target("local")) is None
