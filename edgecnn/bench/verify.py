"""On-device verification of a deploy bundle: "is this the model I built, running correctly here?"

``edgecnn verify BUNDLE`` checks every sha256 first, then runs the golden inputs where
the model lives (the device runner returns the raw output values), and compares them
with the host's golden outputs by value; see :func:`verify_bundle` for the tolerance and
:func:`compare_outputs` for the arithmetic. Bundles are written by
:mod:`edgecnn.export.bundle`; the layout both sides share is :mod:`edgecnn.bundle_layout`.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgecnn.bundle_layout import (BUNDLE_MANIFEST, BUNDLE_SCHEMA, MIN_TOP1_AGREEMENT, float_tolerance,
                                   read_bundle_json, tolerance_steps)
from edgecnn.errors import DeviceError, ModelFileError
from edgecnn.fileio import sha256_file
from edgecnn.targets import Target, parse_target

__all__ = ["ModelCheck", "OutputComparison", "VerifyReport", "check_bundle_files", "compare_outputs",
           "format_verify", "verify_bundle"]


# --------------------------------------------------------------------------- comparing



@dataclass(frozen=True)
class OutputComparison:
    """Device outputs against golden ones (see :func:`compare_outputs`).

    Attributes:
        ok: the outputs pass (bit-exact, or within the tolerance with enough top-1 agreement).
        bit_exact: every value is identical.
        samples: samples compared.
        differing: samples with at least one value not identical.
        max_abs_diff: worst deviation in real (dequantized) units.
        max_steps: worst deviation in quantization steps (integer outputs), else None.
        tolerance: allowed deviation in real units.
        tolerance_steps: allowed deviation in steps (integer outputs), else None.
        top1_agreement: fraction of samples whose top-1 class equals the golden one.
        min_top1: the top-1 agreement required.
        reason: why it failed, one line; None when ok.
        tolerance_steps_max: the widest allowance of any output value, in steps: larger
            than ``tolerance_steps`` where a softmax's slope widened it, else equal (None
            for float outputs).
        softmax_gain: the ``softmax_gain`` the comparison used, or None.
    """

    ok: bool
    bit_exact: bool
    samples: int
    differing: int
    max_abs_diff: float
    max_steps: int | None
    tolerance: float
    tolerance_steps: int | None
    top1_agreement: float
    min_top1: float
    reason: str | None = None
    tolerance_steps_max: int | None = None
    softmax_gain: float | None = None


def compare_outputs(golden: np.ndarray, device: np.ndarray, *, scale: float, zero_point: int, operators: int,
                    device_scale: float | None = None, device_zero_point: int | None = None,
                    exact: bool = False, steps: int | None = None, atol: float | None = None,
                    min_top1: float = MIN_TOP1_AGREEMENT, softmax_gain: float | None = None) -> OutputComparison:
    """Compare raw device outputs with the golden (host) ones, dequantized.

    Each side is dequantized with its own output quantization (``real = scale * (q -
    zero_point)``); deviations are reported in real units and in steps of the golden
    output's scale. Top-1 is the argmax of each sample's outputs (the first of equal
    maxima; a non-finite value never wins).

    Args:
        golden: the host's raw outputs, ``(N, ...)``; integer for quantized models.
        device: the device's raw outputs of the same shape (float, NaN where the device
            reported a non-finite value).
        scale: the golden output's quantization scale (0 for float outputs).
        zero_point: the golden output's zero point.
        operators: operators in the built model (the depth the tolerance grows with).
        device_scale: the device model's output scale (default ``scale``).
        device_zero_point: the device model's output zero point (default ``zero_point``).
        exact: require bit-exact outputs.
        steps: allowed deviation in quantization steps instead of
            :func:`tolerance_steps` (integer outputs).
        atol: allowed absolute deviation instead of :func:`float_tolerance` (float outputs).
        min_top1: required fraction of samples whose top-1 class equals the golden one.
        softmax_gain: for an integer output made by a quantized SOFTMAX, output steps per
            step of its input at slope 1 (:func:`~edgecnn.tflite.reader.softmax_output_gain`).
            The random-walk tolerance holds for the softmax's input (the logits); where the
            softmax is steep (near a tie) it multiplies their deviation, so each value's
            allowance is multiplied by ``max(1, sqrt(2) * p * (1 - p) * softmax_gain)``, ``p``
            the golden probability. Not with ``steps``, a flat limit. See :func:`verify_bundle`.

    Returns:
        An :class:`OutputComparison`.
    """
    n = int(len(golden))
    host = np.asarray(golden).reshape(n, -1)
    dev = np.asarray(device, dtype=np.float64).reshape(n, -1)
    quantized = host.dtype.kind in "iu" and scale > 0
    device_scale = float(scale if device_scale is None else device_scale)
    device_zero_point = int(zero_point if device_zero_point is None else device_zero_point)
    finite = np.isfinite(dev)
    same_quantization = not quantized or (device_scale == float(scale) and device_zero_point == int(zero_point))
    bit_exact = bool(finite.all() and same_quantization and np.array_equal(host.astype(np.float64), dev))
    if quantized:
        host_real = (host.astype(np.float64) - int(zero_point)) * float(scale)
        dev_real = (dev - device_zero_point) * device_scale if device_scale > 0 else dev
    else:
        host_real, dev_real = host.astype(np.float64), dev
    real = np.where(finite, np.abs(dev_real - host_real), np.inf)  # deviation in real units
    worst = float(real.max()) if real.size else 0.0
    # An explicit ``steps`` is the user's flat limit: only the derived tolerance is widened.
    gain = float(softmax_gain) if quantized and steps is None and softmax_gain and softmax_gain > 0 else None
    if quantized:
        allowed_steps = tolerance_steps(operators) if steps is None else int(steps)
        tolerance = allowed_steps * float(scale)
        # Whole steps under the same quantization; the nearest step under another one.
        worst_steps = int(round(worst / float(scale))) if math.isfinite(worst) else None
        allowed = np.full(host_real.shape, float(allowed_steps))
        if gain is not None:
            # Linearized at the golden value: a confident class (p near 0 or 1) keeps the
            # flat tolerance whatever the device says, so a wrong output cannot widen its own.
            slope = _bernoulli(host_real)
            allowed = np.ceil(allowed_steps * np.maximum(1.0, math.sqrt(2.0) * slope * gain))
        limits = allowed * float(scale)
        widest = int(allowed.max()) if allowed.size else allowed_steps
    else:
        allowed_steps, worst_steps, widest = None, None, None
        tolerance = float_tolerance(operators, host_real) if atol is None else float(atol)
        limits = tolerance
    differing = int(np.sum(np.any(real > 0, axis=1))) if real.size else 0
    # Ties and NaNs: argmax takes the first maximum on both sides; a NaN never wins.
    agree = np.argmax(host_real, axis=1) == np.argmax(np.where(finite, dev_real, -np.inf), axis=1)
    top1 = float(np.mean(agree)) if n else 1.0
    if bit_exact:
        return OutputComparison(True, True, n, 0, 0.0, 0 if quantized else None, tolerance, allowed_steps, top1,
                                min_top1, None, widest, gain)
    unit = f" ({worst_steps} quantization steps)" if worst_steps is not None else ""
    limit = f"{allowed_steps} steps = {tolerance:.3g}" if quantized else f"{tolerance:.3g}"
    if quantized and widest > allowed_steps:
        limit += f", up to {widest} steps where the softmax is steep"
    if exact:
        reason = (f"outputs of {differing} of {n} samples are not identical to the golden ones (worst "
                  f"{worst:.3g}{unit}); exact comparison asks for bit-exact outputs")
    elif not np.all(finite):
        reason = f"the device returned non-finite outputs on {int(np.sum(~finite.all(axis=1)))} of {n} samples"
    else:
        problems = []
        over = real > limits * (1 + 1e-9)
        beyond = np.any(over, axis=1)
        if beyond.any():
            # The worst of the values past their own allowance (with a steep softmax, a larger
            # deviation elsewhere may be within its wider one).
            failed = float(real[over].max())
            failed_unit = f" ({int(round(failed / float(scale)))} quantization steps)" if quantized else ""
            problems.append(f"outputs differ from the golden ones by up to {failed:.3g}{failed_unit}, beyond the "
                            f"tolerance ({limit}) on {int(np.sum(beyond))} of {n} samples")
        if top1 < min_top1:
            problems.append(f"top-1 agrees with the golden outputs on only {int(np.sum(agree))} of {n} samples "
                            f"({top1:.2f} < {min_top1:.2f})")
        reason = "; ".join(problems) + ": a different or damaged model, or a broken runtime" if problems else None
    return OutputComparison(reason is None, False, n, differing, worst, worst_steps, tolerance, allowed_steps, top1,
                            min_top1, reason, widest, gain)


def _bernoulli(p: np.ndarray) -> np.ndarray:
    """``p * (1 - p)``, the softmax's slope at probability ``p`` (clipped to [0, 1])."""
    p = np.clip(p, 0.0, 1.0)
    return p * (1.0 - p)


