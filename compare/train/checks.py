"""The per-step checks of a side-by-side run, and the float64 referee of float32 runs.

At a checked step the two sides' arrays are compared parameter by parameter (relative error and
elementwise error, each against a bound that widens for confident batches, see
``compare.tolerances``), the losses too;
a non-finite or exploding loss or gradient stops the run as diverged. What is compared depends on
how the manual side trained (``Checks.kind``):

- "grads" (step "reference"): the gradients, before either side updates its weights;
- "weights" (step "fast", free mode): the weights after each side's SGD step;
- "updates" (step "fast", lockstep): the update the fast step applied (θ before − θ after, the
  torch side still holding θ before) against lr·(torch's gradient).
"""

from __future__ import annotations

import math

import numpy as np

from compare import tolerances
from compare.agreement import greatest_magnitude, measure, param_message, rel_distance, sum_of_squares
from compare.errors import CrosscheckError
from compare.train.config import REFEREE_EVERY, TrainConfig, base_bounds

# The mean cross-entropy of a uniform guess is ln C (2.3 for 10 classes). A mean above 1000 says
# the correct class gets probability below e^-1000: the run has diverged (a learning rate far too
# large). Sigmoid nets then stay finite (saturated units, logits ~1e7), so waiting for NaN/inf
# alone would let such a run go on to the end; ReLU nets reach 1e243 before they overflow.
DIVERGED_LOSS = 1e3

DRIFT_ROWS = 8  # rows (units) per weight matrix in the per-step drift estimate

NOUNS = {"grads": ("gradients", "gradient"), "weights": ("weights after the step", "weights"),
         "updates": ("updates", "update")}


class TrainingFailure(CrosscheckError):
    """The two sides disagreed, or the training diverged (exit code 1)."""


def rel(a: float, b: float) -> float:
    """|a − b| / max(|a|, |b|, tiny): the relative difference of two losses (``agreement.measure``
    of the two as one-element arrays)."""
    return measure(np.array([a]), np.array([b]), 0, "loss", math.inf).rel_err


def drift(manual_params, torch_params) -> float:
    """max over parameters of ‖θ_manual − θ_torch‖ / ‖θ_manual‖ (free mode)."""
    return max(rel_distance(a, b) for a, b in zip(manual_params, torch_params))


