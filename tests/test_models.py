"""Tests of edgecnn.models and the distillation loss/trainer.

Every registered student builds as one flat functional tf_keras graph, produces logits and
survives full-integer conversion; teachers build from a registry, keras.applications (with
local or cached "imagenet" weights, never the network) or a file; the distillation loss
matches a numpy reference; and a tiny distillation run learns. Inputs are 32x32x3 and
students use alpha 0.35 so the whole module runs in a few minutes on two CPU cores.
"""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest

from edgecnn._tf import keras, tensorflow
from edgecnn.compress.distill import distill_student, kd_loss, precompute_teacher_logits, teacher_logits_fn
from edgecnn.data import NormalizationSpec, make_tf_dataset
from edgecnn.errors import ModelFileError, RecipeError
from edgecnn.export.tflite import convert_int8, inference_model
from edgecnn.models import create_student, create_teacher, list_students, list_teachers
from edgecnn.models.registry import TEACHERS, Registry, check_student_name, check_teacher_name
from edgecnn.models.teachers import load_keras_model
from edgecnn.progress import Progress
from edgecnn.recipe import DistillConfig, StudentConfig, TeacherConfig, TrainConfig
from helpers import assert_raised_error

SHAPE = (32, 32, 3)
NUM_CLASSES = 10
# The file tf_keras' MobileNetV2 fetches for alpha 0.35 without the top. For inputs
# that are not 96/128/160/192/224 square it falls back to the 224 weights (with a
# warning): the weight shapes do not depend on the input size.
MNV2_035_NO_TOP = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


# --------------------------------------------------------------------------- helpers


def assert_flat_functional(model, output_shape=(None, NUM_CLASSES)) -> None:
    """A plain functional tf_keras model with no nested models, ending in linear logits.

    tfmot's pruning/quantization wrappers accept only such graphs, and training losses
    expect logits (the export stage appends the softmax).
    """
    K = keras()
    assert type(model).__name__ == "Functional", type(model)
    assert type(model).__module__.startswith("tf_keras."), type(model).__module__
    nested = [layer.name for layer in model.layers if isinstance(layer, K.Model)]
    assert nested == [], f"nested models: {nested}"
    assert model.output_shape == output_shape
    last = model.layers[-1]
    assert isinstance(last, K.layers.Dense) and last.activation is K.activations.linear, last


