"""On-device benchmarks and verification: transports per target, one result schema.

* :mod:`edgecnn.bench.local` -- runs the device runner (:mod:`edgecnn.runtime.runner`) in a
  child process with a timeout.
* :mod:`edgecnn.bench.ssh` -- runs it on a Linux board over the system ssh/scp.
* :mod:`edgecnn.bench.adb` -- Android over adb with TFLite's ``benchmark_model``.
* :mod:`edgecnn.bench.schema` -- result validation, storage and comparison.
* :mod:`edgecnn.bench.harness` -- :func:`run_benchmark` (picks the transport) and
  :func:`run_benchmarks` (several targets; one failing never stops the next).
* :mod:`edgecnn.bench.verify` -- ``edgecnn verify``: a bundle's golden outputs on a device.

Targets are parsed once, at the edge, by :mod:`edgecnn.targets`; external commands run
through :mod:`edgecnn.process` and their text output is parsed by :mod:`edgecnn.tool_output`.
Importing this package imports none of them (and never TensorFlow).
"""
