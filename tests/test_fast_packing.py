"""The vectorised packing returns FINN's own hex strings, and FINN's answer wherever it does not apply."""

from __future__ import annotations

import numpy as np
import pytest
from finn.util import data_packing
from qonnx.core.datatype import DataType

from targets.finn import fast_packing

INTEGER_TYPES = ["BIPOLAR", "BINARY", "TERNARY", "UINT2", "UINT3", "UINT8", "UINT17", "UINT32"]
INTEGER_TYPES += ["INT2", "INT3", "INT4", "INT8", "INT13", "INT24", "INT32"]


def _values(dtype: DataType, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype.name == "BIPOLAR":
        return rng.choice([-1.0, 1.0], size=shape).astype(np.float32)
    low, high = dtype.min(), dtype.max()
    values = rng.integers(low, high, size=shape, endpoint=True).astype(np.float64)
    values.flat[:2] = [low, high][: values.size]  # the extremes, where two's complement goes wrong first
    return values.astype(np.float32)


@pytest.mark.parametrize("name", INTEGER_TYPES)
@pytest.mark.parametrize("shape", [(5,), (3, 7), (2, 4, 3), (1, 1)])
@pytest.mark.parametrize("reverse", [False, True])
def test_equals_finn_on_every_integer_type(name, shape, reverse):
    dtype = DataType[name]
    x = _values(dtype, shape, np.random.default_rng(len(name) * 31 + len(shape)))
    bits = shape[-1] * dtype.bitwidth()
    for pad, prefix in ((bits, "0x"), (bits + 3, ""), (((bits + 3) // 4) * 4 + 8, "0x"), (2, "")):
        try:
            expected = data_packing.pack_innermost_dim_as_hex_string(
                x, dtype, pad, reverse_inner=reverse, prefix=prefix
            )
        except Exception as finn_error:  # a pad too narrow, or not whole hex digits: our answer is FINN's error
            with pytest.raises(type(finn_error)):
                fast_packing.pack_innermost_dim_as_hex_string(x, dtype, pad, reverse_inner=reverse, prefix=prefix)
            continue
        got = fast_packing.pack_innermost_dim_as_hex_string(x, dtype, pad, reverse_inner=reverse, prefix=prefix)
        assert got.shape == expected.shape and got.dtype == expected.dtype, (got, expected)
        np.testing.assert_array_equal(got, expected)


def test_float_fixed_point_and_disallowed_values_are_finns_own_answer():
    x = np.array([[0.5, -1.25], [3.0, 2.0]], dtype=np.float32)
    for name in ("FLOAT32", "FIXED<8,4>"):
        dtype = DataType[name]
        expected = data_packing.pack_innermost_dim_as_hex_string(x, dtype, 64)
        np.testing.assert_array_equal(fast_packing.pack_innermost_dim_as_hex_string(x, dtype, 64), expected)
    for bad in (np.array([[4.0, 0.0]]), np.array([[0.5, 1.0]]), np.array([[np.nan, 1.0]])):
        with pytest.raises(AssertionError):  # FINN's "value is not permitted by chosen dtype"
            fast_packing.pack_innermost_dim_as_hex_string(bad, DataType["UINT2"], 8)
    with pytest.raises(Exception, match="greater than pad_to_nbits"):
        fast_packing.pack_innermost_dim_as_hex_string(np.ones((2, 3)), DataType["UINT4"], 8)


def test_installed_only_within_the_block_and_finn_code_generation_uses_it():
    from finn.custom_op.fpgadataflow import matrixvectoractivation

    original = data_packing.pack_innermost_dim_as_hex_string
    with fast_packing.installed():
        assert data_packing.pack_innermost_dim_as_hex_string is fast_packing.pack_innermost_dim_as_hex_string
        assert matrixvectoractivation.pack_innermost_dim_as_hex_string is fast_packing.pack_innermost_dim_as_hex_string
        x = _values(DataType["INT4"], (6, 10), np.random.default_rng(0))
        hls = data_packing.numpy_to_hls_code(x, DataType["INT4"], "weights", pack_innermost_dim=True)
    assert data_packing.pack_innermost_dim_as_hex_string is original
    assert matrixvectoractivation.pack_innermost_dim_as_hex_string is original
    assert hls == data_packing.numpy_to_hls_code(x, DataType["INT4"], "weights", pack_innermost_dim=True)


def test_rows_packed_in_blocks_come_out_in_order(monkeypatch):
    monkeypatch.setattr(fast_packing, "_ROWS_PER_BLOCK", 3)  # 7 x 5 rows: blocks of 3, the last one short
    x = _values(DataType["INT3"], (7, 5, 4), np.random.default_rng(9))
    expected = data_packing.pack_innermost_dim_as_hex_string(x, DataType["INT3"], 16, reverse_inner=True)
    np.testing.assert_array_equal(
        fast_packing.pack_innermost_dim_as_hex_string(x, DataType["INT3"], 16, reverse_inner=True), expected
    )
