"""Export: the trained networks become one self-describing ONNX policy bundle."""
