"""Every keras-amix model trains on Keras' own training and evaluation steps.

Keras' trainers run `y_pred = self(x, training=...)`, `compute_loss` and
`compute_metrics`, and own the backend (`tf.GradientTape`, `jax.grad` of a
stateless call, torch autograd) and the distribution strategy. Our models
need their labels in the forward pass (to mix them), so `StepModel` hands
Keras each batch packed as one `StepBatch(x, y)`, on which the model's `call`
runs its step. State written there (BatchNorm statistics, random streams,
momentum copies, MoCo's queue, ODC's memory) comes back from JAX's stateless
call as the new state; trackers are updated in `compute_loss`, where Keras
maps the metric variables. Momentum (EMA) updates run first thing in the
next step's forward pass, as in MoCo.
"""

from typing import Any, NamedTuple

import keras
from keras import ops

from keras_amix.training.backend import num_replicas
from keras_amix.training.seed_state import SeedStateMixin


class StepBatch(NamedTuple):
    """One batch of `fit` / `evaluate`, as a `StepModel`'s `call` receives it."""

    x: Any
    y: Any


class StepModel(SeedStateMixin, keras.Model):
    """A `keras.Model` trained by Keras' own steps on a packed `StepBatch`.

    Subclasses implement `train_outputs(x, y)` and `test_outputs(x, y)`, each
    returning `{"loss": scalar, tracker name: value (or (labels, logits))}`,
    add their trackers with `self.add_tracker(metric)`, and begin `call` with
    `if isinstance(inputs, StepBatch): return self.step_outputs(inputs,
    training)`; plain images get the plain forward (predict, export). A
    step's logs are the trackers its outputs name.
    """

    # Constructor arguments stored as serialised Keras objects (`from_config`).
    nested_config_keys = ()

    def __init__(self, **kwargs):
        # The step (losses, labels, EMA) in float32; layers follow the global policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self._trackers = {}

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """As `keras.Model.compile`; the model computes its own losses and metrics."""
        for name, value in (("loss", loss), ("metrics", metrics)):
            if value is not None:
                raise ValueError(f"{type(self).__name__} computes its own losses and metrics; "
                                 f"compile() takes no `{name}` (received {name}={value!r}).")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Keras skips this for overridden `compile`s; `.keras` files need it.
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
    # Refused before Keras starts: on JAX an error in a step loses the state.
    def fit(self, *args, sample_weight=None, class_weight=None, **kwargs):
        _refuse_weights(self, sample_weight=sample_weight, class_weight=class_weight)
        return super().fit(*args, **kwargs)

    def evaluate(self, *args, sample_weight=None, **kwargs):
        _refuse_weights(self, sample_weight=sample_weight)
        return super().evaluate(*args, **kwargs)

    # One function for every backend: JAX's trainer passes its state first.
    def train_step(self, *args):
        *state, data = args
        return super().train_step(*state, (_pack(data, self),))

    def test_step(self, *args):
        *state, data = args
        return super().test_step(*state, (_pack(data, self),))

    def step_outputs(self, batch, training):
        """What `call` returns for a `StepBatch`: the subclass's `train_outputs(x, y)`
        or `test_outputs(x, y)`."""
        outputs = self.train_outputs if training else self.test_outputs
        return outputs(batch.x, batch.y)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        for name, value in y_pred.items():
            if name in self._trackers:
                value = value if isinstance(value, tuple) else (value,)
                self._trackers[name].update_state(*value)
        # Divided by the replica count: Keras sums the replicas' gradients.
        return y_pred["loss"] / num_replicas()

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return {name: m.result() for name, m in self._trackers.items() if name in y_pred}


def _pack(data, model):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    _refuse_weights(model, sample_weight=sample_weight)  # a data set yielding weights
    return StepBatch(x, y)


def _refuse_weights(model, **weights):
    for name, value in weights.items():
        if value is not None:
            raise ValueError(f"{type(model).__name__} takes no sample or class weights; "
                             f"received {name} {getattr(value, 'shape', value)!r}.")


def ema_update(pairs, momentum):
    """`t <- m * t + (1 - m) * s` for each `(t, s)` pair of variables (no gradient to `s`)."""
    for target, source in pairs:
        source = ops.stop_gradient(ops.cast(source, target.dtype))
        target.assign(momentum * target + (1.0 - momentum) * source)
