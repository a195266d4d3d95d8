# Spike (issue 10): the same compute_loss model on JAX, alone and under DataParallel (2 CPUs).
import os
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
import keras
import numpy as np
from keras import ops


class EMAModel(keras.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.online = keras.layers.Dense(4, name="online")
        self.target = keras.layers.Dense(4, name="target")
        self.online.build((None, 3)); self.target.build((None, 3))
        for v in self.target.weights:
            v.trainable = False
        self.extra = keras.metrics.Mean(name="extra")

    def call(self, x, training=False):
        return self.online(x)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        for t, s in zip(self.target.weights, self.online.weights):
            t.assign(0.9 * t + 0.1 * s)
        extra = ops.mean(ops.square(self.target(x)))
        self.extra.update_state(extra)
        return ops.mean(ops.square(y_pred - y)) + 0.0 * extra

    @property
    def metrics(self):
        return [self.extra] + super().metrics


x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
y = np.zeros((16, 4), "float32")
init = None
for name in ("single", "data_parallel"):
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices()) if name != "single" else None)
    model = EMAModel()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    if init is None:
        init = model.get_weights()
    else:
        model.set_weights(init)
    hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
    print(name, "OK", {k: [round(float(v), 4) for v in vals] for k, vals in hist.items()},
          "target", np.round(np.asarray(model.target.kernel)[0], 5),
          "online", np.round(np.asarray(model.online.kernel)[0], 5))
