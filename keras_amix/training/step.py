"""One training-step skeleton for every model of the package, on each backend.

Every keras-amix model computes its losses with plain, stateful Keras code
(`self.backbone(x, training=True)`, `metric.update_state(...)`): the models
override `compute_train_loss` and, where they keep momentum copies,
`after_train_step`. `StepModel.train_step` turns that into the backend's
training step:

* TensorFlow and torch run the code as it is, under a `tf.GradientTape` or
  `loss.backward()`.
* JAX runs it inside a `keras.StatelessScope` that maps every variable to the
  traced value of the step's state, so the very same code becomes a pure
  function for `jax.value_and_grad`; assignments (BatchNorm statistics, seed
  generators, metrics, the momentum update) come back as the new state.

`StepModel` also saves the state of every `keras.random.SeedGenerator` of
the model and its sub-layers (the model's own λ / pairing stream, its
mixer's, its Mix Block's) with the model's own variables, so that
`model.save` / `keras.saving.load_model` and `save_weights` /
`load_weights` (what `keras.callbacks.BackupAndRestore` uses) resume the
random streams where they stopped instead of drawing epoch 1's randomness
again.

The gradient of the single scalar loss is taken with respect to every
trainable variable. Models keep their loss terms apart by `stop_gradient` and
by keeping momentum copies non-trainable, so one gradient routes each term to
the variables it is meant to train (for AMix: the encoder's loss reaches only
the encoder, the Mix Block's loss only the Mix Block). Separate learning rates
for variable groups come from `keras.optimizers.MultiOptimizer`.
"""

import warnings

import keras
from keras import ops

from keras_amix.training.backend import num_replicas

_BACKEND = keras.backend.backend()

# Key prefix of the seed-generator states in the model's own weights entry
# (next to Keras' "0", "1", ... of its own variables).
SEED_STATE_KEY = "seed_generator_state_"


