#!/usr/bin/env python3
"""edgecnn device runner: time one TFLite model on this machine and print one JSON result.

This file is copied alone onto devices (Raspberry Pi, Coral boards, any Linux/macOS/
Windows host) and run there, so it imports only the standard library, numpy and a TFLite
runtime, and keeps to Python 3.7 syntax (Raspberry Pi OS may ship an old Python). It
never imports ``edgecnn``.

Usage::

    python3 runner.py MODEL.tflite [--threads N] [--runs N] [--warmup N]
        [--inputs samples.npz] [--delegate edgetpu|PATH] [--device usb|pci|usb:0]
        [--target TEXT] [--seed N] [--spawned-at EPOCH] [--out result.json]
        [--report-outputs]

The result is printed to stdout as one JSON object (or written atomically to ``--out``).
Whatever goes wrong -- a bad model, a missing runtime, a delegate that does not load --
becomes a result with ``status: "failed"`` and a one-line ``reason``, and the exit code
is 1; the caller always gets parseable JSON. (A runtime that aborts the process or hangs
cannot be caught here; the host runs this file in a child process with a timeout.)

Runtime, most preferred first (``RUNTIMES``): ``ai_edge_litert.interpreter`` (LiteRT),
``tflite_runtime.interpreter`` (older devices), ``tensorflow.lite`` (a host with TF).
This file is also edgecnn's one source of runtime discovery, interpreter construction,
the Edge TPU library table and input quantization: the host's runtime layer
(``edgecnn.runtime.interpreter.make_interpreter``) calls the functions here.

Measurement:
    * ``init_ms``: interpreter construction (incl. delegates) + ``allocate_tensors()``.
    * ``first_inference_ms``: the first ``invoke()``, reported apart from the rest.
    * ``warmup`` further invokes, not recorded; then ``runs`` timed invokes.
    * Every timing is ``time.perf_counter()`` around ``invoke()`` only; inputs are set
      before the clock starts. Percentiles use ``numpy.percentile`` (linear
      interpolation); ``std`` is the population standard deviation.
    * ``throughput_ips``: samples per second, ``batch * 1000 / mean``, where ``batch``
      is the input's leading dimension (1 for almost every model).
    * ``peak_rss_kb``: ``VmHWM`` from ``/proc/self/status`` when present, else
      ``resource.getrusage`` (``ru_maxrss`` is KiB on Linux, bytes on macOS); None on
      Windows. It includes Python and numpy, so compare it between runs of this runner
      only.
    * ``startup_s``: with ``--spawned-at`` (the launcher's ``time.time()``, same clock),
      seconds from the launch to the moment the runtime was imported; without it, only
      the time this script spent importing numpy and the runtime.
    * With ``--inputs``: an ``.npz`` with ``x`` (samples, already of the input's dtype,
      or float which is quantized with the input's scale/zero point) and optional ``y``
      (integer labels, or one-hot rows). Every sample is run once more, after timing;
      ``outputs_sha256`` is the sha256 of the raw bytes of all outputs of every sample in
      order, ``accuracy`` the top-1 accuracy of output 0 against ``y``, ``samples`` the
      count. Without ``--inputs`` the timing input is seeded random data of the right
      dtype; with it, the first sample.
    * With ``--inputs`` and ``--report-outputs``: the raw values of output 0 for every
      sample go into ``details.outputs`` (``dtype``, per-sample ``shape``, ``scale``,
      ``zero_point``, ``values``: one list per sample), so the host can compare values,
      not only a checksum (``edgecnn verify`` does). Bounded: at most
      ``MAX_REPORTED_SAMPLES`` samples of at most ``MAX_REPORTED_VALUES_PER_SAMPLE``
      values and ``MAX_REPORTED_VALUES`` in all (the host's result schema keeps lists of
      at most 1000 items); beyond that ``details.outputs_omitted`` says why. Values are
      JSON numbers: exact for integers, and a float32 becomes the double of the same
      value, so nothing is lost; a non-finite value is ``null``.
    * Thermal state (Raspberry Pi and other Linux boards): ``vcgencmd measure_temp`` /
      ``get_throttled`` when ``vcgencmd`` is on PATH, else the sysfs thermal zones;
      read before loading and after timing. ``throttled`` is true when any "now" bit of
      ``get_throttled`` (0 under-voltage, 1 ARM frequency capped, 2 throttled, 3 soft
      temperature limit) is set before or after; bits 16-19 record that the same
      happened at some time since boot.

Result schema ``edgecnn.bench/1`` (one schema for every target; fields in this order)::

    schema              "edgecnn.bench/1"
    status              "ok" | "failed"
    reason              str | null            one line, set when failed
    target              str                   e.g. "local", "coral:usb", "ssh://pi@host"
    model               {path, sha256, size_bytes}
    runtime             {name, version} | null  e.g. {"ai-edge-litert", "2.3.0"}
    delegate            str | null            e.g. "edgetpu:libedgetpu.so.1 (device usb)"
    threads             int
    runs                int
    warmup              int
    init_ms             float | null
    first_inference_ms  float | null
    latency_ms          {mean, std, min, p50, p90, p99, max} | null
    throughput_ips      float | null
    peak_rss_kb         int | null
    accuracy            float | null          top-1 over --inputs labels
    outputs_sha256      str | null
    samples             int | null            samples run from --inputs
    thermal             {before, after, throttled} | null
    host                {hostname, machine, system, python}
    transfer_s          float | null          filled by remote transports
    startup_s           float | null
    timestamp           str                   UTC, ISO 8601
    details             dict | null           target-specific extras (e.g. benchmark_model),
                                              outputs with --report-outputs

Test hooks (not for people): ``--debug-hang`` sleeps forever before doing anything and
``--debug-crash`` calls ``os.abort()``; the host's timeout and crash handling is tested
with them.
"""

