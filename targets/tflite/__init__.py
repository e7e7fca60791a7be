"""LiteRT (TFLite) target: int8 .tflite files written directly from Brevitas QAT models."""
