"""Deploy bundles: a folder that carries a model to a device and proves it runs the same there.

``edgecnn bundle RUN_DIR --out DIR`` gathers, from a finished run directory:

* the chosen model file(s), with their TFLite metadata: every ``.tflite`` of the chosen
  precision the run made (``student_int8.tflite``, and the variants a compression build
  adds: ``pruned_int8.tflite``, ``qat_int8.tflite``, ``pruned_int8_gated.tflite``...);
* ``labels.txt`` (one class name per line, in output order);
* ``metadata.json``: input spec, normalization, classes, the source recipe hash and the
  test accuracy the host measured;
* ``golden_<precision>.npz`` per model (``golden_<file stem>.npz`` for a variant): ``x``
  (sample test images, already normalized and quantized exactly as the model's input
  expects), ``y`` (their labels),
  ``outputs`` (the host interpreter's raw outputs on them) and ``runtime``,
  ``runtime_version``, ``machine``, ``system`` (what produced those outputs). The device
  runner reads ``x``/``y`` directly (``runner.py MODEL --inputs golden_int8.npz``);
* ``runner.py``, the standalone device runner (stdlib + numpy + a TFLite runtime);
* ``README.md`` with the commands to run on the device;
* ``bundle.json``: sha256 and size of every file above, and per model the runtime,
  version and CPU architecture that produced its golden outputs.

The folder is written new under a temporary name and renamed into place
(:func:`edgecnn.fileio.replace_output_dir`), so a bundle that exists is complete; it
carries edgecnn's marker file ``.edgecnn-owned`` (not listed in ``bundle.json``). An

``edgecnn verify BUNDLE`` (:mod:`edgecnn.bench.verify`) checks a bundle where the model
lives; the file names and the tolerance both sides share are in :mod:`edgecnn.bundle_layout`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecnn.bundle_layout import (BUNDLE_MANIFEST, BUNDLE_METADATA, BUNDLE_SCHEMA, LABELS_FILE, MIN_TOP1_AGREEMENT,
                                   README_FILE, RUNNER_FILE, golden_name, read_bundle_json)
from edgecnn.errors import DataError, ModelFileError
from edgecnn.fileio import (OWNER_MARKER, claim_output_dir, owned_kind, replace_output_dir, sha256_file,
                            write_reproducible_npz)

__all__ = ["BUNDLE_PRECISIONS", "MODEL_CHOICES", "write_bundle"]

GOLDEN_SAMPLES = 32
# precision -> export format row name; "all" picks every model the run produced.
BUNDLE_PRECISIONS = ("int8", "float32", "float16")
MODEL_CHOICES = (*BUNDLE_PRECISIONS, "all")


# --------------------------------------------------------------------------- writing


def write_bundle(run_dir: str | os.PathLike, out_dir: str | os.PathLike, model: str = "int8",
                 samples: int = GOLDEN_SAMPLES, recipe=None, dataset=None, force: bool = False,
                 models: Sequence[tuple[str, str, Path]] | None = None) -> Path:
    """Write a deploy bundle of ``run_dir``'s model(s) to ``out_dir``.

    Args:
        run_dir: a finished build's run directory (``dataset.json``, ``evaluation.json``
            and the ``.tflite`` files).
        out_dir: the bundle folder to create: new or empty; an earlier bundle only with
            ``force``; never a folder edgecnn did not make.
        model: ``int8``, ``float32``, ``float16`` or ``all`` (every host-runnable model the
            run has); each precision takes every variant of it (pruned, QAT, gated...).
        samples: golden test images per model.
        recipe: the build's :class:`~edgecnn.recipe.Recipe` (default: read from the run's
            ``manifest.json``); used for the recipe hash and to load the test images.
        dataset: an already loaded :class:`~edgecnn.data.Dataset` (the pipeline passes
            its own), else the test split is loaded from the recipe.
        force: replace an existing bundle edgecnn wrote at ``out_dir``.
        models: ``(artifact name, precision, path)`` of the models to bundle, as the
            pipeline's artifact store lists them (then ``model`` is not used); default:
            the ``.tflite`` files of ``model``'s precision that the run's ``manifest.json``
            records (for a finished run directory given on the command line).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ModelFileError: the run directory lacks the files or the asked model.
        FilesystemError: ``out_dir`` is a file, a folder edgecnn did not make, or an
            existing bundle without ``force``.
        DataError: the test images cannot be loaded.
    """
    from edgecnn._version import __version__
    from edgecnn.runtime import RUNNER_PATH
    from edgecnn.export.formats import get_format

    run = Path(run_dir)
    fix = "pass the run directory of a finished 'edgecnn build'"
    if model not in MODEL_CHOICES:
        raise ValueError(f"model must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    info = read_bundle_json(run / "dataset.json", fix)
    evaluation = read_bundle_json(run / "evaluation.json", fix)
    standalone = recipe is None
    if standalone:
        from edgecnn.recipe import validate_recipe

        recipe = validate_recipe(read_bundle_json(run / "manifest.json", fix).get("recipe"),
                                 source=str(run / "manifest.json"))
    wanted = BUNDLE_PRECISIONS if model == "all" else (model,)
    if models is not None:
        # int8 first, as without ``models``: the first model is the bundle's model (demo, README).
        order = {p: i for i, p in enumerate(BUNDLE_PRECISIONS)}
        chosen = sorted(((precision, Path(path), name) for name, precision, path in models),
                        key=lambda row: order.get(row[0], len(order)))
    else:
        chosen = _run_models(run, None if model == "all" else wanted)
    if not chosen:
        raise ModelFileError(f"{run}: no {' or '.join(get_format(p).filename for p in wanted)} in the run "
                             f"directory; build it first (quantize.int8 / export.formats)")

    _adopt_unmarked_bundle(Path(out_dir))
    # Entered before the slow part, so a refused --out fails at once; nothing is
    # written at out_dir until everything below has succeeded.
    with replace_output_dir(out_dir, "bundle", force=force, what="--out") as tmp:
        x_test, y_test = _golden_images(recipe, dataset, samples)
        from edgecnn.data import NormalizationSpec

        norm = NormalizationSpec.from_dict(info["normalization"])
        x_real = norm.apply(x_test)
        classes = list(info["class_names"])
        # A standalone bundle reads the finished report; inside a build it is not written yet.
        report = _optional_json(run / "report.json") if standalone else {}
        models = []
        for precision, src, name in chosen:
            dst = tmp / src.name
            shutil.copyfile(src, dst)
            golden = golden_name(precision, src.name)
            # Read from the run directory: an error then names the user's file, not the copy in .tmp-.
            spec = _golden(src, x_real, y_test, tmp / golden)
            accuracy = evaluation.get("models", {}).get(name, {}).get("accuracy")
            models.append({"file": src.name, "precision": precision, "golden": golden,
                           "accuracy": accuracy, **spec})
        (tmp / LABELS_FILE).write_text("\n".join(classes) + "\n", encoding="utf-8")
        shutil.copyfile(RUNNER_PATH, tmp / RUNNER_FILE)
        metadata = {
            "schema": BUNDLE_SCHEMA,
            "recipe": recipe.name,
            "recipe_hash": recipe.recipe_hash,
            "edgecnn": __version__,
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
                 for p in sorted(tmp.iterdir()) if p.is_file() and p.name != OWNER_MARKER}
        manifest = {"schema": BUNDLE_SCHEMA, "recipe_hash": recipe.recipe_hash,
                    "models": [{"file": m["file"], "golden": m["golden"], "precision": m["precision"],
                                "golden_runtime": m["golden_runtime"]} for m in models],
                    "files": files}
        (tmp / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Path(out_dir)


def _adopt_unmarked_bundle(out: Path) -> None:
    """Mark a bundle an edgecnn from before the ownership marker wrote (its ``bundle.json``
    has the bundle schema), so that it is treated as edgecnn's and not as a user's folder."""
    if not out.is_dir() or out.is_symlink() or owned_kind(out) is not None:
        return
    try:
        manifest = json.loads((out / BUNDLE_MANIFEST).read_text())
    except (OSError, ValueError):
        return
    if isinstance(manifest, dict) and manifest.get("schema") == BUNDLE_SCHEMA and (out / BUNDLE_METADATA).is_file():
        claim_output_dir(out, "bundle", what="--out", legacy=(BUNDLE_MANIFEST, BUNDLE_METADATA))


def _run_models(run: Path, precisions: Sequence[str] | None) -> list[tuple[str, Path, str]]:
    """``(precision, path, artifact name)`` of a finished run's host-runnable ``.tflite`` files
    of ``precisions`` (None: all), student first: every variant its ``manifest.json`` records
    (pruned, QAT, gated, channel-pruned), as the build's own bundle stage takes them. A run
    without typed artifact records gives the export table's ``student_<precision>.tflite`` files."""
    from edgecnn.export.formats import get_format

    records = _optional_json(run / "manifest.json").get("artifacts")
    records = records if isinstance(records, dict) else {}
    typed = {name: a for name, a in records.items() if isinstance(a, dict) and "kind" in a}
    inside = run.resolve()
    found = [(a["precision"], run / a["path"], name) for name, a in sorted(typed.items())
             if a["kind"] == "tflite" and isinstance(a.get("path"), str) and isinstance(a.get("precision"), str)
             and (precisions is None or a["precision"] in precisions) and (run / a["path"]).is_file()
             and (run / a["path"]).resolve().is_relative_to(inside)]  # a file of this run, nothing else
    if not typed:  # a run from before artifacts were typed (or a damaged manifest): the file names
        found = [(p, run / get_format(p).filename, f"tflite_{p}") for p in precisions or BUNDLE_PRECISIONS
                 if (run / get_format(p).filename).is_file()]
    order = {p: i for i, p in enumerate(BUNDLE_PRECISIONS)}
    return sorted(found, key=lambda row: (order.get(row[0], len(order)), row[1].name != f"student_{row[0]}.tflite",
                                          row[2]))


