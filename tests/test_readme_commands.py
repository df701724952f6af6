"""The README's commands, run through the ``edgecnn`` entry point as a user types them.

One small build (``edgecnn build`` of a recipe with a saved teacher, 100 training images,
one epoch, ``export.bundle: true`` and a ``bench:`` section) is shared by every test here;
each test then runs a documented command on that run directory or its bundle:
``edgecnn build`` again without ``--out`` and with ``--set quantize.io_dtype=uint8`` (the
stages restored from this module's stage cache, so nothing is trained twice), ``edgecnn
bundle``, ``edgecnn verify`` and its tolerance options, ``edgecnn bench`` on this machine
and with ``--inputs``, ``edgecnn compile`` through a fake ``edgetpu_compiler``, ``edgecnn
demo`` on a clip, ``edgecnn data download``, ``--accept-new-host-key`` against a real sshd,
and ``verify`` against a second runtime (x86 tflite-runtime 2.14 from
``tools/tflite_runtime_x86.sh``) over SSH.
"""

from __future__ import annotations

import getpass
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import (FASHION_LABELS, assert_one_line_error, free_port, run_edgecnn, tiny_bundle,
                     write_teacher_path_recipe, write_tiny_run_dir)
from test_bench_ssh import _start_sshd, _stop

from edgecnn.bundle_layout import BUNDLE_MANIFEST
from edgecnn.data import fashion_mnist
from edgecnn.fileio import sha256_file

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(fashion_mnist.locate_fashion_mnist(None, download=False) is None,
                                reason="Fashion-MNIST not found (edgecnn data download fashion_mnist)")