# --------------------------------------------------------------------------- verifying


@dataclass
class ModelCheck:
    """What verification found for one model of the bundle.

    ``max_abs_diff`` and ``tolerance`` are in real (dequantized) units; ``max_steps``,
    ``tolerance_steps`` and ``tolerance_steps_max`` (the widest allowance, where a softmax's
    slope widened it) in output quantization steps (None for float outputs).
    ``runtime``/``machine`` say where the model ran now, ``golden_runtime``/
    ``golden_machine`` what produced the golden outputs.
    """

    file: str
    target: str
    ok: bool
    bit_exact: bool = False
    samples: int = 0
    differing: int | None = None
    max_abs_diff: float | None = None
    max_steps: int | None = None
    tolerance: float | None = None
    tolerance_steps: int | None = None
    tolerance_steps_max: int | None = None
    softmax_gain: float | None = None
    top1_agreement: float | None = None
    min_top1: float | None = None
    operators: int | None = None
    accuracy: float | None = None
    latency_ms: float | None = None
    runtime: str | None = None
    machine: str | None = None
    golden_runtime: str | None = None
    golden_machine: str | None = None
    reason: str | None = None


@dataclass
class VerifyReport:
    """Result of :func:`verify_bundle`."""

    bundle: str
    files_checked: int
    models: list[ModelCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.models) and all(m.ok for m in self.models)

    def to_dict(self) -> dict:
        return {"bundle": self.bundle, "ok": self.ok, "files_checked": self.files_checked,
                "models": [asdict(m) for m in self.models]}



