"""AMix-I and AMix-C: MoCo v2 whose cross-view mixup is learned by a Mix Block+."""

import numbers

import keras
from keras import ops

from keras_amix import backbones as backbones_lib
from keras_amix import losses as losses_lib
from keras_amix.layers import MixBlock, mask_statistics
from keras_amix.losses.contrastive import l2_normalize
from keras_amix.mixers.primitives import mix_images, sample_lambda, sample_permutation
from keras_amix.models.amix import _next_stage
from keras_amix.models.moco import MoCoV2
from keras_amix.models.mix_loss_names import (DEFAULT_MIX_LOSS, MIX_LOSS_TERMS,  # noqa: F401
                                              PAPER_MIX_LOSSES, VARIANTS, parse_mix_loss)
from keras_amix.training.backend import all_gather

def _weighted_mixup_ce(logits, labels_a, labels_b, lam, weights):
    """λ CE_w(logits, a) + (1 − λ) CE_w(logits, b) with class weights `weights`
    (PyTorch's weighted CE: Σ w[y]·CE / Σ w[y] over the batch); int labels."""
    log_p = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)

    def term(labels):
        ce = -ops.take_along_axis(log_p, ops.reshape(labels, (-1, 1)), axis=1)[:, 0]
        w = ops.take(weights, labels, axis=0)
        return ops.sum(w * ce) / ops.maximum(ops.sum(w), 1e-12)

    lam = ops.cast(lam, "float32")
    return lam * term(labels_a) + (1.0 - lam) * term(labels_b)


def _weighted_pbce(logits, labels_a, labels_b, lam, weights):
    """pBCE on int labels, weighted by λ w[a] + (1 − λ) w[b]."""
    k = ops.shape(logits)[-1]
    per = losses_lib.parametric_binary_cross_entropy(
        logits, ops.one_hot(labels_a, k), ops.one_hot(labels_b, k), lam)
    lam = ops.cast(lam, "float32")
    w = lam * ops.take(weights, labels_a, axis=0) + (1 - lam) * ops.take(weights, labels_b, axis=0)
    return ops.sum(w * per) / ops.maximum(ops.sum(w), 1e-12)


