"""Coral Edge TPU attached to this machine: a compiled model runs on the TPU within the
reference limits, with device-side accuracy equal to the CPU run of the uncompiled model.

Run: EDGECNN_CORAL=1 [EDGECNN_CORAL_TARGET=coral:usb] .venv/bin/python -m pytest device_tests/test_coral.py
"""

from __future__ import annotations

import pytest
from device_checks import check_against_reference, model_or_skip, reference_rows, samples_for

from edgecnn.runtime.runner import EDGETPU_CUSTOM_OP
from edgecnn.tflite.reader import inspect_tflite

ROWS = reference_rows("coral_usb.csv")


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_coral_meets_the_reference(row, coral_target, tmp_path_factory):
    from edgecnn.bench.harness import run_benchmark

    model = model_or_skip(row)
    source = model.with_name(model.name.replace("_edgetpu", ""))
    samples = samples_for(source if source.is_file() else model, tmp_path_factory.mktemp("samples"))
    result = run_benchmark(model, coral_target, threads=row.threads, runs=200, warmup=20, timeout_s=300,
                           inputs_npz=samples)
    cpu_accuracy = None
    if source.is_file():
        cpu = run_benchmark(source, "local", threads=1, runs=5, warmup=1, timeout_s=300, inputs_npz=samples)
        assert cpu["status"] == "ok" and cpu["accuracy"] is not None, cpu["reason"]
        cpu_accuracy = cpu["accuracy"]
    check_against_reference(result, row, inputs=samples)
    assert result["delegate"] and result["delegate"].startswith("edgetpu:")
    # The delegate took the nodes (as the Android check asks of benchmark_model): the
    # compiled file's work sits in edgetpu-custom-op nodes, which no CPU kernel can run,
    # so a run that returned outputs for every sample ran them on the Edge TPU delegate.
    summary = inspect_tflite(model)
    assert summary.op_counts.get(EDGETPU_CUSTOM_OP, 0) >= 1, summary.op_counts
    assert result["samples"] > 0 and result["outputs_sha256"], result
    if cpu_accuracy is not None:
        # The Edge TPU's int8 arithmetic may round differently from the CPU's kernels.
        assert abs(result["accuracy"] - cpu_accuracy) <= 0.01, (result["accuracy"], cpu_accuracy)


def test_coral_target_runs_an_uncompiled_model(coral_target, tmp_path_factory):
    """An uncompiled model on the Edge TPU target still runs, on the CPU through the delegate
    (which takes no node of it), so its outputs are exactly those of the plain CPU run."""
    from edgecnn.bench.harness import run_benchmark

    model = model_or_skip(reference_rows("pi4.csv")[0])
    samples = samples_for(model, tmp_path_factory.mktemp("samples"))
    result = run_benchmark(model, coral_target, runs=5, warmup=1, timeout_s=300, inputs_npz=samples)
    assert result["status"] == "ok", result["reason"]
    assert result["delegate"] and result["delegate"].startswith("edgetpu:")
    cpu = run_benchmark(model, "local", runs=5, warmup=1, timeout_s=300, inputs_npz=samples)
    assert cpu["status"] == "ok", cpu["reason"]
    assert result["samples"] == cpu["samples"] > 0
    assert result["outputs_sha256"] == cpu["outputs_sha256"] and result["accuracy"] == cpu["accuracy"]
