"""Pick the transport for a target and run one benchmark: the entry point the CLI calls."""

from __future__ import annotations

import os

from edgecnn.bench.targets import Target, parse_target
from edgecnn.errors import DeviceError

__all__ = ["run_benchmark"]


def run_benchmark(model: str | os.PathLike, target: Target | str = "local", *, threads: int = 1,
                  runs: int = 100, warmup: int = 10, timeout_s: float = 300.0,
                  inputs_npz: str | os.PathLike | None = None) -> dict:
    """Benchmark ``model`` on ``target`` and return one result (schema ``edgecnn.bench/1``).

    A failure on the device (timeout, crash, missing runtime) comes back as a result with
    ``status: "failed"``; problems found before anything runs raise.

    Args:
        model: the ``.tflite`` file on this host.
        target: a :class:`Target` or its text (see :mod:`edgecnn.bench.targets`).
        threads: CPU threads for the interpreter.
        runs: timed invokes.
        warmup: untimed invokes after the first.
        timeout_s: wall-clock limit for the benchmark process.
        inputs_npz: optional ``.npz`` (``x``, ``y``) for device-side accuracy.

    Returns:
        The validated result dict.

    Raises:
        DeviceError: an unknown target, a transport that is not implemented yet, or an
            Edge TPU model on a CPU target.
        ModelFileError: ``model`` is not a TFLite file.
    """
    from edgecnn.bench.local import check_model_for_target

    target = parse_target(target) if isinstance(target, str) else target
    check_model_for_target(model, target)  # bad input fails here, before any transport
    if target.kind in ("local", "coral"):
        from edgecnn.bench.local import run_local

        return run_local(model, target, threads=threads, runs=runs, warmup=warmup,
                         timeout_s=timeout_s, inputs_npz=inputs_npz)
    # ssh:// and android:// transports come in a later step of issue #3.
    raise DeviceError(f"target {target.text!r}: the {target.kind} transport is not implemented yet; "
                      f"use --target local or coral for now")
