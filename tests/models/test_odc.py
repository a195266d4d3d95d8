import keras
import numpy as np
import pytest
from keras import ops

from keras_amix.models.odc import ODCCallback, ODCMemory, kmeans
from keras_amix.training.backend import all_gather
from keras_amix.training.step import StepModel

BACKEND = keras.backend.backend()


def _np(x):
    return ops.convert_to_numpy(x)


def _unit(*rows):
    rows = np.asarray(rows, "float32")
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _set(memory, features=None, labels=None, centroids=None, initialized=1):
    if features is not None:
        memory.features.assign(np.asarray(features, "float32"))
    if labels is not None:
        memory.labels.assign(np.asarray(labels, "int32"))
    if centroids is not None:
        memory.centroids.assign(np.asarray(centroids, "float32"))
    memory.initialized.assign(initialized)


def _state(memory):
    return {v.name: _np(v).copy() for v in
            (memory.features, memory.labels, memory.centroids, memory.initialized)}


def _assert_same_state(a, b):
    sa, sb = _state(a), _state(b)
    for name in sa:
        np.testing.assert_allclose(sa[name], sb[name], rtol=1e-5, atol=1e-6, err_msg=name)


# ------------------------------------------------------------------ by hand
def test_memory_update_by_hand():
    memory = ODCMemory(3, 2, num_clusters=2, momentum=0.5, min_cluster_size=1)
    _set(memory, features=[[1, 0], [0, 1], [0, 1]], labels=[0, 1, 1],
         centroids=[[1, 0], [0, 1]])
    # Row 0: normalise(0.5·[1, 0] + 0.5·[-0.6, 0.8]) = [1, 2]/√5 → cluster 1 (moved).
    # Row 2: normalise(0.5·[0, 1] + 0.5·[12, 5]/13) = [2, 3]/√13 → cluster 1 (stays).
    out = memory.update(np.array([0, 2], "int32"), np.array([[-3, 4], [12, 5]], "float32"))
    np.testing.assert_array_equal(_np(out["labels"]), [1, 1])
    np.testing.assert_allclose(float(_np(out["change_ratio"])), 0.5)
    np.testing.assert_allclose(_np(memory.features),
                               [[1 / 5 ** 0.5, 2 / 5 ** 0.5], [0, 1],
                                [2 / 13 ** 0.5, 3 / 13 ** 0.5]], rtol=1e-6)
    np.testing.assert_array_equal(_np(memory.labels), [1, 1, 1])


def test_reassignment_picks_the_nearest_centroid():
    memory = ODCMemory(4, 2, num_clusters=3, momentum=1.0, min_cluster_size=1)
    _set(memory, labels=[0, 0, 0, 0], centroids=[[1, 0], [0, 1], [-1, 0]])
    # m = 1: the rows are the new features; cosines by hand:
    # [-2, .5] → c2 (0.97), [.1, 3] → c1 (0.999), [5, -1] → c0 (0.98), [-1, -1] → c2.
    out = memory.update(np.array([3, 0, 1, 2]),
                        np.array([[-2, .5], [.1, 3], [5, -1], [-1, -1]], "float32"))
    np.testing.assert_array_equal(_np(out["labels"]), [2, 1, 0, 2])
    np.testing.assert_array_equal(_np(memory.labels), [1, 0, 2, 2])
    np.testing.assert_allclose(float(_np(out["change_ratio"])), 0.75)


def test_recompute_centroids_by_hand_keeps_an_empty_cluster():
    memory = ODCMemory(3, 2, num_clusters=3, min_cluster_size=1)
    _set(memory, features=[[0.6, 0.8], [1, 0], [0, 1]], labels=[0, 0, 1],
         centroids=[[0, 1], [1, 0], [0.6, -0.8]])
    memory.recompute_centroids()
    np.testing.assert_allclose(_np(memory.centroids),
                               [[2 / 5 ** 0.5, 1 / 5 ** 0.5], [0, 1], [0.6, -0.8]], rtol=1e-6)


