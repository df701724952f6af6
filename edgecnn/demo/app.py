"""The camera demo's I/O: frame sources, the model with its labels, overlay, outputs, loop.

``edgecnn demo --model MODEL_OR_BUNDLE --source SOURCE`` classifies every frame and
draws the top-k labels, the inference time and a smoothed FPS on it; in a window (q or
Esc quits) or headless, writing an annotated video (``--out``) and one JSON line per
frame (``--log``). Both are written under ``.tmp-`` names and renamed into place when
the run ends (end of source, ``--max-frames``, q, Ctrl-C); a failed run (an error, a full
disk) leaves neither, and an existing file is replaced only if the demo wrote it.

Labels and normalization come from the model's TFLite metadata; without it, from the
``metadata.json`` of a bundle or the ``dataset.json`` of a run directory beside the
model. OpenCV is needed (``pip install 'edgecnn[demo]'``); TensorFlow is not.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecnn.bundle_layout import BUNDLE_MANIFEST, BUNDLE_METADATA, load_bundle_metadata, read_bundle_json
from edgecnn.demo.core import FpsMeter, InputTransform, dequantize, top_k
from edgecnn.errors import DataError, DeviceError, FilesystemError, MissingDependencyError, ModelFileError
from edgecnn.fileio import atomic_path

__all__ = ["DemoModel", "DemoSummary", "FrameSource", "load_demo_model", "open_source", "run_demo"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
WINDOW = "edgecnn demo"
# A camera that returns this many failed reads in a row has stopped delivering frames.
_CAMERA_FAILED_READS = 30


def _cv2():
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("the camera demo needs OpenCV; pip install 'edgecnn[demo]' "
                                     "(opencv-python-headless)") from None
    if not os.environ.get("EDGECNN_DEBUG"):
        # OpenCV logs a WARN line per failed open; the demo's own error already says it.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    return cv2


# --------------------------------------------------------------------------- the model


@dataclass
class DemoModel:
    """An interpreter with what is needed to feed it frames and name its outputs."""

    path: Path
    interpreter: Any
    transform: InputTransform
    input_index: int
    output: Any  # IoSpec
    labels: list[str]
    info_source: str  # where labels and normalization were read


def _model_info(path: Path) -> tuple[list[str], list[float], list[float], str]:
    """(labels, mean, std, source) for ``path``, from the first place that has them."""
    from edgecnn.tflite.metadata import has_metadata, read_metadata

    if has_metadata(path):
        meta = read_metadata(path)
        if meta["labels"] and meta["mean"] is not None:
            return meta["labels"], meta["mean"], meta["std"], "TFLite metadata"
    if (path.parent / BUNDLE_METADATA).is_file():
        data = load_bundle_metadata(path.parent)
        return (*_labels_and_normalization(data, "classes", path.parent / BUNDLE_METADATA),
                str(path.parent / BUNDLE_METADATA))
    dataset = path.parent / "dataset.json"
    if dataset.is_file():
        data = read_bundle_json(dataset, "re-run 'edgecnn build' to write it again")
        return (*_labels_and_normalization(data, "class_names", dataset), str(dataset))
    raise ModelFileError(f"{path}: no labels or normalization: the model has no TFLite metadata and no bundle "
                         f"{BUNDLE_METADATA} or run dataset.json lies beside it; re-export it with 'edgecnn build' "
                         "or pass a bundle folder")


def _labels_and_normalization(data: dict, labels_key: str, source: Path) -> tuple[list[str], list, list]:
    try:
        return list(data[labels_key]), data["normalization"]["mean"], data["normalization"]["std"]
    except (KeyError, TypeError):
        raise ModelFileError(f"{source}: lacks {labels_key} or normalization.mean/std; "
                             "re-create it with edgecnn") from None


def _resolve_model(model: str | os.PathLike) -> Path:
    path = Path(model)
    if path.is_dir():
        manifest = path / BUNDLE_MANIFEST
        if not manifest.is_file():
            raise ModelFileError(f"{path}: a folder passed as --model must be an edgecnn bundle ({BUNDLE_MANIFEST}); "
                                 "pass the .tflite file instead")
        models = read_bundle_json(manifest, "re-create the bundle with 'edgecnn bundle'").get("models") or []
        if not isinstance(models, list) or not models or not isinstance(models[0], dict) or "file" not in models[0]:
            raise ModelFileError(f"{manifest}: lists no model; re-create the bundle")
        return path / models[0]["file"]
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file or bundle folder; check the path")
    return path


def load_demo_model(model: str | os.PathLike, threads: int | None = None, delegate: str | None = None) -> DemoModel:
    """Load a ``.tflite`` (or a bundle's model) and how to feed and read it.

    Raises:
        ModelFileError: missing model, not a one-input image classifier, or no labels
            and normalization anywhere.
        DeviceError: the delegate does not load.
    """
    from edgecnn.runtime.interpreter import input_specs, make_interpreter, output_specs

    path = _resolve_model(model)
    labels, mean, std, source = _model_info(path)
    interpreter = make_interpreter(path, delegate=delegate, threads=threads)
    ins, outs = input_specs(interpreter), output_specs(interpreter)
    if len(ins) != 1 or len(ins[0].shape) != 4:
        raise ModelFileError(f"{path}: the demo runs image classifiers with one (1, H, W, C) input; "
                             f"this model has inputs {[s.shape for s in ins]}")
    classes = int(np.prod(outs[0].shape[1:]))
    if classes != len(labels):
        raise ModelFileError(f"{path}: the model has {classes} output scores but {len(labels)} labels "
                             f"({source}); the labels belong to another model")
    return DemoModel(path, interpreter, InputTransform.for_model(ins[0], mean, std), ins[0].index, outs[0],
                     list(labels), source)


# --------------------------------------------------------------------------- sources


class FrameSource:
    """Frames from a camera, a video file or a folder of images (BGR uint8)."""

    def __init__(self, name: str, live: bool, fps: float, reader: Callable[[], np.ndarray | None],
                 close: Callable[[], None] = lambda: None):
        self.name, self.live, self.fps = name, live, fps
        self._read, self._close = reader, close
        self.frames = 0

    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end of a file or folder.

        Raises:
            DeviceError: a camera stopped delivering frames.
        """
        frame = self._read()
        if frame is not None:
            self.frames += 1
        return frame

    def close(self) -> None:
        self._close()


def open_source(source: str) -> FrameSource:
    """Open ``source``: a camera index (``0``), ``/dev/videoN``, a video file or an image folder.

    Raises:
        DeviceError: the camera cannot be opened.
        DataError: a missing path, a file that is not a decodable video, an empty folder.
    """
    cv2 = _cv2()
    text = str(source)
    if text.isdigit() or text.startswith("/dev/video"):
        return _open_camera(cv2, text)
    path = Path(text)
    if path.is_dir():
        return _open_folder(cv2, path)
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder; pass a camera index (0), /dev/videoN, a video file "
                        "or a folder of images")
    return _open_video(cv2, path)


