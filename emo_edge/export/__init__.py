"""Edge export: perception to ONNX (parity-checked against eager PyTorch).

`io_spec` is the one source of truth for graph names, tensor names, dtypes and shapes; it imports
no torch, so the runtime shares it. `onnx_export` needs the `train` and `export` extras.
"""