def test_class_weights_and_sizes_by_hand():
    memory = ODCMemory(5, 2, num_clusters=3, min_cluster_size=1)
    _set(memory, labels=[0, 1, 0, 0, 0])
    np.testing.assert_array_equal(_np(memory.cluster_sizes()), [4, 1, 0])
    # n = [4, 1, 0]: n^-0.5 = [1/2, 1, 0] → / 1.5; the empty cluster gets 0.
    np.testing.assert_allclose(_np(memory.class_weights()), [1 / 3, 2 / 3, 0], rtol=1e-6)
    np.testing.assert_allclose(_np(memory.class_weights(power=1.0)), [0.2, 0.8, 0], rtol=1e-6)
    _set(memory, labels=[2, 2, 2, 2, 2])
    w = _np(memory.class_weights())
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w, [0, 0, 1])


# ------------------------------------------------------------ small clusters
def _angles(*degrees):
    rad = np.deg2rad(np.asarray(degrees, "float64"))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype("float32")


def test_small_cluster_is_dissolved_and_the_largest_split():
    # Cluster 0: two groups (around 0° and 90°); cluster 1: 3 rows near 180°;
    # cluster 2: a single row at 40°, below min_cluster_size = 3.
    features = _angles(0, 2, 4, 6, 88, 90, 92, 94, 178, 180, 182, 40)
    labels = [0] * 8 + [1] * 3 + [2]
    memory = ODCMemory(12, 2, num_clusters=3, min_cluster_size=3, seed=0)
    _set(memory, features=features, labels=labels)
    memory.recompute_centroids()
    assert memory.deal_with_small_clusters() == 1
    new = _np(memory.labels)
    sizes = np.bincount(new, minlength=3)
    assert sizes.min() >= 3 and sizes.sum() == 12
    np.testing.assert_array_equal(new[8:11], [1, 1, 1])  # untouched
    assert len(set(new[:4])) == 1 and len(set(new[4:8])) == 1 and new[0] != new[4]
    assert {new[0], new[4]} == {0, 2}
    for c in (0, 2):  # the two halves got their normalised mean as centroid
        mean = features[new == c].sum(0)
        np.testing.assert_allclose(_np(memory.centroids)[c], mean / np.linalg.norm(mean),
                                   rtol=1e-5)
    assert memory.deal_with_small_clusters() == 0


def test_too_few_samples_for_min_size_still_keeps_every_cluster():
    # N = 6 < K · 20: the threshold is N // K = 2; clusters 1 (1 row) and 2 (empty).
    memory = ODCMemory(6, 2, num_clusters=3, min_cluster_size=20, seed=0)
    _set(memory, features=_angles(0, 10, 100, 110, 200, 210), labels=[0, 0, 0, 0, 0, 1])
    memory.recompute_centroids()
    assert memory.deal_with_small_clusters() == 2
    assert np.bincount(_np(memory.labels), minlength=3).min() >= 1


