"""Edge export: perception to ONNX (parity-checked against eager PyTorch).

The bundle contract (io table `emo_edge.runtime.io_spec`, manifest, engine metadata) belongs to the
runtime; the exporters write through it. `onnx_export` needs the `train` and `export` extras.
"""