def _open_camera(cv2, text: str) -> FrameSource:
    from edgecnn._tf import native_stderr_silenced

    with native_stderr_silenced():
        cap = cv2.VideoCapture(int(text) if text.isdigit() else text)
    if not cap.isOpened():
        cap.release()
        raise DeviceError(f"camera {text} cannot be opened; check that it is connected and not used by another "
                          "program (ls /dev/video*), and that you may access it (group 'video')")
    failures = [0]

    def read():
        while True:
            ok, frame = cap.read()
            if ok and frame is not None:
                failures[0] = 0
                return frame
            failures[0] += 1
            if failures[0] >= _CAMERA_FAILED_READS:
                raise DeviceError(f"camera {text} stopped delivering frames ({_CAMERA_FAILED_READS} failed reads in "
                                  "a row); check the cable and power, then restart the demo")
            time.sleep(0.01)

    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    return FrameSource(f"camera {text}", True, float(fps), read, cap.release)


def _open_video(cv2, path: Path) -> FrameSource:
    from edgecnn._tf import native_stderr_silenced  # stdlib only; TensorFlow is not imported

    # FFmpeg prints its own complaint ("moov atom not found") about a file it cannot
    # decode; the one line below says the same with the fix.
    with native_stderr_silenced():
        cap = cv2.VideoCapture(str(path))
        ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        raise DataError(f"{path}: not a video OpenCV can decode; pass a video file (mp4, avi, mkv), a folder of "
                        "images or a camera index")
    pending = [first]

    def read():
        if pending:
            return pending.pop()
        ok, frame = cap.read()
        return frame if ok else None

    fps = cap.get(cv2.CAP_PROP_FPS)
    return FrameSource(str(path), False, float(fps) if fps and fps > 0 else 30.0, read, cap.release)


