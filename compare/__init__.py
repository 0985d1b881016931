"""mlp-crosscheck: the referee of hand-derived backward passes (``compare.check``, also importable
from here), and the app around it: MNIST data, side-by-side training, gradcheck, the bench and the
CLI. The app depends on the referee, never the other way round.

Importing this package does nothing else: no environment variable is changed and nothing is
compiled (the CLI's entry point, ``compare.__main__``, applies its thread settings).
"""

__all__ = ["check_function", "check_layer", "check_model", "check_forward_backward", "check_loss"]


def __getattr__(name: str):
    """``from compare import check_function, check_layer, check_model`` (and ``check_forward_backward``,
    ``check_loss``: ``compare/check/``), loaded on
    first use, so that ``import compare`` alone (the CLI's start, the bench's workers) loads nothing."""
    if name in __all__:
        from compare import check

        return getattr(check, name)
    raise AttributeError(f"module 'compare' has no attribute {name!r}")
