"""spaars-robot: offline data -> SPAARS training -> ONNX bundle -> safe onboard runtime."""
__version__ = "0.1.0"

import os as _os

# OpenMP's default spin-wait makes a 2-thread torch process 20-80x slower when the 2 cores are shared
# (measured: BENCHMARKS.md "Training throughput"); must be set before torch is first imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
