"""Raspberry Pi (or any Linux board) over SSH: latency within the reference limits, and
device-side accuracy equal to this host's on the same test images, and ``verify`` of the
quickstart bundle (``runs/quickstart/bundle`` or ``$EDGECNN_BUNDLE``) passing on the board.

Run: EDGECNN_PI_HOST=ssh://pi@raspberrypi.local EDGECNN_PI_PYTHON=~/venv/bin/python \\
     .venv/bin/python -m pytest device_tests/test_pi.py
"""

from __future__ import annotations

import pytest
from device_checks import check_against_reference, host_accuracy, model_or_skip, reference_rows, samples_for

ROWS = reference_rows("pi4.csv")


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_pi_meets_the_reference(row, pi_target, pi_ssh, tmp_path_factory):
    from edgecnn.bench.harness import run_benchmark

    model = model_or_skip(row)
    samples = samples_for(model, tmp_path_factory.mktemp("samples"))
    result = run_benchmark(model, pi_target, threads=row.threads, runs=200, warmup=20, timeout_s=600,
                           inputs_npz=samples, ssh=pi_ssh)
    check_against_reference(result, row, host_accuracy(model, samples), inputs=samples)
    # Copy and start-up are reported apart from latency.
    assert result["transfer_s"] is not None and result["startup_s"] is not None


def test_pi_wrong_python_is_one_clear_line(pi_target, pi_ssh):
    from dataclasses import replace

    from edgecnn.bench.harness import run_benchmark

    model = model_or_skip(ROWS[0])
    result = run_benchmark(model, pi_target, runs=5, ssh=replace(pi_ssh, remote_python="/nonexistent/python3"))
    assert result["status"] == "failed" and "--remote-python" in result["reason"]


def test_pi_verify_passes_for_every_model_of_the_bundle(pi_target, pi_ssh):
    """The quickstart bundle's golden outputs, run on the board: within verify's tolerance
    (another CPU and runtime build round some values a few steps apart), top-1 agreeing."""
    from device_checks import quickstart_bundle_or_skip

    from edgecnn.bench.verify import verify_bundle

    bundle = quickstart_bundle_or_skip()
    report = verify_bundle(bundle, target=pi_target, timeout_s=600, ssh=pi_ssh)
    failed = {m.file: m.reason for m in report.models if not m.ok}
    assert report.models and not failed, failed
    for m in report.models:
        assert m.machine and m.runtime, m  # it ran on the board and said on what
        assert m.top1_agreement >= m.min_top1
