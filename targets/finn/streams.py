"""FINN's packing of folded tensors into AXI-stream beats, and back: what a layer's RTL reads and writes.

Streams follow FINN's packing (`finn.util.data_packing.npy_to_rtlsim_input`): the folded shape's last
axis (PE / SIMD elements) is one beat, element 0 in the least significant bits, two's complement for
signed types, BIPOLAR -1 / +1 as bit 0 / 1, the beat padded with zeros to whole bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdk.errors import SimulationError


@dataclass(frozen=True)
class Stream:
    """One AXI stream of a layer: `beats` per sample, each holding `elements` values of `datatype`."""

    port: str  # e.g. in0_V: the RTL has <port>_TDATA, _TVALID, _TREADY
    datatype: object  # qonnx DataType
    elements: int
    beats: int

    @property
    def bits(self) -> int:
        return self.elements * self.datatype.bitwidth()

    @property
    def padded_bits(self) -> int:
        return -(-self.bits // 8) * 8


def storage_bytes(width: int) -> int:
    """Bytes Verilator holds a port of `width` bits in (CData, SData, IData, QData, or 32-bit words)."""
    for limit, size in ((8, 1), (16, 2), (32, 4), (64, 8)):
        if width <= limit:
            return size
    return 4 * -(-width // 32)


def pack_beats(values: np.ndarray, datatype, beat_bytes: int) -> np.ndarray:
    """(beats, elements) integers of `datatype` -> (beats, beat_bytes) uint8, little-endian, element 0 lowest."""
    values = np.asarray(values, dtype=np.int64)
    bits = datatype.bitwidth()
    if datatype.name == "BIPOLAR":
        values = (values + 1) // 2
    unsigned = values & ((1 << bits) - 1)  # two's complement of signed values
    shifts = np.arange(bits, dtype=np.int64)
    bit_planes = ((unsigned[..., None] >> shifts) & 1).astype(np.uint8).reshape(len(values), -1)
    total = beat_bytes * 8
    if bit_planes.shape[1] > total:
        raise SimulationError(
            f"A beat of {values.shape[1]} x {datatype.name} needs {bit_planes.shape[1]} bits; the port holds {total}.",
            fix="the stream widths of the node and its RTL disagree; regenerate the layer's sources",
        )
    padded = np.zeros((len(values), total), dtype=np.uint8)
    padded[:, : bit_planes.shape[1]] = bit_planes
    return np.packbits(padded, axis=1, bitorder="little")


def unpack_beats(data: np.ndarray, datatype, elements: int) -> np.ndarray:
    """(beats, beat_bytes) uint8 -> (beats, elements) int64 values of `datatype` (the inverse of pack_beats)."""
    bits = datatype.bitwidth()
    bit_planes = np.unpackbits(np.asarray(data, dtype=np.uint8), axis=1, bitorder="little")
    fields = bit_planes[:, : elements * bits].reshape(len(data), elements, bits).astype(np.int64)
    unsigned = (fields << np.arange(bits, dtype=np.int64)).sum(axis=-1)
    if datatype.name == "BIPOLAR":
        return 2 * unsigned - 1
    if datatype.signed():
        return np.where(unsigned >= 1 << (bits - 1), unsigned - (1 << bits), unsigned)
    return unsigned
