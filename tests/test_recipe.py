"""Recipe validation: typed sections, extends, --set overrides, and every bad-input message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecnn.errors import RecipeError
from edgecnn.recipe import Recipe, deep_merge, load_recipe, recipe_schema, validate_recipe

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


def test_compression_sections_are_typed_and_null_means_none(tmp_path):
    """prune and qat (reserved until this release) are typed sections: a bad value names its key."""
    message = error_of(write(tmp_path, "r.yaml", "name: t\nprune: {sparsity: 1.5}\n"))
    assert "prune.sparsity" in message
    message = error_of(write(tmp_path, "r1.yaml", "name: t\nqat: {keep_flaot: [x]}\n"))
    assert "qat" in message and "keep_flaot" in message
    recipe = load_recipe(write(tmp_path, "r2.yaml", "name: t\nprune: null\nqat: null\nbench: null\n"))
    assert recipe.prune is None and recipe.qat is None
    recipe = load_recipe(write(tmp_path, "r3.yaml", "name: t\nprune: {sparsity: 0.3}\nqat: {}\n"))
    assert recipe.prune.sparsity == 0.3 and recipe.qat.keep_float == []


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


# --------------------------------------------------------------------------- bounded loading (#10)

# Nine levels of nine aliases: some 400 bytes that expand to 9**9 (387 million) strings.
ALIAS_BOMB = "".join(
    [f"{chr(97)}: &a [{', '.join(['lol'] * 9)}]\n"]
    + [f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 9)}]\n" for i in range(1, 9)]
)


def load_in_subprocess(path: Path, overrides=()) -> dict:
    """Load a recipe in a fresh interpreter capped at 2 GiB and 30 s, so a regression that
    expands the bomb fails this test instead of taking the machine's memory."""
    import subprocess
    import sys

    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"  # in the child: no preexec_fn with threads
        "import json, sys, time\n"
        "from edgecnn.errors import RecipeError\n"
        "from edgecnn.recipe import load_recipe\n"
        "start = time.perf_counter()\n"
        "try:\n"
        f"    load_recipe({str(path)!r}, {list(overrides)!r})\n"
        "    message = None\n"
        "except RecipeError as exc:\n"
        "    message = str(exc)\n"
        "print(json.dumps({'seconds': time.perf_counter() - start, 'message': message}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_alias_bomb_is_refused_fast_in_one_line(tmp_path):
    """Before the fix this ran for 52 s and ended in MemoryError."""
    path = write(tmp_path, "bomb.yaml", "name: bomb\n" + ALIAS_BOMB + "data: {normalization: {mean: *i}}\n")
    assert path.stat().st_size < 500
    result = load_in_subprocess(path)
    assert result["seconds"] < 0.5, result
    message = result["message"]
    assert message and "\n" not in message
    assert str(path) in message and "10000 values" in message and "alias" in message


def test_alias_bomb_in_an_extends_parent_names_the_parent(tmp_path):
    write(tmp_path, "parent.yaml", "name: p\n" + ALIAS_BOMB)
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\nname: c\n")
    message = error_of(child)
    assert "parent.yaml" in message and "child.yaml" not in message and "10000 values" in message


def test_alias_bomb_in_a_set_value_is_refused(tmp_path):
    path = write(tmp_path, "r.yaml", "name: t\n")
    value = "[" + ", ".join(["&a [" + ", ".join(["1"] * 9) + "]"]
                            + [f"&{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 9) + "]" for i in range(1, 9)]) + "]"
    result = load_in_subprocess(path, [f"data.normalization.mean={value}"])
    assert result["seconds"] < 0.5, result
    assert "--set 'data.normalization.mean'" in result["message"] and "10000 values" in result["message"]
    assert "\n" not in result["message"]


@pytest.mark.parametrize("text, needle", [
    ("name: t\nx: [" + ", ".join(["1"] * 20000) + "]\n", "more than 10000 values (the limit)"),
    ("name: t\nx: " + "[" * 100 + "]" * 100 + "\n", "nested deeper than 32 levels"),
    ("name: t\na: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n", "more than 100 YAML aliases"),
    ("name: t\nx: &x [1, *x]\n", "cannot be recursive"),
    ("name: t\n#" + "x" * (300 * 1024) + "\n", "larger than 256 KiB"),
])
def test_each_loading_limit_is_one_line_naming_file_and_limit(tmp_path, text, needle):
    import time

    path = write(tmp_path, "r.yaml", text)
    start = time.perf_counter()
    message = error_of(path)
    assert time.perf_counter() - start < 1.0
    assert str(path) in message and needle in message and "refused" in message


