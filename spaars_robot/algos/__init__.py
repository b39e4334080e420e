"""Algorithms. Each file is one method, readable top to bottom; shared networks live in `nn/`."""
