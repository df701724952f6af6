"""Deploy bundles: a folder that carries a model to a device and proves it runs the same there.

``edgecnn bundle RUN_DIR --out DIR`` gathers, from a finished run directory:

* the chosen model file(s) (``student_int8.tflite`` and/or ``student_float32.tflite``),
  with their TFLite metadata;
* ``labels.txt`` (one class name per line, in output order);
* ``metadata.json``: input spec, normalization, classes, the source recipe hash and the
  test accuracy the host measured;
* ``golden_<precision>.npz`` per model: ``x`` (sample test images, already normalized
  and quantized exactly as the model's input expects), ``y`` (their labels) and
  ``outputs`` (the host interpreter's raw outputs on them). The device runner reads
  ``x``/``y`` directly (``runner.py MODEL --inputs golden_int8.npz``);
* ``runner.py``, the standalone device runner (stdlib + numpy + a TFLite runtime);
* ``README.md`` with the commands to run on the device;
* ``bundle.json``: sha256 and size of every file above.

The folder is written under a temporary name and renamed into place, so a bundle that
exists is complete. ``edgecnn verify BUNDLE`` checks every sha256, then runs the golden
inputs where the model lives and compares the outputs with the host's: byte-exact for
integer outputs (same kernels, same input -> same int8 result), within ``atol`` for float
outputs (float kernels may differ by vectorization and thread count).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgecnn.errors import DataError, DeviceError, ModelFileError
from edgecnn.fileio import atomic_path, sha256_file

__all__ = ["BUNDLE_MANIFEST", "ModelCheck", "VerifyReport", "check_bundle_files", "format_verify", "load_bundle_metadata",
           "verify_bundle", "write_bundle"]

BUNDLE_SCHEMA = "edgecnn.bundle/1"
BUNDLE_MANIFEST = "bundle.json"
BUNDLE_METADATA = "metadata.json"
LABELS_FILE = "labels.txt"
RUNNER_FILE = "runner.py"
README_FILE = "README.md"
GOLDEN_SAMPLES = 32
FLOAT_ATOL = 1e-5
# precision -> export format row name; "all" picks every model the run produced.
MODEL_CHOICES = ("int8", "float32", "all")


def _golden_name(precision: str) -> str:
    return f"golden_{precision}.npz"


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{path}: not found; {what}") from None
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: unreadable ({exc}); {what}") from None


# --------------------------------------------------------------------------- writing


def write_bundle(run_dir: str | os.PathLike, out_dir: str | os.PathLike, model: str = "int8",
                 samples: int = GOLDEN_SAMPLES, recipe=None, dataset=None) -> Path:
    """Write a deploy bundle of ``run_dir``'s model(s) to ``out_dir`` (replaced atomically).

    Args:
        run_dir: a finished build's run directory (``dataset.json``, ``evaluation.json``
            and the ``.tflite`` files).
        out_dir: the bundle folder to create (an existing one is replaced).
        model: ``int8``, ``float32`` or ``all``.
        samples: golden test images per model.
        recipe: the build's :class:`~edgecnn.recipe.Recipe` (default: read from the run's
            ``manifest.json``); used for the recipe hash and to load the test images.
        dataset: an already loaded :class:`~edgecnn.data.Dataset` (the pipeline passes
            its own), else the test split is loaded from the recipe.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ModelFileError: the run directory lacks the files or the asked model.
        DataError: the test images cannot be loaded.
    """
    from edgecnn import __version__
    from edgecnn.bench.local import RUNNER_PATH
    from edgecnn.export.formats import get_format

    run = Path(run_dir)
    fix = "pass the run directory of a finished 'edgecnn build'"
    if model not in MODEL_CHOICES:
        raise ValueError(f"model must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    info = _read_json(run / "dataset.json", fix)
    evaluation = _read_json(run / "evaluation.json", fix)
    standalone = recipe is None
    if standalone:
        from edgecnn.recipe import validate_recipe

        recipe = validate_recipe(_read_json(run / "manifest.json", fix)["recipe"], source=str(run / "manifest.json"))
    wanted = ("int8", "float32") if model == "all" else (model,)
    chosen = [(p, run / get_format(p).filename) for p in wanted if (run / get_format(p).filename).is_file()]
    if not chosen or (model != "all" and len(chosen) != 1):
        raise ModelFileError(f"{run}: no {' or '.join(get_format(p).filename for p in wanted)} in the run "
                             f"directory; build it first (quantize.int8 / export.formats)")

    x_test, y_test = _golden_images(recipe, dataset, samples)
    from edgecnn.data import NormalizationSpec

    norm = NormalizationSpec.from_dict(info["normalization"])
    x_real = norm.apply(x_test)
    classes = list(info["class_names"])
    # A standalone bundle reads the finished report; inside a build it is not written yet.
    report = _optional_json(run / "report.json") if standalone else {}
    out = Path(out_dir)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        models = []
        for precision, src in chosen:
            dst = tmp / src.name
            shutil.copyfile(src, dst)
            spec = _golden(dst, x_real, y_test, tmp / _golden_name(precision))
            accuracy = evaluation.get("models", {}).get(f"tflite_{precision}", {}).get("accuracy")
            models.append({"file": src.name, "precision": precision, "golden": _golden_name(precision),
                           "accuracy": accuracy, **spec})
        (tmp / LABELS_FILE).write_text("\n".join(classes) + "\n", encoding="utf-8")
        shutil.copyfile(RUNNER_PATH, tmp / RUNNER_FILE)
        metadata = {
            "schema": BUNDLE_SCHEMA,
            "recipe": recipe.name,
            "recipe_hash": recipe.recipe_hash,
            "edgecnn": __version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "input": {"shape": info["input_shape"], "color": "RGB" if info["input_shape"][-1] == 3 else "GRAYSCALE",
                      "pixel_range": [0, 255]},
            "normalization": norm.to_dict(),
            "classes": classes,
            "accuracy": {"test_images": evaluation.get("test_images"), "runtime": evaluation.get("runtime"),
                         "runtime_version": evaluation.get("runtime_version"),
                         "models": {m["file"]: m["accuracy"] for m in models},
                         "summary": report.get("summary", {})},
            "models": models,
            "golden_samples": int(len(y_test)),
        }
        (tmp / BUNDLE_METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        (tmp / README_FILE).write_text(_readme(metadata), encoding="utf-8")
        files = {p.name: {"sha256": sha256_file(p), "size_bytes": p.stat().st_size}
                 for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"schema": BUNDLE_SCHEMA, "created_at": metadata["created_at"], "recipe_hash": recipe.recipe_hash,
                    "models": [{"file": m["file"], "golden": m["golden"]} for m in models], "files": files}
        (tmp / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _optional_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _golden_images(recipe, dataset, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``samples`` test images (uint8, model size) and labels."""
    if dataset is None:
        from edgecnn.data import load_dataset

        # The test split is drawn before train_limit applies (edgecnn.data.dataset), so
        # a tiny train_limit gives the same test images without resizing the train set.
        data_cfg = recipe.data.model_copy(update={"train_limit": 10, "validation_fraction": 0.0})
        try:
            dataset = load_dataset(data_cfg, recipe.seed)
        except DataError as exc:
            raise DataError(f"golden samples: {exc}") from None
    n = min(samples, len(dataset.y_test))
    return dataset.x_test[:n], dataset.y_test[:n]


