"""Benchmark harness: device runner, local transport, targets, result schema, parsers, CLI.

One tiny int8 model is converted per session; every runner run is a child process of a
few tenths of a second. Parser fixtures are real tool output copied from public sources
(each cites where it came from).
"""

from __future__ import annotations

import ast
import ctypes.util
import hashlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, assert_raised_error, run_edgecnn

from edgecnn.runtime import runner as rn
from edgecnn.bench.local import run_local
from edgecnn.runtime import RUNNER_PATH
from edgecnn.tflite.reader import EDGETPU_CUSTOM_OP, is_edgetpu_model
from edgecnn.tool_output import (
    parse_benchmark_model,
    parse_byte_size,
    parse_edgetpu_compiler_log,
    parse_number,
)
from edgecnn.bench.schema import (
    RESULT_FIELDS,
    SCHEMA_VERSION,
    append_result,
    compare,
    failed_result,
    format_compare,
    load_results,
    new_result,
    validate_result,
)
from edgecnn.targets import parse_target
from edgecnn.errors import DeviceError, ModelFileError

REPO = Path(__file__).resolve().parents[1]
LOCAL = parse_target("local")  # the transports take parsed targets (the text is parsed where it enters)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def models(bench_models):
    """A tiny int8 classifier, a copy carrying the Edge TPU custom op, and labelled samples
    (built once per session by ``helpers.build_bench_models``, shared with the SSH, adb and
    compile tests)."""
    return bench_models


@pytest.fixture(scope="module")
def local_result(models):
    """One local run with labelled inputs, shared by the checks below."""
    return run_local(models["int8"], LOCAL, threads=1, runs=40, warmup=3, timeout_s=60,
                     inputs_npz=models["npz"])


def _host_outputs(model: Path, npz: Path) -> tuple[float, str]:
    """Accuracy and raw-output sha256 computed here with ai_edge_litert directly."""
    from edgecnn.runtime.interpreter import evaluate_tflite, input_specs, make_interpreter, quantize_input

    data = np.load(npz)
    accuracy = evaluate_tflite(model, data["x"], data["y"], num_threads=1)
    interpreter = make_interpreter(model, threads=1)
    spec = input_specs(interpreter)[0]
    digest = hashlib.sha256()
    for sample in data["x"]:
        interpreter.set_tensor(spec.index, quantize_input(sample[None], spec))
        interpreter.invoke()
        for detail in interpreter.get_output_details():
            digest.update(interpreter.get_tensor(detail["index"]).tobytes())
    return accuracy, digest.hexdigest()


# ---------------------------------------------------------------- runner, local runs


def test_local_result_fields_are_consistent(local_result, models):
    r = local_result
    assert r["status"] == "ok", r["reason"]
    assert list(r) == list(RESULT_FIELDS)
    assert r["schema"] == SCHEMA_VERSION and r["target"] == "local"
    assert r["runtime"]["name"] == "ai-edge-litert" and r["runtime"]["version"]
    assert (r["threads"], r["runs"], r["warmup"]) == (1, 40, 3)
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0
    assert math.isclose(r["throughput_ips"], 1000.0 / lat["mean"], rel_tol=1e-9)
    assert r["init_ms"] > 0 and r["first_inference_ms"] > 0
    assert r["peak_rss_kb"] > 10_000  # Python + numpy + the runtime: tens of MiB
    assert 0 < r["startup_s"] < 60
    assert r["model"]["sha256"] == hashlib.sha256(models["int8"].read_bytes()).hexdigest()
    assert r["model"]["size_bytes"] == models["int8"].stat().st_size
    assert set(r["host"]) == {"hostname", "machine", "system", "python"}
    assert validate_result(r) == r


