"""ODC (online deep clustering, Zhan et al. 2020): features and labels over sample ids.

A memory bank holds one L2-normalised feature and one cluster label per
training sample, and K centroids. Each training step writes the batch's new
features into the memory at the batch's sample ids and re-assigns their labels
to the nearest centroid (`ODCMemory.update`, in-graph); between steps,
`ODCCallback` recomputes the centroids and dissolves clusters that became too
small, refilling each by splitting the largest cluster in two, so that all K
clusters stay in use (`recompute_centroids`, `deal_with_small_clusters`,
host-side). The start is k-means over the features of a first pass over the
data (`initialize`).

Settings of the official ODC / SAMix code (OpenMixup `models/memories/odc_memory.py`,
`core/hooks/odc_hook.py`, `configs/selfsup/_base_/models/odc/r18.py`): memory
momentum 0.5 (f ← normalise((1 − m) f_old + m f_new)), labels by the largest
dot product with the centroids, centroids = the (unnormalised) mean of the
members' features with empty clusters keeping their old centroid, re-weighting
w_c ∝ n_c^(−0.5) normalised to sum 1, small clusters dealt with every
iteration and centroids recomputed every 10 iterations, the largest cluster
split by 2-means (20 iterations). `min_cluster_size` is 20 there (ImageNet);
here it is an argument (default 20).

The k-means and 2-means are a small seeded numpy implementation (k-means++
start, Lloyd iterations on cosine similarity): scikit-learn is not a
dependency, and neither Keras nor TensorFlow ships a maintained k-means.
"""

import numbers

import keras
import numpy as np
from keras import ops

_BACKEND = keras.backend.backend()


def all_gather(x):
    """Concatenates `x` over the replicas of a TF `tf.distribute` strategy.

    Identity outside a replica context, with one replica, and on JAX and
    torch (a JAX `keras.distribution` step is one global program).
    """
    if _BACKEND != "tensorflow":
        return x
    import tensorflow as tf  # replica context of tf.distribute (MirroredStrategy)

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return x
    return ctx.all_gather(x, axis=0)


def _normalize(x):
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-24))


