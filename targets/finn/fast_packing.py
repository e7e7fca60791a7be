"""FINN's weight and threshold packing, vectorised: the same hex strings, without a Python loop per value.

FINN writes every weight and threshold file of its HLS and RTL layers through
finn.util.data_packing.pack_innermost_dim_as_hex_string, which builds each row's hex string one value at a time
with bitstring. On a CNV that is most of code generation (about a second of a four-second deploy), and it grows
with the weight count. `installed()` swaps in `pack_innermost_dim_as_hex_string` below for the duration of code
generation. It returns exactly FINN's strings for integer, binary and bipolar data (tests/test_fast_packing.py
compares the two on every width and option); anything else (float and fixed-point data, widths over 32 bits,
values the datatype does not allow, a pad that is not whole hex digits) goes to FINN's own function, so its
results and errors are FINN's.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_ROWS_PER_BLOCK = 1 << 14  # bounds the bit matrix of one block to rows x pad bytes


def pack_innermost_dim_as_hex_string(
    ndarray: Any, dtype: Any, pad_to_nbits: int, reverse_inner: bool = False, prefix: str = "0x"
) -> np.ndarray:
    """FINN's function of the same name and signature: each innermost row packed into one hex string, the first
    value in the most significant bits, padded with leading zeros to pad_to_nbits (at least 4)."""
    from finn.util import data_packing

    original = _ORIGINAL.get("function") or data_packing.pack_innermost_dim_as_hex_string
    values = _integer_rows(ndarray, dtype, pad_to_nbits)
    if values is None:
        return original(ndarray, dtype, pad_to_nbits, reverse_inner=reverse_inner, prefix=prefix)
    rows, bits = values
    if reverse_inner:
        rows = rows[:, ::-1]
    pad = max(pad_to_nbits, 4)
    digits = np.concatenate(
        [
            _hex_digits(rows[start : start + _ROWS_PER_BLOCK], bits, pad)
            for start in range(0, len(rows), _ROWS_PER_BLOCK)
        ]
    )
    width = pad // 4
    text = np.ascontiguousarray(digits).view(f"S{width}")[:, 0].astype(f"U{width}")
    return np.char.add(prefix, text).astype(f"U{len(prefix) + width}").reshape(np.shape(ndarray)[:-1])


def _integer_rows(ndarray: Any, dtype: Any, pad_to_nbits: int) -> tuple[np.ndarray, int] | None:
    """(rows of unsigned bit patterns as int64, bits per value), or None where FINN's own function must decide."""
    array = np.asarray(ndarray, dtype=np.float32)
    if array.ndim == 0 or array.size == 0 or not dtype.is_integer() or dtype.is_fixed_point():
        return None
    if dtype.name == "BIPOLAR":
        array = (array + 1) / 2  # FINN packs -1 as 0 and +1 as 1, checked as BINARY
        low, high, bits = 0, 1, 1
    else:
        low, high, bits = dtype.min(), dtype.max(), dtype.bitwidth()
    pad = max(pad_to_nbits, 4)
    if bits > 32 or pad % 4 or array.shape[-1] * bits > pad:
        return None
    if not (np.all(np.abs(array) < 2.0**40) and np.all(array == np.round(array))):  # NaN and inf fail too
        return None
    rows = array.reshape(-1, array.shape[-1]).astype(np.int64)  # exact: float32 holds whole numbers to 2**32
    if rows.min() < low or rows.max() > high:  # in integers: 2**32 - 1 as float32 is 2**32, out of UINT32
        return None
    return rows & ((1 << bits) - 1), bits  # two's complement in `bits`


def _hex_digits(rows: np.ndarray, bits: int, pad: int) -> np.ndarray:
    """The ASCII hex digits of each row (rows x pad/4 bytes): values MSB first, leading zeros up to `pad` bits."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    row_bits = ((rows[:, :, None] >> shifts) & 1).astype(np.uint8).reshape(len(rows), -1)
    padded = np.zeros((len(rows), pad), dtype=np.uint8)
    padded[:, pad - row_bits.shape[1] :] = row_bits
    nibbles = padded.reshape(len(rows), pad // 4, 4) @ np.array([8, 4, 2, 1], dtype=np.uint8)
    return _HEX_DIGITS[nibbles]


_ORIGINAL: dict[str, Any] = {}


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Within the block, FINN's modules pack through the function above (each module that imported FINN's by
    name, and finn.util.data_packing itself, where numpy_to_hls_code looks it up)."""
    from finn.util import data_packing

    original = data_packing.pack_innermost_dim_as_hex_string
    if original is pack_innermost_dim_as_hex_string:  # already installed by an enclosing block
        yield
        return
    _ORIGINAL["function"] = original
    modules = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("finn.") and getattr(module, "pack_innermost_dim_as_hex_string", None) is original
    ]
    for module in modules:
        module.pack_innermost_dim_as_hex_string = pack_innermost_dim_as_hex_string
    try:
        yield
    finally:
        for module in modules:
            module.pack_innermost_dim_as_hex_string = original
        _ORIGINAL.clear()