def _dense(units, input_dim, name):
    # As the official cluster head: normal(0.01) weights on the unnormalised projection.
    layer = keras.layers.Dense(units, name=name,
                               kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
    layer.build((None, input_dim))
    return layer


@keras.saving.register_keras_serializable(package="keras_amix")
class AMixSSL(MoCoV2):
    """AMix-I / AMix-C: MoCo v2 trained with the mixed samples of a Mix Block+.

    Each training step (paper §3.1, §3.3; DESIGN §7) runs MoCo v2 (eq. 2 on
    view 1 against the key of view 2) and the cross-view pipeline with
    *learned* masks. The key encoder θ_k embeds both clean views; its
    stage-`feature_stage` features of view 1 (sample i) and view 2 (sample
    perm(i)) feed the Mix Block φ, which predicts the mask s (weight of view
    1) for a mixing ratio λ ~ Beta(α, α). Two (λ, perm) are drawn:

    * θ_q trains on eq. 2 + `mix_weight` · the mixup infoNCE of eq. 4 of
      x_θ = s·x_i¹ + (1 − s)·x_perm(i)², with the stop-gradient mask after λ
      adjusting; positives: the keys of the other views, k(x_i²) and
      k(x_perm(i)¹).
    * φ trains on `mix_loss` of x_φ embedded by the *frozen* key encoder
      (gradients reach the pixels, hence only φ), plus the Mix Block's mask
      loss. AMix-I (`variant="instance"`): "infonce+bce" (eq. 4 + eq. 6).
      AMix-C (`variant="cluster"`): "ce+bce", the CE on ODC pseudo labels of
      a cluster head over the key embeddings.
    * The cluster head (and the class head of the "(L)" losses) trains on
      its own CE of the stop-gradient key embeddings (clean view 1 and x_φ);
      φ reads it through stop-gradient weights, so the heads receive no
      gradient from φ's loss and φ none from theirs.
    * With variant="cluster", the ODC memory (`self.odc`) takes the batch's
      view-2 keys at the sample ids (`x["ids"]`) after the loss has read
      the labels; `keras_amix.models.ODCCallback(model.odc)` recomputes the
      centroids and fixes small clusters between steps, and
      `initialize_clusters(batches)` runs the k-means start.

    The key queue, the EMA update of θ_k (constant `momentum`, as MoCo), the
    encoder and `evaluate` are MoCo v2's.

    Args:
        backbone: a `keras_amix.backbones.resnet(...)` model (named stages).
        variant: "instance" (AMix-I) or "cluster" (AMix-C).
        mix_block: "amix" (Mix Block+), "automix" or a `MixBlock` preset
            name, or a `keras_amix.layers.MixBlock`.
        mix_block_kwargs: switches for a Mix Block given by name.
        alpha: float > 0, Beta(α, α) of λ (2.0 in the paper).
        feature_stage: the stage the Mix Block reads ("stage3", l = 3).
        mix_loss: the Mix Block's loss, "+"-joined terms of
            `MIX_LOSS_TERMS` (`PAPER_MIX_LOSSES` maps each row of Tables 1
            and 7 to its name); None: "infonce+bce" (instance), "ce+bce"
            (cluster).
        bce_temperature: float > 0, temperature of the eq.-6 BCE (0.2).
        num_samples: int, training-set size (the ODC memory's rows); needed
            with variant="cluster".
        num_clusters: int >= 2, K of ODC (200).
        odc_kwargs: more `ODCMemory` arguments (`momentum`,
            `min_cluster_size`).
        num_classes: int, only for the "(L)" losses, which read the labels.
        **kwargs: `MoCoV2` arguments (`projection_dim`, `hidden_dim`,
            `queue_size`, `temperature`, `momentum`, `mix_weight`, `seed`,
            ...); `mixer` is not taken.

    Call arguments: as `MoCoV2`. Training inputs: `{"view1", "view2"}`, plus
    `"ids"` (int, the sample's index in [0, num_samples)) for AMix-C;
    labels are read only by the "(L)" losses.

    Example:

    ```python
    backbone = keras_amix.backbones.resnet(18, width=64)
    model = AMixSSL(backbone, variant="cluster", num_samples=100_000,
                    queue_size=65536)
    model.compile(optimizer=keras.optimizers.SGD(0.03, momentum=0.9))
    model.initialize_clusters(first_pass)   # (images, ids) batches
    model.fit(two_view_ds, epochs=400, callbacks=[ODCCallback(model.odc)])
    ```

    Reference: AMix paper §3.1 (cross-view pipeline), §3.3 (eq. 6, Table 1),
    §4.2 (Tables 4, 5, 7); Zhan et al. 2020 (ODC).
    """

    nested_config_keys = ("backbone", "mix_block")

    def __init__(self, backbone, variant="instance", mix_block="amix", mix_block_kwargs=None,
                 alpha=2.0, feature_stage="stage3", mix_loss=None, bce_temperature=0.2,
                 num_samples=None, num_clusters=200, odc_kwargs=None, num_classes=None,
                 **kwargs):
        if "mixer" in kwargs and kwargs["mixer"] is not None:
            raise ValueError("AMixSSL learns its mixing: `mixer` is not taken; received "
                             f"mixer={kwargs['mixer']!r}.")
        kwargs.pop("mixer", None)
        kwargs.pop("mixer_kwargs", None)
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {VARIANTS}; received variant={variant!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
            raise ValueError(f"`alpha` must be > 0; received alpha={alpha!r}.")
        if feature_stage not in backbones_lib.STAGE_NAMES[1:]:
            raise ValueError(f"`feature_stage` must be one of "
                             f"{backbones_lib.STAGE_NAMES[1:]}; received {feature_stage!r}.")
        if not isinstance(bce_temperature, numbers.Real) or not bce_temperature > 0:
            raise ValueError(f"`bce_temperature` must be > 0; received {bce_temperature!r}.")
        if num_classes is not None and (not isinstance(num_classes, numbers.Integral)
                                        or num_classes < 2):
            raise ValueError(f"`num_classes` must be an int >= 2 or None; received "
                             f"num_classes={num_classes!r}.")
        mix_loss = DEFAULT_MIX_LOSS[variant] if mix_loss is None else mix_loss
        self.mix_terms = parse_mix_loss(mix_loss, variant, num_classes)
        if variant == "cluster" and (isinstance(num_samples, bool)
                                     or not isinstance(num_samples, numbers.Integral)
                                     or num_samples < 1):
            raise ValueError("variant='cluster' keeps an ODC memory over the training set: "
                             "`num_samples` must be a positive int (the data set's size); "
                             f"received num_samples={num_samples!r}.")
        backbones_lib.stages(backbone)  # clear error for a backbone without named stages
        super().__init__(backbone, mixer=None,
                         num_samples=num_samples if variant == "cluster" else None,
                         num_clusters=num_clusters, odc_kwargs=odc_kwargs, **kwargs)
        self.variant = variant
        self.alpha = float(alpha)
        self.feature_stage = feature_stage
        self.mix_loss = "+".join(self.mix_terms)
        self.bce_temperature = float(bce_temperature)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.mix_block_kwargs = dict(mix_block_kwargs or {})
        self.stride = backbones_lib.output_stride(backbone, feature_stage)

        channels = backbones_lib.feature_channels(backbone, feature_stage)
        if isinstance(mix_block, str):
            mix_block = MixBlock.from_preset(mix_block, in_channels=channels, seed=self.seed,
                                             name="mix_block", **self.mix_block_kwargs)
        elif not isinstance(mix_block, MixBlock):
            raise ValueError("`mix_block` must be a MixBlock preset name or a MixBlock; "
                             f"received {mix_block!r}.")
        self.mix_block = mix_block
        if not self.mix_block.built:
            self.mix_block.build((None, None, None, channels))

        self.cluster_head = self.class_head = None
        if variant == "cluster":
            self.cluster_head = _dense(self.num_clusters, self.projection_dim, "cluster_head")
        if "ce_l" in self.mix_terms or "pbce_l" in self.mix_terms:
            self.class_head = _dense(self.num_classes, self.projection_dim, "class_head")
        # The labels of the queued keys, for the filtered infoNCE terms (-1: none yet).
        self.queue_labels = self.add_weight(
            shape=(self.queue_size,), dtype="int32", initializer="zeros", trainable=False,
            name="queue_labels", aggregation="only_first_replica")
        self.queue_labels.assign(-ops.ones((self.queue_size,), "int32"))
        for name in ("loss_phi", "mask_loss", "mask_std", "mask_mean_error", "loss_head"):
            self.add_tracker(keras.metrics.Mean(name=name))

    # ------------------------------------------------------------ forward
    def _key_forward(self, images):
        """Stage-l features, the L2-normalised key projection of θ_k and the
        projection before the normalisation (what the heads read), no gradient
        (with split BN run in the key encoder's batch order, returned in the
        images' order, as `key_embedding`)."""
        z = backbones_lib.run_stages(self.key_backbone, self.key_order(images, True),
                                     stop=self.feature_stage, training=True)
        end = z
        if self.feature_stage != "stage4":
            end = backbones_lib.run_stages(self.key_backbone, z,
                                           start=_next_stage(self.feature_stage), training=True)
        raw = self.key_proj_out(self.key_proj_hidden(self.pool(end)))
        z, raw = (ops.stop_gradient(self.key_order(t, True, undo=True)) for t in (z, raw))
        return z, l2_normalize(raw), raw

    def _key_project(self, images):
        """θ_k's normalised projection *with* the gradient to the pixels (φ's
        path), and the projection before the normalisation (the heads'). In
        the images' order under split BN: the mixed batch is not the views'
        batch, so its groups already differ from the keys'."""
        features = self.pool(self.key_backbone(images, training=True))
        raw = self.key_proj_out(self.key_proj_hidden(features))
        return l2_normalize(raw), raw

    # -------------------------------------------------------------- train
    def _check_inputs(self, x, y):
        view1, view2 = self._views(x)
        for size, axis in ((view1.shape[1], "height"), (view1.shape[2], "width")):
            if size is not None and size % self.stride:
                raise ValueError(
                    f"View {axis} must be a multiple of the {self.feature_stage} stride "
                    f"{self.stride}; received views of shape {tuple(view1.shape)}.")
        if view1.shape[0] is not None and view1.shape[0] < 2:
            raise ValueError("AMixSSL mixes pairs within a batch: batch size must be >= 2; "
                             f"received {view1.shape[0]}.")
        self._check_ids(x)
        if self.class_head is not None or "infonce_l" in self.mix_terms:
            if y is None:
                raise ValueError(f"mix_loss={self.mix_loss!r} reads the data set's labels; "
                                 "received y=None.")
        return view1, view2

    def train_outputs(self, x, y=None):
        self._check_queue_fits(x["view1"] if isinstance(x, dict) and "view1" in x else None)
        self._momentum_update()
        terms = self.compute_losses(x, y)
        outputs = {"loss": terms["nce"] + self.mix_weight * terms["mix"] + terms["phi"]
                   + terms["mask"] + terms["head"],
                   "loss_nce": terms["nce"], "loss_mix": terms["mix"],
                   "loss_phi": terms["phi"], "mask_loss": terms["mask"],
                   "loss_head": terms["head"], "mask_std": terms["mask_std"],
                   "mask_mean_error": terms["mask_mean_error"]}
        self.enqueue(terms["keys"], terms["key_labels"])
        outputs.update(self.update_clusters(x, terms["keys"]))
        return outputs

    def compute_losses(self, x, y=None, mix_params=None):
        """The loss terms of one step (a dict of scalars) and the keys to enqueue.

        "nce" (eq. 2), "mix" (θ's mixup infoNCE, unweighted), "phi" (the Mix
        Block's loss), "mask" (its mask loss), "head" (the cluster / class
        heads' own CE), "keys" and "key_labels" (view-2 keys and their labels
        for the queue), "mask_std" and "mask_mean_error" (φ's masks).
        `mix_params` fixes {"lam_theta", "perm_theta", "lam_phi", "perm_phi"}
        (tests).
        """
        view1, view2 = self._check_inputs(x, y)
        batch = ops.shape(view1)[0]
        image_size = (int(view1.shape[1]), int(view1.shape[2]))
        queue = ops.stop_gradient(ops.convert_to_tensor(self.queue))
        seed = self.seed_generator
        if mix_params is None:
            mix_params = {"lam_theta": sample_lambda(seed, self.alpha, ()),
                          "lam_phi": sample_lambda(seed, self.alpha, ()),
                          "perm_theta": sample_permutation(seed, batch),
                          "perm_phi": sample_permutation(seed, batch)}
        lam_theta, lam_phi = mix_params["lam_theta"], mix_params["lam_phi"]
        perm_theta, perm_phi = mix_params["perm_theta"], mix_params["perm_phi"]

        # θ_k on both clean views: the Mix Block's features and the keys.
        f1, k1, k1_raw = self._key_forward(view1)
        f2, k2, _ = self._key_forward(view2)
        q1 = self.query_embedding(view1, training=True)
        nce = ops.mean(losses_lib.info_nce(q1, k2, queue, self.temperature, normalize=False))

        # Labels of the batch: ODC pseudo labels (read before this step's update).
        clusters = classes = None
        if self.odc is not None:
            clusters = self.cluster_labels(x)
        if self.num_classes is not None and y is not None:
            classes = ops.cast(ops.reshape(y, (-1,)), "int32")

        # θ: MoCo + the mixup infoNCE of the stop-gradient learned mask.
        mask_theta = self.mix_block.encoder_mask(
            f1, ops.take(f2, perm_theta, axis=0), lam_theta, image_size)
        x_theta = mix_images(view1, ops.take(view2, perm_theta, axis=0), mask_theta)
        q_mix = self.query_embedding(x_theta, training=True)
        mix = ops.mean(losses_lib.mixup_info_nce(
            q_mix, k2, ops.take(k1, perm_theta, axis=0), queue, lam_theta, self.temperature,
            normalize=False))

        # φ: its loss through the frozen key encoder, plus the mask loss.
        mask_phi, mask = self.mix_block.mask_and_loss(
            f1, ops.take(f2, perm_phi, axis=0), lam_phi, image_size)
        x_phi = mix_images(view1, ops.take(view2, perm_phi, axis=0), mask_phi)
        z_phi, z_phi_raw = self._key_project(x_phi)
        phi, head = self._mix_block_loss(z_phi, k1, k2, queue, perm_phi, lam_phi,
                                         clusters, classes, heads_read=(z_phi_raw, k1_raw))

        stats = mask_statistics(mask_phi)
        key_labels = ops.full((batch,), -1, "int32")
        if "infonce_pl" in self.mix_terms:
            key_labels = clusters
        elif "infonce_l" in self.mix_terms:
            key_labels = classes
        return {"nce": nce, "mix": mix, "phi": phi, "mask": mask, "head": head,
                "keys": k2, "key_labels": key_labels, "mask_std": stats["mask_std"],
                "mask_mean_error": ops.abs(stats["mask_mean"] - lam_phi)}

    def _mix_block_loss(self, z_phi, k1, k2, queue, perm, lam, clusters, classes,
                        heads_read=None):
        """(φ's loss, the heads' own loss) for the φ-mixed embeddings `z_phi`.

        Source a of x_φ is view 1 of sample i (positive: k2[i]); source b is
        view 2 of perm(i) (positive: k1[perm(i)]). `heads_read` is what the
        cluster / class heads read instead of (z_phi, k1): the projections before
        their L2 normalisation, as the official code's heads (None: z_phi, k1).
        """
        head_z, head_k1 = heads_read if heads_read is not None else (z_phi, k1)
        k_b = ops.take(k1, perm, axis=0)
        phi, head = [], []
        for term in self.mix_terms:
            if term.startswith("infonce"):
                labels = clusters if term == "infonce_pl" else classes
                keep = None
                if term != "infonce":  # drop the queue's negatives of the two sources' labels
                    queued = ops.convert_to_tensor(self.queue_labels)[None, :]
                    keep = ops.logical_and(
                        ops.not_equal(queued, labels[:, None]),
                        ops.not_equal(queued, ops.take(labels, perm, axis=0)[:, None]))
                phi.append(ops.mean(losses_lib.mixup_info_nce(
                    z_phi, k2, k_b, queue, lam, self.temperature, normalize=False,
                    negative_mask=keep)))
            elif term == "bce":
                phi.append(ops.mean(losses_lib.binary_cross_entropy_embeddings(
                    z_phi, k2, k_b, lam, temperature=self.bce_temperature, normalize=False)))
            else:  # ce / pbce on a head: cluster labels ("(C)") or classes ("_l")
                if term.endswith("_l"):
                    layer, labels = self.class_head, classes
                    weights = ops.ones((self.num_classes,), "float32")
                else:
                    layer, labels = self.cluster_head, clusters
                    weights = self.odc.class_weights()
                labels_b = ops.take(labels, perm, axis=0)
                kernel = ops.stop_gradient(ops.convert_to_tensor(layer.kernel))
                bias = ops.stop_gradient(ops.convert_to_tensor(layer.bias))
                logits = ops.matmul(head_z, kernel) + bias  # φ reads the head, never trains it
                loss_fn = _weighted_pbce if term.startswith("pbce") else _weighted_mixup_ce
                phi.append(loss_fn(logits, labels, labels_b, lam, weights))
                if not any(h is layer for h, _ in head):
                    head.append((layer, (labels, labels_b, weights)))
        head_loss = ops.zeros((), "float32")
        for layer, (labels, labels_b, weights) in head:
            # The head's own training: one-hot CE on the clean view-1 keys and mixup
            # CE on the stop-gradient φ-mixed embeddings (as ODC's head, DESIGN §7).
            head_loss = head_loss + _weighted_mixup_ce(
                layer(ops.stop_gradient(head_k1)), labels, labels, 1.0, weights)
            head_loss = head_loss + _weighted_mixup_ce(
                layer(ops.stop_gradient(head_z)), labels, labels_b, lam, weights)
        total = phi[0]
        for value in phi[1:]:
            total = total + value
        return total, head_loss

    # ------------------------------------------------------------- queue
    def enqueue(self, keys, labels=None):
        """MoCo's enqueue, plus the keys' labels for the filtered infoNCE terms."""
        if labels is not None:
            labels = ops.cast(all_gather(ops.stop_gradient(labels)), "int32")
            count = ops.shape(labels)[0]
            ptr = ops.convert_to_tensor(self.queue_ptr)
            rows = ops.mod(ptr + ops.arange(count, dtype="int32"), self.queue_size)
            self.queue_labels.assign(ops.scatter_update(
                self.queue_labels, ops.reshape(rows, (-1, 1)), labels))
        super().enqueue(keys)

    # ------------------------------------------------------------ pictures
    def mask_panels(self, images, lams=(0.3, 0.5, 0.7), perm=None):
        """The Mix Block's masks and mixed images of the pairs (i, perm[i]) at
        each λ, in inference mode, from the key encoder's stage features (paper
        Fig. 4). Returns numpy (L, B, H, W, 1) masks and (L, B, H, W, C) images.
        """
        import numpy as np

        perm = np.roll(np.arange(len(images)), -1) if perm is None else perm
        z = backbones_lib.run_stages(self.key_backbone, ops.convert_to_tensor(images),
                                     stop=self.feature_stage, training=False)
        return self.mix_block.mask_panels(z, images, lams, perm)

    # ------------------------------------------------------ serialisation
    def get_config(self):
        config = super().get_config()
        for key in ("mixer", "mixer_kwargs"):
            config.pop(key, None)
        config.update(
            variant=self.variant,
            mix_block=keras.saving.serialize_keras_object(self.mix_block),
            alpha=self.alpha,
            feature_stage=self.feature_stage,
            mix_loss=self.mix_loss,
            bce_temperature=self.bce_temperature,
            num_classes=self.num_classes,
        )
        return config

