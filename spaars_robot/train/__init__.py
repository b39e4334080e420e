"""Training: replay, the runner that owns the loop, protocols, evaluation and checkpoints."""
