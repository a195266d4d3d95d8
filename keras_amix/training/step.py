"""Every keras-amix model trains on Keras' own training and evaluation steps.

Keras' trainers run `y_pred = self(x, training=...)`, `compute_loss`, then
`compute_metrics`, and own the backend (`tf.GradientTape`, `jax.grad` of a
stateless call, torch autograd) and the distribution strategy. Our models
need their labels in the forward pass (to mix them), so `StepModel` hands
Keras each batch of `fit` / `evaluate` packed as one `StepBatch(x, y)`; the
model's `call` runs its step on it and returns `"loss"` and a value for each
of its trackers. Plain images still get the plain forward (predict, export).
State written in the forward pass (BatchNorm statistics, random streams,
momentum copies, MoCo's queue, ODC's memory) comes back from JAX's stateless
call as the new state; trackers are updated in `compute_loss`, where Keras
maps the metric variables. Momentum (EMA) updates run first thing in the
next step's forward pass, as in MoCo.
"""

from typing import Any, NamedTuple

import keras
from keras import ops

from keras_amix.training.backend import num_replicas
from keras_amix.training.seed_state import SEED_STATE_KEY, SeedStateMixin  # noqa: F401


class StepBatch(NamedTuple):
    """One batch of `fit` / `evaluate`, as a `StepModel`'s `call` receives it."""

    x: Any
    y: Any


class StepModel(SeedStateMixin, keras.Model):
    """A `keras.Model` trained by Keras' own steps on a packed `StepBatch`.

    Subclasses implement `train_outputs(x, y)` and `test_outputs(x, y)`, each
    returning `{"loss": scalar, tracker name: value, ...}`, register their
    trackers in `__init__` with `self.add_tracker(metric)`, and begin `call`
    with `if isinstance(inputs, StepBatch): return self.step_outputs(inputs,
    training)`. `metrics` is exactly the trackers; a step's logs are the
    trackers its outputs name.
    """

    # Constructor arguments that `get_config` stores as serialised Keras
    # objects; `from_config` deserialises each of them that holds a dict.
    nested_config_keys = ()

    def __init__(self, **kwargs):
        # The model's own step (losses, labels, EMA) runs in float32; its
        # layers follow the global policy (e.g. "mixed_bfloat16").
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self._trackers = {}

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """As `keras.Model.compile`; the model computes its own losses and metrics."""
        for name, value in (("loss", loss), ("metrics", metrics)):
            if value is not None:
                raise ValueError(
                    f"{type(self).__name__} computes its own losses and metrics; "
                    f"compile() takes no `{name}` (received {name}={value!r})."
                )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Keras skips this for models that override `compile`; loading a
        # `.keras` file must still restore the optimizer and its state.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.nested_config_keys:
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    # ------------------------------------------------------------ trackers
    def add_tracker(self, metric):
        self._trackers[metric.name] = metric
        return metric

    @property
    def metrics(self):
        return list(self._trackers.values())

    # ------------------------------------------------------ Keras' steps
    # One function for every backend: JAX's trainer passes its state first.
    def train_step(self, *args):
        *state, data = args
        return super().train_step(*state, (_pack(data, self),))

    def test_step(self, *args):
        *state, data = args
        return super().test_step(*state, (_pack(data, self),))

    def step_outputs(self, batch, training):
        """What `call` returns for a `StepBatch`."""
        if training:
            return self.train_outputs(batch.x, batch.y)
        return self.test_outputs(batch.x, batch.y)

    def train_outputs(self, x, y):
        raise NotImplementedError(f"{type(self).__name__} must implement train_outputs(x, y).")

    def test_outputs(self, x, y):
        raise NotImplementedError(f"{type(self).__name__} must implement test_outputs(x, y).")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        for name, value in y_pred.items():
            if name in self._trackers:
                value = value if isinstance(value, tuple) else (value,)
                self._trackers[name].update_state(*value)
        # Keras sums the replicas' gradients: the per-replica mean loss is
        # divided by their count (its compiled-loss path does the same).
        return y_pred["loss"] / num_replicas()

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return {name: m.result() for name, m in self._trackers.items() if name in y_pred}


def _pack(data, model):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError(f"{type(model).__name__} takes no sample weights; received a "
                         f"sample_weight of shape {tuple(sample_weight.shape)}.")
    return StepBatch(x, y)


def ema_update(targets, sources, momentum):
    """`t <- m * t + (1 - m) * s` for matching lists of variables (no gradient to `s`)."""
    for target, source in zip(targets, sources):
        source = ops.stop_gradient(ops.cast(source, target.dtype))
        target.assign(momentum * target + (1.0 - momentum) * source)
