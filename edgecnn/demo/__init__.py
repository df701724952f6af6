"""Camera demo: classify frames from a camera, a video file or a folder of images.

* :mod:`edgecnn.demo.core` -- pure pieces: input lookup tables, preprocessing, top-k,
  smoothed FPS. numpy only (and OpenCV's resize), testable on any host.
* :mod:`edgecnn.demo.app` -- frame sources, the model and its metadata, overlay, video
  and JSON-lines output, the loop (``edgecnn demo``).

Importing this package imports neither OpenCV nor TensorFlow.
"""
