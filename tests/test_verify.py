"""``edgecnn verify``: the output comparison rule, the runner's raw outputs, and verify over SSH.

The comparison tests use the figures measured on real runtimes (issue #10: x86
tflite-runtime 2.14 up to 18 quantization steps and one top-1 flip in 32, arm64
ai-edge-litert 2.3 up to 12 steps, arm64 tflite-runtime 2.14 top-1 0.94, float outputs
~2e-6) for the quickstart student (67 operators). The SSH tests run verify against the
real OpenSSH server of ``test_bench_ssh`` on 127.0.0.1, whose "device" Python is this
interpreter with ai-edge-litert; the bundle is made from a tiny classifier and seeded
images, so no data set is needed.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import numpy as np
import pytest
from helpers import FASHION_LABELS, run_edgecnn, tiny_bundle
from test_bench_ssh import _start_sshd, _stop

from edgecnn.runtime import runner as rn
from edgecnn.bench.local import run_local
from edgecnn.bench.verify import compare_outputs, format_verify, verify_bundle
from edgecnn.bundle_layout import BUNDLE_MANIFEST, MIN_TOP1_AGREEMENT, float_tolerance, tolerance_steps
from edgecnn.fileio import sha256_file
from edgecnn.targets import parse_target

LOCAL = parse_target("local")
QUICKSTART_OPS = 67  # operators in the quickstart student_int8.tflite (edgecnn inspect)
SOFTMAX_SCALE = 1 / 256  # its uint8 softmax output


# ------------------------------------------------------------------ the comparison rule


def test_tolerance_grows_with_depth_as_three_sigma_of_a_random_walk():
    assert [tolerance_steps(n) for n in (1, 4, 9, 67, 100)] == [3, 6, 9, 25, 30]
    assert tolerance_steps(QUICKSTART_OPS) == math.ceil(3 * math.sqrt(67))
    assert float_tolerance(65, np.zeros(3)) == pytest.approx(3 * math.sqrt(65) * 32 * np.finfo(np.float32).eps)
    # Scaled by the output's magnitude for logits larger than 1.
    assert float_tolerance(4, np.array([-20.0, 3.0])) == pytest.approx(20 * float_tolerance(4, np.zeros(1)))


def _softmax_like(n=32, classes=10, seed=0):
    """uint8 softmax-like golden rows with a clear winner (margin >= 60 steps)."""
    rng = np.random.RandomState(seed)
    out = rng.randint(0, 30, (n, classes))
    out[np.arange(n), rng.randint(0, classes, n)] = rng.randint(120, 255, n)
    return out.astype(np.uint8)


def _deviate(golden, steps, rows, seed=1):
    dev = golden.astype(np.int64)
    rng = np.random.RandomState(seed)
    for r in rows:
        c = rng.randint(0, golden.shape[1])
        dev[r, c] = dev[r, c] + steps if dev[r, c] + steps <= 255 else dev[r, c] - steps
    return dev


def test_identical_outputs_are_bit_exact():
    golden = _softmax_like()
    c = compare_outputs(golden, golden.astype(np.float64), scale=SOFTMAX_SCALE, zero_point=0,
                        operators=QUICKSTART_OPS)
    assert c.ok and c.bit_exact and c.differing == 0 and c.max_steps == 0 and c.top1_agreement == 1.0


def test_measured_runtime_differences_pass_but_are_not_called_bit_exact():
    golden = _softmax_like()
    # x86 tflite-runtime 2.14: 24 of 32 samples differ, by up to 18 steps.
    c = compare_outputs(golden, _deviate(golden, 18, range(24)), scale=SOFTMAX_SCALE, zero_point=0,
                        operators=QUICKSTART_OPS)
    assert c.ok and not c.bit_exact and c.reason is None
    assert (c.differing, c.max_steps, c.tolerance_steps) == (24, 18, 25)
    assert c.max_abs_diff == pytest.approx(18 / 256) and c.tolerance == pytest.approx(25 / 256)
    # --exact refuses the same outputs.
    c = compare_outputs(golden, _deviate(golden, 18, range(24)), scale=SOFTMAX_SCALE, zero_point=0,
                        operators=QUICKSTART_OPS, exact=True)
    assert not c.ok and "bit-exact" in c.reason
    # A tighter step tolerance refuses them too.
    c = compare_outputs(golden, _deviate(golden, 18, range(24)), scale=SOFTMAX_SCALE, zero_point=0,
                        operators=QUICKSTART_OPS, steps=12)
    assert not c.ok and "beyond the tolerance (12 steps" in c.reason


def test_one_step_beyond_the_tolerance_fails():
    golden = _softmax_like()
    c = compare_outputs(golden, _deviate(golden, 26, [5]), scale=SOFTMAX_SCALE, zero_point=0,
                        operators=QUICKSTART_OPS)
    assert not c.ok and c.max_steps == 26 and "26 quantization steps" in c.reason and "1 of 32 samples" in c.reason


def _flip(golden, rows):
    """Swap the top-2 of ``rows`` after making them a near tie (2 steps apart)."""
    g = golden.astype(np.int64).copy()
    dev = g.copy()
    for r in rows:
        top = int(np.argmax(g[r]))
        other = (top + 1) % g.shape[1]
        g[r, other] = g[r, top] - 2
        dev[r] = g[r]
        dev[r, top], dev[r, other] = g[r, other], g[r, top]
    return g.astype(np.uint8), dev


def test_top1_agreement_threshold():
    assert MIN_TOP1_AGREEMENT == 0.9
    # arm64 tflite-runtime 2.14: top-1 0.94 (2 flips in 32, near ties) passes.
    golden, dev = _flip(_softmax_like(), [3, 17])
    c = compare_outputs(golden, dev, scale=SOFTMAX_SCALE, zero_point=0, operators=QUICKSTART_OPS)
    assert c.ok and c.top1_agreement == pytest.approx(30 / 32) and c.max_steps == 2
    # Four flips (0.875) fail although every value is within the step tolerance.
    golden, dev = _flip(_softmax_like(), [1, 3, 17, 30])
    c = compare_outputs(golden, dev, scale=SOFTMAX_SCALE, zero_point=0, operators=QUICKSTART_OPS)
    assert not c.ok and c.max_steps == 2 and "28 of 32" in c.reason


def test_a_different_model_fails_both_ways():
    golden = _softmax_like(seed=0)
    other = _softmax_like(seed=7).astype(np.float64)
    c = compare_outputs(golden, other, scale=SOFTMAX_SCALE, zero_point=0, operators=QUICKSTART_OPS)
    assert not c.ok and c.max_steps > 100 and c.top1_agreement < 0.5


def _near_tie(golden, rows, gap=4):
    """Make ``rows`` near ties: the runner-up ``gap`` steps below the winner, both near p = 0.5."""
    g = golden.astype(np.int64).copy()
    for r in rows:
        top = int(np.argmax(g[r]))
        other = (top + 1) % g.shape[1]
        g[r] = 2
        g[r, top], g[r, other] = 125, 125 - gap
    return g.astype(np.uint8)


def test_a_steep_softmax_widens_the_tolerance_only_near_ties():
    """What arm64 tflite-runtime 2.14 did to the pruned and QAT files: logits a few steps
    apart, which the softmax's slope near a tie turned into 29-34 output steps."""
    golden = _near_tie(_softmax_like(), [2, 9])
    dev = golden.astype(np.int64)
    dev[2, np.argmax(golden[2])] -= 34  # the near tie's winner loses 34 steps, its rival gains them
    dev[2, (np.argmax(golden[2]) + 1) % 10] += 34
    flat = compare_outputs(golden, dev, scale=SOFTMAX_SCALE, zero_point=0, operators=QUICKSTART_OPS)
    assert not flat.ok and flat.max_steps == 34 and flat.softmax_gain is None
    gain = 25.0  # 0.0977 logit scale / (1/256): the pruned student's SOFTMAX
    c = compare_outputs(golden, dev, scale=SOFTMAX_SCALE, zero_point=0, operators=QUICKSTART_OPS,
                        softmax_gain=gain)
    assert c.ok and c.max_steps == 34 and c.tolerance_steps == 25 and c.softmax_gain == gain
    # p = 125/256: sqrt(2) * p(1-p) * 25 = 8.8 times the 25 steps.
    assert c.tolerance_steps_max == math.ceil(25 * math.sqrt(2) * (125 / 256) * (131 / 256) * gain)
    # The same 34 steps where the host was confident (a class at p near 0: slope small) are
    # still refused, however far the device moved it.
    dev = golden.astype(np.int64)
    dev[5, np.argmin(golden[5])] += 34
    c = compare_outputs(golden, dev, scale=SOFTMAX_SCALE, zero_point=0, operators=QUICKSTART_OPS,
                        softmax_gain=gain)
    assert not c.ok and "beyond the tolerance (25 steps" in c.reason and "where the softmax is steep" in c.reason
    # The reason names the value that failed (30 steps, allowed 25), not a larger one within its
    # wider allowance (100 steps at the near tie).
    dev = golden.astype(np.int64)
    dev[9, np.argmax(golden[9])] -= 100
    dev[5, np.argmin(golden[5])] += 30
    c = compare_outputs(golden, dev, scale=SOFTMAX_SCALE, zero_point=0, operators=QUICKSTART_OPS,
                        softmax_gain=gain)
    assert not c.ok and c.max_steps == 100 and "(30 quantization steps)" in c.reason and "1 of 32" in c.reason
    # Another model's outputs still fail: clear winners elsewhere, and top-1 disagrees.
    other = _softmax_like(seed=7).astype(np.float64)
    c = compare_outputs(golden, other, scale=SOFTMAX_SCALE, zero_point=0, operators=QUICKSTART_OPS,
                        softmax_gain=gain)
    assert not c.ok and "beyond the tolerance" in c.reason and c.top1_agreement < 0.5


