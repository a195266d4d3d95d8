# Spike (issue 10): can a keras-amix model run on Keras' own train_step by overriding
# compute_loss, with the EMA update done at the start of the next step, under TF
# MirroredStrategy (2 logical CPUs)?
import os
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
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
        # EMA of the previous step's update, first thing in this step.
        for t, s in zip(self.target.weights, self.online.weights):
            t.assign(0.9 * t + 0.1 * s)
        extra = ops.mean(ops.square(self.target(x)))
        self.extra.update_state(extra)
        loss = ops.mean(ops.square(y_pred - y)) + 0.0 * extra
        if SCALE:
            loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
        return loss

    @property
    def metrics(self):
        return [self.extra] + super().metrics


x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
y = np.zeros((16, 4), "float32")
import sys
SCALE = len(sys.argv) > 1
init = None
for name, strategy in (("default", tf.distribute.get_strategy()),
                       ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
    with strategy.scope():
        model = EMAModel()
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        if init is None:
            init = model.get_weights()
        else:
            model.set_weights(init)
    try:
        hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
        print(name, "OK", {k: [round(float(v), 4) for v in vals] for k, vals in hist.items()},
              "target", np.round(model.target.kernel.numpy()[0], 5), "online", np.round(model.online.kernel.numpy()[0], 5))
    except Exception as err:  # noqa: BLE001 (a spike: report what fails)
        print(name, "FAILED", type(err).__name__, str(err)[:400])
