"""The one runtime layer: ``make_interpreter`` on the real runtimes installed here.

Runtime discovery is the device runner's (``runner.load_runtime``); the host passes its
own TensorFlow import so that TensorFlow is imported only through ``edgecnn._tf`` and
only after LiteRT and tflite-runtime were tried. Delegates (a fake ``libedgetpu``) are in
``test_delegates.py``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from helpers import assert_raised_error

from edgecnn.errors import MissingDependencyError, ModelFileError
from edgecnn.runtime import runner
from edgecnn.runtime.interpreter import RUNTIME_NAMES, make_interpreter, predict, runtime_name_version

litert = pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None,
                            reason="ai-edge-litert is not installed")


def _samples(npz) -> np.ndarray:
    with np.load(npz) as data:
        return data["x"]


def test_the_runtime_table_is_the_runners():
    assert RUNTIME_NAMES == ("ai-edge-litert", "tflite-runtime", "tensorflow")
    assert RUNTIME_NAMES == tuple(name for name, _ in runner.RUNTIMES)


@litert
def test_the_preferred_runtime_is_litert_and_can_be_named(bench_models):
    name, version = runtime_name_version()
    assert name == "ai-edge-litert" and version[0].isdigit()
    assert runtime_name_version("ai-edge-litert") == (name, version)
    default = make_interpreter(bench_models["int8"])
    named = make_interpreter(bench_models["int8"].read_bytes(), runtime="ai-edge-litert", threads=1)
    assert type(default) is type(named) and type(named).__module__.startswith("ai_edge_litert")
    x = _samples(bench_models["npz"])
    assert np.array_equal(predict(default, x), predict(named, x))


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_runtime_tensorflow_runs_the_same_model(bench_models):
    tf_interpreter = make_interpreter(bench_models["int8"], runtime="tensorflow", threads=2)
    assert type(tf_interpreter).__module__.startswith("tensorflow")
    x = _samples(bench_models["npz"])
    scores = predict(tf_interpreter, x)
    # Same int8 kernels (TFLite's reference/optimized CPU ops): at most a step apart.
    reference = predict(make_interpreter(bench_models["int8"]), x)
    assert scores.shape == reference.shape == (40, 3)
    assert (scores.argmax(-1) == reference.argmax(-1)).mean() >= 0.95


def test_a_runtime_that_is_not_installed_is_one_line(bench_models):
    if importlib.util.find_spec("tflite_runtime") is not None:
        pytest.skip("tflite-runtime is installed here")
    with pytest.raises(MissingDependencyError) as exc:
        make_interpreter(bench_models["int8"], runtime="tflite-runtime")
    assert_raised_error(exc, MissingDependencyError, "tflite-runtime is not installed", "pip install tflite-runtime")


def test_bad_arguments_are_refused_before_loading(bench_models, tmp_path):
    with pytest.raises(ValueError, match="runtime must be one of ai-edge-litert, tflite-runtime, tensorflow"):
        make_interpreter(bench_models["int8"], runtime="litert")
    for threads in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive int"):
            make_interpreter(bench_models["int8"], threads=threads)
    with pytest.raises(ValueError, match="device is an option of a delegate"):
        make_interpreter(bench_models["int8"], device="usb")
    with pytest.raises(ModelFileError) as exc:
        make_interpreter(tmp_path / "missing.tflite")
    assert_raised_error(exc, ModelFileError, "missing.tflite: no such file")


@litert
def test_a_model_the_runtime_refuses_is_one_line(bench_models):
    half = bench_models["int8"].read_bytes()[:1500]
    with pytest.raises(ModelFileError) as exc:
        make_interpreter(half, check=False)  # the runtime's own refusal, wrapped
    message = assert_raised_error(exc, ModelFileError, "<model bytes>: ai-edge-litert ", "cannot load it (")
    assert message.endswith("re-export the model, or upgrade the runtime if it uses newer ops")


def test_threads_reach_the_runtime(bench_models):
    """``threads=N`` reaches the interpreter: its CPU thread pool adds N-1 OS threads to the
    process (counted in /proc/self/task, no timing), and the outputs stay equal.

    Run in a fresh process that imports no TensorFlow, so no other library starts threads
    between the counts.
    """
    code = ("import os, sys\n"
            "from edgecnn.runtime.interpreter import make_interpreter\n"
            "def tasks(): return len(os.listdir('/proc/self/task'))\n"
            "for n in (1, 4, 3):\n"
            "    before = tasks()\n"
            "    interpreter = make_interpreter(sys.argv[1], threads=n)\n"
            "    print(n, tasks() - before)\n"
            "    del interpreter\n")
    proc = subprocess.run([sys.executable, "-c", code, str(bench_models["int8"])], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    added = dict(tuple(map(int, line.split())) for line in proc.stdout.splitlines())
    assert added == {1: 0, 4: 3, 3: 2}, proc.stdout
    x = _samples(bench_models["npz"])
    one = predict(make_interpreter(bench_models["int8"], threads=1), x)
    four = predict(make_interpreter(bench_models["int8"], threads=4), x)
    assert np.array_equal(one, four)


def test_no_runtime_at_all_says_how_to_install_one(monkeypatch, bench_models):
    """TensorFlow comes last, and the host probes for it without importing it."""
    import edgecnn.runtime.interpreter as host

    monkeypatch.setattr(runner, "RUNTIMES", (("no-such-runtime", "no_such_pkg.interpreter"),
                                             ("tensorflow", "tensorflow")))
    monkeypatch.setattr(host.importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(MissingDependencyError) as exc:
        make_interpreter(bench_models["int8"])
    assert_raised_error(exc, MissingDependencyError, "no TFLite runtime found", "pip install ai-edge-litert")


@litert
def test_loading_a_model_never_imports_tensorflow(bench_models):
    code = ("import sys; from edgecnn.runtime.interpreter import make_interpreter, runtime_name_version; "
            f"make_interpreter({str(bench_models['int8'])!r}, threads=1); runtime_name_version(); "
            "print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["False"], proc.stderr


def test_the_runner_names_an_unknown_or_missing_runtime():
    with pytest.raises(runner.RunnerFailure, match="unknown TFLite runtime 'litert'; choose one of ai-edge-litert"):
        runner.load_runtime("litert")

    def no_tensorflow():
        raise ImportError("no")

    with pytest.raises(runner.RunnerFailure, match="the TFLite runtime tensorflow is not installed"):
        runner.load_runtime("tensorflow", import_tensorflow=no_tensorflow)
