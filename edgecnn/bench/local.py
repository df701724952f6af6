"""Run the device runner on this machine, in a child process with a timeout.

The runner (:mod:`edgecnn.runtime.runner`) is started as ``sys.executable runner.py …`` in
a new process group (session), so a hung runtime and anything it started can be killed
together. Whatever happens to the child -- a timeout, a native crash, garbage on stdout
-- :func:`run_local` returns a result marked failed with the reason; it raises only for
problems found on the host before anything runs (a file that is not TFLite, an Edge TPU
model on a CPU target, a target this module does not run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from edgecnn.process import drain, kill_group, new_group_kwargs
from edgecnn.bench.schema import check_run_settings, failed_result, model_info, validate_result
from edgecnn.targets import Target, require_target
from edgecnn.errors import DeviceError
from edgecnn.runtime import RUNNER_PATH
from edgecnn.tflite.reader import EDGETPU_CUSTOM_OP, is_edgetpu_model

__all__ = ["check_model_for_target", "run_local"]

_STDERR_TAIL = 300


def check_model_for_target(model: str | os.PathLike, target: Target):
    """Validate ``model`` on the host before it is run on ``target``.

    Args:
        model: the ``.tflite`` file.
        target: where it will run.

    Returns:
        The model's inspect summary.

    Raises:
        ModelFileError: the file is missing or not a TFLite model.
        DeviceError: an Edge TPU-compiled model on a target without an Edge TPU.
    """
    from edgecnn.tflite.reader import inspect_tflite

    summary = inspect_tflite(model)
    if is_edgetpu_model(summary) and target.kind != "coral":
        raise DeviceError(f"{model}: this is an Edge TPU-compiled model (it contains "
                          f"{EDGETPU_CUSTOM_OP}) and target {target.text!r} has no Edge TPU; "
                          f"run it with --target coral, or benchmark the .tflite from before "
                          f"edgetpu_compiler on CPU targets")
    return summary


def run_local(model: str | os.PathLike, target: Target, threads: int = 1,
              runs: int = 100, warmup: int = 10, timeout_s: float = 300.0,
              inputs_npz: str | os.PathLike | None = None, *,
              extra_runner_args: Sequence[str] = ()) -> dict:
    """Benchmark ``model`` on this machine (``local``) or an attached Edge TPU (``coral…``).

    Args:
        model: the ``.tflite`` file.
        target: a parsed ``local`` or ``coral`` :class:`Target` (text is parsed where it
            enters, never here).
        threads: CPU threads for the interpreter.
        runs: timed invokes.
        warmup: untimed invokes after the first.
        timeout_s: wall-clock limit for the whole child process; the process group is
            killed when it runs out.
        inputs_npz: optional ``.npz`` with ``x`` (and ``y``) for the outputs checksum
            and accuracy.
        extra_runner_args: more runner arguments, for tests and debugging (e.g. the
            runner's ``--debug-hang`` hook).

    Returns:
        A validated result (see :mod:`edgecnn.bench.schema`); ``status`` is ``failed``
        with a reason when the runner timed out, crashed or failed.

    Raises:
        ModelFileError: ``model`` is not a readable TFLite file.
        DeviceError: the target is not local/coral, or an Edge TPU model on ``local``.
        ValueError: a non-positive ``threads``/``runs``/``timeout_s`` or negative ``warmup``.
        TypeError: ``target`` is not a :class:`Target` (e.g. its text).
    """
    require_target(target, "run_local")
    if target.kind not in ("local", "coral"):
        raise DeviceError(f"run_local runs 'local' and 'coral' targets, not {target.text!r}")
    check_run_settings(threads, runs, warmup, timeout_s)
    check_model_for_target(model, target)
    if inputs_npz is not None and not Path(inputs_npz).is_file():
        raise DeviceError(f"{inputs_npz}: no such inputs file; pass an .npz with x (and y)")

    # -P: the runner's own directory (edgecnn/bench) must not shadow modules it imports,
    # as it would not on a device where runner.py sits alone.
    isolate = ["-P"] if sys.version_info >= (3, 11) else []
    argv = [sys.executable, *isolate, str(RUNNER_PATH), os.fspath(model), "--threads", str(threads),
            "--runs", str(runs), "--warmup", str(warmup), "--target", target.text]
    if inputs_npz is not None:
        argv += ["--inputs", os.fspath(inputs_npz)]
    if target.kind == "coral":
        argv += ["--delegate", "edgetpu"]
        if target.device:
            argv += ["--device", target.device]
    argv += list(extra_runner_args)

    common = dict(target=target.text, threads=threads, runs=runs, warmup=warmup)
    spawned = time.time()
    argv += ["--spawned-at", repr(spawned)]
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=_child_env(), **new_group_kwargs())
    except OSError as exc:
        return failed_result(target.text, model_info(model), f"cannot start the runner ({exc})",
                             **_rest(common))
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        drain(proc)
        return failed_result(target.text, model_info(model),
                             f"timed out after {timeout_s:g} s (the runtime or device hung); "
                             f"the runner's process group was killed", **_rest(common))
    return _result_from_child(proc.returncode, stdout, stderr, model, common)


def _rest(common: dict) -> dict:
    return {k: v for k, v in common.items() if k != "target"}


def _child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _result_from_child(returncode: int, stdout: bytes, stderr: bytes, model, common: dict) -> dict:
    tail = _stderr_tail(stderr)
    if returncode < 0:
        reason = (f"runtime crashed with signal {_signal_name(returncode)} (exit {returncode})"
                  + (f": {tail}" if tail else ""))
        return failed_result(common["target"], model_info(model), reason, **_rest(common))
    try:
        data = json.loads(stdout.decode("utf-8", errors="replace"))
    except ValueError:
        reason = (f"the runner exited with code {returncode} without a result"
                  + (f": {tail}" if tail else "") + "; run it by hand to see why")
        return failed_result(common["target"], model_info(model), reason, **_rest(common))
    try:
        return validate_result(data, "runner result")
    except DeviceError as exc:
        return failed_result(common["target"], model_info(model), str(exc), **_rest(common))


def _stderr_tail(stderr: bytes) -> str:
    """The last meaningful stderr line (native logs end with the actual error)."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    line = " ".join(lines[-1].split())
    return line if len(line) <= _STDERR_TAIL else line[:_STDERR_TAIL - 3] + "..."
