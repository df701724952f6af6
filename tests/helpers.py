"""Assertions and builders shared by several test modules (imported as ``helpers``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

TINY_RECIPE = """\
name: tiny
seed: 1
data:
  train_limit: 600
  test_limit: 300
  validation_fraction: 0.1
  representative_samples: 32
  augment: {horizontal_flip: true, translate: 0.0}
teacher:
  architecture: vgg_small
  train: {epochs: 1, batch_size: 32, learning_rate: 0.002}
student:
  architecture: mobilenet_v2
  alpha: 0.35
distill:
  teacher_outputs: cached
  train: {epochs: 4, batch_size: 32, learning_rate: 0.005}
quantize:
  io_dtype: uint8
export:
  formats: [float32]
"""


def write_tiny_recipe(directory: Path, extra: str = "") -> Path:
    """A recipe that runs every stage in about a minute on two CPU cores."""
    path = directory / "tiny.yaml"
    path.write_text(TINY_RECIPE + extra)
    return path


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """The process failed with ``code`` and printed exactly one stderr line containing ``needles``."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_raised_error(exc_info, error_type: type, *needles: str) -> str:
    """``pytest.raises`` caught exactly ``error_type`` with a one-line message containing ``needles``."""
    message = str(exc_info.value)
    assert exc_info.type is error_type, (exc_info.type, message)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message
