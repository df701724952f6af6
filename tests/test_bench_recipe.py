"""The recipe's ``bench`` section and the pipeline's ``bench`` stage.

The stage is run on its own, on the tiny benchmark model and a toy test split, with two
targets: ``local`` (measures, with device-side accuracy) and an SSH target on a closed
port (fails; recorded, not fatal). A whole build is not needed to check it.
"""

from __future__ import annotations

import getpass
import json
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import free_port, toy_band_data

from edgecnn.artifacts import Artifact
from edgecnn.bench.schema import load_results
from edgecnn.errors import RecipeError
from edgecnn.pipeline import BuildContext, planned_stages
from edgecnn.progress import Progress
from edgecnn.recipe import load_recipe, validate_recipe


def _recipe(tmp_path, text: str, overrides=()):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\n" + text)
    return load_recipe(path, overrides)


def _error(tmp_path, text: str) -> str:
    with pytest.raises(RecipeError) as info:
        _recipe(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------- recipe


def test_bench_section_is_a_typed_list_of_targets(tmp_path):
    r = _recipe(tmp_path, "bench:\n  - {target: local, runs: 20}\n"
                          "  - {target: 'ssh://pi@raspberrypi:2222', remote_python: ~/venv/bin/python, threads: 4}\n")
    local, pi = r.bench
    assert (local.target, local.runs, local.threads, local.warmup, local.samples) == ("local", 20, 1, 10, 500)
    assert (pi.threads, pi.remote_python, pi.identity) == (4, "~/venv/bin/python", None)
    names = [s.name for s in planned_stages(r)]
    assert names[names.index("evaluate") + 1:][-1] == "bench"
    assert "ssh://pi@raspberrypi:2222" in planned_stages(r)[-1].describe(r)


def test_no_bench_targets_means_no_bench_stage(tmp_path):
    for text in ("", "bench: null\n", "bench: []\n"):
        r = _recipe(tmp_path, text)
        assert r.bench == [] and "bench" not in [s.name for s in planned_stages(r)]
    r = _recipe(tmp_path, "", ["bench=[{target: local, samples: 0}]"])
    assert r.bench[0].target == "local" and r.bench[0].samples == 0


@pytest.mark.parametrize("text, needles", [
    ("bench: [{target: corl}]", ("'bench.0.target'", "did you mean 'coral'?")),
    ("bench: [{target: 'ssh://pi@host:99999'}]", ("'bench.0.target'", "port")),
    ("bench: [{target: local, thread: 2}]", ("unknown key 'bench.0.thread'", "did you mean 'bench.0.threads'?")),
    ("bench: [{target: local, runs: 0}]", ("'bench.0.runs'",)),
    ("bench: [{target: 'ssh://pi@h', identity: /no/such/key}]", ("'bench.0.identity'", "does not exist")),
    ("bench: [{runs: 5}]", ("missing required key 'bench.0.target'",)),
    ("bench: {target: local}", ("'bench'",)),
])
def test_bad_bench_section_is_one_line_at_load_time(tmp_path, text, needles):
    message = _error(tmp_path, text + "\n")
    for needle in needles:
        assert needle in message, (needle, message)


def test_bench_changes_only_the_bench_cache_key(tmp_path):
    a = _recipe(tmp_path, "")
    b = _recipe(tmp_path, "bench: [{target: local}]\n")
    assert a.section_hash("evaluate") == b.section_hash("evaluate")
    assert a.section_hash("bench") != b.section_hash("bench")
    assert validate_recipe(b.to_dict()).bench == b.bench  # round-trips


# ----------------------------------------------------------------------------- stage


def test_bench_stage_records_every_target_and_survives_a_failed_one(tmp_path, bench_models):
    from edgecnn.data.preprocess import NormalizationSpec
    from edgecnn.report import render_markdown
    from edgecnn.runtime.interpreter import evaluate_tflite
    from edgecnn.stages import run_bench

    closed = f"ssh://{getpass.getuser()}@127.0.0.1:{free_port()}"
    recipe = validate_recipe({"name": "t", "bench": [
        {"target": "local", "runs": 20, "warmup": 2, "samples": 30},
        {"target": closed, "runs": 5, "samples": 30, "timeout_s": 30}]})
    x, y = toy_band_data(50, seed=3)
    pixels = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    normalization = NormalizationSpec((0.0,), (255.0,))
    out = tmp_path / "run"
    out.mkdir()
    ctx = BuildContext(recipe, out, Progress(quiet=True))
    ctx.__dict__["dataset"] = SimpleNamespace(x_test=pixels, y_test=y, normalization=normalization)
    ctx.artifacts.add(Artifact("model.tflite.int8", "tflite", bench_models["int8"], "0" * 64, "int8", "litert"),
                      "quantize")

    result = run_bench(recipe, ctx)

    samples = out / "bench_samples_30.npz"
    assert [(a.role, a.kind, a.path, a.name) for a in result.artifacts] == [
        ("bench_samples.30", "npz", samples, "bench_samples_30")]
    with np.load(samples) as npz:
        assert npz["x"].shape == (30, 12, 12, 1) and npz["x"].dtype == np.float32
        np.testing.assert_array_equal(npz["y"], y[:30])
    local, remote = result.metrics["results"]
    assert result.metrics["failed"] == 1
    assert local["status"] == "ok" and local["samples"] == 30
    expected = evaluate_tflite(bench_models["int8"], normalization.apply(pixels[:30]), y[:30], num_threads=1)
    assert local["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert remote["status"] == "failed" and "cannot reach" in remote["reason"]
    # bench.jsonl holds both, as `edgecnn bench --out RUN_DIR` would have written them.
    assert [r["target"] for r in load_results(out)] == ["local", closed]
    json.dumps(result.metrics)  # goes into the stage record and report.json as it is
    md = render_markdown({"recipe": "t", "recipe_hash": "0" * 64, "created_at": "now", "total_wall_s": 1.0,
                          "models": [], "stages": [], "bench": result.metrics["results"]})
    assert "## On-device benchmarks" in md and "| local | `tiny_int8.tflite` |" in md
    assert f"| {closed} | `tiny_int8.tflite` | - | - | failed: cannot reach" in md
