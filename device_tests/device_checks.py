"""Shared pieces of the on-device suites: reference rows, models, samples, the checks.

Reference thresholds live in ``reference/*.csv`` (``model,threads,p50_ms_max,
accuracy_min``; lines starting with ``#`` are comments). The fixtures that read the
environment are in ``conftest.py``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
SAMPLES = 500  # test-split images sent to the device for accuracy


@dataclass(frozen=True)
class Reference:
    """One row of a reference CSV: limits a result must meet (None = not checked)."""

    model: str
    threads: int
    p50_ms_max: float | None
    accuracy_min: float | None

    @property
    def id(self) -> str:
        return f"{Path(self.model).name}-t{self.threads}"


def reference_rows(name: str) -> list[Reference]:
    """The rows of ``reference/<name>``."""
    lines = [ln for ln in (REFERENCE_DIR / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    rows = []
    for row in csv.DictReader(lines):
        rows.append(Reference(row["model"], int(row["threads"]),
                              float(row["p50_ms_max"]) if row["p50_ms_max"].strip() else None,
                              float(row["accuracy_min"]) if row["accuracy_min"].strip() else None))
    return rows


def env_or_skip(name: str, what: str) -> str:
    """The variable's value, or skip the test saying which variable configures it."""
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.skip(f"{what} not configured: set {name} (see device_tests/README.md)")
    return value


def model_or_skip(row: Reference) -> Path:
    """The reference row's model file, or skip saying how to build it."""
    path = REPO / row.model
    if not path.is_file():
        hint = ("compile it with 'edgecnn compile runs/quickstart/student_int8.tflite --target edgetpu'"
                if path.stem.endswith("_edgetpu") else "build it with 'bash tools/dev.sh quickstart'")
        pytest.skip(f"{row.model} does not exist; {hint}")
    return path


_samples_cache: dict[Path, Path] = {}


def samples_for(model: Path, tmp_dir: Path) -> Path:
    """Labelled test-split samples for ``model``'s run directory (``x`` normalized, ``y``).

    Uses the ``bench_samples_*.npz`` a build with a ``bench`` section wrote, else makes
    one from the run's recipe (``manifest.json``) and the dataset on this host.
    """
    run_dir = model.parent
    if run_dir in _samples_cache:
        return _samples_cache[run_dir]
    written = sorted(run_dir.glob("bench_samples_*.npz"))
    if written:
        path = written[-1]
    else:
        from edgecnn.data import load_dataset
        from edgecnn.recipe import validate_recipe

        manifest = run_dir / "manifest.json"
        if not manifest.is_file():
            pytest.skip(f"{run_dir} has no manifest.json to rebuild its test split from; build it with edgecnn")
        recipe = validate_recipe(json.loads(manifest.read_text())["recipe"], str(manifest))
        ds = load_dataset(recipe.data, recipe.seed)
        path = tmp_dir / f"{run_dir.name}_samples.npz"
        np.savez(path, x=ds.normalization.apply(ds.x_test[:SAMPLES]).astype(np.float32), y=ds.y_test[:SAMPLES])
    _samples_cache[run_dir] = path
    return path


def host_accuracy(model: Path, samples: Path) -> float:
    """The accuracy this host's runtime gets on the same samples (the device must match it)."""
    from edgecnn.runtime.interpreter import evaluate_tflite

    with np.load(samples) as npz:
        return float(evaluate_tflite(model, npz["x"], npz["y"], num_threads=1))


def check_against_reference(result: dict, row: Reference, host_acc: float | None = None,
                            inputs: Path | None = None) -> None:
    """The shared assertions: ok, not throttled, within the row's limits, accuracy as on the host.

    ``inputs``: the ``.npz`` the benchmark was given. Then the runner must return the
    device-side accuracy on all its samples (its absence is a failure, not a skipped
    check), and the row's accuracy floor and ``host_acc`` are checked against it.
    Without inputs (benchmark_model on Android feeds random data) no accuracy is checked.
    """
    assert result["status"] == "ok", result["reason"]
    thermal = result.get("thermal") or {}
    assert not thermal.get("throttled"), (
        f"the board was throttled ({thermal}); fix cooling or power first, these figures are not representative")
    _record(result)
    lat = result["latency_ms"]
    p50 = lat["p50"] if lat.get("p50") is not None else lat["mean"]
    if row.p50_ms_max is not None:
        assert p50 <= row.p50_ms_max, f"{row.id}: p50 {p50:.3f} ms > reference limit {row.p50_ms_max} ms"
    if inputs is None:
        assert host_acc is None, "host_acc needs the inputs the device was given"
        return
    with np.load(inputs) as npz:
        samples = len(npz["y"])
    assert result.get("accuracy") is not None, f"{row.id}: inputs were given but the runner returned no accuracy"
    assert result["samples"] == samples, (result["samples"], samples)
    if row.accuracy_min is not None:
        assert result["accuracy"] >= row.accuracy_min, (
            f"{row.id}: accuracy {result['accuracy']:.4f} < reference floor {row.accuracy_min}")
    if host_acc is not None:
        # Same int8 arithmetic everywhere; different kernels (XNNPACK, 32-bit builds) may
        # flip a rare near-tie, never more than half a point on 500 images.
        assert abs(result["accuracy"] - host_acc) <= 0.005, (result["accuracy"], host_acc)