def test_softmax_output_gain_is_read_from_the_file(tmp_path):
    from ai_edge_litert.interpreter import Interpreter
    from helpers import build_tiny_classifier

    from edgecnn.tflite.reader import softmax_output_gain

    model = build_tiny_classifier(tmp_path, "int8")
    it = Interpreter(model_path=str(model))
    ops = [op for op in it._get_ops_details() if op["op_name"] == "SOFTMAX"]
    assert len(ops) == 1
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    s_in, s_out = tensors[ops[0]["inputs"][0]]["quantization"][0], tensors[ops[0]["outputs"][0]]["quantization"][0]
    assert softmax_output_gain(model) == pytest.approx(s_in / s_out, rel=1e-6)  # beta 1, as Keras' softmax converts
    # uint8 I/O: a QUANTIZE (int8 -> uint8, same scale) follows the SOFTMAX; the gain is the same.
    assert softmax_output_gain(build_tiny_classifier(tmp_path, "uint8")) == pytest.approx(s_in / s_out, rel=1e-6)
    assert softmax_output_gain(build_tiny_classifier(tmp_path, "float32")) is None  # float output: no steps


def test_float_outputs_tolerance_and_non_finite():
    golden = np.random.RandomState(0).dirichlet(np.ones(10), 32).astype(np.float32)
    # arm64 ai-edge-litert 2.3: float outputs differ by about 2e-6.
    c = compare_outputs(golden, golden.astype(np.float64) + 2e-6, scale=0.0, zero_point=0, operators=65)
    assert c.ok and not c.bit_exact and c.max_steps is None and c.max_abs_diff == pytest.approx(2e-6, rel=1e-3)
    c = compare_outputs(golden, golden.astype(np.float64) + 1e-3, scale=0.0, zero_point=0, operators=65)
    assert not c.ok and c.differing == 32 and "beyond the tolerance" in c.reason
    bad = golden.astype(np.float64)
    bad[4, 1] = np.nan
    c = compare_outputs(golden, bad, scale=0.0, zero_point=0, operators=65)
    assert not c.ok and "non-finite outputs on 1 of 32" in c.reason