def drift_sample(manual_params, torch_params) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Views for the per-step estimate of `drift`: each weight matrix contributes only its first
    DRIFT_ROWS rows (units), which reads a few percent of the memory. Units are interchangeable,
    so any rows are as good a sample as random ones; adjacent rows are one contiguous block, which
    the comparison reads without a copy. The views follow the parameters, which both sides update
    in place."""
    sample_m, sample_t = [], []
    for a, b in zip(manual_params, torch_params):
        if a.ndim == 2 and len(a) > DRIFT_ROWS:
            a, b = a[:DRIFT_ROWS], b[:DRIFT_ROWS]
        sample_m.append(a)
        sample_t.append(b)
    return sample_m, sample_t


def norms(keys, arrays) -> dict:
    """{"layer i W": ‖array‖, ...} (inf or NaN for a non-finite array)."""
    return {str(k): math.sqrt(sum_of_squares(a)) for k, a in zip(keys, arrays)}


def update_bounds(dtype, grad_allowed: float, elem_allowed: float, theta: np.ndarray, step: np.ndarray):
    """``tolerances.update_bounds`` of the weights after the step `theta` and the update `step`."""
    norms = (math.sqrt(sum_of_squares(theta)), math.sqrt(sum_of_squares(step)))
    return tolerances.update_bounds(dtype, grad_allowed, elem_allowed, norms,
                                    (greatest_magnitude(theta), greatest_magnitude(step)))


def disagreement(failures, arrays: dict, where, kind: str = "grads", culprit: tuple = ("", False)) -> str:
    """The failure message: what the model check found (`culprit`: ``localise``'s line and whether
    it names a layer, which then leads), the parameters affected, then one line per failing parameter
    (``agreement.param_message``: greatest difference, index, both values, count, cosine).
    `arrays` maps (layer, param) to the two compared arrays."""
    lines = [param_message(agr, ("manual", "torch"), arrays.get((agr.layer, agr.param))) for agr in failures]
    head = f"{NOUNS[kind][0]} disagree (manual vs torch) at {where}: "
    culprit, named = culprit
    if named:  # a layer the model check names: it first, then what it corrupted
        affected = f"parameters affected: {', '.join(f'layer {agr.layer} {agr.param}' for agr in failures)}"
        return "\n  ".join([head + culprit, affected, *lines])
    first, others = failures[0], len(failures) - 1
    head += f"layer {first.layer} {first.param}"
    head += f" and {others} more parameter{'s' * (others > 1)}" if others else ""
    return "\n  ".join([head, *([culprit] if culprit else []), *lines])


def localise(model, x: np.ndarray, y: np.ndarray, kind: str) -> tuple[str, bool]:
    """The model check's verdict on a step that disagreed (``compare.check.check_model``): the
    first wrong layer from the loss and what is wrong with it, in one line, and whether it names
    a layer (its ``culprit``)."""
    from compare.check import check_model
    from manual.layers import SoftmaxCrossEntropy

    try:  # the loss every run trains with: a user's stack carries none of its own
        found = check_model(model, x, y, loss=getattr(model, "loss_layer", None) or SoftmaxCrossEntropy())
    except Exception as e:  # the disagreement stands whatever the model check makes of it
        return f"the layer-by-layer check could not run ({type(e).__name__}: {e})", False
    if found.ok and kind != "grads":
        return found.headline() + ": the disagreement is in the fast step itself (manual.fast.FastStep)", False
    return found.headline(), found.culprit is not None


class Checks:
    """Checks one run's steps and records them (``records.Records``).

    Args:
        cfg: the configuration (dtype, mode, step, lr, referee).
        manual, torch_side: the two sides (``compare.train.sides``).
        records: where each checked step goes.
    """

    def __init__(self, cfg: TrainConfig, manual, torch_side, records):
        self.cfg, self.manual, self.torch, self.records = cfg, manual, torch_side, records
        self.keys, self.dtype = manual.keys, np.dtype(cfg.dtype)
        self.kind = self.kind_for(cfg)
        self.base = base_bounds(cfg)
        # max |logit| for the bounds: the manual side's own, unless its step keeps no logits (fast)
        self.scale_side = manual if self.kind == "grads" else torch_side
        self.n_checks = 0

    @property
    def drift_views(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``drift_sample`` of the two sides' parameters, taken at each check (a GPU's come as copies)."""
        return drift_sample(self.manual.params, self.torch.views)

    @staticmethod
    def kind_for(cfg: TrainConfig) -> str:
        """What a run compares: "grads", "weights" or "updates" (see the module docstring)."""
        return "grads" if cfg.step == "reference" else "updates" if cfg.lockstep else "weights"

    def bounds(self, loss_m: float, loss_t: float) -> tuple[float, float, float]:
        """(allowed relative error of each parameter's arrays, of the loss, allowed elementwise
        error of each parameter's arrays) at this step.

        A confident batch (tiny loss) computes its loss and gradients as small differences of
        large numbers; the bounds widen to that rounding noise (see compare/tolerances.py)."""
        return tolerances.step_bounds(self.base, self.dtype, min(loss_m, loss_t), self.scale_side.logit_scale())

    def compare(self, arrays_m, arrays_t, allowed, elem_allowed=None) -> list:
        """Agreement per parameter (``compare.agreement.measure``), in the order of ``keys``.
        `allowed` bounds the relative error, `elem_allowed` the elementwise error (default: as
        `allowed`); each one bound for all, or a list with one per parameter."""
        n = len(self.keys)
        per = allowed if isinstance(allowed, list) else [allowed] * n
        per_elem = elem_allowed if isinstance(elem_allowed, list) else [elem_allowed] * n
        return [measure(a, b, k.layer, k.name, bound, elem)
                for k, a, b, bound, elem in zip(self.keys, arrays_m, arrays_t, per, per_elem)]

    def check(self, pos, loss_m: float, loss_t: float, arrays_m, arrays_t, xb, yb, allowed=None,
              headline: float | None = None, elem_allowed=None) -> None:
        """Compare the two sides at this step and record it; TrainingFailure at a disagreement or
        divergence. `allowed`, `elem_allowed`: per-parameter bounds instead of the gradient's
        (`elem_allowed` default: `allowed`); `headline`: the bound recorded as the step's
        "allowed_grad" (default: the gradient bound)."""
        grad_allowed, allowed_loss, grad_elem = self.bounds(loss_m, loss_t)
        agreements = (self.compare(arrays_m, arrays_t, grad_allowed, grad_elem) if allowed is None
                      else self.compare(arrays_m, arrays_t, allowed, elem_allowed))
        headline = grad_allowed if headline is None else headline
        drift_est = None if self.cfg.lockstep else drift(*self.drift_views)
        referee = None
        if self.dtype == np.float32 and self.kind == "grads" and (self.cfg.referee or self.n_checks % REFEREE_EVERY == 0):
            referee = self.referee(arrays_m, arrays_t, xb, yb)
        self.n_checks += 1
        loss_rel = rel(loss_m, loss_t)
        self.records.add_check(pos, loss_m, loss_t, loss_rel, agreements, headline, allowed_loss, drift_est, referee)
        # Divergence first: once the numbers explode, any disagreement is a consequence.
        calm = loss_m <= DIVERGED_LOSS and loss_t <= DIVERGED_LOSS  # False for a NaN loss
        if not (calm and all(math.isfinite(x) for agr in agreements for x in (agr.norm_a, agr.norm_b))):
            self.diverged(pos, "manual", loss_m, {f"layer {agr.layer} {agr.param}": agr.norm_a for agr in agreements})
            self.diverged(pos, "torch", loss_t, {f"layer {agr.layer} {agr.param}": agr.norm_b for agr in agreements})
        failures = [agr for agr in agreements if not agr.ok]
        if failures:
            pairs = {(k.layer, k.name): (np.asarray(a), np.asarray(b)) for k, a, b in zip(self.keys, arrays_m, arrays_t)}
            culprit = localise(self.manual.model, xb, yb, self.kind)
            raise TrainingFailure(disagreement(failures, pairs, pos, self.kind, culprit))
        if loss_rel > allowed_loss:
            raise TrainingFailure(f"losses disagree at {pos}: manual {loss_m!r}, torch {loss_t!r}, "
                                  f"relative difference {loss_rel:.3g} > allowed {allowed_loss:.1e}; "
                                  f"{localise(self.manual.model, xb, yb, self.kind)[0]}")

    def check_fast(self, pos, loss_m: float, loss_t: float, grads_t, xb, yb) -> None:
        """Check a fast step after it: free mode, the weights after each side's step; lockstep,
        the update the fast step applied against lr·(torch's gradient) (see ``check``)."""
        if self.kind == "weights":
            bound = tolerances.weight_bound(self.dtype)
            return self.check(pos, loss_m, loss_t, self.manual.params, self.torch.views, xb, yb,
                              allowed=[bound] * len(self.keys), headline=bound)
        grad_allowed, _, grad_elem = self.bounds(loss_m, loss_t)
        lr, after = self.cfg.lr, self.manual.params
        applied = [np.subtract(before, a) for before, a in zip(self.torch.views, after)]  # torch: θ before
        wanted = [np.multiply(g, lr) for g in grads_t]
        rel_bounds, elem_bounds = zip(*(update_bounds(self.dtype, grad_allowed, grad_elem, a, w)
                                        for a, w in zip(after, wanted)))
        self.check(pos, loss_m, loss_t, applied, wanted, xb, yb, allowed=list(rel_bounds),
                   elem_allowed=list(elem_bounds))

    def diverged(self, pos, side: str, loss: float, norms_by_key: dict, kind: str | None = None) -> None:
        """Stop at the first step whose loss or compared arrays are non-finite or whose loss has
        exploded, naming the step, and the layer and parameter (the non-finite one, else the largest)."""
        noun = NOUNS[kind or self.kind][1]
        bad = [key for key, n in norms_by_key.items() if not math.isfinite(n)]
        if bad:
            what = f"the {side} {noun} of {bad[0]} is not finite"
        elif not math.isfinite(loss) or loss > DIVERGED_LOSS:
            classes = self.manual.classes
            what = (f"the {side} loss is {loss:.6g} (a uniform guess gives {math.log(classes):.2f}; "
                    f"above {DIVERGED_LOSS:g} counts as diverged)")
            if norms_by_key:
                key = max(norms_by_key, key=norms_by_key.get)
                what += f"; largest {noun}: {key}, norm {norms_by_key[key]:.3g}"
        else:
            return
        raise TrainingFailure(f"training diverged at {pos}: {what}; lower --lr (now {self.cfg.lr:g})")

    def referee(self, grads_m, grads_t, xb, yb) -> dict:
        """Both float32 gradients against a float64 one on the same (manual) weights and batch.

        In lockstep both sides hold exactly those weights; in free mode torch's differ by the
        recorded drift, which then counts in torch's distance.

        A float64 gradient holds 29 more bits per element than a float32 one: a float32 side equal
        to it in every element of every parameter (not all zero) means the referee's gradient was
        computed in float32, and the referee could not tell the sides apart: TrainingFailure.
        """
        g64 = self.manual.float64_grads(xb, yb)
        to_m, to_t = self.compare(grads_m, g64, 1.0), self.compare(grads_t, g64, 1.0)
        layers = [{"layer": a.layer, "param": a.param, "manual_rel": a.rel_err, "torch_rel": b.rel_err}
                  for a, b in zip(to_m, to_t)]
        m_max = max(q["manual_rel"] for q in layers)
        t_max = max(q["torch_rel"] for q in layers)
        for side, worst in (("manual", m_max), ("torch", t_max)):
            if worst == 0 and any(a.norm_b > 0 for a in to_m):
                raise TrainingFailure(f"the float64 referee's gradient equals the {side} side's float32 gradient "
                                      f"exactly in every parameter: the referee did not compute in float64")
        closer = self.records.referee.add(m_max, t_max)
        return {"manual_max_rel": m_max, "torch_max_rel": t_max, "closer": closer, "layers": layers}