def _open_folder(cv2, path: Path) -> FrameSource:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
    queue = list(reversed(files))

    def read():
        if not queue:
            return None
        f = queue.pop()
        frame = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if frame is None:
            raise DataError(f"{f}: not an image OpenCV can read; remove it from the folder")
        return frame

    return FrameSource(str(path), False, 5.0, read)


# --------------------------------------------------------------------------- drawing


def draw_overlay(cv2, frame: np.ndarray, classes, inference_ms: float, fps: float, box) -> None:
    """Top-k labels with scores, inference time and FPS, and the region the model sees."""
    x, y, w, h = box
    if (w, h) != frame.shape[1::-1]:
        cv2.rectangle(frame, (x, y), (x + w - 1, y + h - 1), (255, 255, 255), 1)
    scale = max(0.4, frame.shape[0] / 720)
    lines = [f"{c.label} {c.score:.2f}" for c in classes] or ["(below threshold)"]
    lines.append(f"infer {inference_ms:.1f} ms  {fps:.1f} FPS")
    step = int(28 * scale) + 4
    width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t in lines) + 12
    # A darkened panel keeps the text readable on any picture; an outlined (thick
    # anti-aliased) font would cost 10x more per frame.
    panel = frame[4:min(frame.shape[0], 12 + step * len(lines)), 4:min(frame.shape[1], 4 + width)]
    panel //= 3
    for i, text in enumerate(lines):
        cv2.putText(frame, text, (10, 6 + step * (i + 1) - 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255) if i else (0, 255, 255), 1, cv2.LINE_AA)


# --------------------------------------------------------------------------- the loop


@dataclass
class DemoSummary:
    """What a demo run did (means over frames, in milliseconds)."""

    model: str
    source: str
    info_source: str
    frames: int = 0
    wall_s: float = 0.0
    fps: float = 0.0
    mean_ms: dict = field(default_factory=dict)
    overhead_share: float | None = None  # (capture + preprocess + draw) / total
    stopped_by: str = "end of source"

    def to_dict(self) -> dict:
        return asdict(self)


# Set on every video the demo writes, so a re-run may replace its own file (and only that).
_VIDEO_MARK = "user.edgecnn"