def test_deep_set_value_is_refused(tmp_path):
    message = error_of(write(tmp_path, "r.yaml", "name: t\n"), ["data.normalization.mean=" + "[" * 200 + "]" * 200])
    assert message.startswith("--set 'data.normalization.mean'") and "nested deeper than 32" in message


def test_extends_chain_is_bounded(tmp_path):
    from edgecnn.recipe import MAX_EXTENDS_CHAIN

    write(tmp_path, "r0.yaml", "name: r0\n")
    for i in range(1, MAX_EXTENDS_CHAIN + 2):
        write(tmp_path, f"r{i}.yaml", f"extends: r{i - 1}.yaml\nname: r{i}\n")
    assert load_recipe(tmp_path / f"r{MAX_EXTENDS_CHAIN - 1}.yaml").name == f"r{MAX_EXTENDS_CHAIN - 1}"
    assert f"longer than {MAX_EXTENDS_CHAIN} files" in error_of(tmp_path / f"r{MAX_EXTENDS_CHAIN + 1}.yaml")


def test_plain_aliases_still_work_and_set_changes_only_its_key(tmp_path):
    path = write(tmp_path, "r.yaml", "name: t\nteacher: {train: &t {epochs: 3, batch_size: 32}}\ndistill: {train: *t}\n")
    recipe = load_recipe(path, ["distill.train.epochs=5"])
    assert (recipe.teacher.train.epochs, recipe.distill.train.epochs) == (3, 5)
    assert recipe.teacher.train.batch_size == recipe.distill.train.batch_size == 32


def test_pyyaml_global_loader_is_untouched(tmp_path):
    import yaml

    load_recipe(REPO / "recipes" / "quickstart.yaml")
    assert yaml.SafeLoader.compose_node is yaml.composer.Composer.compose_node
    assert len(yaml.safe_load("[" + ", ".join(["1"] * 20000) + "]")) == 20000


# --------------------------------------------------------------------------- provenance and advice (#10)


def test_inherited_settings_name_the_file_that_set_them():
    from edgecnn.recipe import inherited_settings

    inherited = inherited_settings(load_recipe(REPO / "recipes" / "quickstart.yaml"))
    parent = str(REPO / "recipes" / "fashion_mnist_mobilenetv2.yaml")
    assert inherited["data.augment.horizontal_flip"] == parent
    assert inherited["distill.teacher_outputs"] == parent
    # set in quickstart itself, or only a default: not inherited
    for own in ("name", "data.train_limit", "student.alpha", "distill.train.epochs", "export.bundle", "student.weights"):
        assert own not in inherited, own
    assert not inherited_settings(load_recipe(REPO / "recipes" / "fashion_mnist_mobilenetv2.yaml"))


def test_inherited_settings_through_a_chain_and_after_set(tmp_path):
    from edgecnn.recipe import inherited_settings

    write(tmp_path, "a.yaml", "name: a\ndata: {augment: {horizontal_flip: true, translate: 0.2}}\nstudent: {alpha: 0.5}\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\nname: b\ndata: {augment: {translate: 0.1}}\n")
    child = write(tmp_path, "c.yaml", "extends: b.yaml\nname: c\n")
    inherited = inherited_settings(load_recipe(child))
    assert inherited == {"data.augment.horizontal_flip": str(tmp_path / "a.yaml"),
                         "data.augment.translate": str(tmp_path / "b.yaml"),
                         "student.alpha": str(tmp_path / "a.yaml")}
    inherited = inherited_settings(load_recipe(child, ["data.augment.horizontal_flip=false", "student={alpha: 1.0}"]))
    assert inherited == {"data.augment.translate": str(tmp_path / "b.yaml")}
    # A section replaced by a non-mapping drops everything inherited inside it.
    write(tmp_path, "d.yaml", "extends: a.yaml\nname: d\nbench: null\n")
    assert "bench" not in inherited_settings(load_recipe(tmp_path / "d.yaml"))