def _golden(model: Path, x_real: np.ndarray, y: np.ndarray, path: Path) -> dict:
    """Write ``x`` (as the model's input holds it), ``y`` and the host's raw ``outputs``."""
    from edgecnn.runtime.interpreter import input_specs, load_interpreter, output_specs, quantize_input

    interpreter = load_interpreter(model)
    ins, outs = input_specs(interpreter), output_specs(interpreter)
    if len(ins) != 1 or len(outs) != 1:
        raise ModelFileError(f"{model}: a bundle holds one-input, one-output classifiers; this one has "
                             f"{len(ins)} inputs and {len(outs)} outputs")
    x = quantize_input(x_real, ins[0])
    outputs = _run_raw(interpreter, x)
    np.savez(path, x=x, y=y.astype(np.int64), outputs=outputs)
    return {"input": {"dtype": str(ins[0].dtype), "shape": list(ins[0].shape), "scale": ins[0].scale,
                      "zero_point": ins[0].zero_point},
            "output": {"dtype": str(outs[0].dtype), "shape": list(outs[0].shape), "scale": outs[0].scale,
                       "zero_point": outs[0].zero_point}}


def _run_raw(interpreter, x: np.ndarray) -> np.ndarray:
    """Raw output 0 for each sample of ``x`` run one at a time (batch 1, as on devices)."""
    from edgecnn.runtime.interpreter import input_specs, output_specs

    spec, out = input_specs(interpreter)[0], output_specs(interpreter)[0]
    results = []
    for i in range(len(x)):
        interpreter.set_tensor(spec.index, x[i:i + 1])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out.index).copy())
    return np.concatenate(results, axis=0)