def weights_by_layer(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def assert_same_weights(expected: dict[str, list[np.ndarray]], model) -> None:
    for name, arrays in expected.items():
        got = model.get_layer(name).get_weights()
        assert len(got) == len(arrays), name
        for want, have in zip(arrays, got):
            np.testing.assert_array_equal(have, want, err_msg=name)


def set_recognizable_weights(model, seed: int) -> None:
    """Seeded values in [0.5, 1.5] (positive, so BatchNorm variances stay valid)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in model.get_weights()])


def registered_teachers() -> list[str]:
    """Teachers with their own builder (keras.applications names are tested separately)."""
    list_teachers()  # imports the builder modules, which fills TEACHERS
    return TEACHERS.names()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """A fresh keras cache under a temporary HOME, and no way to reach the network.

    tf_keras caches downloads in ``~/.keras/models`` (falling back to ``/tmp/.keras`` when
    ``~/.keras`` is not writable, hence the folder is created). Downloads go through
    urllib's global opener; routing it to a proxy on a closed local port makes any
    attempt fail at once, as it would on an offline machine.
    """
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".keras" / "models"
    cache.mkdir(parents=True)
    dead_proxy = "http://127.0.0.1:9"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": dead_proxy, "https": dead_proxy}))
    monkeypatch.setattr(urllib.request, "_opener", opener)
    return cache


@pytest.fixture(scope="module")
def calibration() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1.0, 1.0, (8, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def mnv2_weights(tmp_path_factory):
    """An alpha-1.0 MobileNetV2 backbone weights file with seeded values, and those values."""
    K = keras()
    backbone = K.applications.MobileNetV2(input_shape=SHAPE, include_top=False, weights=None, alpha=1.0)
    set_recognizable_weights(backbone, seed=1)
    path = tmp_path_factory.mktemp("weights") / "w.h5"
    backbone.save_weights(str(path))
    return path, weights_by_layer(backbone)


# --------------------------------------------------------------------------- registry-parametrized


@pytest.mark.parametrize("name", list_students())
def test_student_builds_flat_logits_and_converts_to_int8(name, calibration, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = create_student(name, SHAPE, NUM_CLASSES, StudentConfig(architecture=name, alpha=0.35))
    assert_flat_functional(model)
    logits = model(calibration[:2], training=False).numpy()
    assert logits.shape == (2, NUM_CLASSES) and np.isfinite(logits).all()

    path = convert_int8(inference_model(model), calibration, "int8", tmp_path / "student_int8.tflite")
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert tuple(inp["shape"]) == (1, *SHAPE) and tuple(out["shape"]) == (1, NUM_CLASSES)

    scale, zero_point = inp["quantization"]
    assert scale > 0
    q = np.clip(np.round(calibration[:1] / scale) + zero_point, -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], q)
    interpreter.invoke()
    raw = interpreter.get_tensor(out["index"]).astype(np.int32)
    out_scale, out_zero_point = out["quantization"]
    # The appended softmax survived: TFLite's int8 softmax output is 1/256 steps from -128.
    assert (out_scale, out_zero_point) == (1 / 256, -128)
    assert raw.shape == (1, NUM_CLASSES)
    # Compared in output quantization steps: the Keras probabilities quantized with the
    # file's own scale and zero point. An untrained student's logits are ~0 (its
    # BatchNorm statistics are the initial ones), so both sides are the uniform 0.1 = 26
    # steps above -128; one step allows the rounding of the quantized softmax.
    expected = inference_model(model)(calibration[:1], training=False).numpy()
    expected_steps = np.round(expected / out_scale) + out_zero_point
    assert np.abs(raw - expected_steps).max() <= 1, (raw, expected_steps)


@pytest.mark.parametrize("name", list_students())
@pytest.mark.parametrize("output_stride", [16, 8])
def test_output_stride_keeps_a_larger_final_map(name, output_stride):
    stock = create_student(name, SHAPE, NUM_CLASSES, StudentConfig(architecture=name, alpha=0.35))
    model = create_student(name, SHAPE, NUM_CLASSES, StudentConfig(architecture=name, alpha=0.35, output_stride=output_stride))
    assert_flat_functional(model)
    assert model.input.shape[1:] == stock.input.shape[1:] and model.input.name == stock.input.name
    side = model.get_layer("pool").input.shape[1]
    assert side == SHAPE[0] // output_stride, (side, output_stride)
    assert stock.get_layer("pool").input.shape[1] == max(1, SHAPE[0] // 32)
    assert model.count_params() == stock.count_params()  # same kernels: pretrained weights still fit
    x = np.random.default_rng(2).uniform(-1, 1, (2, *SHAPE)).astype(np.float32)
    assert model(x, training=False).shape == (2, NUM_CLASSES)


def test_output_stride_keeps_pretrained_weights(mnv2_weights):
    path, saved = mnv2_weights
    cfg = StudentConfig(architecture="mobilenet_v2", alpha=1.0, weights=str(path), output_stride=16)
    model = create_student("mobilenet_v2", SHAPE, NUM_CLASSES, cfg)
    assert_same_weights(saved, model)
    assert model.get_layer("pool").input.shape[1] == SHAPE[0] // 16


@pytest.mark.parametrize("name", registered_teachers())
def test_registered_teacher_builds_flat_logits(name):
    model = create_teacher(name, SHAPE, NUM_CLASSES, TeacherConfig(architecture=name))
    assert_flat_functional(model)
    x = np.random.default_rng(1).uniform(-1, 1, (2, *SHAPE)).astype(np.float32)
    logits = model(x, training=False).numpy()
    assert logits.shape == (2, NUM_CLASSES) and np.isfinite(logits).all()


def test_registries_are_not_empty():
    assert "mobilenet_v2" in list_students()
    assert "vgg_small" in TEACHERS.names()


# --------------------------------------------------------------------------- registry objects


def test_fresh_registry_lists_sorted_and_refuses_duplicates():
    registry = Registry("widget")

    @registry.register
    def zeta(input_shape, num_classes, cfg):
        return "zeta"

    @registry.register(name="alpha")
    def build_alpha(input_shape, num_classes, cfg):
        return "alpha"

    assert registry.names() == ["alpha", "zeta"]
    assert registry.get("alpha") is build_alpha and registry.get("zeta") is zeta
    assert registry.get("missing") is None
    with pytest.raises(ValueError, match="widget 'zeta' is already registered"):
        registry.register(zeta)
    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):
        registry.register(name="alpha")(zeta)
    assert registry.names() == ["alpha", "zeta"]
    # A fresh registry never leaks into the global ones.
    assert "zeta" not in list_students() and "alpha" not in TEACHERS.names()


def test_unknown_student_name_suggests_the_closest():
    with pytest.raises(RecipeError) as exc_info:
        check_student_name("mobilenetv2")
    assert_raised_error(exc_info, RecipeError, "'mobilenetv2'", "did you mean 'mobilenet_v2'?")


def test_unknown_teacher_name_suggests_or_lists():
    with pytest.raises(RecipeError) as exc_info:
        check_teacher_name("vgg_smal")
    assert_raised_error(exc_info, RecipeError, "did you mean 'vgg_small'?")
    with pytest.raises(RecipeError) as exc_info:
        create_teacher("qqqqqqqq", SHAPE, NUM_CLASSES, TeacherConfig.model_construct(architecture="qqqqqqqq"))
    assert_raised_error(exc_info, RecipeError, "choose one of:", "vgg_small")


def test_create_student_rejects_unknown_name_before_building():
    with pytest.raises(RecipeError) as exc_info:
        create_student("mobilenet_v9", SHAPE, NUM_CLASSES, StudentConfig())
    assert_raised_error(exc_info, RecipeError, "mobilenet_v9", "did you mean")


# --------------------------------------------------------------------------- keras.applications weights


def test_application_teacher_loads_a_local_weights_file(mnv2_weights):
    path, saved = mnv2_weights
    teacher = create_teacher("MobileNetV2", SHAPE, NUM_CLASSES, TeacherConfig(architecture="MobileNetV2", weights=str(path)))
    assert_flat_functional(teacher)
    assert_same_weights(saved, teacher)
    assert len(saved) > 50  # the whole backbone was compared, not one layer


def test_imagenet_weights_come_from_the_keras_cache_offline(offline):
    K = keras()
    source = K.applications.MobileNetV2(input_shape=SHAPE, include_top=False, weights=None, alpha=0.35)
    set_recognizable_weights(source, seed=2)
    source.save_weights(str(offline / MNV2_035_NO_TOP))

    student = create_student("mobilenet_v2", SHAPE, NUM_CLASSES, StudentConfig(alpha=0.35, weights="imagenet"))
    assert_flat_functional(student)
    assert_same_weights(weights_by_layer(source), student)
    assert sorted(p.name for p in offline.iterdir()) == [MNV2_035_NO_TOP]  # nothing downloaded


def test_imagenet_weights_missing_offline_say_how_to_provide_them(offline):
    with pytest.raises(ModelFileError) as exc_info:
        create_student("mobilenet_v2", SHAPE, NUM_CLASSES, StudentConfig(alpha=0.35, weights="imagenet"))
    assert_raised_error(exc_info, ModelFileError, "MobileNetV2", "offline", "~/.keras/models", "local .h5 file")
    assert list(offline.iterdir()) == []  # no partial download left behind


@pytest.mark.parametrize("weights", ["imagenet", "local"])
def test_pretrained_weights_need_three_channels(weights, mnv2_weights):
    value = str(mnv2_weights[0]) if weights == "local" else weights
    with pytest.raises(RecipeError) as exc_info:
        create_student("mobilenet_v2", (32, 32, 1), NUM_CLASSES, StudentConfig(weights=value))
    assert_raised_error(exc_info, RecipeError, "student.weights", "3 input channels", "data.channels: 3")
    with pytest.raises(RecipeError) as exc_info:
        create_teacher("MobileNetV2", (32, 32, 1), NUM_CLASSES, TeacherConfig(architecture="MobileNetV2", weights=value))
    assert_raised_error(exc_info, RecipeError, "teacher.weights", "3 input channels")


def test_weights_of_another_architecture_are_a_model_file_error(tmp_path, mnv2_weights):
    other = create_teacher("vgg_small", SHAPE, NUM_CLASSES, TeacherConfig())
    path = tmp_path / "vgg.h5"
    other.save_weights(str(path))
    with pytest.raises(ModelFileError) as exc_info:
        create_student("mobilenet_v2", SHAPE, NUM_CLASSES, StudentConfig(alpha=0.35, weights=str(path)))
    assert_raised_error(exc_info, ModelFileError, str(path), "not weights for MobileNetV2", "same architecture")

    # Same architecture, other width: every layer is there but shapes differ.
    wide = str(mnv2_weights[0])
    with pytest.raises(ModelFileError) as exc_info:
        create_student("mobilenet_v2", SHAPE, NUM_CLASSES, StudentConfig(alpha=0.35, weights=wide))
    assert_raised_error(exc_info, ModelFileError, wide, "not weights for MobileNetV2")


def test_unreadable_or_missing_weights_file(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ModelFileError) as exc_info:
        create_student("mobilenet_v2", SHAPE, NUM_CLASSES, StudentConfig(alpha=0.35, weights=str(junk)))
    assert_raised_error(exc_info, ModelFileError, str(junk), "cannot read weights")
    missing = tmp_path / "missing.h5"
    with pytest.raises(RecipeError) as exc_info:
        create_student("mobilenet_v2", SHAPE, NUM_CLASSES, StudentConfig.model_construct(alpha=0.35, dropout=0.2, weights=str(missing)))
    assert_raised_error(exc_info, RecipeError, "student.weights", str(missing), "not found")


# --------------------------------------------------------------------------- load_keras_model


def test_load_keras_model_round_trips(tmp_path):
    K = keras()
    inputs = K.Input(shape=(4,))
    model = K.Model(inputs, K.layers.Dense(3, name="logits")(inputs))
    set_recognizable_weights(model, seed=3)
    path = tmp_path / "teacher.keras"
    model.save(path)
    loaded = load_keras_model(path)
    assert_same_weights(weights_by_layer(model), loaded)


def test_load_keras_model_rejects_bad_paths(tmp_path):
    text = tmp_path / "teacher.keras"
    text.write_text("this is a text file, not a model\n")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    cases = [(text, "not a Keras model"), (tmp_path / "missing.keras", "does not exist"), (empty, "not a Keras model")]
    for path, reason in cases:
        with pytest.raises(ModelFileError) as exc_info:
            load_keras_model(path, what="teacher.path")
        assert_raised_error(exc_info, ModelFileError, str(path), reason, "teacher.path")


# Written by real Keras 3 in a subprocess (TF_USE_LEGACY_KERAS=0 gives TensorFlow's own
# Keras 3; this process has tf_keras selected and cannot import both).
_KERAS3_WRITER = """
import json, sys
import numpy as np
import keras
out = sys.argv[1]
if int(keras.__version__.split(".")[0]) < 3:
    print(json.dumps({"version": keras.__version__})); sys.exit(0)
model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="conv"),
                          keras.layers.GlobalAveragePooling2D(name="pool"), keras.layers.Dense(3, name="logits")])
