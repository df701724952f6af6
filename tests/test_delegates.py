"""The Coral Edge TPU delegate's success path, through a FAKE ``libedgetpu.so.1``.

No Edge TPU (and no Google Edge TPU runtime) exists on a CI machine, so
``tests/fakes/libedgetpu.c`` is compiled with gcc into a library with the real one's
name and soname and the same external-delegate entry points
(``tflite_plugin_create_delegate`` / ``tflite_plugin_destroy_delegate``). Child processes
find it on ``LD_LIBRARY_PATH`` exactly as they would find the installed runtime, and the
REAL TFLite runtime (ai-edge-litert) loads it, applies it (its ``Prepare`` sees the
model's graph and, as the real delegate does for a model without ``edgetpu-custom-op``,
claims no node) and runs the model on its CPU kernels. Through it run edgecnn's runtime
layer (``make_interpreter(model, delegate="edgetpu", device=...)``), the device runner's
``--delegate edgetpu`` (``make_delegates``, via ``run_local`` on a ``coral`` target) and
``edgecnn demo --delegate edgetpu``; each must load the delegate with the device option
asked for, give the same outputs as the CPU run, and report a missing accelerator in one
line.

What only hardware proves: that a compiled model's operations actually run on the Edge
TPU (here nothing implements ``edgetpu-custom-op``), its latency, the compiled model's
numerics (the TPU's int8 arithmetic may round differently from the CPU kernels), device
enumeration and USB/PCIe behaviour. ``device_tests/test_coral.py`` checks those on a real
accelerator.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, build_fake_libedgetpu, run_edgecnn

from edgecnn.runtime.interpreter import make_interpreter, predict
from edgecnn.targets import parse_target

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the fake libedgetpu")


@pytest.fixture(scope="module")
def fake_lib_dir(tmp_path_factory) -> Path:
    return build_fake_libedgetpu(tmp_path_factory.mktemp("fake-libedgetpu")).parent


@pytest.fixture
def edgetpu(fake_lib_dir, tmp_path, monkeypatch):
    """Child processes find the fake; returns a reader of its trace lines.

    One Edge TPU, ``usb:0``, is "connected"; set ``FAKE_EDGETPU_DEVICES`` to change that.
    """
    trace = tmp_path / "edgetpu-trace.txt"
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{fake_lib_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":"))
    monkeypatch.setenv("FAKE_EDGETPU_TRACE", str(trace))
    monkeypatch.setenv("FAKE_EDGETPU_DEVICES", "usb:0")

    def lines() -> list[str]:
        return trace.read_text().splitlines() if trace.exists() else []

    return lines


def _samples(npz: Path) -> np.ndarray:
    with np.load(npz) as data:
        return data["x"]


# ------------------------------------------------------------------- runtime layer

_RUNTIME_SCRIPT = """
import gc, json, sys
import numpy as np
from edgecnn.errors import DeviceError
from edgecnn.runtime.interpreter import make_interpreter, predict
try:
    interpreter = make_interpreter(sys.argv[1], delegate=sys.argv[4], device=sys.argv[3] or None, threads=1)
except DeviceError as exc:
    gc.collect()  # a half-built Delegate freed here must not print "Exception ignored" either
    print(json.dumps({"error": str(exc)}))
    sys.exit(0)
