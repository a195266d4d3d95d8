import keras
import numpy as np
import pytest

from keras_amix.models.odc import ODCCallback, ODCMemory, kmeans

BACKEND = keras.backend.backend()


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _unit(*rows):
    x = np.asarray(rows, "float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_memory_update_and_reassignment_by_hand():
    memory = ODCMemory(3, 2, num_clusters=2, momentum=0.5, min_cluster_size=1)
    memory.initialize(_unit([1, 0], [0, 1], [1, 1]), labels=np.array([0, 1, 1]))
    # Centroids: the plain means of the members' features.
    np.testing.assert_allclose(_np(memory.centroids),
                               [[1, 0], [0.5 * 2 ** -0.5, 0.5 + 0.5 * 2 ** -0.5]], rtol=1e-6)
    out = memory.update(np.array([1]), np.array([[3.0, 0.0]], "float32"))
    # f = normalise(0.5 (0, 1) + 0.5 (1, 0)) = (1, 1)/√2: closer to centroid 1?
    # <c0, f> = 0.7071, <c1, f> = 0.25 + 0.3536 + ... computed:
    f = np.array([1, 1]) / np.sqrt(2)
    np.testing.assert_allclose(_np(memory.features)[1], f, rtol=1e-6)
    expected = int(np.argmax(_np(memory.centroids) @ f))
    assert int(_np(out["labels"])[0]) == expected == int(_np(memory.labels)[1])
    assert float(_np(out["change_ratio"])) == float(expected != 1)
    # Rows not in the batch are untouched.
    np.testing.assert_allclose(_np(memory.features)[[0, 2]], _unit([1, 0], [1, 1]), rtol=1e-6)


def test_recompute_centroids_keeps_an_empty_clusters_centroid():
    memory = ODCMemory(3, 2, num_clusters=3, min_cluster_size=1)
    memory.features.assign(_unit([1, 0], [0, 1], [0, 1]))
    memory.labels.assign(np.array([0, 0, 2], "int32"))
    memory.centroids.assign(np.array([[9, 9], [7, 7], [5, 5]], "float32"))
    memory.recompute_centroids()
    np.testing.assert_allclose(_np(memory.centroids), [[0.5, 0.5], [7, 7], [0, 1]], rtol=1e-6)


def test_class_weights_by_hand():
    memory = ODCMemory(5, 2, num_clusters=3, min_cluster_size=1)
    memory.labels.assign(np.array([0, 0, 0, 0, 1], "int32"))  # n = (4, 1, 0)
    w = np.array([4 ** -0.5, 1.0, 0.0])
    np.testing.assert_allclose(_np(memory.class_weights()), w / w.sum(), rtol=1e-6)
    np.testing.assert_array_equal(_np(memory.cluster_sizes()), [4, 1, 0])


def test_small_clusters_are_dissolved_and_refilled_from_the_largest():
    rng = np.random.default_rng(0)
    # Two blobs of 10 in cluster 0; one stray sample alone in cluster 1 (below the minimum).
    a = rng.normal([5, 0, 0], 0.1, size=(10, 3))
    b = rng.normal([0, 5, 0], 0.1, size=(10, 3))
    features = np.concatenate([a, b, [[0, 0, 5]]]).astype("float32")
    memory = ODCMemory(21, 3, num_clusters=2, min_cluster_size=3, seed=0)
    memory.initialize(features, labels=np.array([0] * 20 + [1]))  # deals with small ones
    sizes = _np(memory.cluster_sizes())
    assert (sizes >= 3).all() and sizes.sum() == 21, sizes
    # The stray was dissolved and cluster 1 refilled by splitting cluster 0 along the blobs.
    got = _np(memory.labels)
    assert len(set(got[:10])) == 1 and len(set(got[10:20])) == 1 and got[0] != got[10]
    assert memory.deal_with_small_clusters() == 0  # nothing left to fix
    # Each centroid is the mean of its members again.
    for c in range(2):
        np.testing.assert_allclose(_np(memory.centroids)[c],
                                   _np(memory.features)[got == c].mean(0), rtol=1e-5)


def test_clusters_stay_non_empty_when_the_minimum_cannot_be_met():
    memory = ODCMemory(6, 2, num_clusters=3, min_cluster_size=20, seed=1)
    memory.initialize(np.random.default_rng(1).normal(size=(6, 2)),
                      labels=np.zeros(6, "int64"))
    assert (_np(memory.cluster_sizes()) > 0).all()


def test_kmeans_recovers_separated_blobs():
    rng = np.random.default_rng(2)
    centres = np.eye(4)[:, :4] * 10
    x = np.concatenate([rng.normal(c, 0.2, size=(15, 4)) for c in centres]).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = kmeans(x, 4, np.random.default_rng(0))
    for i in range(4):
        assert len(set(labels[15 * i: 15 * (i + 1)])) == 1
    assert len(set(labels)) == 4


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_samples=10, feature_dim=4, num_clusters=20), "K larger than the data set"),
    (dict(num_samples=10, feature_dim=4, num_clusters=1), "num_clusters"),
    (dict(num_samples=10, feature_dim=4, momentum=0.0), "momentum"),
    (dict(num_samples=10, feature_dim=0), "feature_dim"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ODCMemory(**{"num_clusters": 2, **kwargs})


def test_bad_inputs():
    memory = ODCMemory(4, 2, num_clusters=2, min_cluster_size=1)
    with pytest.raises(ValueError, match=r"\(4, 2\); received \(3, 2\)"):
        memory.initialize(np.ones((3, 2)))
    with pytest.raises(ValueError, match="integer sample ids"):
        memory.update(np.array([0.0, 1.0], "float32"), np.ones((2, 2), "float32"))


class Holder(keras.Model):
    """A tiny model whose step updates the memory, as MoCoV2 does."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2)
        self.odc = ODCMemory(8, 2, num_clusters=2, min_cluster_size=1, seed=0)

    def call(self, x):
        return self.dense(x["x"])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        self.odc.update(keras.ops.cast(x["ids"], "int32"), y_pred)
        return keras.ops.mean(keras.ops.square(y_pred))


def test_save_load_round_trip(tmp_path):
    model = Holder()
    x = {"x": np.random.default_rng(0).normal(size=(8, 3)).astype("float32"),
         "ids": np.arange(8)}
    model(x)
    model.odc.initialize(np.random.default_rng(1).normal(size=(8, 2)))
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    other = Holder()
    other(x)
    other.load_weights(path)
    for a, b in zip(model.odc.weights, other.odc.weights):
        np.testing.assert_array_equal(_np(a), _np(b))


@pytest.mark.training
def test_fit_updates_in_step_and_callback_writes_between_steps():
    """In-step updates and the callback's host-side writes both land (on JAX
    too, where the trainer keeps the variables in its own state)."""
    model = Holder()
    rng = np.random.default_rng(0)
    x = {"x": rng.normal(size=(8, 3)).astype("float32"), "ids": np.arange(8)}
    model(x)
    model.odc.initialize(rng.normal(size=(8, 2)))
    before = _np(model.odc.features).copy()
    model.compile(optimizer="sgd")
    callback = ODCCallback(model.odc, centroid_interval=1)
    model.fit(x, np.zeros((8,)), batch_size=4, epochs=2, verbose=0, callbacks=[callback])
    features = _np(model.odc.features)
    assert not np.allclose(features, before)  # the step's writes reached the variables
    labels = _np(model.odc.labels)
    means = np.stack([features[labels == c].mean(0) for c in range(2) if (labels == c).any()])
    # The callback recomputed the centroids from the final memory after the last batch.
    np.testing.assert_allclose(_np(model.odc.centroids)[np.unique(labels)], means, rtol=1e-5,
                               atol=1e-6)
    assert len(callback.history) == 2 and sum(callback.history[-1]["cluster_sizes"]) == 8
