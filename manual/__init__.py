"""The hand-derived backpropagation of an MLP, in NumPy only (this package never imports torch).

``functional`` (each function beside its derivative), ``jacobians`` (the notes' literal chain),
``layers`` (Linear, Sigmoid, Tanh, ReLU, SoftmaxCrossEntropy), ``mlp`` (``MLP``, and ``Stack`` for
any list of layers), ``optim`` (``SGD``); the tuned training step apart in ``fast`` (``FastStep``).
"""

from manual.layers import Linear, ReLU, Sigmoid, SoftmaxCrossEntropy, Tanh
from manual.mlp import MLP, Stack
from manual.optim import SGD

__all__ = ["MLP", "Stack", "SGD", "Linear", "Sigmoid", "Tanh", "ReLU", "SoftmaxCrossEntropy"]
