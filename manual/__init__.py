"""The hand-derived backpropagation of an MLP, in NumPy only (this package never imports torch)."""
