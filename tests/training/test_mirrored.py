"""MirroredStrategy on two logical CPU devices gives the single-device step.

Logical devices must be configured before TensorFlow initialises, so the check
runs in a fresh process.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r'''
import os
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from keras_amix import backbones, models

def backbone():
    # No BatchNorm: per-replica batch statistics would differ by design.
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    return keras.Model(x, keras.layers.Conv2D(6, 3, padding="same")(h))

rng = np.random.default_rng(0)
x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
y = keras.utils.to_categorical(rng.integers(0, 3, 8), 3).astype("float32")

def one_step(strategy):
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = models.MixupClassifier(backbone(), 3)
        model.compile(optimizer=keras.optimizers.SGD(1.0))
    before = [w.copy() for w in model.get_weights()]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    logs = model.fit(ds, epochs=1, verbose=0).history
    grads = [b - a for a, b in zip(model.get_weights(), before)]  # lr 1: w0 - w1 = grad
    return logs["loss"][0], grads

single_loss, single_grads = one_step(tf.distribute.get_strategy())
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert mirrored.num_replicas_in_sync == 2
mirror_loss, mirror_grads = one_step(mirrored)
assert abs(single_loss - mirror_loss) < 1e-5, (single_loss, mirror_loss)
for a, b in zip(single_grads, mirror_grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
assert max(float(np.abs(g).max()) for g in single_grads) > 0

# AMix under the strategy: the momentum update (first thing in the next step,
# in replica context) gives the same weights on every replica.
with mirrored.scope():
    model = models.AMixClassifier(backbones.resnet(18, width=8), 3, momentum_schedule=0.5, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
x16 = rng.normal(size=(8, 16, 16, 3)).astype("float32")
ds16 = tf.data.Dataset.from_tensor_slices((x16, y)).batch(8)
model.fit(ds16, epochs=1, verbose=0)
after_one = [(k.numpy().copy(), q.numpy().copy()) for k, q in model._ema_pairs]
model.fit(ds16, epochs=1, verbose=0)
for (k, _), (k1, q1) in zip(model._ema_pairs, after_one):
    np.testing.assert_allclose(k.numpy(), 0.5 * k1 + 0.5 * q1, rtol=1e-5, atol=1e-6)
    for replica_value in model.distribute_strategy.experimental_local_results(k.value):
        np.testing.assert_array_equal(replica_value.numpy(), k.numpy())
assert int(model.step_counter.numpy()) == 2
print("MIRRORED-OK")
'''


@pytest.mark.backend_independent
def test_mirrored_step_equals_single_device_step():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "MIRRORED-OK" in proc.stdout, (
        proc.stdout[-2000:] + proc.stderr[-6000:])