def _np_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeans(features, k, rng, iterations=20):
    """Seeded k-means on (N, d) unit rows by dot-product similarity.

    k-means++ start (each next centre drawn ∝ squared distance to the
    nearest chosen one), then Lloyd steps; a cluster that empties is
    re-seeded with the point farthest from its centre. Returns int labels (N,).
    """
    n = len(features)
    centres = [features[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(2.0 - 2.0 * features @ np.stack(centres).T, axis=1).clip(0)
        total = d2.sum()
        centres.append(features[rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)])
    centres = np.stack(centres)
    labels = np.zeros(n, "int64")
    for _ in range(iterations):
        similarity = features @ centres.T
        labels = similarity.argmax(axis=1)
        for c in range(k):
            members = labels == c
            if members.any():
                centres[c] = features[members].mean(0)
            else:  # re-seed an empty cluster with the worst-fitting point
                worst = similarity[np.arange(n), labels].argmin()
                centres[c] = features[worst]
                labels[worst] = c
    return labels


@keras.saving.register_keras_serializable(package="keras_amix")
class ODCMemory(keras.layers.Layer):
    """The ODC memory: a feature and a cluster label per sample, and K centroids.

    The state is non-trainable Keras weights, so it is saved with a model that
    holds the memory (`model.save`, `save_weights`, `BackupAndRestore`).
    Under `tf.distribute.MirroredStrategy` every replica writes the same
    all-gathered values (`aggregation="only_first_replica"`): pass the
    all-gathered ids and features (`all_gather`) to `update`.

    Args:
        num_samples: int, N, the number of training samples (ids 0..N−1).
        feature_dim: int, d, the feature size.
        num_clusters: int, K (200 in the paper), 2 <= K <= N.
        momentum: float in (0, 1], the memory's update weight of a new feature (0.5).
        min_cluster_size: int >= 1; a cluster with fewer members is dissolved
            and refilled by splitting the largest (20). With N < K ·
            min_cluster_size some clusters must stay small: then a cluster is
            refilled only when it is empty.
        seed: int seed of the k-means start and the splits.

    Example:

    ```python
    memory = ODCMemory(num_samples=5000, feature_dim=128, num_clusters=200)
    memory.initialize(first_pass_features)          # (5000, 128), k-means
    labels = memory.update(ids, features)["labels"]  # in the train step
    ```

    Reference: Zhan et al. 2020 (Online Deep Clustering); AMix paper §3.3, Table 1.
    """

    def __init__(self, num_samples, feature_dim, num_clusters=200, momentum=0.5,
                 min_cluster_size=20, seed=None, **kwargs):
        super().__init__(**kwargs)
        for arg, value, low in (("num_samples", num_samples, 1), ("feature_dim", feature_dim, 1),
                                ("num_clusters", num_clusters, 2),
                                ("min_cluster_size", min_cluster_size, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"`{arg}` must be an int >= {low}; received {arg}={value!r}.")
        if num_clusters > num_samples:
            raise ValueError(
                f"`num_clusters` (K={num_clusters}) must be <= `num_samples` ({num_samples}): "
                "K larger than the data set leaves clusters that can never be filled.")
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) \
                or not 0.0 < momentum <= 1.0:
            raise ValueError(f"`momentum` must be in (0, 1]; received momentum={momentum!r}.")
        self.num_samples = int(num_samples)
        self.feature_dim = int(feature_dim)
        self.num_clusters = int(num_clusters)
        self.momentum = float(momentum)
        self.min_cluster_size = int(min_cluster_size)
        self.seed = seed

        def state(name, shape, dtype="float32"):
            return self.add_weight(shape=shape, dtype=dtype, initializer="zeros",
                                   trainable=False, name=name,
                                   aggregation="only_first_replica")

        self.features = state("features", (self.num_samples, self.feature_dim))
        self.labels = state("labels", (self.num_samples,), "int32")
        self.centroids = state("centroids", (self.num_clusters, self.feature_dim))
        self.initialized = state("initialized", (), "int32")
        self.fixes = state("fixes", (), "int32")  # splits so far: the host RNG's position
        self.built = True

    # ------------------------------------------------------------ in-graph
    def update(self, ids, features):
        """Writes the batch into the memory; returns its new labels and change ratio.

        f ← normalise((1 − m) f_old + m normalise(f_new)) at `ids`, then each
        row's label = argmax_c <centroid_c, f>. Returns {"labels": (B,) int32,
        "change_ratio": float32 scalar, the fraction of labels that changed}.
        """
        if not keras.backend.standardize_dtype(ids.dtype).startswith(("int", "uint")):
            raise ValueError(f"`ids` must be integer sample ids; received dtype {ids.dtype}.")
        ids = ops.cast(ops.reshape(ids, (-1,)), "int32")
        old = ops.take(ops.convert_to_tensor(self.features), ids, axis=0)
        rows = _normalize((1.0 - self.momentum) * old + self.momentum * _normalize(features))
        similarity = ops.matmul(rows, ops.transpose(ops.convert_to_tensor(self.centroids)))
        labels = ops.cast(ops.argmax(similarity, axis=-1), "int32")
        old_labels = ops.take(ops.convert_to_tensor(self.labels), ids, axis=0)
        index = ops.reshape(ids, (-1, 1))
        self.features.assign(ops.scatter_update(self.features, index, rows))
        self.labels.assign(ops.scatter_update(self.labels, index, labels))
        change = ops.mean(ops.cast(ops.not_equal(labels, old_labels), "float32"))
        return {"labels": labels, "change_ratio": change}

    def cluster_sizes(self):
        """(K,) int32 member counts."""
        labels = ops.convert_to_tensor(self.labels)
        return ops.cast(ops.segment_sum(ops.ones_like(labels), labels,
                                        num_segments=self.num_clusters), "int32")

    def class_weights(self):
        """(K,) float32 CE weights w_c ∝ n_c^(−1/2), summing to 1; 0 for an empty cluster."""
        n = ops.cast(self.cluster_sizes(), "float32")
        w = ops.where(n > 0, 1.0 / ops.sqrt(ops.maximum(n, 1.0)), 0.0)
        return w / ops.maximum(ops.sum(w), 1e-12)

    def recompute_centroids(self):
        """Centroid c = the mean of its members' features; an empty cluster keeps its own."""
        labels = ops.convert_to_tensor(self.labels)
        sums = ops.segment_sum(ops.convert_to_tensor(self.features), labels,
                               num_segments=self.num_clusters)
        n = ops.cast(ops.segment_sum(ops.ones_like(labels), labels,
                                     num_segments=self.num_clusters), "float32")
        means = sums / ops.maximum(n, 1.0)[:, None]
        self.centroids.assign(ops.where((n > 0)[:, None], means,
                                        ops.convert_to_tensor(self.centroids)))

    # ----------------------------------------------------------- host-side
    def deal_with_small_clusters(self):
        """Dissolves clusters below `min_cluster_size`, refilling each by splitting
        the largest cluster with 2-means; returns the number of clusters refilled.

        Host-side (numpy); call it between steps (`ODCCallback`).
        """
        labels = ops.convert_to_numpy(self.labels).astype("int64")
        features = ops.convert_to_numpy(self.features)
        centroids = ops.convert_to_numpy(self.centroids)
        k = self.num_clusters
        sizes = np.bincount(labels, minlength=k)
        threshold = self.min_cluster_size
        if self.num_samples < k * threshold:
            threshold = 1  # not all K can reach the minimum: keep them non-empty only
        small = np.flatnonzero(sizes < threshold)
        if small.size == 0:
            return 0
        keep = np.setdiff1d(np.arange(k), small)
        for c in small:  # members of a small cluster go to the nearest remaining one
            members = np.flatnonzero(labels == c)
            if members.size:
                labels[members] = keep[(features[members] @ centroids[keep].T).argmax(1)]
        fixes = int(ops.convert_to_numpy(self.fixes))
        rng = np.random.default_rng([0 if self.seed is None else int(self.seed), fixes])
        for c in small:
            largest = np.bincount(labels, minlength=k).argmax()
            members = np.flatnonzero(labels == largest)
            halves = kmeans(_np_normalize(features[members]), 2, rng)
            if halves.min() == halves.max():  # 2-means failed: a random half
                halves = np.zeros(members.size, "int64")
                halves[rng.permutation(members.size)[: members.size // 2]] = 1
            labels[members[halves == 1]] = c
            for cluster in (largest, c):
                centroids[cluster] = features[labels == cluster].mean(0)
        self.labels.assign(labels.astype("int32"))
        self.centroids.assign(centroids)
        self.fixes.assign(fixes + int(small.size))
        return int(small.size)

    def initialize(self, features, labels=None):
        """The start: writes (N, d) `features` (normalised) and their labels
        (k-means unless `labels` is given), the centroids, and fixes small clusters."""
        features = np.asarray(ops.convert_to_numpy(features), "float32")
        if features.shape != (self.num_samples, self.feature_dim):
            raise ValueError(
                f"`features` must have shape (num_samples, feature_dim) = ({self.num_samples}, "
                f"{self.feature_dim}); received {features.shape}.")
        features = _np_normalize(features)
        if labels is None:
            rng = np.random.default_rng(0 if self.seed is None else int(self.seed))
            labels = kmeans(features, self.num_clusters, rng)
        labels = np.asarray(labels).reshape(-1)
        if labels.shape != (self.num_samples,) or labels.min() < 0 \
                or labels.max() >= self.num_clusters:
            raise ValueError(f"`labels` must be {self.num_samples} ints in [0, "
                             f"{self.num_clusters}); received shape {labels.shape}.")
        self.features.assign(features)
        self.labels.assign(labels.astype("int32"))
        self.recompute_centroids()
        self.deal_with_small_clusters()
        self.initialized.assign(1)

    def get_config(self):
        config = super().get_config()
        config.update(num_samples=self.num_samples, feature_dim=self.feature_dim,
                      num_clusters=self.num_clusters, momentum=self.momentum,
                      min_cluster_size=self.min_cluster_size, seed=self.seed)
        return config


class ODCCallback(keras.callbacks.Callback):
    """ODC's between-step work: centroids every `centroid_interval` batches,
    small clusters every `small_cluster_interval` batches (the official 10 and 1).

    At each epoch's end it adds `odc_min_cluster` / `odc_max_cluster` to the
    logs and appends the cluster sizes to `history` (a list of dicts).

    Args:
        memory: the `ODCMemory` (e.g. `model.odc`).
        centroid_interval, small_cluster_interval: ints >= 1.
    """

    def __init__(self, memory, centroid_interval=10, small_cluster_interval=1):
        super().__init__()
        for arg, value in (("centroid_interval", centroid_interval),
                           ("small_cluster_interval", small_cluster_interval)):
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"`{arg}` must be an int >= 1; received {arg}={value!r}.")
        self.memory = memory
        self.centroid_interval = int(centroid_interval)
        self.small_cluster_interval = int(small_cluster_interval)
        self.history = []
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        # On JAX the trainer holds the variables in its own state during an
        # epoch: touching `self.model` syncs them into the variables, and the
        # next step re-reads what is written here.
        _ = self.model
        self._batches += 1
        if self._batches % self.centroid_interval == 0:
            self.memory.recompute_centroids()
        if self._batches % self.small_cluster_interval == 0:
            self.memory.deal_with_small_clusters()

    def on_epoch_end(self, epoch, logs=None):
        _ = self.model
        sizes = ops.convert_to_numpy(self.memory.cluster_sizes()).astype(int)
        self.history.append({"epoch": int(epoch), "cluster_sizes": sizes.tolist()})
        if logs is not None:
            logs["odc_min_cluster"] = float(sizes.min())
            logs["odc_max_cluster"] = float(sizes.max())
