"""Edge runtime: runs an exported bundle with numpy and ONNX Runtime only (never torch)."""
