"""Camera demo: pure preprocessing/top-k pieces, and the headless loop on real video.

The video is made of Fashion-MNIST test images; the demo's logged predictions must
equal a direct interpreter run on the same decoded frames, preprocessed independently
here (crop, cv2 resize, NormalizationSpec, quantize_input).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="the demo needs OpenCV (pip install 'edgecnn[demo]')")

from edgecnn.data import NormalizationSpec  # noqa: E402
from edgecnn.demo.core import FpsMeter, InputTransform, make_input_lut, top_k  # noqa: E402
from edgecnn.demo.app import run_demo  # noqa: E402
from edgecnn.errors import DataError, DeviceError, ModelFileError  # noqa: E402
from edgecnn.runtime.interpreter import (  # noqa: E402
    IoSpec,
    dequantize_output,
    input_specs,
    make_interpreter,
    output_specs,
    quantize_input,
)
from helpers import FASHION_LABELS, assert_one_line_error, build_tiny_classifier, run_edgecnn  # noqa: E402

FRAMES = 20


# ---------------------------------------------------------------------------- pure parts


def _spec(dtype="int8", scale=0.0078125, zero_point=-1, shape=(1, 32, 32, 3)):
    return IoSpec("in", 0, shape, shape, np.dtype(dtype), scale, zero_point)


@pytest.mark.parametrize("dtype,scale,zp", [("int8", 0.0078125, -1), ("uint8", 0.02, 128), ("float32", 0.0, 0)])
def test_lookup_table_equals_normalize_then_quantize(dtype, scale, zp):
    spec = _spec(dtype, scale, zp)
    norm = NormalizationSpec((127.5, 100.0, 0.0), (127.5, 64.0, 255.0))
    lut = make_input_lut(norm.mean, norm.std, spec)
    pixels = np.tile(np.arange(256, dtype=np.uint8)[:, None], (1, 3))
    expected = quantize_input(norm.apply(pixels), spec)
    assert lut.dtype == spec.dtype and np.array_equal(lut.T, expected)


def test_top_k_orders_breaks_ties_and_thresholds():
    scores = np.array([0.1, 0.5, 0.2, 0.5, 0.05], np.float32)
    labels = list("abcde")
    assert [c.id for c in top_k(scores, labels, 3)] == [1, 3, 2]
    assert [c.label for c in top_k(scores, labels, 5, threshold=0.2)] == ["b", "d", "c"]
    assert top_k(scores, labels, 2)[0].score == pytest.approx(0.5)


def test_crop_box_keeps_the_inputs_aspect_ratio():
    t = InputTransform(32, 32, 3, np.zeros((3, 256), np.int8))
    assert t.crop_box(480, 640) == (80, 0, 480, 480)
    assert t.crop_box(640, 480) == (0, 80, 480, 480)


def test_fps_meter_smooths():
    meter = FpsMeter(alpha=0.5)
    assert meter.update(10.0) == pytest.approx(100.0)
    assert meter.update(30.0) == pytest.approx(50.0)


# ---------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_classifier(tmp_path_factory.mktemp("model"), "int8")


def _fashion_frames(n: int) -> list[np.ndarray]:
    """640x480 BGR frames: a Fashion-MNIST test image scaled to 480x480, centered."""
    from edgecnn.data import load_fashion_mnist

    images = load_fashion_mnist().x_test[:n, ..., 0]
    frames = []
    for img in images:
        frame = np.zeros((480, 640, 3), np.uint8)
        big = cv2.resize(img, (480, 480), interpolation=cv2.INTER_LINEAR)
        frame[:, 80:560] = big[..., None]
        frame[:, 80:560, 2] = np.clip(big.astype(np.int32) * 3 // 4, 0, 255)  # a color cast, so BGR order matters
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    pytest.importorskip("edgecnn.data.fashion_mnist")
    from edgecnn.data import fashion_mnist

    if fashion_mnist.locate_fashion_mnist(None, download=False) is None:
        pytest.skip("Fashion-MNIST not found (edgecnn data download fashion_mnist)")
    path = tmp_path_factory.mktemp("video") / "fashion.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    assert writer.isOpened()
    for frame in _fashion_frames(FRAMES):
        writer.write(frame)
    writer.release()
    return path


def _reference(model_path, frames, k=3):
    """Top-k per frame, computed without the demo's code."""
    interpreter = make_interpreter(model_path)
    spec, out = input_specs(interpreter)[0], output_specs(interpreter)[0]
    norm = NormalizationSpec((127.5,) * 3, (127.5,) * 3)
    results = []
    for frame in frames:
        h, w = frame.shape[:2]
        side = min(h, w)
        crop = frame[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
        rgb = cv2.cvtColor(cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        interpreter.set_tensor(spec.index, quantize_input(norm.apply(rgb[None]), spec))
        interpreter.invoke()
        scores = dequantize_output(interpreter.get_tensor(out.index), out).reshape(-1)
        order = np.argsort(-scores, kind="stable")[:k]
        results.append([(int(i), FASHION_LABELS[i], float(scores[i])) for i in order])
    return results


def _decode(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def _logged(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_headless_log_equals_direct_interpreter_outputs(model, video, tmp_path):
    out, log = tmp_path / "annotated.mp4", tmp_path / "frames.jsonl"
    summary = run_demo(model, str(video), top=3, headless=True, out=out, log=log)
    assert summary.frames == FRAMES and summary.stopped_by == "end of source"
    assert summary.info_source == "TFLite metadata"
    records = _logged(log)
    assert [r["frame"] for r in records] == list(range(FRAMES))
    expected = _reference(model, _decode(video))
    got = [[(p["index"], p["label"], p["score"]) for p in r["predictions"]] for r in records]
    assert got == expected
    assert len({tuple(g) for g in got}) > 1  # the frames do not all look alike to the model
    for r in records:
        parts = r["capture_ms"] + r["preprocess_ms"] + r["inference_ms"] + r["draw_ms"] + r["output_ms"]
        assert r["total_ms"] == pytest.approx(parts, abs=0.01) and r["fps"] > 0
    assert len(_decode(out)) == FRAMES


def test_max_frames_and_a_folder_of_images(model, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    frames = _fashion_frames(4)
    frames[1] = cv2.resize(frames[1], (320, 300))  # sizes may differ inside a folder
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:02d}.png"), frame)
    (folder / "notes.txt").write_text("ignored")
    log = tmp_path / "f.jsonl"
    summary = run_demo(model, str(folder), headless=True, log=log, out=tmp_path / "f.avi")
    assert summary.frames == 4
    got = [[(p["index"], p["label"], p["score"]) for p in r["predictions"]] for r in _logged(log)]
    assert got == _reference(model, [cv2.imread(str(folder / f"{i:02d}.png")) for i in range(4)])
    assert run_demo(model, str(folder), headless=True, max_frames=2).stopped_by == "max frames"


def test_threshold_hides_low_scores(model, tmp_path):
    log = tmp_path / "t.jsonl"
    folder = tmp_path / "one"
    folder.mkdir()
    frame = _fashion_frames(1)[0]
    cv2.imwrite(str(folder / "a.png"), frame)
    # A threshold between the 3rd and 4th best scores of this frame (computed without the
    # demo) must keep exactly the top 3 of the 10 asked for: an empty list cannot pass.
    ranked = _reference(model, [cv2.imread(str(folder / "a.png"))], k=10)[0]
    scores = [s for _, _, s in ranked]
    assert scores[2] > scores[3], "the 3rd and 4th scores tie; pick another frame"
    threshold = (scores[2] + scores[3]) / 2
    run_demo(model, str(folder), top=10, threshold=threshold, headless=True, log=log)
    shown = [(p["index"], p["label"], p["score"]) for p in _logged(log)[0]["predictions"]]
    assert shown == ranked[:3]


def _demo_cli(*args) -> subprocess.CompletedProcess:
    return run_edgecnn("demo", "--headless", *args, timeout=120)


def test_a_file_that_is_not_a_video_is_one_line(model, tmp_path):
    fake = tmp_path / "clip.mp4"
    fake.write_text("not a video\n" * 100)
    assert_one_line_error(_demo_cli("--model", str(model), "--source", str(fake)), DataError.exit_code,
                          "clip.mp4", "not a video")


def test_a_camera_that_cannot_be_opened_is_one_line(model):
    assert_one_line_error(_demo_cli("--model", str(model), "--source", "97"), DeviceError.exit_code,
                          "camera 97 cannot be opened")


def test_a_model_without_metadata_is_one_line(tmp_path):
    plain = build_tiny_classifier(tmp_path, "int8", metadata=False)
    assert_one_line_error(_demo_cli("--model", str(plain), "--source", "0"), ModelFileError.exit_code,
                          "no labels or normalization")


def test_the_demo_does_not_import_tensorflow(model, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _fashion_frames(1)[0])
    code = ("import sys; from edgecnn.demo.app import run_demo; "
            f"s = run_demo({str(model)!r}, {str(folder)!r}, headless=True); "
            "print(s.frames, 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["1", "False"], proc.stderr


def test_a_grayscale_model_gets_gray_inputs(tmp_path):
    gray = build_tiny_classifier(tmp_path, "uint8", channels=1)
    folder = tmp_path / "imgs"
    folder.mkdir()
    frame = _fashion_frames(1)[0]
    cv2.imwrite(str(folder / "a.png"), frame)
    from edgecnn.demo.app import load_demo_model

    demo = load_demo_model(gray)
    x = demo.transform(frame)
    assert x.shape == (1, 32, 32, 1) and x.dtype == np.uint8
    # The gray value the build would compute (BT.601 on RGB), then the same crop and resize.
    rgb = frame[:, 80:560, ::-1].astype(np.float32)
    expected = np.clip(np.rint(rgb @ np.array([0.2989, 0.5870, 0.1140], np.float32)), 0, 255).astype(np.uint8)
    expected = cv2.resize(expected, (32, 32), interpolation=cv2.INTER_AREA)
    assert np.array_equal(demo.transform.pixels(frame)[..., 0], expected)
    assert run_demo(gray, str(folder), headless=True).frames == 1


# ------------------------------------------------------------------- bundles and delegates


def _bundle(folder, model, manifest, metadata) -> None:
    import shutil

    from edgecnn.bundle_layout import BUNDLE_MANIFEST, BUNDLE_METADATA

    folder.mkdir()
    shutil.copyfile(model, folder / model.name)
    (folder / BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    if metadata is not None:
        (folder / BUNDLE_METADATA).write_text(metadata if isinstance(metadata, str) else json.dumps(metadata))


def test_a_bundle_folder_gives_the_model_and_its_labels(tmp_path):
    from edgecnn.demo.app import load_demo_model

    plain = build_tiny_classifier(tmp_path, "int8", metadata=False)
    labels = [f"c{i}" for i in range(10)]
    meta = {"classes": labels, "normalization": {"mean": [127.5] * 3, "std": [127.5] * 3}}
    _bundle(tmp_path / "b", plain, {"models": [{"file": plain.name}]}, meta)
    demo = load_demo_model(tmp_path / "b", threads=1)
    assert demo.path == tmp_path / "b" / plain.name and demo.labels == labels
    assert demo.info_source == str(tmp_path / "b" / "metadata.json")


@pytest.mark.parametrize("manifest,metadata,needle", [
    ({"models": []}, None, "bundle.json: lists no model; re-create the bundle"),
    ({"models": [{"file": "m.tflite"}]}, "{not json", "metadata.json: unreadable ("),
    ({"models": [{"file": "m.tflite"}]}, ["a list"], "metadata.json: holds a JSON list, not an object"),
    ({"models": [{"file": "m.tflite"}]}, {"classes": ["a"]}, "metadata.json: lacks classes or normalization"),
])
def test_a_broken_bundle_is_one_line(tmp_path, manifest, metadata, needle):
    from helpers import assert_raised_error

    from edgecnn.demo.app import load_demo_model

    plain = build_tiny_classifier(tmp_path, "int8", metadata=False)
    renamed = plain.with_name("m.tflite")
    plain.rename(renamed)
    _bundle(tmp_path / "b", renamed, manifest, metadata)
    with pytest.raises(ModelFileError) as exc:
        load_demo_model(tmp_path / "b")
    assert_raised_error(exc, ModelFileError, needle)


def test_a_delegate_library_that_does_not_load_is_one_clean_line(model, tmp_path, capsys):
    """Through make_interpreter: one DeviceError line, and no "Exception ignored" from Delegate.__del__."""
    import gc

    from helpers import assert_raised_error

    from edgecnn.demo.app import load_demo_model

    missing = tmp_path / "libmissing.so"
    with pytest.raises(DeviceError) as exc:
        load_demo_model(model, delegate=str(missing))
    assert_raised_error(exc, DeviceError, f"cannot load the delegate {missing} (", "check the path")
    del exc
    gc.collect()
    assert "Exception ignored" not in capsys.readouterr().err
