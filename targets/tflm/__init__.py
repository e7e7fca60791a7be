"""TFLite Micro target: int8 .tflite run on the real TFLM interpreter, with its tensor arena measured."""
