"""`edgecnn bench` and `edgecnn verify` over SSH on real runtimes of other builds and CPUs,
on this machine: an emulated arm64 Raspberry Pi and an x86 "old Pi" software set-up.

Devices (each skips, saying how to start it, unless configured):

* ``arm64-ai-edge-litert-2.3`` and ``arm64-tflite-runtime-2.14``: Debian bookworm arm64
  under qemu-user with the real aarch64 wheels, its own aarch64 sshd on 127.0.0.1
  (``sudo bash tools/emulated_pi.sh build && sudo bash tools/emulated_pi.sh start``);
* ``x86-tflite-runtime-2.14``: a venv with tflite-runtime 2.14 and numpy<2 behind a
  loopback sshd (``bash tools/tflite_runtime_x86.sh build && bash tools/tflite_runtime_x86.sh start``).

Nothing here is faked: the runtimes are the published wheels executing their own
kernels (under qemu for arm64, so latency is meaningless and never checked; the
arithmetic is real). The bundle is the quickstart's (``bash tools/dev.sh quickstart``)
or ``$EDGECNN_BUNDLE``.

What it proves: bench reports the device's CPU and runtime; verify passes on every model
of the bundle on each runtime; it fails on a tampered model, by the hash check first, and,
when the tampering is hidden by consistent hashes, by the output comparison itself; and
the outputs, measured apart from edgecnn's runner, stay within verify's tolerance.

Run: .venv/bin/python -m pytest -s device_tests/test_emulated_pi.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from device_checks import (
    REPO,
    SSH_DEVICE_NAMES,
    copy_bundle,
    flip_weight_bytes,
    permute_classifier_rows,
    quickstart_bundle_or_skip,
    raw_difference,
    rehash_bundle,
    run_raw_outputs,
    ssh_device_or_skip,
)

EDGECNN = [sys.executable, "-c", "from edgecnn.cli import main; main()"]
# qemu-user runs the arm64 interpreter ~10-50x slower than the real board: generous limits.
TIMEOUT_S = 1800


@pytest.fixture(scope="module", params=SSH_DEVICE_NAMES)
def device(request):
    return ssh_device_or_skip(request.param)


@pytest.fixture(scope="module")
def bundle() -> Path:
    return quickstart_bundle_or_skip()


def _edgecnn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGECNN, *args], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO)


def _verify(bundle: Path, device) -> tuple[subprocess.CompletedProcess, dict | None]:
    proc = _edgecnn("verify", str(bundle), *device.cli_args(), "--timeout", str(TIMEOUT_S), "--json")
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    return proc, report


def _models(bundle: Path) -> list[dict]:
    return json.loads((bundle / "bundle.json").read_text())["models"]


def _int8_model(bundle: Path) -> str:
    names = [m["file"] for m in _models(bundle) if "int8" in m["file"]]
    assert names, f"{bundle} has no int8 model"
    return names[0]


def _summary(device, check: dict) -> str:
    keys = ("ok", "bit_exact", "differing", "samples", "max_steps", "tolerance_steps", "tolerance_steps_max",
            "softmax_gain", "max_abs_diff", "tolerance",
            "top1_agreement", "runtime", "machine", "golden_runtime", "golden_machine")
    return f"{device.name} {check.get('file')}: " + ", ".join(f"{k}={check.get(k)}" for k in keys)


def test_bench_reports_the_device_cpu_and_runtime(device, bundle):
    model = bundle / _int8_model(bundle)
    proc = _edgecnn("bench", str(model), *device.cli_args(), "--runs", "3", "--warmup", "1",
                    "--timeout", str(TIMEOUT_S), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    result = result[0] if isinstance(result, list) else result
    assert result["status"] == "ok", result.get("reason")
    print(f"\n{device.name} bench: machine={result['host']['machine']} runtime={result['runtime']} "
          f"python={result['host'].get('python')}")
    assert result["host"]["machine"] == device.machine
    assert result["runtime"]["name"] == device.runtime
    assert str(result["runtime"]["version"]).startswith(device.version_prefix), result["runtime"]


def test_verify_passes_for_every_model_of_the_bundle(device, bundle):
    proc, report = _verify(bundle, device)
    assert report is not None, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    checks = {m["file"]: m for m in report["models"]}
    for check in checks.values():
        print("\n" + _summary(device, check))
    assert sorted(checks) == sorted(m["file"] for m in _models(bundle))
    failed = {f: c.get("reason") for f, c in checks.items() if not c["ok"]}
    assert not failed, failed
    assert proc.returncode == 0, proc.stderr[-2000:]
    for check in checks.values():
        assert check["machine"] == device.machine
        assert check["runtime"].startswith(f"{device.runtime} {device.version_prefix}"), check["runtime"]
        assert check["top1_agreement"] >= check["min_top1"]
        # "bit-exact" is said only when it is.
        assert check["bit_exact"] == (check["differing"] == 0 and check["max_abs_diff"] == 0), check


def test_verify_refuses_flipped_weight_bytes_by_their_hash(device, bundle, tmp_path):
    tampered = copy_bundle(bundle, tmp_path / "bundle")
    model = _int8_model(bundle)
    flip_weight_bytes(tampered / model)
    proc, _ = _verify(tampered, device)
    assert proc.returncode == 4, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and model in lines[0] and "sha256 mismatch" in lines[0], proc.stderr


@pytest.mark.parametrize("tamper", [flip_weight_bytes, permute_classifier_rows], ids=["flipped-weights",
                                                                                     "other-model"])
def test_verify_output_comparison_catches_a_model_with_consistent_hashes(device, bundle, tmp_path, tamper):
    """bundle.json is rewritten to match the tampered file, so only the outputs can tell.

    ``other-model`` rotates the classifier's rows: a valid model of the same shape that
    computes something else, as a model from another build would.
    """
    tampered = copy_bundle(bundle, tmp_path / "bundle")
    model = _int8_model(bundle)
    tamper(tampered / model)
    rehash_bundle(tampered)
    proc, report = _verify(tampered, device)
    assert report is not None, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    checks = {m["file"]: m for m in report["models"]}
    print("\n" + _summary(device, checks[model]) + f"\n  reason: {checks[model].get('reason')}")
    assert proc.returncode == 5, (proc.returncode, proc.stderr[-2000:])
    assert not checks[model]["ok"] and checks[model]["reason"]
    assert checks[model]["machine"] == device.machine  # it ran there and the comparison failed
    assert all(c["ok"] for f, c in checks.items() if f != model), checks


def test_raw_outputs_stay_within_the_verify_tolerance(device, bundle):
    """The golden inputs run with plain Interpreter calls on the device (not edgecnn's
    runner), compared with the golden outputs here: the figures verify's tolerance rests on."""
    from edgecnn.bench.verify import compare_outputs
    from edgecnn.bundle_layout import MIN_TOP1_AGREEMENT, float_tolerance
    from edgecnn.tflite.reader import inspect_tflite, softmax_output_gain

    for entry in _models(bundle):
        model, golden_file = bundle / entry["file"], bundle / entry["golden"]
        measured = run_raw_outputs(device, model, golden_file, timeout_s=TIMEOUT_S)
        with np.load(golden_file) as npz:
            golden = npz["outputs"]
        summary = inspect_tflite(model)
        out = summary.outputs[0]
        device_out = np.array(measured["outputs"]).reshape(golden.shape)
        diff = raw_difference(golden, device_out, out.scale)
        print(f"\n{device.name} {entry['file']} raw ({measured['runtime']} {measured['version']}, "
              f"{measured['machine']}, numpy {measured['numpy']}, {summary.operator_count} operators): {diff}")
        assert measured["machine"] == device.machine and measured["runtime"] == device.runtime
        assert diff["top1_agreement"] >= MIN_TOP1_AGREEMENT
        if golden.dtype.kind in "iu":  # verify's rule: the flat tolerance, widened where the softmax is steep
            rule = compare_outputs(golden, device_out, scale=out.scale, zero_point=out.zero_point,
                                   operators=summary.operator_count, softmax_gain=softmax_output_gain(model))
            print(f"  verify's rule: ok={rule.ok}, tolerance {rule.tolerance_steps} steps, "
                  f"up to {rule.tolerance_steps_max} where the softmax is steep")
            assert rule.ok, rule.reason
        else:
            assert diff["max_abs"] <= float_tolerance(summary.operator_count, golden), diff
