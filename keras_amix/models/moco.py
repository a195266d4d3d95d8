"""MoCo v2 with optional instance-level mixup (cross-view, i-Mix, Un-Mix, MoCHi)."""

import numbers

import keras
from keras import ops

from keras_amix import losses as losses_lib
from keras_amix.backbones import feature_channels
from keras_amix.layers import split_batch_norm as split_bn
from keras_amix.losses.contrastive import l2_normalize
from keras_amix.models import moco_mixing as mixing_lib
from keras_amix.models.odc import ODCMemory
from keras_amix.training.backend import all_gather, num_replicas
from keras_amix.training.step import StepBatch, StepModel, ema_update


# Mixing methods implemented by strategies of their own (not class-level mixers).
SSL_METHODS = tuple(mixing_lib.STRATEGIES)
_PLAIN = mixing_lib.MoCoMixing()  # MoCo v2 without a mixup term


@keras.saving.register_keras_serializable(package="keras_amix")
class MoCoV2(StepModel):
    """MoCo v2: a query encoder trained by infoNCE against an EMA key encoder.

    Each training step takes two augmented views of every image. The query
    encoder (backbone + global average pooling + 2-layer MLP: `hidden_dim`,
    ReLU, `projection_dim`) embeds view 1, the key encoder (an EMA copy of
    the query encoder, never touched by the optimizer) embeds view 2, and the
    loss is the one-directional infoNCE of paper eq. 2 (q = view 1, k = view
    2, as in MoCo v2), a (K+1)-way softmax with the positive key at index 0
    and the queue of K keys as negatives. The batch's view-2 keys (all-gathered
    over replicas under `tf.distribute.MirroredStrategy`) are then written
    into the queue at `queue_ptr`, wrapping modulo `queue_size`. After the
    optimizer update the key encoder follows θ_k ← m θ_k + (1 − m) θ_q,
    applied first thing in the next step (as MoCo's code does).

    MoCo's shuffling BN on one device: a backbone built with `bn_splits=S`
    (`keras_amix.backbones.resnet`) normalises S groups of the batch apart,
    and the key encoder takes its batch reordered across the groups
    (`keras_amix.layers.split_batch_norm.interleave`, undone on the keys), so
    a query and its positive key are normalised with statistics of different
    samples (MoCo §3.3: else the model can find the positive by the batch's
    statistics). The batch (per replica) must be a multiple of S.

    With `mixer` set, the step mixes by that strategy
    (`keras_amix.models.moco_mixing`, DESIGN §6); a name stands for one:

    * a class-level mixer name (`"mixup"`, `"cutmix"`, ...) or `Mixer` →
      `CrossView`: the paper's cross-view pipeline (§3.1, eq. 4); loss =
      eq. 2 + `mix_weight` · eq. 4.
    * `"imix"` → `IMix` (i-Mix): its loss replaces eq. 2 (`mix_weight`
      scales it).
    * `"unmix"` → `UnMix` (Un-Mix): eq. 2 + `mix_weight` · the mean of its
      MixUp and CutMix eq.-4 terms.
    * `"inter_intra"` → `InterIntra` (Inter-Intra (C), paper Table 4, Fig.
      2c): MixUp inside an ODC cluster, CutMix across; needs `num_samples`
      and `x["ids"]`.
    * `"puzzlemix_c"` → `PuzzleMixC` (PuzzleMix (C), paper Table 4): PuzzleMix
      in the cross-view pipeline, its saliency from the ODC labels; needs
      `num_samples` and `x["ids"]`.
    * `"mochi"` → `MoCHi`: synthetic hard negatives in eq. 2, no mixup term.

    Args:
        backbone: a `keras_amix.backbones.resnet(...)` model (unpooled
            stage-4 output); with `bn_splits > 1`, MoCo's split BN.
        projection_dim: int > 0, output size of the projection MLP (128).
        hidden_dim: int > 0, hidden size of the projection MLP (2048).
        queue_size: int > 0, number K of queued keys (65536 in the paper);
            must be >= the (global) batch size.
        temperature: float > 0, τ of the infoNCE (0.2).
        momentum: float in [0, 1], EMA momentum m of the key encoder (0.999).
        mixer: None, a `moco_mixing.MoCoMixing` strategy (e.g.
            `IMix(alpha=1.0)`), a class-level mixer name / `Mixer`, or one of
            "imix", "unmix", "inter_intra", "puzzlemix_c", "mochi".
        mixer_kwargs: dict of constructor arguments of a strategy or mixer
            given by name (e.g. `{"alpha": 1.0}`, the MoCHi sizes).
        mix_weight: float >= 0, weight of the mixup term.
        seed: int seed of the queue initialisation, λ, pairings and MoCHi.
        num_samples: int or None; given, the model keeps an ODC memory
            (`self.odc`, `keras_amix.models.ODCMemory`) of the key
            embeddings of the `num_samples` training images, updated at
            `x["ids"]` each step (required by "inter_intra").
        num_clusters: int, K of the ODC memory (200).
        odc_kwargs: more `ODCMemory` arguments (`momentum`,
            `min_cluster_size`).

    Call arguments:
        images: (B, H, W, C) normalised images.
        training: bool.

    `call` returns the L2-normalised *projection* of the query encoder;
    `encoder_features(images)` returns the pooled backbone features (what
    linear evaluation uses).

    Example:

    ```python
    backbone = keras_amix.backbones.resnet(18, width=64)
    model = MoCoV2(backbone, queue_size=4096, mixer="mixup")
    model.compile(optimizer=keras.optimizers.SGD(0.03, momentum=0.9))
    model.fit(two_view_ds, epochs=200)   # yields ({"view1", "view2"}, labels)
    ```

    Reference: AMix paper §2.1 (eq. 2), §2.2 (eq. 4), §3.1, §4.2; He et al.
    2020 and Chen et al. 2020 (MoCo, MoCo v2); Lee et al. 2021 (i-Mix);
    Shen et al. 2022 (Un-Mix); Kalantidis et al. 2020 (MoCHi).
    """

    nested_config_keys = ("backbone", "mixer")

    def __init__(self, backbone, projection_dim=128, hidden_dim=2048, queue_size=65536,
                 temperature=0.2, momentum=0.999, mixer=None, mixer_kwargs=None,
                 mix_weight=1.0, seed=None, num_samples=None, num_clusters=200,
                 odc_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        for arg, value in (("projection_dim", projection_dim), ("hidden_dim", hidden_dim),
                           ("queue_size", queue_size)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"`{arg}` must be a positive int; received {arg}={value!r}.")
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
                or not temperature > 0:
            raise ValueError(f"`temperature` must be > 0; received temperature={temperature!r}.")
        if not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1]; received momentum={momentum!r}.")
        if not isinstance(mix_weight, numbers.Real) or mix_weight < 0:
            raise ValueError(f"`mix_weight` must be >= 0; received mix_weight={mix_weight!r}.")
        self.backbone = backbone
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim)
        self.queue_size = int(queue_size)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.mix_weight = float(mix_weight)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

        # ---------------------------------------------------------- mixing
        self.mixer = mixing_lib.get(mixer, mixer_kwargs)  # a MoCoMixing strategy or None
        if self.mixer is not None:
            self.mixer.build(self)
        # Tracked so that the mixers' seed state saves with the model. Mixers hold
        # no weights; they are marked built so that `fit` needs no symbolic build
        # of the model (which would call it on the two-view dict).
        self._mixing_layers = [] if self.mixer is None else list(self.mixer.layers())
        for layer in self._mixing_layers:
            if not layer.built:
                layer.build(None)

        # -------------------------------------------------------- encoders
        feature_dim = feature_channels(backbone, "stage4")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.proj_hidden = keras.layers.Dense(self.hidden_dim, activation="relu",
                                              name="proj_hidden")
        self.proj_out = keras.layers.Dense(self.projection_dim, name="proj_out")
        self.proj_hidden.build((None, feature_dim))
        self.proj_out.build((None, self.hidden_dim))
        # The key encoder: an EMA copy. Its layers stay trainable (BatchNorm
        # uses batch statistics) but its variables are non-trainable.
        self.key_backbone = keras.models.clone_model(backbone)
        self.bn_splits = split_bn.num_splits(backbone)  # 1: plain BatchNorm
        self.key_proj_hidden = keras.layers.Dense(self.hidden_dim, activation="relu",
                                                  name="key_proj_hidden")
        self.key_proj_out = keras.layers.Dense(self.projection_dim, name="key_proj_out")
        self.key_proj_hidden.build((None, feature_dim))
        self.key_proj_out.build((None, self.hidden_dim))
        query_parts = (backbone, self.proj_hidden, self.proj_out)
        key_parts = (self.key_backbone, self.key_proj_hidden, self.key_proj_out)
        for k_part, q_part in zip(key_parts, query_parts):
            k_part.set_weights(q_part.get_weights())
            for variable in k_part.weights:
                variable.trainable = False
        self._ema_pairs = [
            (k, q)
            for k, q in zip(sum((p.weights for p in key_parts), []),
                            sum((p.weights for p in query_parts), []))
            if q.trainable
        ]

        # ------------------------------------------------------------- ODC
        if self.mixer is not None and self.mixer.needs_clusters and num_samples is None:
            raise ValueError(
                f"mixer={self.mixer.name!r} mixes by ODC cluster: pass `num_samples` (the "
                "training set's size, the memory's rows); received num_samples=None."
            )
        self.num_samples = None if num_samples is None else int(num_samples)
        self.num_clusters = int(num_clusters)
        self.odc_kwargs = dict(odc_kwargs or {})
        self.odc = None
        if num_samples is not None:
            self.odc = ODCMemory(num_samples, self.projection_dim, num_clusters, seed=seed,
                                 name="odc", **self.odc_kwargs)

        # ----------------------------------------------------------- queue
        # "only_first_replica": under MirroredStrategy every replica writes the
        # same all-gathered keys; the first replica's value is kept.
        self.queue = self.add_weight(
            shape=(self.queue_size, self.projection_dim), initializer="zeros",
            trainable=False, name="queue", aggregation="only_first_replica")
        self.queue.assign(l2_normalize(keras.random.normal(
            (self.queue_size, self.projection_dim), seed=keras.random.SeedGenerator(seed))))
        self.queue_ptr = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False,
            name="queue_ptr", aggregation="only_first_replica")
        self.built = True
        for name in ("loss", "loss_nce", "loss_mix"):
            self.add_tracker(keras.metrics.Mean(name=name))
        if self.odc is not None:
            self.add_tracker(keras.metrics.Mean(name="odc_change_ratio"))

    # ------------------------------------------------------------ forward
    def encoder_features(self, images, training=False):
        """Pooled backbone features of the query encoder, (B, feature_dim)."""
        return self.pool(self.backbone(images, training=training))

    def encoder(self):
        """The query encoder as a standalone Functional model (shared weights).

        Maps `(B, H, W, C)` normalised images to global-pooled backbone
        features `(B, feature_dim)`: what linear evaluation and downstream
        users take. Save it with `.save("encoder.keras")`.
        """
        inputs = keras.Input(tuple(self.backbone.input_shape[1:]), name="images")
        features = keras.layers.GlobalAveragePooling2D(name="pool")(self.backbone(inputs))
        return keras.Model(inputs, features, name=f"{self.name}_encoder")

    def query_embedding(self, images, training=False):
        """Query projection, L2-normalised, (B, projection_dim) float32."""
        features = self.encoder_features(images, training=training)
        return l2_normalize(self.proj_out(self.proj_hidden(features)))

    def key_embedding(self, images, training=True):
        """Key projection (stop-gradient), L2-normalised, (B, projection_dim);
        in training with split BN the batch runs reordered across the groups
        (`key_order`) and the keys come back in the images' order."""
        images = self.key_order(images, training)
        features = self.pool(self.key_backbone(images, training=training))
        keys = l2_normalize(self.key_proj_out(self.key_proj_hidden(features)))
        return ops.stop_gradient(self.key_order(keys, training, undo=True))

    def key_order(self, x, training, undo=False):
        """`x` in the key encoder's batch order (or back, `undo`): across the
        split-BN groups in training, unchanged otherwise."""
        if not training or self.bn_splits == 1:
            return x
        return (split_bn.deinterleave if undo else split_bn.interleave)(x, self.bn_splits)

    def call(self, images, training=False):
        if isinstance(images, StepBatch):  # a batch of fit / evaluate
            return self.step_outputs(images, training)
        return self.query_embedding(images, training=training)

    # -------------------------------------------------------------- train
    def _views(self, x):
        if not isinstance(x, dict) or "view1" not in x or "view2" not in x:
            raise ValueError(
                "MoCoV2 expects x = {'view1': images, 'view2': images}; received "
                f"{type(x).__name__}"
                + (f" with keys {sorted(x)}" if isinstance(x, dict) else "") + "."
            )
        view1, view2 = x["view1"], x["view2"]
        if len(view1.shape) != 4 or tuple(view1.shape) != tuple(view2.shape):
            raise ValueError(
                "`view1` and `view2` must be rank-4 NHWC batches of the same shape; "
                f"received {tuple(view1.shape)} and {tuple(view2.shape)}."
            )
        return view1, view2

    def _check_queue_fits(self, view1):
        """The global batch must fit in the queue (checked at trace time)."""
        batch = None if view1 is None else view1.shape[0]
        if batch is None:
            return
        replicas = num_replicas()
        if batch * replicas > self.queue_size:
            raise ValueError(
                f"`queue_size` must be >= the global batch size {batch * replicas}; "
                f"received queue_size={self.queue_size}."
            )

    def train_outputs(self, x, y=None):
        view1, _ = self._views(x)
        self._check_queue_fits(view1)
        self._momentum_update()
        terms = self.compute_losses(x)
        outputs = {"loss": terms["nce"] + self.mix_weight * terms["mix"],
                   "loss_nce": terms["nce"], "loss_mix": terms["mix"]}
        # Enqueue after the loss has read the queue (MoCo's dequeue-and-enqueue).
        self.enqueue(terms["keys"])
        outputs.update(self.update_clusters(x, terms["keys"]))
        return outputs

    def _momentum_update(self):
        """θ_k ← m θ_k + (1 − m) θ_q, first thing in each step (as in MoCo).

        Keras' step has no hook after the optimizer update, so the update
        that follows step t runs at the start of step t + 1 (before the first
        step θ_k = θ_q, and the update changes nothing but rounding).
        """
        ema_update(self._ema_pairs, self.momentum)

    # ---------------------------------------------------------- clusters
    def _check_ids(self, x):
        if self.odc is not None and "ids" not in x:
            raise ValueError(
                "The ODC memory is indexed by sample id: the inputs need an 'ids' entry "
                "(keras_amix.data.load(..., with_ids=True) and two_view_pipeline(..., "
                f"with_ids=True)); received keys {sorted(x)}."
            )

    def cluster_labels(self, x):
        """ODC labels (B,) int32 of the batch's samples, as the memory holds them."""
        ids = ops.cast(ops.reshape(x["ids"], (-1,)), "int32")
        return ops.take(ops.convert_to_tensor(self.odc.labels), ids, axis=0)

    def update_clusters(self, x, keys):
        """ODC's memory update with the (all-gathered) view-2 keys at the batch's ids.

        Returns `{"odc_change_ratio": ...}` ({} without a memory).
        """
        if self.odc is None:
            return {}
        ids = ops.cast(all_gather(ops.reshape(x["ids"], (-1,))), "int32")
        update = self.odc.update(ids, all_gather(ops.stop_gradient(keys)))
        return {"odc_change_ratio": update["change_ratio"]}

    def initialize_clusters(self, batches):
        """ODC's start: embeds every training sample with θ_k and runs k-means.

        `batches` yields `(images, ids)` (e.g. the centre view of every
        training image, from `keras_amix.data.load(..., with_ids=True)`);
        every id in [0, num_samples) must appear. Returns False, doing
        nothing, if the memory is already initialised (a resumed run).
        """
        import numpy as np

        if self.odc is None:
            raise ValueError("initialize_clusters() needs an ODC memory: build the model "
                             "with `num_samples`.")
        if int(ops.convert_to_numpy(self.odc.initialized)):
            return False
        features = np.zeros((self.num_samples, self.projection_dim), "float32")
        seen = np.zeros((self.num_samples,), bool)
        for images, ids in batches:
            ids = np.asarray(ops.convert_to_numpy(ids)).reshape(-1).astype("int64")
            if ids.size and (ids.min() < 0 or ids.max() >= self.num_samples):
                raise ValueError(f"Sample ids must lie in [0, {self.num_samples}); received "
                                 f"ids from {ids.min()} to {ids.max()}.")
            features[ids] = ops.convert_to_numpy(self.key_embedding(images, training=False))
            seen[ids] = True
        if not seen.all():
            raise ValueError(f"initialize_clusters() saw {int(seen.sum())} of the "
                             f"{self.num_samples} sample ids; every id must appear once.")
        self.odc.initialize(features)
        return True

    def compute_losses(self, x, mix_params=None):
        """The loss terms of one step for the two views `x`; no queue update.

        Returns a dict: "nce" (eq. 2, MoCHi's version of it, or 0 for i-Mix,
        whose loss replaces it), "mix" (the mixup term, 0 without one;
        unweighted) and "keys" (the view-2 keys to enqueue). `mix_params`
        fixes the strategy's mixing parameters (tests; see
        `keras_amix.models.moco_mixing`).
        """
        view1, view2 = self._views(x)
        self._check_ids(x)
        queue = ops.stop_gradient(ops.convert_to_tensor(self.queue))
        k2 = self.key_embedding(view2, training=True)
        mixing = self.mixer or _PLAIN
        if mixing.replaces_nce:
            nce = ops.zeros((), "float32")
        else:
            nce = mixing.nce_loss(self, self.query_embedding(view1, training=True), k2, queue)
        mix = ops.zeros((), "float32")
        if mixing.has_mix_term:
            clusters = self.cluster_labels(x) if mixing.needs_clusters else None
            mix = mixing.mix_loss(self, view1, view2, k2, queue, clusters, mix_params)
        return {"nce": nce, "mix": mix, "keys": k2}

    # ------------------------------------------------------------- queue
    def enqueue(self, keys):
        """Writes `keys` (all replicas' under MirroredStrategy) at `queue_ptr`, modulo K."""
        keys = ops.cast(all_gather(ops.stop_gradient(keys)), self.queue.dtype)
        count = ops.shape(keys)[0]
        ptr = ops.convert_to_tensor(self.queue_ptr)
        rows = ops.mod(ptr + ops.arange(count, dtype="int32"), self.queue_size)
        self.queue.assign(ops.scatter_update(self.queue, ops.reshape(rows, (-1, 1)), keys))
        self.queue_ptr.assign(ops.mod(ptr + ops.cast(count, "int32"), self.queue_size))

    # --------------------------------------------------------------- eval
    def test_outputs(self, x, y=None):
        view1, view2 = self._views(x)
        q = self.query_embedding(view1, training=False)
        k = self.key_embedding(view2, training=False)
        return {"loss": ops.mean(losses_lib.info_nce(
            q, k, ops.convert_to_tensor(self.queue), self.temperature, normalize=False))}

    # ------------------------------------------------------ serialisation
    def get_config(self):
        config = super().get_config()
        mixer = None if self.mixer is None else keras.saving.serialize_keras_object(self.mixer)
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            projection_dim=self.projection_dim,
            hidden_dim=self.hidden_dim,
            queue_size=self.queue_size,
            temperature=self.temperature,
            momentum=self.momentum,
            mixer=mixer,
            mix_weight=self.mix_weight,
            seed=self.seed,
            num_samples=self.num_samples,
            num_clusters=self.num_clusters,
            odc_kwargs=self.odc_kwargs,
        )
        return config
