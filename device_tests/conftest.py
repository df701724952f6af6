"""Device configuration from environment variables; every fixture skips with the variable to set.

    EDGECNN_PI_HOST          ssh://user@host[:port] of a Raspberry Pi (or any Linux board)
    EDGECNN_PI_PYTHON        its Python with ai-edge-litert or tflite-runtime (default python3)
    EDGECNN_PI_IDENTITY      optional private key file
    EDGECNN_PI_KNOWN_HOSTS   optional known-hosts file (host keys are always checked)
    EDGECNN_CORAL            1 when an Edge TPU is attached to this machine
    EDGECNN_CORAL_TARGET     optional target text (default coral; e.g. coral:usb, coral:pci)
    EDGECNN_ANDROID_SERIAL   serial of the phone ('adb devices')
    EDGECNN_BENCHMARK_MODEL  optional benchmark_model binary for the phone (else
                             /data/local/tmp/benchmark_model on it)
    EDGECNN_DEVICE_RESULTS   optional .jsonl every result is appended to
    EDGECNN_BUNDLE           bundle for the verify tests (default runs/quickstart/bundle)

The SSH "devices" on this machine (test_emulated_pi.py) are configured by the device.env
that ``tools/emulated_pi.sh start`` and ``tools/tflite_runtime_x86.sh start`` write, or by
EDGECNN_EMULATED_PI_{HOST,IDENTITY,KNOWN_HOSTS,LITERT_PYTHON,TFLITE_PYTHON} and
EDGECNN_X86_TFLITE_{HOST,IDENTITY,KNOWN_HOSTS,PYTHON} (see device_checks.ssh_device_or_skip).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from device_checks import env_or_skip


@pytest.fixture(scope="session")
def pi_target() -> str:
    from edgecnn.targets import parse_target

    target = env_or_skip("EDGECNN_PI_HOST", "Raspberry Pi")
    parse_target(target)  # a typo fails here, with the valid forms
    return target


@pytest.fixture(scope="session")
def pi_ssh():
    from edgecnn.bench.ssh import SshOptions

    identity = os.environ.get("EDGECNN_PI_IDENTITY")
    known_hosts = os.environ.get("EDGECNN_PI_KNOWN_HOSTS")
    return SshOptions(remote_python=os.environ.get("EDGECNN_PI_PYTHON", "python3"),
                      identity=Path(identity) if identity else None,
                      known_hosts=Path(known_hosts) if known_hosts else None)


@pytest.fixture(scope="session")
def coral_target() -> str:
    if os.environ.get("EDGECNN_CORAL", "").strip() != "1":
        pytest.skip("Coral Edge TPU not configured: set EDGECNN_CORAL=1 (see device_tests/README.md)")
    return os.environ.get("EDGECNN_CORAL_TARGET", "coral")


@pytest.fixture(scope="session")
def android_target() -> str:
    return "android:" + env_or_skip("EDGECNN_ANDROID_SERIAL", "Android device")


@pytest.fixture(scope="session")
def android_adb():
    from edgecnn.bench.adb import AdbOptions

    binary = os.environ.get("EDGECNN_BENCHMARK_MODEL")
    return AdbOptions(benchmark_binary=Path(binary) if binary else None, delegate="none")
