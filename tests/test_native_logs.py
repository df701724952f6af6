"""What edgecnn prints: no native (C++) log lines unless asked for, and an honest set-up script.

TensorFlow, the TFLite converter and the interpreter log through absl/glog straight to
file descriptor 2, which Python cannot filter. They are silenced unless ``--verbose`` /
``--debug`` (``EDGECNN_VERBOSE=1`` / ``EDGECNN_DEBUG=1``). Each check runs a real tiny
conversion or a real interpreter in a fresh process, since the lines appear once per
process (TensorFlow's start-up) and only on the real fd 2.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# absl/glog ("I0000 00:00:1796.. 123 port.cc:153] ..."), absl's pre-init banner, the
# TFLite runtime's own INFO line, and the converter's quantizer chatter.
NATIVE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl|INFO: Created TensorFlow Lite"
                    r"|fully_quantize: )", re.M)

CONVERT = f"""
import sys, tempfile
sys.path.insert(0, {str(TESTS)!r})
from pathlib import Path
from helpers import build_tiny_classifier
from edgecnn.runtime.interpreter import make_interpreter
folder = Path(tempfile.mkdtemp())
model = build_tiny_classifier(folder, io_dtype="int8", metadata=False)
make_interpreter(model)
print("converted", model.stat().st_size, file=sys.stderr)
"""


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("EDGECNN_VERBOSE", "EDGECNN_DEBUG",
                                                              "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=REPO,
                          env={**clean, **env})


@pytest.fixture(scope="module")
def conversions():
    """stderr of one real int8 conversion + interpreter load: quiet, and with EDGECNN_VERBOSE=1."""
    quiet, verbose = _python(CONVERT), _python(CONVERT, EDGECNN_VERBOSE="1")
    assert quiet.returncode == 0 and verbose.returncode == 0, (quiet.stderr[-2000:], verbose.stderr[-2000:])
    return quiet.stderr, verbose.stderr


def test_a_conversion_prints_no_native_log_lines(conversions):
    quiet, _ = conversions
    assert not NATIVE.search(quiet), quiet
    # Python's own lines after the silenced blocks still reach stderr.
    assert re.search(r"^converted \d+$", quiet, re.M), quiet


def test_verbose_shows_the_native_log_lines(conversions):
    _, verbose = conversions
    # If TensorFlow ever stops logging on start-up this fails: then the silencing is
    # not proved by the test above either, and the patterns need updating.
    assert NATIVE.search(verbose), verbose
    assert re.search(r"^converted \d+$", verbose, re.M)


SILENCED_RAISE = """
import os, sys
from edgecnn._tf import native_stderr_silenced
try:
    with native_stderr_silenced():
        os.write(2, b"I0000 00:00:1.0 1 native.cc:1] chatter\\n")
        raise RuntimeError("conversion failed: op FOO has no int8 kernel")
except RuntimeError as exc:
    print(f"error: {exc}", file=sys.stderr)
os.write(2, b"after\\n")
"""


@pytest.mark.parametrize("env, shown", [({}, False), ({"EDGECNN_VERBOSE": "1"}, True), ({"EDGECNN_DEBUG": "1"}, True)])
def test_an_error_inside_a_silenced_block_still_reaches_the_user(env, shown):
    proc = _python(SILENCED_RAISE, **env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "error: conversion failed: op FOO has no int8 kernel" in lines
    assert lines[-1] == "after"  # fd 2 is restored after the block
    assert ("I0000 00:00:1.0 1 native.cc:1] chatter" in lines) is shown


def _tiny_demo_inputs(tmp_path: Path) -> tuple[Path, Path]:
    pytest.importorskip("cv2")
    import numpy as np
    import cv2

    sys.path.insert(0, str(TESTS))
    from helpers import build_tiny_classifier

    model = build_tiny_classifier(tmp_path, io_dtype="int8")
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.full((40, 40, 3), 128, np.uint8))
    return model, frames


def test_cli_interpreter_creation_is_quiet_unless_verbose(tmp_path):
    """The demo creates a real interpreter: its XNNPACK INFO line only with -v."""
    model, frames = _tiny_demo_inputs(tmp_path)
    from helpers import run_edgecnn

    args = ["demo", "--headless", "--model", str(model), "--source", str(frames)]
    quiet = run_edgecnn(*args, timeout=120)
    verbose = run_edgecnn("-v", *args, timeout=120)
    assert quiet.returncode == 0 and verbose.returncode == 0, (quiet.stderr, verbose.stderr)
    assert quiet.stderr.strip() == "", quiet.stderr
    assert "1 frames from" in quiet.stdout
    assert "INFO: Created TensorFlow Lite XNNPACK delegate" in verbose.stderr, verbose.stderr


# ----------------------------------------------------------------- tools/dev.sh


def _restricted_path(tmp_path: Path) -> str:
    """A PATH with what dev.sh needs (a shell, coreutils, Python 3.11) but no ssh, scp or adb."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "cat", "cut", "sha256sum", "id", "dirname", "env", "python3.11"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_dev_sh_says_which_system_packages_and_why_and_can_opt_out(tmp_path):
    """``EDGECNN_NO_SYSTEM_PACKAGES=1``: nothing installed, and it says what it skipped and why.

    Runs the real script's ``test`` command with ssh/adb hidden from PATH and pytest asked
    only for its version, so no test runs and no package is installed.
    """
    if not (REPO / ".venv" / ".edgecnn-installed").is_file():
        pytest.skip("needs the set-up venv (.venv made by tools/dev.sh), which this check must not rebuild")
    env = {"PATH": _restricted_path(tmp_path), "HOME": str(tmp_path), "EDGECNN_NO_SYSTEM_PACKAGES": "1",
           "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "tools" / "dev.sh"), "test", "--version"], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if ln.startswith("[edgecnn setup]")]
    skipped = [ln for ln in said if "not installing system package(s)" in ln]
    assert skipped, proc.stderr
    assert "adb" in skipped[0] and "openssh-client" in skipped[0] and "SSH, adb and delegate tests" in skipped[0]
    assert "EDGECNN_NO_SYSTEM_PACKAGES=1" in skipped[0]
    assert not any(ln.startswith("[edgecnn setup] installing system package") for ln in said), said
    assert any("skip" in ln for ln in said), said
    assert "pytest" in proc.stdout + proc.stderr


def test_dev_sh_announces_packages_before_installing():
    """Every apt-get install in dev.sh goes through apt_install, which says what and why first."""
    script = (REPO / "tools" / "dev.sh").read_text()
    body = script[script.index("apt_install() {"):script.index("\n}\n", script.index("apt_install() {"))]
    assert body.index('say "installing system package(s) $* with apt-get, $why') < body.index("apt-get install")
    calls = [ln for ln in script.splitlines() if "apt-get install" in ln and "say" not in ln
             and not ln.lstrip().startswith("#")]
    assert all("as_root" in ln for ln in calls) and len(calls) == 2, calls  # only inside apt_install
    # Each call names why, as its first argument; the header says which packages, and why.
    calls = [ln.strip() for ln in script.splitlines() if re.search(r"\bapt_install\b", ln)
             and not ln.strip().startswith(("#", "apt_install()"))]
    assert len(calls) == 4 and all(re.search(r'apt_install "[^"$]*(\$VENV[^"]*)?"', ln) for ln in calls), calls
    header = script[:script.index("set -euo pipefail")]
    for package in ("python3.11-venv", "dataset-fashion-mnist", "openssh-server", "openssh-client", "adb",
                    "EDGECNN_NO_SYSTEM_PACKAGES=1"):
        assert package in header, package
