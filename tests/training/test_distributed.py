"""Several devices against one: `tf.distribute.MirroredStrategy` on two
logical CPU devices, and JAX's `keras.distribution.DataParallel` on two virtual
CPU devices (DESIGN §11: the multi-host path; two devices of one host stand in
for two hosts').

Devices must be configured before the backend initialises, so the checks run
in a fresh process: one per backend, each check in its own namespace (a
process start and the first build of the tiny ResNet cost more than most
checks, so they share them). A failed check does not stop the others; the
test names every check that failed.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PREAMBLE = {
    "tensorflow": (
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(\n"
        "    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        # One strategy for all checks: a second MirroredStrategy in the same
        # process fails in its first all-gather (CollectiveGatherV2).
        "SHARED = {'MIRRORED': tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])}\n"
    ),
    "jax": (
        "import os\n"
        "os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'\n"
        "import jax\n"
        "assert len(jax.devices()) == 2, jax.devices()\n"
        "SHARED = {}\n"
    ),
}

# Runs each (name, code) of CHECKS in a fresh namespace (holding only SHARED)
# and a fresh Keras session.
DRIVER = r'''
import traceback
import keras

for name, code in CHECKS:
    keras.utils.clear_session()  # (this also drops a global distribution)
    try:
        exec(compile(code, name, "exec"), {"__name__": name, **SHARED})
    except Exception:
        print(f"FAILED {name}", flush=True)
        traceback.print_exc()
    else:
        print(f"PASSED {name}", flush=True)
'''


def _run_checks(backend, checks):
    script = PREAMBLE[backend] + f"CHECKS = {list(checks.items())!r}\n" + DRIVER
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    passed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PASSED ")]
    missing = [name for name in checks if name not in passed]
    assert proc.returncode == 0 and not missing, (
        f"failed: {missing}\n" + proc.stdout[-3000:] + proc.stderr[-8000:])


MIRRORED_CHECKS = {}

# A MixupClassifier step equals the one-device step; AMix's momentum update
# gives the same weights on every replica.
MIRRORED_CHECKS["step_and_amix_ema"] = r'''
import tensorflow as tf
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
mirrored = MIRRORED
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
'''

# MoCo v2 enqueues every replica's keys, all-gathered in order.
MIRRORED_CHECKS["moco_queue"] = r'''
import tensorflow as tf
import keras, numpy as np
from keras_amix import backbones
from keras_amix.models.moco import MoCoV2

rng = np.random.default_rng(0)
v1, v2 = (rng.normal(size=(8, 8, 8, 3)).astype("float32") for _ in range(2))
strategy = MIRRORED
with strategy.scope():
    # momentum 1: the key encoder stays fixed, so the keys are reproducible.
    model = MoCoV2(backbones.resnet(18, width=8), projection_dim=8, hidden_dim=16,
                   queue_size=12, momentum=1.0, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
ds = tf.data.Dataset.from_tensor_slices({"view1": v1, "view2": v2}).batch(8)
model.fit(ds, epochs=1, verbose=0)
assert int(model.queue_ptr.numpy()) == 8, model.queue_ptr.numpy()
# Each replica's keys (BatchNorm over its own 4 samples), all-gathered in order.
keys = np.concatenate([keras.ops.convert_to_numpy(model.key_embedding(v2[i:i + 4]))
                       for i in (0, 4)])
np.testing.assert_allclose(model.queue.numpy()[:8], keys, atol=1e-4)
'''

# ODC's memory takes every all-gathered row (ids and features of both replicas).
MIRRORED_CHECKS["odc_rows"] = r'''
import tensorflow as tf
import keras, numpy as np
from keras_amix.models.odc import ODCCallback, ODCMemory
from tests.models.test_odc import Clusterer


def start(memory):
    angles = np.deg2rad(np.arange(16) * 22.5)
    memory.features.assign(np.stack([np.cos(angles), np.sin(angles)], 1).astype("float32"))
    memory.labels.assign(np.array([0] * 8 + [1] * 7 + [2], "int32"))
    memory.centroids.assign(np.array([[1, 0], [-1, 0], [0, 0]], "float32"))
    memory.initialized.assign(1)


rng = np.random.default_rng(0)
ids = rng.permutation(16).astype("int32")
feats = rng.normal(size=(16, 2)).astype("float32")
strategy = MIRRORED
with strategy.scope():
    model = Clusterer(num_samples=16)
    start(model.odc)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
ds = tf.data.Dataset.from_tensor_slices({"ids": ids, "features": feats}).batch(8)
model.fit(ds, epochs=2, verbose=0, callbacks=[ODCCallback(model.odc, 1, 1)])

ref = ODCMemory(16, 2, num_clusters=3, min_cluster_size=2, seed=0)
start(ref)
fixed = []
for _ in range(2):
    for b in (slice(0, 8), slice(8, 16)):
        ref.update(ids[b], feats[b])
        ref.recompute_centroids()
        fixed.append(ref.deal_with_small_clusters())
assert fixed[0] >= 1, fixed
for name in ("features", "labels", "centroids"):
    got = np.asarray(getattr(model.odc, name).numpy())
    np.testing.assert_allclose(got, getattr(ref, name).numpy(), rtol=1e-5, atol=1e-6,
                               err_msg=name)
'''

# AMix-C writes both replicas' keys into the one memory, at their ids.
MIRRORED_CHECKS["amix_c_memory"] = r'''
import tensorflow as tf
import keras, numpy as np
from keras_amix import backbones
from keras_amix.models import AMixSSL

rng = np.random.default_rng(0)
v1, v2 = (rng.normal(size=(8, 16, 16, 3)).astype("float32") for _ in range(2))
ids = np.arange(8)[::-1].copy()
strategy = MIRRORED
with strategy.scope():
    # momentum 1: the key encoder stays fixed, so the keys are reproducible.
    model = AMixSSL(backbones.resnet(18, width=8), variant="cluster", num_samples=8,
                    num_clusters=2, odc_kwargs={"min_cluster_size": 1}, projection_dim=8,
                    hidden_dim=16, queue_size=12, momentum=1.0, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
start = rng.normal(size=(8, 8)).astype("float32")
model.odc.initialize(start)
before = keras.ops.convert_to_numpy(model.odc.features).copy()
ds = tf.data.Dataset.from_tensor_slices({"view1": v1, "view2": v2, "ids": ids}).batch(8)
model.fit(ds, epochs=1, verbose=0)
# Each replica's keys (BatchNorm over its own 4 samples), all-gathered in order,
# land in the one memory at the all-gathered ids: both halves of the batch.
keys = np.concatenate([keras.ops.convert_to_numpy(model.key_embedding(v2[i:i + 4]))
                       for i in (0, 4)])
rows = before[ids] * 0.5 + keys * 0.5
rows /= np.linalg.norm(rows, axis=1, keepdims=True)
memory = keras.ops.convert_to_numpy(model.odc.features)
np.testing.assert_allclose(memory[ids], rows, atol=1e-4)
centroids = keras.ops.convert_to_numpy(model.odc.centroids)
labels = keras.ops.convert_to_numpy(model.odc.labels)
np.testing.assert_array_equal(labels, np.argmax(memory @ centroids.T, axis=1))
'''

DATA_PARALLEL_CHECKS = {}

# MoCo v2 + MixUp: the same λ and pairings, and the queue, as on one device.
DATA_PARALLEL_CHECKS["moco_queue_and_draws"] = r'''
import jax, keras, numpy as np
from keras import ops
from keras_amix import backbones
from keras_amix.models.moco import MoCoV2

rng = np.random.default_rng(0)
v1, v2 = (rng.normal(size=(24, 8, 8, 3)).astype("float32") for _ in range(2))
STEPS, BATCH = 3, 8


def record_params(model):
    # The mixing parameters drawn inside each (SPMD) step, written into
    # model variables: they come back as state, and unlike a debug callback
    # they do not force the draw onto one device.
    record = {"lam": model.add_weight(shape=(STEPS, BATCH), initializer="zeros",
                                      trainable=False, name="lam_record"),
              "perm": model.add_weight(shape=(STEPS, BATCH), dtype="int32",
                                       initializer="zeros", trainable=False,
                                       name="perm_record")}
    step = model.add_weight(shape=(), dtype="int32", initializer="zeros", trainable=False,
                            name="step_record")
    sample = model.mixer.layer.sample_params

    def sample_and_record(images, *args, **kwargs):
        params = sample(images, *args, **kwargs)
        row = ops.convert_to_tensor(step)
        for key, variable in record.items():
            value = ops.cast(params[key], variable.dtype)[None]
            variable.assign(ops.slice_update(ops.convert_to_tensor(variable), (row, 0), value))
        step.assign(row + 1)
        return params

    model.mixer.layer.sample_params = sample_and_record
    return record


def run(mixer, parallel):
    keras.utils.clear_session()  # (this also drops the global distribution)
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices()) if parallel else None)
    keras.utils.set_random_seed(0)
    model = MoCoV2(backbones.resnet(18, width=8), projection_dim=8, hidden_dim=16,
                   queue_size=20, momentum=0.9, mixer=mixer, seed=0)
    record = record_params(model) if mixer else {}
    # lr 0.01: at lr 0.1 three steps of this tiny net amplify the one-step
    # rounding difference (7e-6 in the weights) chaotically, to 1.2e-3 in the
    # queue with mixup (measured 2026-12-07, AVX-512 CPU), above any float bound.
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model.fit({"view1": v1, "view2": v2}, batch_size=BATCH, epochs=1, shuffle=False,
              verbose=0)
    drawn = {key: np.asarray(variable) for key, variable in record.items()}
    return (np.asarray(model.queue), int(np.asarray(model.queue_ptr)),
            model.queue.value.sharding, drawn)


# Tolerance of the queue (unit-norm keys), from float32 rounding alone: the
# two programs add the same terms in a different order (per-shard partial
# sums + an all-reduce). The longest reduction is a stage-4 3x3 conv over 64
# channels (n = 576 terms); a length-n float32 sum of unit-scale terms may
# move by n·eps, and each of the STEPS steps adds its own such error to the
# weights that make the next keys: STEPS · 576 · eps ≈ 2.1e-4. (Measured at
# lr 0.01, 2026-12-07: 6.4e-6 with mixup, 3.5e-6 without. A different λ or
# pairing in one step moves it by > 1e-3; the draws are also compared exactly.)
ATOL = STEPS * 576 * float(np.finfo(np.float32).eps)

# With mixup only: its step holds every part of the plain MoCo v2 step (whose queue
# under DataParallel the AMix-C check below compares too) plus the draws.
for mixer in ("mixup",):
    single, single_ptr, sharding, single_drawn = run(mixer, parallel=False)
    assert len(sharding.device_set) == 1, sharding
    queue, ptr, sharding, drawn = run(mixer, parallel=True)
    assert len(sharding.device_set) == 2, sharding  # replicated over the 2-device mesh
    assert ptr == single_ptr == 24 % 20, (ptr, single_ptr)  # 3 batches of 8 wrapped once
    # The random draws do not depend on the sharding: λ and the pairing of
    # every step are bit-identical.
    for key in single_drawn:
        np.testing.assert_array_equal(drawn[key], single_drawn[key], err_msg=key)
    assert sorted(drawn["perm"][-1]) == list(range(BATCH)), drawn["perm"]  # recorded
    np.testing.assert_allclose(queue, single, atol=ATOL)
'''

# AMix-C: one ODC memory, replicated over the mesh, equal to one device's.
DATA_PARALLEL_CHECKS["amix_c_memory"] = r'''
import jax, keras, numpy as np
from keras_amix import backbones
from keras_amix.models import AMixSSL

rng = np.random.default_rng(0)
v1, v2 = (rng.normal(size=(16, 16, 16, 3)).astype("float32") for _ in range(2))
ids = rng.permutation(16)
start = rng.normal(size=(16, 8)).astype("float32")


def run(parallel):
    keras.utils.clear_session()  # (this also drops the global distribution)
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices()) if parallel else None)
    keras.utils.set_random_seed(0)
    model = AMixSSL(backbones.resnet(18, width=8), variant="cluster", num_samples=16,
                    num_clusters=2, odc_kwargs={"min_cluster_size": 1}, projection_dim=8,
                    hidden_dim=16, queue_size=16, momentum=0.9, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.odc.initialize(start)
    model.fit({"view1": v1, "view2": v2, "ids": ids}, batch_size=8, epochs=1,
              shuffle=False, verbose=0)
    return (np.asarray(model.odc.features), np.asarray(model.odc.labels),
            model.odc.features.value.sharding, np.asarray(model.queue),
            int(np.asarray(model.queue_ptr)))


single, single_labels, sharding, single_queue, single_ptr = run(parallel=False)
assert len(sharding.device_set) == 1, sharding
memory, labels, sharding, queue, ptr = run(parallel=True)
assert len(sharding.device_set) == 2, sharding  # one memory, replicated over the mesh
# Two steps of float32 reduction-order differences (see ATOL of the MoCo check above).
atol = 2 * 576 * float(np.finfo(np.float32).eps)
np.testing.assert_allclose(memory, single, atol=atol)
np.testing.assert_array_equal(labels, single_labels)
# The MoCo v2 queue of the same steps: every replica's keys, once (16 = 2 batches of 8).
assert ptr == single_ptr == 0, (ptr, single_ptr)
np.testing.assert_allclose(queue, single_queue, atol=atol)
'''


@pytest.mark.own_backend("tensorflow")
def test_mirrored_strategy_equals_one_device():
    _run_checks("tensorflow", MIRRORED_CHECKS)


@pytest.mark.own_backend("jax")
def test_jax_data_parallel_equals_one_device():
    _run_checks("jax", DATA_PARALLEL_CHECKS)
