"""Android transport: the real ``adb`` with no phone attached, pure pieces, and one happy path
through a fake ``adb``.

The real-adb tests start their own adb server on a private port
(``ANDROID_ADB_SERVER_PORT``), so a developer's running server and phone are never
touched, and kill it afterwards with ``adb kill-server``. Without the ``adb`` binary
they skip with the reason (``bash tools/dev.sh test`` installs Debian's ``adb``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_failed_result, assert_raised_error, free_port

from edgecnn.bench.adb import (
    DEVICE_BENCHMARK_MODEL,
    AdbOptions,
    benchmark_model_command,
    choose_serial,
    parse_adb_devices,
    run_adb,
)
from edgecnn.bench.harness import run_benchmark
from edgecnn.bench.schema import validate_result
from edgecnn.errors import DeviceError
from edgecnn.targets import parse_target

ADB = shutil.which("adb")


@pytest.fixture
def real_adb(monkeypatch):
    """The real adb on a private server port; the server is killed afterwards."""
    if ADB is None:
        pytest.skip("adb is not installed; 'bash tools/dev.sh test' installs it (or apt-get install adb)")
    port = str(free_port())
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", port)
    env = {**os.environ, "ANDROID_ADB_SERVER_PORT": port}
    started = subprocess.run([ADB, "start-server"], capture_output=True, text=True, timeout=60, env=env)
    try:
        if started.returncode != 0:
            pytest.skip(f"the adb server does not start here: {started.stderr.strip()[-200:]}")
        listed = subprocess.run([ADB, "devices"], capture_output=True, text=True, timeout=60, env=env)
        if parse_adb_devices(listed.stdout):
            pytest.skip("an Android device is attached; these tests need none")
        yield ADB
    finally:
        subprocess.run([ADB, "kill-server"], capture_output=True, timeout=60, env=env)


# ------------------------------------------------------------------- real adb, no phone


def test_no_device_attached_is_one_clear_line(real_adb, bench_models):
    r = run_benchmark(bench_models["int8"], "android", runs=5)
    assert_failed_result(r, "no Android device attached", "adb devices", "USB debugging")
    assert r["target"] == "android" and r["details"]["transport"] == "adb"


def test_missing_serial_is_named(real_adb, bench_models):
    r = run_benchmark(bench_models["int8"], "android:R58M123ABC", runs=5)
    assert_failed_result(r, "'R58M123ABC' is not attached", "lists: none")


def test_missing_adb_binary_says_how_to_install_it(bench_models, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no adb
    with pytest.raises(DeviceError) as info:
        run_benchmark(bench_models["int8"], "android", runs=5)
    assert_raised_error(info, DeviceError, "adb is not installed", "apt-get install adb")


def test_bad_android_options_fail_before_anything_runs(bench_models, tmp_path):
    if ADB is None:
        pytest.skip("adb is not installed (checked first)")
    with pytest.raises(DeviceError) as info:
        run_benchmark(bench_models["int8"], "android", adb=AdbOptions(benchmark_binary=tmp_path / "nope"))
    assert_raised_error(info, DeviceError, "--benchmark-binary", "no such file")
    with pytest.raises(DeviceError) as info:
        run_adb(bench_models["int8"], parse_target("android"), options=AdbOptions(delegate="tpu"))
    assert_raised_error(info, DeviceError, "unknown Android delegate 'tpu'", "nnapi")


# --------------------------------------------------------------------------- pure


ADB_DEVICES_OUTPUT = """\
* daemon not running; starting now at tcp:5037
* daemon started successfully
List of devices attached
R58M123ABC\tdevice
emulator-5554\tunauthorized
192.168.1.5:5555\toffline
0123456789\tno permissions (missing udev rules? user is in the plugdev group); see [http://developer.android.com/tools/device.html]

"""


def test_parse_adb_devices_and_choose_serial():
    devices = parse_adb_devices(ADB_DEVICES_OUTPUT)
    assert [d[0] for d in devices] == ["R58M123ABC", "emulator-5554", "192.168.1.5:5555", "0123456789"]
    assert devices[3][1].startswith("no permissions")
    assert parse_adb_devices("List of devices attached\n\n") == []
    assert choose_serial(devices, "R58M123ABC") == "R58M123ABC"
    assert choose_serial([("only", "device")], None) == "only"
    for wanted, needles in ((None, ("several Android devices", "android:SERIAL", "R58M123ABC")),
                            ("emulator-5554", ("unauthorized", "accept the USB debugging prompt")),
                            ("192.168.1.5:5555", ("offline", "adb kill-server")),
                            ("0123456789", ("no permission", "udev")),
                            ("XYZ", ("'XYZ' is not attached", "adb connect XYZ"))):
        with pytest.raises(DeviceError) as info:
            choose_serial(devices, wanted)
        assert_raised_error(info, DeviceError, *needles)
    with pytest.raises(DeviceError) as info:
        choose_serial([], None)
    assert_raised_error(info, DeviceError, "no Android device attached")


def test_benchmark_model_command_line():
    argv = benchmark_model_command("/data/local/tmp/benchmark_model", "/data/local/tmp/edgecnn/run.1/model.tflite",
                                   threads=4, runs=50, warmup=5, delegate="xnnpack")
    assert argv == ["/data/local/tmp/benchmark_model", "--graph=/data/local/tmp/edgecnn/run.1/model.tflite",
                    "--num_threads=4", "--num_runs=50", "--warmup_runs=5", "--min_secs=0",
                    "--warmup_min_secs=0", "--use_xnnpack=true", "--enable_op_profiling=false"]
    assert "--use_gpu=true" in benchmark_model_command("b", "g", threads=1, runs=1, warmup=0, delegate="gpu")
    assert "--use_nnapi=true" in benchmark_model_command("b", "g", threads=1, runs=1, warmup=0, delegate="nnapi")
    plain = benchmark_model_command("b", "g", threads=1, runs=1, warmup=0)
    assert not any(a.startswith("--use_") for a in plain)
    with pytest.raises(DeviceError):
        benchmark_model_command("b", "g", threads=1, runs=1, warmup=0, delegate="tpu")


# ----------------------------------------------------------------- fake adb happy path

FAKE_ADB = '''\
#!{python}
"""FAKE adb, for tests only: no phone can be attached on a CI machine, so this stands in
for the device side. It maps /data/local/tmp to $FAKE_ADB_ROOT/data/local/tmp, runs
'adb shell' scripts with the local sh (a fake getprop on PATH), copies 'adb push' files,
and lists the devices in $FAKE_ADB_DEVICES. Every call is logged to $FAKE_ADB_ROOT/calls.
The edgecnn code that drives it is the real transport, unchanged."""
import os, shutil, subprocess, sys
root = os.environ["FAKE_ADB_ROOT"]
device_dir = "/data/local/tmp"
def here(text):
    return text.replace(device_dir, root + device_dir)
def there(text):
    return text.replace(root + device_dir, device_dir)
args = sys.argv[1:]
with open(os.path.join(root, "calls"), "a") as log:
    log.write(repr(args) + "\\n")
serial = None
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
if args[0] == "devices":
    print("List of devices attached")
    for line in filter(None, os.environ.get("FAKE_ADB_DEVICES", "").split(",")):
        print(line.replace(":", "\\t", 1) if "\\t" not in line else line)
    print()
elif args[0] == "push":
    shutil.copy(args[1], here(args[2]))
    print("%s: 1 file pushed" % args[1])
elif args[0] == "shell":
    env = dict(os.environ, PATH=os.path.join(root, "bin") + ":" + os.environ["PATH"])
    proc = subprocess.run(["sh", "-c", here(" ".join(args[1:]))], capture_output=True, text=True, env=env)
    sys.stdout.write(there(proc.stdout))
    sys.stderr.write(there(proc.stderr))
    sys.exit(proc.returncode)
else:
    sys.exit("fake adb: unsupported command %r" % args)
'''

FAKE_GETPROP = """\
#!/bin/sh
case "$1" in
  ro.product.model) echo "Pixel 7" ;;
  ro.product.cpu.abi) echo "arm64-v8a" ;;
  ro.build.version.release) echo "14" ;;
