"""Assertions and builders shared by several test modules (imported as ``helpers``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

# The `edgecnn` command as a user types it: the console script installed next to this Python.
EDGECNN_COMMAND = str(Path(sys.executable).with_name("edgecnn"))


def run_edgecnn(*args: str, env: dict | None = None, cwd: Path | None = None,
                timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``edgecnn ARGS...`` through its entry point; ``env`` adds to this process's environment."""
    return subprocess.run([EDGECNN_COMMAND, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

TINY_RECIPE = """\
name: tiny
seed: 1
data:
  train_limit: 600
  test_limit: 300
  validation_fraction: 0.1
  representative_samples: 32
  augment: {horizontal_flip: true, translate: 0.0}
teacher:
  architecture: vgg_small
  train: {epochs: 1, batch_size: 32, learning_rate: 0.002}
student:
  architecture: mobilenet_v2
  alpha: 0.35
distill:
  teacher_outputs: cached
  train: {epochs: 4, batch_size: 32, learning_rate: 0.005}
quantize:
  io_dtype: uint8
export:
  formats: [float32]
"""


# A faster recipe than TINY_RECIPE: a saved 10-class teacher instead of training one, 100
# training images, one student epoch. ``tail`` adds the export/quantize sections a test needs.
TEACHER_PATH_RECIPE = """\
name: {name}
seed: {seed}
data:
  train_limit: 100
  test_limit: {test_limit}
  validation_fraction: 0.0
  representative_samples: 16
  augment: {{horizontal_flip: false, translate: 0.0}}
teacher:
  path: {teacher}
student:
  architecture: mobilenet_v2
  alpha: 0.35
distill:
  teacher_outputs: cached
  train: {{epochs: 1, batch_size: 50}}
{tail}"""


def save_tiny_teacher(path: Path, seed: int = 0) -> Path:
    """A tiny 10-class tf_keras model on 32x32x3 inputs; ``seed`` picks its weights."""
    from edgecnn._tf import keras

    k = keras()
    k.utils.set_random_seed(seed)
    inputs = k.layers.Input((32, 32, 3))
    x = k.layers.Conv2D(4, 3, strides=4, activation="relu")(inputs)
    x = k.layers.GlobalAveragePooling2D()(x)
    k.Model(inputs, k.layers.Dense(10)(x)).save(path)
    return path


def write_teacher_path_recipe(directory: Path, name: str, seed: int, test_limit: int, tail: str) -> Path:
    """``directory/<name>.yaml`` from TEACHER_PATH_RECIPE, with a tiny teacher saved beside it."""
    teacher = save_tiny_teacher(directory / "teacher.keras", seed=0)
    path = directory / f"{name}.yaml"
    path.write_text(TEACHER_PATH_RECIPE.format(name=name, seed=seed, test_limit=test_limit, teacher=teacher,
                                               tail=tail))
    return path


def write_tiny_recipe(directory: Path, extra: str = "") -> Path:
    """A recipe that runs every stage in about a minute on two CPU cores."""
    path = directory / "tiny.yaml"
    path.write_text(TINY_RECIPE + extra)
    return path


# What `edgecnn build` prints on stderr besides an error: stage banners, indented stage
# lines, warnings and notes, and the run-directory messages.
PROGRESS_PREFIXES = ("edgecnn build", "==> ", "    ", "warning: ", "note: ", "run directory", "waiting for")


def error_lines(stderr: str, build: bool = True) -> list[str]:
    """The non-empty stderr lines that are not build progress (all of them when ``build`` is False)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return [ln for ln in lines if not ln.startswith(PROGRESS_PREFIXES)] if build else lines


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str, build: bool = False) -> str:
    """The process failed with ``code`` and printed exactly one stderr line containing ``needles``.

    ``build``: the command prints progress on stderr too (``edgecnn build``); those lines
    are set aside and the one remaining line must start with ``error:``.
    """
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = error_lines(proc.stderr, build)
    if build:
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_raised_error(exc_info, error_type: type, *needles: str) -> str:
    """``pytest.raises`` caught exactly ``error_type`` with a one-line message containing ``needles``."""
    message = str(exc_info.value)
    assert exc_info.type is error_type, (exc_info.type, message)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


FASHION_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot")


def build_tiny_classifier(directory: Path, io_dtype: str = "int8", metadata: bool = True,
                          size: int = 32, channels: int = 3) -> Path:
    """A small 10-class image classifier .tflite (int8/uint8 via edgecnn's converter, float32 or float16).

    The network is untrained but not trivial (conv + pooling + dense + softmax), so its
    outputs differ between inputs. With ``metadata`` it carries FASHION_LABELS and
    mean/std 127.5 as TFLite metadata.
    """
    import numpy as np

    from edgecnn._tf import keras
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert_float, convert_int8, inference_model

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.layers.Input((size, size, channels))
    x = k.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = k.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    model = inference_model(k.Model(inputs, k.layers.Dense(len(FASHION_LABELS))(x), name="tiny"))
    path = Path(directory) / f"tiny_{io_dtype}.tflite"
    if io_dtype in ("float32", "float16"):  # float16: float16 weights, float32 I/O
        convert_float(model, get_format(io_dtype), path)
    else:
        calibration = np.random.RandomState(0).uniform(-1, 1, (32, size, size, channels)).astype(np.float32)
        convert_int8(model, calibration, io_dtype, path)
    if metadata:
        from edgecnn.tflite.metadata import write_metadata

        write_metadata(path, FASHION_LABELS, ([127.5], [127.5]), input_color="RGB" if channels == 3 else "GRAYSCALE",
                       name="tiny", description="test classifier", version="0.0.1", out=path)
    return path


# ------------------------------------------------------------------ run directories and bundles

TINY_NORMALIZATION = {"formula": "(pixel - mean) / std", "pixel_range": [0, 255], "mean": [127.5] * 3,
                      "std": [127.5] * 3}


def write_tiny_run_dir(run: Path, precisions: tuple[str, ...] = ("int8", "float32"),
                       accuracy: dict | None = None, test_images: int = 12, recipe: bool = False) -> Path:
    """A run directory as a build leaves it, holding only the files a bundle reads; no training.

    ``student_<precision>.tflite`` for each of ``precisions`` (build_tiny_classifier's network),
    ``dataset.json`` (FASHION_LABELS, 32x32x3, mean/std 127.5) and ``evaluation.json``
    (``accuracy``: ``{"tflite_int8": 0.1, ...}``, else no model figures). With ``recipe``,
    ``manifest.json`` holds TINY_RECIPE, so a bundle takes its golden images from the real
    Fashion-MNIST test split; without it, pass ``dataset=`` to ``write_bundle`` (tiny_bundle).
    """
    import json
    import shutil

    run.mkdir(parents=True, exist_ok=True)
    for precision in precisions:
        shutil.move(build_tiny_classifier(run, precision), run / f"student_{precision}.tflite")
    (run / "dataset.json").write_text(json.dumps({"class_names": list(FASHION_LABELS), "input_shape": [32, 32, 3],
                                                  "normalization": TINY_NORMALIZATION}))
    models = {name: {"accuracy": value} for name, value in (accuracy or {}).items()}
    (run / "evaluation.json").write_text(json.dumps({"runtime": "ai-edge-litert", "runtime_version": "2.3.0",
                                                     "test_images": test_images, "models": models}))
    if recipe:
        import yaml

        from edgecnn.recipe import validate_recipe

        manifest = {"recipe": validate_recipe(yaml.safe_load(TINY_RECIPE)).to_dict()}
        (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def tiny_bundle(folder: Path, precisions: tuple[str, ...] = ("int8", "float32"), samples: int = 12,
                seed: int = 3) -> Path:
    """``folder/bundle``: a real bundle (edgecnn's write_bundle) of write_tiny_run_dir's models, whose
    ``samples`` golden images are seeded random pixels (no data set needed)."""
    from types import SimpleNamespace

    import numpy as np
    import yaml

    from edgecnn.export.bundle import write_bundle
    from edgecnn.recipe import validate_recipe

    rng = np.random.RandomState(seed)
    images = SimpleNamespace(x_test=rng.randint(0, 256, (samples, 32, 32, 3)).astype(np.uint8),
                             y_test=rng.randint(0, 10, samples))
    run = write_tiny_run_dir(folder / "run", precisions, test_images=samples)
    return write_bundle(run, folder / "bundle", model="all" if len(precisions) > 1 else precisions[0],
                        samples=samples, recipe=validate_recipe(yaml.safe_load(TINY_RECIPE)), dataset=images)


# ------------------------------------------------------------------ benchmark models

BENCH_INPUT_SHAPE = (12, 12, 1)


def toy_band_data(n: int, seed: int):
    """Images whose class is which of three vertical bands is bright: ``(x float32, y int)``."""
    import numpy as np

    rng = np.random.RandomState(seed)
    y = rng.randint(0, 3, n)
    x = rng.rand(n, *BENCH_INPUT_SHAPE).astype(np.float32) * 0.3
    for i, c in enumerate(y):
        x[i, :, c * 4:(c + 1) * 4, :] += 0.7
    return x, y


def build_bench_models(out: Path) -> dict[str, Path]:
    """A tiny int8 classifier, a copy carrying the Edge TPU custom op, and labelled samples.

    Returns:
        ``{"int8": ..., "edgetpu": ..., "npz": ...}`` paths under ``out``; the ``.npz``
        holds 40 float samples ``x`` and integer labels ``y``.
    """
    import numpy as np

    from edgecnn._tf import keras
    from edgecnn.export.tflite import convert_int8

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.layers.Input(BENCH_INPUT_SHAPE), k.layers.Conv2D(4, 3, activation="relu"),
                          k.layers.Flatten(), k.layers.Dense(3)])
    x, y = toy_band_data(256, seed=0)
    model.compile("adam", k.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    paths = {"int8": convert_int8(model, x[:32], "int8", out / "tiny_int8.tflite")}
    paths["edgetpu"] = with_edgetpu_custom_op(paths["int8"], out / "tiny_int8_edgetpu.tflite")
    xs, ys = toy_band_data(40, seed=1)
    paths["npz"] = out / "samples.npz"
    np.savez(paths["npz"], x=xs, y=ys)
    return paths


def with_edgetpu_custom_op(src: Path, dst: Path) -> Path:
    """Copy of ``src`` whose first operator is the Edge TPU compiler's custom op.

    Stands in for a real ``*_edgetpu.tflite`` (edgetpu_compiler is x86 Linux only and not
    installed here): what the harness checks is the op code table, not the payload.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = 32  # BuiltinOperator.CUSTOM
    code.customCode = "edgetpu-custom-op"
    code.version = 1
    model.operatorCodes.append(code)
    model.subgraphs[0].operators[0].opcodeIndex = len(model.operatorCodes) - 1
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))
    return dst


def assert_failed_result(result: dict, *needles: str) -> str:
    """A valid benchmark result with ``status: "failed"`` and a one-line reason containing ``needles``."""
    from edgecnn.bench.schema import validate_result

    assert validate_result(result) == result
    assert result["status"] == "failed", result
    reason = result["reason"]
    assert reason and "\n" not in reason and "Traceback" not in reason, reason
    for needle in needles:
        assert needle in reason, (needle, reason)
    assert result["latency_ms"] is None
    return reason


# ------------------------------------------------------------------ fakes (tests/fakes)

FAKES = Path(__file__).resolve().parent / "fakes"


def build_fake_libedgetpu(directory: Path) -> Path:
    """Compile ``tests/fakes/libedgetpu.c`` into ``directory/libedgetpu.so.1``.

    Put ``directory`` on ``LD_LIBRARY_PATH`` of a child process and the runtime's
    ``load_delegate("libedgetpu.so.1")`` finds it as it would find the real library. See
    the C file for what the fake does and does not do. The caller skips when gcc is
    missing (``shutil.which("gcc")``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    library = directory / "libedgetpu.so.1"
    # The soname is the real library's, so the dynamic linker treats it as that library.
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Wl,-soname,libedgetpu.so.1",
                    "-o", str(library), str(FAKES / "libedgetpu.c")],
                   check=True, capture_output=True, text=True, timeout=60)
    return library
