"""Export: TFLite conversion, metadata, Edge TPU compile and inspection of .tflite files."""