scores = predict(interpreter, np.load(sys.argv[2])["x"])
del interpreter
gc.collect()
print(json.dumps({"scores": scores.tolist()}))
"""


def _runtime_layer(model: Path, npz: Path, device: str, delegate: str = "edgetpu") -> dict:
    """``make_interpreter(model, delegate=..., device=...)`` in a child: its scores, or its error."""
    proc = subprocess.run([sys.executable, "-c", _RUNTIME_SCRIPT, str(model), str(npz), device, delegate],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # Nothing but the one result: no traceback from the failed Delegate's __del__.
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_runtime_layer_runs_a_model_through_the_edgetpu_delegate(edgetpu, bench_models):
    got = _runtime_layer(bench_models["int8"], bench_models["npz"], "usb:0")
    assert "error" not in got, got["error"]
    # The delegate claims no node, so the CPU kernels compute exactly what they do without it.
    expected = predict(make_interpreter(bench_models["int8"]), _samples(bench_models["npz"]))
    assert np.array_equal(np.asarray(got["scores"], np.float32), expected)
    assert len(np.unique(expected.argmax(axis=-1))) > 1  # not a constant model
    # The runtime created it with the device asked for, showed it the model's 3 nodes (again
    # after each input resize: delegates are re-applied), and freed it.
    trace = edgetpu()
    assert trace[0] == "create device=usb:0" and trace[-1] == "destroy"
    assert len(trace) > 2 and set(trace[1:-1]) == {"prepare nodes=3"}


def test_runtime_layer_says_when_no_edgetpu_is_connected(edgetpu, bench_models, monkeypatch):
    monkeypatch.setenv("FAKE_EDGETPU_DEVICES", "")
    got = _runtime_layer(bench_models["int8"], bench_models["npz"], "usb:0")
    message = got["error"]
    assert "\n" not in message
    assert message.startswith("cannot load the Edge TPU delegate libedgetpu.so.1 (")
    assert "no Edge TPU 'usb:0' is connected" in message and "apt-get install libedgetpu1-std" in message
    assert edgetpu() == ["create device=usb:0: not connected"]


def test_runtime_layer_loads_a_delegate_by_library_path(edgetpu, bench_models, fake_lib_dir):
    got = _runtime_layer(bench_models["int8"], bench_models["npz"], "", delegate=str(fake_lib_dir / "libedgetpu.so.1"))
    assert "error" not in got, got["error"]
    assert edgetpu()[:2] == ["create device=(any)", "prepare nodes=3"]


def test_runtime_layer_names_a_delegate_library_that_does_not_load(edgetpu, bench_models, tmp_path):
    missing = tmp_path / "libnothere.so"
    got = _runtime_layer(bench_models["int8"], bench_models["npz"], "", delegate=str(missing))
    message = got["error"]
    assert "\n" not in message and message.startswith(f"cannot load the delegate {missing} (")
    assert message.endswith("check the path and that the library matches this runtime")
    assert edgetpu() == []


# ------------------------------------------------------------------- device runner


def test_bench_runner_runs_on_the_edgetpu_delegate(edgetpu, bench_models):
    from edgecnn.bench.local import run_local

    coral = run_local(bench_models["int8"], parse_target("coral:usb"), runs=5, warmup=1, timeout_s=120,
                      inputs_npz=bench_models["npz"])
    assert coral["status"] == "ok", coral["reason"]
    assert coral["delegate"] == "edgetpu:libedgetpu.so.1 (device usb)"
    assert edgetpu()[:2] == ["create device=usb", "prepare nodes=3"]
    cpu = run_local(bench_models["int8"], parse_target("local"), runs=5, warmup=1, timeout_s=120,
                    inputs_npz=bench_models["npz"])
    assert cpu["status"] == "ok" and cpu["delegate"] is None
    assert coral["outputs_sha256"] == cpu["outputs_sha256"] and coral["samples"] == cpu["samples"] == 40
    assert coral["accuracy"] == cpu["accuracy"] > 0.5


def test_bench_runner_without_a_connected_edgetpu_fails_in_one_line(edgetpu, bench_models, monkeypatch):
    from edgecnn.bench.local import run_local

    monkeypatch.setenv("FAKE_EDGETPU_DEVICES", "pci:0")  # one is there, but not on USB
    r = run_local(bench_models["int8"], parse_target("coral:usb"), runs=5, warmup=1, timeout_s=120)
    assert r["status"] == "failed" and "\n" not in r["reason"]
    assert "cannot load the Edge TPU delegate libedgetpu.so.1" in r["reason"]
    assert "no Edge TPU 'usb' is connected" in r["reason"]
    assert edgetpu() == ["create device=usb: not connected"]


def test_a_compiled_model_the_delegate_does_not_run_is_explained(edgetpu, bench_models):
    """As with a libedgetpu older than the compiler: the delegate loads but leaves the op alone."""
    from edgecnn.bench.local import run_local

    r = run_local(bench_models["edgetpu"], parse_target("coral:usb"), runs=2, warmup=0, timeout_s=120)
    assert r["status"] == "failed" and "\n" not in r["reason"]
    assert edgetpu()[:1] == ["create device=usb"]
    assert "--target coral" not in r["reason"]  # it is on coral already
    assert "edgetpu-custom-op" in r["reason"] and "edgetpu_compiler" in r["reason"]


# ---------------------------------------------------------------------------- demo


def test_demo_runs_with_the_edgetpu_delegate(edgetpu, bench_models, tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2", reason="the demo needs OpenCV (pip install 'edgecnn[demo]')")
    from helpers import toy_band_data

    from edgecnn.tflite.metadata import write_metadata

    model = tmp_path / "bands_int8.tflite"
    write_metadata(bench_models["int8"], ["left", "middle", "right"], ((0.0,), (255.0,)), input_color="GRAYSCALE",
                   out=model)
    folder = tmp_path / "frames"
    folder.mkdir()
    x, _ = toy_band_data(6, seed=3)
    for i, image in enumerate(x):
        big = cv2.resize((image[..., 0] * 255).astype(np.uint8), (96, 96), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(folder / f"{i}.png"), big)

    def demo(*extra: str) -> list[dict]:
        # The model's scores are logits, often negative: a threshold below all shows the top 3.
        log = tmp_path / f"log{len(extra)}.jsonl"
        proc = run_edgecnn("demo", "--headless", "--model", str(model), "--source", str(folder), "--log", str(log),
                           "--threshold", "-1000", *extra, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line)["predictions"] for line in log.read_text().splitlines()]

    delegated = demo("--delegate", "edgetpu")
    assert len(delegated) == 6 and delegated == demo()
    assert len({p[0]["label"] for p in delegated}) > 1  # the frames are told apart
    assert edgetpu()[:2] == ["create device=(any)", "prepare nodes=3"]

    monkeypatch.setenv("FAKE_EDGETPU_DEVICES", "")
    proc = run_edgecnn("demo", "--headless", "--model", str(model), "--source", str(folder), "--delegate", "edgetpu",
                       timeout=120)
    line = assert_one_line_error(proc, 5, "delegate libedgetpu.so.1", "install the Edge TPU runtime")
    assert line.startswith("error: cannot load the ") and "Failed to load delegate from libedgetpu.so.1" in line
