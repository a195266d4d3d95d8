# Spike (issue 10): can a keras-amix model run on Keras' own train_step by overriding
# compute_loss, with the EMA update done at the start of the next step, under TF
# MirroredStrategy (2 logical CPUs)?
import os
import sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
import keras
import numpy as np

from ema_model import EMAModel

keras.utils.set_random_seed(0)  # the same initial weights in every run of the script


# `scale`: divide the loss by the replica count, as Keras' compiled-loss path does.
SCALE = len(sys.argv) > 1
x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
y = np.zeros((16, 4), "float32")
init = None
for name, strategy in (("default", tf.distribute.get_strategy()),
                       ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
    with strategy.scope():
        model = EMAModel(
            loss_divisor=lambda: tf.distribute.get_strategy().num_replicas_in_sync if SCALE else 1)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        if init is None:
            init = model.get_weights()
        else:
            model.set_weights(init)
    try:
        hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
        print(name, "OK", {k: [round(float(v), 4) for v in vals] for k, vals in hist.items()},
              "target", np.round(model.target.kernel.numpy()[0], 5),
              "online", np.round(model.online.kernel.numpy()[0], 5))
    except Exception as err:  # noqa: BLE001 (a spike: report what fails)
        print(name, "FAILED", type(err).__name__, str(err)[:400])