class StepModel(keras.Model):
    """A `keras.Model` whose training step runs `compute_train_loss`.

    Subclasses implement:

    * `compute_train_loss(x, y)` -> scalar loss; may update the trackers of
      `self.trackers` with `self.track(name, value)`.
    * `compute_test_metrics(x, y)` -> None; updates trackers for `evaluate`.
    * optionally `after_train_step()`: runs after the optimizer update with the
      new weights (momentum encoders).

    Trackers are `keras.metrics.Metric` objects created in `__init__` through
    `self.add_tracker(metric)`; `model.metrics` returns exactly them, so the
    logs of `fit` and `evaluate` are the names the model chose.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._trackers = {}

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """As `keras.Model.compile`, without `loss` and `metrics`.

        The model computes its own losses and reports its own metrics, so a
        `loss` or `metrics` argument would be silently unused: it is an error.
        """
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
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # Constructor arguments that `get_config` stores as serialised Keras
    # objects (backbones, mixers, Mix Blocks, schedules); `from_config`
    # deserialises each of them that holds a config dict.
    nested_config_keys = ()

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.nested_config_keys:
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    # ------------------------------------------------------------- metrics
    def add_tracker(self, metric):
        self._trackers[metric.name] = metric
        return metric

    def track(self, name, value):
        self._trackers[name].update_state(value)

    @property
    def metrics(self):
        return list(self._trackers.values())

    # ------------------------------------------------------------- saving
    def seed_generators(self):
        """Every `SeedGenerator` of the model and its sub-layers, each once.

        The order (layer tracking order, depth first) is fixed by the
        constructor, so a model rebuilt from the same config lists its
        generators in the same order.
        """
        # Keras keeps a layer's generators in `_seed_generators` and adds their
        # states to `layer.variables` (JAX state, `tf.function` capture) but
        # not to `save_own_variables`, which stores only the weights.
        generators, seen = [], set()
        for layer in self._flatten_layers(include_self=True, recursive=True):
            for generator in getattr(layer, "_seed_generators", ()):
                if id(generator) not in seen:
                    seen.add(id(generator))
                    generators.append(generator)
        return generators

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, generator in enumerate(self.seed_generators()):
            store[f"{SEED_STATE_KEY}{i}"] = generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        seed_keys = [k for k in keys if k.startswith(SEED_STATE_KEY)]
        generators = self.seed_generators()
        if seed_keys and len(seed_keys) != len(generators):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has {len(generators)} seed "
                f"generator(s), but the weights file stores {len(seed_keys)} seed "
                "state(s): it was saved from a model with a different configuration."
            )
        if not seed_keys and generators:
            # Files written before the seed states were saved.
            warnings.warn(
                f"The weights of {type(self).__name__} '{self.name}' carry no seed "
                "generator state (saved by an older keras-amix); the random streams "
                "(λ, pairings) restart from their initial seeds.",
                stacklevel=2,
            )
        for i, generator in enumerate(generators[:len(seed_keys)]):
            generator.state.assign(
                ops.cast(store[f"{SEED_STATE_KEY}{i}"], generator.state.dtype))
        super().load_own_variables({k: store[k] for k in keys if k not in seed_keys})

    # ------------------------------------------------------------ the API
    def compute_train_loss(self, x, y):
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_train_loss(x, y)."
        )

    def compute_test_metrics(self, x, y):
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_test_metrics(x, y)."
        )

    def after_train_step(self):
        """Runs after each optimizer update (e.g. the momentum update)."""

    # Trackers reported by `evaluate` (None: all of them). Training-only
    # trackers (e.g. mask statistics) would otherwise show up as zeros.
    eval_tracker_names = None
    # Trackers that only `evaluate` fills (left out of the training logs,
    # where they would read 0).
    eval_only_tracker_names = ()

    def _logs(self):
        return {name: m.result() for name, m in self._trackers.items()
                if name not in self.eval_only_tracker_names}

    def _eval_logs(self):
        names = self.eval_tracker_names or tuple(self._trackers)
        return {name: self._trackers[name].result() for name in names}

    # ------------------------------------------------------ backend steps
    if _BACKEND == "tensorflow":

        def train_step(self, data):
            import tensorflow as tf

            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            replicas = num_replicas()
            with tf.GradientTape() as tape:
                loss = self.compute_train_loss(x, y)
                # Gradients are summed over replicas by the optimizer, so the
                # per-replica mean loss is divided by the replica count.
                scaled = self.optimizer.scale_loss(loss / replicas)
            weights = self.trainable_weights
            grads = tape.gradient(scaled, weights)
            self.optimizer.apply_gradients(zip(grads, weights))
            ctx = tf.distribute.get_replica_context()
            if ctx is not None and replicas > 1:
                # Momentum copies are mirrored variables: update them once, in
                # cross-replica context, from the (already synchronised)
                # online weights.
                ctx.merge_call(lambda _strategy: self.after_train_step())
            else:
                self.after_train_step()
            return self._logs()

        def test_step(self, data):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            self.compute_test_metrics(x, y)
            return self._eval_logs()

    elif _BACKEND == "torch":

        def train_step(self, data):
            import torch

            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            self.zero_grad()
            loss = self.compute_train_loss(x, y)
            self.optimizer.scale_loss(loss).backward()
            weights = self.trainable_weights[:]
            grads = [v.value.grad for v in weights]
            with torch.no_grad():
                self.optimizer.apply(grads, weights)
                self.after_train_step()
            return self._logs()

        def test_step(self, data):
            import torch

            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            with torch.no_grad():
                self.compute_test_metrics(x, y)
            return self._eval_logs()

    elif _BACKEND == "jax":

        def _run_stateless(self, fn, variables, values):
            """Runs stateful `fn()` as a pure function of `values`.

            Returns `(fn's result, new values of variables)`.
            """
            mapping = list(zip(variables, values))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                out = fn()
            new_values = []
            for variable, value in mapping:
                new = scope.get_current_value(variable)
                new_values.append(value if new is None else new)
            return out, new_values

        def train_step(self, state, data):
            import jax

            trainable, non_trainable, optimizer_vars, metric_vars = state
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            tv, ntv = self.trainable_variables, self.non_trainable_variables
            mv = self.metrics_variables
            n_t, n_nt = len(tv), len(ntv)

            def loss_fn(trainable_values):
                loss, new = self._run_stateless(
                    lambda: self.compute_train_loss(x, y),
                    tv + ntv + mv,
                    list(trainable_values) + list(non_trainable) + list(metric_vars),
                )
                mapping = list(zip(self.optimizer.variables, optimizer_vars))
                with keras.StatelessScope(state_mapping=mapping):
                    scaled = self.optimizer.scale_loss(loss)
                return scaled, new[n_t:]

            (_, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
            non_trainable, metric_vars = new[:n_nt], new[n_nt:]
            trainable, optimizer_vars = self.optimizer.stateless_apply(
                optimizer_vars, grads, trainable
            )
            _, new = self._run_stateless(
                self.after_train_step, tv + ntv, list(trainable) + list(non_trainable)
            )
            trainable, non_trainable = new[:n_t], new[n_t:]
            logs, _ = self._run_stateless(self._logs, mv, metric_vars)
            return logs, (trainable, non_trainable, optimizer_vars, metric_vars)

        def test_step(self, state, data):
            trainable, non_trainable, metric_vars = state
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            tv, ntv = self.trainable_variables, self.non_trainable_variables
            mv = self.metrics_variables
            n_t, n_nt = len(tv), len(ntv)
            _, new = self._run_stateless(
                lambda: self.compute_test_metrics(x, y),
                tv + ntv + mv,
                list(trainable) + list(non_trainable) + list(metric_vars),
            )
            non_trainable, metric_vars = new[n_t : n_t + n_nt], new[n_t + n_nt :]
            logs, _ = self._run_stateless(self._eval_logs, mv, metric_vars)
            return logs, (trainable, non_trainable, metric_vars)


def ema_update(targets, sources, momentum):
    """`t <- m * t + (1 - m) * s` for matching lists of variables."""
    for target, source in zip(targets, sources):
        target.assign(momentum * target + (1.0 - momentum) * ops.cast(source, target.dtype))