def _record(result: dict) -> None:
    """Append the result to $EDGECNN_DEVICE_RESULTS (a .jsonl) when set, for tightening limits."""
    target = os.environ.get("EDGECNN_DEVICE_RESULTS")
    if target:
        from edgecnn.bench.schema import append_result

        append_result(target, result)


# ----------------------------------------------------------- SSH "devices" on this machine
#
# tools/emulated_pi.sh (arm64 Debian under qemu-user, two runtimes) and
# tools/tflite_runtime_x86.sh (x86 venv with tflite-runtime 2.14) start an sshd on
# 127.0.0.1 and write a device.env with the settings; environment variables override it.

EMULATED_PI_DIR = Path(os.environ.get("EDGECNN_EMULATED_PI_DIR") or Path.home() / ".cache/edgecnn/emulated-pi")
X86_TFLITE_DIR = Path(os.environ.get("EDGECNN_X86_TFLITE_DIR") or Path.home() / ".cache/edgecnn/x86-tflite-runtime")


@dataclass(frozen=True)
class SshDevice:
    """One runtime on one SSH-reachable machine, and what ``bench`` must report for it."""

    name: str  # test id, e.g. arm64-ai-edge-litert
    target: str  # ssh://user@127.0.0.1:port
    remote_python: str
    identity: Path
    known_hosts: Path
    machine: str  # platform.machine() the runner must report
    runtime: str  # runtime name the runner must report
    version_prefix: str  # its version must start with this

    def cli_args(self) -> list[str]:
        """The ``--target`` and connection options of ``edgecnn bench``/``verify`` for this device."""
        return ["--target", self.target, "--remote-python", self.remote_python, "--identity", str(self.identity),
                "--known-hosts", str(self.known_hosts), "--connect-timeout", "20"]


# name -> (settings prefix, folder of its device.env, script that starts it, python key,
#          machine, runtime, version prefix)
_SSH_DEVICES = {
    "x86-tflite-runtime-2.14": ("EDGECNN_X86_TFLITE", X86_TFLITE_DIR, "bash tools/tflite_runtime_x86.sh",
                                "PYTHON", "x86_64", "tflite-runtime", "2.14."),
    "arm64-ai-edge-litert-2.3": ("EDGECNN_EMULATED_PI", EMULATED_PI_DIR, "sudo bash tools/emulated_pi.sh",
                                 "LITERT_PYTHON", "aarch64", "ai-edge-litert", "2.3."),
    "arm64-tflite-runtime-2.14": ("EDGECNN_EMULATED_PI", EMULATED_PI_DIR, "sudo bash tools/emulated_pi.sh",
                                  "TFLITE_PYTHON", "aarch64", "tflite-runtime", "2.14."),
}
SSH_DEVICE_NAMES = tuple(_SSH_DEVICES)


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def _port_open(target: str) -> bool:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(target)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 22), timeout=3).close()
        return True
    except OSError:
        return False


