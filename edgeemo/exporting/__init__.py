"""Export (needs the ``[train]`` extra): ONNX, static int8, the verification gate, the bundle."""
