"""Untrusted Keras files: a teacher that carries Python code is refused before it loads.

Each bad teacher holds a ``Lambda`` whose function writes a canary file when it runs
(Keras runs it while rebuilding the model), or a class of its own. ``edgecnn build`` is
run as a user types it; the canary must not exist afterwards. With
``teacher.trust_code: true`` the same ``.h5`` teacher loads and a student distills from
it, and the canary appears: proof that the opt-in really runs the code and that the
refusal is what kept it from running.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import TEACHER_PATH_RECIPE, assert_one_line_error, assert_raised_error, run_edgecnn, save_tiny_teacher

from edgecnn.errors import ModelFileError
from edgecnn.models.loading import load_keras_model
from edgecnn.models.untrusted import check_model_file, find_code, known_classes, read_architecture

EXIT_MODEL_FILE = 4


def _teacher_with_code(path: Path, canary: Path, kind: str = "lambda") -> Path:
    """A 10-class 32x32x3 model whose layer 'evil' runs code that writes ``canary``."""
    from edgecnn._tf import keras

    k = keras()
    target = str(canary)

    def write_canary(x):
        with open(target, "w") as handle:  # runs wherever Keras rebuilds the layer
            handle.write("ran")
        return x

    inputs = k.layers.Input((32, 32, 3))
    if kind == "lambda":
        x = k.layers.Lambda(write_canary, name="evil")(inputs)
    else:
        class Evil(k.layers.Layer):  # a class the file expects the loader to supply
            def call(self, x):
                return x

        x = Evil(name="evil")(inputs)
    x = k.layers.Conv2D(4, 3, strides=4, activation="relu")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    k.Model(inputs, k.layers.Dense(10)(x)).save(path)
    canary.unlink(missing_ok=True)  # building the model ran the function once; loading must not
    return path


def _recipe(directory: Path, teacher: Path, extra_teacher: str = "", tail: str = "") -> Path:
    text = TEACHER_PATH_RECIPE.format(name="untrusted", seed=1, test_limit=100, teacher=teacher, tail=tail)
    if extra_teacher:
        text = text.replace(f"  path: {teacher}\n", f"  path: {teacher}\n  {extra_teacher}\n")
    path = directory / "recipe.yaml"
    path.write_text(text)
    return path


def _build(recipe: Path, out: Path) -> subprocess.CompletedProcess:
    return run_edgecnn("build", str(recipe), "--out", str(out))


@pytest.mark.parametrize("fmt,kind", [("h5", "lambda"), ("keras", "lambda"), ("savedmodel", "lambda"),
                                      ("h5", "custom_class")])
def test_teacher_with_code_is_refused_and_never_runs(tmp_path, fmt, kind):
    canary = tmp_path / "canary"
    name = {"h5": "teacher.h5", "keras": "teacher.keras", "savedmodel": "teacher_savedmodel"}[fmt]
    teacher = _teacher_with_code(tmp_path / name, canary, kind)
    proc = _build(_recipe(tmp_path, teacher), tmp_path / "run")
    line = assert_one_line_error(proc, EXIT_MODEL_FILE, str(teacher), "layer 'evil'",
                                 "Lambda" if kind == "lambda" else "Evil", "teacher.trust_code: true",
                                 build=True)
    assert "teacher.keras" not in line.replace(str(teacher), "")  # the user's file, not edgecnn's copy
    assert not canary.exists()
    assert not list((tmp_path / "run").glob("*.tflite"))


def test_trust_code_runs_the_teacher_and_is_recorded(tmp_path):
    canary = tmp_path / "canary"
    teacher = _teacher_with_code(tmp_path / "teacher.h5", canary)
    out = tmp_path / "run"
    # What is checked is the teacher's code running and the record of it: the build stops
    # after the student and its evaluation (no TFLite conversion, ~1.5 min of the test).
    proc = _build(_recipe(tmp_path, teacher, "trust_code: true", tail="quantize: {int8: false}\nexport: {formats: []}\n"),
                  out)
    assert proc.returncode == 0, proc.stderr
    assert canary.exists()  # the opt-in really runs the file's code
    report = json.loads((out / "report.json").read_text())
    assert report["trusted_code"] == [{"key": "teacher.path", "path": str(teacher)}]
    assert any(m["role"] == "model.keras.student" and m["accuracy"] is not None for m in report["models"])
    assert "teacher.trust_code: true" in (out / "logs" / "build.log").read_text()
    assert "Trusted code" in (out / "report.md").read_text()


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_clean_teacher_passes_the_check_and_loads(tmp_path, suffix):
    path = save_tiny_teacher(tmp_path / f"teacher{suffix}")
    check_model_file(path, "teacher.path", "teacher.trust_code: true")
    assert load_keras_model(path).output_shape == (None, 10)


def test_copy_that_fails_to_load_names_the_users_file(tmp_path):
    user = save_tiny_teacher(tmp_path / "mine.h5")
    copy = tmp_path / "run" / "teacher.keras"
    copy.parent.mkdir()
    copy.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelFileError) as exc_info:
        load_keras_model(copy, "teacher.path", origin=user)
    assert_raised_error(exc_info, ModelFileError, f"{user} (through edgecnn's copy {copy})", "not a Keras model")


def _layer(class_name: str, name: str = "x", **config) -> dict:
    return {"class_name": class_name, "config": {"name": name, **config}}


@pytest.mark.parametrize("layer,reason", [
    (_layer("TFOpLambda", function="io.write_file"), "io.write_file"),
    (_layer("TFOpLambda", function="raw_ops.WriteFile"), "raw_ops.WriteFile"),
    ({"module": "os", "class_name": "function", "config": "system", "registered_name": "function"}, "'os'"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {"name": "x"}, "registered_name": "evil>Dense"},
     "evil>Dense"),
    ({"class_name": "__lambda__", "config": {"code": "..."}}, "serialized Python function"),
])
def test_code_in_a_config_is_found(layer, reason):
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [_layer("InputLayer", "in"), layer]}}
    findings = find_code(config, known_classes())
    assert len(findings) == 1 and reason in findings[0].reason + findings[0].layer + findings[0].class_name


def test_plain_tensor_ops_and_activations_pass():
    layers = [_layer("TFOpLambda", function="math.multiply"), _layer("TFOpLambda", function="__operators__.add"),
              _layer("Dense", activation={"module": "keras.activations", "class_name": "function",
                                          "config": "relu", "registered_name": "function"})]
    assert find_code({"class_name": "Functional", "config": {"layers": layers}}, known_classes()) == []


@pytest.mark.parametrize("content,needle", [(b"not a model", "not a Keras model"),
                                            (b"PK\x05\x06" + bytes(18), "without config.json")])
def test_unreadable_file_is_one_line(tmp_path, content, needle):
    path = tmp_path / "teacher.keras"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as exc_info:
        read_architecture(path)
    assert_raised_error(exc_info, ModelFileError, str(path), needle)