def ssh_device_or_skip(name: str) -> SshDevice:
    """The configured SSH device ``name`` (see ``SSH_DEVICE_NAMES``), or skip saying how to start it.

    Settings come from ``<PREFIX>_HOST``, ``_IDENTITY``, ``_KNOWN_HOSTS`` and the python
    variable when ``<PREFIX>_HOST`` is set, else from the ``device.env`` its script's
    ``start`` wrote. A device.env whose sshd is no longer listening (a reboot) skips;
    an explicitly set ``<PREFIX>_HOST`` that does not answer fails in the test.
    """
    prefix, folder, script, python_key, machine, runtime, version = _SSH_DEVICES[name]
    if os.environ.get(f"{prefix}_HOST", "").strip():
        values = {k: v for k, v in os.environ.items() if k.startswith(prefix)}
        source = "the environment"
    else:
        env_file = folder / "device.env"
        if not env_file.is_file():
            pytest.skip(f"{name} not configured: run '{script} build' and '{script} start' (writes {env_file}), "
                        f"or set {prefix}_HOST (see device_tests/README.md)")
        values = _read_env_file(env_file)
        source = str(env_file)
        if not _port_open(values.get(f"{prefix}_HOST", "")):
            pytest.skip(f"{name}: {env_file} names {values.get(f'{prefix}_HOST')} but nothing listens there; "
                        f"run '{script} start'")
    keys = [f"{prefix}_{k}" for k in ("HOST", "IDENTITY", "KNOWN_HOSTS", python_key)]
    missing = [k for k in keys if not values.get(k)]
    if missing:
        pytest.fail(f"{name}: {source} lacks {', '.join(missing)}")
    return SshDevice(name, values[f"{prefix}_HOST"], values[f"{prefix}_{python_key}"],
                     Path(values[f"{prefix}_IDENTITY"]), Path(values[f"{prefix}_KNOWN_HOSTS"]),
                     machine, runtime, version)


def quickstart_bundle_or_skip() -> Path:
    """``$EDGECNN_BUNDLE`` or the quickstart build's bundle, or skip saying how to make it."""
    path = Path(os.environ.get("EDGECNN_BUNDLE") or REPO / "runs/quickstart/bundle")
    if not (path / "bundle.json").is_file():
        pytest.skip(f"no bundle at {path}; build it with 'bash tools/dev.sh quickstart' "
                    f"(or 'edgecnn bundle runs/quickstart --out {path}'), or set EDGECNN_BUNDLE")
    return path


# ------------------------------------------------------------------- tampering with a bundle


def copy_bundle(bundle: Path, dest: Path) -> Path:
    """A copy of ``bundle`` at ``dest`` (a new folder), to tamper with."""
    import shutil

    shutil.copytree(bundle, dest)
    return dest


def weight_tensor_offset(model: Path, name_part: str) -> tuple[int, tuple[int, ...]]:
    """File offset and shape of the int8 constant tensor whose name contains ``name_part``.

    The interpreter hands back a constant tensor's data as stored in the file, so its
    bytes locate it in the flatbuffer; it must occur exactly once.
    """
    from edgecnn.runtime.interpreter import make_interpreter

    data = model.read_bytes()
    interpreter = make_interpreter(model)
    for detail in interpreter.get_tensor_details():
        if name_part not in detail["name"] or detail["dtype"] != np.int8:
            continue
        try:
            values = interpreter.get_tensor(detail["index"])
        except ValueError:  # not a constant tensor
            continue
        raw = values.tobytes()
        if values.size >= 64 and data.count(raw) == 1:
            return data.find(raw), tuple(values.shape)
    raise AssertionError(f"{model}: no unique int8 constant tensor named like {name_part!r}")


def flip_weight_bytes(model: Path, name_part: str = "block_8_expand", count: int | None = None) -> None:
    """Negate ``count`` bytes (default all) of a weight buffer in place: int8 ``-w``.

    Measured on the quickstart int8 model against its golden outputs (tolerance 25 steps):
    all of ``block_8_expand`` moves the outputs by 136 steps, 1024 bytes of the first conv
    by 255; but 1024 of the 143,360 bytes of the last conv (``Conv_1``) only by 5 steps,
    which no value comparison can tell from another runtime's rounding -- that damage is
    caught by the sha256 check alone.
    """
    offset, shape = weight_tensor_offset(model, name_part)
    count = int(np.prod(shape)) if count is None else min(count, int(np.prod(shape)))
    data = bytearray(model.read_bytes())
    chunk = np.frombuffer(bytes(data[offset:offset + count]), dtype=np.int8)
    data[offset:offset + count] = (-chunk.astype(np.int16)).clip(-128, 127).astype(np.int8).tobytes()
    model.write_bytes(bytes(data))


def permute_classifier_rows(model: Path, name_part: str = "logits/MatMul") -> None:
    """Rotate the rows of the final fully-connected weights by one class: a valid model that
    computes a different function (the classes shifted), as a model from another build would."""
    offset, shape = weight_tensor_offset(model, name_part)
    rows = int(shape[0])
    size = int(np.prod(shape))
    data = bytearray(model.read_bytes())
    weights = np.frombuffer(bytes(data[offset:offset + size]), dtype=np.int8).reshape(rows, -1)
    data[offset:offset + size] = np.roll(weights, 1, axis=0).tobytes()
    model.write_bytes(bytes(data))


