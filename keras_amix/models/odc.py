"""ODC (online deep clustering): a memory of features and cluster labels by sample id.

`ODCMemory` keeps, for every training sample, an L2-normalised feature row and
a cluster label, plus K centroids. Each step the batch's rows move towards the
new features and are re-labelled by their nearest centroid (in-graph,
`keras.ops`); every few steps `ODCCallback` recomputes the centroids and
dissolves the clusters that became too small (host-side, numpy).

Official defaults (OpenMixup, the code of the AMix/SAMix paper; ODC of Zhan et
al. 2020 as ported from mmselfsup):

* memory momentum m = 0.5 and minimum cluster size 20:
  `configs/selfsup/_base_/models/odc/r18.py` (and `r50.py`), `memory_bank`
  (there K = 10000 for ImageNet; AMix-C uses K = 200, DESIGN §7).
* centroid update every 10 iterations, small clusters dealt with every
  iteration, cluster sizes logged every 50, loss re-weighting on with power
  0.5: `ODCHook` in `configs/selfsup/_base_/datasets/imagenet/odc_sz224_bs64.py`.
* re-weighting w_c = (n_c + 1e-5)^(-0.5) / Σ_c' (n_c' + 1e-5)^(-0.5), recomputed
  after every iteration: `set_reweight` in `openmixup/models/selfsup/odc.py`
  (the same in `moco_samix.py`).
* the largest cluster is split by 2-means (sklearn `KMeans(n_clusters=2,
  random_state=0, max_iter=20)`), the start is a k-means over the first pass
  (faiss, 20 iterations, L2-normalised features, no PCA), both in
  `openmixup/models/memories/odc_memory.py` and `core/hooks/deepcluster_hook.py`.

Deviations from the official code, each on purpose:

* Centroids are L2-normalised means (official: plain means), so labels are
  the argmax of the cosine similarity (spherical k-means).
* Class weights: empty clusters get weight 0 and the others sum to 1 (official:
  the 1e-5 smoothing gives an empty cluster a large weight). No sample carries
  an empty cluster's label and the weighted CE divides by Σ w[y], so the loss
  is the same.
* If N < K · `min_cluster_size` the official code fails (every cluster is
  "small"); here the threshold drops to N // K (>= 1), so all K clusters stay
  non-empty whatever N >= K is.
* k-means (start and 2-means split) is the small seeded numpy `kmeans` below,
  spherical with k-means++ seeding, since sklearn is not a dependency and
  neither Keras nor TF has a maintained k-means (TF's
  `tf.compat.v1.estimator.experimental.KMeans` went with the estimators).
"""

import numbers

import keras
import numpy as np
from keras import ops


def _normalize(x):
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-24))


def _normalize_np(x):
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _assign(x, centroids, chunk=65536):
    """Nearest centroid (cosine) of each row: (labels, similarity), in row chunks."""
    labels = np.empty(len(x), np.int64)
    sim = np.empty(len(x), np.float32)
    for start in range(0, len(x), chunk):
        s = x[start:start + chunk] @ centroids.T
        labels[start:start + chunk] = s.argmax(1)
        sim[start:start + chunk] = s.max(1)
    return labels, sim


def kmeans(features, num_clusters, seed=None, iterations=20):
    """Spherical k-means (k-means++ seeding) of the rows of `features`.

    Returns `(labels (N,) int64, centroids (K, d) float32, unit rows)`. When
    N >= K no cluster is empty: an emptied cluster takes the worst-fitting
    row of a cluster with at least two rows. `seed`: int, None or a numpy
    `Generator`.
    """
    x = _normalize_np(features)
    n, k = len(x), int(num_clusters)
    rng = np.random.default_rng(seed)
    centroids = np.empty((k, x.shape[1]), np.float32)
    centroids[0] = x[rng.integers(n)]
    dist = np.maximum(2.0 - 2.0 * (x @ centroids[0]), 0.0).astype(np.float64)
    for j in range(1, k):  # k-means++: D² sampling
        total = dist.sum()
        centroids[j] = x[rng.choice(n, p=dist / total) if total > 0 else rng.integers(n)]
        dist = np.minimum(dist, np.maximum(2.0 - 2.0 * (x @ centroids[j]), 0.0))
    labels = new = None
    for _ in range(max(int(iterations), 1)):
        new, sim = _assign(x, centroids)
        sizes = np.bincount(new, minlength=k)
        for empty in np.flatnonzero(sizes == 0):
            movable = np.flatnonzero(sizes[new] >= 2)
            if movable.size == 0:
                break
            row = movable[np.argmin(sim[movable])]
            sizes[new[row]] -= 1
            new[row], sizes[empty], sim[row] = empty, 1, 1.0
        filled = sizes > 0
        centroids[filled] = _normalize_np(_cluster_sums(x, new, k)[filled])
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
    return new, centroids