BENCH_SAMPLES = 20
TAIL = f"""\
quantize: {{io_dtype: int8}}
export: {{formats: [float32], bundle: true}}
bench:
  - {{target: local, runs: 5, warmup: 1, samples: {BENCH_SAMPLES}}}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """``edgecnn build recipe.yaml --out run``: the run directory every test here reads."""
    work = tmp_path_factory.mktemp("readme")
    recipe = write_teacher_path_recipe(work, "readme", seed=7, test_limit=40, tail=TAIL)
    proc = run_edgecnn("build", str(recipe), "--out", str(work / "run"), "-q")
    assert proc.returncode == 0, proc.stderr
    return work / "run"


@pytest.fixture(scope="module")
def module_cache(built) -> str:
    """The stage cache ``built`` filled: conftest gives module fixtures one per module, and each
    test an empty one of its own, so a test that rebuilds the recipe passes this one on."""
    return os.environ["EDGECNN_CACHE"]


@pytest.fixture(scope="module")
def bundle_all(built, tmp_path_factory) -> Path:
    """``edgecnn bundle RUN --out DIR --model all --samples 16``: int8 and float32 with golden files."""
    out = tmp_path_factory.mktemp("bundles") / "all"
    proc = run_edgecnn("bundle", str(built), "--out", str(out), "--model", "all", "--samples", "16")
    assert proc.returncode == 0, proc.stderr
    return out


def _models(bundle: Path) -> list[str]:
    return [m["file"] for m in json.loads((bundle / BUNDLE_MANIFEST).read_text())["models"]]


# ------------------------------------------------------------------------ build with bench:


def test_a_recipe_bench_section_measures_every_tflite_with_device_side_accuracy(built):
    """`bench: [{target: local, ...}]` in the recipe: `edgecnn build` adds a bench stage that
    measures every `.tflite` of the run on the test images it sends along."""
    from edgecnn.bench.schema import load_results

    results = load_results(built / "bench.jsonl")
    tflites = sorted(p.name for p in built.glob("*.tflite"))
    assert tflites == ["student_float32.tflite", "student_int8.tflite"]
    assert sorted(Path(r["model"]["path"]).name for r in results) == tflites
    with np.load(built / f"bench_samples_{BENCH_SAMPLES}.npz") as npz:
        x, y = npz["x"], npz["y"]
    assert len(x) == len(y) == BENCH_SAMPLES
    for result in results:
        assert result["status"] == "ok" and result["target"] == "local", result["reason"]
        assert result["samples"] == BENCH_SAMPLES and result["runs"] == 5
        model = built / Path(result["model"]["path"]).name
        assert result["model"]["sha256"] == sha256_file(model)
        # Same runtime and inputs on this host: the device-side accuracy is the host's, exactly.
        from edgecnn.runtime.interpreter import evaluate_tflite

        assert result["accuracy"] == pytest.approx(evaluate_tflite(model, x, y, num_threads=1), abs=1e-12)
    report = json.loads((built / "report.json").read_text())
    assert sorted(Path(r["model"]["path"]).name for r in report["bench"]) == tflites


# ------------------------------------------------------------------------ edgecnn build again


def _stages(run: Path) -> tuple[list[str], list[str]]:
    """(stages that ran, stages restored) of the last build of ``run``, from its report.json."""
    stages = json.loads((run / "report.json").read_text())["stages"]
    return [s["stage"] for s in stages if not s["cached"]], [s["stage"] for s in stages if s["cached"]]


def test_build_without_out_writes_runs_name_then_io_dtype_uint8_reruns_from_quantize_on(built, module_cache,
                                                                                          tmp_path):
    """`edgecnn build recipes/R.yaml` in a working folder, then `edgecnn build recipes/R.yaml --set
    quantize.io_dtype=uint8` there, with the stage cache `built` filled.

    Without `--out` the run directory is `runs/<recipe name>` under the working directory,
    and every stage is restored from the cache (nothing trains or converts), byte for byte the
    module's build; only `bench` runs, as it is kept per run directory, not in the shared
    cache (it measures devices). The `--set` build re-runs quantize, evaluate and the stages
    that read the int8 model (the bundle, and this recipe's `bench:`), restores data,
    teacher, student and export, and leaves an int8 model with uint8 input and output:
    `edgecnn inspect runs/R/student_int8.tflite --json` says so.
    """
    (tmp_path / "recipes").mkdir()
    shutil.copy(built.parent / "readme.yaml", tmp_path / "recipes" / "readme.yaml")
    env = {"EDGECNN_CACHE": module_cache}
    proc = run_edgecnn("build", "recipes/readme.yaml", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "readme"
    assert "run directory: runs/readme\n" in proc.stdout, proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipes", "runs"]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["readme"] and (run / ".edgecnn-owned").is_file()
    ran, restored = _stages(run)
    assert ran == ["bench"], ran
    assert restored == ["data", "teacher", "student", "export", "quantize", "evaluate", "bundle"], restored
    for name in ("student.keras", "student_float32.tflite", "student_int8.tflite", "evaluation.json",
                 "bundle/student_int8.tflite", "bundle/golden_int8.npz"):
        assert sha256_file(run / name) == sha256_file(built / name), name
    float32, keras = sha256_file(run / "student_float32.tflite"), sha256_file(run / "student.keras")

    proc = run_edgecnn("build", "recipes/readme.yaml", "--set", "quantize.io_dtype=uint8", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    ran, restored = _stages(run)
    assert ran == ["quantize", "evaluate", "bundle", "bench"], ran
    assert restored == ["data", "teacher", "student", "export"], restored
    assert sha256_file(run / "student_float32.tflite") == float32 and sha256_file(run / "student.keras") == keras
    assert sha256_file(run / "bundle" / "student_int8.tflite") == sha256_file(run / "student_int8.tflite")
    output = (proc.stdout + proc.stderr).splitlines()  # the result table once, though evaluate re-ran
    for model in ("student_int8.tflite", "student_float32.tflite"):
        assert len([ln for ln in output if model in ln and "test accuracy" in ln]) == 1, proc.stdout + proc.stderr
    assert len([ln for ln in output if ln.startswith("report:")]) == 1, proc.stdout + proc.stderr
    inspected = run_edgecnn("inspect", "runs/readme/student_int8.tflite", "--json", cwd=tmp_path, timeout=120)
    assert inspected.returncode == 0, inspected.stderr
    data = json.loads(inspected.stdout)
    assert [t["dtype"] for t in data["inputs"] + data["outputs"]] == ["UINT8", "UINT8"], data["inputs"]
    assert data["tflite_metadata"]["labels"] == list(FASHION_LABELS)


# ------------------------------------------------------------------------ edgecnn bundle


def test_bundle_writes_new_folder_then_needs_force_to_replace_it(built, tmp_path):
    """`edgecnn bundle RUN --out DIR` (int8 by default), then `--model all` refused without
    `--force` and written with it, then `--model float32 --force`."""
    out = tmp_path / "quickstart_bundle"
    proc = run_edgecnn("bundle", str(built), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"bundle: {out}" in proc.stdout
    assert _models(out) == ["student_int8.tflite"]
    assert sha256_file(out / "student_int8.tflite") == sha256_file(built / "student_int8.tflite")
    assert (out / "labels.txt").read_text().splitlines() == list(FASHION_LABELS)
    assert {"runner.py", "README.md", "golden_int8.npz", "metadata.json"} <= {p.name for p in out.iterdir()}
    before = sha256_file(out / BUNDLE_MANIFEST)

    refused = run_edgecnn("bundle", str(built), "--out", str(out), "--model", "all")
    assert refused.returncode == 7 and "--force" in refused.stderr, refused.stderr
    assert sha256_file(out / BUNDLE_MANIFEST) == before

    forced = run_edgecnn("bundle", str(built), "--out", str(out), "--model", "all", "--force")
    assert forced.returncode == 0, forced.stderr
    assert _models(out) == ["student_int8.tflite", "student_float32.tflite"]
    assert (out / "golden_float32.npz").is_file()

    only_float = run_edgecnn("bundle", str(built), "--out", str(out), "--model", "float32", "--force")
    assert only_float.returncode == 0, only_float.stderr
    assert _models(out) == ["student_float32.tflite"] and not (out / "student_int8.tflite").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["quickstart_bundle"]  # no temporary folder left


# ------------------------------------------------------------------------ edgecnn verify


def _rewrite_golden(bundle: Path, name: str, change) -> None:
    """Change the golden outputs of ``name`` and record the new sha256, as a device with
    other rounding (or other results) would look to verify."""
    with np.load(bundle / name) as npz:
        arrays = dict(npz)
    arrays["outputs"] = change(arrays["outputs"])
    np.savez(bundle / name, **arrays)
    manifest = json.loads((bundle / BUNDLE_MANIFEST).read_text())
    manifest["files"][name]["sha256"] = sha256_file(bundle / name)
    (bundle / BUNDLE_MANIFEST).write_text(json.dumps(manifest))


def _verify(bundle: Path, *options: str) -> subprocess.CompletedProcess:
    return run_edgecnn("verify", str(bundle), *options, timeout=300)


def test_verify_is_bit_exact_on_this_host(bundle_all):
    proc = _verify(bundle_all, "--exact")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("OK, bit-exact: 16 golden outputs identical") == 2, proc.stdout


def test_verify_exact_and_tolerance_steps_decide_on_int8_outputs(bundle_all, tmp_path):
    """One golden int8 value 3 steps off: passes the default tolerance, fails `--exact`,
    passes `--tolerance-steps 3` and fails `--tolerance-steps 2`."""
    bundle = Path(shutil.copytree(bundle_all, tmp_path / "b"))

    def three_steps(o):
        o = o.astype(np.int16)
        o[5, 1] = o[5, 1] + 3 if o[5, 1] <= 124 else o[5, 1] - 3
        return o.astype(np.int8)

    _rewrite_golden(bundle, "golden_int8.npz", three_steps)
    default = _verify(bundle)
    assert default.returncode == 0 and "within tolerance: 1 of 16 golden outputs differ" in default.stdout, \
        default.stdout
    exact = _verify(bundle, "--exact")
    assert exact.returncode == 5 and "student_int8.tflite" in exact.stdout and "FAILED" in exact.stdout
    assert _verify(bundle, "--tolerance-steps", "3").returncode == 0
    tight = _verify(bundle, "--tolerance-steps", "2")
    assert tight.returncode == 5 and "beyond the tolerance (2 steps" in tight.stdout, tight.stdout


def test_verify_float_tolerance_decides_on_float_outputs(bundle_all, tmp_path):
    """Golden float32 outputs 1e-3 off: beyond the default (~1e-4 for this depth), within
    `--float-tolerance 2e-3`, beyond `--float-tolerance 5e-4`."""
    bundle = Path(shutil.copytree(bundle_all, tmp_path / "b"))
    _rewrite_golden(bundle, "golden_float32.npz", lambda o: o + np.float32(1e-3))
    assert _verify(bundle).returncode == 5
    loose = _verify(bundle, "--float-tolerance", "2e-3", "--json")
    assert loose.returncode == 0, loose.stdout
    float32 = json.loads(loose.stdout)["models"][1]
    assert float32["file"] == "student_float32.tflite" and float32["tolerance"] == pytest.approx(2e-3)
    assert float32["max_abs_diff"] == pytest.approx(1e-3, rel=1e-2)
    assert _verify(bundle, "--float-tolerance", "5e-4").returncode == 5


def test_verify_min_top1_decides_on_top1_agreement(bundle_all, tmp_path):
    """Golden int8 outputs whose top-1 class is moved on 4 of 16 samples (agreement 0.75),
    with `--tolerance-steps 255` so that only top-1 decides: `--min-top1 0.75` passes,
    `--min-top1 0.8` and the default 0.9 fail."""
    bundle = Path(shutil.copytree(bundle_all, tmp_path / "b"))

    def move_top1(o):
        o = o.astype(np.int16)
        for r in range(4):
            first, second = np.argsort(o[r])[::-1][:2]
            if o[r, first] == 127:
                o[r, first] = 126
            o[r, second] = o[r, first] + 1
        return o.astype(np.int8)

    _rewrite_golden(bundle, "golden_int8.npz", move_top1)
    passes = _verify(bundle, "--tolerance-steps", "255", "--min-top1", "0.75", "--json")
    assert passes.returncode == 0, passes.stdout
    assert json.loads(passes.stdout)["models"][0]["top1_agreement"] == pytest.approx(0.75)
    fails = _verify(bundle, "--tolerance-steps", "255", "--min-top1", "0.8")
    assert fails.returncode == 5 and "top-1" in fails.stdout, fails.stdout
    assert _verify(bundle, "--tolerance-steps", "255").returncode == 5


# ------------------------------------------------------------------------ edgecnn bench --inputs


def test_bench_with_the_bundles_golden_inputs_reports_device_side_accuracy(built, bundle_all, tmp_path):
    """`edgecnn bench M --target local --inputs BUNDLE/golden_int8.npz --out RUN`: the
    accuracy equals that of the golden outputs on their labels (same runtime, same inputs)."""
    from edgecnn.bench.schema import load_results

    out = tmp_path / "results.jsonl"
    proc = run_edgecnn("bench", str(built / "student_int8.tflite"), "--target", "local", "--runs", "5",
                       "--warmup", "1", "--inputs", str(bundle_all / "golden_int8.npz"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with np.load(bundle_all / "golden_int8.npz") as golden:
        expected = float((golden["outputs"].argmax(-1) == golden["y"]).mean())
    (result,) = load_results(out)
    assert result["status"] == "ok" and result["samples"] == 16
    assert result["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert f"accuracy {expected * 100:.2f}% on " in proc.stdout, proc.stdout


def test_bench_on_this_machine_prints_latency_percentiles_init_and_peak_rss(built):
    """`edgecnn bench $M` with no option: 10 warm-up and 100 timed runs on this machine, printed
    as latency percentiles, init time and peak RSS."""
    import re

    proc = run_edgecnn("bench", str(built / "student_int8.tflite"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("local: student_int8.tflite on ai-edge-litert "), proc.stdout
    latency = next(ln for ln in lines if ln.strip().startswith("latency ms over 100 runs:"))
    figures = dict(re.findall(r"(p50|p90|p99|min|max) (\d+\.\d+)", latency))
    p50, p90, p99, low, high = (float(figures[k]) for k in ("p50", "p90", "p99", "min", "max"))
    assert 0 < low <= p50 <= p90 <= p99 <= high, latency
    extra = next(ln for ln in lines if "peak RSS" in ln)
    assert re.search(r"init \d+\.\d ms", extra) and re.search(r"peak RSS [1-9]\d*\.\d MiB", extra), extra


# ------------------------------------------------------------------------ edgecnn demo


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """clip.mp4: 12 frames of 160x120, Fashion-MNIST test images centred (OpenCV's mp4v writer)."""
    import cv2

    from edgecnn.data import load_fashion_mnist

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    assert writer.isOpened()
    for image in load_fashion_mnist().x_test[:12, ..., 0]:
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:, 20:140] = cv2.resize(image, (120, 120))[..., None]
        writer.write(frame)
    writer.release()
    return path


def _frames(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_demo_on_a_clip_writes_the_annotated_video_and_one_log_line_per_frame(built, bundle_all, clip, tmp_path):
    """`edgecnn demo --model RUN/student_int8.tflite --source clip.mp4 --headless --out
    annotated.mp4 --log frames.jsonl`, and the same with `--model BUNDLE_DIR`: the same
    model file, so the same predictions on every frame."""
    import cv2

    by_file = run_edgecnn("demo", "--model", str(built / "student_int8.tflite"), "--source", str(clip),
                          "--headless", "--out", str(tmp_path / "annotated.mp4"), "--log", str(tmp_path / "frames.jsonl"),
                          cwd=tmp_path, timeout=300)
    assert by_file.returncode == 0, by_file.stderr
    frames = _frames(tmp_path / "frames.jsonl")
    assert len(frames) == 12
    for frame in frames:
        predictions = frame["predictions"]
        assert len(predictions) == 3 and all(p["label"] in FASHION_LABELS for p in predictions)
        scores = [p["score"] for p in predictions]
        assert scores == sorted(scores, reverse=True)
    video = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    count = 0
    while True:
        ok, image = video.read()
        if not ok:
            break
        assert image.shape == (120, 160, 3)
        count += 1
    video.release()
    assert count == 12

    bundle_log = tmp_path / "bundle_frames.jsonl"
    by_bundle = run_edgecnn("demo", "--model", str(bundle_all), "--source", str(clip), "--headless",
                            "--log", str(bundle_log), timeout=300)
    assert by_bundle.returncode == 0, by_bundle.stderr
    assert [f["predictions"] for f in _frames(bundle_log)] == [f["predictions"] for f in frames]


# ------------------------------------------------------------------------ edgecnn data download


def test_data_download_finds_the_copy_already_there(tmp_path):
    """`edgecnn data download fashion_mnist` with the files in $EDGECNN_DATA: prints that
    folder and downloads nothing."""
    folder = tmp_path / "fmnist"
    folder.mkdir()
    source = fashion_mnist.locate_fashion_mnist(None, download=False)
    for name in fashion_mnist.FILES:
        found = fashion_mnist.find_files(source)[name]
        (folder / found.name).symlink_to(found)
    home = tmp_path / "home"
    proc = run_edgecnn("data", "download", "fashion_mnist", env={"EDGECNN_DATA": str(folder), "HOME": str(home),
                                                                 "KERAS_HOME": str(home / ".keras")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fashion_mnist: {folder}"
    assert not home.exists()


def test_data_download_from_a_mirror(tmp_path, http_dir):
    """`edgecnn data download fashion_mnist --url URL --to DIR` against a local HTTP server
    serving the installed copy (the Debian package's re-gzipped files: the pinned sha256 is of
    the decompressed content, so they pass like Google's archives would). The build's route
    through `$EDGECNN_DATA_URL` is tested in test_data.py, where the system folder can be
    hidden."""
    source = fashion_mnist.locate_fashion_mnist(None, download=False)
    served = tmp_path / "mirror"
    served.mkdir()
    for name in fashion_mnist.FILES:
        found = fashion_mnist.find_files(source)[name]
        if found.name != name:  # an uncompressed copy: serve it as the .gz a mirror holds
            (served / name).write_bytes(gzip.compress(found.read_bytes()))
        else:
            (served / name).symlink_to(found)
    url = http_dir(served)
    to = tmp_path / "downloaded"
    proc = run_edgecnn("data", "download", "fashion_mnist", "--url", url, "--to", str(to))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fashion_mnist: {to}"
    assert sorted(p.name for p in to.iterdir()) == sorted(fashion_mnist.FILES)
    assert fashion_mnist.load_fashion_mnist(to).x_test.shape == (10000, 28, 28, 1)

    # A mirror serving a tampered file: one line naming its URL, exit 3, nothing written.
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for name in fashion_mnist.FILES:
        (tampered / name).symlink_to(served / name)
    labels = fashion_mnist.FILES[3]
    (tampered / labels).unlink()
    content = bytearray(gzip.decompress((served / labels).read_bytes()))
    content[-1] = (content[-1] + 1) % 10  # one test label changed
    (tampered / labels).write_bytes(gzip.compress(bytes(content)))
    bad_to = tmp_path / "bad"
    proc = run_edgecnn("data", "download", "fashion_mnist", "--url", http_dir(tampered), "--to", str(bad_to))
    assert_one_line_error(proc, 3, "sha256 mismatch", labels)
    assert sorted(p.name for p in bad_to.iterdir()) == sorted(fashion_mnist.FILES[:3])  # the three good ones only


# ------------------------------------------------------------------------ a second runtime


@pytest.fixture(scope="module")
def x86_tflite_runtime(tmp_path_factory):
    """`bash tools/tflite_runtime_x86.sh build && ... start`: an x86 tflite-runtime 2.14 "old
    Pi" (numpy<2) behind its own sshd on 127.0.0.1. The venv is kept between runs in
    ~/.cache/edgecnn-tests (pip needs the package index only the first time)."""
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        pytest.skip("no OpenSSH server (apt-get install openssh-server)")
    folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgecnn-tests" / "x86-tflite-runtime"
    env = {**os.environ, "EDGECNN_X86_TFLITE_DIR": str(folder), "EDGECNN_X86_TFLITE_PORT": str(free_port())}
    script = REPO / "tools" / "tflite_runtime_x86.sh"
    # stop first: an sshd left by an interrupted run would hold the folder on another port.
    for step in ("build", "stop", "start"):
        proc = subprocess.run(["bash", str(script), step], capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, f"tflite_runtime_x86.sh {step}: {proc.stdout}{proc.stderr}"
    settings = dict(line.split("=", 1) for line in (folder / "device.env").read_text().splitlines()
                    if line and not line.startswith("#"))
    yield settings
    subprocess.run(["bash", str(script), "stop"], capture_output=True, text=True, timeout=60, env=env, check=True)


def test_verify_against_x86_tflite_runtime_2_14(x86_tflite_runtime, tmp_path):
    """`edgecnn verify BUNDLE --target ssh://... --remote-python ~/venv/bin/python`, the device
    running tflite-runtime 2.14: a tiny classifier's int8 and float32 outputs within verify's
    tolerance, so a change that breaks int8 agreement with that older runtime fails here.

    The bundle is helpers.tiny_bundle (4 operators, tolerance 6 steps), not this module's
    build: its one-epoch MobileNet student is near chance (12.5 %), and its near-tied int8
    outputs differ on tflite-runtime 2.14 by up to 39 steps with top-1 0.62 (measured
    2026-12-06), which says nothing about a trained model (the quickstart student: 18 steps).
    """
    s = x86_tflite_runtime
    bundle = tiny_bundle(tmp_path, samples=16, seed=11)
    assert s["EDGECNN_X86_TFLITE_HOST"].startswith(f"ssh://{getpass.getuser()}@127.0.0.1:")
    proc = run_edgecnn("verify", str(bundle), "--target", s["EDGECNN_X86_TFLITE_HOST"], "--remote-python",
                       s["EDGECNN_X86_TFLITE_PYTHON"], "--identity", s["EDGECNN_X86_TFLITE_IDENTITY"],
                       "--known-hosts", s["EDGECNN_X86_TFLITE_KNOWN_HOSTS"], "--json", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and [m["file"] for m in report["models"]] == ["student_int8.tflite", "student_float32.tflite"]
    for model in report["models"]:
        assert model["runtime"].startswith("tflite-runtime 2.14"), model
        assert model["golden_runtime"].startswith("ai-edge-litert"), model
        assert model["samples"] == 16 and model["top1_agreement"] >= model["min_top1"]
    int8 = report["models"][0]
    assert int8["max_steps"] <= int8["tolerance_steps"]


def test_bench_on_local_and_ssh_targets_with_inputs_into_a_run_directory(built, x86_tflite_runtime, tmp_path):
    """The README's two-target line: `edgecnn bench $M --target local --target ssh://... --remote-python
    ... --inputs BUNDLE/golden_int8.npz --out RUN` (plus the test device's key files): one
    result per target appended to RUN/bench.jsonl, each with device-side accuracy on the
    same 16 samples, and each target's runtime named (ai-edge-litert here, tflite-runtime
    2.14 over SSH). The tiny bundle, not this module's near-chance student, as above."""
    from edgecnn.bench.schema import load_results

    s = x86_tflite_runtime
    bundle = tiny_bundle(tmp_path, samples=16, seed=12)
    model = bundle / "student_int8.tflite"
    run = tmp_path / "bench_run"  # a run directory of the user's (tiny_bundle's own is tmp_path/run)
    run.mkdir()
    proc = run_edgecnn("bench", str(model), "--target", "local", "--target", s["EDGECNN_X86_TFLITE_HOST"],
                       "--remote-python", s["EDGECNN_X86_TFLITE_PYTHON"], "--identity", s["EDGECNN_X86_TFLITE_IDENTITY"],
                       "--known-hosts", s["EDGECNN_X86_TFLITE_KNOWN_HOSTS"], "--inputs", str(bundle / "golden_int8.npz"),
                       "--out", str(run), "--runs", "5", "--warmup", "1", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = load_results(run / "bench.jsonl")
    assert [r["target"] for r in results] == ["local", s["EDGECNN_X86_TFLITE_HOST"]]
    with np.load(bundle / "golden_int8.npz") as golden:
        expected = float((golden["outputs"].argmax(-1) == golden["y"]).mean())
    for result in results:
        assert result["status"] == "ok" and result["samples"] == 16, result
    assert results[0]["accuracy"] == pytest.approx(expected, abs=1e-12)  # same runtime as the goldens
    # The old runtime's int8 kernels round differently (verify allows 6 steps on this model):
    # at most one of 16 top-1 decisions may differ.
    assert abs(results[1]["accuracy"] - expected) <= 1 / 16 + 1e-12
    assert "tflite-runtime" in json.dumps(results[1]) and "2.14" in json.dumps(results[1])


# ------------------------------------------------------------------------ --accept-new-host-key


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 (test_bench_ssh's), logging in this user with a test key."""
    proc, log, server = _start_sshd(tmp_path_factory.mktemp("sshd"), sftp=True)
    yield server
    _stop(proc, log)


def test_accept_new_host_key_on_the_bench_and_verify_command_lines(built, bundle_all, sshd, tmp_path):
    """`edgecnn bench $M --target ssh://... --accept-new-host-key` and `edgecnn verify BUNDLE
    --target ssh://... --accept-new-host-key`, each with a known_hosts file that does not know the
    server: without the flag bench fails naming it and records nothing; with it both log in
    (bench measures, verify is bit-exact: the device's Python is this one) and the server's key
    is recorded. The device's Python is this venv's, in place of the README's
    '~/venv/bin/python'."""
    o = sshd.options
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    ssh = ["--remote-python", o.remote_python, "--identity", str(o.identity), "--known-hosts", str(known_hosts)]
    model = str(built / "student_int8.tflite")
    refused = run_edgecnn("bench", model, "--target", sshd.target, *ssh, "--runs", "5", "--warmup", "0",
                          timeout=300)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "not in known_hosts" in refused.stdout and "--accept-new-host-key" in refused.stdout, refused.stdout
    assert known_hosts.read_text() == ""

    proc = run_edgecnn("bench", model, "--target", sshd.target, *ssh, "--accept-new-host-key", "--runs", "5",
                       "--warmup", "0", "--json", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "ok" and result["target"] == sshd.target and result["runs"] == 5, result
    assert result["details"]["transport"] == "ssh"
    assert result["model"]["sha256"] == sha256_file(built / "student_int8.tflite")
    assert sshd.host_key_pub in known_hosts.read_text()

    fresh = tmp_path / "known_hosts_verify"
    fresh.write_text("")
    verified = run_edgecnn("verify", str(bundle_all), "--target", sshd.target, "--remote-python", o.remote_python,
                           "--identity", str(o.identity), "--known-hosts", str(fresh), "--accept-new-host-key",
                           "--json", timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and [m["file"] for m in report["models"]] == ["student_int8.tflite", "student_float32.tflite"]
    assert all(m["bit_exact"] and m["samples"] == 16 for m in report["models"]), report["models"]
    assert sshd.host_key_pub in fresh.read_text()


# ------------------------------------------------------------------------ edgecnn compile

FAKE_COMPILER = Path(__file__).resolve().parent / "fakes" / "edgetpu_compiler.py"


@pytest.fixture(scope="module")
def fake_edgetpu_compiler(tmp_path_factory) -> dict:
    """Environment with tests/fakes/edgetpu_compiler.py first on PATH as ``edgetpu_compiler``."""
    bin_dir = tmp_path_factory.mktemp("fake-compiler")
    script = bin_dir / "edgetpu_compiler"
    script.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{FAKE_COMPILER}' \"$@\"\n")
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_compile_for_the_edge_tpu_then_bench_it_on_a_coral_as_written(built, fake_edgetpu_compiler, tmp_path):
    """`edgecnn compile $M --target edgetpu --fail-on-cpu-ops`, then `edgecnn bench
    runs/quickstart/student_int8_edgetpu.tflite --target coral:usb`, in a working folder
    holding this module's int8 model at the README's path ($M given as its absolute path: see
    the next test for the relative one).

    No real edgetpu_compiler can be installed here (Google's apt repository, no network), so a
    FAKE one is first on PATH: tests/fakes/edgetpu_compiler.py takes the real command line,
    prints and logs in the real compiler's formats, maps every operation and writes a real
    TFLite file whose graph is one `edgetpu-custom-op`. Checked: the compile succeeds under
    --fail-on-cpu-ops, writes the model, its report and log beside the source (the default
    output folder), the output holds the custom op with the source's I/O tensors and keeps its
    labels; the bench line (and `--target coral`, any Edge TPU) then reaches the Edge TPU
    delegate loader on the compiled file and, with no Edge TPU runtime installed, fails naming
    the library and the package that installs it (exit 5).

    What only the real compiler and an Edge TPU prove: which operations the compiler really
    maps (and so whether --fail-on-cpu-ops passes for this MobileNet), that the op's executable
    runs on the TPU, its latency and numerics (device_tests/test_coral.py).
    """
    from edgecnn.tflite.metadata import read_metadata
    from edgecnn.tflite.reader import inspect_tflite

    run = tmp_path / "runs" / "quickstart"
    run.mkdir(parents=True)
    source = Path(shutil.copy(built / "student_int8.tflite", run))
    proc = run_edgecnn("compile", str(source), "--target", "edgetpu", "--fail-on-cpu-ops",
                       cwd=tmp_path, env=fake_edgetpu_compiler, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in run.iterdir()) == ["student_int8.tflite", "student_int8_edgetpu.json",
                                                      "student_int8_edgetpu.log", "student_int8_edgetpu.tflite"]
    compiled = run / "student_int8_edgetpu.tflite"
    before, after = inspect_tflite(source), inspect_tflite(compiled)
    assert after.op_counts == {"edgetpu-custom-op": 1} and after.custom_ops == ("edgetpu-custom-op",)
    assert after.inputs == before.inputs and after.outputs == before.outputs
    assert read_metadata(compiled)["labels"] == list(FASHION_LABELS)
    total = sum(before.op_counts.values())
    assert f"operations: {total} total, {total} on the Edge TPU, 0 on the CPU" in proc.stdout, proc.stdout
    report = json.loads((run / "student_int8_edgetpu.json").read_text())
    assert report["cpu_fallback_ops"] == [] and report["output_model"] == compiled.name

    for target in ("coral:usb", "coral"):  # the code block's, and the text's `--target coral`
        coral = run_edgecnn("bench", "runs/quickstart/student_int8_edgetpu.tflite", "--target", target,
                            cwd=tmp_path, timeout=300)
        assert coral.returncode == 5, coral.stdout + coral.stderr
        out = coral.stdout + coral.stderr
        assert "student_int8_edgetpu.tflite" in out and "libedgetpu.so.1" in out and "libedgetpu1-std" in out, out
        assert ("'usb'" in out) == (target == "coral:usb") and "Traceback" not in coral.stderr, out


def test_compile_with_the_readmes_relative_model_path(built, fake_edgetpu_compiler, tmp_path):
    """`M=runs/quickstart/student_int8.tflite; edgecnn compile $M --target edgetpu --fail-on-cpu-ops`
    with $M relative to the working folder, exactly as the README writes it (this failed: the
    compiler's temporary folder resolved twice), and with a relative --out."""
    run = tmp_path / "runs" / "quickstart"
    run.mkdir(parents=True)
    shutil.copy(built / "student_int8.tflite", run)
    proc = run_edgecnn("compile", "runs/quickstart/student_int8.tflite", "--target", "edgetpu", "--fail-on-cpu-ops",
                       cwd=tmp_path, env=fake_edgetpu_compiler, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from edgecnn.tflite.reader import inspect_tflite

    assert inspect_tflite(run / "student_int8_edgetpu.tflite").custom_ops == ("edgetpu-custom-op",)
    proc = run_edgecnn("compile", "runs/quickstart/student_int8.tflite", "--target", "edgetpu", "--out", "compiled",
                       cwd=tmp_path, env=fake_edgetpu_compiler, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert inspect_tflite(tmp_path / "compiled" / "student_int8_edgetpu.tflite").custom_ops == ("edgetpu-custom-op",)
    assert not list(tmp_path.rglob(".tmp-*"))


# ------------------------------------------------------------------------ bundle --model float16


def test_bundle_of_the_float16_model_alone_then_verify(tmp_path):
    """`edgecnn bundle RUN --out DIR --model float16` (the README's `--model int8|float32|float16|all`;
    the module's build has no float16 model, so a run directory of the tiny classifier in three
    precisions, whose golden images come from the Fashion-MNIST test split), then `edgecnn
    verify DIR`: only the float16 model and its golden file, bit-exact on this host."""
    run = write_tiny_run_dir(tmp_path / "run", ("int8", "float32", "float16"), recipe=True)
    out = tmp_path / "f16_bundle"
    proc = run_edgecnn("bundle", str(run), "--out", str(out), "--model", "float16", "--samples", "8")
    assert proc.returncode == 0, proc.stderr
    assert _models(out) == ["student_float16.tflite"]
    assert sha256_file(out / "student_float16.tflite") == sha256_file(run / "student_float16.tflite")
    assert {p.name for p in out.glob("*.tflite")} == {"student_float16.tflite"}
    assert [p.name for p in out.glob("golden_*.npz")] == ["golden_float16.npz"]
    verified = run_edgecnn("verify", str(out), timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK, bit-exact: 8 golden outputs identical" in verified.stdout, verified.stdout


# ----------------------------------------------------------------- commands that need hardware
#
# No phone, Coral or camera can exist on a CI machine: these run the README's lines as
# written and check the one thing they can prove here, that each reaches the real program
# (adb, the Edge TPU delegate loader, OpenCV's camera) and fails in one line naming the
# device and the fix, exit 5. What only the hardware proves (latency, delegate placement,
# frames) is in device_tests/.


def test_bench_on_an_android_phone_as_written_names_the_missing_phone(built, tmp_path):
    """``edgecnn bench $M --target android:R58M123ABC --benchmark-binary android_aarch64_benchmark_model``
    with the real adb and no phone attached. The benchmark binary is a stand-in file (never
    run: the phone check comes first)."""
    assert shutil.which("adb"), "adb is installed by `bash tools/dev.sh test`"
    (tmp_path / "android_aarch64_benchmark_model").write_bytes(b"\x7fELF")
    proc = run_edgecnn("bench", str(built / "student_int8.tflite"), "--target", "android:R58M123ABC",
                       "--benchmark-binary", "android_aarch64_benchmark_model", cwd=tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert "Android device 'R58M123ABC' is not attached" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_on_camera_0_as_written_names_the_missing_camera(built, bundle_all):
    """``edgecnn demo --model quickstart_bundle --source 0`` on a machine with no camera."""
    proc = run_edgecnn("demo", "--model", str(bundle_all), "--source", "0")
    assert proc.returncode == 5, proc.stderr
    assert "camera 0 cannot be opened" in proc.stderr and "/dev/video" in proc.stderr
    assert "Traceback" not in proc.stderr