def rehash_bundle(bundle: Path) -> None:
    """Rewrite ``bundle.json``'s sha256 and size of every listed file: a tampered bundle
    whose hashes are consistent, so only the output comparison can catch it."""
    from edgecnn.fileio import sha256_file

    manifest_path = bundle / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    for name, entry in manifest["files"].items():
        entry["sha256"] = sha256_file(bundle / name)
        if "size" in entry:
            entry["size"] = (bundle / name).stat().st_size
    manifest_path.write_text(json.dumps(manifest, indent=2))


# ------------------------------------------- raw outputs, measured apart from edgecnn verify

# Runs on the device with only numpy and a TFLite runtime: every golden input, one at a
# time, raw output 0 back as JSON. Deliberately independent of edgecnn's runner, so the
# figures below check verify's tolerance rather than repeat its code.
_RAW_SCRIPT = r"""
import json, platform, sys
import numpy as np
try:
    from ai_edge_litert.interpreter import Interpreter
    import ai_edge_litert as mod
    name = "ai-edge-litert"
except ImportError:
    from tflite_runtime.interpreter import Interpreter
    import tflite_runtime as mod
    name = "tflite-runtime"
from importlib import metadata
model, npz = sys.argv[1], sys.argv[2]
it = Interpreter(model_path=model, num_threads=1)
it.allocate_tensors()
inp, out = it.get_input_details()[0], it.get_output_details()[0]
x = np.load(npz)["x"]
rows = []
for i in range(len(x)):
    it.set_tensor(inp["index"], x[i:i + 1])
    it.invoke()
    rows.append(it.get_tensor(out["index"]).reshape(-1).tolist())
print(json.dumps({"runtime": name, "version": metadata.version(name), "machine": platform.machine(),
                  "numpy": np.__version__, "outputs": rows}))
"""


def _ssh_base(device: SshDevice) -> tuple[list[str], str, str]:
    from urllib.parse import urlsplit

    parts = urlsplit(device.target)
    opts = ["-i", str(device.identity), "-o", f"UserKnownHostsFile={device.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"]
    return opts, f"{parts.username}@{parts.hostname}", str(parts.port or 22)


def run_raw_outputs(device: SshDevice, model: Path, golden_npz: Path, timeout_s: float = 900) -> dict:
    """Copy ``model`` and ``golden_npz`` to the device, run every golden input there with
    plain ``Interpreter`` calls, and return ``{runtime, version, machine, numpy, outputs}``."""
    import subprocess

    opts, login, port = _ssh_base(device)
    remote_dir = subprocess.run(["ssh", *opts, "-p", port, login, "mktemp -d /tmp/edgecnn-raw.XXXXXX"],
                                check=True, capture_output=True, text=True, timeout=120).stdout.strip()
    try:
        subprocess.run(["scp", "-q", *opts, "-P", port, str(model), str(golden_npz), f"{login}:{remote_dir}/"],
                       check=True, capture_output=True, timeout=300)
        proc = subprocess.run(["ssh", *opts, "-p", port, login,
                               f"{device.remote_python} - {remote_dir}/{model.name} {remote_dir}/{golden_npz.name}"],
                              input=_RAW_SCRIPT, capture_output=True, text=True, timeout=timeout_s)
        assert proc.returncode == 0, f"{device.name}: raw run failed: {proc.stderr[-2000:]}"
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["ssh", *opts, "-p", port, login, f"rm -rf {remote_dir}"], capture_output=True, timeout=120)


def raw_difference(golden: np.ndarray, device: np.ndarray, scale: float) -> dict:
    """How ``device`` outputs differ from ``golden``: samples differing, worst deviation in
    output steps (integer outputs) and real units, top-1 agreement."""
    n = len(golden)
    g = np.asarray(golden).reshape(n, -1).astype(np.float64)
    d = np.asarray(device).reshape(n, -1).astype(np.float64)
    diff = np.abs(g - d)
    integer = np.asarray(golden).dtype.kind in "iu"
    return {"samples": n,
            "differing": int(np.count_nonzero(diff.max(axis=1) > 0)),
            "max_steps": int(diff.max()) if integer else None,
            "max_abs": float(diff.max() * (scale if integer and scale else 1.0)),
            "top1_agreement": float(np.mean(g.argmax(axis=1) == d.argmax(axis=1)))}