def test_provenance_does_not_change_equality_or_hashes(tmp_path):
    quick = load_recipe(REPO / "recipes" / "quickstart.yaml")
    again = Recipe.model_validate(quick.to_dict())
    assert quick == again and quick.recipe_hash == again.recipe_hash


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_every_shipped_recipe_survives_its_resolved_form(name):
    """A run's manifest.json holds the resolved recipe (every key, defaults included), which
    `edgecnn bundle RUN` validates again: it must give the same recipe. (A prune recipe's
    resolved `prune.criterion: l1` was once refused as "for method channels".)"""
    recipe = load_recipe(REPO / "recipes" / name)
    again = validate_recipe(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe and again.recipe_hash == recipe.recipe_hash


@pytest.fixture
def digits_folder(tmp_path):
    (tmp_path / "digits").mkdir()
    return tmp_path / "digits"


def test_switching_dataset_with_inherited_augmentations_warns(tmp_path, digits_folder):
    from edgecnn.recipe import recipe_warnings

    quick = REPO / "recipes" / "quickstart.yaml"
    child = write(tmp_path, "digits.yaml", f"extends: {quick}\nname: digits\n"
                  f"data: {{source: image_folder, path: {digits_folder}}}\n")
    warnings = recipe_warnings(load_recipe(child))
    assert len(warnings) == 1 and "\n" not in warnings[0]
    warning = warnings[0]
    assert warning.startswith(f"{child}: switches dataset")
    # named with the file that set them: the grandparent, not quickstart.yaml
    assert (f"keeps inherited augmentations (data.augment.horizontal_flip=true, data.augment.translate=0.1 "
            f"from {REPO / 'recipes' / 'fashion_mnist_mobilenetv2.yaml'})") in warning
    assert "data.source image_folder instead of fashion_mnist" in warning
    assert "`data: {augment: {horizontal_flip: false, translate: 0}}`" in warning


def test_warning_lists_only_augmentations_still_inherited_and_on(tmp_path, digits_folder):
    from edgecnn.recipe import recipe_warnings

    quick = REPO / "recipes" / "quickstart.yaml"
    head = f"extends: {quick}\nname: digits\n"
    half = write(tmp_path, "half.yaml", head + f"data: {{path: {digits_folder}, augment: {{horizontal_flip: false}}}}\n")
    (warning,) = recipe_warnings(load_recipe(half))
    assert "inherited augmentations (data.augment.translate=0.1 from" in warning
    assert "data.path" in warning
    off = write(tmp_path, "off.yaml", head + f"data: {{path: {digits_folder}, augment: {{horizontal_flip: false, translate: 0}}}}\n")
    assert recipe_warnings(load_recipe(off)) == []
    same = write(tmp_path, "same.yaml", head + "data: {train_limit: 500}\n")
    assert recipe_warnings(load_recipe(same)) == []
    # switching dataset with --set counts too
    assert len(recipe_warnings(load_recipe(same, ["data.source=image_folder", f"data.path={digits_folder}"]))) == 1
    assert recipe_warnings(load_recipe(quick)) == []


def test_validate_prints_the_warning_without_tensorflow(tmp_path, digits_folder):
    import subprocess
    import sys

    child = write(tmp_path, "digits.yaml", f"extends: {REPO / 'recipes' / 'quickstart.yaml'}\nname: digits\n"
                  f"data: {{source: image_folder, path: {digits_folder}}}\n")
    code = (
        "import sys\n"
        "from edgecnn.cli import main\n"
        "try:\n"
        f"    main(['validate', {str(child)!r}], standalone_mode=False)\n"
        "finally:\n"
        "    print('TF=' + str('tensorflow' in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "horizontal_flip" in warnings[0]
    assert "TF=False" in proc.stderr


def test_extends_replaces_a_schedule_whose_kind_changes(tmp_path):
    """A child recipe switching prune.schedule from polynomial_decay (parent) to constant gets
    the constant schedule alone, not the parent's power/initial_sparsity refused as unknown."""
    from edgecnn.recipe import deep_merge, load_recipe

    parent = tmp_path / "parent.yaml"
    parent.write_text("name: p\nprune: {sparsity: 0.5, schedule: {kind: polynomial_decay, initial_sparsity: 0.1, power: 3}}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: parent.yaml\nname: c\nprune: {schedule: {kind: constant}}\n")
    recipe = load_recipe(child)
    assert recipe.prune.schedule.kind == "constant" and recipe.prune.sparsity == 0.5
    # Same kind: still merged key by key.
    assert deep_merge({"s": {"kind": "a", "x": 1}}, {"s": {"kind": "a", "y": 2}}) == {"s": {"kind": "a", "x": 1, "y": 2}}


@pytest.mark.parametrize("schedule, needle", [
    # pydantic puts the union's tag into the path (prune.schedule.polynomial_decay.power);
    # the message shows the key the user writes and the keys allowed for that kind.
    ("{kind: polynomial_decay, inital_sparsity: 0.1}",
     "unknown key 'prune.schedule.inital_sparsity'; did you mean 'prune.schedule.initial_sparsity'?"),
    ("{kind: polynomial_decay, power: 0}", "'prune.schedule.power': Input should be greater than 0"),
    ("{kind: constant, power: 2}", "unknown key 'prune.schedule.power'; allowed here: kind"),
    ("{power: 2}", "'prune.schedule': needs a kind, one of constant, polynomial_decay; e.g. prune.schedule: {kind: constant}"),
    ("{kind: linear}", "'prune.schedule': kind 'linear' is not one of constant, polynomial_decay"),
    ("linear", "kind 'linear' is not one of constant, polynomial_decay"),
])
def test_schedule_errors_name_the_key_the_user_writes(tmp_path, schedule, needle):
    message = error_of(write(tmp_path, "r.yaml", f"name: r\nprune: {{schedule: {schedule}}}\n"))
    assert needle in message and "polynomial_decay." not in message, message


def test_a_schedule_may_be_named_by_its_kind_alone(tmp_path):
    recipe = load_recipe(write(tmp_path, "r.yaml", "name: r\nprune: {schedule: constant}\n"))
    assert recipe.prune.schedule.kind == "constant"


def test_a_bad_inherited_value_names_the_parent_that_set_it(tmp_path):
    write(tmp_path, "parent.yaml", "name: p\nprune: {sparsity: 1.5}\n")
    message = error_of(write(tmp_path, "child.yaml", "extends: parent.yaml\nname: c\n"))
    assert message.startswith(f"{tmp_path / 'child.yaml'}: 'prune.sparsity' (set in {tmp_path / 'parent.yaml'})"), message


def test_m_by_n_written_as_strings_still_sets_its_sparsity(tmp_path):
    """The pair is converted as the field converts it before its M/N is compared with
    prune.sparsity: ["1", "4"] beside sparsity 0.9 used to pass and record 0.9."""
    assert load_recipe(write(tmp_path, "a.yaml", 'name: a\nprune: {m_by_n: ["1", "4"]}\n')).prune.sparsity == 0.25
    assert "sets the sparsity to 0.25" in error_of(write(tmp_path, "b.yaml", 'name: b\nprune: {m_by_n: ["1", "4"], sparsity: 0.9}\n'))
    # An impossible pair is reported as such, also beside `sparsity: null`.
    assert "need 1 <= M < N <= 64" in error_of(write(tmp_path, "c.yaml", "name: c\nprune: {m_by_n: [2, 128], sparsity: null}\n"))


def test_m_by_n_replaces_a_sparsity_set_further_away(tmp_path):
    """M:N fixes the sparsity; a parent's (or the file's, under --set) prune.sparsity yields to
    the pair the user wrote nearer, instead of sending them to edit the parent."""
    from edgecnn.recipe import inherited_settings

    write(tmp_path, "parent.yaml", "name: p\nprune: {sparsity: 0.5}\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\nname: c\nprune: {m_by_n: [1, 4]}\n")
    assert load_recipe(child).prune.sparsity == 0.25
    assert "prune.sparsity" not in inherited_settings(load_recipe(child))  # 0.25 is the child's, not the parent's
    parent = tmp_path / "parent.yaml"
    assert load_recipe(parent, ["prune.m_by_n=[1, 8]"]).prune.sparsity == 0.125
    # Both written in the same place and disagreeing: refused.
    assert "sets the sparsity to 0.125" in error_of(parent, ["prune.m_by_n=[1, 8]", "prune.sparsity=0.5"])
    own = write(tmp_path, "own.yaml", "extends: parent.yaml\nname: o\nprune: {m_by_n: [1, 4], sparsity: 0.5}\n")
    assert "sets the sparsity to 0.25" in error_of(own)


def test_a_folder_is_not_a_recipe(tmp_path):
    (tmp_path / "sub").mkdir()
    assert "is a folder" in error_of(tmp_path / "sub")
    message = error_of(write(tmp_path, "r.yaml", "extends: sub\nname: r\n"))
    assert "extends 'sub', which is a folder" in message, message


def test_validate_says_which_layer_names_it_left_to_the_build(tmp_path):
    """Layer names need the student built in TensorFlow, which validate never imports: it
    says they are checked at build start rather than calling them valid."""
    from helpers import run_edgecnn

    recipe = write(tmp_path, "r.yaml", f"extends: {REPO / 'recipes' / 'quickstart_prune_qat.yaml'}\nname: r\n"
                   "prune: {exclude: [no_such_layer]}\nqat: {keep_float: [Conv1]}\n")
    proc = run_edgecnn("validate", str(recipe), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == ("  layer names in prune.exclude, qat.keep_float are checked against "
                                            "the student when the build starts")
    plain = run_edgecnn("validate", str(REPO / "recipes" / "quickstart_prune_qat.yaml"), timeout=120)
    assert plain.returncode == 0 and "layer names" not in plain.stdout
