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
from edgecnn.recipe import PruneConfig, Recipe, TrainConfig, load_recipe
from edgecnn.tflite.reader import sparsity_summary, weight_sparsity


# ----------------------------------------------------------------------------- recipe and schedules


@pytest.mark.parametrize("prune,needle", [
    ({"sparsity": 1.0}, "less than 1"),
    ({"sparsity": -0.1}, "greater than or equal to 0"),
    ({"begin": 0.6, "end": 0.5}, "ends (end 0.5) before it begins (begin 0.6)"),
    ({"m_by_n": [4, 2]}, "need 1 <= M < N"),
    ({"m_by_n": [4, 2], "sparsity": 0.5}, "need 1 <= M < N"),  # sparsity set (or inherited): still the pair's fault
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
            "qat: {train: {epochs: 1, batch_size: 25, learning_rate: 0.001}}\n"
            "export: {formats: [float32], bundle: true}\n")
    recipe = write_teacher_path_recipe(work, "pruned", seed=2, test_limit=100, tail=tail)
    proc = run_edgecnn("build", str(recipe), "--out", str(work / "run"), env={"EDGECNN_CACHE": str(work / "cache")})
    assert proc.returncode == 0, proc.stderr
    return work / "run", proc


def test_build_prunes_2_4_and_keeps_every_int8_model_side_by_side(pruned_build):
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
    # Sparsity-preserving QAT of the pruned model: int8 only, its float reference is its
    # pre-QAT source, and the 2:4 zeros are still in the file.
    assert not (run / "qat_float32.tflite").exists() and variants["tflite_int8_qat"] == "tflite_float32_pruned"
    assert json.loads((run / "stages" / "qat.json").read_text())["metrics"]["preserve_sparsity"] is True
    qat_rows = [r for r in weight_sparsity(run / "qat_int8.tflite", block=4) if r.sparsity >= 0.3]
    assert len(qat_rows) == len(pruned) and all(r.min_zeros_per_block >= 2 for r in qat_rows), qat_rows[:3]

    bundle = json.loads((run / "bundle" / "bundle.json").read_text())
    goldens = {m["file"]: m["golden"] for m in bundle["models"]}
    assert goldens["student_int8.tflite"] == "golden_int8.npz"
    assert goldens["pruned_int8.tflite"] == "golden_pruned_int8.npz"
    assert goldens["qat_int8.tflite"] == "golden_qat_int8.npz"
    verify = run_edgecnn("verify", str(run / "bundle"))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_bundle_command_of_a_pruned_run_ships_every_int8_variant(pruned_build, tmp_path):
    """`edgecnn bundle RUN` re-validates the run's resolved recipe (prune section included)."""
    run, _ = pruned_build
    proc = run_edgecnn("bundle", str(run), "--out", str(tmp_path / "b"), "--samples", "8")
    assert proc.returncode == 0, proc.stderr
    files = {m["file"] for m in json.loads((tmp_path / "b" / "bundle.json").read_text())["models"]}
    assert {"student_int8.tflite", "pruned_int8.tflite", "qat_int8.tflite"} <= files, files


def test_inspect_prints_the_sparsity_read_back(pruned_build):
    run, _ = pruned_build
    text = run_edgecnn("inspect", str(run / "pruned_int8.tflite"))
    assert text.returncode == 0, text.stderr
    assert "weight sparsity (read from the file)" in text.stdout and ">= 2 zeros in every 4" in text.stdout
    as_json = json.loads(run_edgecnn("inspect", str(run / "pruned_int8.tflite"), "--json").stdout)
    assert as_json["weight_sparsity"]["pruned_tensors"] >= 10


def test_per_tensor_weights_rebuild_only_quantize_and_keep_the_zeros(pruned_build, tmp_path):
    """`--set quantize.weights=per_tensor` on the module build's recipe: everything before
    quantize comes from the stage cache; the post-training files store one scale per weight
    tensor (read back from the file), keep the 2:4 zeros, gzip smaller than the per-channel
    files and are evaluated; the quantization-aware file keeps the per-channel quantizers
    it trained with."""
    run, _ = pruned_build
    work = run.parent
    out = tmp_path / "run"
    proc = run_edgecnn("build", str(work / "pruned.yaml"), "--out", str(out), "--set", "quantize.weights=per_tensor",
                       env={"EDGECNN_CACHE": str(work / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "per-tensor weights (post-training files)" in proc.stderr
    stages = {s["stage"]: s["cached"] for s in json.loads((out / "report.json").read_text())["stages"]}
    assert all(stages[s] for s in ("data", "teacher", "student", "prune", "qat", "export")), stages
    assert not stages["quantize"], stages
    for name in ("student_int8.tflite", "pruned_int8.tflite"):
        rows = [r for r in weight_sparsity(out / name, block=4) if r.dtype == "INT8"]
        assert rows and {r.scales for r in rows} == {1}, [(r.tensor, r.scales) for r in rows]
        before = [r for r in weight_sparsity(run / name) if r.dtype == "INT8"]
        assert max(r.scales for r in before) > 1  # the module build's files: per channel
    pruned = [r for r in weight_sparsity(out / "pruned_int8.tflite", block=4) if r.sparsity >= 0.3]
    assert len(pruned) >= 10 and all(r.min_zeros_per_block >= 2 for r in pruned), pruned[:3]
    qat = [r for r in weight_sparsity(out / "qat_int8.tflite") if r.op == "CONV_2D" and r.dtype == "INT8"]
    assert qat and all(r.scales == r.shape[0] > 1 for r in qat), [(r.tensor, r.scales) for r in qat][:3]
    rows = {m["name"]: m for m in json.loads((out / "report.json").read_text())["models"]}
    old = {m["name"]: m for m in json.loads((run / "report.json").read_text())["models"]}
    # tfmot's QAT scheme quantizes Dense weights per tensor and convolutions per channel: "mixed".
    assert rows["tflite_int8_pruned"]["weight_scales"] == "per tensor" and rows["tflite_int8_qat"]["weight_scales"] == "mixed"
    assert rows["tflite_int8_pruned"]["gzip_bytes"] < old["tflite_int8_pruned"]["gzip_bytes"]
    assert rows["tflite_int8_pruned"]["accuracy"] is not None and rows["tflite_int8"]["accuracy"] is not None
    assert "int8, per-tensor weights" in (out / "report.md").read_text()
    shown = run_edgecnn("inspect", str(out / "pruned_int8.tflite"))
    assert f"weight scales: per channel in 0 tensors, per tensor in {len(weight_sparsity(out / 'pruned_int8.tflite'))}" \
        in shown.stdout, shown.stdout


# ----------------------------------------------------------------------------- quantization-aware training


def _qat_fit(model, epochs=1):
    from edgecnn.compress.engine import fit
    from edgecnn.compress.losses import CrossEntropy

    _, _, ds = _toy_data()
    fit(model, ds, None, loss=CrossEntropy(), cfg=TrainConfig(epochs=epochs, batch_size=32, learning_rate=1e-3),
        steps_per_epoch=8)


def _run_int8(path, x):
    from edgecnn.runtime.interpreter import make_interpreter
    from edgecnn.runtime.runner import quantize_values

    interpreter = make_interpreter(path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for sample in x:
        interpreter.set_tensor(inp["index"], quantize_values(sample[None], inp["dtype"], *inp["quantization"]))
        interpreter.invoke()
        q = interpreter.get_tensor(out["index"]).astype(np.float32)
        scale, zero = out["quantization"]
        outputs.append((q - zero) * scale)
    return np.concatenate(outputs), out["quantization"][0]


def test_qat_model_and_its_int8_file_agree_within_quantization_tolerance(tmp_path):
    """The Keras QAT model simulates the int8 arithmetic: its softmax and the int8 file's agree
    within a few output steps (1/256 each) and on top-1 for nearly every input."""
    from edgecnn.compress.qat import quantize_aware
    from edgecnn.export.tflite import convert_int8, inference_model

    qat = quantize_aware(_tiny_model())
    _qat_fit(qat, epochs=2)
    x, _, _ = _toy_data(64)
    path = convert_int8(inference_model(qat), x[:32], "int8", tmp_path / "qat_int8.tflite")
    got, step = _run_int8(path, x)
    want = inference_model(qat).predict(x, verbose=0)
    steps = np.abs(got - want).max() / step
    agreement = float((got.argmax(1) == want.argmax(1)).mean())
    print(f"QAT vs int8: worst {steps:.1f} output steps, top-1 agreement {agreement:.3f}")
    assert steps <= 6 and agreement >= 0.95, (steps, agreement)


def test_pqat_keeps_the_zeros_into_the_file_and_round_trips_through_save_and_load(tmp_path):
    from edgecnn.compress.prune import strip, update_step_callback, wrap_for_pruning
    from edgecnn.compress.qat import quantize_aware
    from edgecnn.export.tflite import convert_int8, inference_model
    from edgecnn.models.loading import load_keras_model, save_keras_model

    from edgecnn.compress.engine import fit
    from edgecnn.compress.losses import CrossEntropy

    x, _, ds = _toy_data()
    wrapped = wrap_for_pruning(_tiny_model(), PruneConfig(sparsity=0.5, end=0.5, frequency=1), total_steps=8)
    fit(wrapped, ds, None, loss=CrossEntropy(), cfg=TrainConfig(epochs=1, batch_size=32), steps_per_epoch=8,
        callbacks=[update_step_callback()])
    pqat = quantize_aware(strip(wrapped), preserve_sparsity=True)
    _qat_fit(pqat, epochs=2)  # learning rate 1e-3: plain QAT would revive pruned weights here
    saved = save_keras_model(pqat, tmp_path / "pqat.keras")
    loaded = load_keras_model(saved)
    np.testing.assert_array_equal(pqat.predict(x[:8], verbose=0), loaded.predict(x[:8], verbose=0))
    _qat_fit(loaded, epochs=1)  # a loaded PQAT model trains on (resume), its quantizers intact
    path = convert_int8(inference_model(loaded), x[:32], "int8", tmp_path / "pqat_int8.tflite")
    rows = [r for r in weight_sparsity(path) if "expand" in r.tensor or "mix" in r.tensor]
    assert len(rows) == 2 and all(r.sparsity >= 0.49 for r in rows), rows


def test_a_layer_tfmot_cannot_quantize_is_one_line_and_keep_float_skips_it():
    from edgecnn._tf import keras
    from edgecnn.compress.qat import quantize_aware

    k = keras()
    inputs = k.layers.Input((12, 12, 1))
    x = k.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = k.layers.Conv2D(4, 3, name="conv")(x)
    model = k.Model(inputs, k.layers.Dense(3, name="logits")(k.layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(RecipeError) as exc_info:
        quantize_aware(model)
    assert_raised_error(exc_info, RecipeError, "'scale' (Rescaling)", "qat.keep_float: [scale]")
    qat = quantize_aware(model, keep_float=("scale",))
    assert type(qat.get_layer("scale")).__name__ == "Rescaling"  # left float, not wrapped
    with pytest.raises(RecipeError) as exc_info:
        quantize_aware(model, keep_float=("scal",))
    assert_raised_error(exc_info, RecipeError, "qat.keep_float", "'scal'", "scale")


# ----------------------------------------------------------------------------- channel pruning


def test_quantize_weights_is_part_of_the_key_only_when_not_the_default():
    """Recipes written before quantize.weights keep their quantize (and bundle) keys."""
    from edgecnn.recipe import Recipe

    def key(**quantize) -> str:
        return Recipe.model_validate({"name": "k", "quantize": quantize}).section_hash("quantize")

    assert key() == key(weights="per_channel") != key(weights="per_tensor")
    assert key(io_dtype="uint8") != key()


def _student():
    from edgecnn.models import create_student
    from edgecnn.recipe import StudentConfig

    return create_student("mobilenet_v2", (32, 32, 3), 10, StudentConfig(alpha=0.35))


def test_channel_groups_of_mobilenet_v2_free_widths_and_residual_chains():
    """Free widths: the stem, every expansion, the head, and the last block's projection (no
    residual Add reads it). Residual chains: each stage's projections tied by their Adds, read by
    the next blocks' expansions; the 8-channel chain of blocks 1-2 is under MIN_CHANNELS."""
    from edgecnn.compress.channels import find_channel_groups

    model = _student()
    free = {g.producer: g for g in find_channel_groups(model, residual=False)}
    assert set(free) == {f"block_{i}_expand" for i in range(1, 17)} | {"Conv1", "block_16_project", "Conv_1"}
    assert not any(g.residual for g in free.values())
    assert free["block_1_expand"].consumers == ("block_1_project",)
    assert "block_1_depthwise" in free["block_1_expand"].path
    assert free["Conv_1"].consumers == ("logits",) and free["Conv_1"].channels == 1280
    assert free["Conv1"].consumers == ("expanded_conv_project",)  # a 3x3 stem: its output width is free too

    chains = [g for g in find_channel_groups(model) if g.residual]
    assert [(g.producers, g.consumers, g.channels) for g in chains] == [
        (("block_3_project", "block_4_project", "block_5_project"),
         ("block_4_expand", "block_5_expand", "block_6_expand"), 16),
        (("block_6_project", "block_7_project", "block_8_project", "block_9_project"),
         ("block_7_expand", "block_8_expand", "block_9_expand", "block_10_expand"), 24),
        (("block_10_project", "block_11_project", "block_12_project"),
         ("block_11_expand", "block_12_expand", "block_13_expand"), 32),
        (("block_13_project", "block_14_project", "block_15_project"),
         ("block_14_expand", "block_15_expand", "block_16_expand"), 56),
    ]
    assert {"block_4_add", "block_5_add"} <= set(chains[0].path)


def test_train_augment_is_part_of_the_key_only_when_set():
    """Unset, it leaves the cache keys of recipes written before it as they were."""
    def prune_key(**train) -> str:
        return Recipe(name="x", prune={"train": {"epochs": 2, "learning_rate": 5e-4, **train}}).section_hash("prune")

    assert prune_key() == prune_key(augment=None)
    assert len({prune_key(), prune_key(augment=True), prune_key(augment=False)}) == 3


@pytest.mark.parametrize("channels,ratio,kept", [
    (48, 0.5, 24), (40, 0.5, 24), (56, 0.5, 32), (1280, 0.5, 640), (24, 0.5, 16), (16, 0.9, 8), (12, 0.5, 6), (8, 0.9, 1),
])
def test_kept_count_rounds_to_multiples_of_8_halves_up(channels, ratio, kept):
    from edgecnn.compress.channels import kept_count

    assert kept_count(channels, ratio) == kept


def _zero_removed_inputs(model, groups, ratio):
    """Zero the consumers' weights that read the channels pruning will remove."""
    from edgecnn.compress.channels import channel_scores, kept_count

    for group in groups:
        keep = np.argsort(-channel_scores(model, group), kind="stable")[:kept_count(group.channels, ratio)]
        removed = np.setdiff1d(np.arange(group.channels), keep)
        for name in group.consumers:
            consumer = model.get_layer(name)
            weights = consumer.get_weights()
            if weights[0].ndim == 4:
                weights[0][:, :, removed, :] = 0
            else:
                weights[0][removed, :] = 0
            consumer.set_weights(weights)


def test_slim_model_reproduces_the_original_when_the_removed_channels_were_zero():
    """Zero what the removed channels feed into; then removing them changes no output (residual
    chains included: a removed channel of a chain reaches only the chain's consumers)."""
    from edgecnn.compress.channels import find_channel_groups, prune_channels

    model = _student()
    _zero_removed_inputs(model, find_channel_groups(model), 0.5)
    slim, widths = prune_channels(model, 0.5)
    assert slim.count_params() < 0.35 * model.count_params()
    assert widths["Conv_1"] == (1280, 640) and widths["block_1_expand"] == (48, 24)
    assert {widths[f"block_{i}_project"] for i in (6, 7, 8, 9)} == {(24, 16)}  # one width per chain
    assert slim.output_shape == model.output_shape == (None, 10)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(slim.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def _squeeze_excite_model():
    """A conv block with squeeze-and-excitation (a Multiply with a 1x1xC gate, as MobileNetV3
    and EfficientNet have), a Concatenate branch, and a classifier."""
    from edgecnn._tf import keras

    K = keras()
    K.utils.set_random_seed(3)
    L = K.layers
    inputs = L.Input((12, 12, 3))
    x = L.ReLU(name="a_relu")(L.BatchNormalization(name="a_bn")(L.Conv2D(32, 3, padding="same", name="a")(inputs)))
    gate = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    gate = L.Conv2D(8, 1, activation="relu", name="se_reduce")(gate)
    gate = L.Conv2D(32, 1, activation="sigmoid", name="se_expand")(gate)
    x = L.Multiply(name="se_mul")([x, gate])
    y = L.Conv2D(24, 1, name="b")(x)
    z = L.Conv2D(16, 1, name="c")(x)
    x = L.Concatenate(name="cat")([y, z])  # b's and c's widths are fixed by what follows the concatenation
    x = L.Conv2D(40, 1, name="d")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return K.Model(inputs, L.Dense(3, name="logits")(x))


def test_channel_groups_through_squeeze_excite_and_around_a_concatenation():
    from edgecnn.compress.channels import find_channel_groups, prune_channels

    model = _squeeze_excite_model()
    groups = {g.producer: g for g in find_channel_groups(model)}
    # The gate's channels are multiplied into a's: one group, read by the gate's reduction and by b, c.
    assert groups["a"].producers == ("a", "se_expand") and groups["a"].residual
    assert groups["a"].consumers == ("se_reduce", "b", "c")
    assert set(groups) == {"a", "d"}  # se_reduce: 8 < MIN_CHANNELS; b, c: concatenated
    assert find_channel_groups(model, residual=False) == [groups["d"]]
    _zero_removed_inputs(model, groups.values(), 0.5)
    slim, widths = prune_channels(model, 0.5)
    assert widths == {"a": (32, 16), "se_expand": (32, 16), "d": (40, 24)}
    x = np.random.default_rng(1).uniform(-1, 1, (4, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(slim.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_channel_pruning_follows_include_and_exclude():
    from edgecnn.compress.channels import choose_groups

    model = _student()
    chosen = choose_groups(model, Recipe(name="x", prune={"method": "channels", "ratio": 0.5,
                                                          "exclude": ["Conv_1", "block_1*"]}).prune)
    producers = {name for g in chosen for name in g.producers}
    assert "Conv_1" not in producers and "block_1_expand" not in producers and "block_2_expand" in producers
    chosen = choose_groups(model, Recipe(name="x", prune={"method": "channels", "ratio": 0.5, "residual": False}).prune)
    assert not any(g.residual for g in chosen) and len(chosen) == 19
    with pytest.raises(RecipeError) as exc_info:
        choose_groups(model, Recipe(name="x", prune={"method": "channels", "ratio": 0.5, "include": ["logitz"]}).prune)
    assert_raised_error(exc_info, RecipeError, "prune.include", "'logitz'", "logits")
    with pytest.raises(RecipeError) as exc_info:
        choose_groups(model, Recipe(name="x", prune={"method": "channels", "ratio": 0.5, "include": ["logits"]}).prune)
    assert_raised_error(exc_info, RecipeError, "leave none of the student's 23 channel groups")


@pytest.mark.parametrize("prune,needle", [
    ({"method": "channels"}, "needs prune.ratio"),
    ({"method": "channels", "ratio": 1.0}, "less than 1"),
    ({"method": "channels", "ratio": 0.0}, "greater than 0"),
    ({"method": "channels", "ratio": 0.5, "m_by_n": [2, 4]}, "m_by_n is for method magnitude"),
    ({"ratio": 0.5}, "prune.ratio is for method channels"),
    ({"residual": False}, "prune.residual is for method channels"),
    ({"criterion": "bn_gamma"}, "prune.criterion is for method channels"),
])
def test_bad_channel_sections_are_refused(prune, needle):
    with pytest.raises(ValidationError) as exc_info:
        Recipe(name="x", prune=prune)
    assert needle in str(exc_info.value)


def test_build_with_channel_pruning_writes_a_smaller_faster_model(pruned_build, tmp_path, monkeypatch):
    """The module build's data, teacher and student come from its stage cache (same sections):
    only prune and what follows run."""
    from helpers import TEACHER_PATH_RECIPE

    from edgecnn.pipeline import build
    from edgecnn.progress import Progress

    work = pruned_build[0].parent
    tail = "prune: {method: channels, ratio: 0.5, train: {epochs: 1, batch_size: 50}}\nexport: {formats: []}\n"
    recipe = tmp_path / "channels.yaml"
    recipe.write_text(TEACHER_PATH_RECIPE.format(name="channels", seed=2, test_limit=100, teacher=work / "teacher.keras",
                                                 tail=tail))
    monkeypatch.setenv("EDGECNN_CACHE", str(work / "cache"))
    import edgecnn.data as data

    made = []  # (shuffled, augment) of every tf.data pipeline the build makes
    real = data.make_tf_dataset
    monkeypatch.setattr(data, "make_tf_dataset", lambda *a, **k: made.append((k.get("shuffle"), k.get("augment")))
                        or real(*a, **k))
    result = build(recipe, out_dir=tmp_path / "run", progress=Progress(quiet=True))
    assert [s["stage"] for s in result.report["stages"] if s["cached"]] == ["data", "teacher", "student"]
    # The fine-tune trains on un-augmented images (TrainConfig.augment unset): no augmenter at all,
    # where before it got the recipe's data.augment (here all off, so the images are the same).
    assert load_recipe(recipe).data.augment is not None
    trained_on = [aug for shuffled, aug in made if shuffled]
    assert trained_on and set(trained_on) == {None}, made
    metrics = json.loads((tmp_path / "run" / "stages" / "prune.json").read_text())["metrics"]
    assert metrics["method"] == "channels" and metrics["params"] < 0.5 * metrics["params_before"]
    rows = {m["name"]: m for m in result.report["models"]}
    assert rows["tflite_int8_pruned"]["size_bytes"] < 0.6 * rows["tflite_int8"]["size_bytes"]
    assert rows["tflite_int8_pruned"]["accuracy"] is not None


# ----------------------------------------------------------------------------- quantization modes


@pytest.mark.parametrize("mode,weights,activation,io", [
    ("float32", "FLOAT32", None, "FLOAT32"),
    ("float16", "FLOAT16", None, "FLOAT32"),
    ("dynamic", "INT8", None, "FLOAT32"),
    ("int16x8", "INT8", "INT16", "FLOAT32"),
    ("int8", "INT8", "INT8", "INT8"),
])
def test_each_quantization_format_has_the_tensor_types_of_its_mode(tmp_path, mode, weights, activation, io):
    """One row of the format table per mode: its file holds the weight and activation types
    the mode promises, and runs on ai-edge-litert."""
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert
    from edgecnn.runtime.interpreter import make_interpreter
    from edgecnn.tflite.reader import inspect_tflite

    from edgecnn._tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.layers.Input((12, 12, 1))
    x = k.layers.Conv2D(32, 3, activation="relu")(inputs)
    x = k.layers.Conv2D(64, 1)(x)  # 2048 weights: dynamic range quantizes kernels of >= 1024
    model = k.Model(inputs, k.layers.Dense(3)(k.layers.GlobalAveragePooling2D()(x)))
    x, _, _ = _toy_data(32)
    fmt = get_format(mode)
    path = convert(model, fmt, tmp_path / fmt.filename, x if fmt.needs_calibration else None, "int8")
    summary = inspect_tflite(path)
    types = {t.dtype: t for t in summary.tensor_types}
    if weights == "FLOAT16":  # stored float16, dequantized to float32 before the convolution
        assert types["FLOAT16"].constant_tensors >= 4 and not weight_sparsity(path)
    else:
        conv_weights = [r.dtype for r in weight_sparsity(path) if r.op == "CONV_2D" and r.elements >= 1024]
        assert conv_weights == [weights], conv_weights
    if activation is not None:
        assert types[activation].tensors > types[activation].constant_tensors  # activations of that type
    else:
        assert "INT8" not in types or types["INT8"].tensors == types["INT8"].constant_tensors
    assert summary.inputs[0].dtype == summary.outputs[0].dtype == io
    interpreter = make_interpreter(path)
    interpreter.allocate_tensors()
    interpreter.invoke()


@pytest.mark.parametrize("section,needle", [
    ("prune: {include: ['block_*_expnd']}", "prune.include: pattern 'block_*_expnd' matches no layer"),
    ("qat: {keep_float: [Conv_11]}", "qat.keep_float: 'Conv_11' is not a layer of the student"),
])
def test_layer_names_are_checked_before_any_training(tmp_path, section, needle):
    """A misspelt layer pattern fails in seconds, before the data stage, not after training."""
    from helpers import assert_one_line_error

    recipe = write_teacher_path_recipe(tmp_path, "early", seed=1, test_limit=50, tail=section + "\n")
    proc = run_edgecnn("build", str(recipe), "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, 2, needle, build=True)
    assert "==> [1/" not in proc.stderr and not (tmp_path / "run" / "dataset.json").exists()


def test_report_says_what_compression_forgot(pruned_build):
    """Each compressed file against its float reference, found through the artifact graph:
    agreement and flipped images agree with each other, per-class changes cover every class."""
    run, _ = pruned_build
    evaluation = json.loads((run / "evaluation.json").read_text())
    models, n = evaluation["models"], evaluation["test_images"]
    assert models["tflite_int8"]["reference"] == "tflite_float32"
    assert models["tflite_float32_pruned"]["reference"] == "tflite_float32"  # compressed from the student
    assert models["tflite_int8_qat"]["reference"] == "tflite_float32_pruned"  # QAT's float source
    assert "reference" not in models["tflite_float32"]
    for name in ("tflite_int8", "tflite_float32_pruned", "tflite_int8_pruned", "tflite_int8_qat"):
        row = models[name]
        assert row["flipped"] == round((1 - row["top1_agreement"]) * n)
        assert 0 <= row["flipped_to_wrong"] <= row["flipped"]
        assert len(row["per_class_change_points"]) == 10
    md = (run / "report.md").read_text()
    assert "## What compression forgot" in md and "| tflite_int8_qat | tflite_float32_pruned |" in md