def check_bundle_files(bundle_dir: str | os.PathLike) -> dict:
    """Check every file listed in ``bundle.json`` against its sha256; return the manifest.

    Files the manifest does not list (edgecnn's ``.edgecnn-owned`` marker, anything a
    user added) are not checked and do not fail it.

    Raises:
        ModelFileError: one line naming the first missing or altered file, or a
            ``bundle.json`` that is not a bundle manifest.
    """
    bundle = Path(bundle_dir)
    if not bundle.is_dir():
        raise ModelFileError(f"{bundle}: no such bundle folder; create one with 'edgecnn bundle RUN_DIR --out DIR'")
    manifest = read_bundle_json(bundle / BUNDLE_MANIFEST, "not an edgecnn bundle; create one with 'edgecnn bundle'")
    files = manifest.get("files")
    if manifest.get("schema") != BUNDLE_SCHEMA or not isinstance(files, dict) or not files:
        raise ModelFileError(f"{bundle / BUNDLE_MANIFEST}: not a {BUNDLE_SCHEMA} manifest; re-create the bundle")
    for name, entry in files.items():
        path = bundle / name
        if not name or Path(name).name != name or name in (".", ".."):
            raise ModelFileError(f"{bundle / BUNDLE_MANIFEST}: lists {name!r}, which is not a plain file name; "
                                 "re-create the bundle")
        if not isinstance(entry, dict):
            raise ModelFileError(f"{bundle / BUNDLE_MANIFEST}: the entry of {name!r} is not an object with a "
                                 "sha256; re-create the bundle")
        if not path.is_file():
            raise ModelFileError(f"{path}: missing (listed in {BUNDLE_MANIFEST}); copy the whole bundle again "
                                 "or re-create it with 'edgecnn bundle'")
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            raise ModelFileError(f"{path}: sha256 mismatch (expected {str(entry.get('sha256'))[:12]}..., got "
                                 f"{digest[:12]}...): the file was altered or damaged; copy it again")
    return manifest


