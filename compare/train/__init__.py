"""Side-by-side training: the manual NumPy net and the PyTorch reference, from identical weights,
on identical shuffled mini-batches, checked step by step and layer by layer.

Modes:
- free (default in float64): two independent trajectories, each updating its own weights; the
  run asserts that they stay together (loss, gradients; the weight drift is recorded).
- lockstep (default in float32): after every step torch's weights are set to the manual ones, so
  each step compares gradients at identical weights and float32 rounding cannot accumulate into
  a difference that hides (or fakes) a real gradient error.

float32 runs get a float64 referee: at sampled steps (every step with ``referee=True``) the
gradient is recomputed in float64 on the same weights and batch, and the report says how far each
float32 side is from it and which one is closer.

Modules: ``config`` (TrainConfig, base bounds), ``sides`` (the two nets as named parameters and
their steps), ``checks`` (per-step comparison, divergence, referee), ``records`` (metrics lines,
series, totals), ``loop`` (SideBySide: epochs, steps, signals), ``checkpoint``, ``summary``.
"""

from compare.train.checks import TrainingFailure
from compare.train.config import TrainConfig
from compare.train.loop import Interrupted, SideBySide

__all__ = ["Interrupted", "SideBySide", "TrainConfig", "TrainingFailure"]
