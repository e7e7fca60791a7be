"""What every TFLite-reading module needs to agree on: the file identifier and the op and type names.

The writer, the golden model, and the LiteRT, TFLM and Vela wrappers all read
the same flatbuffers with `ai_edge_litert.schema_py_generated`.
"""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema

FILE_IDENTIFIER = b"TFL3"
OP_NAMES: dict[int, str] = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES: dict[int, str] = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def is_tflite(head: bytes) -> bool:
    """A TFLite flatbuffer carries its identifier at bytes 4..8."""
    return len(head) >= 8 and head[4:8] == FILE_IDENTIFIER


def builtin_code(code: schema.OperatorCodeT) -> int:
    """The op of an operator code: the 8-bit deprecated field below 127, the 32-bit field above."""
    return max(code.builtinCode, code.deprecatedBuiltinCode)
