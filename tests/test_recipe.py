"""Recipe validation: typed sections, extends, --set overrides, and every bad-input message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecnn.errors import RecipeError
from edgecnn.recipe import Recipe, deep_merge, load_recipe, recipe_schema

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, overrides=()) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert "\n" not in message, f"expected one line, got: {message!r}"
    return message


@pytest.mark.parametrize("name", ["quickstart.yaml", "fashion_mnist_mobilenetv2.yaml"])
def test_shipped_recipes_validate(name):
    recipe = load_recipe(REPO / "recipes" / name)
    assert recipe.student.architecture == "mobilenet_v2"
    assert recipe.quantize.int8 and recipe.quantize.io_dtype == "int8"


def test_quickstart_extends_full_recipe_and_overrides_parts():
    quick = load_recipe(REPO / "recipes" / "quickstart.yaml")
    full = load_recipe(REPO / "recipes" / "fashion_mnist_mobilenetv2.yaml")
    assert quick.name == "quickstart" and full.name == "fashion_mnist_mobilenetv2"
    assert quick.data.train_limit == 3000 and full.data.train_limit is None
    # inherited untouched, merged key by key inside a section
    assert quick.distill.temperature == full.distill.temperature
    assert quick.distill.train.epochs == 8
    # inherited from the parent, where it differs from the field default ("online")
    assert quick.distill.teacher_outputs == full.distill.teacher_outputs == "cached"


def test_defaults_come_from_the_model(tmp_path):
    recipe = load_recipe(write(tmp_path, "r.yaml", "name: tiny\n"))
    assert recipe == Recipe(name="tiny")
    assert recipe.data.image_size == Recipe.model_fields["data"].default_factory().image_size


def test_set_overrides_win_and_parse_yaml_values(tmp_path):
    path = write(tmp_path, "r.yaml", "name: tiny\ndistill: {temperature: 3}\n")
    recipe = load_recipe(path, ["distill.temperature=2.5", "export.formats=[float32, float16]", "data.train_limit=100"])
    assert recipe.distill.temperature == 2.5
    assert recipe.export.formats == ["float32", "float16"]
    assert recipe.data.train_limit == 100


def test_set_is_never_evaluated(tmp_path):
    path = write(tmp_path, "r.yaml", "name: tiny\n")
    message = error_of(path, ["data.image_size=__import__('os').getcwd()"])
    assert "data.image_size" in message and "integer" in message


def test_unknown_key_suggests_the_right_one(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\ndistill: {temprature: 2}\n"))
    assert "r.yaml" in message and "distill.temprature" in message and "did you mean 'distill.temperature'" in message


def test_unknown_section_suggests(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\nquantise: {int8: true}\n"))
    assert "did you mean 'quantize'" in message


def test_unknown_key_without_close_match_lists_allowed(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\nstudent: {zzz: 1}\n"))
    assert "allowed here:" in message and "alpha" in message


def test_wrong_type_names_key_path_and_expected_type(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\ndata: {image_size: big}\n"))
    assert "'data.image_size'" in message and "integer" in message and '"big"' in message


def test_out_of_range_value(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\ndistill: {alpha: 1.5}\n"))
    assert "distill.alpha" in message and "less than or equal to 1" in message


def test_wrong_enum_value(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\nquantize: {io_dtype: int4}\n"))
    assert "quantize.io_dtype" in message and "'int8'" in message


def test_output_stride_accepts_only_8_16_32(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\nstudent: {output_stride: 12}\n"))
    assert "student.output_stride" in message and "16" in message


def test_malformed_yaml_names_line(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\ndata:\n  image_size: [32\n"))
    assert "r.yaml" in message and "malformed YAML" in message and "line" in message


@pytest.mark.parametrize("text,needle", [
    ("", "empty"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("data: {}\n", "missing required key 'name'"),
])
def test_structurally_wrong_files(tmp_path, text, needle):
    assert needle in error_of(write(tmp_path, "r.yaml", text))


def test_missing_file(tmp_path):
    message = error_of(tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "not found" in message


def test_binary_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"\xff\xfe\x00\x89PNG")
    assert "r.yaml" in error_of(path)


def test_extends_cycle_and_missing_parent(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\nname: b\n")
    assert "cycle" in error_of(tmp_path / "a.yaml")
    message = error_of(write(tmp_path, "c.yaml", "extends: gone.yaml\nname: c\n"))
    assert "gone.yaml" in message and "does not exist" in message


def test_extends_is_relative_to_the_recipe_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, "base.yaml", "name: base\nstudent: {alpha: 0.5, dropout: 0.3}\n")
    child = write(tmp_path / "sub", "child.yaml", "extends: ../base.yaml\nname: child\nstudent: {alpha: 0.75}\n")
    recipe = load_recipe(child)
    assert (recipe.name, recipe.student.alpha, recipe.student.dropout) == ("child", 0.75, 0.3)


def test_unknown_architecture_suggests(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\nstudent: {architecture: mobilenetv2}\n"))
    assert "student.architecture" in message and "did you mean 'mobilenet_v2'" in message
    message = error_of(write(tmp_path, "r.yaml", "name: t\nteacher: {architecture: resnet50}\n"))
    assert "did you mean 'ResNet50'" in message


def test_keras_applications_teacher_is_accepted(tmp_path):
    recipe = load_recipe(write(tmp_path, "r.yaml", "name: t\nteacher: {architecture: EfficientNetB0}\n"))
    assert recipe.teacher.architecture == "EfficientNetB0"


def test_wrong_paths_fail_at_validation(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\nteacher: {path: missing_teacher.keras}\n"))
    assert "teacher.path" in message and "missing_teacher.keras" in message
    message = error_of(write(tmp_path, "r.yaml", "name: t\nstudent: {weights: /no/such/weights.h5}\n"))
    assert "student.weights" in message
    message = error_of(write(tmp_path, "r.yaml", "name: t\ndata: {source: image_folder}\n"))
    assert "data.path" in message


def test_reserved_sections_are_rejected_until_supported(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\nprune: {sparsity: 0.5}\n"))
    assert "prune" in message and "reserved" in message
    assert load_recipe(write(tmp_path, "r2.yaml", "name: t\nprune: null\nqat: null\nbench: null\n")).prune is None


def test_normalization_must_match_channels(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\ndata: {channels: 3, normalization: {mean: [1, 2]}}\n"))
    assert "normalization.mean" in message


def test_bad_override_syntax(tmp_path):
    path = write(tmp_path, "r.yaml", "name: t\n")
    assert "KEY.PATH=VALUE" in error_of(path, ["distill.temperature"])
    assert "not a section" in error_of(path, ["name.x=1"])


def test_recipe_hash_changes_with_content(tmp_path):
    a = load_recipe(write(tmp_path, "r.yaml", "name: t\n"))
    b = load_recipe(write(tmp_path, "r.yaml", "name: t\n"), ["distill.temperature=2"])
    assert a.recipe_hash != b.recipe_hash
    assert a.section_hash("quantize") == b.section_hash("quantize")
    assert a.section_hash("distill") != b.section_hash("distill")


def test_deep_merge_replaces_lists_and_merges_maps():
    merged = deep_merge({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3]}, "e": 2})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}


def test_schema_documents_every_section():
    schema = recipe_schema()
    json.dumps(schema)
    for section in ("data", "teacher", "student", "distill", "quantize", "export", "evaluate", "prune", "qat", "bench", "extends"):
        assert section in schema["properties"], section
    distill = schema["$defs"]["DistillConfig"]["properties"]
    assert distill["temperature"]["default"] == 4.0 and distill["temperature"]["description"]
    assert schema["$defs"]["DistillConfig"]["additionalProperties"] is False