def _optional_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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


def _golden_runtime() -> dict:
    """What computes the golden outputs here: runtime, version, CPU architecture, OS."""
    from edgecnn.runtime.interpreter import runtime_name_version

    name, version = runtime_name_version()
    return {"name": name, "version": version, "machine": platform.machine(), "system": platform.system()}


def _golden(model: Path, x_real: np.ndarray, y: np.ndarray, path: Path) -> dict:
    """Write ``x`` (as the model's input holds it), ``y``, the host's raw ``outputs`` and
    the runtime that computed them; return the model's I/O spec and that runtime."""
    from edgecnn.tflite.reader import inspect_tflite
    from edgecnn.runtime.interpreter import input_specs, make_interpreter, output_specs, quantize_input

    interpreter = make_interpreter(model)
    ins, outs = input_specs(interpreter), output_specs(interpreter)
    if len(ins) != 1 or len(outs) != 1:
        raise ModelFileError(f"{model}: a bundle holds one-input, one-output classifiers; this one has "
                             f"{len(ins)} inputs and {len(outs)} outputs")
    x = quantize_input(x_real, ins[0])
    outputs = _run_raw(interpreter, x)
    runtime = _golden_runtime()
    operators = inspect_tflite(model).operator_count
    # The output's quantization and the model's depth are kept with the outputs, so that
    # verify judges a device's outputs by the built model, not by the file it is shown.
    write_reproducible_npz(path, {"x": x, "y": y.astype(np.int64), "outputs": outputs,
                      "output_scale": np.float64(outs[0].scale), "output_zero_point": np.int64(outs[0].zero_point),
                      "operators": np.int64(operators), "runtime": np.array(runtime["name"]),
                      "runtime_version": np.array(runtime["version"]), "machine": np.array(runtime["machine"]),
                      "system": np.array(runtime["system"])})
    return {"input": {"dtype": str(ins[0].dtype), "shape": list(ins[0].shape), "scale": ins[0].scale,
                      "zero_point": ins[0].zero_point},
            "output": {"dtype": str(outs[0].dtype), "shape": list(outs[0].shape), "scale": outs[0].scale,
                       "zero_point": outs[0].zero_point},
            "operators": operators,
            "golden_runtime": runtime}


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
    made_by = "; ".join(f"`{x['golden']}`: {_runtime_text(x['golden_runtime'])}" for x in meta["models"])
    return f"""# edgecnn deploy bundle: {meta['recipe']}

Recipe hash `{meta['recipe_hash'][:12]}`, built with edgecnn {meta['edgecnn']}.
Host test accuracy: {accuracy or '-'} ({meta['accuracy']['test_images']} test images).

Input: {meta['input']['shape']} {meta['input']['color']}, `x = (pixel - {norm['mean']}) / {norm['std']}` on 0..255
pixels, then quantized with the input tensor's scale and zero point (see `metadata.json`).
Classes (`labels.txt`): {', '.join(meta['classes'])}.
Golden outputs computed by {made_by}.

## Check the copy and the device (on the host, with edgecnn installed)

    edgecnn verify .                             # sha256 of every file, then the golden outputs here
    edgecnn verify . --target ssh://pi@raspberrypi.local --remote-python '~/edgecnn-venv/bin/python'

`verify` compares the device's outputs with the golden ones by value. It says **bit-exact**
only when they are identical. Another runtime, version or CPU (an arm64 Pi against an x86
host) rounds some intermediate values one quantization step differently, so int8 outputs may
differ by a few steps: that passes when every output is within
`ceil(3 * sqrt(operators)) * output_scale` of the golden one (float models:
`3 * sqrt(operators) * 32 * float32_eps * max(1, max |golden output|)`) and top-1 agrees on at
least {MIN_TOP1_AGREEMENT:.0%} of the {meta['golden_samples']} samples. A different or
damaged model is far outside that.

## On a Raspberry Pi (64-bit Raspberry Pi OS, Python 3.9+)

    python3 -m venv ~/edgecnn-venv && . ~/edgecnn-venv/bin/activate
    pip install numpy ai-edge-litert            # or: pip install tflite-runtime 'numpy<2'
    sha256sum -c <(python3 -c "import json; [print(v['sha256'] + '  ' + k) for k, v in json.load(open('bundle.json'))['files'].items()]")
    # latency, memory, and top-1 accuracy on the golden samples (--report-outputs adds the raw outputs):
    python3 runner.py {model} --threads 4 --runs 200 --inputs {golden}

The runner prints one JSON result; `accuracy` is over the {meta['golden_samples']} golden samples.
Its `outputs_sha256` equals the sha256 of the golden outputs
(`python3 -c "import hashlib, numpy as np; print(hashlib.sha256(np.load('{golden}')['outputs'].tobytes()).hexdigest())"`)
only on the same runtime and CPU as the host's; elsewhere use `edgecnn verify` (above), which
compares values with the tolerance.

## Camera demo on the Pi

The demo is part of edgecnn, which this bundle does not contain: install edgecnn from its
source (a checkout of the edgecnn repository copied to the Pi; the demo needs no TensorFlow).

    pip install opencv-python-headless click pydantic pyyaml
    pip install --no-deps /path/to/edgecnn       # the edgecnn source checkout
    edgecnn demo --model . --source 0 --top-k 3 --threads 4                 # window, q or Esc quits
    edgecnn demo --model . --source 0 --headless --out annotated.mp4 --log frames.jsonl --max-frames 300
"""


def _runtime_text(runtime: dict | None) -> str:
    if not isinstance(runtime, dict):
        return "an unrecorded runtime"
    machine = f" on {runtime.get('machine')}" if runtime.get("machine") else ""
    return f"{runtime.get('name', '?')} {runtime.get('version', '?')}{machine}"

