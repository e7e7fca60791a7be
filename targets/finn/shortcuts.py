"""The FIFO each residual shortcut needs, so the forked stream cannot deadlock.

DuplicateStreams writes every word to both branches of a residual block at once, and ElementwiseAdd reads one
word of each branch at once. The shortcut delivers its words long before the other branch (convolutions, whose
window generators fill line buffers first) delivers the matching ones; without room for them the shortcut's
stream blocks the fork, the fork starves the long branch, and the accelerator stops. The SDK gives the shortcut's
input of the Add a FIFO of one whole frame of the shortcut's words: by the time the long branch has taken a whole
frame, the shortcut cannot hold more than that, so the fork never waits on it, whatever the long branch's latency.
The depth goes into folding_config.json as the Add's inFIFODepths (the attribute FINN's ApplyConfig sets and its
InsertFIFO builds), and into the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from targets.finn.kernels import base_op_type

MIN_DEPTH = 2  # FINN's InsertFIFO depth for a stream that needs no buffer


@dataclass
class ShortcutFifo:
    """The FIFO on one residual join's shortcut input."""

    join: str  # the ElementwiseAdd node
    fork: str  # the DuplicateStreams node both branches start at
    shortcut_input: int  # which input of the join the shortcut feeds
    shortcut_layers: list[str]  # the layers on the shortcut between fork and join (none for an identity shortcut)
    long_layers: int  # layers on the other branch
    depth: int  # words of the shortcut stream the FIFO holds: one frame
    bits: int  # width of a word

    def to_dict(self) -> dict:
        return asdict(self)


def _path_to_fork(model: ModelWrapper, tensor: str) -> tuple[list, object | None]:
    """The nodes from the producer of `tensor` back to the DuplicateStreams it starts at (nearest first)."""
    path = []
    producer = model.find_producer(tensor)
    while producer is not None and base_op_type(producer.op_type) != "DuplicateStreams":
        if producer in path:  # a malformed graph may loop
            return path, None
        path.append(producer)
        dynamic = [name for name in producer.input if model.get_initializer(name) is None]
        producer = model.find_producer(dynamic[0]) if dynamic else None
    return path, producer


def shortcut_fifos(model: ModelWrapper) -> list[ShortcutFifo]:
    """Each residual join of a folded dataflow graph with the FIFO its shortcut input needs."""
    from qonnx.custom_op.registry import getCustomOp

    fifos = []
    for node in model.graph.node:
        if base_op_type(node.op_type) != "ElementwiseAdd":
            continue
        if len(node.input) != 2 or any(model.get_initializer(name) is not None for name in node.input):
            continue
        branches = [_path_to_fork(model, name) for name in node.input]
        forks = {fork.name for _, fork in branches if fork is not None}
        if len(forks) != 1 or any(fork is None for _, fork in branches):
            continue  # not a fork-and-join block the SDK knows how to size: FINN's own FIFO sizing decides
        shortcut = min((0, 1), key=lambda i: len(branches[i][0]))
        op = getCustomOp(node)
        words = int(np.prod(op.get_folded_input_shape(shortcut)[:-1]))
        fifos.append(
            ShortcutFifo(
                join=node.name,
                fork=forks.pop(),
                shortcut_input=shortcut,
                shortcut_layers=[n.name for n in reversed(branches[shortcut][0])],
                long_layers=len(branches[1 - shortcut][0]),
                depth=max(MIN_DEPTH, words),
                bits=int(op.get_instream_width(shortcut)),
            )
        )
    return fifos


def fifo_depth_attributes(fifos: list[ShortcutFifo]) -> dict[str, dict[str, list[int]]]:
    """folding_config.json entries: each join's inFIFODepths, the shortcut's one frame, the other input minimal."""
    attributes = {}
    for fifo in fifos:
        depths = [MIN_DEPTH, MIN_DEPTH]
        depths[fifo.shortcut_input] = fifo.depth
        attributes[fifo.join] = {"inFIFODepths": depths}
    return attributes