model.set_weights([np.linspace(-1, 1, w.size, dtype="float32").reshape(w.shape) for w in model.get_weights()])
model.save(out + "/k3.keras")
model.save(out + "/k3.h5")
model.save_weights(out + "/teacher.weights.h5")
model.export(out + "/k3_savedmodel", verbose=False)
np.save(out + "/logits.npy", model.predict(np.linspace(0, 1, 2 * 8 * 8 * 3, dtype="float32").reshape(2, 8, 8, 3), verbose=0))
print(json.dumps({"version": keras.__version__}))
"""


def _tf_keras_twin():
    """The Keras 3 writer's architecture, rebuilt with tf_keras (what the README tells users to do)."""
    K = keras()
    return K.Sequential([K.Input((8, 8, 3)), K.layers.Conv2D(2, 3, name="conv"),
                         K.layers.GlobalAveragePooling2D(name="pool"), K.layers.Dense(3, name="logits")])


@pytest.fixture(scope="module")
def keras3_files(tmp_path_factory):
    """Model files written by Keras 3: real ones when Keras 3 is importable in a subprocess
    (it is in the dev venv: keras 3.x beside tf_keras), else a crafted ``.keras`` zip laid out
    the way Keras 3 writes one (``metadata.json`` saying ``keras_version`` 3.x, ``config.json``,
    ``model.weights.h5``), which is all the check reads; ``real`` says which."""
    import json
    import os
    import subprocess
    import sys
    import zipfile

    out = tmp_path_factory.mktemp("keras3")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", _KERAS3_WRITER, str(out)], capture_output=True, text=True,
                          timeout=180, env=env)
    lines = proc.stdout.strip().splitlines()
    version = json.loads(lines[-1])["version"] if proc.returncode == 0 and lines else None
    if version and version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 3:
        return {"dir": out, "real": True, "version": version}
    with zipfile.ZipFile(out / "k3.keras", "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.4.1", "date_saved": "2024-07-01@12:00:00"}))
        archive.writestr("config.json", json.dumps({"module": "keras", "class_name": "Sequential", "config": {}}))
        archive.writestr("model.weights.h5", b"")
    return {"dir": out, "real": False, "version": "3.4.1"}


