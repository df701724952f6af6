"""Android phone over adb with TFLite benchmark_model: latency within the reference limits.

Run: EDGECNN_ANDROID_SERIAL=R58M123ABC [EDGECNN_BENCHMARK_MODEL=~/Downloads/android_aarch64_benchmark_model] \\
     .venv/bin/python -m pytest device_tests/test_android.py
"""

from __future__ import annotations

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


@pytest.mark.parametrize("delegate", ["xnnpack", "gpu", "nnapi"])
def test_android_delegates_run_or_fail_in_one_line(delegate, android_target, android_adb):
    """GPU and NNAPI support differ per phone: each either measures or says why in one line."""
    from edgecnn.bench.harness import run_benchmark

    model = model_or_skip(ROWS[0])
    result = run_benchmark(model, android_target, threads=1, runs=20, warmup=2, timeout_s=600,
                           adb=replace(android_adb, delegate=delegate))
    assert result["status"] == "ok" or (result["reason"] and "\n" not in result["reason"])
