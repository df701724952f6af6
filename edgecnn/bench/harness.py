"""Pick the transport for a target and run benchmarks: the entry points the CLI and the
pipeline call.

Transports by target kind: ``local`` and ``coral`` -- :mod:`edgecnn.bench.local`;
``ssh://`` -- :mod:`edgecnn.bench.ssh`; ``android`` -- :mod:`edgecnn.bench.adb`.

Failure policy, the same for every transport: bad input found on this host before
anything runs (an unknown target, a missing key file, no ``adb``, an Edge TPU model on a
CPU target) raises :class:`~edgecnn.errors.DeviceError`; anything that goes wrong on
the way to or on the device is a result with ``status: "failed"`` and a one-line
reason. :func:`run_benchmarks` checks every target before running the first, then runs
them in order; a failed target never stops the next one.

Target text is parsed once: :func:`run_benchmark` and :func:`run_benchmarks` take a
:class:`~edgecnn.targets.Target` or its text (for Python callers) and pass the parsed
target inward; :func:`check_benchmark` and the transports take a ``Target`` only.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Mapping, Sequence

from edgecnn.bench.adb import AdbOptions
from edgecnn.bench.ssh import SshOptions
from edgecnn.targets import Target, parse_target, require_target
from edgecnn.errors import DeviceError, EdgecnnError

__all__ = ["AdbOptions", "SshOptions", "check_benchmark", "run_benchmark", "run_benchmarks"]


def check_benchmark(model: str | os.PathLike, target: Target, *, inputs_npz: str | os.PathLike | None = None,
                    ssh: SshOptions | None = None, adb: AdbOptions | None = None) -> None:
    """Everything that can be checked on this host before ``target`` is used.

    Args:
        model: the ``.tflite`` file on this host.
        target: the parsed target.
        inputs_npz: optional ``.npz`` (``x``, ``y``) sent along.
        ssh: options for ``ssh://`` targets.
        adb: options for ``android`` targets.

    Raises:
        DeviceError: bad transport options (see
            :func:`~edgecnn.bench.ssh.check_ssh_options`,
            :func:`~edgecnn.bench.adb.check_adb_options`), a missing inputs file, or an
            Edge TPU model on a target without an Edge TPU.
        ModelFileError: ``model`` is not a TFLite file.
    """
    from edgecnn.bench.local import check_model_for_target

    require_target(target, "check_benchmark")
    check_model_for_target(model, target)
    if inputs_npz is not None:
        _check_inputs_file(inputs_npz)
    if target.kind == "ssh":
        from edgecnn.bench.ssh import check_ssh_options

        check_ssh_options(ssh or SshOptions())
    elif target.kind == "android":
        from edgecnn.bench.adb import check_adb_options

        check_adb_options(adb or AdbOptions())


def _check_inputs_file(path: str | os.PathLike) -> None:
    """Open ``--inputs`` here, so a junk file is one error line before any target runs."""
    import zipfile

    import numpy as np

    if not os.path.isfile(path):
        raise DeviceError(f"{path}: no such inputs file; pass an .npz with x (and y)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(getattr(npz, "files", ()))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise DeviceError(f"{path}: not a readable .npz ({first}); write it with numpy.savez(path, x=..., y=...)") from None
    if "x" not in names:
        raise DeviceError(f"{path}: has no array 'x' (found: {', '.join(names) or 'none'}); "
                          "write it with numpy.savez(path, x=..., y=...)")


def run_benchmark(model: str | os.PathLike, target: Target | str = "local", *, threads: int = 1,
                  runs: int = 100, warmup: int = 10, timeout_s: float = 300.0,
                  inputs_npz: str | os.PathLike | None = None, ssh: SshOptions | None = None,
                  adb: AdbOptions | None = None, extra_runner_args: Sequence[str] = ()) -> dict:
    """Benchmark ``model`` on ``target`` and return one result (schema ``edgecnn.bench/1``).

    Args:
        model: the ``.tflite`` file on this host.
        target: a :class:`Target` or its text (see :mod:`edgecnn.targets`).
        threads: CPU threads for the interpreter.
        runs: timed invokes.
        warmup: untimed invokes after the first.
        timeout_s: wall-clock limit for the benchmark process (on the device for remote
            targets; copies get the same limit).
        inputs_npz: optional ``.npz`` (``x``, ``y``) for device-side accuracy.
        ssh: options for ``ssh://`` targets (remote Python, key, known hosts).
        adb: options for ``android`` targets (benchmark binary, delegate).
        extra_runner_args: more runner arguments (test hooks such as ``--debug-hang``);
            not used on Android, where no runner runs.

    Returns:
        The validated result dict; failures on the device come back as ``status: "failed"``.

    Raises:
        DeviceError: an unknown target (text that does not parse), or see
            :func:`check_benchmark`.
        ModelFileError: see :func:`check_benchmark`.
    """
    target = target if isinstance(target, Target) else parse_target(target)  # the one parse of this call
    check_benchmark(model, target, inputs_npz=inputs_npz, ssh=ssh, adb=adb)
    settings = dict(threads=threads, runs=runs, warmup=warmup, timeout_s=timeout_s, inputs_npz=inputs_npz)
    if target.kind in ("local", "coral"):
        from edgecnn.bench.local import run_local

        return run_local(model, target, extra_runner_args=extra_runner_args, **settings)
    if target.kind == "ssh":
        from edgecnn.bench.ssh import run_ssh

        return run_ssh(model, target, options=ssh, extra_runner_args=extra_runner_args, **settings)
    if target.kind == "android":
        from edgecnn.bench.adb import run_adb

        return run_adb(model, target, options=adb, **settings)
    raise DeviceError(f"target {target.text!r}: no transport for {target.kind!r} targets")  # pragma: no cover


def run_benchmarks(model: str | os.PathLike, targets: Iterable[Target | str], *,
                   on_result: Callable[[dict], None] | None = None,
                   extra_runner_args: Mapping[str, Sequence[str]] | None = None, **settings) -> list[dict]:
    """Benchmark ``model`` on several targets, one after the other.

    Every target is checked first (:func:`check_benchmark`), so a typo in the third
    target fails before the first one runs. Then each runs; an error raised while one
    runs becomes its failed result, and the next target still runs.

    Args:
        model: the ``.tflite`` file.
        targets: :class:`Target` objects or their texts, in order (each text is parsed
            once, here).
        on_result: called with each result as soon as it exists (e.g. to append it to a
            results file, so a later crash loses nothing).
        extra_runner_args: per target text, more runner arguments (test hooks).
        **settings: passed to :func:`run_benchmark` (threads, runs, warmup, timeout_s,
            inputs_npz, ssh, adb).

    Returns:
        One result per target, in order.

    Raises:
        DeviceError, ModelFileError: a target is unknown or fails its checks (nothing has
            run yet).
    """
    from edgecnn.bench.schema import failed_result, model_info

    parsed = [t if isinstance(t, Target) else parse_target(t) for t in targets]  # the one parse of each
    checks = {k: settings.get(k) for k in ("inputs_npz", "ssh", "adb")}
    for target in parsed:
        check_benchmark(model, target, **checks)
    extra = extra_runner_args or {}
    results = []
    for target in parsed:
        try:
            result = run_benchmark(model, target, extra_runner_args=extra.get(target.text, ()), **settings)
        except EdgecnnError as exc:
            result = failed_result(target.text, model_info(model), str(exc), threads=settings.get("threads", 1),
                                   runs=settings.get("runs", 100), warmup=settings.get("warmup", 10))
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