def _model_entries(bundle: Path, manifest: dict) -> list[tuple[str, str]]:
    """``(model file, golden file)`` per model of a checked manifest, both sha256-checked."""
    where = bundle / BUNDLE_MANIFEST
    fix = "re-create the bundle with 'edgecnn bundle'"
    models = manifest.get("models")
    if not isinstance(models, list) or not models:
        raise ModelFileError(f"{where}: has no 'models' list naming the bundle's models; {fix}")
    entries = []
    for i, entry in enumerate(models):
        if not isinstance(entry, dict):
            raise ModelFileError(f"{where}: models[{i}] is not an object with 'file' and 'golden'; {fix}")
        names = []
        for key in ("file", "golden"):
            name = entry.get(key)
            if not isinstance(name, str) or not name:
                raise ModelFileError(f"{where}: models[{i}] has no '{key}' file name; {fix}")
            if name not in manifest["files"]:
                raise ModelFileError(f"{where}: models[{i}].{key} {name!r} is not among the files listed with a "
                                     f"sha256, so it cannot be trusted; {fix}")
            names.append(name)
        entries.append((names[0], names[1]))
    return entries


@dataclass(frozen=True)
class _Golden:
    x_count: int
    outputs: np.ndarray
    runtime: str | None
    machine: str | None
    scale: float | None  # None: not recorded (an older bundle); read from the model
    zero_point: int | None
    operators: int | None