# ----------------------------------------------------------- the runner's raw outputs


def test_runner_reports_the_raw_outputs_it_computed(bench_models):
    from edgecnn.runtime.interpreter import input_specs, make_interpreter, output_specs, quantize_input

    r = run_local(bench_models["int8"], LOCAL, runs=1, warmup=0, timeout_s=60, inputs_npz=bench_models["npz"],
                  extra_runner_args=["--report-outputs"])
    assert r["status"] == "ok", r["reason"]
    reported = r["details"]["outputs"]
    interpreter = make_interpreter(bench_models["int8"], threads=1)
    spec, out = input_specs(interpreter)[0], output_specs(interpreter)[0]
    expected = []
    for sample in np.load(bench_models["npz"])["x"]:
        interpreter.set_tensor(spec.index, quantize_input(sample[None], spec))
        interpreter.invoke()
        expected.append(interpreter.get_tensor(out.index)[0].tolist())
    assert reported["values"] == expected and reported["dtype"] == str(out.dtype)
    assert reported["scale"] == pytest.approx(out.scale) and reported["zero_point"] == out.zero_point
    # Without the option the result stays as small as before.
    plain = run_local(bench_models["int8"], LOCAL, runs=1, warmup=0, timeout_s=60, inputs_npz=bench_models["npz"])
    assert plain["details"] is None and plain["outputs_sha256"] == r["outputs_sha256"]