esac
"""

# FAKE benchmark_model: prints a real benchmark_model log (tests/data/benchmark_model_riscv64.log,
# a qemuriscv64 run published at
# https://github.com/NobuoTsukamoto/meta-tensorflow-lite/blob/main/doc/tensorflow-lite-benchmark.md)
# and records the flags it was given.
FAKE_BENCHMARK_MODEL = """\
#!/bin/sh
echo "$@" | sed "s#$FAKE_ADB_ROOT##g" > "$FAKE_ADB_ROOT/benchmark_model.args"
cat "$FAKE_BENCHMARK_LOG"
"""


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """A fake adb first on PATH and a fake device root; see FAKE_ADB's docstring."""
    root = tmp_path / "device"
    (root / "data/local/tmp").mkdir(parents=True)
    (root / "bin").mkdir()
    bin_dir = tmp_path / "host-bin"
    bin_dir.mkdir()
    for path, text in ((bin_dir / "adb", FAKE_ADB.format(python=sys.executable)),
                       (root / "bin/getprop", FAKE_GETPROP),
                       (tmp_path / "benchmark_model", FAKE_BENCHMARK_MODEL)):
        path.write_text(text)
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_BENCHMARK_LOG", str(Path(__file__).parent / "data/benchmark_model_riscv64.log"))
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M123ABC:device")
    return root, tmp_path / "benchmark_model"