def _is_demo_log(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline(1 << 16)
        record = json.loads(first)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and {"frame", "predictions", "total_ms"} <= set(record)


def _is_demo_video(path: Path) -> bool:
    try:
        return os.getxattr(path, _VIDEO_MARK) == b"demo"
    except (OSError, AttributeError):  # no xattrs on this file system (or OS)
        return False


def check_output_paths(out: str | os.PathLike | None, log: str | os.PathLike | None) -> None:
    """Refuse, before anything runs, a ``--out`` or ``--log`` that would replace a user's file.

    An existing file is replaced only when the demo wrote it (a log whose first line is
    a demo record; a video carrying edgecnn's extended attribute). Nothing is created.

    Raises:
        FilesystemError: the path is a folder, the same path is given twice, or an
            existing file there is not the demo's.
    """
    paths = {"--out": Path(out) if out is not None else None, "--log": Path(log) if log is not None else None}
    if paths["--out"] is not None and paths["--out"] == paths["--log"]:
        raise FilesystemError(f"--out and --log are both {paths['--out']}; give two different files")
    for option, path in paths.items():
        if path is None or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir():
            raise FilesystemError(f"{option} {path}: is a folder; give a file path")
        ours = _is_demo_video(path) if option == "--out" else _is_demo_log(path)
        if not ours or path.is_symlink():
            raise FilesystemError(f"{option} {path}: exists and was not written by 'edgecnn demo'; choose a new "
                                  "file name (edgecnn never overwrites what it did not write)")


def _video_writer(cv2, path: Path, fps: float, size: tuple[int, int]):
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise DataError(f"{path}: cannot write a video there; use a .mp4 or .avi path in a writable folder")
    return writer


def _check_video(cv2, tmp: Path, target: Path, frames: int) -> None:
    """Raise unless ``tmp`` reads back as a video of ``frames`` frames.

    OpenCV's writer reports no I/O errors: on a full disk it leaves a truncated file
    and returns normally, so the file is read back before it is renamed into place.
    """
    cap = cv2.VideoCapture(str(tmp))
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    if count >= frames:
        return
    try:
        stats = os.statvfs(tmp.parent)
        full = stats.f_bavail * stats.f_frsize < (1 << 20)
    except OSError:
        full = False
    if full:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    raise FilesystemError(f"--out {target}: the video could not be written completely ({count} of {frames} frames "
                          "read back); check the folder and the free space, or use .avi")


def run_demo(model: str | os.PathLike, source: str, top: int = 3, threshold: float = 0.0,
             threads: int | None = None, delegate: str | None = None, headless: bool = False,
             out: str | os.PathLike | None = None, log: str | os.PathLike | None = None,
             max_frames: int | None = None) -> DemoSummary:
    """Classify frames from ``source`` until it ends, ``max_frames``, q/Esc or Ctrl-C.

    Per-frame timings (milliseconds, ``time.perf_counter``): ``capture_ms`` (reading and
    decoding the frame; for a camera this includes waiting for it), ``preprocess_ms``
    (crop, resize, normalize, quantize), ``inference_ms`` (set input, invoke, read
    output), ``draw_ms`` (top-k and overlay), ``output_ms`` (video encoding, window),
    ``total_ms`` (all of it, the frame's wall time).

    Returns:
        A :class:`DemoSummary`.

    Raises:
        EdgecnnError subclasses, each one line: model, source, camera or output problems.
    """
    cv2 = _cv2()
    check_output_paths(out, log)
    demo = load_demo_model(model, threads=threads, delegate=delegate)
    src = open_source(source)
    summary = DemoSummary(str(demo.path), src.name, demo.info_source)
    if not headless:
        try:
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        except cv2.error:
            src.close()
            raise MissingDependencyError("this OpenCV build has no GUI (opencv-python-headless, or no display); "
                                         "run with --headless --out annotated.mp4, or pip install opencv-python") from None
    meter = FpsMeter()
    sums = dict.fromkeys(("capture_ms", "preprocess_ms", "inference_ms", "draw_ms", "output_ms", "total_ms"), 0.0)
    clock = time.perf_counter
    start = clock()
    # Both outputs are written under .tmp- names and renamed into place when the run
    # ends (also by q, --max-frames or Ctrl-C); an error removes them, so a failed run
    # leaves no half video or log that looks complete.
    with contextlib.ExitStack() as outputs:
        log_file = None
        if log is not None:
            log_file = outputs.enter_context(open(outputs.enter_context(atomic_path(log)), "w", encoding="utf-8"))
        video_tmp = outputs.enter_context(atomic_path(out)) if out is not None else None
        try:
            _classify_frames(cv2, demo, src, summary, sums, meter, headless, top, threshold, max_frames,
                             video_tmp, log_file)
        finally:
            src.close()
            if not headless:
                cv2.destroyAllWindows()
        if video_tmp is not None and not summary.frames:
            raise DataError(f"{src.name}: gave no frames, so there is no video to write to {out}")
        if video_tmp is not None:
            _check_video(cv2, video_tmp, Path(out), summary.frames)
            with contextlib.suppress(OSError):  # no xattrs here: a re-run will refuse to replace it
                os.setxattr(video_tmp, _VIDEO_MARK, b"demo")
        if log_file is not None:
            log_file.flush()
            os.fsync(log_file.fileno())
    summary.wall_s = round(clock() - start, 3)
    n = max(summary.frames, 1)
    summary.mean_ms = {k: round(v / n, 3) for k, v in sums.items()}
    summary.fps = round(summary.frames / summary.wall_s, 2) if summary.wall_s > 0 else 0.0
    if sums["total_ms"] > 0:
        summary.overhead_share = round((sums["capture_ms"] + sums["preprocess_ms"] + sums["draw_ms"])
                                       / sums["total_ms"], 4)
    return summary


def _classify_frames(cv2, demo: DemoModel, src: FrameSource, summary: DemoSummary, sums: dict, meter: FpsMeter,
                     headless: bool, top: int, threshold: float, max_frames: int | None, video: Path | None,
                     log_file) -> None:
    """The frame loop of :func:`run_demo`; fills ``summary`` and ``sums`` in place."""
    interpreter, spec = demo.interpreter, demo.output
    clock = time.perf_counter
    writer = None
    try:
        fps = 0.0
        while max_frames is None or summary.frames < max_frames:
            t0 = clock()
            frame = src.read()
            t1 = clock()
            if frame is None:
                break
            x = demo.transform(frame)
            t2 = clock()
            interpreter.set_tensor(demo.input_index, x)
            interpreter.invoke()
            raw = interpreter.get_tensor(spec.index)
            t3 = clock()
            classes = top_k(dequantize(raw, spec), demo.labels, top, threshold)
            draw_overlay(cv2, frame, classes, (t3 - t2) * 1e3, fps,
                         demo.transform.crop_box(*frame.shape[:2]))
            t4 = clock()
            key = -1
            if video is not None:
                if writer is None:
                    size = (frame.shape[1], frame.shape[0])
                    writer = _video_writer(cv2, video, src.fps, size)
                if (frame.shape[1], frame.shape[0]) != size:
                    frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
                writer.write(frame)
            if not headless:
                cv2.imshow(WINDOW, frame)
                key = cv2.waitKey(1) & 0xFF
            t5 = clock()
            times = {"capture_ms": t1 - t0, "preprocess_ms": t2 - t1, "inference_ms": t3 - t2, "draw_ms": t4 - t3,
                     "output_ms": t5 - t4, "total_ms": t5 - t0}
            times = {k: v * 1e3 for k, v in times.items()}
            fps = meter.update(times["total_ms"])
            for k, v in times.items():
                sums[k] += v
            summary.frames += 1
            if log_file is not None:
                record = {"frame": summary.frames - 1,
                          "predictions": [{"index": c.id, "label": c.label, "score": c.score} for c in classes],
                          **{k: round(v, 3) for k, v in times.items()}, "fps": round(fps, 2)}
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()  # a full disk shows up at this frame, not at the end
            if key in (ord("q"), 27):
                summary.stopped_by = "key"
                break
        else:
            summary.stopped_by = "max frames"
    except KeyboardInterrupt:
        summary.stopped_by = "interrupted"
    finally:
        if writer is not None:
            writer.release()  # finalizes the container, also after Ctrl-C


def format_summary(summary: DemoSummary) -> str:
    """One paragraph for people."""
    m = summary.mean_ms
    lines = [f"{summary.frames} frames from {summary.source} in {summary.wall_s:.1f} s ({summary.fps:.1f} FPS), "
             f"stopped by {summary.stopped_by}; labels from {summary.info_source}"]
    if summary.frames:
        lines.append("mean per frame: " + ", ".join(f"{k.removesuffix('_ms')} {v:.2f} ms" for k, v in m.items()))
        lines.append(f"capture + preprocess + draw: {summary.overhead_share * 100:.1f} % of the frame time")
    return "\n".join(lines)
