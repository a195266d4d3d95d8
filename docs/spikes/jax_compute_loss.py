# Spike (issue 10): the same compute_loss model on JAX, alone and under DataParallel (2 CPUs).
import os
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
import keras
import numpy as np

from ema_model import EMAModel

keras.utils.set_random_seed(0)  # the same initial weights in every run of the script


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
