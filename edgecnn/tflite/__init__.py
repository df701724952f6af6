"""The TFLite file format, below every layer that handles .tflite files.

* :mod:`edgecnn.tflite.reader` -- the one bounded flatbuffer reader (inspect, summaries,
  Edge TPU detection, and the TFLite metadata flatbuffer).
* :mod:`edgecnn.tflite.metadata` -- edgecnn metadata inside a .tflite: read and write.

Export, runtime, bench and demo all use this package; it imports none of them (the
import-linter contracts in pyproject.toml check that), and never TensorFlow.
"""