@pytest.mark.parametrize("name", ["k3.keras", "k3.h5", "k3_savedmodel"])
def test_keras3_model_is_refused_saying_why_and_how_to_resave(keras3_files, name):
    path = keras3_files["dir"] / name
    if not path.exists():
        pytest.skip("Keras 3 is not importable here; only the crafted .keras file exists")
    with pytest.raises(ModelFileError) as exc_info:
        load_keras_model(path, what="teacher.path")
    origin = "SavedModel without Keras metadata" if name.endswith("savedmodel") else f"saved by Keras {keras3_files['version']}"
    assert_raised_error(exc_info, ModelFileError, str(path), "teacher.path", origin, "tf_keras (Keras 2)",
                        "save_weights", "import tf_keras", "load_weights", "model.save('teacher.keras')")


def test_advised_resave_of_a_keras3_model_loads_with_the_same_outputs(keras3_files, tmp_path):
    """The README's recipe, done for real: Keras 3 weights into the tf_keras twin, saved, loaded."""
    import zipfile

    if not keras3_files["real"]:
        pytest.skip("Keras 3 is not importable here, so there are no real Keras 3 weights")
    folder = keras3_files["dir"]
    x = np.linspace(0, 1, 2 * 8 * 8 * 3, dtype="float32").reshape(2, 8, 8, 3)
    with zipfile.ZipFile(folder / "k3.keras") as archive:
        archive.extract("model.weights.h5", tmp_path)
    for weights in (folder / "teacher.weights.h5", tmp_path / "model.weights.h5"):
        twin = _tf_keras_twin()
        twin.load_weights(weights)
        path = tmp_path / "teacher.keras"
        twin.save(path)
        loaded = load_keras_model(path)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), np.load(folder / "logits.npy"), atol=1e-5)


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_keras2_h5_and_savedmodel_still_load(tmp_path):
    twin = _tf_keras_twin()
    twin.save(tmp_path / "teacher.h5")
    twin.save(tmp_path / "saved")  # a tf_keras SavedModel folder, with keras_metadata.pb
    for path in (tmp_path / "teacher.h5", tmp_path / "saved"):
        assert [layer.name for layer in load_keras_model(path).layers] == ["conv", "pool", "logits"]