# ------------------------------------------------------------------ k-means
def _blobs(n_per=20, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.linalg.qr(rng.normal(size=(d, k)))[0].T  # orthonormal directions
    x = np.concatenate([c + 0.05 * rng.normal(size=(n_per, d)) for c in centers])
    return x.astype("float32"), np.repeat(np.arange(k), n_per)


def test_initialize_by_kmeans_recovers_blobs():
    x, truth = _blobs()
    memory = ODCMemory(60, 8, num_clusters=3, min_cluster_size=5, seed=3)
    memory.initialize(x)
    labels = _np(memory.labels)
    found = {int(labels[truth == b][0]) for b in range(3)}
    assert found == {0, 1, 2}
    for b in range(3):
        assert len(set(labels[truth == b])) == 1
    np.testing.assert_allclose(np.linalg.norm(_np(memory.features), axis=1), 1.0, rtol=1e-5)
    assert int(_np(memory.initialized)) == 1
    again = ODCMemory(60, 8, num_clusters=3, min_cluster_size=5, seed=3)
    again.initialize(x)
    _assert_same_state(memory, again)
    labels_np, _ = kmeans(x, 3, seed=3)
    np.testing.assert_array_equal(labels_np, labels)


def test_initialize_with_labels_fills_empty_clusters():
    x, _ = _blobs(n_per=4, k=2)
    memory = ODCMemory(8, 8, num_clusters=3, min_cluster_size=2, seed=0)
    memory.initialize(x, labels=np.zeros(8, "int64"))
    # One pass guarantees non-empty clusters (a split half may still be small,
    # as in the official code; the next pass fixes it).
    assert np.bincount(_np(memory.labels), minlength=3).min() >= 1


# -------------------------------------------------------------- bad input
def test_bad_arguments_quote_the_value():
    with pytest.raises(ValueError, match=r"K=300.*\(200\).*larger than the data set"):
        ODCMemory(200, 8, num_clusters=300)
    with pytest.raises(ValueError, match="num_clusters=1"):
        ODCMemory(200, 8, num_clusters=1)
    with pytest.raises(ValueError, match="momentum=1.5"):
        ODCMemory(200, 8, momentum=1.5)
    memory = ODCMemory(12, 2, num_clusters=3)
    with pytest.raises(ValueError, match=r"\(12, 2\).*\(10, 3\)"):
        memory.initialize(np.ones((10, 3), "float32"))
    with pytest.raises(ValueError, match="float32"):
        memory.update(np.array([0.0, 1.0], "float32"), np.ones((2, 2), "float32"))
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        memory.update(np.array([0, 1]), np.ones((2, 5), "float32"))
    with pytest.raises(ValueError, match="memory"):
        ODCCallback("odc")


# ---------------------------------------------------------------- saving
@keras.saving.register_keras_serializable(package="test_odc")
class _Holder(keras.Model):
    def __init__(self, num_samples=12, **kwargs):
        super().__init__(**kwargs)
        self.num_samples = num_samples
        self.odc = ODCMemory(num_samples, 2, num_clusters=3, min_cluster_size=2, seed=1)
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        return {**super().get_config(), "num_samples": self.num_samples}


def test_state_survives_save_and_load(tmp_path):
    model = _Holder()
    model(np.zeros((1, 2), "float32"))
    model.odc.initialize(_twelve_rows())
    model.odc.update(np.array([0, 5]), np.array([[1, 2], [3, -1]], "float32"))
    assert model.odc.get_config()["min_cluster_size"] == 2
    path = str(tmp_path / "holder.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    _assert_same_state(model.odc, loaded.odc)
    model.save_weights(str(tmp_path / "holder.weights.h5"))
    fresh = _Holder()
    fresh(np.zeros((1, 2), "float32"))
    assert int(_np(fresh.odc.initialized)) == 0
    fresh.load_weights(str(tmp_path / "holder.weights.h5"))
    _assert_same_state(model.odc, fresh.odc)


# -------------------------------------------------------- compiled update
def _twelve_rows():
    return _angles(0, 10, 20, 30, 120, 130, 140, 150, 240, 250, 260, 270)


def _memory_pair():
    x = _twelve_rows()
    a, b = (ODCMemory(12, 2, num_clusters=3, min_cluster_size=2, seed=1) for _ in range(2))
    a.initialize(x)
    b.initialize(x)
    ids = np.array([3, 0, 11, 6], "int32")
    feats = np.random.default_rng(1).normal(size=(4, 2)).astype("float32")
    return a, b, ids, feats


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function: TensorFlow backend")
def test_update_inside_tf_function_matches_eager():
    import tensorflow as tf

    eager, compiled, ids, feats = _memory_pair()
    want = eager.update(ids, feats)
    got = tf.function(compiled.update)(tf.constant(ids), tf.constant(feats))
    np.testing.assert_array_equal(_np(got["labels"]), _np(want["labels"]))
    _assert_same_state(eager, compiled)


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit: JAX backend")
def test_update_under_jax_jit_stateless_matches_eager():
    import jax

    eager, compiled, ids, feats = _memory_pair()
    want = eager.update(ids, feats)
    variables = [compiled.features, compiled.labels, compiled.centroids]

    @jax.jit
    def step(values, ids, feats):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            out = compiled.update(ids, feats)
        return out, [scope.get_current_value(v) for v in variables]

    out, new = step([v.value for v in variables], ids, feats)
    for v, value in zip(variables, new):
        v.assign(value)
    np.testing.assert_array_equal(_np(out["labels"]), _np(want["labels"]))
    _assert_same_state(eager, compiled)


# ------------------------------------------------------------- fit + callback
class Clusterer(StepModel):
    """A model whose step writes its batch's (ids, 2-d features) into an ODC
    memory of `num_samples` rows (every replica's, all-gathered, under a
    MirroredStrategy: tests/training/test_distributed.py uses it too)."""

    def __init__(self, num_samples=8, **kwargs):
        super().__init__(**kwargs)
        self.odc = ODCMemory(num_samples, 2, num_clusters=3, min_cluster_size=2, seed=0)
        self.dense = keras.layers.Dense(1)
        self.dense.build((None, 2))
        self.built = True
        self.add_tracker(keras.metrics.Mean(name="loss"))

    def call(self, inputs, training=False):
        return self.step_outputs(inputs, training)

    def train_outputs(self, x, y=None):
        self.odc.update(all_gather(x["ids"]), all_gather(ops.stop_gradient(x["features"])))
        return {"loss": ops.mean(ops.square(self.dense(x["features"])))}


def _start(memory):
    # Cluster 2 has one row and a zero centroid, so the first update (which
    # re-labels row 7) empties it: the callback has a cluster to refill.
    _set(memory, features=_angles(0, 30, 100, 130, 200, 230, 300, 330),
         labels=[0, 0, 0, 1, 1, 1, 1, 2], centroids=[[1, 0], [-1, 0], [0, 0]])


@pytest.mark.training
def test_fit_with_callback_matches_the_eager_sequence():
    # On JAX the host-side writes of the callback (centroids, the small-cluster
    # fix) only reach the next compiled step, and outlive the epoch, through
    # the state sync that reading `callback.model` triggers.
    model = Clusterer()
    _start(model.odc)
    ids = np.array([5, 2, 7, 0, 3, 6, 1, 4], "int32")
    feats = np.random.default_rng(0).normal(size=(8, 2)).astype("float32")
    callback = ODCCallback(model.odc, centroid_interval=1, small_cluster_interval=1)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit({"ids": ids, "features": feats}, batch_size=4, epochs=2,
                        shuffle=False, verbose=0, callbacks=[callback])

    ref, no_callback = ODCMemory(8, 2, 3, min_cluster_size=2, seed=0), \
        ODCMemory(8, 2, 3, min_cluster_size=2, seed=0)
    _start(ref)
    _start(no_callback)
    fixed = []
    for _ in range(2):
        for b in (slice(0, 4), slice(4, 8)):
            ref.update(ids[b], feats[b])
            no_callback.update(ids[b], feats[b])
            ref.recompute_centroids()
            fixed.append(ref.deal_with_small_clusters())
    assert fixed[0] >= 1  # the callback had something to fix
    assert not np.allclose(_np(ref.centroids), _np(no_callback.centroids))
    _assert_same_state(model.odc, ref)
    assert [h["epoch"] for h in callback.history] == [0, 1]
    assert callback.history[-1]["cluster_sizes"] == list(np.bincount(_np(ref.labels),
                                                                     minlength=3))
    assert history.history["odc_min_cluster"][-1] == callback.history[-1]["min_size"]


def test_callback_intervals():
    memory = ODCMemory(8, 2, num_clusters=3)
    calls = []
    memory.recompute_centroids = lambda: calls.append("c")
    memory.deal_with_small_clusters = lambda: calls.append("s")
    callback = ODCCallback(memory, centroid_interval=3, small_cluster_interval=2)
    callback.set_model(keras.Sequential([keras.layers.Dense(1)]))
    for batch in range(6):
        callback.on_train_batch_end(batch)
    assert calls == []  # not initialised yet
    memory.initialized.assign(1)
    for batch in range(6):
        callback.on_train_batch_end(batch)
    # batches 7..12 of the fit: 8 s, 9 c, 10 s, 12 c s
    assert calls == ["s", "c", "s", "c", "s"]