def test_runner_output_report_is_bounded_and_exact():
    detail = {"dtype": np.float32, "quantization": (0.0, 0)}
    big = np.zeros((rn.MAX_REPORTED_SAMPLES + 1, 2), np.float32)
    assert "outputs_omitted" in rn.report_values(big, detail)
    wide = np.zeros((2, rn.MAX_REPORTED_VALUES_PER_SAMPLE + 1), np.float32)
    assert "outputs_omitted" in rn.report_values(wide, detail)
    values = np.array([[0.1, np.float32(1) / 3, np.inf]], np.float32)
    listed = rn.report_values(values, detail)["outputs"]["values"]
    # float32 -> JSON double and back loses nothing; infinity becomes null.
    assert np.array_equal(np.array(json.loads(json.dumps(listed))[0][:2], np.float32), values[0, :2])
    assert listed[0][2] is None


# -------------------------------------------------------------- verify over real SSH


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    proc, log, server = _start_sshd(tmp_path_factory.mktemp("sshd-verify"), sftp=True)
    yield server
    _stop(proc, log)


@pytest.fixture(scope="module")
def toy_bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("verify"), samples=12, seed=3)


def test_verify_over_ssh_is_bit_exact_on_the_same_runtime(sshd, toy_bundle):
    report = verify_bundle(toy_bundle, target=sshd.target, timeout_s=120, ssh=sshd.options)
    assert report.ok, format_verify(report)
    for m in report.models:
        assert m.bit_exact and m.samples == 12 and m.top1_agreement == 1.0 and m.target == sshd.target
        assert m.runtime.startswith("ai-edge-litert ") and m.machine == platform.machine()
        assert m.golden_runtime == m.runtime and m.golden_machine == platform.machine()
    text = format_verify(report)
    assert f"student_int8.tflite on {sshd.target} (ai-edge-litert" in text and "OK, bit-exact" in text


def test_verify_cli_takes_the_ssh_options(sshd, toy_bundle):
    o = sshd.options
    proc = run_edgecnn("verify", str(toy_bundle), "--target", sshd.target, "--remote-python", o.remote_python,
                       "--identity", str(o.identity), "--known-hosts", str(o.known_hosts), "--connect-timeout", "5",
                       "--json", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] and [m["bit_exact"] for m in data["models"]] == [True, True]
    # The same command without the key cannot log in: a failed check, not a pass.
    proc = run_edgecnn("verify", str(toy_bundle), "--target", sshd.target, "--remote-python", o.remote_python,
                       "--identity", str(sshd.other_key), "--known-hosts", str(o.known_hosts), timeout=300)
    assert proc.returncode == 5 and "FAILED" in proc.stdout and "refused the SSH key" in proc.stdout


def _other_build(path: Path) -> Path:
    """The tiny classifier's architecture with other weights, as another build would make it."""
    from edgecnn._tf import keras
    from edgecnn.export.tflite import convert_int8, inference_model

    k = keras()
    k.utils.set_random_seed(1)
    inputs = k.layers.Input((32, 32, 3))
    x = k.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = k.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    model = inference_model(k.Model(inputs, k.layers.Dense(len(FASHION_LABELS))(x), name="tiny"))
    calibration = np.random.RandomState(0).uniform(-1, 1, (32, 32, 32, 3)).astype(np.float32)
    return convert_int8(model, calibration, "int8", path)


def test_verify_over_ssh_fails_a_model_from_another_build(sshd, toy_bundle, tmp_path):
    import shutil

    copy = Path(shutil.copytree(toy_bundle, tmp_path / "bundle"))
    _other_build(copy / "student_int8.tflite")
    manifest = json.loads((copy / BUNDLE_MANIFEST).read_text())
    manifest["files"]["student_int8.tflite"]["sha256"] = sha256_file(copy / "student_int8.tflite")
    (copy / BUNDLE_MANIFEST).write_text(json.dumps(manifest))  # a tamperer who also rewrites the hashes
    report = verify_bundle(copy, target=sshd.target, timeout_s=120, ssh=sshd.options)
    int8, float32 = report.models
    assert not report.ok and not int8.ok and float32.ok
    assert int8.max_steps > int8.tolerance_steps and "beyond the tolerance" in int8.reason
    assert f"student_int8.tflite on {sshd.target}" in format_verify(report) and "FAILED" in format_verify(report)
