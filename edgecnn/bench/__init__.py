"""On-device benchmarks: a standalone runner, transports per target, one result schema.

* :mod:`edgecnn.bench.runner` -- the file copied onto devices (stdlib + numpy + runtime).
* :mod:`edgecnn.bench.targets` -- the table of target kinds and ``--target`` parsing.
* :mod:`edgecnn.bench.local` -- runs the runner in a child process with a timeout.
* :mod:`edgecnn.bench.ssh` -- runs it on a Linux board over the system ssh/scp.
* :mod:`edgecnn.bench.adb` -- Android over adb with TFLite's ``benchmark_model``.
* :mod:`edgecnn.bench.process` -- one external command with a hard time limit.
* :mod:`edgecnn.bench.schema` -- result validation, storage and comparison.
* :mod:`edgecnn.bench.parsers` -- ``benchmark_model`` and ``edgetpu_compiler`` output.
* :mod:`edgecnn.bench.harness` -- :func:`run_benchmark` (picks the transport) and
  :func:`run_benchmarks` (several targets; one failing never stops the next).

Importing this package imports none of them (and never TensorFlow).
"""
