"""Export: Keras -> TFLite conversion, Edge TPU compile and deploy bundles.

The TFLite file format itself (reading, metadata) is :mod:`edgecnn.tflite`, below this layer.
"""
