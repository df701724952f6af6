"""Android phone over adb with TFLite benchmark_model: latency within the reference limits.

Run: EDGECNN_ANDROID_SERIAL=R58M123ABC [EDGECNN_BENCHMARK_MODEL=~/Downloads/android_aarch64_benchmark_model] \\
     [EDGECNN_ANDROID_DELEGATES=xnnpack,gpu] .venv/bin/python -m pytest device_tests/test_android.py

EDGECNN_ANDROID_DELEGATES lists the delegates this phone must run (default: xnnpack).
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from device_checks import check_against_reference, model_or_skip, reference_rows

ROWS = reference_rows("android.csv")


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_android_meets_the_reference(row, android_target, android_adb):
    from edgecnn.bench.harness import run_benchmark

    model = model_or_skip(row)
    result = run_benchmark(model, android_target, threads=row.threads, runs=100, warmup=10, timeout_s=600,
                           adb=android_adb)
    check_against_reference(result, row)
    assert result["host"]["system"].startswith("Android") and result["runtime"]["name"] == "benchmark_model"


# The name benchmark_model prints in "Replacing N out of M node(s) with delegate (NAME)".
_DELEGATE_NAMES = {"xnnpack": "xnnpack", "gpu": "gpu", "nnapi": "nnapi"}


def _required_delegates() -> set[str]:
    """Delegates this phone must run: EDGECNN_ANDROID_DELEGATES (default xnnpack, which every
    benchmark_model build has); GPU and NNAPI support differ per phone."""
    text = os.environ.get("EDGECNN_ANDROID_DELEGATES", "xnnpack")
    return {d.strip() for d in text.split(",") if d.strip()}


@pytest.mark.parametrize("delegate", sorted(_DELEGATE_NAMES))
def test_android_delegates_run_or_fail_in_one_line(delegate, android_target, android_adb):
    """A delegate this phone must run measures with the delegate really applied; any other
    either does the same or fails with a one-line reason and no figures."""
    from edgecnn.bench.harness import run_benchmark
    from edgecnn.bench.schema import validate_result

    model = model_or_skip(ROWS[0])
    result = validate_result(run_benchmark(model, android_target, threads=1, runs=20, warmup=2, timeout_s=600,
                                           adb=replace(android_adb, delegate=delegate)))
    assert result["delegate"] == delegate
    if delegate in _required_delegates() or result["status"] == "ok":
        assert result["status"] == "ok", f"{delegate}: {result['reason']}"
        assert result["runs"] == 20 and result["latency_ms"]["mean"] > 0
        # benchmark_model falls back to the CPU for nodes a delegate refuses: the delegate
        # must have taken some, or this is a CPU figure labelled with a delegate's name.
        taken = [d for d in result["details"].get("delegated", [])
                 if _DELEGATE_NAMES[delegate] in d["delegate"].lower() and d["nodes"] > 0]
        assert taken, f"{delegate} took no node: {result['details'].get('delegated')}"
    else:
        reason = result["reason"]
        assert reason and "\n" not in reason and "Traceback" not in reason, reason
        assert result["latency_ms"] is None