def _readme(meta: dict) -> str:
    m = meta["models"][0]
    model, golden = m["file"], m["golden"]
    accuracy = ", ".join(f"`{f}` {a * 100:.2f} %" for f, a in meta["accuracy"]["models"].items() if a is not None)
    norm = meta["normalization"]
    return f"""# edgecnn deploy bundle: {meta['recipe']}

Recipe hash `{meta['recipe_hash'][:12]}`, built with edgecnn {meta['edgecnn']} on {meta['created_at']}.
Host test accuracy: {accuracy or '-'} ({meta['accuracy']['test_images']} test images).

Input: {meta['input']['shape']} {meta['input']['color']}, `x = (pixel - {norm['mean']}) / {norm['std']}` on 0..255
pixels, then quantized with the input tensor's scale and zero point (see `metadata.json`).
Classes (`labels.txt`): {', '.join(meta['classes'])}.

## Check the copy and the device (on the host)

    edgecnn verify .                 # sha256 of every file, then the golden outputs on this machine

## On a Raspberry Pi (64-bit Raspberry Pi OS, Python 3.9+)

    python3 -m venv ~/edgecnn-venv && . ~/edgecnn-venv/bin/activate
    pip install numpy ai-edge-litert            # or: pip install tflite-runtime
    sha256sum -c <(python3 -c "import json; [print(v['sha256'] + '  ' + k) for k, v in json.load(open('bundle.json'))['files'].items()]")
    # latency, memory, and the outputs checksum + accuracy on the golden samples:
    python3 runner.py {model} --threads 4 --runs 200 --inputs {golden}

The runner prints one JSON result. Its `outputs_sha256` must equal the sha256 of the host's
outputs (`python3 -c "import hashlib, numpy as np; print(hashlib.sha256(np.load('{golden}')['outputs'].tobytes()).hexdigest())"`)
for int8 models; `accuracy` is over the {meta['golden_samples']} golden samples.

## Camera demo on the Pi

    pip install opencv-python-headless click pydantic pyyaml
    pip install --no-deps ./edgecnn              # a copy of the edgecnn source: the demo needs no TensorFlow
    edgecnn demo --model . --source 0 --top-k 3 --threads 4                 # window, q or Esc quits
    edgecnn demo --model . --source 0 --headless --out annotated.mp4 --log frames.jsonl --max-frames 300
"""


# --------------------------------------------------------------------------- verifying


@dataclass
class ModelCheck:
    """What verification found for one model of the bundle."""

    file: str
    target: str
    ok: bool
    comparison: str  # "exact" or f"atol {FLOAT_ATOL}"
    samples: int = 0
    mismatched: int = 0
    max_abs_diff: float | None = None
    accuracy: float | None = None
    latency_ms: float | None = None
    reason: str | None = None


@dataclass
class VerifyReport:
    """Result of :func:`verify_bundle`."""

    bundle: str
    files_checked: int
    models: list[ModelCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.models)

    def to_dict(self) -> dict:
        return {"bundle": self.bundle, "ok": self.ok, "files_checked": self.files_checked,
                "models": [asdict(m) for m in self.models]}


def load_bundle_metadata(bundle_dir: str | os.PathLike) -> dict:
    """The bundle's ``metadata.json`` (the demo reads labels and normalization from it)."""
    return _read_json(Path(bundle_dir) / BUNDLE_METADATA, "not an edgecnn bundle; create one with 'edgecnn bundle'")


def check_bundle_files(bundle_dir: str | os.PathLike) -> dict:
    """Check every file listed in ``bundle.json`` against its sha256; return the manifest.

    Raises:
        ModelFileError: one line naming the first missing or altered file.
    """
    bundle = Path(bundle_dir)
    if not bundle.is_dir():
        raise ModelFileError(f"{bundle}: no such bundle folder; create one with 'edgecnn bundle RUN_DIR --out DIR'")
    manifest = _read_json(bundle / BUNDLE_MANIFEST, "not an edgecnn bundle; create one with 'edgecnn bundle'")
    files = manifest.get("files")
    if manifest.get("schema") != BUNDLE_SCHEMA or not isinstance(files, dict) or not files:
        raise ModelFileError(f"{bundle / BUNDLE_MANIFEST}: not a {BUNDLE_SCHEMA} manifest; re-create the bundle")
    for name, entry in files.items():
        path = bundle / name
        if Path(name).name != name:
            raise ModelFileError(f"{bundle / BUNDLE_MANIFEST}: lists {name!r}, which is not a plain file name")
        if not path.is_file():
            raise ModelFileError(f"{path}: missing (listed in {BUNDLE_MANIFEST}); copy the whole bundle again "
                                 "or re-create it with 'edgecnn bundle'")
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            raise ModelFileError(f"{path}: sha256 mismatch (expected {str(entry.get('sha256'))[:12]}..., got "
                                 f"{digest[:12]}...): the file was altered or damaged; copy it again")
    return manifest


