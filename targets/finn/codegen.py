"""Stage 9: code generation - FINN writes HLS C++ and fills its RTL templates (no vendor tool needed).

Each layer's sources are copied into sources/<layer>/ with FINN's absolute,
randomly named build paths replaced by '.', so the package is relocatable and
two builds of the same inputs are byte-identical.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

SKIP_SUFFIXES = {".npy"}  # FINN's scratch inputs for cppsim, not sources
TEXT_SUFFIXES = {".cpp", ".h", ".hpp", ".tcl", ".v", ".sv", ".vh", ".dat", ".xdc", ".json"}


def generate_sources(model: ModelWrapper, fpga_part: str, clock_mhz: float, out_dir: Path) -> dict[str, list[str]]:
    """Run FINN's PrepareIP; copy each layer's generated files to out_dir/<layer>. Returns files per layer."""
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP

    from targets.finn import fast_packing

    with fast_packing.installed():  # FINN's own weight and threshold files, packed without a loop per value
        generated = model.transform(PrepareIP(fpga_part, 1000.0 / clock_mhz))
    files: dict[str, list[str]] = {}
    for node in generated.graph.node:
        source_dir = Path(getCustomOp(node).get_nodeattr("code_gen_dir_ipgen"))
        target = out_dir / node.name
        target.mkdir(parents=True, exist_ok=True)
        files[node.name] = []
        for path in sorted(source_dir.rglob("*")):
            if not path.is_file() or path.suffix in SKIP_SUFFIXES:
                continue
            destination = target / path.relative_to(source_dir)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix in TEXT_SUFFIXES:
                destination.write_text(path.read_text().replace(str(source_dir), "."))
            else:
                shutil.copyfile(path, destination)
            files[node.name].append(destination.relative_to(out_dir).as_posix())
    return files
