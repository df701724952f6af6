"""Runtime: running TFLite models, on this host and on devices.

* :mod:`edgecnn.runtime.runner` -- the standalone device runner (stdlib + numpy + a TFLite
  runtime), copied alone onto devices; the single source of runtime discovery, the Edge
  TPU library table and input quantization.
* :mod:`edgecnn.runtime.interpreter` -- the host's interpreter layer built on it
  (``make_interpreter``, I/O specs, prediction, evaluation).
"""

from pathlib import Path

# The file bench transports and bundles copy onto devices.
RUNNER_PATH = Path(__file__).with_name("runner.py")
