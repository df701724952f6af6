"""Camera demo throughput on a 640x480 video: FPS and where the frame time goes.

    python tools/bench_demo.py [--model /tmp/qs2/student_int8.tflite] [--frames 300] [--threads 2]

Target (issue #4): capture + preprocess + draw <= 20 % of the frame time, i.e. the demo
spends its time in the model, not around it. The video is generated (Fashion-MNIST test
images composited into 640x480 MJPG frames, like a camera at VGA) so the measurement
needs no camera. Headless, without and then with an annotated-video output (encoding
is reported apart as ``output``). Labels come from the model's metadata, or the run
directory's ``dataset.json`` beside it. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

TARGET_SHARE = 0.20


def write_video(path: Path, frames: int) -> Path:
    import cv2

    from edgecnn.data import load_fashion_mnist

    images = load_fashion_mnist().x_test[:frames, ..., 0]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    rng = np.random.RandomState(0)
    for img in images:
        frame = rng.randint(0, 40, (480, 640, 3)).astype(np.uint8)  # sensor-like noise, not flat black
        frame[:, 80:560] = np.maximum(frame[:, 80:560], cv2.resize(img, (480, 480))[..., None])
        writer.write(frame)
    writer.release()
    return path


def main() -> int:
    from edgecnn.demo.app import format_summary, run_demo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/tmp/qs2/student_int8.tflite")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp) / "vga.avi", args.frames)
        results = {}
        for label, out in (("headless", None), ("headless + mp4 out", Path(tmp) / "annotated.mp4")):
            summary = run_demo(args.model, str(video), top=3, threads=args.threads, headless=True, out=out,
                               log=Path(tmp) / "frames.jsonl")
            print(f"== {label}\n{format_summary(summary)}")
            results[label] = summary.to_dict()
    share = results["headless"]["overhead_share"]
    verdict = "PASS" if share <= TARGET_SHARE else "MISS"
    print(f"capture + preprocess + draw = {share * 100:.1f} % of the frame time (headless), "
          f"target <= {TARGET_SHARE * 100:.0f} %  {verdict}")
    print(json.dumps({"model": args.model, "threads": args.threads, "frames": args.frames,
                      "target_share": TARGET_SHARE, "pass": share <= TARGET_SHARE, "runs": results}, indent=2))
    return 0 if share <= TARGET_SHARE else 1


if __name__ == "__main__":
    sys.exit(main())