def test_device_side_accuracy_matches_host_evaluation(local_result, models):
    accuracy, sha = _host_outputs(models["int8"], models["npz"])
    assert local_result["samples"] == 40
    assert local_result["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert local_result["outputs_sha256"] == sha


def test_hung_runner_is_killed_at_the_timeout(models):
    start = time.monotonic()
    r = run_local(models["int8"], LOCAL, runs=5, timeout_s=2, extra_runner_args=["--debug-hang"])
    elapsed = time.monotonic() - start
    assert r["status"] == "failed" and "timed out after 2 s" in r["reason"]
    assert elapsed < 2 + 2, elapsed
    assert validate_result(r)["latency_ms"] is None


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_crashing_runtime_is_reported_with_the_signal(models):
    r = run_local(models["int8"], LOCAL, runs=5, timeout_s=30, extra_runner_args=["--debug-crash"])
    assert r["status"] == "failed"
    assert "SIGABRT" in r["reason"] and "exit -6" in r["reason"], r["reason"]


def test_edgetpu_model_on_a_cpu_target_is_one_line_device_error(models):
    from edgecnn.tflite.reader import inspect_tflite

    assert is_edgetpu_model(inspect_tflite(models["edgetpu"]))
    assert not is_edgetpu_model(inspect_tflite(models["int8"]))
    with pytest.raises(DeviceError) as info:
        run_local(models["edgetpu"], LOCAL, runs=5)
    assert_raised_error(info, DeviceError, "Edge TPU-compiled", "--target coral")


def test_non_tflite_model_is_model_file_error(tmp_path):
    bogus = tmp_path / "model.tflite"
    bogus.write_text("not a model at all, just text\n")
    with pytest.raises(ModelFileError) as info:
        run_local(bogus, LOCAL)
    assert_raised_error(info, ModelFileError, "model.tflite", "not a TFLite flatbuffer")


def test_runner_turns_every_failure_into_json(models, tmp_path):
    """Run the runner by hand, bypassing the host checks: it must still print a result."""
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"\x00" * 64)
    for model, needle in ((bogus, "not a TFLite model"), (models["edgetpu"], "run it with --target coral"),
                          (tmp_path / "missing.tflite", "cannot read the model")):
        proc = subprocess.run([sys.executable, "-P", str(RUNNER_PATH), str(model), "--runs", "3"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc.stderr
        result = validate_result(json.loads(proc.stdout))
        assert result["status"] == "failed" and needle in result["reason"], result["reason"]


@pytest.mark.skipif(bool(ctypes.util.find_library("edgetpu")), reason="an Edge TPU runtime is installed")
def test_coral_without_the_runtime_says_how_to_install_it(models):
    r = run_local(models["int8"], parse_target("coral:usb"), runs=5, timeout_s=60)
    assert r["status"] == "failed" and r["target"] == "coral:usb"
    assert "libedgetpu" in r["reason"] and "apt-get install libedgetpu1-std" in r["reason"]
    assert r["delegate"] == "edgetpu:libedgetpu.so.1 (device usb)"


def test_runner_is_standalone_and_python37_syntax():
    source = RUNNER_PATH.read_text()
    tree = ast.parse(source, feature_version=(3, 7))  # walrus, match, X | Y... would fail
    runtimes = {"ai_edge_litert", "tflite_runtime", "tensorflow", "numpy"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in runtimes, f"runner imports {name}"
    # No annotations at all: nothing for an old Python to evaluate, no __future__ needed.
    annotated = [n for n in ast.walk(tree) if isinstance(n, ast.AnnAssign)
                 or (isinstance(n, ast.arg) and n.annotation is not None)
                 or (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns is not None)]
    assert not annotated, [getattr(n, "lineno", None) for n in annotated]
    assert rn.EDGETPU_CUSTOM_OP == EDGETPU_CUSTOM_OP


def test_runner_thermal_parsing():
    assert rn.parse_vcgencmd_temp("temp=48.3'C\n") == 48.3
    assert rn.parse_vcgencmd_temp("error") is None
    value, flags = rn.parse_throttled("throttled=0x50005\n")
    assert value == 0x50005
    assert flags == ["under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"]
    assert rn.parse_throttled("nonsense") == (None, [])
    past_only = {"source": "vcgencmd", "temp_c": 50.0, "throttled_raw": "0x50000", "flags": []}
    now = {"source": "vcgencmd", "temp_c": 81.0, "throttled_raw": "0x4", "flags": ["throttled"]}
    assert rn.thermal_summary(past_only, past_only)["throttled"] is False
    assert rn.thermal_summary(past_only, now)["throttled"] is True
    assert rn.thermal_summary(None, None) is None


def test_runner_quantize_matches_the_library():
    from edgecnn.runtime.interpreter import IoSpec, quantize_input

    x = np.array([-1.0, -0.5, -0.0039, 0.0, 0.00196, 0.25, 0.5, 1.0, 3.0], np.float32)
    for dtype, scale, zp in ((np.int8, 1 / 255, -128), (np.uint8, 1 / 128, 128), (np.int16, 1e-4, 0)):
        spec = IoSpec("x", 0, (9,), (9,), np.dtype(dtype), scale, zp)
        ours = rn.quantize(x, {"dtype": dtype, "quantization": (scale, zp)})
        np.testing.assert_array_equal(ours, quantize_input(x, spec))


# -------------------------------------------------------------------------- targets


@pytest.mark.parametrize("text, expected", [
    ("local", dict(kind="local")),
    ("ssh://pi@raspberrypi", dict(kind="ssh", user="pi", host="raspberrypi", port=None)),
    ("ssh://pi@192.168.1.20:2222", dict(kind="ssh", user="pi", host="192.168.1.20", port=2222)),
    ("ssh://jetson.local", dict(kind="ssh", user=None, host="jetson.local")),
    ("ssh://root@[fe80::1]:22", dict(kind="ssh", user="root", host="fe80::1", port=22)),
    ("coral", dict(kind="coral", device=None)),
    ("coral:usb", dict(kind="coral", device="usb")),
    ("coral:pci", dict(kind="coral", device="pci")),
    ("coral:usb:1", dict(kind="coral", device="usb:1")),
    ("coral:0", dict(kind="coral", device=":0")),
    ("android", dict(kind="android", serial=None)),
    ("android:R58M123ABC", dict(kind="android", serial="R58M123ABC")),
    ("android:192.168.1.5:5555", dict(kind="android", serial="192.168.1.5:5555")),
])
def test_parse_target(text, expected):
    target = parse_target(text)
    assert target.text == text
    for key, value in expected.items():
        assert getattr(target, key) == value, key


@pytest.mark.parametrize("text, needles", [
    ("corl", ("unknown target 'corl'", "did you mean 'coral'?", "ssh://user@host[:port]")),
    ("andriod:abc", ("did you mean 'android'?",)),
    ("lokal", ("did you mean 'local'?",)),
    ("gpu", ("unknown target 'gpu'", "coral[:usb|:pci][:N]")),
    ("", ("unknown target ''",)),
    (" local", ("unknown target",)),
    ("local:2", ("bad local target",)),
    ("coral:usb:x", ("bad coral target", "coral:usb:N")),
    ("coral:tpu", ("bad coral target",)),
    ("ssh:pi@host", ("bad ssh target", "ssh://user@host")),
    ("ssh://pi@host:99999", ("bad ssh target", "port")),
    ("ssh://pi@host/path", ("bad ssh target",)),
    ("ssh://-oProxyCommand=evil@host", ("bad ssh target", "user name")),
    ("ssh://pi@-oProxyCommand=evil", ("bad ssh target", "host")),
    ("android:-s", ("bad android target", "adb devices")),
    ("android:a b", ("bad android target",)),
])
def test_bad_target_is_one_line_with_the_valid_forms(text, needles):
    with pytest.raises(DeviceError) as info:
        parse_target(text)
    assert_raised_error(info, DeviceError, *needles)


# ----------------------------------------------------------------------------- schema


def _ok_result(p50=2.0, **over):
    lat = {"mean": p50 * 1.1, "std": 0.2, "min": p50 * 0.9, "p50": p50, "p90": p50 * 1.3,
           "p99": p50 * 1.6, "max": p50 * 2}
    model = {"path": "/m/student_int8.tflite", "sha256": "a" * 64, "size_bytes": 1000}
    fields = dict(runtime={"name": "ai-edge-litert", "version": "2.3.0"}, threads=1, runs=100, warmup=10,
                  init_ms=5.0, first_inference_ms=3.0, latency_ms=lat, throughput_ips=1000 / lat["mean"],
                  peak_rss_kb=51200, accuracy=0.9)
    fields.update(over)
    return new_result(fields.pop("target", "local"), model, **fields)


def test_compare_rows_and_ratios():
    a, b = _ok_result(2.0), _ok_result(4.0, accuracy=0.8, peak_rss_kb=102400, target="coral:usb")
    rows = {row.label: row for row in compare(a, b)}
    assert rows["p50 latency (ms)"].ratio == pytest.approx(2.0)
    assert rows["mean latency (ms)"].ratio == pytest.approx(2.0)
    assert rows["throughput (samples/s)"].ratio == pytest.approx(0.5)
    assert rows["peak RSS (MiB)"].a == 50 and rows["peak RSS (MiB)"].ratio == pytest.approx(2.0)
    assert rows["accuracy"].ratio == pytest.approx(0.8 / 0.9)
    assert rows["target"].b == "coral:usb" and rows["target"].ratio is None
    failed = failed_result("local", a["model"], "timed out after 5 s")
    rows = {row.label: row for row in compare(a, failed)}
    assert rows["p50 latency (ms)"].ratio is None and rows["status"].b.startswith("failed: timed out")
    table = format_compare(compare(a, b), "a.json", "b.json")
    line = next(ln for ln in table.splitlines() if ln.startswith("p50 latency"))
    assert "2.00x" in line and "4.00" in line
    assert table.splitlines()[0].split() == ["a.json", "b.json", "b/a"]


@pytest.mark.parametrize("mutate, needle", [
    (lambda r: r.update(schema="edgecnn.bench/0"), "schema"),
    (lambda r: r.update(status="great"), "status"),
    (lambda r: r["latency_ms"].update(p50=float("nan")), "latency_ms.p50"),
    (lambda r: r["latency_ms"].update(p90=0.1), "not ordered"),
    (lambda r: r.update(latency_ms=None), "latency_ms is missing"),
    (lambda r: r.update(status="failed", reason=None), "no reason"),
    (lambda r: r.update(threads="four"), "threads"),
    (lambda r: r.update(accuracy=1.5), "accuracy"),
    (lambda r: r.update(peak_rss_kb=-5), "peak_rss_kb"),
    (lambda r: r.update(runs=True), "runs"),
    (lambda r: r["model"].update(sha256="zz"), "sha256"),
    (lambda r: r.pop("host"), "'host' is missing"),
    (lambda r: r.update(thermal={"before": None, "after": None, "throttled": "yes"}), "throttled"),
])
def test_validate_result_rejects_malformed_device_output(mutate, needle):
    result = json.loads(json.dumps(_ok_result()))
    mutate(result)
    with pytest.raises(DeviceError) as info:
        validate_result(result, "result from pi")
    assert_raised_error(info, DeviceError, "result from pi", needle)


def test_validate_result_cleans_text_and_drops_unknown_fields():
    result = _ok_result(target="local\x1b[31m\nevil", reason=None)
    result["extra"] = "dropped"
    result["details"] = {"note": "x" * 5000}
    clean = validate_result(result)
    assert "extra" not in clean and "\n" not in clean["target"] and "\x1b" not in clean["target"]
    assert len(clean["details"]["note"]) <= 1000
    with pytest.raises(DeviceError):
        validate_result(["not", "a", "dict"])


def test_append_result_json_lines_and_json_list(tmp_path):
    first, second = _ok_result(1.0), failed_result("coral", {"path": "m", "sha256": None, "size_bytes": None},
                                                  "runtime crashed\nwith signal SIGSEGV")
    path = append_result(tmp_path, first)
    assert path == tmp_path / "bench.jsonl"
    append_result(tmp_path, second)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(ln)["schema"] == SCHEMA_VERSION for ln in lines)
    loaded = load_results(tmp_path)
    assert [r["status"] for r in loaded] == ["ok", "failed"]
    assert loaded[1]["reason"] == "runtime crashed with signal SIGSEGV"
    assert not list(tmp_path.glob(".tmp-*"))
    as_list = append_result(tmp_path / "all.json", first)
    append_result(as_list, second)
    assert len(json.loads(as_list.read_text())) == 2 and len(load_results(as_list)) == 2
    single = tmp_path / "one.json"
    single.write_text(json.dumps(first, indent=2))
    assert load_results(single)[0]["latency_ms"]["p50"] == 1.0
    (tmp_path / "junk.json").write_text("{nope")
    with pytest.raises(DeviceError) as info:
        load_results(tmp_path / "junk.json")
    assert_raised_error(info, DeviceError, "junk.json", "not JSON")


# ---------------------------------------------------------------------------- parsers

# https://github.com/NobuoTsukamoto/meta-tensorflow-lite/blob/main/doc/tensorflow-lite-benchmark.md
# (benchmark_model on qemuriscv64, with --enable_op_profiling=true; profiler tables cut,
# their "Timings (microseconds)" summaries kept). Also what the fake adb's benchmark_model prints.
BENCHMARK_MODEL_RISCV = (Path(__file__).parent / "data/benchmark_model_riscv64.log").read_text()

# https://github.com/lp6m/yolov5s_android/blob/master/benchmark/README.md
# (Xiaomi Mi11, benchmark_model built from TensorFlow v2.4.0: older memory line).
BENCHMARK_MODEL_MI11 = """\
count=50 first=96719 curr=90158 min=89745 max=96719 avg=92571.2 std=1638
Inference timings in us: Init: 365972, First inference: 120877, Warmup (avg): 108605, Inference (avg): 92571.2
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=6.90625 overall=61.0547
"""

# Same source: NNAPI delegate failure.
BENCHMARK_MODEL_FAILED = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/yolov5s_int8_640.tflite]
Loaded model /data/local/tmp/yolov5s_int8_640.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for NNAPI.
ERROR: NN API returned error ANEURALNETWORKS_OP_FAILED at line 3779 while completing NNAPI compilation.

ERROR: Node number 248 (TfLiteNnapiDelegate) failed to prepare.

ERROR: Restored original execution plan after delegate application failure.
Failed to apply NNAPI delegate.
Benchmarking failed.
"""

# Android benchmark APK read through `adb logcat -d -s tflite` (logcat prefix, newer
# Stat line with p5/median/p95), from a published device report on GitHub; CRLF line
# ends as adb on Windows delivers them. Memory peak lines per benchmark_model.cc.
BENCHMARK_MODEL_LOGCAT = (
    "07-14 13:14:52.115 22838 22838 I tflite  : Replacing 539 out of 548 node(s) with delegate "
    "(TfLiteXNNPackDelegate) node, yielding 19 partitions for subgraph 0.\r\n"
    "07-14 13:14:52.190 22838 22838 I tflite  : Initialized session in 92.318ms.\r\n"
    "07-14 13:14:52.859 22838 22838 I tflite  : count=3 first=235158 curr=200386 min=199462 max=235158 "
    "avg=211669 std=16613 p5=199462 median=200386 p95=235158\r\n"
    "07-14 13:14:56.520 22838 22838 I tflite  : count=25 first=187533 curr=140990 min=140071 max=195121 "
    "avg=145528 std=13583 p5=140545 median=141253 p95=187533\r\n"
    "07-14 13:14:56.521 22838 22838 I tflite  : Inference timings in us: Init: 92318, First inference: "
    "235158, Warmup (avg): 211669, Inference (avg): 145528\r\n"
    "07-14 13:14:56.521 22838 22838 I tflite  : Memory footprint delta from the start of the tool (MB): "
    "init=54.2852 overall=73.4102\r\n"
    "07-14 13:14:56.521 22838 22838 I tflite  : Overall peak memory footprint (MB) via periodic monitoring: 75.25\r\n"
)


def test_parse_number_exponent_notation():
    assert parse_number("2.95034e+06") == 2950340.0
    assert parse_number("1100.5") == 1100.5 and parse_number("-3") == -3 and parse_number("1E-3") == 0.001
    with pytest.raises(ValueError):
        parse_number("12ms")


def test_parse_benchmark_model_exponents_and_profiler_lines():
    r = parse_benchmark_model(BENCHMARK_MODEL_RISCV)
    assert r["runs"] == 50 and r["warmup"] == 1
    assert r["latency_ms"]["mean"] == pytest.approx(2950.34)  # avg=2.95034e+06, not the profiler's
    assert r["latency_ms"]["min"] == pytest.approx(2727.568) and r["latency_ms"]["max"] == pytest.approx(3189.954)
    assert r["latency_ms"]["std"] == pytest.approx(109.798)
    assert r["latency_ms"]["p50"] is None  # this build prints no percentiles
    assert r["init_ms"] == pytest.approx(17.187) and r["first_inference_ms"] == pytest.approx(3512.391)
    assert r["details"]["warmup_avg_ms"] == pytest.approx(3512.39)
    assert r["details"]["memory_overall_mb"] == pytest.approx(46.0859)
    assert r["throughput_ips"] == pytest.approx(1000 / 2950.34)
    assert r["peak_rss_kb"] is None  # footprint deltas are not RSS


def test_parse_benchmark_model_older_memory_line():
    r = parse_benchmark_model(BENCHMARK_MODEL_MI11)
    assert r["runs"] == 50 and r["warmup"] is None
    assert r["latency_ms"]["mean"] == pytest.approx(92.5712)
    assert r["init_ms"] == pytest.approx(365.972) and r["first_inference_ms"] == pytest.approx(120.877)
    assert r["details"]["memory_init_mb"] == pytest.approx(6.90625)


def test_parse_benchmark_model_logcat_percentiles_and_peak_memory():
    r = parse_benchmark_model(BENCHMARK_MODEL_LOGCAT)
    assert r["runs"] == 25 and r["warmup"] == 3
    lat = r["latency_ms"]
    assert (lat["min"], lat["p50"], lat["max"]) == pytest.approx((140.071, 141.253, 195.121))
    assert lat["p90"] is None and r["details"]["p95_ms"] == pytest.approx(187.533)
    assert r["peak_rss_kb"] == round(75.25 * 1024)
    assert r["details"]["delegated"] == [{"nodes": 539, "of": 548, "delegate": "TfLiteXNNPackDelegate"}]
    # The parsed figures fit the result schema as they are.
    result = new_result("android", {"path": "best_int8.tflite", "sha256": None, "size_bytes": None},
                        threads=4, **r)
    assert validate_result(result)["latency_ms"]["p50"] == pytest.approx(141.253)


def test_parse_benchmark_model_failure_quotes_the_error():
    with pytest.raises(DeviceError) as info:
        parse_benchmark_model(BENCHMARK_MODEL_FAILED)
    assert_raised_error(info, DeviceError, "no timings", "ANEURALNETWORKS_OP_FAILED")


# https://github.com/google-coral/edgetpu/issues/60 (compiler 2.1, -s; the table is cut
# after the rows the issue shows in full).
EDGETPU_V2_1 = """\
edgetpu_compiler -s model2.tflite
Edge TPU Compiler version 2.1.302470888

Model compiled successfully in 12264 ms.

Input model: model2.tflite
Input size: 8.11MiB
Output model: model2_edgetpu.tflite
Output size: 9.47MiB
On-chip memory used for caching model parameters: 6.86MiB
On-chip memory remaining for caching model parameters: 7.75KiB
Off-chip memory used for streaming uncached model parameters: 1.22MiB
Number of Edge TPU subgraphs: 1
Total number of operations: 93
Operation log: model2_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 83
Number of operations that will run on CPU: 10

Operator                       Count      Status

LOGISTIC                       1          More than one subgraph is not supported
ADD                            10         Mapped to Edge TPU
CONCATENATION                  1          More than one subgraph is not supported
CONCATENATION                  3          Mapped to Edge TPU
"""

# https://github.com/google-coral/edgetpu/issues/173 (compiler 14.1 without -s: no
# table, the advice wrapped over several lines).
EDGETPU_V14_NO_TABLE = """\
$ edgetpu_compiler T1_no_summ_02_quant8.tflite
Edge TPU Compiler version 14.1.317412892

Model compiled successfully in 113 ms.

Input model: T1_no_summ_02_quant8.tflite
Input size: 28.19KiB
Output model: T1_no_summ_02_quant8_edgetpu.tflite
Output size: 116.78KiB
On-chip memory used for caching model parameters: 60.00KiB
On-chip memory remaining for caching model parameters: 7.96MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 24
Operation log: T1_no_summ_02_quant8_edgetpu.log

Model successfully compiled but not all operations are supported by the
Edge TPU. A percentage of the model will instead run on the CPU, which is
slower. If possible, consider updating your model to use only operations
supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 6
Number of operations that will run on CPU: 18
See the operation log file for individual operation details.
"""

# https://github.com/rajansaini691/retinanet-model-tflite/blob/master/tiny_yolo_edgetpu.log
# (the operation log file the compiler writes next to the model).
EDGETPU_LOG_FILE = """\
Edge TPU Compiler version 14.1.317412892
Input: tiny_yolo.tflite
Output: tiny_yolo_edgetpu.tflite

Operator                       Count      Status

CONCATENATION                  1          More than one subgraph is not supported
MAX_POOL_2D                    6          Mapped to Edge TPU
RESIZE_NEAREST_NEIGHBOR        1          Operation version not supported
CONV_2D                        11         Mapped to Edge TPU
CONV_2D                        2          More than one subgraph is not supported
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
QUANTIZE                       1          More than one subgraph is not supported
QUANTIZE                       2          Mapped to Edge TPU
"""

# https://github.com/WongKinYiu/yolov7/pull/1672 (compiler 16.0 with -d search, all
# operations mapped, so no "Number of operations that will run" lines; the table is cut
# after the rows the pull request shows in full).
EDGETPU_V16_ALL_MAPPED = """\
Edge TPU Compiler version 16.0.384591198
Searching for valid delegate with step 10
Try to compile segment with 246 ops
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 3133 ms.

Input model: runs/train/exp8/weights/best-int8.tflite
Input size: 6.00MiB
Output model: runs/train/exp8/weights/best-int8_edgetpu.tflite
Output size: 6.47MiB
On-chip memory used for caching model parameters: 5.90MiB
On-chip memory remaining for caching model parameters: 1.16MiB
Off-chip memory used for streaming uncached model parameters: 41.75KiB
Number of Edge TPU subgraphs: 1
Total number of operations: 246
Operation log: runs/train/exp8/weights/best-int8_edgetpu.log

Operator                       Count      Status

ADD                            3          Mapped to Edge TPU
RESHAPE                        6          Mapped to Edge TPU
MAX_POOL_2D                    4          Mapped to Edge TPU
CONCATENATION                  18         Mapped to Edge TPU
PAD                            4          Mapped to Edge TPU
LOGISTIC                       64         Mapped to Edge TPU
RESIZE_NEAREST_NEIGHBOR        2          Mapped to Edge TPU
QUANTIZE                       5          Mapped to Edge TPU
"""

# https://github.com/dbro/frigate-detector-edgetpu-yolo9/blob/main/README.md (compiler
# output of a YOLOv9 export: full table, followed by the compiler's closing lines).
EDGETPU_YOLOV9_FULL_TABLE = """Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 719
Number of operations that will run on CPU: 31

Operator                       Count      Status

SOFTMAX                        3          Mapped to Edge TPU
STRIDED_SLICE                  16         Mapped to Edge TPU
PAD                            2          Mapped to Edge TPU
TRANSPOSE                      2          Operation is otherwise supported, but not mapped due to some unspecified limitation
TRANSPOSE                      1          More than one subgraph is not supported
TRANSPOSE                      14         Mapped to Edge TPU
SPLIT                          6          Mapped to Edge TPU
ADD                            48         Mapped to Edge TPU
ADD                            6          More than one subgraph is not supported
SUB                            6          More than one subgraph is not supported
QUANTIZE                       5          Mapped to Edge TPU
MAXIMUM                        3          Mapped to Edge TPU
AVERAGE_POOL_2D                5          Mapped to Edge TPU
GATHER                         6          Operation not supported
MINIMUM                        3          Mapped to Edge TPU
CONCATENATION                  33         Mapped to Edge TPU
CONCATENATION                  6          More than one subgraph is not supported
MAX_POOL_2D                    3          Mapped to Edge TPU
RESHAPE                        9          Mapped to Edge TPU
FULLY_CONNECTED                3          Mapped to Edge TPU
LOGISTIC                       182        Mapped to Edge TPU
CONV_2D                        203        Mapped to Edge TPU
MUL                            179        Mapped to Edge TPU
MUL                            4          More than one subgraph is not supported
RESIZE_NEAREST_NEIGHBOR        2          Mapped to Edge TPU
Compilation child process completed within timeout period.
Compilation succeeded! 
"""

# https://github.com/google-coral/edgetpu/issues/189
EDGETPU_INTERNAL_ERROR = """\
Edge TPU Compiler version 14.1.317412892
Internal compiler error. Aborting!
"""


def test_parse_byte_size_units():
    assert parse_byte_size("4.50KiB") == 4608
    assert parse_byte_size("1.23MiB") == round(1.23 * 1024 ** 2)
    assert parse_byte_size("0.00B") == 0
    assert parse_byte_size("12 KB") == 12000
    with pytest.raises(ValueError):
        parse_byte_size("12 parsecs")


def test_parse_edgetpu_log_summary_counts_and_table():
    r = parse_edgetpu_compiler_log(EDGETPU_V2_1)
    assert r["compiler_version"] == "2.1.302470888" and r["compiled"] is True
    assert r["compile_ms"] == 12264
    assert r["on_chip_memory_used_bytes"] == round(6.86 * 1024 ** 2)
    assert r["on_chip_memory_remaining_bytes"] == round(7.75 * 1024)
    assert r["off_chip_memory_used_bytes"] == round(1.22 * 1024 ** 2)
    assert r["subgraphs"] == 1 and r["total_ops"] == 93
    assert (r["ops_on_tpu"], r["ops_on_cpu"]) == (83, 10)  # the summary lines, not the cut table
    assert r["ops_by_operator"]["CONCATENATION"] == {"tpu": 3, "cpu": 1}
    assert r["cpu_fallback_ops"] == ["CONCATENATION", "LOGISTIC"]
    assert r["cpu_fallback_reasons"]["LOGISTIC"] == ["More than one subgraph is not supported"]
    assert r["output_model"] == "model2_edgetpu.tflite" and r["errors"] == []


def test_parse_edgetpu_log_without_table():
    r = parse_edgetpu_compiler_log(EDGETPU_V14_NO_TABLE)
    assert (r["ops_on_tpu"], r["ops_on_cpu"], r["total_ops"]) == (6, 18, 24)
    assert r["off_chip_memory_used_bytes"] == 0 and r["on_chip_memory_used_bytes"] == 60 * 1024
    assert r["has_operator_table"] is False and r["cpu_fallback_ops"] == []


def test_parse_edgetpu_operation_log_file():
    r = parse_edgetpu_compiler_log(EDGETPU_LOG_FILE)
    assert r["input_model"] == "tiny_yolo.tflite" and r["output_model"] == "tiny_yolo_edgetpu.tflite"
    assert (r["ops_on_tpu"], r["ops_on_cpu"]) == (19, 6)
    assert r["ops_by_operator"]["QUANTIZE"] == {"tpu": 2, "cpu": 2}
    assert r["cpu_fallback_ops"] == ["CONCATENATION", "CONV_2D", "QUANTIZE", "RESIZE_NEAREST_NEIGHBOR"]
    assert len(r["cpu_fallback_reasons"]["QUANTIZE"]) == 2
    assert r["subgraphs"] is None and r["compiled"] is True


def test_parse_edgetpu_log_all_mapped_v16():
    r = parse_edgetpu_compiler_log(EDGETPU_V16_ALL_MAPPED)
    assert r["compiler_version"] == "16.0.384591198" and r["compile_ms"] == 3133
    assert r["off_chip_memory_used_bytes"] == round(41.75 * 1024)
    assert r["cpu_fallback_ops"] == [] and r["ops_on_cpu"] == 0
    assert r["ops_on_tpu"] == 106  # from the table rows shown (the full table sums to 246)
    assert len(r["operators"]) == 8


def test_parse_edgetpu_full_table_agrees_with_the_summary():
    r = parse_edgetpu_compiler_log(EDGETPU_YOLOV9_FULL_TABLE)
    assert (r["ops_on_tpu"], r["ops_on_cpu"]) == (719, 31)
    assert sum(c["tpu"] for c in r["ops_by_operator"].values()) == 719
    assert sum(c["cpu"] for c in r["ops_by_operator"].values()) == 31
    assert len(r["operators"]) == 25  # "Compilation child process …" ends the table
    assert r["cpu_fallback_ops"] == ["ADD", "CONCATENATION", "GATHER", "MUL", "SUB", "TRANSPOSE"]
    assert r["cpu_fallback_reasons"]["GATHER"] == ["Operation not supported"]
    assert r["compiled"] is True


def test_parse_edgetpu_log_failure_and_segments():
    r = parse_edgetpu_compiler_log(EDGETPU_INTERNAL_ERROR)
    assert r["compiled"] is False and r["errors"] == ["Internal compiler error. Aborting!"]
    assert r["ops_on_tpu"] is None and r["total_ops"] is None
    # A segmented compile prints one block per segment; totals are summed.
    two = parse_edgetpu_compiler_log(EDGETPU_V2_1 + EDGETPU_V14_NO_TABLE)
    assert len(two["segments"]) == 2
    assert two["total_ops"] == 93 + 24 and (two["ops_on_tpu"], two["ops_on_cpu"]) == (83 + 6, 10 + 18)
    assert two["off_chip_memory_used_bytes"] == round(1.22 * 1024 ** 2)
    assert two["compile_ms"] == 12264 + 113


# -------------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_edgecnn(*args, cwd=REPO, timeout=120)


def test_bench_help_does_not_import_tensorflow():
    code = ("import sys\nfrom edgecnn.cli import main\ntry:\n"
            "    main(['bench', '--help'], standalone_mode=False)\nfinally:\n"
            "    print('HEAVY=' + ','.join(m for m in ('tensorflow', 'tf_keras', 'keras', 'ai_edge_litert') "
            "if m in sys.modules), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--target" in proc.stdout and "--compare" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "HEAVY="


def test_bench_cli_bad_input_is_one_line(models, tmp_path):
    assert_one_line_error(_cli("bench", str(models["int8"]), "--target", "corl"), 5, "did you mean 'coral'?")
    text = tmp_path / "notes.tflite"
    text.write_text("hello, this is text\n")
    assert_one_line_error(_cli("bench", str(text)), 4, "not a TFLite flatbuffer")
    assert_one_line_error(_cli("bench", str(models["edgetpu"])), 5, "--target coral")
    # Bad SSH options fail before any connection is tried (nothing is looked up).
    assert_one_line_error(_cli("bench", str(models["int8"]), "--target", "ssh://pi@raspberrypi",
                               "--identity", str(tmp_path / "no_such_key")), 5, "--identity", "no_such_key")


def test_bench_cli_compare(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.jsonl"
    a.write_text(json.dumps(_ok_result(2.0)))
    append_result(b, _ok_result(9.0))
    append_result(b, _ok_result(3.0))  # the last result in a file is the one compared
    proc = _cli("bench", "--compare", str(a), str(b))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("p50 latency"))
    assert "1.50x" in line
