"""A tiny flow outside the SDK's tree, registered through the `sdk.flows` entry point by tests/test_flow_plugins.py:
its artifact is the QONNX graph itself, verified by running it with qonnx."""
