"""Runtime: loading a TFLite interpreter (ai-edge-litert, tflite-runtime or TensorFlow) and running it."""
