"""spaars-robot: offline data -> SPAARS training -> ONNX bundle -> safe onboard runtime."""
__version__ = "0.1.0"
