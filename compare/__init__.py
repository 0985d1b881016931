"""The harness: MNIST data, agreement checks, side-by-side training, benchmark and the CLI.

This is the only package that sees both the NumPy side (`manual`) and the PyTorch side
(`torch_ref`).
"""
