"""MoCo v2 with optional instance-level mixup (cross-view, i-Mix, Un-Mix, MoCHi)."""

import numbers

import keras
from keras import ops

from keras_amix import losses as losses_lib
from keras_amix import mixers as mixers_lib
from keras_amix.backbones import feature_channels
from keras_amix.mixers.base import sample_lambda
from keras_amix.mixers.primitives import mix_images
from keras_amix.models.odc import ODCMemory, all_gather
from keras_amix.training.step import StepModel, ema_update

_BACKEND = keras.backend.backend()

# Mixing methods implemented by the model itself (not class-level mixers).
SSL_METHODS = ("imix", "unmix", "mochi", "inter_intra")
# Methods that read ODC cluster labels (need `num_samples` and sample ids).
CLUSTER_METHODS = ("inter_intra",)
_MOCHI_DEFAULTS = {"num_hard": 1024, "num_mix": 1024, "num_query_mix": 256}


def _l2_normalize(x):
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-24))


def _cross_entropy_at(logits, index):
    """-log softmax(logits)[b, index[b]] for (B, N) logits and (B,) int index."""
    picked = ops.take_along_axis(logits, ops.reshape(index, (-1, 1)), axis=1)[:, 0]
    return ops.logsumexp(logits, axis=-1) - picked


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
    optimizer update the key encoder follows θ_k ← m θ_k + (1 − m) θ_q.

    With `mixer` set, a mixup term is added (DESIGN §6):

    * a class-level mixer name (`"mixup"`, `"cutmix"`, ...) or `Mixer`: the
      paper's cross-view pipeline (§3.1, eq. 4): x_mix = h(x_i^1, x_perm(i)^2,
      λ), positives the key of the *other* view of each source (key of x_i^2
      for i, key of x_perm(i)^1 for perm(i)); loss = eq. 2 + `mix_weight` ·
      eq. 4.
    * `"imix"` (i-Mix): view 1 MixUp-ed with its own pairing; virtual labels
      over the batch's view-2 keys; logits = q_mix · [k_batch; queue]ᵀ / τ
      (B × (B + K)); loss = λ CE(logits, i) + (1 − λ) CE(logits, perm(i)).
      As in i-Mix, this loss replaces eq. 2 (`mix_weight` scales it).
    * `"unmix"` (Un-Mix): view 1 mixed with the reversed batch, by MixUp and
      by CutMix; loss = eq. 2 + `mix_weight` · mean of the two eq.-4 terms
      with positives (k_i, k_reversed(i)) of view 2.
    * `"inter_intra"` (Inter-Intra (C), paper Table 4, Fig. 2c): the
      cross-view pipeline with MixUp for the pairs whose ODC clusters agree
      and CutMix for the others (both with `mixer_kwargs["alpha"]`, default
      1); loss = eq. 2 + `mix_weight` · eq. 4 with each pair's λ (the CutMix
      box area for CutMix pairs). Needs `num_samples` and `x["ids"]`.
    * `"mochi"` (MoCHi): per query, the `num_hard` hardest queue negatives;
      `num_mix` synthetic negatives mix random pairs of them (weight
      α ~ U(0, 1)), `num_query_mix` mix the query with one of them (query
      weight β ~ U(0, 0.5)); all are L2-normalised, stop-gradient, and
      appended to *that query's* negatives only. `mixer_kwargs` may set
      `num_hard`, `num_mix`, `num_query_mix` (defaults 1024, 1024, 256).

    Args:
        backbone: a `keras_amix.backbones.resnet(...)` model (unpooled
            stage-4 output).
        projection_dim: int > 0, output size of the projection MLP (128).
        hidden_dim: int > 0, hidden size of the projection MLP (2048).
        queue_size: int > 0, number K of queued keys (65536 in the paper);
            must be >= the (global) batch size.
        temperature: float > 0, τ of the infoNCE (0.2).
        momentum: float in [0, 1], EMA momentum m of the key encoder (0.999).
        mixer: None, a mixer name / `Mixer`, or one of "imix", "unmix",
            "mochi".
        mixer_kwargs: dict of constructor arguments for a mixer given by name
            (e.g. `{"alpha": 1.0}`), or the MoCHi sizes.
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

    eval_tracker_names = ("loss",)
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
        self.mixer_kwargs = dict(mixer_kwargs or {})
        self.seed_generator = keras.random.SeedGenerator(seed)

        # ---------------------------------------------------------- mixing
        self.mixer = mixer
        self._mixer = None  # the class-level Mixer of the cross-view pipeline
        if isinstance(mixer, str) and mixer.lower() in SSL_METHODS:
            self.mixer = mixer.lower()
            if self.mixer == "mochi":
                unknown = set(self.mixer_kwargs) - set(_MOCHI_DEFAULTS)
                if unknown:
                    raise ValueError(
                        f"`mixer_kwargs` for 'mochi' accepts {sorted(_MOCHI_DEFAULTS)}; "
                        f"received {sorted(unknown)}."
                    )
                sizes = {**_MOCHI_DEFAULTS, **self.mixer_kwargs}
                for arg, value in sizes.items():
                    if not isinstance(value, numbers.Integral) or value < 0:
                        raise ValueError(
                            f"MoCHi `{arg}` must be an int >= 0; received {arg}={value!r}."
                        )
                if sizes["num_hard"] < 1:
                    raise ValueError(
                        f"MoCHi `num_hard` must be >= 1; received num_hard={sizes['num_hard']!r}."
                    )
                self._mochi_sizes = sizes
            else:
                self._ssl_alpha = float(self.mixer_kwargs.get("alpha", 1.0))
                if not self._ssl_alpha > 0:
                    raise ValueError(
                        f"`mixer_kwargs['alpha']` must be > 0; received {self._ssl_alpha!r}."
                    )
                if self.mixer in ("unmix", "inter_intra"):
                    self._cutmix = mixers_lib.get("cutmix", alpha=self._ssl_alpha,
                                                  seed=self.seed_generator)
        elif mixer is not None:
            if isinstance(mixer, mixers_lib.Mixer):
                if self.mixer_kwargs:
                    raise ValueError(
                        "`mixer_kwargs` apply to a mixer given by name; received a Mixer "
                        f"object with mixer_kwargs={self.mixer_kwargs}."
                    )
                self._mixer = mixer
            elif isinstance(mixer, str):
                self._mixer = mixers_lib.get(mixer, seed=self.seed_generator,
                                             **self.mixer_kwargs)
            else:
                raise ValueError(
                    f"`mixer` must be None, a mixer name, a Mixer or one of {SSL_METHODS}; "
                    f"received mixer={mixer!r}."
                )
            if self._mixer.requires_saliency or self._mixer.mixes_hidden:
                raise ValueError(
                    "The cross-view pipeline mixes input images without saliency; "
                    f"received mixer={mixer!r}."
                )

        # Mixers hold no weights; mark them built so that `fit` needs no
        # symbolic build of the model (which would call it on the two-view dict).
        for layer in (self._mixer, getattr(self, "_cutmix", None)):
            if layer is not None and not layer.built:
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
        if self.mixer in CLUSTER_METHODS and num_samples is None:
            raise ValueError(
                f"mixer={self.mixer!r} mixes by ODC cluster: pass `num_samples` (the "
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
        self.queue.assign(_l2_normalize(keras.random.normal(
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
        return _l2_normalize(self.proj_out(self.proj_hidden(features)))

    def key_embedding(self, images, training=True):
        """Key projection (stop-gradient), L2-normalised, (B, projection_dim)."""
        features = self.pool(self.key_backbone(images, training=training))
        return ops.stop_gradient(_l2_normalize(self.key_proj_out(self.key_proj_hidden(features))))

    def call(self, images, training=False):
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
        replicas = 1
        if _BACKEND == "tensorflow":
            import tensorflow as tf  # the replica count of a tf.distribute strategy

            replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if batch * replicas > self.queue_size:
            raise ValueError(
                f"`queue_size` must be >= the global batch size {batch * replicas}; "
                f"received queue_size={self.queue_size}."
            )

    def compute_train_loss(self, x, y=None):
        view1, _ = self._views(x)
        self._check_queue_fits(view1)
        terms = self.compute_losses(x)
        loss = terms["nce"] + self.mix_weight * terms["mix"]
        self.track("loss", loss)
        self.track("loss_nce", terms["nce"])
        self.track("loss_mix", terms["mix"])
        # Enqueue after the loss has read the queue (MoCo's dequeue-and-enqueue).
        self.enqueue(terms["keys"])
        self.update_clusters(x, terms["keys"])
        return loss

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
        """ODC's memory update with the (all-gathered) view-2 keys at the batch's ids."""
        if self.odc is None:
            return
        ids = ops.cast(all_gather(ops.reshape(x["ids"], (-1,))), "int32")
        update = self.odc.update(ids, all_gather(ops.stop_gradient(keys)))
        self.track("odc_change_ratio", update["change_ratio"])

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

        Returns a dict: "nce" (eq. 2, or 0 for i-Mix, whose loss replaces it),
        "mix" (the mixup term, 0 without a mixer; unweighted) and "keys" (the
        view-2 keys to enqueue). `mix_params` fixes the mixing parameters
        (tests): for a class-level mixer a dict of its `sample_params`
        ({"lam", "perm", maybe "mask"}); for "imix" {"lam" (scalar), "perm"};
        for "unmix" {"lam" (scalar), "mask" (B, H, W, 1) weight of the
        CutMix first image, "cutmix_lam" (B,)}.
        """
        view1, view2 = self._views(x)
        self._check_ids(x)
        queue = ops.stop_gradient(ops.convert_to_tensor(self.queue))
        k2 = self.key_embedding(view2, training=True)
        zero = ops.zeros((), "float32")
        if self.mixer == "imix":
            return {"nce": zero, "mix": self._imix_loss(view1, k2, queue, mix_params),
                    "keys": k2}
        q1 = self.query_embedding(view1, training=True)
        if self.mixer == "mochi":
            synthetic = self.hard_negatives(q1, queue)
            nce = ops.mean(self.mochi_loss(q1, k2, queue, synthetic))
        else:
            nce = ops.mean(losses_lib.info_nce(q1, k2, queue, self.temperature,
                                               normalize=False))
        mix = zero
        if self._mixer is not None:
            mix = self._cross_view_loss(view1, view2, k2, queue, mix_params)
        elif self.mixer == "unmix":
            mix = self._unmix_loss(view1, k2, queue, mix_params)
        elif self.mixer == "inter_intra":
            mix = self._inter_intra_loss(view1, view2, k2, queue, self.cluster_labels(x),
                                         mix_params)
        return {"nce": nce, "mix": mix, "keys": k2}

    def _inter_intra_loss(self, view1, view2, k2, queue, clusters, params):
        """Cross-view eq. 4 with MixUp inside a cluster and CutMix across clusters."""
        if params is None:
            cut = self._cutmix.sample_params(view1)
            params = {"lam": sample_lambda(self.seed_generator, self._ssl_alpha, ()),
                      "perm": cut["perm"], "mask": cut["mask"], "cutmix_lam": cut["lam"]}
        perm = params["perm"]
        same = ops.equal(clusters, ops.take(clusters, perm, axis=0))
        lam_mix = ops.cast(params["lam"], "float32")
        weight = ops.where(same[:, None, None, None], lam_mix,
                           ops.cast(params["mask"], "float32"))
        lam = ops.where(same, lam_mix, ops.cast(params["cutmix_lam"], "float32"))
        x_mix = mix_images(view1, ops.take(view2, perm, axis=0), weight)
        q_mix = self.query_embedding(x_mix, training=True)
        k1 = self.key_embedding(view1, training=True)
        return ops.mean(losses_lib.mixup_info_nce(
            q_mix, k2, ops.take(k1, perm, axis=0), queue, lam, self.temperature,
            normalize=False))

    def _cross_view_loss(self, view1, view2, k2, queue, params):
        if params is None:
            params = self._mixer.sample_params(view1)
        perm = params["perm"]
        x_mix = self._mixer.mix_images(view1, ops.take(view2, perm, axis=0), params)
        q_mix = self.query_embedding(x_mix, training=True)
        k1 = self.key_embedding(view1, training=True)
        return ops.mean(losses_lib.mixup_info_nce(
            q_mix, k2, ops.take(k1, perm, axis=0), queue, params["lam"],
            self.temperature, normalize=False))

    def _imix_loss(self, view1, k2, queue, params):
        batch = ops.shape(view1)[0]
        if params is None:
            params = {"lam": sample_lambda(self.seed_generator, self._ssl_alpha, ()),
                      "perm": mixers_lib.sample_permutation(self.seed_generator, batch)}
        lam = ops.cast(params["lam"], "float32")
        perm = params["perm"]
        x_mix = lam * view1 + (1.0 - lam) * ops.take(view1, perm, axis=0)
        q_mix = self.query_embedding(x_mix, training=True)
        logits = ops.matmul(q_mix, ops.transpose(ops.concatenate([k2, queue], axis=0)))
        logits = logits / self.temperature
        own = ops.arange(batch, dtype="int32")
        return ops.mean(lam * _cross_entropy_at(logits, own)
                        + (1.0 - lam) * _cross_entropy_at(logits, ops.cast(perm, "int32")))

    def _unmix_loss(self, view1, k2, queue, params):
        batch = ops.shape(view1)[0]
        reverse = ops.flip(ops.arange(batch, dtype="int32"), axis=0)
        reversed_view = ops.take(view1, reverse, axis=0)
        k_rev = ops.take(k2, reverse, axis=0)
        if params is None:
            lam = sample_lambda(self.seed_generator, self._ssl_alpha, ())
            cut = self._cutmix.sample_params(view1)
            params = {"lam": lam, "mask": cut["mask"], "cutmix_lam": cut["lam"]}
        lam = ops.cast(params["lam"], "float32")
        mask = ops.cast(params["mask"], view1.dtype)
        terms = []
        for x_mix, weight in ((lam * view1 + (1.0 - lam) * reversed_view, lam),
                              (mask * view1 + (1.0 - mask) * reversed_view,
                               params["cutmix_lam"])):
            q_mix = self.query_embedding(x_mix, training=True)
            terms.append(ops.mean(losses_lib.mixup_info_nce(
                q_mix, k2, k_rev, queue, weight, self.temperature, normalize=False)))
        return 0.5 * (terms[0] + terms[1])

    # ------------------------------------------------------------- MoCHi
    def hard_negatives(self, q, queue):
        """MoCHi's synthetic hard negatives per query, (B, s1 + s2, d), unit norm.

        The first `num_mix` mix two of the query's `num_hard` hardest queue
        keys (α ~ U(0, 1)), the last `num_query_mix` mix the query with one of
        them (query weight β ~ U(0, 0.5)). They carry no gradient.
        """
        sizes = self._mochi_sizes
        q = ops.stop_gradient(ops.cast(q, "float32"))
        batch = ops.shape(q)[0]
        n = min(sizes["num_hard"], self.queue_size)
        _, hard_idx = ops.top_k(ops.matmul(q, ops.transpose(queue)), k=n)  # (B, N)
        seed = self.seed_generator
        s1, s2 = sizes["num_mix"], sizes["num_query_mix"]

        def hard_keys(count):
            # Pick among each query's N hardest by index, then gather those
            # queue rows: never materialises the (B, N, d) hard set.
            pick = keras.random.randint((batch, count), 0, n, seed=seed)
            return ops.take(queue, ops.take_along_axis(hard_idx, pick, axis=1), axis=0)

        parts = []
        if s1:
            h_i, h_j = hard_keys(s1), hard_keys(s1)
            alpha = keras.random.uniform((batch, s1, 1), seed=seed)
            parts.append(alpha * h_i + (1.0 - alpha) * h_j)
        if s2:
            beta = 0.5 * keras.random.uniform((batch, s2, 1), seed=seed)
            parts.append(beta * q[:, None, :] + (1.0 - beta) * hard_keys(s2))
        if not parts:
            return ops.zeros((batch, 0, self.projection_dim), "float32")
        return ops.stop_gradient(_l2_normalize(ops.concatenate(parts, axis=1)))

    def mochi_loss(self, q, k_pos, queue, synthetic):
        """Per-query (B,) infoNCE with `synthetic[b]` appended to query b's negatives."""
        pos = ops.sum(q * k_pos, axis=-1, keepdims=True)
        neg = ops.matmul(q, ops.transpose(queue))
        own = ops.einsum("bd,bsd->bs", q, synthetic)  # (B, S)
        logits = ops.concatenate([pos, neg, own], axis=-1) / self.temperature
        return ops.logsumexp(logits, axis=-1) - logits[:, 0]

    # ------------------------------------------------------------- queue
    def enqueue(self, keys):
        """Writes `keys` (all replicas' under MirroredStrategy) at `queue_ptr`, modulo K."""
        keys = ops.cast(all_gather(ops.stop_gradient(keys)), self.queue.dtype)
        count = ops.shape(keys)[0]
        ptr = ops.convert_to_tensor(self.queue_ptr)
        rows = ops.mod(ptr + ops.arange(count, dtype="int32"), self.queue_size)
        self.queue.assign(ops.scatter_update(self.queue, ops.reshape(rows, (-1, 1)), keys))
        self.queue_ptr.assign(ops.mod(ptr + ops.cast(count, "int32"), self.queue_size))

    def after_train_step(self):
        ema_update([k for k, _ in self._ema_pairs], [q for _, q in self._ema_pairs],
                   self.momentum)

    # --------------------------------------------------------------- eval
    def compute_test_metrics(self, x, y=None):
        view1, view2 = self._views(x)
        q = self.query_embedding(view1, training=False)
        k = self.key_embedding(view2, training=False)
        self.track("loss", ops.mean(losses_lib.info_nce(
            q, k, ops.convert_to_tensor(self.queue), self.temperature, normalize=False)))

    # ------------------------------------------------------ serialisation
    def get_config(self):
        config = super().get_config()
        mixer = self.mixer
        if isinstance(mixer, mixers_lib.Mixer):
            mixer = keras.saving.serialize_keras_object(mixer)
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            projection_dim=self.projection_dim,
            hidden_dim=self.hidden_dim,
            queue_size=self.queue_size,
            temperature=self.temperature,
            momentum=self.momentum,
            mixer=mixer,
            mixer_kwargs=self.mixer_kwargs,
            mix_weight=self.mix_weight,
            seed=self.seed,
            num_samples=self.num_samples,
            num_clusters=self.num_clusters,
            odc_kwargs=self.odc_kwargs,
        )
        return config
