"""Pruning: the recipe section, the schedules, layer choice, and zeros read back from exported files.

A tiny Conv/Dense model is pruned, fine-tuned and converted to int8 in-process (seconds);
one real build (teacher file, 100 images) runs the ``prune`` stage with 2:4 and shows two
int8 models side by side, each evaluated and bundled, with the pattern in the file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_raised_error, run_edgecnn, write_teacher_path_recipe
from pydantic import ValidationError

from edgecnn.errors import RecipeError
from edgecnn.recipe import PruneConfig, Recipe, TrainConfig
from edgecnn.tflite.reader import sparsity_summary, weight_sparsity


# ----------------------------------------------------------------------------- recipe and schedules


@pytest.mark.parametrize("prune,needle", [
    ({"sparsity": 1.0}, "less than 1"),
    ({"sparsity": -0.1}, "greater than or equal to 0"),
    ({"begin": 0.6, "end": 0.5}, "ends (end 0.5) before it begins (begin 0.6)"),
    ({"m_by_n": [4, 2]}, "need 1 <= M < N"),
    ({"m_by_n": [2, 4], "sparsity": 0.3}, "sets the sparsity to 0.5"),
    ({"schedule": {"kind": "cubic"}}, "'constant', 'polynomial_decay'"),
    ({"schedule": {"kind": "polynomial_decay", "initial_sparsity": 0.8}}, "above the target"),
])
def test_bad_prune_sections_are_refused_without_tensorflow(prune, needle):
    with pytest.raises(ValidationError) as exc_info:
        Recipe(name="x", prune=prune)
    assert needle in str(exc_info.value)


def test_m_by_n_sets_the_sparsity():
    assert Recipe(name="x", prune={"m_by_n": [2, 4]}).prune.sparsity == 0.5
    assert Recipe(name="x", prune={"m_by_n": [1, 8]}).prune.sparsity == 0.125


@pytest.mark.parametrize("kind", ["constant", "polynomial_decay"])
def test_schedule_values_at_boundary_steps(kind):
    """begin/end are fractions of the fine-tune; the target is reached at the end step and kept."""
    from edgecnn.compress.prune import make_schedule

    cfg = PruneConfig(sparsity=0.6, begin=0.2, end=0.6, frequency=1, schedule={"kind": kind})
    schedule = make_schedule(cfg, total_steps=100)  # begin step 20, end step 60

    def at(step):
        should, sparsity = schedule(np.int64(step))
        return bool(should), float(sparsity)

    assert at(19)[0] is False
    assert at(20)[0] is True
    assert at(60) == (True, pytest.approx(0.6))
    assert at(61)[0] is False  # masks frozen after the end step
    if kind == "polynomial_decay":
        assert at(20)[1] == pytest.approx(0.0) and 0.0 < at(40)[1] < 0.6
    else:
        assert at(20)[1] == pytest.approx(0.6)


def test_distillation_losses_in_the_recipe_are_the_registry_s():
    import typing

    from edgecnn.compress.losses import LOSSES
    from edgecnn.recipe import DistillConfig

    allowed = set(typing.get_args(DistillConfig.model_fields["loss"].annotation))
    registered = {name for name in LOSSES.names() if LOSSES._classes[name].needs_teacher}
    assert allowed == registered


# ----------------------------------------------------------------------------- a tiny model, in-process


def _tiny_model():
    from edgecnn._tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.layers.Input((12, 12, 1))
    x = k.layers.Conv2D(8, 3, name="stem")(inputs)
    x = k.layers.DepthwiseConv2D(3, name="dw")(x)
    x = k.layers.Conv2D(16, 1, name="expand")(x)
    x = k.layers.Conv2D(16, 1, name="mix")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.Model(inputs, k.layers.Dense(3, name="logits")(x))


def _toy_data(n=256):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12, 12, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64) + (x[:, :6].mean(axis=(1, 2, 3)) > 0.1)
    return x, y, tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


def test_default_choice_keeps_first_last_and_depthwise_dense():
    from edgecnn.compress.prune import choose_layers

    choice = choose_layers(_tiny_model(), PruneConfig())
    assert choice.pruned == ("expand", "mix")
    assert set(choice.kept) == {"stem", "dw", "logits"} and "depthwise" in choice.kept["dw"]
    with_first_last = choose_layers(_tiny_model(), PruneConfig(keep_first_last=False))
    assert with_first_last.pruned == ("stem", "expand", "mix", "logits")
    # 2:4 runs along input channels: the 1-channel stem cannot take it.
    m_by_n = choose_layers(_tiny_model(), PruneConfig(keep_first_last=False, m_by_n=(2, 4)))
    assert "stem" in m_by_n.kept and "input channels" in m_by_n.kept["stem"]


@pytest.mark.parametrize("key,pattern,close", [("include", "expnd", "expand"), ("exclude", "mixx*", "mix")])
def test_patterns_that_match_no_layer_name_the_close_ones(key, pattern, close):
    from edgecnn.compress.prune import choose_layers

    with pytest.raises(RecipeError) as exc_info:
        choose_layers(_tiny_model(), PruneConfig(**{key: [pattern]}))
    assert_raised_error(exc_info, RecipeError, f"prune.{key}", pattern, close)


@pytest.mark.parametrize("m_by_n", [None, (2, 4)])
def test_pruned_tiny_model_keeps_its_zeros_in_the_int8_file(tmp_path, m_by_n):
    """Wrap, fine-tune with UpdatePruningStep, strip, convert: the zeros are read back from the file."""
    from edgecnn.compress.engine import fit
    from edgecnn.compress.losses import CrossEntropy
    from edgecnn.compress.prune import kernel_sparsity, strip, update_step_callback, wrap_for_pruning
    from edgecnn.export.tflite import convert_int8

    model = _tiny_model()
    before = [w.copy() for w in model.get_weights()]
    cfg = PruneConfig(sparsity=0.5, m_by_n=m_by_n, begin=0.0, end=0.5, frequency=1)
    x, _, ds = _toy_data()
    steps = 8
    wrapped = wrap_for_pruning(model, cfg, total_steps=2 * steps)
    fit(wrapped, ds, None, loss=CrossEntropy(), cfg=TrainConfig(epochs=2, batch_size=32, learning_rate=1e-2),
        steps_per_epoch=steps, callbacks=[update_step_callback()])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "the caller's model changed"
    pruned = strip(wrapped)
    assert [type(layer).__name__ for layer in pruned.layers].count("PruneLowMagnitude") == 0
    assert pruned.count_params() == model.count_params()  # masks are not parameters
    assert all(abs(s - 0.5) < 0.01 for s in kernel_sparsity(pruned, ("expand", "mix")).values())

    path = convert_int8(pruned, x[:32], "int8", tmp_path / "pruned_int8.tflite")
    rows = {r.tensor.split("/")[-2] if "/" in r.tensor else r.tensor: r for r in weight_sparsity(path, block=4)}
    pruned_rows = [r for name, r in rows.items() if "expand" in name or "mix" in name]
    assert len(pruned_rows) == 2, list(rows)
    for row in pruned_rows:
        assert row.dtype == "INT8" and row.sparsity >= 0.49, row
        if m_by_n:
            assert row.min_zeros_per_block >= 2, row  # every group of 4 along input channels
    assert sparsity_summary(list(rows.values()), 0.3)["pruned_tensors"] == 2


# ----------------------------------------------------------------------------- one real build


@pytest.fixture(scope="module")
def pruned_build(tmp_path_factory):
    work = tmp_path_factory.mktemp("prune")
    tail = ("prune: {m_by_n: [2, 4], begin: 0.0, end: 0.5, frequency: 1, train: {epochs: 1, batch_size: 25}}\n"
            "export: {formats: [float32], bundle: true}\n")
    recipe = write_teacher_path_recipe(work, "pruned", seed=2, test_limit=100, tail=tail)
    proc = run_edgecnn("build", str(recipe), "--out", str(work / "run"), env={"EDGECNN_CACHE": str(work / "cache")})
    assert proc.returncode == 0, proc.stderr
    return work / "run", proc


def test_build_prunes_2_4_and_keeps_both_int8_models_side_by_side(pruned_build):
    run, proc = pruned_build
    assert "==> " in proc.stderr and "prune:" in proc.stderr
    record = json.loads((run / "stages" / "prune.json").read_text())
    assert record["metrics"]["m_by_n"] == [2, 4] and record["metrics"]["sparsity_pruned_layers"] >= 0.49
    # The pattern is in the exported int8 file, on every layer that was pruned.
    rows = weight_sparsity(run / "pruned_int8.tflite", block=4)
    pruned = [r for r in rows if r.sparsity >= 0.3]
    assert len(pruned) >= 10 and all(r.min_zeros_per_block >= 2 for r in pruned), pruned[:3]
    assert sparsity_summary(weight_sparsity(run / "student_int8.tflite"), 0.3)["pruned_tensors"] == 0

    evaluation = json.loads((run / "evaluation.json").read_text())["models"]
    assert evaluation["tflite_int8"]["status"] == evaluation["tflite_int8_pruned"]["status"] == "evaluated"
    report = json.loads((run / "report.json").read_text())
    rows_by_name = {m["name"]: m for m in report["models"]}
    assert rows_by_name["tflite_int8_pruned"]["source"] == "model.keras.pruned"
    assert rows_by_name["tflite_int8_pruned"]["pruned_tensors_sparsity"] >= 0.49
    assert rows_by_name["tflite_int8_pruned"]["gzip_bytes"] < rows_by_name["tflite_int8"]["gzip_bytes"]
    variants = {v["name"]: v["reference"] for v in report["summary"]["variants"]}
    assert variants["tflite_int8_pruned"] == "tflite_float32_pruned"

    bundle = json.loads((run / "bundle" / "bundle.json").read_text())
    goldens = {m["file"]: m["golden"] for m in bundle["models"]}
    assert goldens["student_int8.tflite"] == "golden_int8.npz"
    assert goldens["pruned_int8.tflite"] == "golden_pruned_int8.npz"
    verify = run_edgecnn("verify", str(run / "bundle"))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_inspect_prints_the_sparsity_read_back(pruned_build):
    run, _ = pruned_build
    text = run_edgecnn("inspect", str(run / "pruned_int8.tflite"))
    assert text.returncode == 0, text.stderr
    assert "weight sparsity (read from the file)" in text.stdout and ">= 2 zeros in every 4" in text.stdout
    as_json = json.loads(run_edgecnn("inspect", str(run / "pruned_int8.tflite"), "--json").stdout)
    assert as_json["weight_sparsity"]["pruned_tensors"] >= 10