# --------------------------------------------------------------------------- distillation math


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kd_loss_reference(labels, zs, zt, temperature, alpha, label_smoothing=0.0) -> float:
    """(1-alpha) CE(y, softmax(zs)) + alpha T^2 KL(softmax(zt/T) || softmax(zs/T)), batch mean."""
    k = zs.shape[-1]
    target = np.eye(k)[labels] * (1 - label_smoothing) + label_smoothing / k
    ce = -(target * _log_softmax(zs)).sum(axis=-1).mean()
    log_pt, log_ps = _log_softmax(zt / temperature), _log_softmax(zs / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=-1).mean()
    return (1 - alpha) * ce + alpha * temperature**2 * kl


@pytest.mark.parametrize(
    "temperature, alpha, smoothing",
    [(1.0, 0.0, 0.0), (4.0, 0.7, 0.0), (2.0, 1.0, 0.0), (10.0, 0.5, 0.0), (3.0, 0.3, 0.1)],
)
def test_kd_loss_matches_numpy_reference(temperature, alpha, smoothing):
    rng = np.random.default_rng(int(temperature * 10 + alpha * 100))
    zs = rng.normal(0, 3, (16, 7))
    zt = rng.normal(0, 3, (16, 7))
    labels = rng.integers(0, 7, 16)
    got = float(kd_loss(labels, zs.astype(np.float32), zt.astype(np.float32), temperature, alpha, smoothing))
    want = kd_loss_reference(labels, zs, zt, temperature, alpha, smoothing)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    if alpha == 0.0:  # pure cross-entropy: the teacher cannot matter
        other = float(kd_loss(labels, zs.astype(np.float32), -zt.astype(np.float32), temperature, alpha, smoothing))
        assert other == pytest.approx(got, rel=1e-6)


