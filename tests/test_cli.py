"""The CLI: thin, fast (no TensorFlow for --help/validate), one-line errors with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_edgecnn

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return run_edgecnn(*args, cwd=cwd, timeout=120)


def modules_after(argv: list[str]) -> set[str]:
    """Run the CLI in-process in a fresh interpreter and report heavy modules it imported."""
    code = (
        "import sys\n"
        "from edgecnn.cli import main\n"
        "try:\n"
        f"    main({argv!r}, standalone_mode=False)\n"
        "finally:\n"
        "    print('HEAVY=' + ','.join(m for m in ('tensorflow', 'tf_keras', 'keras', 'ai_edge_litert') if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("HEAVY=")][-1]
    return {m for m in line.removeprefix("HEAVY=").split(",") if m}


def test_help_does_not_import_tensorflow():
    assert modules_after(["--help"]) == set()


def test_validate_does_not_import_tensorflow():
    assert modules_after(["validate", "recipes/quickstart.yaml"]) == set()


def test_validate_prints_the_plan():
    proc = run("validate", "recipes/quickstart.yaml")
    assert proc.returncode == 0, proc.stderr
    for stage in ("data", "teacher", "student", "export", "quantize", "evaluate"):
        assert stage in proc.stdout
    plan = json.loads(run("validate", "recipes/quickstart.yaml", "--json").stdout)
    assert [s["name"] for s in plan["stages"]] == ["data", "teacher", "student", "export", "quantize", "evaluate",
                                                   "bundle"]
    assert plan["recipe"]["name"] == "quickstart"


def test_output_into_a_closed_pipe_stops_quietly():
    """``edgecnn validate r.yaml | head -1``: when the reader has gone, no error line and no
    traceback, and the exit status a shell gives a command that SIGPIPE ended (128 + 13)."""
    from helpers import EDGECNN_COMMAND

    proc = subprocess.Popen([EDGECNN_COMMAND, "validate", "recipes/quickstart.yaml"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves before the command writes its first line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, stderr
    assert stderr == "", stderr


def test_validate_without_distillation_skips_the_teacher():
    plan = json.loads(run("validate", "recipes/quickstart.yaml", "--json", "--set", "distill.enabled=false").stdout)
    assert "teacher" not in [s["name"] for s in plan["stages"]]


def test_bad_recipe_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ndistill: {temprature: 2}\n")
    assert_one_line_error(run("validate", str(bad)), 2, "bad.yaml", "did you mean 'distill.temperature'")
    assert_one_line_error(run("build", str(bad), "--out", str(tmp_path / "out")), 2, "bad.yaml")
    assert not (tmp_path / "out").exists(), "a rejected recipe must not create a run directory"


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ndata: [\n")
    proc = run("--debug", "validate", str(bad))
    assert proc.returncode == 2 and "Traceback" in proc.stderr


@pytest.mark.parametrize("content,needle", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "PNG"),
    (b"hello, this is not a model at all" * 4, "TFLite"),
])
def test_inspect_rejects_non_tflite(tmp_path, content, needle):
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    assert_one_line_error(run("inspect", str(path)), 4, "model.tflite", needle)


def test_inspect_missing_file(tmp_path):
    assert_one_line_error(run("inspect", str(tmp_path / "gone.tflite")), 4, "gone.tflite")


def test_schema_is_json_schema():
    """`edgecnn schema` exits 0 with a valid JSON Schema that every shipped recipe (resolved
    through extends:) satisfies, and that refuses what the recipe model refuses."""
    import jsonschema

    from edgecnn.recipe import load_recipe

    proc = run("schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema["title"] == "edgecnn recipe" and {"distill", "prune", "qat"} <= set(schema["properties"])
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    shipped = sorted((REPO / "recipes").glob("*.yaml"))
    assert len(shipped) >= 4
    for path in shipped:
        errors = list(validator.iter_errors(load_recipe(path).to_dict()))
        assert not errors, (path.name, [e.message for e in errors[:3]])
    bad = {**load_recipe(shipped[0]).to_dict(), "prune": {"schedule": {"kind": "cubic"}}}
    assert list(validator.iter_errors(bad))


def test_list_names_registered_models():
    proc = run("list")
    assert "mobilenet_v2" in proc.stdout and "vgg_small" in proc.stdout and "ResNet50" in proc.stdout


def test_missing_dataset_is_one_line_exit_3(tmp_path):
    empty = tmp_path / "my_images"
    empty.mkdir()
    out = tmp_path / "out"
    proc = run("build", "recipes/quickstart.yaml", "--out", str(out), "--quiet",
               "--set", "data.source=image_folder", "--set", f"data.path={empty}")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and "my_images" in errors[0]
    assert not list(out.glob("*.tflite")) and not list(out.glob("*.keras")) and not (out / "report.json").exists()


def test_build_out_under_a_file_is_one_line_exit_7(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert_one_line_error(run("build", "recipes/quickstart.yaml", "--out", str(target / "run")), 7, "notes.txt")
    assert target.read_text() == "mine"


def test_build_help_documents_the_lock():
    proc = run("build", "--help")
    assert proc.returncode == 0 and "--wait / --no-wait" in proc.stdout and "exit 8" in proc.stdout