def _load_golden(path: Path) -> _Golden:
    """The golden outputs of a bundle file, or one line saying what is wrong with it."""
    fix = "re-create the bundle with 'edgecnn bundle'"
    try:
        npz = np.load(path, allow_pickle=False)
        if not hasattr(npz, "files"):  # a bare .npy array
            raise ModelFileError(f"{path}: a single array, not a golden .npz archive; {fix}")
        with npz:
            missing = [k for k in ("x", "outputs") if k not in npz.files]
            if missing:
                raise ModelFileError(f"{path}: golden file without {' and '.join(repr(k) for k in missing)} "
                                     f"(has: {', '.join(npz.files) or 'nothing'}); {fix}")
            x, outputs = npz["x"], npz["outputs"]
            text = {k: str(npz[k]) for k in ("runtime", "runtime_version", "machine") if k in npz.files}
            numbers = {k: npz[k] for k in ("output_scale", "output_zero_point", "operators") if k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{path}: not a readable golden .npz ({' '.join(str(exc).split())[:200]}); {fix}") \
            from None
    if outputs.dtype.kind not in "iuf" or outputs.ndim < 1 or x.ndim < 1 or len(outputs) != len(x) or not len(x):
        raise ModelFileError(f"{path}: golden outputs {outputs.dtype} {outputs.shape} do not fit inputs "
                             f"{x.dtype} {x.shape} (one numeric output row per input); {fix}")
    try:
        numbers = {k: float(v) for k, v in numbers.items()}
    except (TypeError, ValueError):
        raise ModelFileError(f"{path}: golden output_scale/output_zero_point/operators are not numbers; {fix}") \
            from None
    if not all(math.isfinite(v) and v >= (0 if k != "output_zero_point" else -(1 << 31)) for k, v in numbers.items()):
        raise ModelFileError(f"{path}: golden output_scale/output_zero_point/operators out of range; {fix}")
    runtime = f"{text['runtime']} {text.get('runtime_version', '?')}" if "runtime" in text else None
    zero_point = numbers.get("output_zero_point")
    operators = numbers.get("operators")
    return _Golden(int(len(x)), outputs, runtime, text.get("machine"), numbers.get("output_scale"),
                   None if zero_point is None else int(zero_point), None if operators is None else int(operators))


def verify_bundle(bundle_dir: str | os.PathLike, target: Target | str = "local", timeout_s: float = 300.0,
                  threads: int = 1, *, ssh=None, exact: bool = False, tolerance_steps: int | None = None,
                  float_atol: float | None = None, min_top1: float = MIN_TOP1_AGREEMENT) -> VerifyReport:
    """Answer "is this the model I built, running correctly here?" for every model of a bundle.

    1. Every file in ``bundle.json`` must match its sha256 (nothing runs otherwise), and
       the manifest and golden files must be well-formed.
    2. The device runner runs the golden inputs on ``target`` and returns its raw
       outputs (``runner.py --report-outputs``); they are compared with the golden
       outputs by value, dequantized (``real = scale * (q - zero_point)``).
    3. A model passes when its outputs are **bit-exact**, or when every output is within
       the tolerance and top-1 agrees on at least ``min_top1`` of the samples.

    The tolerance. Two correct TFLite runtimes (another version, another CPU, XNNPACK or
    not) may round any element of any quantized op's output one quantization step
    apart: requantization with single vs double rounding, SOFTMAX and MEAN with other
    fixed-point approximations. Every tensor's scale is calibrated to its own range, so
    a one-step disagreement inside the network moves the output by about one output
    step; disagreements of different ops are independent and add like a random walk, so
    after ``n`` operators the deviation has a standard deviation of about ``sqrt(n)``
    steps. Three standard deviations are allowed::

        int8/uint8 outputs:  tolerance = ceil(3 * sqrt(n)) * output_scale
        float outputs:       tolerance = 3 * sqrt(n) * 32 * eps32 * max(1, max |golden|)

    with ``n`` the operators in the model file (67 for the quickstart student: 25 steps,
    0.098 on its softmax output of scale 1/256) and ``32 * eps32`` (3.8e-6) the relative
    float32 rounding of one op (a reordered sum of ~1000 terms).

    The one op where "one step in, one step out" fails is a final quantized SOFTMAX: its
    input (the logits, scale ~0.1) is far coarser than its output (1/256), and its slope is
    ``p * (1 - p)``. A logit deviation ``dz`` (the random walk above, in logit steps) moves
    probability ``p_i`` by ``p_i * (dz_i - sum_j p_j dz_j)``, whose standard deviation is at
    most ``sqrt(2) * p_i * (1 - p_i) * gain`` output steps per logit step, ``gain = beta *
    input_scale / output_scale`` (about 25 for the students here: up to ~9 output steps per
    logit step at a near tie, p = 0.5). So each value's allowance is the tolerance above
    times ``max(1, sqrt(2) * p * (1 - p) * gain)``, linearized at the golden ``p``: unchanged
    where the host saw a class clearly in or out (p near 0 or 1), wide only on near ties.
    There the allowance can approach the whole output range (221 of 256 steps at p = 0.5,
    gain 25), so on those few samples the value check says little and top-1 agreement is
    what bounds the device (at most 10 % of samples may flip); the logits measured on the
    runtimes below moved 5-11 steps, against the 25 the random walk allows. Measured on
    arm64 tflite-runtime 2.14 (``quickstart_prune_qat``): the pruned and QAT int8 files'
    logits differ from the host's by at most 5 and 11 logit steps, which near ties became 29
    and 34 output steps, beyond a flat 25-step tolerance. Measured on the
    quickstart bundle (65 ops, tolerance 25 steps): x86 tflite-runtime 2.14 up to 18 steps,
    arm64 tflite-runtime 2.14 up to 22 steps, arm64 ai-edge-litert 2.3 bit-exact; float
    outputs up to 1.6e-6. The spread comes from the kernel family (XNNPACK vs builtin vs
    reference kernels), not the CPU. Small damage to a model (a few hundred weight bytes)
    moves outputs by only a few steps: the sha256 check, not the value comparison, is what
    catches it. Top-1 can flip
    only where the golden top-2 scores are within twice the tolerance; the runtimes
    above agreed on at least 0.94 of the samples, so at least ``0.9`` is required. A
    different model (other weights, another build) deviates far beyond the tolerance.
    Tighten it with ``exact`` (bit-exact only, right on the host's own runtime and CPU)
    or a smaller ``tolerance_steps``/``float_atol``.

    Args:
        bundle_dir: the bundle folder.
        target: where to run: ``local`` (the runner in a child process on this machine),
            ``coral[:usb|:pci]`` or ``ssh://user@host[:port]`` (the runner copied there by
            the bench transport); a parsed :class:`~edgecnn.targets.Target`, or its text
            (parsed once, here, and passed inward).
        timeout_s: limit for each runner process.
        threads: interpreter threads on the target.
        ssh: :class:`~edgecnn.bench.ssh.SshOptions` for ``ssh://`` targets (remote Python,
            identity, known hosts, accepting a new host key, connect timeout).
        exact: require bit-exact outputs.
        tolerance_steps: allowed deviation of integer outputs in quantization steps
            (default: the rule above).
        float_atol: allowed absolute deviation of float outputs (default: the rule above).
        min_top1: required top-1 agreement with the golden outputs.

    Returns:
        A :class:`VerifyReport`; ``ok`` is False when any model's outputs differ beyond
        the tolerance or its run failed.

    Raises:
        ModelFileError: a file is missing, altered or malformed (checked before anything runs).
        DeviceError: an unknown target, one this command cannot run, or bad SSH options.
    """
    from edgecnn.bench.harness import check_benchmark

    bundle = Path(bundle_dir)
    manifest = check_bundle_files(bundle)
    entries = _model_entries(bundle, manifest)
    goldens = [_load_golden(bundle / golden) for _, golden in entries]
    parsed = target if isinstance(target, Target) else parse_target(target)  # the one parse of this call
    if parsed.kind not in ("local", "coral", "ssh"):
        raise DeviceError(f"verify --target {parsed.text!r}: bundles run on local, coral and ssh:// targets (the "
                          "device runner); on this one, run runner.py by hand as the bundle's README.md shows")
    for model_file, golden_file in entries:  # bad options or models fail before anything runs
        check_benchmark(bundle / model_file, parsed, inputs_npz=bundle / golden_file, ssh=ssh)
    rules = dict(exact=exact, steps=tolerance_steps, atol=float_atol, min_top1=min_top1)
    report = VerifyReport(str(bundle), len(manifest["files"]))
    for (model_file, golden_file), golden in zip(entries, goldens):
        report.models.append(_verify_model(bundle, model_file, golden_file, golden, parsed, timeout_s, threads,
                                           ssh, rules))
    return report


def _verify_model(bundle: Path, model_file: str, golden_file: str, golden: _Golden, target: Target,
                  timeout_s: float, threads: int, ssh, rules: dict) -> ModelCheck:
    from edgecnn.bench.harness import run_benchmark
    from edgecnn.tflite.reader import inspect_tflite, softmax_output_gain

    model = bundle / model_file
    scale, zero_point, operators = golden.scale, golden.zero_point, golden.operators
    if scale is None or zero_point is None or operators is None:  # a bundle from before they were recorded
        summary = inspect_tflite(model)
        out = summary.outputs[0] if summary.outputs else None
        scale = out.scale if scale is None and out is not None else (scale or 0.0)
        zero_point = out.zero_point if zero_point is None and out is not None else (zero_point or 0)
        operators = summary.operator_count if operators is None else operators
    check = ModelCheck(model_file, target.text, ok=False, samples=golden.x_count, operators=operators,
                       golden_runtime=golden.runtime, golden_machine=golden.machine)
    result = run_benchmark(model, target, threads=threads, runs=1, warmup=0, timeout_s=timeout_s,
                           inputs_npz=bundle / golden_file, ssh=ssh, extra_runner_args=["--report-outputs"])
    runtime = result.get("runtime") or {}
    check.runtime = f"{runtime.get('name')} {runtime.get('version')}" if runtime else None
    check.machine = (result.get("host") or {}).get("machine")
    if result.get("status") != "ok":
        check.reason = f"the runner failed on {target.text}: {result.get('reason')}"
        return check
    check.accuracy = result.get("accuracy")
    check.latency_ms = (result.get("latency_ms") or {}).get("mean")
    details = result.get("details") or {}
    reported = details.get("outputs")
    device = _device_outputs(reported, golden.outputs)
    if device is None:
        # Too large (or too old a runner) to return values: only bit-exact can be shown.
        import hashlib

        expected = hashlib.sha256(np.ascontiguousarray(golden.outputs).tobytes()).hexdigest()
        same = result.get("outputs_sha256") == expected
        check.ok = check.bit_exact = same
        if not same:
            why = details.get("outputs_omitted") or "the runner returned no output values"
            check.reason = (f"outputs on {target.text} are not bit-exact (outputs_sha256 differs) and cannot be "
                            f"compared by value: {why}; verify with fewer golden samples (edgecnn bundle --samples)")
        return check
    comparison = compare_outputs(golden.outputs, device, scale=scale, zero_point=zero_point, operators=operators,
                                 device_scale=_number(reported.get("scale"), scale),
                                 device_zero_point=int(_number(reported.get("zero_point"), zero_point)),
                                 softmax_gain=softmax_output_gain(model), **rules)
    for name in ("ok", "bit_exact", "differing", "max_abs_diff", "max_steps", "tolerance", "tolerance_steps",
                 "tolerance_steps_max", "softmax_gain", "top1_agreement", "min_top1", "reason"):
        setattr(check, name, getattr(comparison, name))
    return check


def _number(value, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else default


def _device_outputs(reported, golden: np.ndarray) -> np.ndarray | None:
    """The runner's ``details.outputs`` values as a float64 array shaped like ``golden``
    (NaN for a value it reported as null), or None when absent or of the wrong size."""
    if not isinstance(reported, dict) or not isinstance(reported.get("values"), list):
        return None
    rows = reported["values"]
    width = int(np.prod(golden.shape[1:], dtype=np.int64)) if golden.ndim > 1 else 1
    if len(rows) != len(golden) or any(not isinstance(r, list) or len(r) != width for r in rows):
        return None
    try:
        return np.array([[np.nan if v is None else float(v) for v in r] for r in rows],
                        dtype=np.float64).reshape(golden.shape)
    except (TypeError, ValueError):
        return None


def _where(check: ModelCheck) -> str:
    ran = ", ".join(x for x in (check.runtime, check.machine) if x)
    return f"{check.file} on {check.target}" + (f" ({ran})" if ran else "")


def format_verify(report: VerifyReport) -> str:
    """Lines for people: per model where it ran, how its outputs compare, and the verdict."""
    lines = [f"{report.bundle}: {report.files_checked} files match bundle.json (sha256)"]
    for m in report.models:
        golden = ", ".join(x for x in (m.golden_runtime, m.golden_machine) if x) or "runtime not recorded"
        if not m.ok:
            lines.append(f"  {_where(m)}: FAILED: {m.reason}")
            continue
        acc = f"; golden accuracy {m.accuracy * 100:.1f} %" if m.accuracy is not None else ""
        top1 = f"; top-1 agreement {m.top1_agreement:.2f}" if m.top1_agreement is not None else ""
        if m.bit_exact:
            lines.append(f"  {_where(m)}: OK, bit-exact: {m.samples} golden outputs identical to the host's "
                         f"({golden}){top1}{acc}")
            continue
        if m.max_steps is not None:
            steep = (f", up to {m.tolerance_steps_max} where the softmax is steep"
                     if m.tolerance_steps_max and m.tolerance_steps_max > m.tolerance_steps else "")
            worst = (f"{m.max_steps} steps = {m.max_abs_diff:.3g} "
                     f"(tolerance {m.tolerance_steps} steps = {m.tolerance:.3g}{steep})")
        else:
            worst = f"{m.max_abs_diff:.3g} (tolerance {m.tolerance:.3g})"
        lines.append(f"  {_where(m)}: OK, within tolerance: {m.differing} of {m.samples} golden outputs differ from "
                     f"the host's ({golden}) by at most {worst}; top-1 agreement {m.top1_agreement:.2f} "
                     f"(>= {m.min_top1:.2f}){acc}")
    return "\n".join(lines)
