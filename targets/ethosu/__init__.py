"""Arm Ethos-U target: the int8 .tflite compiled by Arm's Vela, with its cycle and memory estimates."""
