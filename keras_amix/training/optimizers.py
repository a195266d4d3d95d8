"""SGD as the paper's PyTorch code runs it (coupled L2 weight decay)."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_amix")
class CoupledSGD(keras.optimizers.SGD):
    """SGD with momentum and weight decay exactly as `torch.optim.SGD` applies them.

    Keras' `SGD(weight_decay=wd)` decays the weights *decoupled* from the
    gradient (w ← w − lr·wd·w, outside the momentum), and its momentum buffer
    accumulates ``lr``-scaled steps. PyTorch's SGD, which the paper and the
    official code train with, adds the decay to the gradient before the
    momentum and scales the buffer by the current learning rate:

        g ← ∇L(w) + wd·w
        b ← μ·b + g                      (b = g at the first step)
        w ← w − lr·b                     (Nesterov: w − lr·(g + μ·b))

    At μ = 0.9 the coupled decay is about 1/(1 − μ) = 10× stronger than the
    decoupled one at the same ``wd``; and with a learning-rate schedule the
    buffer, not the step, carries the past gradients, as in PyTorch.

    Args:
        learning_rate: float or `LearningRateSchedule`.
        momentum: float in [0, 1].
        weight_decay: float >= 0 (or None: no decay); coupled L2 as above.
            Variables named in `exclude_from_weight_decay` (a keras optimizer
            method) are not decayed.
        nesterov: bool.
        **kwargs: the other `keras.optimizers.Optimizer` arguments.

    Example:

    ```python
    optimizer = CoupledSGD(0.1, momentum=0.9, weight_decay=1e-4)  # the paper's CIFAR SGD
    model.compile(optimizer=optimizer)
    ```

    Reference: DESIGN.md §10; `torch.optim.SGD` (dampening 0).
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None,
                 **kwargs):
        if weight_decay is not None and (
                isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float))
                or not math.isfinite(weight_decay) or weight_decay < 0):
            raise ValueError(
                "`weight_decay` must be None or a finite float >= 0; "
                f"received weight_decay={weight_decay!r}."
            )
        # The base class must not apply its decoupled decay: it gets None.
        super().__init__(learning_rate=learning_rate, momentum=float(momentum),
                         nesterov=nesterov, weight_decay=None, **kwargs)
        self.coupled_weight_decay = None if weight_decay is None else float(weight_decay)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay and self._use_weight_decay(variable):
            gradient = gradient + ops.cast(self.coupled_weight_decay, variable.dtype) * variable
        if self.momentum == 0:
            self.assign_sub(variable, learning_rate * gradient)
            return
        buffer = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum, variable.dtype)
        # PyTorch starts the buffer at g; μ·0 + g is the same value.
        self.assign(buffer, momentum * buffer + gradient)
        step = gradient + momentum * buffer if self.nesterov else buffer
        self.assign_sub(variable, learning_rate * step)

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.coupled_weight_decay
        return config
