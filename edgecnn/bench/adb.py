"""Benchmark on an Android device over adb with the official TFLite ``benchmark_model``.

Python is not on phones, so the device runner is not used here: the TFLite project's own
``benchmark_model`` binary (``android_aarch64`` / ``android_arm`` builds, see
https://ai.google.dev/edge/litert/models/measurement) times the model, and
:func:`~edgecnn.tool_output.parse_benchmark_model` maps its output onto the common
result schema. Steps, each one ``adb`` call (the real binary, Debian package ``adb``):

1. ``adb devices`` picks the device (``android:SERIAL``, or the only one attached).
2. ``adb shell`` makes a fresh work directory under ``/data/local/tmp/edgecnn/`` and reads
   the model name, ABI and Android version (``getprop``).
3. ``adb push`` copies the model, and the ``--benchmark-binary`` when given (else the
   device's ``/data/local/tmp/benchmark_model`` is used); the pushes are ``transfer_s``.
4. ``adb shell`` runs ``benchmark_model --graph=… --num_threads=N --num_runs=N
   --warmup_runs=N [--use_xnnpack|--use_gpu|--use_nnapi=true] --enable_op_profiling=false``
   under ``timeout -s KILL`` (toybox), then removes the work directory; this host also
   enforces the limit on the adb process. A fifth call cleans up when the run was cut
   short.

``benchmark_model`` feeds random inputs, so Android results carry no device-side
accuracy. As with SSH, bad input raises :class:`~edgecnn.errors.DeviceError` before
anything runs (no ``adb`` on this host, a missing ``--benchmark-binary`` file, an
unknown delegate); everything after -- no device, several devices, an unauthorized one,
a failed run -- is a failed result with a one-line reason.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgecnn.bench.local import check_model_for_target
from edgecnn.tool_output import parse_benchmark_model
from edgecnn.process import ProcessResult, last_line, run_process
from edgecnn.bench.schema import check_run_settings, failed_result, model_info, new_result, validate_result
from edgecnn.targets import Target, require_target
from edgecnn.errors import DeviceError

__all__ = ["ANDROID_DELEGATES", "DEVICE_DIR", "DEVICE_BENCHMARK_MODEL", "AdbOptions", "check_adb_options",
           "parse_adb_devices", "choose_serial", "benchmark_model_command", "run_adb"]

DEVICE_DIR = "/data/local/tmp/edgecnn"
DEVICE_BENCHMARK_MODEL = "/data/local/tmp/benchmark_model"
BENCHMARK_MODEL_URL = "https://ai.google.dev/edge/litert/models/measurement"

# delegate name -> benchmark_model flags ("none": the runtime's default CPU path).
ANDROID_DELEGATES: dict[str, tuple[str, ...]] = {
    "none": (),
    "xnnpack": ("--use_xnnpack=true",),
    "gpu": ("--use_gpu=true",),
    "nnapi": ("--use_nnapi=true",),
}

_ADB_LIST_S = 60.0  # 'adb devices' may have to start the adb server first
_STEP_S = 60.0  # mkdir/getprop and clean-up calls
_GRACE_S = 10.0
_WORKDIR = re.compile(r"^/data/local/tmp/edgecnn/[A-Za-z0-9._-]{1,64}$")
_GONE = ("no devices/emulators found", "not found", "device offline", "error: closed", "device unauthorized")


@dataclass(frozen=True)
class AdbOptions:
    """How to benchmark on an Android target.

    Attributes:
        benchmark_binary: ``benchmark_model`` built for the phone's ABI, on this host; it is
            pushed next to the model. None: use ``/data/local/tmp/benchmark_model`` on
            the device.
        delegate: one of :data:`ANDROID_DELEGATES`.
    """

    benchmark_binary: Path | None = None
    delegate: str = "none"


def check_adb_options(options: AdbOptions) -> None:
    """Check the host side before anything runs.

    Raises:
        DeviceError: ``adb`` is not installed, the benchmark binary is missing, or the
            delegate is unknown.
    """
    if shutil.which("adb") is None:
        raise DeviceError("adb is not installed; install it with 'apt-get install adb' "
                          "(Debian/Ubuntu) or from Android's platform-tools")
    if options.benchmark_binary is not None and not Path(options.benchmark_binary).expanduser().is_file():
        raise DeviceError(f"--benchmark-binary {options.benchmark_binary}: no such file; download benchmark_model "
                          f"for the phone's ABI ({BENCHMARK_MODEL_URL})")
    if options.delegate not in ANDROID_DELEGATES:
        raise DeviceError(f"unknown Android delegate {options.delegate!r}; use one of "
                          f"{', '.join(ANDROID_DELEGATES)}")


def parse_adb_devices(text: str) -> list[tuple[str, str]]:
    """``adb devices`` output -> ``[(serial, state), ...]`` (state: device, unauthorized, …).

    Lines before ``List of devices attached`` (the server's start-up notes) are skipped.
    """
    lines = text.replace("\r", "").splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.startswith("List of devices attached")) + 1
    except StopIteration:
        return []
    devices = []
    for line in lines[start:]:
        if not line.strip() or line.startswith("*"):
            continue
        parts = line.split(None, 1)  # "SERIAL\tdevice", "SERIAL\tno permissions (…)"
        if len(parts) == 2:
            devices.append((parts[0], parts[1].strip()))
    return devices


def choose_serial(devices: Sequence[tuple[str, str]], wanted: str | None) -> str:
    """The serial to use, given ``adb devices`` and the target's serial (or None).

    Raises:
        DeviceError: no device, the wanted one is missing, several and none chosen, or the
            chosen one is not usable (unauthorized, offline, no permissions, not booted).
    """
    listed = ", ".join(f"{s} ({st})" if st != "device" else s for s, st in devices) or "none"
    if wanted is not None:
        match = [d for d in devices if d[0] == wanted]
        if not match:
            raise DeviceError(f"Android device {wanted!r} is not attached ('adb devices' lists: {listed}); check "
                              f"the serial and the cable, or 'adb connect {wanted}' for Wi-Fi debugging")
        serial, state = match[0]
    elif not devices:
        raise DeviceError("no Android device attached ('adb devices' lists none); connect one with USB "
                          "debugging on (Settings > Developer options), or 'adb connect HOST:PORT'")
    elif len(devices) > 1:
        raise DeviceError(f"several Android devices are attached ({listed}); pick one with --target android:SERIAL")
    else:
        serial, state = devices[0]
    if state == "device":
        return serial
    if state == "unauthorized":
        raise DeviceError(f"Android device {serial} is unauthorized: unlock it and accept the USB debugging "
                          f"prompt, then run again")
    if state == "offline":
        raise DeviceError(f"Android device {serial} is offline: reconnect the cable, or restart adb with "
                          f"'adb kill-server'")
    if state.startswith("no permissions"):
        raise DeviceError(f"no permission to use Android device {serial}: add a udev rule for it "
                          f"(https://developer.android.com/studio/run/device) or start the adb server as root")
    raise DeviceError(f"Android device {serial} is in {state!r} mode, not booted into Android")


def benchmark_model_command(binary: str, graph: str, *, threads: int, runs: int, warmup: int,
                            delegate: str = "none") -> list[str]:
    """The ``benchmark_model`` argv for one run (pure).

    ``--min_secs=0`` and ``--warmup_min_secs=0`` make the run counts exact, as on the
    other targets (by default the tool keeps running until a minimum time has passed).

    Args:
        binary: the tool's path on the device.
        graph: the model's path on the device.
        threads: ``--num_threads``.
        runs: ``--num_runs``.
        warmup: ``--warmup_runs``.
        delegate: one of :data:`ANDROID_DELEGATES`.

    Raises:
        DeviceError: unknown delegate.
    """
    if delegate not in ANDROID_DELEGATES:
        raise DeviceError(f"unknown Android delegate {delegate!r}; use one of {', '.join(ANDROID_DELEGATES)}")
    return [binary, f"--graph={graph}", f"--num_threads={threads}", f"--num_runs={runs}",
            f"--warmup_runs={warmup}", "--min_secs=0", "--warmup_min_secs=0", *ANDROID_DELEGATES[delegate],
            "--enable_op_profiling=false"]


def _run_script(workdir: str, binary: str, pushed: bool, command: Sequence[str], limit_s: int) -> str:
    d = shlex.quote(workdir)
    return (f"d={d}; b={shlex.quote(binary)}\n"
            'cd "$d" || exit 3\n'
            'if [ ! -f "$b" ]; then echo "edgecnn: no benchmark_model at $b"; cd / && rm -rf "$d"; exit 126; fi\n'
            + ('chmod 755 "$b"\n' if pushed else "")
            + f"if command -v timeout >/dev/null 2>&1; then set -- timeout -s KILL {int(limit_s)}; else set --; fi\n"
            + '"$@" ' + " ".join(shlex.quote(a) for a in command) + " 2>&1\n"
            + "rc=$?\n"
            'cd / && rm -rf "$d"\n'
            "exit $rc\n")


def run_adb(model: str | os.PathLike, target: Target, *, threads: int = 1, runs: int = 100,
            warmup: int = 10, timeout_s: float = 300.0, inputs_npz: str | os.PathLike | None = None,
            options: AdbOptions | None = None) -> dict:
    """Benchmark ``model`` on an ``android[:SERIAL]`` target with ``benchmark_model``.

    Args:
        model: the ``.tflite`` file on this host.
        target: a parsed ``android`` :class:`Target`.
        threads: ``--num_threads``.
        runs: timed runs.
        warmup: warm-up runs.
        timeout_s: limit for the run on the device (and for each push).
        inputs_npz: accepted for a uniform interface; ``benchmark_model`` feeds random
            inputs, so ``accuracy`` stays None and ``details`` says so.
        options: :class:`AdbOptions`.

    Returns:
        A validated result; ``runtime`` is ``benchmark_model``, ``host`` the phone
        (model, ABI, Android version), ``details`` the parsed extras, the serial and the
        command line.

    Raises:
        DeviceError: bad input found before anything runs (see :func:`check_adb_options`),
            a target that is not ``android``, an Edge TPU model.
        ModelFileError: ``model`` is not a TFLite file.
        ValueError: non-positive ``threads``/``runs``/``timeout_s`` or negative ``warmup``.
        TypeError: ``target`` is not a :class:`Target` (e.g. its text).
    """
    require_target(target, "run_adb")
    options = options or AdbOptions()
    if target.kind != "android":
        raise DeviceError(f"run_adb runs android targets, not {target.text!r}")
    check_run_settings(threads, runs, warmup, timeout_s)
    check_adb_options(options)
    check_model_for_target(model, target)

    info = model_info(model)
    details: dict = {"transport": "adb"}
    if inputs_npz is not None:
        details["accuracy_note"] = "benchmark_model feeds random inputs; no device-side accuracy on Android"
    common = dict(threads=threads, runs=runs, warmup=warmup)

    def fail(reason: str, **fields) -> dict:
        return failed_result(target.text, info, reason, details=details, **common, **fields)

    listing = run_process(["adb", "devices"], _ADB_LIST_S)
    if not listing.ok:
        return fail(f"'adb devices' failed ({_tail(listing)}); restart the adb server with 'adb kill-server'")
    try:
        serial = choose_serial(parse_adb_devices(listing.stdout), target.serial)
    except DeviceError as exc:
        return fail(str(exc))
    details["serial"] = serial
    adb = ["adb", "-s", serial]

    prepared = run_process([*adb, "shell", f"mkdir -p {DEVICE_DIR} && mktemp -d {DEVICE_DIR}/run.XXXXXX && "
                                           "getprop ro.product.model; getprop ro.product.cpu.abi; "
                                           "getprop ro.build.version.release"], _STEP_S)
    lines = [ln.strip() for ln in prepared.stdout.replace("\r", "").splitlines()]
    if not prepared.ok or not lines or not _WORKDIR.match(lines[0]):
        return fail(_adb_failure("preparing a work directory", prepared, serial))
    workdir = lines[0]
    phone, abi, release = (lines[1:4] + ["", "", ""])[:3]
    host = {"hostname": phone or None, "machine": abi or None,
            "system": f"Android {release}" if release else "Android", "python": None}
    details["remote_dir"] = workdir

    cleaned = False
    try:
        transfer_s = 0.0
        pushes = [(Path(model), f"{workdir}/model.tflite")]
        binary = DEVICE_BENCHMARK_MODEL
        if options.benchmark_binary is not None:
            binary = f"{workdir}/benchmark_model"
            pushes.append((Path(options.benchmark_binary).expanduser(), binary))
        for src, dst in pushes:
            pushed = run_process([*adb, "push", os.fspath(src), dst], timeout_s + _GRACE_S)
            transfer_s += pushed.wall_s
            if not pushed.ok:
                return fail(_adb_failure(f"pushing {src.name}", pushed, serial), host=host)
        details["benchmark_binary"] = binary

        limit = max(1, math.ceil(timeout_s))
        command = benchmark_model_command(binary, f"{workdir}/model.tflite", threads=threads, runs=runs,
                                          warmup=warmup, delegate=options.delegate)
        details["command"] = " ".join(command)
        script = _run_script(workdir, binary, options.benchmark_binary is not None, command, limit)
        ran = run_process([*adb, "shell", script], limit + _GRACE_S)
        cleaned = not ran.timed_out and ran.returncode is not None
        extra = dict(host=host, transfer_s=round(transfer_s, 6))
        if ran.timed_out or ran.returncode == 128 + signal.SIGKILL and ran.wall_s >= limit - 0.5:
            return fail(f"timed out after {timeout_s:g} s (benchmark_model hung on the device); it was killed",
                        **extra)
        if ran.returncode == 126 and "no benchmark_model at" in ran.stdout:
            return fail(f"no benchmark_model on Android device {serial} at {DEVICE_BENCHMARK_MODEL}; download "
                        f"the build for its ABI ({abi or 'see getprop ro.product.cpu.abi'}) from "
                        f"{BENCHMARK_MODEL_URL} and pass --benchmark-binary PATH", **extra)
        try:
            parsed = parse_benchmark_model(ran.stdout + "\n" + ran.stderr)
        except DeviceError as exc:
            if ran.returncode and ran.returncode > 128:
                return fail(f"benchmark_model crashed with {_signal_name(ran.returncode - 128)} on {serial}: "
                            f"{exc}", **extra)
            return fail(str(exc), **extra)
        details.update(parsed.pop("details"))
        fields = {k: v for k, v in parsed.items() if v is not None}
        fields.setdefault("runs", runs)
        fields.setdefault("warmup", warmup)
        result = new_result(target.text, info, runtime={"name": "benchmark_model", "version": "unknown"},
                            delegate=None if options.delegate == "none" else options.delegate,
                            threads=threads, details=details, **extra, **fields)
        return validate_result(result, f"result from {target.text}")
    finally:
        if not cleaned:
            run_process([*adb, "shell", f"rm -rf {shlex.quote(workdir)}"], _STEP_S)


def _tail(proc: ProcessResult) -> str:
    return last_line(proc.stderr, 200) or last_line(proc.stdout, 200) or (
        "timed out" if proc.timed_out else f"exit status {proc.returncode}")


def _adb_failure(step: str, proc: ProcessResult, serial: str) -> str:
    text = proc.stderr + proc.stdout
    if any(marker in text for marker in _GONE):
        return f"lost Android device {serial} while {step} ({_tail(proc)}); check the cable and 'adb devices'"
    if proc.timed_out:
        return f"adb timed out while {step} on {serial}; check the device and 'adb devices'"
    return f"adb failed while {step} on {serial} ({_tail(proc)})"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
