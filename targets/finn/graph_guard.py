"""What sdk/onnx_guard.py must know of FINN's graphs: FINN's own op domains, the older QONNX domain whose quantizers
are read as qonnx's, and what FINN would read, run or load from a graph (node attributes, model metadata).

Plain data, imported by the guard through the registry (targets/registry.py: FlowInfo.graph_guard) before any
graph is read, so it imports nothing.
"""

from __future__ import annotations

TOOL = "FINN"  # how the guard's messages name the flow's toolchain

# FINN's own op domains: known only in the graphs FINN wrote into a deployment package (load_onnx_safely's
# finn_ops=True); in a user's model they are refused (USER_MODEL_WHY). Existing sub-modules of OP_PACKAGE are
# known as well (found on disk, never imported).
OP_DOMAINS = frozenset(
    {
        "finn.custom_op.general",
        "finn.custom_op.fpgadataflow",
        "finn.custom_op.fpgadataflow.hls",
        "finn.custom_op.fpgadataflow.rtl",
    }
)
OP_PACKAGE = "finn.custom_op."

# Older QONNX: older converters (QKeras's among them) wrote qonnx's standard quantizers in FINN's domain; in a
# user's model exactly these op types in exactly that domain are read as qonnx's own (a fixed table: the legacy
# domain is never imported).
LEGACY_RENAME = ("finn.custom_op.general", "qonnx.custom_op.general", frozenset({"Quant", "BipolarQuant", "Trunc"}))

# Why a node of FINN's domains is refused in a user's model, and the fix ({legacy_ops}: the renamed op types).
USER_MODEL_WHY = (
    "The quantizers older converters wrote there ({legacy_ops}) are read as qonnx's own; any other op there is one "
    "of FINN's own ops, which FINN's transformations write, and the SDK takes the quantized model from before them."
)
USER_MODEL_FIX = (
    "pass the QONNX file as your converter (QKeras's, Brevitas's export_qonnx, `sdk export`) wrote it, with its "
    "quantizers as Quant / BipolarQuant / Trunc nodes, before any FINN transformation (MultiThreshold and the "
    "other FINN ops come from FINN's streamlining, which the SDK runs itself)"
)

# Node attributes that name a file or folder to read, run or load, a module name to simulate, or a simulator:
# FINN's execute_node runs executable_path (cppsim) or loads rtlsim_so (rtlsim). The SDK's package graphs hold
# none of them (the deploy writes them to its build folder only); a value here is refused.
CODE_ATTRIBUTES = frozenset(
    {
        "code_gen_dir_cppsim",
        "code_gen_dir_ipgen",
        "executable_path",
        "ipgen_path",
        "ip_path",
        "ip_vlnv",
        "rtlsim_so",
        "rtlsim_trace",
        "gen_top_module",
        "debug_log_path",
        "iteration_context_path",
        "output_hook",
        "exec_mode",
    }
)

# FINN reads a model's metadata_props as library paths to load (rtlsim_so), a simulator (exec_mode) and
# expressions to eval (vivado_stitch_ifnames): a file carries none.
READS_METADATA_AS = "files to load, simulators to run and Python expressions"

# FINN's RoundAndClipThresholds repeats while `thresholds != rounded`, which a NaN keeps true: the guard refuses
# non-finite tensors and float attributes, naming the tool that would loop.
LOOPS_ON_NON_FINITE = True
