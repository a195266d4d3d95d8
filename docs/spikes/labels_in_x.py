"""Spike (issue 10, the compute_loss port): a mixup classifier on Keras' own trainer.

Keras' trainers run `y_pred = self(x, training=True)` before `compute_loss`. A
mixup classifier cannot use that forward pass (it needs the labels to mix), so
here one backend-agnostic `train_step(*args)` moves the labels into `x`
(JAX passes its state first, TF and torch only the data) and `call` runs the
mixed forward in training. The question: one forward pass per step (counted by
a non-trainable variable that `call` increments, so it counts executions on
every backend, compiled or not), the loss Keras reports equal to the mixup CE
written out by hand, on TF, JAX and torch, compiled where the backend compiles.

    KERAS_BACKEND=tensorflow python docs/spikes/labels_in_x.py
    KERAS_BACKEND=jax python docs/spikes/labels_in_x.py
    KERAS_BACKEND=torch python docs/spikes/labels_in_x.py
"""

import keras
import numpy as np
from keras import ops


class Mixup(keras.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.dense = keras.layers.Dense(3, name="dense")
        self.dense.build((None, 4))
        self.forwards = self.add_weight(shape=(), dtype="int32", initializer="zeros",
                                        trainable=False, name="forwards")
        self.tracker = keras.metrics.Mean(name="loss")

    def train_step(self, *args):
        *state, data = args
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return super().train_step(*state, ({"images": x, "labels": y}, y, sample_weight))

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):  # the training batch: images and labels
            images, labels = inputs["images"], inputs["labels"]
            # A fixed "mixer": half of each image with the reversed batch.
            images = 0.5 * images + 0.5 * ops.flip(images, axis=0)
            labels = 0.5 * labels + 0.5 * ops.flip(labels, axis=0)
            self.forwards.assign_add(1)
            return {"logits": self.dense(images), "labels": labels}
        return self.dense(inputs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = ops.mean(keras.losses.categorical_crossentropy(
            y_pred["labels"], y_pred["logits"], from_logits=True))
        self.tracker.update_state(loss)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return {"loss": self.tracker.result()}

    @property
    def metrics(self):
        return [self.tracker]


keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(8, 4)).astype("float32")
y = keras.utils.to_categorical(rng.integers(0, 3, 8), 3).astype("float32")
model = Mixup()
model.compile(optimizer=keras.optimizers.SGD(0.0))  # lr 0: the loss stays the first step's
kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w)) for w in model.dense.weights)
history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False).history
xm, ym = 0.5 * x + 0.5 * x[::-1], 0.5 * y + 0.5 * y[::-1]
logits = xm @ kernel + bias
logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
expected = float(-(ym * logp).sum(1).mean())
forwards = int(keras.ops.convert_to_numpy(model.forwards))
print(keras.backend.backend(), f"run_eagerly={model.run_eagerly}",
      "forwards", forwards, "for 3 steps; loss", [round(v, 6) for v in history["loss"]],
      "expected", round(expected, 6))
assert forwards == 3, forwards
np.testing.assert_allclose(history["loss"], expected, rtol=1e-5)
print("predict (no labels, no mixing):", model.predict(x[:2], verbose=0).shape)