def verify_bundle(bundle_dir: str | os.PathLike, target: str = "local", timeout_s: float = 300.0,
                  threads: int = 1) -> VerifyReport:
    """Check the bundle's files, then run its golden inputs on ``target`` and compare.

    Integer outputs must equal the host's byte for byte (the runner's
    ``outputs_sha256``); float outputs must be within ``FLOAT_ATOL`` (checked in this
    process when the runner's checksum differs, as the runner reports only a checksum).

    Args:
        bundle_dir: the bundle folder.
        target: where to run: ``local`` (the runner in a child process on this machine),
            ``coral`` or ``ssh://user@host`` (the runner copied there by the bench
            transport, with its default options).
        timeout_s: limit for each runner process.
        threads: interpreter threads on the target.

    Returns:
        A :class:`VerifyReport`; ``ok`` is False when any model's outputs differ or its
        run failed.

    Raises:
        ModelFileError: a file is missing or altered (checked before anything runs).
        DeviceError: a target this command cannot run yet.
    """
    from edgecnn.bench.targets import parse_target

    bundle = Path(bundle_dir)
    manifest = check_bundle_files(bundle)
    parsed = parse_target(target)
    if parsed.kind not in ("local", "coral", "ssh"):
        raise DeviceError(f"verify --target {target!r}: bundles run on local, coral and ssh:// targets (the device "
                          "runner); on this one, run runner.py by hand as the bundle's README.md shows")
    report = VerifyReport(str(bundle), len(manifest["files"]))
    for entry in manifest["models"]:
        report.models.append(_verify_model(bundle, entry["file"], entry["golden"], parsed, timeout_s, threads))
    return report


def _verify_model(bundle: Path, model_file: str, golden_file: str, target, timeout_s: float,
                  threads: int) -> ModelCheck:
    from edgecnn.bench.harness import run_benchmark

    model, golden = bundle / model_file, bundle / golden_file
    with np.load(golden, allow_pickle=False) as npz:
        host = npz["outputs"]
    exact = host.dtype.kind in "iub"
    check = ModelCheck(model_file, target.text, ok=False, comparison="exact" if exact else f"atol {FLOAT_ATOL:g}",
                       samples=int(len(host)))
    result = run_benchmark(model, target, threads=threads, runs=1, warmup=0, timeout_s=timeout_s,
                           inputs_npz=golden)
    if result.get("status") != "ok":
        check.reason = f"the runner failed on {target.text}: {result.get('reason')}"
        return check
    check.accuracy = result.get("accuracy")
    check.latency_ms = (result.get("latency_ms") or {}).get("mean")
    if result.get("outputs_sha256") == hashlib.sha256(np.ascontiguousarray(host).tobytes()).hexdigest():
        check.ok, check.max_abs_diff = True, 0.0
        return check
    if exact or target.kind != "local":
        check.mismatched = -1  # the runner reports a checksum, not which samples differ
        check.reason = (f"outputs on {target.text} differ from the host's (outputs_sha256 mismatch); "
                        "the model or runtime behaves differently there")
        return check
    # Float outputs: compare values within a tolerance, on this machine.
    from edgecnn.runtime.interpreter import load_interpreter

    with np.load(golden, allow_pickle=False) as npz:
        x = npz["x"]
    here = _run_raw(load_interpreter(model, num_threads=threads), x)
    diff = np.abs(here.astype(np.float64) - host.astype(np.float64)).reshape(len(host), -1)
    check.max_abs_diff = float(diff.max()) if diff.size else 0.0
    check.mismatched = int(np.sum(diff.max(axis=1) > FLOAT_ATOL)) if diff.size else 0
    check.ok = check.mismatched == 0
    if not check.ok:
        check.reason = (f"{check.mismatched} of {len(host)} outputs differ from the host's by more than "
                        f"{FLOAT_ATOL:g} (max {check.max_abs_diff:.3g})")
    return check


def format_verify(report: VerifyReport) -> str:
    """Lines for people."""
    lines = [f"{report.bundle}: {report.files_checked} files match bundle.json (sha256)"]
    for m in report.models:
        if m.ok:
            detail = "identical to the host" if m.comparison == "exact" or not m.max_abs_diff else \
                f"within {m.comparison} of the host (max diff {m.max_abs_diff:.2g})"
            acc = f", golden accuracy {m.accuracy * 100:.1f} %" if m.accuracy is not None else ""
            lines.append(f"  {m.file} on {m.target}: {m.samples} golden outputs {detail}{acc}  OK")
        else:
            lines.append(f"  {m.file} on {m.target}: FAILED: {m.reason}")
    return "\n".join(lines)