def test_android_happy_path_through_a_fake_adb(fake_adb, bench_models):
    root, binary = fake_adb
    r = run_benchmark(bench_models["int8"], "android:R58M123ABC", threads=4, runs=50, warmup=1, timeout_s=60,
                      inputs_npz=bench_models["npz"], adb=AdbOptions(benchmark_binary=binary, delegate="xnnpack"))
    assert r["status"] == "ok", r["reason"]
    assert validate_result(r) == r
    assert r["latency_ms"]["mean"] == pytest.approx(2950.34) and r["runs"] == 50 and r["warmup"] == 1
    assert r["init_ms"] == pytest.approx(17.187) and r["first_inference_ms"] == pytest.approx(3512.391)
    assert r["runtime"]["name"] == "benchmark_model" and r["delegate"] == "xnnpack"
    assert r["host"] == {"hostname": "Pixel 7", "machine": "arm64-v8a", "system": "Android 14", "python": None}
    assert r["model"]["path"] == str(bench_models["int8"]) and r["transfer_s"] > 0
    assert r["accuracy"] is None and "random inputs" in r["details"]["accuracy_note"]
    # The real command line reached the binary pushed next to the model ...
    args = (root / "benchmark_model.args").read_text().split()
    workdir = r["details"]["remote_dir"]
    assert args == [f"--graph={workdir}/model.tflite", "--num_threads=4", "--num_runs=50", "--warmup_runs=1",
                    "--min_secs=0", "--warmup_min_secs=0", "--use_xnnpack=true", "--enable_op_profiling=false"]
    assert r["details"]["benchmark_binary"] == f"{workdir}/benchmark_model"
    # ... every adb call named the device, and the work directory is gone.
    calls = (root / "calls").read_text().splitlines()
    assert calls[0] == "['devices']" and all("'-s', 'R58M123ABC'" in c for c in calls[1:])
    assert workdir.startswith("/data/local/tmp/edgecnn/")
    assert not (root / workdir.lstrip("/")).exists()


def test_android_without_benchmark_model_on_the_device(fake_adb, bench_models):
    root, _ = fake_adb
    r = run_benchmark(bench_models["int8"], "android", runs=5, timeout_s=60)
    assert_failed_result(r, f"no benchmark_model on Android device R58M123ABC at {DEVICE_BENCHMARK_MODEL}",
                         "--benchmark-binary", "arm64-v8a")
    assert not (root / r["details"]["remote_dir"].lstrip("/")).exists()


def test_several_devices_and_no_serial(fake_adb, bench_models, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M123ABC:device,emulator-5554:device")
    r = run_benchmark(bench_models["int8"], "android", runs=5)
    assert_failed_result(r, "several Android devices", "R58M123ABC, emulator-5554", "--target android:SERIAL")


def test_cli_delegate_choices_match_the_table():
    from edgecnn.bench.adb import ANDROID_DELEGATES
    from edgecnn.cli import bench

    option = next(p for p in bench.params if p.name == "android_delegate")
    assert list(option.type.choices) == list(ANDROID_DELEGATES)
