"""The hand-derived backpropagation of an MLP (this package never imports torch).

``functional`` (each function beside its derivative), ``jacobians`` (the notes' literal chain),
``layers`` (Linear, Sigmoid, Tanh, ReLU, SoftmaxCrossEntropy), ``mlp`` (``MLP``, and ``Stack`` for
any list of layers), ``optim`` (``SGD``); the tuned training steps apart: ``fast`` (``FastStep``,
NumPy) and ``fast_torch`` (``FastTorchStep``, torch tensors).

The reference computes in the array library of the arrays it holds and is given (the Python array
API standard): NumPy by default, torch tensors after ``net.to(torch, device)`` (see ``manual.mlp``).
"""

from manual.layers import Linear, ReLU, Sigmoid, SoftmaxCrossEntropy, Tanh
from manual.mlp import MLP, Stack
from manual.optim import SGD

__all__ = ["MLP", "Stack", "SGD", "Linear", "Sigmoid", "Tanh", "ReLU", "SoftmaxCrossEntropy"]