def test_kd_loss_soft_term_vanishes_when_student_equals_teacher():
    rng = np.random.default_rng(5)
    z = rng.normal(0, 3, (8, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 8)
    assert float(kd_loss(labels, z, z, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-5)
    hard = kd_loss_reference(labels, z.astype(np.float64), z.astype(np.float64), 4.0, 0.0)
    assert float(kd_loss(labels, z, z, 4.0, 0.5)) == pytest.approx(0.5 * hard, rel=1e-4)
    # ...and is positive when they differ.
    assert float(kd_loss(labels, z, z[::-1].copy(), 4.0, 1.0)) > 0.01


def _dense_model(softmax: bool):
    K = keras()
    inputs = K.Input(shape=(6,))
    x = K.layers.Dense(4, name="logits")(inputs)
    if softmax:
        x = K.layers.Softmax(name="probs")(x)
    model = K.Model(inputs, x)
    model.get_layer("logits").set_weights([np.random.default_rng(6).normal(0, 2, (6, 4)).astype(np.float32), np.zeros(4, np.float32)])
    return model


def test_teacher_logits_fn_turns_probabilities_into_log_probabilities():
    tf = tensorflow()
    x = np.random.default_rng(7).normal(0, 1, (5, 6)).astype(np.float32)
    probs_teacher = _dense_model(softmax=True)
    probs = probs_teacher(x).numpy()
    out = teacher_logits_fn(probs_teacher, x[:2])(x).numpy()
    assert (out <= 0).all()  # log-probabilities
    # Probabilities are floored at 1e-8 before the log, so that 0 cannot give -inf.
    np.testing.assert_allclose(out, np.log(np.clip(probs, 1e-8, 1.0)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tf.nn.softmax(out).numpy(), probs, atol=1e-5)

    logits_teacher = _dense_model(softmax=False)
    out = teacher_logits_fn(logits_teacher, x[:2])(x).numpy()
    np.testing.assert_array_equal(out, logits_teacher(x).numpy())  # logits pass through


# --------------------------------------------------------------------------- distillation run


def brightest_quadrant_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise images where one quadrant (the label, 0..3) is clearly brighter."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 120, (n, *SHAPE)).astype(np.uint8)
    y = rng.integers(0, 4, n)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] += 120
    return x, y


def quadrant_teacher():
    """A teacher that needs no training: logits = 10 x mean brightness of each quadrant."""
    K = keras()
    inputs = K.Input(shape=SHAPE, name="image")
    x = K.layers.AveragePooling2D(pool_size=16, name="quadrants")(inputs)  # (2, 2, 3)
    x = K.layers.Flatten(name="flat")(x)  # index (row * 2 + col) * 3 + channel
    logits = K.layers.Dense(4, name="logits")(x)
    model = K.Model(inputs, logits, name="quadrant_teacher")
    kernel = np.zeros((12, 4), np.float32)
    for quadrant in range(4):
        kernel[quadrant * 3:(quadrant + 1) * 3, quadrant] = 10.0 / 3
    model.get_layer("logits").set_weights([kernel, np.zeros(4, np.float32)])
    return model


@pytest.fixture(scope="module")
def distill_setup():
    K = keras()
    K.utils.set_random_seed(0)
    x, y = brightest_quadrant_images(128, seed=0)
    norm = NormalizationSpec((127.5,) * 3, (127.5,) * 3)
    teacher = quadrant_teacher()
    val_ds = make_tf_dataset(x[:32], y[:32], norm, 32)
    return x, y, norm, teacher, val_ds


def test_quadrant_teacher_is_right(distill_setup):
    x, y, norm, teacher, _ = distill_setup
    assert (teacher(norm.apply(x)).numpy().argmax(axis=-1) == y).all()


def test_distill_student_learns_and_leaves_a_plain_student(distill_setup):
    K = keras()
    x, y, norm, teacher, val_ds = distill_setup
    teacher_before = teacher.get_weights()
    student = create_student("mobilenet_v2", SHAPE, 4, StudentConfig(alpha=0.35))
    before = student.get_weights()
    layers_before = [layer.name for layer in student.layers]
    cfg = DistillConfig(temperature=4.0, alpha=0.5, train=TrainConfig(epochs=2, batch_size=16, learning_rate=1e-2, schedule="constant"))
    train_ds = make_tf_dataset(x, y, norm, 16, shuffle=True, seed=0)

    history = distill_student(student, teacher, train_ds, val_ds, len(x), cfg, Progress(quiet=True))

    assert isinstance(history, dict) and not isinstance(history, K.Model)
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()
    assert history["loss"][1] < history["loss"][0], history["loss"]
    assert "val_loss" in history and "val_accuracy" in history
    # The student object itself was trained and is still the flat functional model.
    assert_flat_functional(student, output_shape=(None, 4))
    assert [layer.name for layer in student.layers] == layers_before
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))
    # The teacher stayed frozen.
    assert teacher.trainable is False
    for a, b in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_distill_student_accepts_cached_teacher_logits(distill_setup):
    x, y, norm, teacher, val_ds = distill_setup
    x, y = x[:64], y[:64]
    cached = precompute_teacher_logits(teacher, make_tf_dataset(x, y, norm, 32))
    assert cached.shape == (64, 4) and cached.dtype == np.float32
    np.testing.assert_allclose(cached, teacher(norm.apply(x)).numpy(), rtol=1e-5, atol=1e-5)

    train_ds = make_tf_dataset(x, y, norm, 32, shuffle=True, seed=0, extra=cached)
    _, targets = next(iter(train_ds))
    assert set(targets) == {"label", "soft"}

    student = create_student("mobilenet_v2", SHAPE, 4, StudentConfig(alpha=0.35))
    before = student.get_weights()
    cfg = DistillConfig(teacher_outputs="cached", train=TrainConfig(epochs=1, batch_size=32))
    history = distill_student(student, teacher, train_ds, val_ds, len(x), cfg, Progress(quiet=True))
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))
    assert type(student).__name__ == "Functional"
