"""What determines a run's numbers: the configuration, and the bounds it is checked against."""

from __future__ import annotations

import dataclasses

from compare import tolerances

STEPS = ("reference", "fast")  # how the manual side trains (see compare/train/sides.py)
MODES = ("free", "lockstep")
ARRAY_LIBRARIES = ("numpy", "torch")  # what the manual side computes on
REFEREE_EVERY = 200  # float32: the float64 referee runs at every 200th checked step unless --referee


@dataclasses.dataclass
class TrainConfig:
    """Everything that determines a run's numbers (resume refuses a checkpoint that differs).

    ``model`` is "" for the built-in MLP (``sizes``, ``activation``), else "path/to/file.py:build",
    a user stack of layers (``sizes`` and ``activation`` then unused). ``step`` is how the manual
    side trains: "reference" (``loss_and_grads`` + ``SGD``) or "fast" (``manual.fast.FastStep``;
    on torch tensors ``manual.fast_torch.FastTorchStep``). ``manual_arrays`` is the array library
    the manual side computes on: "numpy", or "torch" (tensors, no autograd, on ``device``).
    ``device`` is where torch computes: "cpu", "cuda" or "cuda:N" (a GPU needs manual_arrays "torch").
    """

    sizes: tuple = (784, 256, 10)
    activation: str = "sigmoid"
    # Defaults measured on MNIST (784-256-10 sigmoid float64): test accuracy 98.26 % (seed 0) and
    # 98.25 % (seed 1) after 60 epochs, 98.2-98.3 % from epoch 45 on; larger learning rates did
    # worse (batch 512, lr 1.0: 98.04 % for seed 1; lr 1.4: 97.8 % for seed 0). Batch 512 rather
    # than 128 because the per-step check costs about the same at any batch size (reading the
    # gradients), while the two sides' step grows with the batch.
    epochs: int = 60
    batch_size: int = 512
    lr: float = 0.7
    dtype: str = "float64"
    seed: int = 0
    mode: str = ""  # "" = free for the built-in net in float64, else lockstep
    check_every: int = 1
    referee: bool = False
    limit_train: int = 0  # 0 = all 60,000
    step: str = "reference"
    model: str = ""
    manual_arrays: str = "numpy"
    device: str = "cpu"

    def __post_init__(self):
        self.sizes = tuple(int(s) for s in self.sizes)
        if not self.mode:  # free mode's bounds are the drift measured for the built-in net; a user's
            # net may amplify rounding (a softplus net at lr 0.7 left 1e-9 by step 56), so lockstep
            self.mode = "free" if self.dtype == "float64" and not self.model else "lockstep"

    @property
    def lockstep(self) -> bool:
        return self.mode == "lockstep"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sizes"] = list(self.sizes)
        return d

    @property
    def net(self) -> str:
        """The net in words: "784-256-10 sigmoid", or the --model spec."""
        return self.model or f"{'-'.join(map(str, self.sizes))} {self.activation}"

    @property
    def manual_side(self) -> str:
        """What the manual side computes on, in words: "NumPy arrays" or "torch tensors on cpu"."""
        return "NumPy arrays" if self.manual_arrays == "numpy" else f"torch tensors on {self.device}"

    def title(self) -> str:
        """One line for plot titles: net, dtype, mode, step, manual side, batch, lr, seed."""
        step = "" if self.step == "reference" else f" {self.step} step,"
        side = "" if self.manual_arrays == "numpy" else f" manual on {self.manual_side},"
        return (f"{self.net} {self.dtype} {self.mode},{step}{side} batch {self.batch_size}, lr {self.lr:g}, "
                f"seed {self.seed}")


def base_bounds(cfg: TrainConfig) -> dict:
    """{"grad": ..., "loss": ..., "elem": ...}: bounds before widening for confident batches, on the
    relative error of gradients and loss, and on the gradients' elementwise error. Lockstep
    compares at identical weights (the dtype's bound); free mode allows the measured drift of two
    trajectories (compare/tolerances.py)."""
    if cfg.lockstep:
        rel = tolerances.gradient_rel(cfg.dtype)
        return {"grad": rel, "loss": rel, "elem": tolerances.elementwise_rel(cfg.dtype)}
    if cfg.dtype == "float64":
        return {"grad": tolerances.FREE_GRAD_REL, "loss": tolerances.FREE_LOSS_REL, "elem": tolerances.FREE_ELEM_REL}
    return {"grad": tolerances.FREE32_GRAD_REL, "loss": tolerances.FREE32_LOSS_REL, "elem": tolerances.FREE32_ELEM_REL}
