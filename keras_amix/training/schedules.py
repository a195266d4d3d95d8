"""Schedules for the momentum (EMA) encoder."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_amix")
class MomentumSchedule:
    """EMA momentum: constant ``base`` during warm-up, then a cosine to ``final``.

    For ``step < warmup_fraction * total_steps`` the momentum is ``base``;
    afterwards, with ``t`` the progress through the remaining steps (0 at the
    end of warm-up, 1 at ``total_steps``, clipped to [0, 1]),
    ``m = final - (final - base) * (cos(pi * t) + 1) / 2``.

    Short runs. The EMA averages over about ``1 / (1 - m)`` steps. With
    ``horizon_fraction=f`` the starting momentum is
    ``min(base, 1 - 1 / (f * total_steps))``: the momentum encoder never lags
    by more than a fraction ``f`` of the run. The paper's budgets are long
    enough that the rule leaves ``base`` as it is (CIFAR-100, 400k steps:
    ``1 - 1/(0.02 * 400k) > 0.999``); in a run of a few thousand steps it
    keeps the momentum encoder, which the Mix Block learns against, from
    staying at its random initialisation.

    Args:
        base: momentum at the start (0.999).
        final: momentum at the end (1.0 in the paper; the official code ends at
            0.999999 on CIFAR/Tiny-ImageNet and 0.99999 on ImageNet).
        warmup_fraction: fraction of the steps held at the starting momentum
            (0.1).
        horizon_fraction: None (the schedule as written) or a float in
            (0, 1]: the largest EMA horizon as a fraction of the steps.

    Call arguments:
        step: current optimizer step (0-based).
        total_steps: number of training steps.

    Example:

    >>> schedule = MomentumSchedule()
    >>> schedule(0, 1000)
    0.999
    >>> MomentumSchedule(horizon_fraction=0.02)(0, 1000)  # 1 - 1/20
    0.95
    >>> m = schedule.ops_call(optimizer.iterations, 1000)  # a tensor, in-graph

    Reference: AMix paper section 4.1 ("momentum 0.999 -> 1, cosine"); DESIGN.md section 5.
    """

    def __init__(self, base=0.999, final=1.0, warmup_fraction=0.1, horizon_fraction=None):
        for name, value in (("base", base), ("final", final)):
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be a float in [0, 1]; received {name}={value!r}.")
        if not isinstance(warmup_fraction, (int, float)) or not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(
                "`warmup_fraction` must be a float in [0, 1); "
                f"received warmup_fraction={warmup_fraction!r}."
            )
        if horizon_fraction is not None and (
                isinstance(horizon_fraction, bool)
                or not isinstance(horizon_fraction, (int, float))
                or not 0.0 < horizon_fraction <= 1.0):
            raise ValueError(
                "`horizon_fraction` must be None or a float in (0, 1]; "
                f"received horizon_fraction={horizon_fraction!r}."
            )
        self.base = float(base)
        self.final = float(final)
        self.warmup_fraction = float(warmup_fraction)
        self.horizon_fraction = None if horizon_fraction is None else float(horizon_fraction)

    def start(self, total_steps):
        """The starting momentum of a run of `total_steps` (a Python float)."""
        self._check_total(total_steps)
        if self.horizon_fraction is None:
            return self.base
        return min(self.base, max(0.0, 1.0 - 1.0 / (self.horizon_fraction * total_steps)))

    @staticmethod
    def _check_total(total_steps):
        if isinstance(total_steps, (int, float)) and total_steps <= 0:
            raise ValueError(f"`total_steps` must be > 0; received total_steps={total_steps!r}.")

    def __call__(self, step, total_steps):
        """The momentum as a Python float."""
        base = self.start(total_steps)
        warmup = self.warmup_fraction * total_steps
        if step < warmup:
            return base
        t = min(max((step - warmup) / (total_steps - warmup), 0.0), 1.0)
        return self.final - (self.final - base) * (math.cos(math.pi * t) + 1.0) / 2.0

    def ops_call(self, step, total_steps):
        """The same momentum as a float32 tensor (``step`` may be a variable;
        ``total_steps`` is a Python number)."""
        base = self.start(total_steps)
        step = ops.cast(ops.convert_to_tensor(step), "float32")
        total = ops.cast(ops.convert_to_tensor(total_steps), "float32")
        warmup = self.warmup_fraction * total
        t = ops.clip((step - warmup) / (total - warmup), 0.0, 1.0)
        cosine = self.final - (self.final - base) * (ops.cos(math.pi * t) + 1.0) / 2.0
        return ops.where(step < warmup, ops.cast(base, "float32"), cosine)

    def get_config(self):
        return {"base": self.base, "final": self.final, "warmup_fraction": self.warmup_fraction,
                "horizon_fraction": self.horizon_fraction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