import argparse
import datetime
import gc
import glob
import hashlib
import importlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

_T0 = time.perf_counter()  # before numpy: the import time counts as start-up

import numpy as np  # noqa: E402  (after _T0 on purpose)

SCHEMA = "edgecnn.bench/1"
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

# Edge TPU runtime library per platform.system(), as pycoral's utils/edgetpu.py names it.
EDGETPU_LIBRARIES = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}
EDGETPU_INSTALL = {
    "Linux": ("install the Edge TPU runtime: add the Coral apt repository "
              "(https://coral.ai/docs/accelerator/get-started/) and run "
              "'sudo apt-get install libedgetpu1-std'"),
    "Darwin": ("install the Edge TPU runtime for macOS "
               "(https://coral.ai/docs/accelerator/get-started/#runtime-on-mac)"),
    "Windows": ("install the Edge TPU runtime for Windows "
                "(https://coral.ai/docs/accelerator/get-started/#runtime-on-windows)"),
}
RUNTIME_INSTALL = ("no TFLite runtime found; install one with 'pip install ai-edge-litert' "
                   "(or 'pip install tflite-runtime' where LiteRT has no wheel)")

# vcgencmd get_throttled bits (https://www.raspberrypi.com/documentation/computers/os.html#get_throttled).
THROTTLE_BITS = (
    (0, "under_voltage"),
    (1, "arm_freq_capped"),
    (2, "throttled"),
    (3, "soft_temp_limit"),
    (16, "under_voltage_occurred"),
    (17, "arm_freq_capped_occurred"),
    (18, "throttled_occurred"),
    (19, "soft_temp_limit_occurred"),
)
THROTTLE_NOW_MASK = 0xF

# Bounds of --report-outputs; the host's schema (edgecnn.bench.schema) truncates lists
# longer than 1000 items, so neither the sample list nor a sample's values may exceed it.
MAX_REPORTED_SAMPLES = 1000
MAX_REPORTED_VALUES_PER_SAMPLE = 1000
MAX_REPORTED_VALUES = 100000