def _cluster_sums(x, labels, k):
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, x.shape[1]), np.float64)
    present = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[present]
    sums[present] = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
    return sums


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; received {name}={value!r}.")


@keras.saving.register_keras_serializable(package="keras_amix")
class ODCMemory(keras.layers.Layer):
    """ODC's memory: a feature row and a cluster label per sample id, and K centroids.

    State (non-trainable weights, created here, saved with the model that
    holds the layer): `features` (N, d) float32 unit rows, `labels` (N,)
    int32, `centroids` (K, d) float32 unit rows, `initialized` () int32.

    * `update(ids, features)` (in-graph, any backend, inside `fit`'s step):
      f ← normalise((1 − m) f_old + m normalise(f_new)) at `ids`, then
      label = argmax_c ⟨f, centroid_c⟩. Under `tf.distribute` pass the
      all-gathered global batch (`all_gather(ids)`, `all_gather(features)`):
      every replica then writes the same values. Ids must lie in [0, N) and
      be distinct within a call.
    * `recompute_centroids()`: centroid_c = normalise(mean of the rows labelled
      c); an empty cluster keeps its centroid. In-graph or eager.
    * `deal_with_small_clusters()` (host-side, eager): clusters smaller than
      `min_cluster_size` are dissolved (their rows go to the nearest remaining
      centroid) and each freed id is refilled by 2-means-splitting the
      current largest cluster. Afterwards all K clusters are non-empty; when
      N < K · `min_cluster_size` the threshold is N // K. Returns the number
      of clusters fixed.
    * `initialize(features, labels=None)` (host-side): the start from a first
      pass over the data; k-means unless `labels` are given.
    * `class_weights(power=0.5)`, `cluster_sizes()`: (K,) tensors, in-graph.

    `ODCCallback(memory)` runs the two periodic host-side steps during `fit`.

    Args:
        num_samples: int >= 1, N, the training set's size (rows by sample id).
        feature_dim: int >= 1, d.
        num_clusters: int, K, in [2, num_samples] (200).
        momentum: float in [0, 1], m, the weight of the new feature (0.5).
        min_cluster_size: int >= 0, clusters below it are dissolved (20; 0 off).
        seed: int or None, seed of k-means and of the 2-means splits.

    Example:

    ```python
    memory = ODCMemory(num_samples=5000, feature_dim=128, num_clusters=200)
    memory.initialize(first_pass_embeddings)          # (5000, 128)
    out = memory.update(ids, embeddings)               # in the train step
    weights = memory.class_weights()                   # for the cluster CE
    model.fit(ds, callbacks=[ODCCallback(memory)])
    ```

    Reference: Zhan et al. 2020, "Online Deep Clustering for Unsupervised
    Representation Learning" (§3: memory update, re-assignment, loss
    re-weighting, dealing with small clusters); AMix paper §3.2 (AMix-C).
    """

    def __init__(self, num_samples, feature_dim, num_clusters=200, momentum=0.5,
                 min_cluster_size=20, seed=None, **kwargs):
        super().__init__(**kwargs)
        _check_int("num_samples", num_samples, 1)
        _check_int("feature_dim", feature_dim, 1)
        _check_int("num_clusters", num_clusters, 2)
        _check_int("min_cluster_size", min_cluster_size, 0)
        if num_clusters > num_samples:
            raise ValueError(
                f"`num_clusters` (K={num_clusters}) must be <= `num_samples` ({num_samples}): "
                "K larger than the data set leaves clusters that no sample can fill.")
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) \
                or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1]; received momentum={momentum!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"`seed` must be an int or None; received seed={seed!r}.")
        self.num_samples, self.feature_dim = int(num_samples), int(feature_dim)
        self.num_clusters, self.momentum = int(num_clusters), float(momentum)
        self.min_cluster_size, self.seed = int(min_cluster_size), seed

        def state(name, shape, dtype="float32"):
            # "only_first_replica": under MirroredStrategy every replica writes
            # the same all-gathered values; the first replica's copy is kept.
            return self.add_weight(shape=shape, dtype=dtype, initializer="zeros",
                                   trainable=False, name=name,
                                   aggregation="only_first_replica")

        self.features = state("features", (self.num_samples, self.feature_dim))
        self.labels = state("labels", (self.num_samples,), "int32")
        self.centroids = state("centroids", (self.num_clusters, self.feature_dim))
        self.initialized = state("initialized", (), "int32")
        self.built = True

    # ------------------------------------------------------------ in-graph
    def update(self, ids, features):
        """Memory update and re-assignment at `ids`; {"labels" (B,), "change_ratio" ()}."""
        ids = ops.convert_to_tensor(ids)
        dtype = keras.backend.standardize_dtype(ids.dtype)
        if "int" not in dtype:
            raise ValueError(f"`ids` must be integer sample ids in [0, {self.num_samples}); "
                             f"received ids of dtype {dtype} (shape {tuple(ids.shape)}).")
        ids = ops.cast(ops.reshape(ids, (-1,)), "int32")
        features = ops.convert_to_tensor(features)
        shape = tuple(features.shape)
        # Unknown (None) sizes pass: an all-gather under tf.distribute drops them.
        if len(shape) != 2 or shape[-1] not in (None, self.feature_dim) or (
                None not in (shape[0], ids.shape[0]) and shape[0] != ids.shape[0]):
            raise ValueError(f"`features` must have shape (B, {self.feature_dim}) with B the "
                             f"number of ids ({ids.shape[0]}); received shape {shape}.")
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
        """(K,) int32 number of samples per cluster."""
        labels = ops.convert_to_tensor(self.labels)
        return ops.segment_sum(ops.ones_like(labels), labels, num_segments=self.num_clusters)

    def class_weights(self, power=0.5):
        """(K,) float32 w_c ∝ n_c^(−power) over non-empty clusters, summing to 1; 0 if empty."""
        n = ops.cast(self.cluster_sizes(), "float32")
        w = ops.where(n > 0, ops.power(ops.maximum(n, 1.0), -power), 0.0)
        return w / ops.maximum(ops.sum(w), 1e-12)

    def recompute_centroids(self):
        labels = ops.convert_to_tensor(self.labels)
        sums = ops.segment_sum(ops.convert_to_tensor(self.features), labels,
                               num_segments=self.num_clusters)
        counts = ops.segment_sum(ops.ones_like(labels), labels, num_segments=self.num_clusters)
        self.centroids.assign(ops.where((counts > 0)[:, None], _normalize(sums),
                                        ops.convert_to_tensor(self.centroids)))

    # ----------------------------------------------------------- host-side
    def deal_with_small_clusters(self):
        labels = ops.convert_to_numpy(self.labels).astype(np.int64)
        k = self.num_clusters
        threshold = min(self.min_cluster_size, self.num_samples // k)
        small = np.flatnonzero(np.bincount(labels, minlength=k) < threshold)
        if small.size == 0:  # the usual case: only the labels left the device
            return 0
        features = ops.convert_to_numpy(self.features)
        centroids = ops.convert_to_numpy(self.centroids).copy()
        keep = np.setdiff1d(np.arange(k), small)
        members = np.isin(labels, small)
        if members.any():  # dissolve: to the nearest remaining centroid
            labels[members] = keep[_assign(features[members], centroids[keep])[0]]
        rng = np.random.default_rng(self.seed)
        for empty in small:  # refill: split the current largest cluster in two
            largest = int(np.argmax(np.bincount(labels, minlength=k)))
            rows = np.flatnonzero(labels == largest)
            halves, _ = kmeans(features[rows], 2, seed=rng)
            labels[rows[halves == 1]] = empty
            for c in (largest, empty):
                centroids[c] = _normalize_np(features[labels == c].sum(0))
        self.labels.assign(labels.astype(np.int32))
        self.centroids.assign(centroids)
        return int(small.size)

    def initialize(self, features, labels=None):
        """Start from (N, d) first-pass features; k-means (seeded) unless `labels`."""
        features = np.asarray(ops.convert_to_numpy(features), np.float32)
        expected = (self.num_samples, self.feature_dim)
        if features.shape != expected:
            raise ValueError(f"`features` must have shape (num_samples, feature_dim) = "
                             f"{expected}; received shape {features.shape}.")
        features = _normalize_np(features)
        if labels is None:
            labels, _ = kmeans(features, self.num_clusters, seed=self.seed)
        labels = np.asarray(ops.convert_to_numpy(labels)).reshape(-1)
        if labels.shape != (self.num_samples,) or not np.issubdtype(labels.dtype, np.integer) \
                or labels.min() < 0 or labels.max() >= self.num_clusters:
            raise ValueError(f"`labels` must be {self.num_samples} ints in "
                             f"[0, {self.num_clusters}); received shape {labels.shape}, "
                             f"dtype {labels.dtype}.")
        self.features.assign(features)
        self.labels.assign(labels.astype(np.int32))
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
    """ODC's periodic host-side steps during `fit`, and a cluster-size log.

    Every `centroid_interval` training batches it calls
    `memory.recompute_centroids()`, every `small_cluster_interval` batches
    `memory.deal_with_small_clusters()` (nothing before `memory.initialize`).
    Batches are counted by the model optimizer's `iterations` (so a resumed
    run keeps the uninterrupted run's schedule), else over this `fit`. At
    each epoch end it appends `{"epoch", "cluster_sizes" (list of K ints),
    "min_size", "max_size"}` to `history` (a list, given or new) and adds
    `odc_min_cluster` / `odc_max_cluster` to the logs.

    Args:
        memory: the `ODCMemory` the trained model holds.
        centroid_interval: int >= 1 (10, OpenMixup's ODCHook).
        small_cluster_interval: int >= 1 (1, ODCHook).
        history: list or None.

    Example:

    ```python
    odc = ODCCallback(model.odc)
    model.fit(ds, epochs=10, callbacks=[odc])
    sizes = [h["cluster_sizes"] for h in odc.history]
    ```

    Reference: Zhan et al. 2020 (ODC, §3); OpenMixup `ODCHook`.
    """

    def __init__(self, memory, centroid_interval=10, small_cluster_interval=1, history=None):
        super().__init__()
        if not isinstance(memory, ODCMemory):
            raise ValueError(f"`memory` must be an ODCMemory; received {type(memory).__name__}.")
        _check_int("centroid_interval", centroid_interval, 1)
        _check_int("small_cluster_interval", small_cluster_interval, 1)
        self.memory = memory
        self.centroid_interval = int(centroid_interval)
        self.small_cluster_interval = int(small_cluster_interval)
        self.history = [] if history is None else history
        self._batches = 0

    def _sync(self):
        # JAX: during an epoch `fit` keeps the variables in a state tuple (their
        # own values purged). Reading `self.model` runs `jax_state_sync()`, which
        # writes that state back and makes the next step re-read the variables,
        # so the host-side writes below reach the next step and survive the epoch.
        return self.model

    def on_train_batch_end(self, batch, logs=None):
        model = self._sync()
        # The optimizer's step count, not this process's batches: a resumed run
        # keeps the schedule of the uninterrupted one.
        optimizer = getattr(model, "optimizer", None)
        self._batches = (int(ops.convert_to_numpy(optimizer.iterations)) if optimizer is not None
                         else self._batches + 1)
        centroids = self._batches % self.centroid_interval == 0
        small = self._batches % self.small_cluster_interval == 0
        if not (centroids or small):
            return
        if not int(ops.convert_to_numpy(self.memory.initialized)):
            return
        if centroids:
            self.memory.recompute_centroids()
        if small:
            self.memory.deal_with_small_clusters()

    def on_epoch_end(self, epoch, logs=None):
        self._sync()
        sizes = [int(n) for n in ops.convert_to_numpy(self.memory.cluster_sizes())]
        self.history.append({"epoch": int(epoch), "cluster_sizes": sizes,
                             "min_size": min(sizes), "max_size": max(sizes)})
        if logs is not None:
            logs["odc_min_cluster"] = min(sizes)
            logs["odc_max_cluster"] = max(sizes)