FIELDS = (
    "schema", "status", "reason", "target", "model", "runtime", "delegate", "threads",
    "runs", "warmup", "init_ms", "first_inference_ms", "latency_ms", "throughput_ips",
    "peak_rss_kb", "accuracy", "outputs_sha256", "samples", "thermal", "host",
    "transfer_s", "startup_s", "timestamp", "details",
)


class RunnerFailure(Exception):
    """A failure with a one-line reason meant for the person reading the result."""


# ------------------------------------------------------------------------- result shape


def new_result(target, model_path, threads, runs, warmup):
    """A result with every schema field, measurements unset."""
    result = dict.fromkeys(FIELDS)
    result.update(
        schema=SCHEMA, status="failed", target=target,
        model={"path": str(model_path), "sha256": None, "size_bytes": None},
        threads=threads, runs=runs, warmup=warmup, host=host_info(),
        timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return result


def host_info():
    """Where the runner ran."""
    return {
        "hostname": platform.node(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
    }


def one_line(text, limit=500):
    """Collapse ``text`` to one line of at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


# ------------------------------------------------------------------------------ runtime


# TFLite runtimes, most preferred first: (pip distribution, module with Interpreter and
# load_delegate). The host's runtime layer (edgecnn.runtime.interpreter) uses this table too.
RUNTIMES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow"),
)


def _import_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow
    return tensorflow


def load_runtime(prefer=None, import_tensorflow=_import_tensorflow):
    """Return ``(name, version, Interpreter, load_delegate)`` of a TFLite runtime.

    Args:
        prefer: a name of ``RUNTIMES`` to load only that one; None takes the first of
            ``RUNTIMES`` that imports.
        import_tensorflow: returns the ``tensorflow`` module or raises ImportError; the
            host passes its own, which imports TensorFlow the one way edgecnn allows.
            Called only after the other runtimes were tried (importing TF is slow).

    Raises:
        RunnerFailure: ``prefer`` is unknown or not installed, or no runtime imports.
    """
    names = [name for name, _ in RUNTIMES]
    if prefer is not None and prefer not in names:
        raise RunnerFailure("unknown TFLite runtime %r; choose one of %s" % (prefer, ", ".join(names)))
    for name, module_name in RUNTIMES:
        if prefer is not None and name != prefer:
            continue
        try:
            if name == "tensorflow":
                tf = import_tensorflow()
                return name, tf.__version__, tf.lite.Interpreter, tf.lite.experimental.load_delegate
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # not installed here: the next runtime may be
        return name, _dist_version(name, module), module.Interpreter, module.load_delegate
    if prefer is not None:
        raise RunnerFailure("the TFLite runtime %s is not installed; pip install %s" % (prefer, prefer))
    raise RunnerFailure(RUNTIME_INSTALL)


def new_interpreter(interpreter_class, model, threads=None, delegates=None):
    """Construct an interpreter on ``model`` (a path, or the model's bytes) and allocate it.

    Raises:
        ValueError, RuntimeError: the runtime refuses the model (see ``first_line``).
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        kwargs = {"model_content": bytes(model)}
    else:
        kwargs = {"model_path": str(model)}
    if threads is not None:
        kwargs["num_threads"] = threads
    if delegates:
        kwargs["experimental_delegates"] = list(delegates)
    interpreter = interpreter_class(**kwargs)
    interpreter.allocate_tensors()
    return interpreter


def first_line(exc):
    """The first non-blank line of an exception (runtimes append multi-line native logs)."""
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


def _dist_version(dist, module):
    try:
        from importlib import metadata  # Python 3.8+
        return metadata.version(dist)
    except Exception:  # Python 3.7, or installed without metadata
        package = sys.modules.get(module.__name__.split(".")[0])
        return str(getattr(package, "__version__", "unknown"))


def edgetpu_library(system=None):
    """The Edge TPU runtime library name for ``system`` (default: this machine)."""
    system = system or platform.system()
    if system not in EDGETPU_LIBRARIES:
        raise RunnerFailure("the Edge TPU runtime is not available for %s" % system)
    return EDGETPU_LIBRARIES[system]


def make_delegates(load_delegate, delegate, device):
    """Load the delegate asked for; returns ``([delegate objects], description)``.

    Raises:
        RunnerFailure: the delegate library cannot be loaded; the reason says how to
            install it.
    """
    if not delegate:
        return [], None
    options = {"device": device} if device else {}
    library = edgetpu_library() if delegate == "edgetpu" else delegate
    loaded, reason = _load_delegate_quietly(load_delegate, library, options)
    if loaded is not None:
        return [loaded], _describe("edgetpu:" + library if delegate == "edgetpu" else library, device)
    if delegate == "edgetpu":
        hint = EDGETPU_INSTALL.get(platform.system(), "install the Edge TPU runtime")
        where = " or no Edge TPU %s is connected" % repr(device) if device else \
            " or no Edge TPU is connected"
        raise RunnerFailure("cannot load the Edge TPU delegate %s (%s): the runtime is "
                            "missing%s; %s" % (library, reason, where, hint))
    raise RunnerFailure("cannot load the delegate %s (%s); check the path and that the "
                        "library matches this runtime" % (library, reason))


def _load_delegate_quietly(load_delegate, library, options):
    """``(delegate, None)``, or ``(None, one-line reason)`` when the library does not load.

    A Delegate whose library fails to load raises in ``__init__`` and then again in
    ``__del__`` ("'Delegate' object has no attribute '_library'"), which Python prints as
    "Exception ignored ..." with a traceback under the one-line error. That second
    failure says nothing new: it is dropped while the half-built object is freed
    (``sys.unraisablehook``, Python 3.8+; on 3.7 the noise stays).
    """
    hook = getattr(sys, "unraisablehook", None)
    if hook is not None:
        sys.unraisablehook = lambda unraisable: None
    try:
        try:
            return load_delegate(library, options), None
        except (ValueError, RuntimeError, OSError) as exc:
            reason = one_line(first_line(exc), 200)
        # Outside the except block the exception (and the traceback holding the
        # half-built Delegate) is gone; collect cycles while the hook is off.
        gc.collect()
        return None, reason
    finally:
        if hook is not None:
            sys.unraisablehook = hook


def _describe(name, device):
    return "%s (device %s)" % (name, device) if device else name


# ------------------------------------------------------------------------------- model


def read_model(path):
    """Return the model bytes, or fail with a reason naming the file."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise RunnerFailure("cannot read the model %s (%s)" % (path, exc.strerror or exc))


def is_edgetpu_model(data):
    """True when the model carries the Edge TPU compiler's custom op.

    The op's name is stored verbatim in the flatbuffer's operator-code table, so a byte
    search finds it without a flatbuffer parser (none is available on a bare device).
    """
    return EDGETPU_CUSTOM_OP.encode("ascii") in data


def _runtime_error_reason(exc, delegates):
    first = first_line(exc)
    if EDGETPU_CUSTOM_OP in str(exc):
        if delegates:
            return ("the delegate did not run the model's %s (%s); install the Edge TPU runtime "
                    "(libedgetpu) from the same Coral release as the edgetpu_compiler that compiled "
                    "it, or recompile with a matching compiler" % (EDGETPU_CUSTOM_OP, one_line(first, 200)))
        return "this is an Edge TPU-compiled model; run it with --target coral"
    fix = "check the delegate, or run without it" if delegates else \
        "re-export the model, or upgrade the runtime if it uses newer ops"
    return "the runtime cannot load the model (%s); %s" % (one_line(first, 300), fix)


# -------------------------------------------------------------------------------- inputs


def random_input(detail, rng):
    """Seeded random data of an input's shape and dtype."""
    dtype = np.dtype(detail["dtype"])
    shape = tuple(int(d) for d in detail["shape"])
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = max(int(info.min), -128), min(int(info.max), 127)
        return rng.randint(low, high + 1, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.randint(0, 2, size=shape).astype(dtype)
    return np.zeros(shape, dtype)


def round_half_away_from_zero(v):
    """``std::round`` on a float array: halves go away from zero (TFLite's ``TfLiteRound``).

    ``v - trunc(v)`` is exact in floating point, so the half test never suffers the
    ``floor(v + 0.5)`` error (0.49999997 + 0.5 rounds up to 1.0 in float32).
    """
    t = np.trunc(v)
    return t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0).astype(v.dtype)


def quantize_values(x, dtype, scale, zero_point):
    """THE input quantization rule of edgecnn, used by evaluation, this runner, verify and the demo.

    It is TFLite's reference QUANTIZE kernel (``reference_ops::AffineQuantize``)::

        q = clamp(round_half_away_from_zero(float32(x) / float32(scale)) + zero_point,
                  dtype.min, dtype.max)

    * arithmetic: float32 throughout (``x`` is cast to float32 first, as the kernel
      reads float32 inputs); the division is by ``scale``, not a multiplication by
      ``1 / scale``, which can differ in the last bit and flip a borderline sample;
    * rounding: half away from zero (``std::round``), not numpy's half-to-even;
    * clipping: to the integer dtype's full range after adding the zero point.

    A non-quantized integer input (``scale == 0``) is rounded and clipped the same way;
    a float input is cast. One definition, so the same file on the same runtime always
    reports the same accuracy, whichever edgecnn command ran it.
    """
    dtype = np.dtype(dtype)
    x = np.asarray(x)
    if dtype.kind not in "iu":
        return x.astype(dtype, copy=False)
    v = x.astype(np.float32, copy=False)
    if scale:
        v = v / np.float32(scale)
    v = round_half_away_from_zero(v)
    if scale:
        v = v.astype(np.float64) + int(zero_point)  # integers: exact in float64
    info = np.iinfo(dtype)
    return np.clip(v, info.min, info.max).astype(dtype)


def quantize(x, detail):
    """Real values to what the input tensor of ``detail`` (an interpreter detail dict) holds."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return quantize_values(x, detail["dtype"], scale, zero_point)


def load_samples(path, detail):
    """Read ``x`` (and ``y``) from an ``.npz`` and convert ``x`` to the input's dtype.

    Returns:
        ``(x, labels or None)`` with ``x`` of shape ``(N, *input_shape[1:])``.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz.files:
                raise RunnerFailure("%s has no array 'x' (found: %s); save the samples as "
                                    "np.savez(path, x=..., y=...)" % (path, ", ".join(npz.files) or "none"))
            x = npz["x"]
            y = npz["y"] if "y" in npz.files else None
    except (OSError, ValueError) as exc:
        raise RunnerFailure("cannot read the inputs %s (%s); pass an .npz written by numpy.savez"
                            % (path, one_line(exc, 200)))
    dtype = np.dtype(detail["dtype"])
    want = tuple(int(d) for d in detail["shape"])[1:]
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise RunnerFailure("inputs x has shape %s but the model expects (N, %s); reshape the "
                            "samples" % (tuple(x.shape), ", ".join(map(str, want))))
    if len(x) == 0:
        raise RunnerFailure("inputs x holds no samples; pass at least one")
    if x.dtype == dtype:
        pass
    elif x.dtype.kind == "f":
        x = quantize(x, detail)
    elif x.dtype.kind in "iub" and dtype.kind == "f":
        x = x.astype(dtype)
    else:
        raise RunnerFailure("inputs x is %s but the model's input is %s; pass float values "
                            "(the runner quantizes them) or values of %s" % (x.dtype, dtype, dtype))
    labels = None
    if y is not None:
        y = np.asarray(y)
        labels = y.argmax(axis=-1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)
        if len(labels) != len(x):
            raise RunnerFailure("inputs hold %d samples but %d labels; they must match"
                                % (len(x), len(labels)))
    return x, labels


def batches(x, batch):
    """Split ``x`` into chunks of the model's fixed batch size, zero-padding the last.

    Yields ``(chunk, real_count)``.
    """
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        real = len(chunk)
        if real < batch:
            pad = np.zeros((batch - real,) + chunk.shape[1:], chunk.dtype)
            chunk = np.concatenate([chunk, pad], axis=0)
        yield chunk, real


# ---------------------------------------------------------------------------- measuring


def latency_stats(times_ms):
    """Summary statistics of per-invoke latencies (ms)."""
    t = np.asarray(times_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {
        "mean": float(t.mean()), "std": float(t.std()), "min": float(t.min()),
        "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(t.max()),
    }


def peak_rss_kb():
    """Peak resident set size of this process in KiB, or None where unknown."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])  # "VmHWM:   123456 kB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)


def parse_vcgencmd_temp(text):
    """``temp=48.3'C`` -> 48.3 (None when the text does not match)."""
    m = re.search(r"temp=([-+]?\d+(?:\.\d+)?)", text or "")
    return float(m.group(1)) if m else None


def parse_throttled(text):
    """``throttled=0x50005`` -> (0x50005, ["under_voltage", ...]); (None, []) if no match."""
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text or "")
    if not m:
        return None, []
    value = int(m.group(1), 0)
    return value, [name for bit, name in THROTTLE_BITS if value & (1 << bit)]


def _run_quiet(argv, timeout=5.0):
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, universal_newlines=True)
        return proc.stdout if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def read_thermal():
    """SoC temperature and throttling flags, or None where the board exposes neither."""
    if shutil.which("vcgencmd"):
        temp = parse_vcgencmd_temp(_run_quiet(["vcgencmd", "measure_temp"]))
        value, flags = parse_throttled(_run_quiet(["vcgencmd", "get_throttled"]))
        if temp is not None or value is not None:
            return {"source": "vcgencmd", "temp_c": temp,
                    "throttled_raw": None if value is None else hex(value), "flags": flags}
    zones = {}
    for path in sorted(glob.glob("/sys/class/thermal/thermal_zone*/temp")):
        try:
            with open(path) as fh:
                millideg = int(fh.read().strip())
        except (OSError, ValueError):
            continue  # some zones refuse reads (e.g. a disabled sensor)
        name = os.path.basename(os.path.dirname(path))
        try:
            with open(os.path.join(os.path.dirname(path), "type")) as fh:
                name = "%s:%s" % (name, fh.read().strip())
        except OSError:
            pass
        zones[name] = millideg / 1000.0
    if zones:
        return {"source": "sysfs", "temp_c": max(zones.values()), "zones": zones}
    return None


def thermal_summary(before, after):
    """Combine two readings; ``throttled`` when a "now" bit is set in either."""
    if before is None and after is None:
        return None
    throttled = False
    for reading in (before, after):
        raw = (reading or {}).get("throttled_raw")
        if raw is not None and int(raw, 16) & THROTTLE_NOW_MASK:
            throttled = True
    return {"before": before, "after": after, "throttled": throttled}


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ the run


def run(args, result):
    """Fill ``result`` in place; raises RunnerFailure (or anything) on failure."""
    name, version, interpreter_class, load_delegate = load_runtime()
    result["runtime"] = {"name": name, "version": version}
    if args.spawned_at is not None:
        result["startup_s"] = round(max(0.0, time.time() - args.spawned_at), 6)
    else:
        result["startup_s"] = round(time.perf_counter() - _T0, 6)

    data = read_model(args.model)
    result["model"].update(sha256=sha256_bytes(data), size_bytes=len(data))
    if data[4:8] != b"TFL3":
        raise RunnerFailure("%s is not a TFLite model (no TFL3 file identifier); pass a .tflite "
                            "produced by the TFLite converter" % args.model)
    if is_edgetpu_model(data) and not args.delegate:
        raise RunnerFailure("this is an Edge TPU-compiled model; run it with --target coral")
    del data  # the interpreter reads the file itself; do not hold a second copy in RSS

    thermal_before = read_thermal()
    if args.delegate:  # recorded before loading, so a failed result says what was tried
        asked = "edgetpu:" + EDGETPU_LIBRARIES.get(platform.system(), "?") \
            if args.delegate == "edgetpu" else args.delegate
        result["delegate"] = _describe(asked, args.device)
    delegates, description = make_delegates(load_delegate, args.delegate, args.device)
    result["delegate"] = description

    start = time.perf_counter()
    try:
        interpreter = new_interpreter(interpreter_class, args.model, args.threads, delegates)
    except (ValueError, RuntimeError) as exc:
        raise RunnerFailure(_runtime_error_reason(exc, delegates))
    result["init_ms"] = (time.perf_counter() - start) * 1e3

    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    samples, labels = None, None
    if args.inputs:
        if len(inputs) != 1:
            raise RunnerFailure("--inputs supports single-input models; this one has %d inputs"
                                % len(inputs))
        samples, labels = load_samples(args.inputs, inputs[0])
    rng = np.random.RandomState(args.seed)
    for i, detail in enumerate(inputs):
        if samples is not None:
            value = next(batches(samples, int(detail["shape"][0])))[0]
        else:
            value = random_input(detail, rng)
        interpreter.set_tensor(detail["index"], value)

    invoke = interpreter.invoke
    clock = time.perf_counter
    t = clock()
    invoke()
    result["first_inference_ms"] = (clock() - t) * 1e3
    for _ in range(args.warmup):
        invoke()
    times = []
    for _ in range(args.runs):
        t = clock()
        invoke()
        times.append((clock() - t) * 1e3)
    thermal_after = read_thermal()

    stats = latency_stats(times)
    batch = int(inputs[0]["shape"][0]) if inputs and len(inputs[0]["shape"]) else 1
    result["latency_ms"] = stats
    result["throughput_ips"] = max(batch, 1) * 1e3 / stats["mean"] if stats["mean"] > 0 else None
    result["thermal"] = thermal_summary(thermal_before, thermal_after)

    if samples is not None:
        evaluate(interpreter, inputs[0], outputs, samples, labels, result,
                 report_outputs=args.report_outputs)
    result["peak_rss_kb"] = peak_rss_kb()
    result["status"] = "ok"


def evaluate(interpreter, input_detail, outputs, samples, labels, result, report_outputs=False):
    """Run every sample once: outputs checksum and top-1 accuracy (and, when asked, the
    raw values of output 0 in ``details.outputs``)."""
    digest = hashlib.sha256()
    batch = max(int(input_detail["shape"][0]), 1)
    predictions = []
    first = []
    for chunk, real in batches(samples, batch):
        interpreter.set_tensor(input_detail["index"], chunk)
        interpreter.invoke()
        for k, detail in enumerate(outputs):
            value = interpreter.get_tensor(detail["index"])[:real]
            digest.update(np.ascontiguousarray(value).tobytes())
            if k == 0:
                # Argmax of raw quantized scores equals argmax of dequantized ones: the
                # affine map real = scale * (q - zero_point) with scale > 0 keeps order.
                predictions.append(value.reshape(real, -1).argmax(axis=-1))
                if report_outputs:
                    first.append(value.copy())
    result["outputs_sha256"] = digest.hexdigest()
    result["samples"] = int(len(samples))
    if labels is not None:
        predicted = np.concatenate(predictions)
        result["accuracy"] = float(np.mean(predicted == labels.astype(np.int64)))
    if report_outputs and outputs:
        details = result.get("details") or {}
        details.update(report_values(np.concatenate(first, axis=0), outputs[0]))
        result["details"] = details


def report_values(values, detail):
    """``{"outputs": ...}`` with output 0's values per sample, or ``{"outputs_omitted": why}``."""
    n = int(values.shape[0])
    per_sample = int(np.prod(values.shape[1:], dtype=np.int64)) if values.ndim > 1 else 1
    if n > MAX_REPORTED_SAMPLES or per_sample > MAX_REPORTED_VALUES_PER_SAMPLE \
            or n * per_sample > MAX_REPORTED_VALUES:
        return {"outputs_omitted": "%d samples of %d values are more than --report-outputs returns "
                                   "(at most %d samples, %d values each, %d in all)"
                                   % (n, per_sample, MAX_REPORTED_SAMPLES, MAX_REPORTED_VALUES_PER_SAMPLE,
                                      MAX_REPORTED_VALUES)}
    rows = values.reshape(n, per_sample)
    if rows.dtype.kind == "f":
        # JSON has no NaN or infinity; null marks them (the host counts them as differing).
        rows = rows.astype(np.float64)
        listed = [[v if math.isfinite(v) else None for v in row] for row in rows.tolist()]
    else:
        listed = rows.tolist()  # Python ints: exact
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {"outputs": {"index": 0, "dtype": str(np.dtype(detail["dtype"])),
                        "shape": [int(d) for d in values.shape[1:]],
                        "scale": float(scale), "zero_point": int(zero_point), "values": listed}}


# ---------------------------------------------------------------------------------- CLI


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="runner.py", description="Time one TFLite model here and print a JSON result.")
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--runs", type=int, default=100, help="timed invokes (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed invokes first (default 10)")
    parser.add_argument("--inputs", help=".npz with x (and y labels): checksum and accuracy")
    parser.add_argument("--delegate", help="'edgetpu', or the path of a delegate library")
    parser.add_argument("--device", help="delegate device option, e.g. usb, pci, usb:0")
    parser.add_argument("--target", default="local", help="target name to record (default local)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    parser.add_argument("--spawned-at", type=float, dest="spawned_at",
                        help="launcher's time.time() at spawn, to report start-up time")
    parser.add_argument("--out", help="write the JSON here (atomically) instead of stdout")
    parser.add_argument("--report-outputs", action="store_true", dest="report_outputs",
                        help="with --inputs: put output 0's raw values in details.outputs")
    parser.add_argument("--debug-hang", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--debug-crash", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, low in (("threads", 1), ("runs", 1), ("warmup", 0)):
        if getattr(args, name) < low:
            parser.error("--%s must be >= %d" % (name, low))
    return args


def write_output(text, out, stdout_fd):
    """Write the JSON to ``out`` atomically, or to the saved stdout descriptor."""
    if out:
        directory = os.path.dirname(os.path.abspath(out))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-result.", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    data = text.encode("utf-8")
    while data:
        data = data[os.write(stdout_fd, data):]


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.debug_hang:
        while True:
            time.sleep(3600)
    if args.debug_crash:
        os.abort()

    # Native code (runtime and delegate logs) may print to file descriptor 1; keep the
    # real stdout for the JSON alone and send everything else to stderr.
    sys.stdout.flush()
    stdout_fd = os.dup(1)
    os.dup2(2, 1)

    result = new_result(args.target, args.model, args.threads, args.runs, args.warmup)
    try:
        run(args, result)
    except RunnerFailure as exc:
        result["status"], result["reason"] = "failed", one_line(exc)
    except KeyboardInterrupt:
        result["status"], result["reason"] = "failed", "interrupted"
    except Exception as exc:  # the host must always get JSON, whatever broke here
        result["status"] = "failed"
        result["reason"] = one_line("runner error: %s: %s" % (type(exc).__name__, exc))
    if result["status"] == "failed" and result.get("peak_rss_kb") is None:
        result["peak_rss_kb"] = peak_rss_kb()
    write_output(json.dumps(result, indent=1) + "\n", args.out, stdout_fd)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
